//! StatefulSet and ControllerRevision (apps/v1) defaulting and validation,
//! with Kubernetes' defaults (OrderedReady, RollingUpdate with partition 0,
//! revisionHistoryLimit 10, claims retained) and wording.

use super::deployment::check_int_or_percent;
use super::storage::admit_claim_spec;
use super::workloads::{admit_pod_workload, immutable_selector};
use super::{decode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use crate::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

fn non_negative(v: &Value, path: &str, errs: &mut FieldErrors) {
    match v.as_i64() {
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => {}
        Some(n) if n < 0 => errs.push(FieldError::invalid(path, n, "must be greater than or equal to 0")),
        _ => errs.push(FieldError::invalid(path, v, "must be an integer")),
    }
}

/// Adds a claim volume to the template for each claim template it has no
/// volume of that name for; returns the names added.
fn claims_as_volumes(obj: &mut Value) -> Vec<String> {
    let names: Vec<String> = obj["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let Some(spec) = obj["spec"]["template"]["spec"].as_object_mut() else {
        return Vec::new();
    };
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(vs) = volumes.as_array_mut() else {
        return Vec::new();
    };
    let mut added = Vec::new();
    for n in names {
        if !vs.iter().any(|v| v["name"] == n.as_str()) {
            vs.push(json!({"name": n, "persistentVolumeClaim": {"claimName": n}}));
            added.push(n);
        }
    }
    added
}

/// Defaults and validates a new StatefulSet.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    decode::<k8s_openapi::api::apps::v1::StatefulSet>(obj)?;
    let mut errs = FieldErrors::default();
    if !obj["spec"].is_object() {
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    // The template is checked with the claims as volumes, so mounts of them are found.
    let had_volumes = !obj["spec"]["template"]["spec"]["volumes"].is_null();
    let added = claims_as_volumes(obj);
    admit_pod_workload(obj, &mut errs);
    if let Some(vs) = obj["spec"]["template"]["spec"]["volumes"].as_array_mut() {
        vs.retain(|v| !added.iter().any(|n| v["name"] == n.as_str()));
        if vs.is_empty() && !had_volumes {
            if let Some(m) = obj["spec"]["template"]["spec"].as_object_mut() {
                m.remove("volumes");
            }
        }
    }
    let spec = &mut obj["spec"];
    if spec["podManagementPolicy"].is_null() {
        spec["podManagementPolicy"] = json!("OrderedReady");
    }
    let policy = spec["podManagementPolicy"].as_str().unwrap_or_default();
    if !["OrderedReady", "Parallel"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "spec.podManagementPolicy",
            policy,
            &["OrderedReady", "Parallel"],
        ));
    }
    if spec["updateStrategy"]["type"].is_null() {
        spec["updateStrategy"]["type"] = json!("RollingUpdate");
    }
    match spec["updateStrategy"]["type"].as_str() {
        Some("RollingUpdate") => {
            let ru = &mut spec["updateStrategy"]["rollingUpdate"];
            if ru["partition"].is_null() {
                ru["partition"] = json!(0);
            }
            non_negative(
                &ru["partition"],
                "spec.updateStrategy.rollingUpdate.partition",
                &mut errs,
            );
            if !ru["maxUnavailable"].is_null() {
                let path = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                if check_int_or_percent(&ru["maxUnavailable"], path, &mut errs) == Some(true) {
                    errs.push(FieldError::invalid(
                        path,
                        super::deployment::shown(&ru["maxUnavailable"]),
                        "must not be 0",
                    ));
                }
            }
        }
        Some("OnDelete") => {
            if !spec["updateStrategy"]["rollingUpdate"].is_null() {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    &spec["updateStrategy"]["rollingUpdate"],
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            other.unwrap_or(""),
            &["OnDelete", "RollingUpdate"],
        )),
    }
    if spec["revisionHistoryLimit"].is_null() {
        spec["revisionHistoryLimit"] = json!(10);
    }
    non_negative(&spec["revisionHistoryLimit"], "spec.revisionHistoryLimit", &mut errs);
    if !spec["ordinals"].is_null() {
        if spec["ordinals"]["start"].is_null() {
            spec["ordinals"]["start"] = json!(0);
        }
        non_negative(&spec["ordinals"]["start"], "spec.ordinals.start", &mut errs);
    }
    let retention = &mut spec["persistentVolumeClaimRetentionPolicy"];
    for f in ["whenDeleted", "whenScaled"] {
        if retention[f].is_null() {
            retention[f] = json!("Retain");
        }
        let v = retention[f].as_str().unwrap_or_default();
        if !["Delete", "Retain"].contains(&v) {
            errs.push(FieldError::not_supported(
                format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                v,
                &["Retain", "Delete"],
            ));
        }
    }
    if let Some(service) = spec["serviceName"].as_str().filter(|s| !s.is_empty()) {
        for p in names::is_dns1123_label(service) {
            errs.push(FieldError::invalid("spec.serviceName", service, p));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in spec["volumeClaimTemplates"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.volumeClaimTemplates[{i}]");
        match t["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldError::required(format!("{path}.metadata.name"))),
            Some(n) => {
                for p in names::is_dns1123_subdomain(n) {
                    errs.push(FieldError::invalid(format!("{path}.metadata.name"), n, p));
                }
                if !seen.insert(n.to_string()) {
                    errs.push(FieldError::duplicate(format!("{path}.metadata.name"), n));
                }
            }
        }
        if !t["spec"].is_object() {
            t["spec"] = json!({});
        }
        admit_claim_spec(&mut t["spec"], &format!("{path}.spec"), &mut errs);
    }
    obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
    errs.into_result()
}

/// The spec fields an update may change (Kubernetes' list).
const MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

/// Validates a StatefulSet update: only the fields Kubernetes lets change may.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    admit_create(new)?;
    new["status"] = old["status"].clone();
    immutable_selector(old, new)?;
    let fixed = |v: &Value| {
        let mut s = v["spec"].clone();
        if let Some(m) = s.as_object_mut() {
            m.retain(|k, _| !MUTABLE.contains(&k.as_str()));
        }
        s
    };
    if fixed(old) != fixed(new) {
        return Err(FieldErrors(vec![FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
             'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )]));
    }
    Ok(())
}

/// Validates a new ControllerRevision: a name, data, a revision number.
pub fn admit_revision(obj: &mut Value) -> Result<(), FieldErrors> {
    decode::<k8s_openapi::api::apps::v1::ControllerRevision>(obj)?;
    let mut errs = FieldErrors::default();
    match decode::<ObjectMeta>(&obj["metadata"]) {
        Ok(m) => validate_object_meta(&m, NameRule::Dns1123Subdomain, true, &mut errs),
        Err(e) => errs.0.extend(e.0),
    }
    if obj["data"].is_null() {
        errs.push(FieldError::required("data"));
    }
    non_negative(&obj["revision"], "revision", &mut errs);
    errs.into_result()
}

/// Validates a ControllerRevision update: its data never changes.
pub fn update_revision(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    admit_revision(new)?;
    let mut errs = FieldErrors::default();
    if let (Ok(o), Ok(n)) = (
        decode::<ObjectMeta>(&old["metadata"]),
        decode::<ObjectMeta>(&new["metadata"]),
    ) {
        validate_meta_update(&o, &n, &mut errs);
    }
    if old["data"] != new["data"] {
        errs.push(FieldError::invalid("data", "", "field is immutable"));
    }
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(spec: Value) -> Value {
        let mut s = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        for (k, v) in spec.as_object().unwrap() {
            s["spec"][k] = v.clone();
        }
        s
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let mut s = sts(json!({"volumeClaimTemplates": [{"metadata": {"name": "www"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}));
        admit_create(&mut s).unwrap();
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
        let mut m = sts(json!({"volumeClaimTemplates": [{"metadata": {"name": "www"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}));
        m["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "www", "mountPath": "/www"}]);
        admit_create(&mut m).unwrap();
        assert!(
            m["spec"]["template"]["spec"]["volumes"].is_null(),
            "claims are not written into the template"
        );
        m["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "other", "mountPath": "/o"}]);
        assert!(admit_create(&mut m)
            .unwrap_err()
            .to_string()
            .contains("volumeMounts[0].name: Not found: \"other\""));
        assert_eq!(s["spec"]["replicas"], 1);
    }

    #[test]
    fn bad_specs_are_named() {
        let mut s = sts(
            json!({"podManagementPolicy": "Random", "updateStrategy": {"type": "OnDelete",
            "rollingUpdate": {"partition": 1}}, "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Keep"},
            "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]}),
        );
        let err = admit_create(&mut s).unwrap_err().to_string();
        for want in [
            "spec.podManagementPolicy: Unsupported value: \"Random\"",
            "spec.updateStrategy.rollingUpdate: Invalid value",
            "spec.persistentVolumeClaimRetentionPolicy.whenScaled: Unsupported value: \"Keep\"",
            "spec.volumeClaimTemplates[0].spec.accessModes: Required value",
            "spec.volumeClaimTemplates[0].spec.resources[storage]: Required value",
        ] {
            assert!(err.contains(want), "{want} in {err}");
        }
        let mut s = sts(json!({"updateStrategy": {"rollingUpdate": {"partition": -1, "maxUnavailable": 0}}}));
        let err = admit_create(&mut s).unwrap_err().to_string();
        assert!(
            err.contains("spec.updateStrategy.rollingUpdate.partition: Invalid value: \"-1\""),
            "{err}"
        );
        assert!(
            err.contains("spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"0\": must not be 0"),
            "{err}"
        );
    }

    #[test]
    fn only_some_fields_may_change() {
        let mut old = sts(json!({}));
        admit_create(&mut old).unwrap();
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        admit_update(&old, &mut new).unwrap();
        let mut new = old.clone();
        new["spec"]["serviceName"] = json!("other");
        let err = admit_update(&old, &mut new).unwrap_err().to_string();
        assert!(
            err.starts_with("spec: Forbidden: updates to statefulset spec for fields other than"),
            "{err}"
        );
    }

    #[test]
    fn revisions_keep_their_data() {
        let mut r = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "web-abc", "namespace": "default"}, "data": {"spec": {}}, "revision": 1});
        admit_revision(&mut r).unwrap();
        let mut bumped = r.clone();
        bumped["revision"] = json!(3);
        update_revision(&r, &mut bumped).unwrap();
        let mut changed = r.clone();
        changed["data"] = json!({"spec": {"x": 1}});
        assert!(update_revision(&r, &mut changed)
            .unwrap_err()
            .to_string()
            .contains("data: Invalid value"));
        let mut missing = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "web-abc"}, "revision": 1});
        assert!(admit_revision(&mut missing)
            .unwrap_err()
            .to_string()
            .contains("data: Required value"));
    }
}
