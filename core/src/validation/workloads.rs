//! Defaulting and validation of the kinds that run pods from a template:
//! ReplicaSet (apps/v1) and ReplicationController (v1), and the pieces the
//! other workload kinds share (pod templates, label selectors, replicas).

use super::{decode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use crate::selector::Selector;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The selector of a `metav1.LabelSelector` (`matchLabels`, `matchExpressions`).
pub fn label_selector(v: &Value) -> Result<Selector, String> {
    let labels: BTreeMap<String, String> = v["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let exprs: Vec<(String, String, Vec<String>)> = v["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let values = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            (
                e["key"].as_str().unwrap_or_default().to_string(),
                e["operator"].as_str().unwrap_or_default().to_string(),
                values,
            )
        })
        .collect();
    Selector::from_match(&labels, &exprs).map_err(|e| e.to_string())
}

/// The selector of a ReplicationController (`spec.selector`, a plain map).
pub fn map_selector(v: &Value) -> Result<Selector, String> {
    let labels: BTreeMap<String, String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Selector::from_match(&labels, &[]).map_err(|e| e.to_string())
}

/// The selector of a workload object of any kind: `spec.selector` as a
/// LabelSelector, or as a map for a ReplicationController.
pub fn workload_selector(obj: &Value) -> Result<Selector, String> {
    if obj["kind"] == "ReplicationController" {
        map_selector(&obj["spec"]["selector"])
    } else {
        label_selector(&obj["spec"]["selector"])
    }
}

fn template_labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Defaults `spec.template` as a pod and validates it, errors under
/// `spec.template`. `restart_policies` are those the kind allows.
pub fn admit_template(obj: &mut Value, restart_policies: &[&str], errs: &mut FieldErrors) {
    let Some(template) = obj.pointer("/spec/template").filter(|t| t.is_object()).cloned() else {
        errs.push(FieldError::required("spec.template"));
        return;
    };
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    // A template's own name is ignored, as Kubernetes ignores it.
    meta["name"] = json!("template");
    let as_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"].clone()});
    let mut pod: Pod = match decode(&as_pod) {
        Ok(p) => p,
        Err(e) => {
            for mut fe in e.0 {
                fe.path = format!("spec.template.{}", fe.path);
                errs.push(fe);
            }
            return;
        }
    };
    super::pod::set_defaults(&mut pod);
    for mut fe in super::pod::validate(&pod).0 {
        if fe.path.starts_with("metadata.name") {
            continue;
        }
        fe.path = format!("spec.template.{}", fe.path);
        errs.push(fe);
    }
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_default();
    if !restart_policies.contains(&policy.as_str()) {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &policy,
            restart_policies,
        ));
    }
    obj["spec"]["template"]["spec"] = crate::object::to_value(&pod.spec);
}

/// `spec.replicas` (default 1) and `spec.minReadySeconds` (default 0), both non-negative.
fn admit_counts(obj: &mut Value, errs: &mut FieldErrors) {
    for (field, default) in [("replicas", 1), ("minReadySeconds", 0)] {
        match &obj["spec"][field] {
            Value::Null => obj["spec"][field] = json!(default),
            v => match v.as_i64() {
                Some(n) if n < 0 => errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    n,
                    "must be greater than or equal to 0",
                )),
                Some(n) if n > i64::from(i32::MAX) => errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    n,
                    "must be less than or equal to 2147483647",
                )),
                Some(_) => {}
                None => errs.push(FieldError::invalid(format!("spec.{field}"), v, "must be an integer")),
            },
        }
    }
}

