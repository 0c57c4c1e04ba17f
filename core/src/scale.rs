//! The `scale` subresource: an object's `spec.replicas` read and set as an
//! autoscaling/v1 `Scale`, as `kubectl scale` and autoscalers use it.

use crate::field::{FieldError, FieldErrors};
use crate::object;
use crate::validation::workloads::workload_selector;
use serde_json::{json, Value};

/// The `Scale` of a workload object.
pub fn of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut metadata = json!({"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
        "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]});
    if let Some(m) = metadata.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": metadata,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": workload_selector(obj).map(|s| s.to_string()).unwrap_or_default()}})
}

/// The object with the replicas a `Scale` asks for. The Scale's
/// resourceVersion, when it has one, must be the object's.
pub fn apply(obj: &Value, scale: &Value) -> Result<Value, FieldErrors> {
    let mut errs = FieldErrors::default();
    let replicas = &scale["spec"]["replicas"];
    let n = match replicas {
        Value::Null => 0,
        v => match v.as_i64() {
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => n,
            Some(n) if n < 0 => {
                errs.push(FieldError::invalid(
                    "spec.replicas",
                    n,
                    "must be greater than or equal to 0",
                ));
                0
            }
            _ => {
                errs.push(FieldError::invalid("spec.replicas", v, "must be an integer"));
                0
            }
        },
    };
    errs.into_result()?;
    let mut next = obj.clone();
    next["spec"]["replicas"] = json!(n);
    let rv = scale["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if !rv.is_empty() {
        object::set_meta(&mut next, "resourceVersion", rv);
    }
    Ok(next)
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_reads_and_sets_replicas() {
        let rs = json!({"kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = of(&rs);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        let mut patched = s.clone();
        merge_patch(&mut patched, &json!({"spec": {"replicas": 5}}));
        let next = apply(&rs, &patched).unwrap();
        assert_eq!(next["spec"]["replicas"], 5);
        assert_eq!(next["metadata"]["resourceVersion"], "7");
        let err = apply(&rs, &json!({"spec": {"replicas": -2}})).unwrap_err().to_string();
        assert_eq!(
            err,
            "spec.replicas: Invalid value: \"-2\": must be greater than or equal to 0"
        );
    }
}
