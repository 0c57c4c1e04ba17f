//! PersistentVolumeClaim and PersistentVolume (v1) and StorageClass
//! (storage.k8s.io/v1) defaulting and validation, with Kubernetes' wording:
//! access modes, sizes, volumeMode, class names, one volume source per PV
//! (a `local` one with the node affinity it needs), reclaim policies and
//! binding modes. The claim spec check is shared with StatefulSet
//! `volumeClaimTemplates`.

use super::workloads::label_selector;
use super::{decode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use crate::names;
use crate::quantity::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

/// The access modes a claim may ask for.
pub const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

/// The access modes of a claim or volume: at least one (`detail` says so
/// when given), each supported, ReadWriteOncePod alone.
fn check_access_modes(v: &Value, path: &str, detail: &str, errs: &mut FieldErrors) {
    let modes: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m.as_str().unwrap_or_default())
        .collect();
    if modes.is_empty() {
        errs.push(FieldError::required_detail(path, detail));
    }
    for m in &modes {
        if !ACCESS_MODES.contains(m) {
            errs.push(FieldError::not_supported(path, m, ACCESS_MODES));
        }
    }
    if modes.contains(&"ReadWriteOncePod") && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// An update's common part: the new object admitted, the old status kept,
/// name and uid unchanged; returns the errors found so far.
fn admit_update_of(
    old: &Value,
    new: &mut Value,
    admit: fn(&mut Value) -> Result<(), FieldErrors>,
) -> Result<FieldErrors, FieldErrors> {
    let status = old["status"].clone();
    admit(new)?;
    if !status.is_null() {
        new["status"] = status;
    }
    let mut errs = FieldErrors::default();
    if let (Ok(o), Ok(n)) = (
        decode::<ObjectMeta>(&old["metadata"]),
        decode::<ObjectMeta>(&new["metadata"]),
    ) {
        validate_meta_update(&o, &n, &mut errs);
    }
    Ok(errs)
}

/// Defaults and validates a claim's `spec` (at `path`, `spec` or
/// `spec.volumeClaimTemplates[0].spec`).
pub fn admit_claim_spec(spec: &mut Value, path: &str, errs: &mut FieldErrors) {
    check_access_modes(
        &spec["accessModes"],
        &format!("{path}.accessModes"),
        "at least 1 access mode is required",
        errs,
    );
    match spec["resources"]["requests"]["storage"].as_str() {
        None => errs.push(FieldError::required(format!("{path}.resources[storage]"))),
        Some(s) => match Quantity::parse(s) {
            Err(e) => errs.push(FieldError::invalid(
                format!("{path}.resources.requests[storage]"),
                s,
                e.to_string(),
            )),
            Ok(q) if q.is_negative() || q.is_zero() => errs.push(FieldError::invalid(
                format!("{path}.resources.requests[storage]"),
                s,
                "must be greater than zero",
            )),
            Ok(_) => {}
        },
    }
    if spec["volumeMode"].is_null() {
        spec["volumeMode"] = json!("Filesystem");
    }
    let mode = spec["volumeMode"].as_str().unwrap_or_default();
    if !["Block", "Filesystem"].contains(&mode) {
        errs.push(FieldError::not_supported(
            format!("{path}.volumeMode"),
            mode,
            &["Block", "Filesystem"],
        ));
    }
    if let Some(class) = spec["storageClassName"].as_str().filter(|c| !c.is_empty()) {
        for p in names::is_dns1123_subdomain(class) {
            errs.push(FieldError::invalid(format!("{path}.storageClassName"), class, p));
        }
    }
    if !spec["selector"].is_null() {
        if let Err(e) = label_selector(&spec["selector"]) {
            errs.push(FieldError::invalid(format!("{path}.selector"), &spec["selector"], e));
        }
    }
}

/// Set by the scheduler on a claim that waits for its first consumer: the node chosen.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The finalizer that keeps a claim while a pod uses it.
pub const CLAIM_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while a claim is bound to it.
pub const VOLUME_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Adds `finalizer` unless present, as Kubernetes' StorageObjectInUseProtection
/// admission does on create.
fn protect(obj: &mut Value, finalizer: &str) {
    let list = &mut obj["metadata"]["finalizers"];
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut() {
        if !a.iter().any(|f| f == finalizer) {
            a.push(json!(finalizer));
        }
    }
}

/// Defaults and validates a new claim; it starts `Pending`, protected.
pub fn admit_claim(obj: &mut Value) -> Result<(), FieldErrors> {
    check_claim(obj)?;
    protect(obj, CLAIM_PROTECTION);
    Ok(())
}

fn check_claim(obj: &mut Value) -> Result<(), FieldErrors> {
    decode::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(obj)?;
    let mut errs = FieldErrors::default();
    match decode::<ObjectMeta>(&obj["metadata"]) {
        Ok(m) => validate_object_meta(&m, NameRule::Dns1123Subdomain, true, &mut errs),
        Err(e) => errs.0.extend(e.0),
    }
    if !obj["spec"].is_object() {
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    admit_claim_spec(&mut obj["spec"], "spec", &mut errs);
    obj["status"] = json!({"phase": "Pending"});
    errs.into_result()
}

/// Validates an update: the spec is immutable but for the binder setting
/// `volumeName` once, and a bound claim's storage request growing.
pub fn update_claim(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let mut errs = admit_update_of(old, new, check_claim)?;
    let bound = old["status"]["phase"] == "Bound";
    let mut was = old["spec"].clone();
    let mut now = new["spec"].clone();
    if was["volumeName"].as_str().is_none_or(str::is_empty) {
        was["volumeName"] = now["volumeName"].clone();
    }
    // A claim without a class may get one (the default class, assigned retroactively).
    if was["storageClassName"].is_null() && !bound {
        was["storageClassName"] = now["storageClassName"].clone();
    }
    if bound {
        was["resources"]["requests"]["storage"] = now["resources"]["requests"]["storage"].clone();
        let size = |v: &Value| {
            v["resources"]["requests"]["storage"]
                .as_str()
                .and_then(|s| Quantity::parse(s).ok())
                .map(|q| q.value())
        };
        if let (Some(a), Some(b)) = (size(&old["spec"]), size(&new["spec"])) {
            if b < a {
                errs.push(FieldError::forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than status.capacity",
                ));
            }
        }
    }
    for s in [&mut was, &mut now] {
        if let Some(m) = s.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
    }
    if was != now {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    errs.into_result()
}

fn meta(obj: &Value, namespaced: bool, errs: &mut FieldErrors) {
    match decode::<ObjectMeta>(&obj["metadata"]) {
        Ok(m) => validate_object_meta(&m, NameRule::Dns1123Subdomain, namespaced, errs),
        Err(e) => errs.0.extend(e.0),
    }
}

/// The volume sources a PersistentVolume may have (one of them).
pub const VOLUME_SOURCES: &[&str] = &["hostPath", "local", "nfs", "rbd", "csi"];

/// Defaults and validates a new PersistentVolume; it starts `Pending` (the
/// binder makes it Available), protected.
pub fn admit_volume(obj: &mut Value) -> Result<(), FieldErrors> {
    check_volume(obj)?;
    protect(obj, VOLUME_PROTECTION);
    Ok(())
}

fn check_volume(obj: &mut Value) -> Result<(), FieldErrors> {
    decode::<k8s_openapi::api::core::v1::PersistentVolume>(obj)?;
    let mut errs = FieldErrors::default();
    meta(obj, false, &mut errs);
    if !obj["spec"].is_object() {
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    let spec = &mut obj["spec"];
    check_access_modes(&spec["accessModes"], "spec.accessModes", "", &mut errs);
    match spec["capacity"]["storage"].as_str() {
        None if spec["capacity"].is_null() => errs.push(FieldError::required("spec.capacity")),
        None => errs.push(FieldError::required("spec.capacity[storage]")),
        Some(q) => match Quantity::parse(q) {
            Err(e) => errs.push(FieldError::invalid("spec.capacity[storage]", q, e.to_string())),
            Ok(n) if n.is_negative() || n.is_zero() => errs.push(FieldError::invalid(
                "spec.capacity[storage]",
                q,
                "must be greater than zero",
            )),
            Ok(_) => {}
        },
    }
    let sources: Vec<&str> = VOLUME_SOURCES.iter().copied().filter(|s| !spec[*s].is_null()).collect();
    match sources.as_slice() {
        [] => errs.push(FieldError::required_detail("spec", "must specify a volume type")),
        [_] => {}
        [_, second, ..] => errs.push(FieldError::forbidden(
            format!("spec.{second}"),
            "may not specify more than 1 volume type",
        )),
    }
    for (source, field) in [("hostPath", "path"), ("local", "path")] {
        if spec[source].is_null() {
            continue;
        }
        match spec[source][field].as_str() {
            None | Some("") => errs.push(FieldError::required(format!("spec.{source}.{field}"))),
            Some(p) if !p.starts_with('/') => errs.push(FieldError::invalid(
                format!("spec.{source}.{field}"),
                p,
                "must be an absolute path",
            )),
            Some(p) if p.split('/').any(|c| c == "..") => errs.push(FieldError::invalid(
                format!("spec.{source}.{field}"),
                p,
                "must not contain '..'",
            )),
            Some(_) => {}
        }
    }
    if !spec["local"].is_null() && spec["nodeAffinity"]["required"].is_null() {
        errs.push(FieldError::required_detail(
            "spec.nodeAffinity",
            "Local volume requires node affinity",
        ));
    }
    for (source, fields) in [
        ("nfs", &["server", "path"][..]),
        ("rbd", &["monitors", "image"][..]),
        ("csi", &["driver", "volumeHandle"][..]),
    ] {
        if spec[source].is_null() {
            continue;
        }
        for f in fields {
            let v = &spec[source][*f];
            if v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty) {
                errs.push(FieldError::required(format!("spec.{source}.{f}")));
            }
        }
    }
    if spec["persistentVolumeReclaimPolicy"].is_null() {
        spec["persistentVolumeReclaimPolicy"] = json!("Retain");
    }
    let policy = spec["persistentVolumeReclaimPolicy"].as_str().unwrap_or_default();
    if !["Delete", "Recycle", "Retain"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            policy,
            &["Delete", "Recycle", "Retain"],
        ));
    }
    if spec["volumeMode"].is_null() {
        spec["volumeMode"] = json!("Filesystem");
    }
    let mode = spec["volumeMode"].as_str().unwrap_or_default();
    if !["Block", "Filesystem"].contains(&mode) {
        errs.push(FieldError::not_supported(
            "spec.volumeMode",
            mode,
            &["Block", "Filesystem"],
        ));
    }
    if let Some(class) = spec["storageClassName"].as_str().filter(|c| !c.is_empty()) {
        for p in names::is_dns1123_subdomain(class) {
            errs.push(FieldError::invalid("spec.storageClassName", class, p));
        }
    }
    obj["status"] = json!({"phase": "Pending"});
    errs.into_result()
}

