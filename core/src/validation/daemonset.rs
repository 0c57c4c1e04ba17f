//! DaemonSet (apps/v1) defaulting and validation: RollingUpdate (maxUnavailable
//! 1, maxSurge 0) or OnDelete, revisionHistoryLimit 10, with Kubernetes' wording.

use super::deployment::check_int_or_percent;
use super::workloads::{admit_pod_workload, immutable_selector};
use crate::field::{FieldError, FieldErrors};
use serde_json::{json, Value};

/// Defaults and validates a new DaemonSet.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    super::decode::<k8s_openapi::api::apps::v1::DaemonSet>(obj)?;
    let mut errs = FieldErrors::default();
    if !obj["spec"].is_object() {
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    // A DaemonSet has no replicas; the shared check defaults them, so take them out again.
    let had_replicas = !obj["spec"]["replicas"].is_null();
    admit_pod_workload(obj, &mut errs);
    if !had_replicas {
        if let Some(m) = obj["spec"].as_object_mut() {
            m.remove("replicas");
        }
    }
    let spec = &mut obj["spec"];
    if spec["updateStrategy"]["type"].is_null() {
        spec["updateStrategy"]["type"] = json!("RollingUpdate");
    }
    match spec["updateStrategy"]["type"].as_str() {
        Some("RollingUpdate") => {
            let ru = &mut spec["updateStrategy"]["rollingUpdate"];
            if ru["maxUnavailable"].is_null() {
                ru["maxUnavailable"] = json!(1);
            }
            if ru["maxSurge"].is_null() {
                ru["maxSurge"] = json!(0);
            }
            let surge_zero =
                check_int_or_percent(&ru["maxSurge"], "spec.updateStrategy.rollingUpdate.maxSurge", &mut errs);
            let unavail_zero = check_int_or_percent(
                &ru["maxUnavailable"],
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                &mut errs,
            );
            match (surge_zero, unavail_zero) {
                (Some(true), Some(true)) => errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    super::deployment::shown(&ru["maxUnavailable"]),
                    "cannot be 0 when maxSurge is 0",
                )),
                (Some(false), Some(false)) => errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    super::deployment::shown(&ru["maxUnavailable"]),
                    "may not be set when maxSurge is set",
                )),
                _ => {}
            }
        }
        Some("OnDelete") => {}
        other => errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            other.unwrap_or(""),
            &["OnDelete", "RollingUpdate"],
        )),
    }
    if spec["revisionHistoryLimit"].is_null() {
        spec["revisionHistoryLimit"] = json!(10);
    }
    obj["status"] =
        json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0});
    errs.into_result()
}

/// Validates a DaemonSet update: the selector is immutable.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    admit_create(new)?;
    new["status"] = old["status"].clone();
    immutable_selector(old, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(spec: Value) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        for (k, v) in spec.as_object().unwrap() {
            d["spec"][k] = v.clone();
        }
        d
    }

    #[test]
    fn defaults_and_strategies() {
        let mut d = ds(json!({}));
        admit_create(&mut d).unwrap();
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert!(d["spec"]["replicas"].is_null(), "a DaemonSet has no replicas");
        let mut d = ds(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}));
        let err = admit_create(&mut d).unwrap_err().to_string();
        assert!(err.contains("spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"0\": cannot be 0 when maxSurge is 0"), "{err}");
        let mut d = ds(json!({"updateStrategy": {"type": "Sometimes"}}));
        assert!(admit_create(&mut d)
            .unwrap_err()
            .to_string()
            .contains("spec.updateStrategy.type: Unsupported value"));
    }
}
