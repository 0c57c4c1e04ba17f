//! Namespace defaulting and validation.

use super::{decode, encode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::FieldErrors;
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};
use serde_json::Value;

/// Defaults (`spec.finalizers: [kubernetes]`, `status.phase: Active`) and validates a new Namespace.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let mut ns: Namespace = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&ns.metadata, NameRule::Dns1123Label, false, &mut errs);
    errs.into_result()?;
    ns.metadata.namespace = None;
    ns.spec
        .get_or_insert_with(NamespaceSpec::default)
        .finalizers
        .get_or_insert_with(|| vec!["kubernetes".into()]);
    ns.status = Some(NamespaceStatus {
        phase: Some("Active".into()),
        ..Default::default()
    });
    encode(&ns, obj);
    Ok(())
}

/// Validates an update: identity is immutable.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: Namespace = decode(old)?;
    let n: Namespace = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&n.metadata, NameRule::Dns1123Label, false, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}

/// The namespaces the node keeps; deleting one is forbidden, as the API server forbids it.
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Refuses to delete the namespaces the node keeps; a deleted one is `Terminating`.
pub fn admit_delete(current: &Value, marked: &mut Value) -> Result<(), String> {
    let name = current["metadata"]["name"].as_str().unwrap_or("");
    if IMMORTAL.contains(&name) {
        return Err(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        ));
    }
    marked["status"]["phase"] = serde_json::json!("Terminating");
    Ok(())
}
