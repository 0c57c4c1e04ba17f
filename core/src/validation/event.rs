//! Event validation: Events are written by the node; users rarely create them.

use super::{decode, encode, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

fn check(ev: &Event) -> FieldErrors {
    let mut errs = FieldErrors::default();
    validate_object_meta(&ev.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    if ev.involved_object.kind.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required("involvedObject.kind"));
    }
    if let Some(t) = ev.type_.as_deref() {
        if t != "Normal" && t != "Warning" {
            errs.push(FieldError::not_supported("type", t, &["Normal", "Warning"]));
        }
    }
    errs
}

/// Validates a new Event.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let ev: Event = decode(obj)?;
    check(&ev).into_result()?;
    encode(&ev, obj);
    Ok(())
}

/// Validates an updated Event (count and timestamps change as events repeat).
pub fn admit_update(_old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let ev: Event = decode(new)?;
    check(&ev).into_result()?;
    encode(&ev, new);
    Ok(())
}