/// Validates a PersistentVolume update: its source never changes.
pub fn update_volume(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let mut errs = admit_update_of(old, new, check_volume)?;
    for source in VOLUME_SOURCES {
        if old["spec"][*source] != new["spec"][*source] {
            errs.push(FieldError::forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
            break;
        }
    }
    if old["spec"]["volumeMode"] != new["spec"]["volumeMode"] {
        errs.push(FieldError::invalid(
            "spec.volumeMode",
            shown(&new["spec"]["volumeMode"]),
            "field is immutable",
        ));
    }
    errs.into_result()
}

fn shown(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The annotation that makes a StorageClass the default one.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Defaults and validates a new StorageClass.
pub fn admit_class(obj: &mut Value) -> Result<(), FieldErrors> {
    decode::<k8s_openapi::api::storage::v1::StorageClass>(obj)?;
    let mut errs = FieldErrors::default();
    meta(obj, false, &mut errs);
    match obj["provisioner"].as_str() {
        None | Some("") => errs.push(FieldError::required("provisioner")),
        Some(p) => {
            for problem in names::is_qualified_name(&p.to_ascii_lowercase()) {
                errs.push(FieldError::invalid("provisioner", p, problem));
            }
        }
    }
    if obj["reclaimPolicy"].is_null() {
        obj["reclaimPolicy"] = json!("Delete");
    }
    let policy = obj["reclaimPolicy"].as_str().unwrap_or_default();
    if !["Delete", "Retain"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "reclaimPolicy",
            policy,
            &["Delete", "Retain"],
        ));
    }
    if obj["volumeBindingMode"].is_null() {
        obj["volumeBindingMode"] = json!("Immediate");
    }
    let mode = obj["volumeBindingMode"].as_str().unwrap_or_default();
    if !["Immediate", "WaitForFirstConsumer"].contains(&mode) {
        errs.push(FieldError::not_supported(
            "volumeBindingMode",
            mode,
            &["Immediate", "WaitForFirstConsumer"],
        ));
    }
    errs.into_result()
}

