//! ResourceQuota and LimitRange validation, with the API server's field
//! paths and words.

use super::{decode, encode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use serde_json::Value;
use std::collections::BTreeMap;

const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
];
const LIMIT_TYPES: &[&str] = &["Pod", "Container", "PersistentVolumeClaim"];

fn quantities(path: &str, map: Option<&BTreeMap<String, Q>>, errs: &mut FieldErrors) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    for (k, q) in map.into_iter().flatten() {
        match Quantity::parse(&q.0) {
            Err(e) => errs.push(FieldError::invalid(format!("{path}[{k}]"), &q.0, e.to_string())),
            Ok(v) if v.is_negative() => errs.push(FieldError::invalid(
                format!("{path}[{k}]"),
                &q.0,
                "must be greater than or equal to 0",
            )),
            Ok(v) => {
                out.insert(k.clone(), v);
            }
        }
    }
    out
}

fn validate_quota(q: &ResourceQuota, errs: &mut FieldErrors) {
    validate_object_meta(&q.metadata, NameRule::Dns1123Subdomain, true, errs);
    let spec = q.spec.clone().unwrap_or_default();
    quantities("spec.hard", spec.hard.as_ref(), errs);
    for (i, s) in spec.scopes.iter().flatten().enumerate() {
        if !SCOPES.contains(&s.as_str()) {
            errs.push(FieldError::not_supported(format!("spec.scopes[{i}]"), s, SCOPES));
        }
    }
    for (i, e) in spec
        .scope_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
        .enumerate()
    {
        let path = format!("spec.scopeSelector.matchExpressions[{i}]");
        if !SCOPES.contains(&e.scope_name.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{path}.scopeName"),
                &e.scope_name,
                SCOPES,
            ));
        }
        let ops = ["In", "NotIn", "Exists", "DoesNotExist"];
        if !ops.contains(&e.operator.as_str()) {
            errs.push(FieldError::not_supported(format!("{path}.operator"), &e.operator, &ops));
        }
    }
}

/// Validates a new ResourceQuota; its status starts with `hard` and nothing used.
pub fn admit_quota(obj: &mut Value) -> Result<(), FieldErrors> {
    let mut q: ResourceQuota = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_quota(&q, &mut errs);
    errs.into_result()?;
    let hard = q.spec.as_ref().and_then(|s| s.hard.clone());
    q.status = Some(ResourceQuotaStatus {
        hard: hard.clone(),
        used: None,
    });
    encode(&q, obj);
    Ok(())
}

/// Validates a ResourceQuota update.
pub fn update_quota(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: ResourceQuota = decode(old)?;
    let n: ResourceQuota = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_quota(&n, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    let scopes = |q: &ResourceQuota| q.spec.as_ref().and_then(|s| s.scopes.clone()).unwrap_or_default();
    if scopes(&o) != scopes(&n) {
        errs.push(FieldError::invalid(
            "spec.scopes",
            format!("{:?}", scopes(&n)),
            "field is immutable",
        ));
    }
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}

fn validate_limit_range(lr: &LimitRange, errs: &mut FieldErrors) {
    validate_object_meta(&lr.metadata, NameRule::Dns1123Subdomain, true, errs);
    for (i, item) in lr.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
        let path = format!("spec.limits[{i}]");
        if !LIMIT_TYPES.contains(&item.type_.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{path}.type"),
                &item.type_,
                LIMIT_TYPES,
            ));
        }
        let min = quantities(&format!("{path}.min"), item.min.as_ref(), errs);
        let max = quantities(&format!("{path}.max"), item.max.as_ref(), errs);
        let default = quantities(&format!("{path}.default"), item.default.as_ref(), errs);
        let default_request = quantities(&format!("{path}.defaultRequest"), item.default_request.as_ref(), errs);
        quantities(
            &format!("{path}.maxLimitRequestRatio"),
            item.max_limit_request_ratio.as_ref(),
            errs,
        );
        if item.type_ != "Container" && (!default.is_empty() || !default_request.is_empty()) {
            errs.push(FieldError::forbidden(
                format!("{path}.default"),
                format!("may not be specified when `type` is '{}'", item.type_),
            ));
        }
        for (k, lo) in &min {
            if let Some(hi) = max.get(k) {
                if lo.milli_value() > hi.milli_value() {
                    errs.push(FieldError::invalid(
                        format!("{path}.min[{k}]"),
                        lo,
                        format!("min value {lo} is greater than max value {hi}"),
                    ));
                }
            }
        }
        for (label, m) in [("default", &default), ("defaultRequest", &default_request)] {
            for (k, v) in m {
                if let Some(hi) = max.get(k) {
                    if v.milli_value() > hi.milli_value() {
                        errs.push(FieldError::invalid(
                            format!("{path}.{label}[{k}]"),
                            v,
                            format!("{label} value {v} is greater than max value {hi}"),
                        ));
                    }
                }
                if let Some(lo) = min.get(k) {
                    if v.milli_value() < lo.milli_value() {
                        errs.push(FieldError::invalid(
                            format!("{path}.{label}[{k}]"),
                            v,
                            format!("min value {lo} is greater than {label} value {v}"),
                        ));
                    }
                }
            }
        }
    }
}

/// Validates a new LimitRange.
pub fn admit_limit_range(obj: &mut Value) -> Result<(), FieldErrors> {
    let lr: LimitRange = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_limit_range(&lr, &mut errs);
    errs.into_result()?;
    encode(&lr, obj);
    Ok(())
}

/// Validates a LimitRange update.
pub fn update_limit_range(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: LimitRange = decode(old)?;
    let n: LimitRange = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_limit_range(&n, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_quotas_and_ranges_are_named() {
        let mut q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "x"}, "scopes": ["Sometimes"]}});
        let e = admit_quota(&mut q).unwrap_err().to_string();
        assert!(e.contains("spec.hard[pods]: Invalid value: \"x\""), "{e}");
        assert!(e.contains("spec.scopes[0]: Unsupported value: \"Sometimes\""), "{e}");
        let mut q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "5"}}});
        admit_quota(&mut q).unwrap();
        assert_eq!(q["status"]["hard"]["pods"], "5");
        let mut lr = json!({"metadata": {"name": "l"}, "spec": {"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}, "default": {"memory": "2Gi"}, "max": {"memory": "1Gi"}}]}});
        assert!(admit_limit_range(&mut lr).is_err());
        let mut lr = json!({"metadata": {"name": "l"}, "spec": {"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}, {"type": "Node"}]}});
        let e = admit_limit_range(&mut lr).unwrap_err().to_string();
        assert!(
            e.contains("spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"),
            "{e}"
        );
        assert!(e.contains("spec.limits[1].type: Unsupported value: \"Node\""), "{e}");
    }
}
