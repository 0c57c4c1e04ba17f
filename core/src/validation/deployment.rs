//! Deployment (apps/v1) defaulting and validation, with Kubernetes' defaults
//! (RollingUpdate 25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds
//! 600) and wording.

use super::workloads::{admit_pod_workload, immutable_selector};
use crate::field::{FieldError, FieldErrors};
use serde_json::{json, Value};

/// An IntOrString (`maxSurge: 1`, `maxUnavailable: 25%`) scaled against
/// `total`: percentages round up or down as asked (Kubernetes rounds
/// maxSurge up and maxUnavailable down).
pub fn scaled(v: &Value, total: i64, round_up: bool) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("invalid value: {n}")),
        Value::String(s) => {
            let p = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()).ok_or_else(|| {
                format!("invalid value for IntOrString: invalid type: string is not a percentage: \"{s}\"")
            })?;
            let product = p.saturating_mul(total);
            Ok(if round_up {
                product.saturating_add(99).div_euclid(100)
            } else {
                product.div_euclid(100)
            })
        }
        Value::Null => Ok(0),
        other => Err(format!("invalid value: {other}")),
    }
}

/// maxSurge and maxUnavailable of a rolling update for `replicas`, as
/// Kubernetes' `ResolveFenceposts`: both zero means one may be unavailable.
pub fn fenceposts(deployment: &Value) -> (i64, i64) {
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let ru = &deployment["spec"]["strategy"]["rollingUpdate"];
    let surge = scaled(&ru["maxSurge"], replicas, true).unwrap_or(0).max(0);
    let unavailable = scaled(&ru["maxUnavailable"], replicas, false).unwrap_or(0).max(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// A value as Kubernetes quotes it in errors (`"25%"`, not `"\"25%\""`).
pub(crate) fn shown(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

pub(crate) fn check_int_or_percent(v: &Value, path: &str, errs: &mut FieldErrors) -> Option<bool> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i < 0 => {
                errs.push(FieldError::invalid(path, i, "must be greater than or equal to 0"));
                None
            }
            Some(i) => Some(i == 0),
            None => {
                errs.push(FieldError::invalid(path, n, "must be an integer"));
                None
            }
        },
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if p < 0 => {
                errs.push(FieldError::invalid(path, s, "must be greater than or equal to 0"));
                None
            }
            Some(p) if p > 100 && path.ends_with("maxUnavailable") => {
                errs.push(FieldError::invalid(path, s, "must not be greater than 100%"));
                None
            }
            Some(p) => Some(p == 0),
            None => {
                errs.push(FieldError::invalid(
                    path,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                None
            }
        },
        other => {
            errs.push(FieldError::invalid(
                path,
                shown(other),
                "must be an integer or a percentage",
            ));
            None
        }
    }
}

/// Defaults and validates a new Deployment.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    super::decode::<k8s_openapi::api::apps::v1::Deployment>(obj)?;
    let mut errs = FieldErrors::default();
    if !obj["spec"].is_object() {
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    admit_pod_workload(obj, &mut errs);
    let spec = &mut obj["spec"];
    if spec["strategy"]["type"].is_null() {
        spec["strategy"]["type"] = json!("RollingUpdate");
    }
    match spec["strategy"]["type"].as_str() {
        Some("RollingUpdate") => {
            let ru = &mut spec["strategy"]["rollingUpdate"];
            for f in ["maxSurge", "maxUnavailable"] {
                if ru[f].is_null() {
                    ru[f] = json!("25%");
                }
            }
            let surge_zero = check_int_or_percent(&ru["maxSurge"], "spec.strategy.rollingUpdate.maxSurge", &mut errs);
            let unavail_zero = check_int_or_percent(
                &ru["maxUnavailable"],
                "spec.strategy.rollingUpdate.maxUnavailable",
                &mut errs,
            );
            if surge_zero == Some(true) && unavail_zero == Some(true) {
                errs.push(FieldError::invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    shown(&ru["maxUnavailable"]),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        Some("Recreate") => {
            if !spec["strategy"]["rollingUpdate"].is_null() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            other.unwrap_or(""),
            &["Recreate", "RollingUpdate"],
        )),
    }
    for (f, d) in [("revisionHistoryLimit", 10), ("progressDeadlineSeconds", 600)] {
        match spec[f].as_i64() {
            None if spec[f].is_null() => spec[f] = json!(d),
            Some(n) if n >= 0 => {}
            _ => errs.push(FieldError::invalid(
                format!("spec.{f}"),
                &spec[f],
                "must be greater than or equal to 0",
            )),
        }
    }
    let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
    if let Some(p) = spec["progressDeadlineSeconds"].as_i64() {
        if p <= min_ready {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                p,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if spec["paused"].is_null() {
        spec["paused"] = json!(false);
    }
    obj["status"] = json!({});
    errs.into_result()
}

/// Validates a Deployment update: the selector is immutable.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    admit_create(new)?;
    new["status"] = old["status"].clone();
    immutable_selector(old, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(spec: Value) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        for (k, v) in spec.as_object().unwrap() {
            d["spec"][k] = v.clone();
        }
        d
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let mut d = deploy(json!({}));
        admit_create(&mut d).unwrap();
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    }

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let mut d = deploy(json!({"replicas": 10}));
        admit_create(&mut d).unwrap();
        assert_eq!(fenceposts(&d), (3, 2));
        let d = deploy(json!({"replicas": 3, "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}}}));
        assert_eq!(
            fenceposts(&d),
            (0, 1),
            "both zero after rounding: one may be unavailable"
        );
        let d = deploy(json!({"replicas": 10, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}));
        assert_eq!(fenceposts(&d), (1, 0));
    }

    #[test]
    fn bad_strategies_are_named() {
        let mut d = deploy(json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}));
        let err = admit_create(&mut d).unwrap_err().to_string();
        assert!(
            err.contains(
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
            ),
            "{err}"
        );
        let mut d = deploy(json!({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}));
        let err = admit_create(&mut d).unwrap_err().to_string();
        assert!(err.contains("spec.strategy.rollingUpdate: Forbidden"), "{err}");
        let mut d = deploy(json!({"strategy": {"type": "Blue"}}));
        assert!(admit_create(&mut d)
            .unwrap_err()
            .to_string()
            .contains("spec.strategy.type: Unsupported value: \"Blue\""));
        let mut d = deploy(json!({"minReadySeconds": 20, "progressDeadlineSeconds": 10}));
        assert!(admit_create(&mut d)
            .unwrap_err()
            .to_string()
            .contains("must be greater than minReadySeconds"));
        let mut d = deploy(json!({"strategy": {"rollingUpdate": {"maxUnavailable": "150%"}}}));
        assert!(admit_create(&mut d)
            .unwrap_err()
            .to_string()
            .contains("must not be greater than 100%"));
    }
}
