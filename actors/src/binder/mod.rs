//! `Binder`: binds PersistentVolumeClaims to PersistentVolumes as
//! Kubernetes' PersistentVolume controller does, as a supervised child of
//! the node. The rules are pure functions in [`peapod_volumes::binding`];
//! this actor follows volumes, claims and classes through informers and
//! writes what they decide:
//!
//! - A new volume becomes `Available`.
//! - A `Pending` claim that names its volume (`volumeName`) binds to it if
//!   it fits (`VolumeMismatch` says why not); any other takes the best match.
//!   Binding writes the volume first (`claimRef`, `Bound`,
//!   `pv.kubernetes.io/bound-by-controller`), then the claim (`volumeName`,
//!   `Bound`, capacity and access modes of the volume,
//!   `pv.kubernetes.io/bind-completed`), so a crash in between is finished
//!   by the next pass from the volume's `claimRef`.
//! - A claim with no match stays `Pending` with an event saying why, in the
//!   controller's words; a class that binds at first use waits
//!   (`WaitForFirstConsumer`).
//! - A volume whose claim is gone is `Released`; a bound claim whose volume
//!   is gone is `Lost`. A released volume is reclaimed by its policy:
//!   `Retain` keeps it (and its data), `Delete` deletes it through the plugin
//!   that provisioned it, then the object ([`reclaim`]).
//! - A claim without a class gets the default class; a claim of a class
//!   whose provisioner is a loaded plugin gets a volume provisioned for it
//!   ([`provision`]).
//! - A bound claim that asks for more grows its volume ([`resize`]).
//! - Claims and volumes carry the protection finalizers from admission; a
//!   deleted claim goes once no running pod uses it, a deleted volume once
//!   it is not bound ([`reclaim`]).
//!
//! Passes are level-triggered and coalesced, as the scheduler's.

mod provision;
mod reclaim;
mod resize;

pub use provision::{ensure_default_class, DEFAULT_PROVISIONER};

use crate::events::{EventKind, EventRecorder};
use crate::informer::{self, Informed};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::{Store, StoreError};
use peapod_core::validation::storage::{class_of, SELECTED_NODE};
use peapod_core::writes;
use peapod_volumes::{binding, VolumeManager};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The component name on the binder's events, as Kubernetes'.
pub const COMPONENT: &str = "persistentvolume-controller";
/// On a volume: the binder set its `claimRef`.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a claim: its binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// How often everything is looked at again without any change.
const RESYNC: Duration = Duration::from_secs(15);

/// What a pass works with.
#[derive(Clone)]
pub struct BinderContext {
    pub store: Arc<dyn Store>,
    pub events: EventRecorder,
    /// The node's plugins, for provisioning and deleting volumes.
    pub volumes: Arc<VolumeManager>,
    /// This node's name: volumes local to a node are provisioned by that node.
    pub node_name: String,
}

/// The binder.
pub struct Binder {
    cx: BinderContext,
    node: TreeNode,
    running: bool,
    again: bool,
    /// The last message reported per object uid (an event per new message).
    reported: HashMap<String, String>,
}

