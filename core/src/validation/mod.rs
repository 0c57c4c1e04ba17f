//! Defaulting and validation per kind, with Kubernetes' field paths and wording.

pub mod config;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod event;
pub mod job;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod probe;
pub mod projected;
pub mod quota;
pub mod security;
pub mod service;
pub mod statefulset;
pub mod storage;
pub mod volumes;
pub mod workloads;

use crate::field::{FieldError, FieldErrors};
use crate::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes the JSON form into a typed object; a type mismatch is an
/// `Invalid` error at the field that has the wrong type (`spec.containers[0].name`).
pub(crate) fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, FieldErrors> {
    serde_path_to_error::deserialize(obj.clone()).map_err(|e| {
        let path = e.path().to_string();
        let (path, value) = if path == "." {
            ("<body>".to_string(), String::new())
        } else {
            let value = value_at(obj, e.path()).map(|v| v.to_string()).unwrap_or_default();
            (path, value)
        };
        FieldErrors(vec![FieldError::invalid(path, value, e.into_inner().to_string())])
    })
}

/// The value at a decoding error's path.
fn value_at<'a>(obj: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(obj, |v, seg| match seg {
        Segment::Seq { index } => v.get(*index),
        Segment::Map { key } => v.get(key.as_str()),
        Segment::Enum { .. } | Segment::Unknown => Some(v),
    })
}

/// How a kind's names are checked.
#[derive(Clone, Copy)]
pub(crate) enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
    Dns1035Label,
}

/// Validates `metadata`: name, labels and annotation keys.
pub(crate) fn validate_object_meta(meta: &ObjectMeta, rule: NameRule, namespaced: bool, errs: &mut FieldErrors) {
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required("metadata.name")),
        Some(name) => {
            let problems = match rule {
                NameRule::Dns1123Label => names::is_dns1123_label(name),
                NameRule::Dns1123Subdomain => names::is_dns1123_subdomain(name),
                NameRule::Dns1035Label => names::is_dns1035_label(name),
            };
            for p in problems {
                errs.push(FieldError::invalid("metadata.name", name, p));
            }
        }
    }
    if namespaced {
        if let Some(ns) = meta.namespace.as_deref() {
            for p in names::is_dns1123_label(ns) {
                errs.push(FieldError::invalid("metadata.namespace", ns, p));
            }
        }
    }
    for (k, v) in meta.labels.iter().flatten() {
        for p in names::is_qualified_name(k) {
            errs.push(FieldError::invalid("metadata.labels", k, p));
        }
        for p in names::is_valid_label_value(v) {
            errs.push(FieldError::invalid(format!("metadata.labels[{k}]"), v, p));
        }
    }
    for k in meta.annotations.iter().flatten().map(|(k, _)| k) {
        for p in names::is_qualified_name(k) {
            errs.push(FieldError::invalid("metadata.annotations", k, p));
        }
    }
}

/// Refuses changes to identity fields on update.
pub(crate) fn validate_meta_update(old: &ObjectMeta, new: &ObjectMeta, errs: &mut FieldErrors) {
    if old.name != new.name {
        errs.push(FieldError::invalid(
            "metadata.name",
            new.name.clone().unwrap_or_default(),
            "field is immutable",
        ));
    }
    if new.uid.is_some() && old.uid != new.uid {
        errs.push(FieldError::invalid(
            "metadata.uid",
            new.uid.clone().unwrap_or_default(),
            "field is immutable",
        ));
    }
}

/// Encodes a typed object back into the JSON form, keeping `apiVersion`/`kind`.
pub(crate) fn encode<T: serde::Serialize>(typed: &T, out: &mut Value) {
    *out = crate::object::to_value(typed);
}
