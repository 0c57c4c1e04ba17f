//! Dynamic provisioning, as Kubernetes' external-provisioner does for a CSI
//! driver, with a loaded plugin in the driver's place:
//!
//! - A claim without `storageClassName` gets the default class (the one
//!   annotated `storageclass.kubernetes.io/is-default-class: "true"`, the
//!   newest if several), as the DefaultStorageClass admission and the
//!   retroactive assignment do.
//! - A pending claim that no volume fits, of a class whose `provisioner` is
//!   a loaded plugin that provisions, gets a volume `pvc-<claim uid>` from
//!   the plugin's `provision` with the class `parameters`; its
//!   PersistentVolume (a `csi` source naming the plugin, the class's
//!   `reclaimPolicy`, default Delete, and `mountOptions`) is pre-bound to
//!   the claim, so the next pass binds them. `WaitForFirstConsumer` waits
//!   until the scheduler picked a node (`volume.kubernetes.io/selected-node`)
//!   and only that node provisions. Provisioning the same name twice yields
//!   the same volume, so a crash between `provision` and the object's
//!   creation leaks nothing.

use super::reclaim::PROVISIONED_BY;
use super::{claim_ref, BinderContext};
use crate::events::EventKind;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::quantity::{format_bytes, Quantity};
use peapod_core::store::{Store, StoreError};
use peapod_core::validation::storage::{DEFAULT_CLASS, SELECTED_NODE};
use peapod_core::writes;
use peapod_plugin_sdk::{DeleteRequest, ProvisionRequest};
use serde_json::{json, Value};

/// The provisioner a claim waits for.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
const BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// The default class's name, if one is marked.
pub fn default_class(classes: &[Value]) -> Option<&str> {
    classes
        .iter()
        .filter(|c| {
            let a = &c["metadata"]["annotations"];
            a[DEFAULT_CLASS] == "true" || a[BETA_DEFAULT_CLASS] == "true"
        })
        .max_by(|a, b| {
            let ts = |c: &Value| c["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
            ts(a).cmp(&ts(b)).then_with(|| object::name(b).cmp(object::name(a)))
        })
        .map(object::name)
}

/// Gives an unbound claim without a class the default class; true if it did.
pub async fn assign_default(store: &dyn Store, claim: &Value, default: Option<&str>) -> Result<bool, StoreError> {
    let Some(default) = default else {
        return Ok(false);
    };
    let unset = claim["spec"]["storageClassName"].is_null()
        && claim["metadata"]["annotations"][BETA_CLASS].is_null()
        && claim["spec"]["volumeName"].as_str().is_none_or(str::is_empty);
    if !unset {
        return Ok(false);
    }
    let written = writes::modify(store, kinds::claim(), claim, |c| {
        if !c["spec"]["storageClassName"].is_null() {
            return false;
        }
        c["spec"]["storageClassName"] = json!(default);
        true
    })
    .await?;
    Ok(written.is_some())
}

/// Whether this node provisions a volume for `claim` of `class` now
/// (`delay`: it waits for the scheduler to choose a node).
pub fn wanted(cx: &BinderContext, claim: &Value, class: Option<&Value>, delay: bool) -> bool {
    let Some(class) = class else { return false };
    let provisioner = class["provisioner"].as_str().unwrap_or_default();
    if cx.volumes.provisioner(provisioner).is_none() || !claim["spec"]["volumeName"].is_null() {
        return false;
    }
    // A node-local volume is made by the node the scheduler chose.
    let selected = &claim["metadata"]["annotations"][SELECTED_NODE];
    !delay && (selected.is_null() || selected == cx.node_name.as_str())
}

fn requested(claim: &Value) -> i64 {
    claim["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .and_then(|q| Quantity::parse(q).ok())
        .map_or(0, |q| q.value())
}

/// The node affinity of a volume local to this node.
async fn this_node(cx: &BinderContext) -> Value {
    let hostname = cx
        .store
        .get(&kinds::node().resource(), "", &cx.node_name)
        .await
        .ok()
        .and_then(|n| {
            n["metadata"]["labels"]["kubernetes.io/hostname"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| cx.node_name.clone());
    json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]}]}]}})
}