/// The template's labels must satisfy the selector, and the selector must select something.
fn check_selector(obj: &Value, selector: Result<Selector, String>, errs: &mut FieldErrors) {
    match selector {
        Err(e) => errs.push(FieldError::invalid("spec.selector", &obj["spec"]["selector"], e)),
        Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
            "spec.selector",
            &obj["spec"]["selector"],
            "empty selector is invalid for deployment",
        )),
        Ok(s) => {
            let labels = template_labels(obj);
            if obj.pointer("/spec/template").is_some() && !s.matches(&labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    format!("{labels:?}"),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
}

fn meta(obj: &Value, errs: &mut FieldErrors) {
    match decode::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(&obj["metadata"]) {
        Ok(m) => validate_object_meta(&m, NameRule::Dns1123Subdomain, true, errs),
        Err(e) => errs.0.extend(e.0),
    }
}

/// What every workload with a `metav1.LabelSelector` and a pod template
/// checks: metadata, replicas and minReadySeconds, the selector and the
/// template (restartPolicy Always).
pub(crate) fn admit_pod_workload(obj: &mut Value, errs: &mut FieldErrors) {
    meta(obj, errs);
    admit_counts(obj, errs);
    if obj["spec"]["selector"].is_null() {
        errs.push(FieldError::required("spec.selector"));
    } else {
        check_selector(obj, label_selector(&obj["spec"]["selector"]), errs);
    }
    admit_template(obj, &["Always"], errs);
}

/// Defaults and validates a new ReplicaSet.
pub fn admit_replicaset(obj: &mut Value) -> Result<(), FieldErrors> {
    decode::<k8s_openapi::api::apps::v1::ReplicaSet>(obj)?;
    let mut errs = FieldErrors::default();
    if !obj["spec"].is_object() {
        meta(obj, &mut errs);
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    admit_pod_workload(obj, &mut errs);
    obj["status"] = json!({"replicas": 0});
    errs.into_result()
}

/// Validates a ReplicaSet update: the selector is immutable (apps/v1).
pub fn update_replicaset(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    admit_replicaset(new)?;
    new["status"] = old["status"].clone();
    immutable_selector(old, new)
}

pub(crate) fn immutable_selector(old: &Value, new: &Value) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    if let (Ok(o), Ok(n)) = (decode_meta(old), decode_meta(new)) {
        validate_meta_update(&o, &n, &mut errs);
    }
    if old["spec"]["selector"] != new["spec"]["selector"] {
        errs.push(FieldError::invalid(
            "spec.selector",
            &new["spec"]["selector"],
            "field is immutable",
        ));
    }
    errs.into_result()
}

fn decode_meta(v: &Value) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, FieldErrors> {
    decode(&v["metadata"])
}

/// Defaults and validates a new ReplicationController: the selector and
/// the object's labels default to the template's labels.
pub fn admit_replicationcontroller(obj: &mut Value) -> Result<(), FieldErrors> {
    decode::<k8s_openapi::api::core::v1::ReplicationController>(obj)?;
    let mut errs = FieldErrors::default();
    if !obj["spec"].is_object() {
        meta(obj, &mut errs);
        errs.push(FieldError::required("spec"));
        return errs.into_result();
    }
    let labels = template_labels(obj);
    let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
    if empty(&obj["spec"]["selector"]) && !labels.is_empty() {
        obj["spec"]["selector"] = json!(labels);
    }
    if empty(&obj["metadata"]["labels"]) && !labels.is_empty() {
        obj["metadata"]["labels"] = json!(labels);
    }
    meta(obj, &mut errs);
    admit_counts(obj, &mut errs);
    check_selector(obj, map_selector(&obj["spec"]["selector"]), &mut errs);
    admit_template(obj, &["Always"], &mut errs);
    obj["status"] = json!({"replicas": 0});
    errs.into_result()
}

/// Validates a ReplicationController update (its selector may change, as in Kubernetes).
pub fn update_replicationcontroller(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    admit_replicationcontroller(new)?;
    new["status"] = old["status"].clone();
    let mut errs = FieldErrors::default();
    if let (Ok(o), Ok(n)) = (decode_meta(old), decode_meta(new)) {
        validate_meta_update(&o, &n, &mut errs);
    }
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web", "tier": "fe"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn replicasets_are_defaulted_and_checked_against_their_selector() {
        let mut ok = rs(json!({"selector": {"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}, "template": template()}));
        admit_replicaset(&mut ok).unwrap();
        assert_eq!(ok["spec"]["replicas"], 1);
        assert_eq!(ok["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            ok["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );

        let mut bad = rs(json!({"replicas": -1, "selector": {"matchLabels": {"app": "db"}}, "template": template()}));
        let err = admit_replicaset(&mut bad).unwrap_err().to_string();
        assert!(
            err.contains("spec.replicas: Invalid value: \"-1\": must be greater than or equal to 0"),
            "{err}"
        );
        assert!(err.contains("spec.template.metadata.labels: Invalid value"), "{err}");
        assert!(err.contains("`selector` does not match template `labels`"), "{err}");

        let mut t = template();
        t["spec"]["restartPolicy"] = json!("Never");
        t["spec"]["containers"][0]["image"] = json!("");
        let mut bad = rs(json!({"selector": {"matchLabels": {"app": "web"}}, "template": t}));
        let err = admit_replicaset(&mut bad).unwrap_err().to_string();
        assert!(
            err.contains("spec.template.spec.containers[0].image: Required value"),
            "{err}"
        );
        assert!(
            err.contains(
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ),
            "{err}"
        );
        let mut bad = rs(json!({"template": template()}));
        assert!(admit_replicaset(&mut bad)
            .unwrap_err()
            .to_string()
            .contains("spec.selector: Required value"));
    }

    #[test]
    fn a_replicaset_selector_is_immutable() {
        let mut old = rs(json!({"selector": {"matchLabels": {"app": "web"}}, "template": template()}));
        admit_replicaset(&mut old).unwrap();
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        update_replicaset(&old, &mut new).unwrap();
        new["spec"]["selector"] = json!({"matchLabels": {"tier": "fe"}});
        let err = update_replicaset(&old, &mut new).unwrap_err().to_string();
        assert!(
            err.contains("spec.selector: Invalid value") && err.contains("field is immutable"),
            "{err}"
        );
    }

    #[test]
    fn a_replication_controller_selects_its_template_labels_by_default() {
        let mut rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 2, "template": template()}});
        admit_replicationcontroller(&mut rc).unwrap();
        assert_eq!(rc["spec"]["selector"], json!({"app": "web", "tier": "fe"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "web", "tier": "fe"}));
        assert_eq!(workload_selector(&rc).unwrap().to_string(), "app=web,tier=fe");
    }
}
