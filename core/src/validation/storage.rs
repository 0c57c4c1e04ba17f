//! PersistentVolumeClaim (v1) defaulting and validation, with Kubernetes'
//! wording: access modes, the storage request, volumeMode, the class name
//! and selector. The claim spec check is shared with StatefulSet
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

/// Defaults and validates a claim's `spec` (at `path`, `spec` or
/// `spec.volumeClaimTemplates[0].spec`).
pub fn admit_claim_spec(spec: &mut Value, path: &str, errs: &mut FieldErrors) {
    let modes: Vec<String> = spec["accessModes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m.as_str().unwrap_or_default().to_string())
        .collect();
    if modes.is_empty() {
        errs.push(FieldError::required_detail(
            format!("{path}.accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for m in &modes {
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{path}.accessModes"),
                m,
                ACCESS_MODES,
            ));
        }
    }
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            format!("{path}.accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
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

/// Defaults and validates a new claim; it starts `Pending`.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
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
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let status = old["status"].clone();
    admit_create(new)?;
    new["status"] = status;
    let mut errs = FieldErrors::default();
    if let (Ok(o), Ok(n)) = (
        decode::<ObjectMeta>(&old["metadata"]),
        decode::<ObjectMeta>(&new["metadata"]),
    ) {
        validate_meta_update(&o, &n, &mut errs);
    }
    let bound = old["status"]["phase"] == "Bound";
    let mut was = old["spec"].clone();
    let mut now = new["spec"].clone();
    if was["volumeName"].as_str().is_none_or(str::is_empty) {
        was["volumeName"] = now["volumeName"].clone();
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
        admit_create(&mut c).unwrap();
        assert_eq!(c["spec"]["volumeMode"], "Filesystem");
        assert_eq!(c["status"]["phase"], "Pending");
        let mut c = claim(json!({"resources": {"requests": {"storage": "0"}}}));
        let err = admit_create(&mut c).unwrap_err().to_string();
        assert!(
            err.contains("spec.accessModes: Required value: at least 1 access mode is required"),
            "{err}"
        );
        assert!(
            err.contains("spec.resources.requests[storage]: Invalid value: \"0\": must be greater than zero"),
            "{err}"
        );
        let mut c = claim(json!({"accessModes": ["ReadWriteOncePod", "ReadOnlyMany"], "volumeMode": "Raw"}));
        let err = admit_create(&mut c).unwrap_err().to_string();
        assert!(
            err.contains("may not use ReadWriteOncePod with other access modes"),
            "{err}"
        );
        assert!(err.contains("spec.resources[storage]: Required value"), "{err}");
        assert!(err.contains("spec.volumeMode: Unsupported value: \"Raw\""), "{err}");
    }

    #[test]
    fn the_spec_is_immutable_but_for_binding_and_growth() {
        let mut old = claim(json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}));
        admit_create(&mut old).unwrap();
        let mut bind = old.clone();
        bind["spec"]["volumeName"] = json!("pv-1");
        admit_update(&old, &mut bind).unwrap();
        let mut grow = old.clone();
        grow["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let err = admit_update(&old, &mut grow).unwrap_err().to_string();
        assert!(
            err.contains("spec: Forbidden: spec is immutable after creation"),
            "{err}"
        );
        old["status"]["phase"] = json!("Bound");
        admit_update(&old, &mut grow).unwrap();
        let mut shrink = old.clone();
        shrink["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        assert!(admit_update(&old, &mut shrink)
            .unwrap_err()
            .to_string()
            .contains("field can not be less than status.capacity"));
    }
}
