//! What happens to claims and volumes at their end, as Kubernetes'
//! pvc-protection, pv-protection and PersistentVolume controllers do:
//!
//! - A deleted claim keeps `kubernetes.io/pvc-protection` while a pod that
//!   has not ended uses it; then the finalizer goes, and the claim with it.
//! - A deleted volume keeps `kubernetes.io/pv-protection` while it is bound.
//! - A released volume is reclaimed by `persistentVolumeReclaimPolicy`:
//!   `Retain` leaves it `Released` with its data; `Delete` deletes it
//!   through the plugin that provisioned it (or serves its source), then
//!   removes the object; a volume no plugin can delete is `Failed`, with the
//!   reason as an event and in `status.message`, and is tried again.

use super::{phase, report, BinderContext};
use crate::events::EventKind;
use peapod_core::deletion;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::{Preconditions, StoreError};
use peapod_core::validation::storage::{CLAIM_PROTECTION, VOLUME_PROTECTION};
use peapod_core::writes;
use peapod_plugin_sdk::DeleteRequest;
use peapod_volumes::sources;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// The annotation naming the provisioner that created a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Whether pod `p` names any claim.
pub fn uses_claims(p: &Value) -> bool {
    p["spec"]["volumes"]
        .as_array()
        .is_some_and(|vs| vs.iter().any(|v| !v["persistentVolumeClaim"].is_null()))
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    o["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == f))
}

async fn drop_finalizer(cx: &BinderContext, kind: &'static kinds::Kind, o: &Value, f: &str) -> Result<(), StoreError> {
    writes::modify(&*cx.store, kind, o, |x| {
        let Some(a) = x["metadata"]["finalizers"].as_array_mut() else {
            return false;
        };
        let before = a.len();
        a.retain(|y| y != f);
        before != a.len()
    })
    .await
    .map(drop)
}

/// Removes `kubernetes.io/pvc-protection` from deleted claims no live pod uses.
pub async fn protect_claims(cx: &BinderContext, claims: &[Value]) -> Result<(), StoreError> {
    let going: Vec<&Value> = claims
        .iter()
        .filter(|c| object::deletion_timestamp(c).is_some() && has_finalizer(c, CLAIM_PROTECTION))
        .collect();
    if going.is_empty() {
        return Ok(());
    }
    let (pods, _) = cx.store.list(&kinds::pod().resource(), None).await?;
    // Claims in use, by namespace/name: a pod uses a claim until it ends.
    let mut used: HashSet<String> = HashSet::new();
    for p in &pods {
        if matches!(phase(p), "Succeeded" | "Failed") {
            continue;
        }
        for v in p["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(name) = v["persistentVolumeClaim"]["claimName"].as_str() {
                used.insert(format!("{}/{name}", object::namespace(p)));
            }
        }
    }
    for c in going {
        if !used.contains(&format!("{}/{}", object::namespace(c), object::name(c))) {
            drop_finalizer(cx, kinds::claim(), c, CLAIM_PROTECTION).await?;
        }
    }
    Ok(())
}

/// Removes `kubernetes.io/pv-protection` from deleted volumes no claim is bound to.
pub async fn protect_volumes(cx: &BinderContext, volumes: &[Value]) -> Result<(), StoreError> {
    for v in volumes {
        if object::deletion_timestamp(v).is_some() && has_finalizer(v, VOLUME_PROTECTION) && phase(v) != "Bound" {
            drop_finalizer(cx, kinds::volume(), v, VOLUME_PROTECTION).await?;
        }
    }
    Ok(())
}

/// The plugin that deletes `pv`: its provisioner if it names a loaded
/// plugin, else the plugin serving its source.
fn deleter(cx: &BinderContext, pv: &Value) -> Result<(String, DeleteRequest), String> {
    let src = sources::from_volume("", "", pv, false)?;
    let by = pv["metadata"]["annotations"][PROVISIONED_BY]
        .as_str()
        .unwrap_or_default();
    let plugin = if !by.is_empty() && cx.volumes.provisioner(by).is_some() {
        by.to_string()
    } else {
        src.plugin.clone()
    };
    if cx.volumes.provisioner(&plugin).is_none() {
        return Err(format!(
            "error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched",
            object::name(pv)
        ));
    }
    Ok((
        plugin,
        DeleteRequest {
            volume_id: src.volume_id,
            volume_context: src.context,
        },
    ))
}

/// Reclaims a released (or failed) volume by its policy.
pub async fn reclaim(cx: &BinderContext, pv: &Value, reported: &mut HashMap<String, String>) -> Result<(), StoreError> {
    let policy = pv["spec"]["persistentVolumeReclaimPolicy"].as_str().unwrap_or("Retain");
    let outcome = match policy {
        "Retain" => return Ok(()),
        "Delete" => match deleter(cx, pv) {
            Ok((plugin, req)) => cx.volumes.delete_volume(&plugin, &req).await.map_err(|e| {
                format!(
                    "error deleting volume {:?} through plugin {plugin:?}: {e}",
                    object::name(pv)
                )
            }),
            Err(e) => Err(e),
        },
        other => Err(format!("reclaim policy {other:?} is not supported on this node")),
    };
    match outcome {
        Ok(()) => {
            let pre = Preconditions {
                uid: Some(object::uid(pv).to_string()),
                resource_version: None,
            };
            match deletion::remove(&*cx.store, &kinds::volume().resource(), "", object::name(pv), pre).await {
                Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            // The object may still be held by its finalizer until the next pass.
            if let Some(stored) = cx
                .store
                .get(&kinds::volume().resource(), "", object::name(pv))
                .await
                .ok()
                .filter(|s| object::uid(s) == object::uid(pv))
            {
                protect_volumes(cx, &[stored]).await?;
            }
            reported.remove(object::uid(pv));
        }
        Err(message) => {
            report(
                &cx.events,
                reported,
                pv,
                EventKind::Warning,
                "VolumeFailedDelete",
                message.clone(),
            );
            writes::modify(&*cx.store, kinds::volume(), pv, |x| {
                if x["status"]["phase"] == "Failed" && x["status"]["message"] == message.as_str() {
                    return false;
                }
                x["status"]["phase"] = json!("Failed");
                x["status"]["message"] = json!(message);
                true
            })
            .await?;
        }
    }
    Ok(())
}