/// Provisions a volume for `claim` of `class`; the error is the claim's
/// `ProvisioningFailed` message.
pub async fn provision(cx: &BinderContext, claim: &Value, class: &Value) -> Result<(), String> {
    let class_name = object::name(class);
    let fail = |e: String| format!("failed to provision volume with StorageClass {class_name:?}: {e}");
    let store = &*cx.store;
    let name = format!("pvc-{}", object::uid(claim));
    match store.get(&kinds::volume().resource(), "", &name).await {
        // Made by an earlier pass; binding takes it from here.
        Ok(_) => return Ok(()),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let provisioner = class["provisioner"].as_str().unwrap_or_default().to_string();
    let annotated = writes::modify(store, kinds::claim(), claim, |c| {
        if c["metadata"]["annotations"][STORAGE_PROVISIONER] == provisioner.as_str() {
            return false;
        }
        c["metadata"]["annotations"][STORAGE_PROVISIONER] = json!(provisioner);
        c["metadata"]["annotations"][BETA_STORAGE_PROVISIONER] = json!(provisioner);
        true
    })
    .await
    .map_err(|e| fail(e.to_string()))?;
    if annotated.is_some() {
        cx.events.object_event(
            claim,
            EventKind::Normal,
            "Provisioning",
            format!(
                "External provisioner is provisioning volume for claim \"{}/{}\"",
                object::namespace(claim),
                object::name(claim)
            ),
        );
    }
    let parameters = class["parameters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect();
    let modes: Vec<String> = claim["spec"]["accessModes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    let want = requested(claim);
    let req = ProvisionRequest {
        name: name.clone(),
        capacity_bytes: want,
        access_modes: modes.clone(),
        parameters,
    };
    let resp = cx.volumes.provision(&provisioner, &req).await.map_err(fail)?;
    let fs_type = ["csi.storage.k8s.io/fstype", "fsType", "fstype"]
        .iter()
        .find_map(|k| req.parameters.get(*k).cloned())
        .unwrap_or_default();
    let mut csi = json!({"driver": provisioner, "volumeHandle": resp.volume_id,
        "volumeAttributes": resp.volume_context});
    if !fs_type.is_empty() {
        csi["fsType"] = json!(fs_type);
    }
    let mut pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: provisioner}},
        "spec": {
            "capacity": {"storage": format_bytes(resp.capacity_bytes.max(want))},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": class["reclaimPolicy"].as_str().unwrap_or("Delete"),
            "storageClassName": class_name,
            "volumeMode": claim["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
            "claimRef": claim_ref(claim),
            "csi": csi,
        }
    });
    if let Some(opts) = class["mountOptions"].as_array() {
        pv["spec"]["mountOptions"] = json!(opts);
    }
    if resp.local_to_node {
        pv["spec"]["nodeAffinity"] = this_node(cx).await;
    }
    match writes::create(store, kinds::volume(), pv).await {
        Ok(_) => {
            cx.events.object_event(
                claim,
                EventKind::Normal,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {name}"),
            );
            Ok(())
        }
        Err(writes::CreateError::Store(StoreError::AlreadyExists { .. })) => Ok(()),
        Err(e) => {
            // Nothing will refer to it: give it back.
            let del = DeleteRequest {
                volume_id: resp.volume_id.clone(),
                volume_context: resp.volume_context.clone(),
            };
            if let Err(d) = cx.volumes.delete_volume(&provisioner, &del).await {
                tracing::warn!("deleting volume {name} after its object could not be stored: {d}");
            }
            Err(fail(e.to_string()))
        }
    }
}

/// The provisioner of the class a fresh node gets: the local plugin.
pub const DEFAULT_PROVISIONER: &str = "local.peapod.io";

/// Gives a node with the local plugin and no StorageClass at all the
/// default class `local` (WaitForFirstConsumer, Delete, expandable), as a cluster
/// installer adds one; a node that has classes is left alone.
pub async fn ensure_default_class(store: &dyn Store, volumes: &peapod_volumes::VolumeManager) -> Result<(), String> {
    if volumes.provisioner(DEFAULT_PROVISIONER).is_none() {
        return Ok(());
    }
    let (classes, _) = store
        .list(&kinds::storageclass().resource(), None)
        .await
        .map_err(|e| e.to_string())?;
    if !classes.is_empty() {
        return Ok(());
    }
    let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local", "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": DEFAULT_PROVISIONER, "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true});
    match writes::create(store, kinds::storageclass(), class).await {
        Ok(_) | Err(writes::CreateError::Store(StoreError::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_marked_class_is_the_default() {
        let class = |name: &str, ts: &str, marked: bool| {
            let mut c = json!({"metadata": {"name": name, "creationTimestamp": ts}});
            if marked {
                c["metadata"]["annotations"][DEFAULT_CLASS] = json!("true");
            }
            c
        };
        assert_eq!(default_class(&[class("a", "2026-01-01T00:00:00Z", false)]), None);
        let classes = [
            class("old", "2026-01-01T00:00:00Z", true),
            class("new", "2026-02-01T00:00:00Z", true),
            class("newest-unmarked", "2026-03-01T00:00:00Z", false),
        ];
        assert_eq!(default_class(&classes), Some("new"));
        let mut beta = class("beta", "2026-04-01T00:00:00Z", false);
        beta["metadata"]["annotations"][BETA_DEFAULT_CLASS] = json!("true");
        assert_eq!(default_class(&[classes[0].clone(), beta]), Some("beta"));
    }
}