impl Binder {
    /// A binder over `cx.store`, registered in the tree as `node`.
    pub fn new(mut cx: BinderContext, node: TreeNode) -> Self {
        cx.events = cx.events.with_component(COMPONENT);
        Self {
            cx,
            node,
            running: false,
            again: false,
            reported: HashMap::new(),
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        let cx = self.cx.clone();
        let reported = std::mem::take(&mut self.reported);
        ctx.spawn(
            async move {
                let mut reported = reported;
                if let Err(e) = bind_all(&cx, &mut reported).await {
                    tracing::warn!("binding claims: {e}");
                }
                reported
            }
            .into_actor(self)
            .map(|reported, act, ctx| {
                act.reported = reported;
                act.running = false;
                if std::mem::take(&mut act.again) {
                    act.pass(ctx);
                }
            }),
        );
    }
}

fn key(o: &Value) -> String {
    format!("{}/{}", object::namespace(o), object::name(o))
}

pub(super) fn phase(o: &Value) -> &str {
    o["status"]["phase"].as_str().unwrap_or("")
}

pub(super) async fn set_phase(
    store: &dyn Store,
    kind: &'static kinds::Kind,
    o: &Value,
    to: &str,
) -> Result<(), StoreError> {
    writes::modify(store, kind, o, |x| {
        if x["status"]["phase"] == to {
            return false;
        }
        x["status"]["phase"] = json!(to);
        true
    })
    .await
    .map(drop)
}

/// One pass over every volume and claim.
async fn bind_all(cx: &BinderContext, reported: &mut HashMap<String, String>) -> Result<(), StoreError> {
    let (store, events) = (&*cx.store, &cx.events);
    let (volumes, _) = store.list(&kinds::volume().resource(), None).await?;
    let (claims, _) = store.list(&kinds::claim().resource(), None).await?;
    let (classes, _) = store.list(&kinds::storageclass().resource(), None).await?;
    reclaim::protect_claims(cx, &claims).await?;
    let claims_by_key: HashMap<String, &Value> = claims.iter().map(|c| (key(c), c)).collect();
    let mut volumes_now: Vec<Value> = Vec::new();
    // Volumes: Available, Bound or Released by what their claimRef names.
    for v in &volumes {
        let r = &v["spec"]["claimRef"];
        let want = if r.is_null() {
            "Available"
        } else {
            let k = format!(
                "{}/{}",
                r["namespace"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            );
            let uid = r["uid"].as_str().unwrap_or("");
            match claims_by_key.get(&k) {
                // Pre-bound by the user to a claim that is not there yet.
                None if uid.is_empty() => "Available",
                Some(c) if binding::is_bound_to(v, c) => {
                    if c["spec"]["volumeName"] == v["metadata"]["name"] {
                        "Bound"
                    } else {
                        phase(v)
                    }
                }
                _ if uid.is_empty() => "Available",
                _ => "Released",
            }
        };
        let want = match want {
            "" => "Available",
            // A volume whose reclaim failed stays Failed until it succeeds.
            "Released" if phase(v) == "Failed" => "Failed",
            w => w,
        };
        if phase(v) != want && object::deletion_timestamp(v).is_none() {
            set_phase(store, kinds::volume(), v, want).await?;
            if want == "Released" {
                events.object_event(
                    v,
                    EventKind::Normal,
                    "VolumeReleased",
                    format!(
                        "Volume released by its claim; reclaim policy {}",
                        v["spec"]["persistentVolumeReclaimPolicy"].as_str().unwrap_or("Retain")
                    ),
                );
            }
        }
        let mut now = v.clone();
        now["status"]["phase"] = json!(want);
        if matches!(want, "Released" | "Failed") && object::deletion_timestamp(v).is_none() {
            reclaim::reclaim(cx, &now, reported).await?;
        }
        volumes_now.push(now);
    }
    reclaim::protect_volumes(cx, &volumes_now).await?;
    let default_class = provision::default_class(&classes);
    // Claims.
    for c in &claims {
        if object::deletion_timestamp(c).is_some() {
            continue;
        }
        if provision::assign_default(store, c, default_class).await? {
            continue;
        }
        let uid = object::uid(c).to_string();
        let named = c["spec"]["volumeName"].as_str().unwrap_or("").to_string();
        if phase(c) == "Bound" {
            let volume = volumes_now.iter().find(|v| object::name(v) == named);
            if let Some(v) = volume.filter(|v| binding::is_bound_to(v, c) && resize::wants_more(c)) {
                let class = classes.iter().find(|s| object::name(s) == class_of(c));
                resize::resize(cx, c, v, class, reported).await?;
            }
            if volume.is_none_or(|v| !binding::is_bound_to(v, c)) {
                set_phase(store, kinds::claim(), c, "Lost").await?;
                events.object_event(
                    c,
                    EventKind::Warning,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(),
                );
            }
            continue;
        }
        if phase(c) == "Lost" {
            continue;
        }
        let class = class_of(c);
        let class_obj = classes.iter().find(|s| object::name(s) == class);
        // Binding at first use waits until the scheduler picked a node.
        let delay = class_obj.is_some_and(|s| s["volumeBindingMode"] == "WaitForFirstConsumer")
            && c["metadata"]["annotations"][SELECTED_NODE].is_null();
        let chosen = if named.is_empty() {
            binding::best_match(c, &volumes_now, delay).cloned()
        } else {
            match volumes_now.iter().find(|v| object::name(v) == named) {
                None => None,
                Some(v) if !v["spec"]["claimRef"].is_null() && !binding::is_bound_to(v, c) => None,
                Some(v) => match binding::unsatisfied(c, v) {
                    Some(why) => {
                        report(
                            events,
                            reported,
                            c,
                            EventKind::Warning,
                            "VolumeMismatch",
                            format!("Cannot bind to requested volume \"{named}\": {why}"),
                        );
                        continue;
                    }
                    None => Some(v.clone()),
                },
            }
        };
        match chosen {
            Some(v) => {
                bind(store, &v, c).await?;
                reported.remove(&uid);
                if let Some(slot) = volumes_now.iter_mut().find(|x| object::name(x) == object::name(&v)) {
                    slot["spec"]["claimRef"] = claim_ref(c);
                    slot["status"]["phase"] = json!("Bound");
                }
            }
            None => {
                let (kind, reason, message) = if !named.is_empty() {
                    (
                        EventKind::Normal,
                        "FailedBinding",
                        format!("volume \"{named}\" not found or bound to another claim"),
                    )
                } else if class.is_empty() {
                    (
                        EventKind::Normal,
                        "FailedBinding",
                        "no persistent volumes available for this claim and no storage class is set".into(),
                    )
                } else if class_obj.is_none() {
                    (
                        EventKind::Warning,
                        "ProvisioningFailed",
                        format!("storageclass.storage.k8s.io \"{class}\" not found"),
                    )
                } else if provision::wanted(cx, c, class_obj, delay) {
                    if let Err(message) = provision::provision(cx, c, class_obj.unwrap_or(&Value::Null)).await {
                        report(events, reported, c, EventKind::Warning, "ProvisioningFailed", message);
                    }
                    continue;
                } else if delay {
                    (
                        EventKind::Normal,
                        "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding".into(),
                    )
                } else {
                    let provisioner = class_obj.and_then(|s| s["provisioner"].as_str()).unwrap_or("");
                    (
                        EventKind::Normal,
                        "ExternalProvisioning",
                        format!(
                            "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
                             or manually by the system administrator. If volume creation is delayed, please verify \
                             that the provisioner is running and correctly registered."
                        ),
                    )
                };
                report(events, reported, c, kind, reason, message);
            }
        }
    }
    let live: std::collections::HashSet<String> = claims.iter().map(|c| object::uid(c).to_string()).collect();
    reported.retain(|uid, _| live.contains(uid));
    Ok(())
}

pub(super) fn report(
    events: &EventRecorder,
    reported: &mut HashMap<String, String>,
    claim: &Value,
    kind: EventKind,
    reason: &str,
    message: String,
) {
    let uid = object::uid(claim).to_string();
    if reported.get(&uid) != Some(&message) {
        events.object_event(claim, kind, reason, message.clone());
        reported.insert(uid, message);
    }
}

/// The `claimRef` a volume bound to `claim` carries.
pub(super) fn claim_ref(claim: &Value) -> Value {
    json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": object::namespace(claim),
        "name": object::name(claim), "uid": object::uid(claim),
        "resourceVersion": claim["metadata"]["resourceVersion"]})
}

