//! Node and Lease validation: both are written by the node itself (its
//! registration and heartbeat); a client may read them, label a Node, or
//! write a Lease of its own.

use super::{decode, encode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::FieldErrors;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

/// Validates a new Node.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let mut node: Node = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&node.metadata, NameRule::Dns1123Subdomain, false, &mut errs);
    errs.into_result()?;
    node.metadata.namespace = None;
    encode(&node, obj);
    Ok(())
}

/// Validates a Node update: identity is immutable.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: Node = decode(old)?;
    let n: Node = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&n.metadata, NameRule::Dns1123Subdomain, false, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}

/// Validates a new Lease.
pub fn admit_lease_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let lease: Lease = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&lease.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    errs.into_result()?;
    encode(&lease, obj);
    Ok(())
}

/// Validates a Lease update (a renewal).
pub fn admit_lease_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: Lease = decode(old)?;
    let n: Lease = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_object_meta(&n.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}
