//! Accessors for the metadata every stored object carries, on the generic JSON form.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `metadata.name`, or "" when absent.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace`, or "" when absent (cluster-scoped kinds).
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

/// `metadata.uid`, or "".
pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

/// `metadata.resourceVersion` as the store's revision number, 0 when absent or unparsable.
pub fn resource_version(obj: &Value) -> u64 {
    meta_str(obj, "resourceVersion").parse().unwrap_or(0)
}

/// `metadata.deletionTimestamp` when the object is being deleted.
pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/deletionTimestamp").and_then(Value::as_str)
}

/// `metadata.labels` as a map (empty when absent).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The `metadata` map, created when missing; `None` when the object is not a JSON object.
pub fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = obj.as_object_mut()?;
    let meta = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

/// Sets one string field of `metadata`.
pub fn set_meta(obj: &mut Value, field: &str, value: impl Into<String>) {
    if let Some(m) = metadata_mut(obj) {
        m.insert(field.to_string(), Value::String(value.into()));
    }
}

/// Now as RFC 3339 with second precision, as Kubernetes writes `metav1.Time`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A fresh object uid.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A random lowercase alphanumeric suffix, as Kubernetes' `generateName` appends.
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    (0..len)
        .map(|i| ALPHABET[bytes[i % 16] as usize % ALPHABET.len()] as char)
        .collect()
}

/// Converts a typed Kubernetes object into the stored JSON form.
pub fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// Marks an object for graceful deletion as Kubernetes does: sets
/// `deletionTimestamp` and `deletionGracePeriodSeconds` (from `grace`, else the
/// pod's `terminationGracePeriodSeconds`, else 30). Already-marked objects keep
/// their timestamp; a shorter grace period may replace a longer one.
pub fn mark_deleted(obj: &mut Value, grace: Option<i64>) {
    let spec_grace = obj
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    let current = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    let grace = grace.or(current).or(spec_grace).unwrap_or(30).max(0);
    let grace = current.map_or(grace, |c| c.min(grace));
    let Some(meta) = metadata_mut(obj) else { return };
    meta.entry("deletionTimestamp")
        .or_insert_with(|| Value::String(now_rfc3339()));
    meta.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
}
