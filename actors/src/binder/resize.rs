//! Expansion, as Kubernetes' external-resizer and kubelet's node expansion
//! do it together: a bound claim whose storage request grew past its
//! capacity, of a class with `allowVolumeExpansion: true`, has its volume
//! grown by the plugin's `expand` (the volume itself, then, where it is
//! staged on this node, the filesystem on it). The PersistentVolume's
//! capacity and then the claim's `status.capacity` follow. A filesystem that
//! cannot grow while mounted (here the kernel refuses online ext4 growth
//! without CAP_SYS_RESOURCE) leaves the claim `FileSystemResizePending`
//! until the volume is staged again, which grows it unmounted; the pod that
//! staged it then completes the claim (`claims::finish_resizes`).
//! `Resizing`, `FileSystemResizeRequired`, `VolumeResizeSuccessful` and
//! `VolumeResizeFailed` events say what happened.

use super::reclaim::PROVISIONED_BY;
use super::{report, BinderContext};
use crate::events::EventKind;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::quantity::{format_bytes, Quantity};
use peapod_core::store::StoreError;
use peapod_core::writes;
use peapod_plugin_sdk::ExpandRequest;
use peapod_volumes::{claims, sources};
use serde_json::{json, Value};
use std::collections::HashMap;

fn bytes(q: &Value) -> i64 {
    q.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .map_or(0, |q| q.value())
}

/// Whether `claim` asks for more than it has.
pub fn wants_more(claim: &Value) -> bool {
    let want = bytes(&claim["spec"]["resources"]["requests"]["storage"]);
    want > bytes(&claim["status"]["capacity"]["storage"])
}

/// Grows `volume` for the bound `claim` of `class`, if the claim asks for more.
pub async fn resize(
    cx: &BinderContext,
    claim: &Value,
    volume: &Value,
    class: Option<&Value>,
    reported: &mut HashMap<String, String>,
) -> Result<(), StoreError> {
    if !wants_more(claim) {
        return Ok(());
    }
    let want = bytes(&claim["spec"]["resources"]["requests"]["storage"]);
    if claims::resize_pending(claim) && bytes(&volume["spec"]["capacity"]["storage"]) >= want {
        // The volume has grown; its filesystem waits for the next staging.
        return Ok(());
    }
    let pv = object::name(volume).to_string();
    let fail = |reported: &mut HashMap<String, String>, message: String| {
        report(
            &cx.events,
            reported,
            claim,
            EventKind::Warning,
            "VolumeResizeFailed",
            message,
        );
    };
    if !class.is_some_and(|c| c["allowVolumeExpansion"] == true) {
        let name = claim["spec"]["storageClassName"].as_str().unwrap_or_default();
        fail(
            reported,
            format!("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize (storageclass {name:?})"),
        );
        return Ok(());
    }
    let src = match sources::from_volume("", "", volume, false) {
        Ok(s) => s,
        Err(e) => {
            fail(reported, e);
            return Ok(());
        }
    };
    let by = volume["metadata"]["annotations"][PROVISIONED_BY]
        .as_str()
        .unwrap_or_default();
    let plugin = if !by.is_empty() && cx.volumes.expander(by).is_some() {
        by.to_string()
    } else {
        src.plugin.clone()
    };
    report(
        &cx.events,
        reported,
        claim,
        EventKind::Normal,
        "Resizing",
        format!("External resizer is resizing volume {pv}"),
    );
    let req = ExpandRequest {
        volume_id: src.volume_id.clone(),
        capacity_bytes: want,
        volume_path: String::new(),
        volume_context: src.context.clone(),
    };
    match cx.volumes.expand(&plugin, &pv, req).await {
        Ok(grown) => {
            let size = format_bytes(grown.capacity.max(want));
            writes::modify(&*cx.store, kinds::volume(), volume, |v| {
                if v["spec"]["capacity"]["storage"] == size.as_str() {
                    return false;
                }
                v["spec"]["capacity"]["storage"] = json!(size);
                true
            })
            .await?;
            let pending = grown.filesystem_pending.clone();
            writes::modify(&*cx.store, kinds::claim(), claim, |c| {
                let mut conditions: Vec<Value> = c["status"]["conditions"].as_array().cloned().unwrap_or_default();
                conditions.retain(|x| x["type"] != claims::RESIZE_PENDING);
                match &pending {
                    None => c["status"]["capacity"]["storage"] = json!(size),
                    Some(_) => conditions.push(json!({"type": claims::RESIZE_PENDING, "status": "True",
                        "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339(),
                        "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node."})),
                }
                c["status"]["conditions"] = json!(conditions);
                true
            })
            .await?;
            match pending {
                None => report(
                    &cx.events,
                    reported,
                    claim,
                    EventKind::Normal,
                    "VolumeResizeSuccessful",
                    format!("MountVolume.NodeExpandVolume succeeded for volume {pv:?}: {size}"),
                ),
                Some(why) => report(
                    &cx.events,
                    reported,
                    claim,
                    EventKind::Normal,
                    "FileSystemResizeRequired",
                    format!("Require file system resize of volume on node ({why}); it grows when the volume is next mounted"),
                ),
            }
        }
        Err(e) => fail(reported, format!("resize volume {pv:?} through plugin {plugin:?}: {e}")),
    }
    Ok(())
}