/// Binds `volume` and `claim`: the volume first, then the claim.
async fn bind(store: &dyn Store, volume: &Value, claim: &Value) -> Result<(), StoreError> {
    let cref = claim_ref(claim);
    writes::modify(store, kinds::volume(), volume, |v| {
        if !v["spec"]["claimRef"].is_null() && !binding::is_bound_to(v, claim) {
            return false;
        }
        let mut changed = false;
        if v["spec"]["claimRef"]["uid"] != cref["uid"] {
            if v["spec"]["claimRef"].is_null() {
                v["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
            }
            v["spec"]["claimRef"] = cref.clone();
            changed = true;
        }
        if v["status"]["phase"] != "Bound" {
            v["status"]["phase"] = json!("Bound");
            changed = true;
        }
        changed
    })
    .await?;
    let stored = store.get(&kinds::volume().resource(), "", object::name(volume)).await?;
    if !binding::is_bound_to(&stored, claim) {
        // Another pass took it first: the next pass finds another.
        return Ok(());
    }
    let by_controller =
        volume["spec"]["claimRef"].is_null() || stored["metadata"]["annotations"][BOUND_BY_CONTROLLER] == "yes";
    writes::modify(store, kinds::claim(), claim, |c| {
        let mut changed = false;
        if c["spec"]["volumeName"] != stored["metadata"]["name"] {
            c["spec"]["volumeName"] = stored["metadata"]["name"].clone();
            if by_controller {
                c["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
            }
            changed = true;
        }
        if c["metadata"]["annotations"][BIND_COMPLETED] != "yes" {
            c["metadata"]["annotations"][BIND_COMPLETED] = json!("yes");
            changed = true;
        }
        let status = json!({"phase": "Bound", "accessModes": stored["spec"]["accessModes"],
            "capacity": stored["spec"]["capacity"]});
        if c["status"] != status {
            c["status"] = status;
            changed = true;
        }
        changed
    })
    .await?;
    Ok(())
}

impl Actor for Binder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Binding");
        // Pods too: a deleted claim goes when the last pod using it does.
        for kind in [kinds::volume(), kinds::claim(), kinds::storageclass(), kinds::pod()] {
            let informer = informer::run(self.cx.store.clone(), kind.resource(), None, ctx.address().recipient());
            ctx.spawn(informer.into_actor(self));
        }
        ctx.run_interval(RESYNC, |act, ctx| act.pass(ctx));
    }
}

impl Handler<Informed> for Binder {
    type Result = ();

    fn handle(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        if msg.resource() == kinds::pod().resource() {
            // Only the end of a pod that uses claims can let a claim go.
            let ended = match &msg {
                Informed::Deleted { object, .. } => reclaim::uses_claims(object),
                Informed::Applied { object, .. } => {
                    reclaim::uses_claims(object) && matches!(phase(object), "Succeeded" | "Failed")
                }
                Informed::Synced { .. } => false,
            };
            if !ended {
                return;
            }
        }
        self.pass(ctx);
    }
}
