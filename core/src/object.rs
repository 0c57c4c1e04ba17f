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
/// `deletionGracePeriodSeconds` (from `grace`, else the current one, else the
/// pod's `terminationGracePeriodSeconds`, else 30) and `deletionTimestamp`
/// to the time by which it must be gone (now plus the grace period). A
/// later request may only shorten both, never extend them. Any non-negative
/// int64 is accepted; a timestamp past 9999-01-01 is written as that.
pub fn mark_deleted(obj: &mut Value, grace: Option<i64>) {
    mark_deleted_at(obj, grace, chrono::Utc::now());
}

fn mark_deleted_at(obj: &mut Value, grace: Option<i64>, now: chrono::DateTime<chrono::Utc>) {
    let spec_grace = obj
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    let current = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    let grace = grace.or(current).or(spec_grace).unwrap_or(30).max(0);
    let grace = current.map_or(grace, |c| c.min(grace));
    // The latest time every client decodes (Go's and jiff's ranges alike).
    let last = chrono::NaiveDate::from_ymd_opt(9999, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(now);
    // Rounded up to the whole second the timestamp can hold, so the grace
    // period is never cut short.
    let ceil = if now.timestamp_subsec_nanos() > 0 { 1 } else { 0 };
    let due = chrono::TimeDelta::try_seconds(grace.saturating_add(ceil))
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(last)
        .min(last);
    let due = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Some(meta) = metadata_mut(obj) else { return };
    let keep = meta
        .get("deletionTimestamp")
        .and_then(Value::as_str)
        .is_some_and(|old| old <= due.as_str());
    if !keep {
        meta.insert("deletionTimestamp".into(), Value::String(due));
    }
    meta.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn deletion_timestamp_is_the_deadline_and_only_moves_earlier() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 30}});
        mark_deleted_at(&mut pod, None, at("2026-01-01T00:00:00Z"));
        assert_eq!(pod["metadata"]["deletionTimestamp"], "2026-01-01T00:00:30Z");
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
        // A second delete ten and a half seconds later with grace 5: due at
        // 00:00:15.5, written as 00:00:16 (never shorter than asked).
        mark_deleted_at(&mut pod, Some(5), at("2026-01-01T00:00:10.5Z"));
        assert_eq!(pod["metadata"]["deletionTimestamp"], "2026-01-01T00:00:16Z");
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 5);
        // A longer one later changes nothing.
        mark_deleted_at(&mut pod, Some(60), at("2026-01-01T00:00:11Z"));
        assert_eq!(pod["metadata"]["deletionTimestamp"], "2026-01-01T00:00:16Z");
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 5);
    }

    #[test]
    fn the_largest_grace_period_does_not_overflow() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": i64::MAX}});
        mark_deleted_at(&mut pod, None, at("2026-01-01T00:00:00Z"));
        assert_eq!(pod["metadata"]["deletionTimestamp"], "9999-01-01T00:00:00Z");
        let t: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(pod["metadata"]["deletionTimestamp"].clone()).expect("decodable");
        assert!(t.0.as_second() > 0);
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], i64::MAX);
    }
}