/// Validates a StorageClass update: what provisions volumes never changes.
pub fn update_class(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let mut errs = admit_update_of(old, new, admit_class)?;
    for (field, what) in [
        ("parameters", "parameters"),
        ("provisioner", "provisioner"),
        ("reclaimPolicy", "reclaimPolicy"),
        ("volumeBindingMode", "volumeBindingMode"),
    ] {
        if old[field] != new[field] {
            errs.push(FieldError::forbidden(
                field,
                format!("updates to {what} are forbidden."),
            ));
        }
    }
    errs.into_result()
}

/// A claim's or volume's class (`spec.storageClassName`, "" if none).
pub fn class_of(obj: &Value) -> &str {
    obj["spec"]["storageClassName"].as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn a_claim_needs_modes_and_a_size() {
        let mut c = claim(json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}));
        admit_claim(&mut c).unwrap();
        assert_eq!(c["spec"]["volumeMode"], "Filesystem");
        assert_eq!(c["status"]["phase"], "Pending");
        let mut c = claim(json!({"resources": {"requests": {"storage": "0"}}}));
        let err = admit_claim(&mut c).unwrap_err().to_string();
        assert!(
            err.contains("spec.accessModes: Required value: at least 1 access mode is required"),
            "{err}"
        );
        assert!(
            err.contains("spec.resources.requests[storage]: Invalid value: \"0\": must be greater than zero"),
            "{err}"
        );
        let mut c = claim(json!({"accessModes": ["ReadWriteOncePod", "ReadOnlyMany"], "volumeMode": "Raw"}));
        let err = admit_claim(&mut c).unwrap_err().to_string();
        assert!(
            err.contains("may not use ReadWriteOncePod with other access modes"),
            "{err}"
        );
        assert!(err.contains("spec.resources[storage]: Required value"), "{err}");
        assert!(err.contains("spec.volumeMode: Unsupported value: \"Raw\""), "{err}");
    }

    #[test]
    fn claims_and_volumes_are_protected_on_create_only() {
        let mut c = claim(json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}));
        admit_claim(&mut c).unwrap();
        assert_eq!(c["metadata"]["finalizers"], json!([CLAIM_PROTECTION]));
        // An update that drops the finalizer keeps it dropped (the binder removes it).
        let mut next = c.clone();
        next["metadata"]["finalizers"] = json!([]);
        update_claim(&c, &mut next).unwrap();
        assert_eq!(next["metadata"]["finalizers"], json!([]));
        // A class may be given to a claim without one, not changed.
        let mut classed = c.clone();
        classed["spec"]["storageClassName"] = json!("local");
        update_claim(&c, &mut classed).unwrap();
        let mut changed = classed.clone();
        changed["spec"]["storageClassName"] = json!("other");
        assert!(update_claim(&classed, &mut changed).is_err());
        let mut v = volume(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/srv/a"}}));
        admit_volume(&mut v).unwrap();
        assert_eq!(v["metadata"]["finalizers"], json!([VOLUME_PROTECTION]));
    }

    #[test]
    fn the_spec_is_immutable_but_for_binding_and_growth() {
        let mut old = claim(json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}));
        admit_claim(&mut old).unwrap();
        let mut bind = old.clone();
        bind["spec"]["volumeName"] = json!("pv-1");
        update_claim(&old, &mut bind).unwrap();
        let mut grow = old.clone();
        grow["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let err = update_claim(&old, &mut grow).unwrap_err().to_string();
        assert!(
            err.contains("spec: Forbidden: spec is immutable after creation"),
            "{err}"
        );
        old["status"]["phase"] = json!("Bound");
        update_claim(&old, &mut grow).unwrap();
        let mut shrink = old.clone();
        shrink["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        assert!(update_claim(&old, &mut shrink)
            .unwrap_err()
            .to_string()
            .contains("field can not be less than status.capacity"));
    }

    fn volume(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"}, "spec": spec})
    }

    #[test]
    fn a_volume_needs_one_source_a_size_and_modes() {
        let mut v = volume(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/srv/pv1"}}));
        admit_volume(&mut v).unwrap();
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(v["spec"]["volumeMode"], "Filesystem");
        assert_eq!(v["status"]["phase"], "Pending");
        let mut v = volume(json!({"accessModes": ["ReadWriteOnce"]}));
        let err = admit_volume(&mut v).unwrap_err().to_string();
        assert!(err.contains("spec.capacity: Required value"), "{err}");
        assert!(
            err.contains("spec: Required value: must specify a volume type"),
            "{err}"
        );
        let mut v = volume(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/a"}, "nfs": {"server": "x", "path": "/e"}}));
        let err = admit_volume(&mut v).unwrap_err().to_string();
        assert!(
            err.contains("spec.nfs: Forbidden: may not specify more than 1 volume type"),
            "{err}"
        );
        let mut v = volume(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "local": {"path": "relative"}}));
        let err = admit_volume(&mut v).unwrap_err().to_string();
        assert!(
            err.contains("spec.local.path: Invalid value: \"relative\": must be an absolute path"),
            "{err}"
        );
        assert!(
            err.contains("spec.nodeAffinity: Required value: Local volume requires node affinity"),
            "{err}"
        );
        let mut v = volume(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": "vendor.example.com"}}));
        let err = admit_volume(&mut v).unwrap_err().to_string();
        assert!(err.contains("spec.csi.volumeHandle: Required value"), "{err}");
    }

    #[test]
    fn a_volume_source_is_immutable() {
        let mut old = volume(json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/srv/a"}}));
        admit_volume(&mut old).unwrap();
        let mut new = old.clone();
        new["spec"]["claimRef"] = json!({"name": "c", "namespace": "default"});
        update_volume(&old, &mut new).unwrap();
        let mut new = old.clone();
        new["spec"]["hostPath"]["path"] = json!("/srv/b");
        assert!(update_volume(&old, &mut new)
            .unwrap_err()
            .to_string()
            .contains("spec.persistentvolumesource is immutable after creation"));
    }

    #[test]
    fn classes_default_and_keep_their_provisioner() {
        let mut c = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "local"}, "provisioner": "peapod.io/local"});
        admit_class(&mut c).unwrap();
        assert_eq!(c["reclaimPolicy"], "Delete");
        assert_eq!(c["volumeBindingMode"], "Immediate");
        let mut changed = c.clone();
        changed["provisioner"] = json!("other.io/x");
        assert!(update_class(&c, &mut changed)
            .unwrap_err()
            .to_string()
            .contains("provisioner: Forbidden: updates to provisioner are forbidden."));
        let mut bad = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "x"}, "volumeBindingMode": "Later"});
        let err = admit_class(&mut bad).unwrap_err().to_string();
        assert!(err.contains("provisioner: Required value"), "{err}");
        assert!(err.contains("volumeBindingMode: Unsupported value: \"Later\""), "{err}");
    }
}
