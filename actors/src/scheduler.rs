//! `Scheduler`: binds pods that name no node (`spec.nodeName`) to a node
//! that fits them, as kube-scheduler does with its default filters
//! ([`peapod_core::scheduling`]), as a supervised child of the node. It sees
//! nodes and pods through informers, so it binds to any node registered in
//! the store, this one or (on a shared store) another.
//!
//! - A pod that fits is bound (`spec.nodeName`, condition `PodScheduled=True`)
//!   to the feasible node with the least requested share of CPU and memory.
//! - A pod no node fits stays `Pending` with `PodScheduled=False`, reason
//!   `Unschedulable`, and a `FailedScheduling` Warning event worded as
//!   kube-scheduler words it; it is tried again when pods or nodes change,
//!   and every 30 s.
//! - A pod deleted before it was bound has nothing to stop: it is removed
//!   at once, as the API server does for unscheduled pods.
//!
//! - A pod whose claims do not exist, are being deleted or are not bound
//!   to a volume is not placed (kube-scheduler's VolumeBinding PreFilter),
//!   with that reason; it is tried again when claims change.
//!
//! Passes are level-triggered and coalesced, as the garbage collector's.

use crate::events::{EventKind, EventRecorder};
use crate::informer::{self, Informed};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::podaffinity::{self, Placed, PodFacts, World as PodWorld};
use peapod_core::resources::pod_requests;
use peapod_core::scheduling::{self, Usage};
use peapod_core::store::{Preconditions, Store, StoreResult};
use peapod_core::validation::storage::{class_of, SELECTED_NODE};
use peapod_core::{deletion, writes};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The scheduler's name, which pods choose with `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// How often unschedulable pods are tried again without any change.
const RETRY: Duration = Duration::from_secs(30);

/// The scheduler.
pub struct Scheduler {
    store: Arc<dyn Store>,
    node: TreeNode,
    events: EventRecorder,
    nodes: HashMap<String, Value>,
    /// Every pod, by uid.
    pods: HashMap<String, Value>,
    /// Every claim, by `namespace/name`.
    claims: HashMap<String, Value>,
    /// The StorageClasses that bind at first use, by name.
    delayed_classes: HashMap<String, Value>,
    /// Every PersistentVolume, by name (their node affinity).
    volumes: HashMap<String, Value>,
    /// Every Namespace, by name (their labels, for pod affinity's namespaceSelector).
    namespaces: HashMap<String, Value>,
    /// The last unschedulable message reported per pod uid (an event per new message).
    reported: HashMap<String, String>,
    running: bool,
    again: bool,
}

impl Scheduler {
    /// A scheduler over `store`, registered in the tree as `node`.
    pub fn new(store: Arc<dyn Store>, events: EventRecorder, node: TreeNode) -> Self {
        Self {
            store,
            node,
            events: events.with_component(SCHEDULER_NAME),
            nodes: HashMap::new(),
            pods: HashMap::new(),
            claims: HashMap::new(),
            delayed_classes: HashMap::new(),
            volumes: HashMap::new(),
            namespaces: HashMap::new(),
            reported: HashMap::new(),
            running: false,
            again: false,
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        let pending: Vec<Value> = self.pods.values().filter(|p| unbound(p)).cloned().collect();
        if pending.is_empty() {
            return;
        }
        self.running = true;
        let nodes: Vec<Value> = self.nodes.values().cloned().collect();
        let pods: Vec<Value> = self.pods.values().cloned().collect();
        let (store, events) = (self.store.clone(), self.events.clone());
        let reported = self.reported.clone();
        let claims = self.claims.clone();
        let delayed: HashSet<String> = self.delayed_classes.keys().cloned().collect();
        let volumes = self.volumes.clone();
        let namespace_labels = self
            .namespaces
            .iter()
            .map(|(name, ns)| {
                let labels = serde_json::from_value(ns["metadata"]["labels"].clone()).unwrap_or_default();
                (name.clone(), labels)
            })
            .collect();
        ctx.spawn(
            async move {
                let world = World {
                    nodes,
                    claims,
                    delayed,
                    volumes,
                    namespace_labels,
                };
                schedule(&*store, &events, world, pods, pending, reported).await
            }
            .into_actor(self)
            .map(|(written, reported), act, ctx| {
                for p in written {
                    newer(&mut act.pods, p);
                }
                act.reported = reported;
                act.running = false;
                if std::mem::take(&mut act.again) {
                    act.pass(ctx);
                }
            }),
        );
    }
}

/// Keeps `p` unless a newer version of it is known.
fn newer(pods: &mut HashMap<String, Value>, p: Value) {
    let uid = object::uid(&p).to_string();
    if pods
        .get(&uid)
        .is_none_or(|old| object::resource_version(old) < object::resource_version(&p))
    {
        pods.insert(uid, p);
    }
}

fn unbound(p: &Value) -> bool {
    p["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
        && p["spec"]["schedulerName"].as_str().is_none_or(|s| s == SCHEDULER_NAME)
}

fn spec_of(p: &Value) -> PodSpec {
    serde_json::from_value(p["spec"].clone()).unwrap_or_default()
}

/// Whether a bound pod still holds its node's resources.
/// The pods spread apart from each other: those of one controller (a
/// ReplicaSet, a StatefulSet, a Job), as the default spreading constraints
/// take the pods their owners select.
fn spread_group(p: &Value) -> Option<String> {
    crate::controllers::replicaset::controller_of(p).map(|r| format!("{}/{}", object::namespace(p), r.uid))
}

/// A pod's namespace, labels and pod (anti-)affinity terms.
fn pod_facts(p: &Value, spec: &PodSpec) -> PodFacts {
    let labels: Option<BTreeMap<String, String>> = serde_json::from_value(p["metadata"]["labels"].clone()).ok();
    PodFacts::of(object::namespace(p), labels.as_ref(), spec)
}

fn holds_node(p: &Value) -> bool {
    !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// The share of the node's CPU and memory requested, in thousandths (lower is better).
fn load(node: &Node, used: &Usage, pod: &PodSpec) -> i64 {
    let alloc = |name: &str| {
        node.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(name))
            .and_then(|q| peapod_core::quantity::Quantity::parse(&q.0).ok())
    };
    let cpu = alloc("cpu").map_or(1, |q| q.milli_value().max(1));
    let mem = alloc("memory").map_or(1, |q| q.value().max(1));
    let r = pod_requests(pod);
    let used = (
        used.cpu_millis.saturating_add(r.cpu_millis),
        used.memory_bytes.saturating_add(r.memory_bytes),
    );
    (used.0.saturating_mul(1000) / cpu).saturating_add(used.1.saturating_mul(1000) / mem)
}

/// What a pass schedules against.
struct World {
    nodes: Vec<Value>,
    /// Claims by `namespace/name`.
    claims: HashMap<String, Value>,
    /// The classes that bind at first use.
    delayed: HashSet<String>,
    /// PersistentVolumes by name.
    volumes: HashMap<String, Value>,
    /// Namespaces' labels by name.
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
}

/// One pass: every pending pod in creation order is bound or reported.
/// Returns the pods as written and the messages reported.
async fn schedule(
    store: &dyn Store,
    events: &EventRecorder,
    World {
        nodes,
        claims,
        delayed,
        volumes,
        namespace_labels,
    }: World,
    pods: Vec<Value>,
    mut pending: Vec<Value>,
    mut reported: HashMap<String, String>,
) -> (Vec<Value>, HashMap<String, String>) {
    let nodes: Vec<Node> = nodes
        .into_iter()
        .filter_map(|n| serde_json::from_value(n).ok())
        .collect();
    // What each node holds, growing as this pass binds.
    let mut on_node: HashMap<String, Usage> = HashMap::new();
    // How many pods of each controller each node runs (the default spreading).
    let mut peers: HashMap<(String, String), usize> = HashMap::new();
    // The placed pods as inter-pod affinity sees them.
    let mut placed: Vec<Placed> = Vec::new();
    for p in &pods {
        if let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            if holds_node(p) {
                let spec = spec_of(p);
                on_node.entry(n.to_string()).or_default().add(&spec);
                if let Some(owner) = spread_group(p) {
                    *peers.entry((owner, n.to_string())).or_default() += 1;
                }
                placed.push(Placed {
                    pod: pod_facts(p, &spec),
                    node: n.to_string(),
                });
            }
        }
    }
    // Only placed pods with anti-affinity terms act on pods that have none themselves.
    let any_repelling = |placed: &[Placed]| placed.iter().any(|p| !p.pod.anti_affinity.is_empty());
    pending.sort_by(|a, b| {
        let ts = |p: &Value| p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
        ts(a).cmp(&ts(b)).then_with(|| object::name(a).cmp(object::name(b)))
    });
    let mut written = Vec::new();
    let live: std::collections::HashSet<String> = pods.iter().map(|p| object::uid(p).to_string()).collect();
    reported.retain(|uid, _| live.contains(uid));
    for pod in pending {
        if object::deletion_timestamp(&pod).is_some() {
            if let Err(e) = remove_unbound(store, &pod).await {
                tracing::warn!(
                    "removing unscheduled pod {}/{}: {e}",
                    object::namespace(&pod),
                    object::name(&pod)
                );
            }
            continue;
        }
        if !holds_node(&pod) {
            continue;
        }
        let spec = spec_of(&pod);
        let facts = pod_facts(&pod, &spec);
        let affinity =
            (facts.has_terms() || any_repelling(&placed)).then(|| PodWorld::new(&placed, &nodes, &namespace_labels));
        let empty = Usage::default();
        let mut verdicts = Vec::new();
        let mut best: Option<(i64, usize, i64, &str)> = None;
        let group = spread_group(&pod);
        let ns = object::namespace(&pod);
        let lookup = |c: &str| claims.get(&format!("{ns}/{c}"));
        let is_delayed = |c: &Value| delayed.contains(class_of(c));
        let held = scheduling::claims_unready(&spec, lookup, is_delayed);
        // The volumes of the pod's bound claims: their node affinity counts.
        let bound: Vec<&Value> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .filter_map(|c| lookup(&c.claim_name))
            .filter_map(|c| c["spec"]["volumeName"].as_str())
            .filter_map(|v| volumes.get(v))
            .collect();
        for node in nodes.iter().filter(|_| held.is_none()) {
            let name = node.metadata.name.as_deref().unwrap_or("");
            let used = on_node.get(name).unwrap_or(&empty);
            let mut unfit = scheduling::filter(&spec, node, used);
            if unfit.is_empty() && !scheduling::volumes_fit(node, &bound) {
                unfit.push(scheduling::Unfit::VolumeNodeAffinity);
            }
            if let (true, Some(world)) = (unfit.is_empty(), &affinity) {
                unfit.extend(podaffinity::filter(&facts, name, world));
            }
            if unfit.is_empty() {
                // The pod's own preferred pod (anti-)affinity first, then
                // spread (kube-scheduler's default PodTopologySpread by
                // hostname), then the least allocated.
                let liking = affinity.as_ref().map_or(0, |w| podaffinity::score(&facts, name, w));
                let siblings = group
                    .as_ref()
                    .and_then(|g| peers.get(&(g.clone(), name.to_string())))
                    .copied()
                    .unwrap_or(0);
                let score = (liking.saturating_neg(), siblings, load(node, used, &spec), name);
                if best.is_none_or(|b| score < b) {
                    best = Some(score);
                }
            } else {
                verdicts.push(unfit);
            }
        }
        let result = match best {
            Some((_, _, _, name)) if !scheduling::claims_waiting(&spec, lookup, is_delayed).is_empty() => {
                // Claims that bind at first use learn the node, and the pod
                // is bound once they are (the next pass, after the binder).
                for c in scheduling::claims_waiting(&spec, lookup, is_delayed) {
                    if let Err(e) = select_node(store, c, name).await {
                        tracing::warn!("naming node {name} on claim {ns}/{}: {e}", object::name(c));
                    }
                }
                Ok(None)
            }
            Some((_, _, _, name)) => {
                let name = name.to_string();
                let r = bind(store, &pod, &name).await;
                if let Ok(Some(_)) = &r {
                    if let Some(g) = group {
                        *peers.entry((g, name.clone())).or_default() += 1;
                    }
                    placed.push(Placed {
                        pod: facts,
                        node: name.clone(),
                    });
                    on_node.entry(name).or_default().add(&spec);
                    reported.remove(object::uid(&pod));
                }
                r
            }
            None => {
                let message = match &held {
                    Some(reason) => scheduling::prefilter_message(nodes.len(), reason),
                    None => scheduling::failure_message(&verdicts),
                };
                let uid = object::uid(&pod).to_string();
                if reported.get(&uid) != Some(&message) {
                    if let Ok(typed) = serde_json::from_value::<Pod>(pod.clone()) {
                        events.pod_event(&typed, None, EventKind::Warning, "FailedScheduling", message.clone());
                    }
                    reported.insert(uid, message.clone());
                }
                unschedulable(store, &pod, &message).await
            }
        };
        match result {
            Ok(Some(p)) => written.push(p),
            Ok(None) => {}
            Err(e) => tracing::warn!("scheduling pod {}/{}: {e}", object::namespace(&pod), object::name(&pod)),
        }
    }
    (written, reported)
}

/// Sets or replaces the `PodScheduled` condition; false if it was already so.
fn set_scheduled(pod: &mut Value, status: &str, reason: Option<&str>, message: Option<&str>) -> bool {
    let mut conditions: Vec<Value> = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let old = conditions.iter().position(|c| c["type"] == "PodScheduled");
    if let Some(i) = old {
        let c = &conditions[i];
        if c["status"] == status && c["reason"].as_str() == reason && c["message"].as_str() == message {
            return false;
        }
    }
    let mut c = json!({"type": "PodScheduled", "status": status, "lastProbeTime": null,
        "lastTransitionTime": object::now_rfc3339()});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    match old {
        Some(i) => {
            if conditions[i]["status"] == status {
                c["lastTransitionTime"] = conditions[i]["lastTransitionTime"].clone();
            }
            conditions[i] = c;
        }
        None => conditions.push(c),
    }
    pod["status"]["conditions"] = Value::Array(conditions);
    true
}

/// Binds the pod to `node`, if it is still unbound.
async fn bind(store: &dyn Store, pod: &Value, node: &str) -> StoreResult<Option<Value>> {
    writes::modify(store, kinds::pod(), pod, |p| {
        if !unbound(p) || object::deletion_timestamp(p).is_some() {
            return false;
        }
        p["spec"]["nodeName"] = json!(node);
        set_scheduled(p, "True", None, None);
        true
    })
    .await
}

/// Names the node chosen for a pod on a claim that waits for it.
async fn select_node(store: &dyn Store, claim: &Value, node: &str) -> StoreResult<Option<Value>> {
    writes::modify(store, kinds::claim(), claim, |c| {
        if c["metadata"]["annotations"][SELECTED_NODE] == node {
            return false;
        }
        c["metadata"]["annotations"][SELECTED_NODE] = json!(node);
        true
    })
    .await
}

/// Records why the pod waits.
async fn unschedulable(store: &dyn Store, pod: &Value, message: &str) -> StoreResult<Option<Value>> {
    writes::modify(store, kinds::pod(), pod, |p| {
        unbound(p) && set_scheduled(p, "False", Some("Unschedulable"), Some(message))
    })
    .await
}

/// A pod deleted before it was bound: nothing runs it, so it goes now
/// (or when its finalizers are removed).
async fn remove_unbound(store: &dyn Store, pod: &Value) -> StoreResult<()> {
    let pre = Preconditions {
        uid: Some(object::uid(pod).to_string()),
        resource_version: None,
    };
    deletion::remove(
        store,
        &kinds::pod().resource(),
        object::namespace(pod),
        object::name(pod),
        pre,
    )
    .await
    .map(drop)
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Scheduling");
        for kind in [
            kinds::pod(),
            kinds::node(),
            kinds::claim(),
            kinds::storageclass(),
            kinds::volume(),
            kinds::namespace(),
        ] {
            let informer = informer::run(self.store.clone(), kind.resource(), None, ctx.address().recipient());
            ctx.spawn(informer.into_actor(self));
        }
        ctx.run_interval(RETRY, |act, ctx| act.pass(ctx));
    }
}

impl Handler<Informed> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        let by_name = if msg.resource() == kinds::volume().resource() {
            Some(&mut self.volumes)
        } else if msg.resource() == kinds::namespace().resource() {
            Some(&mut self.namespaces)
        } else {
            None
        };
        if let Some(map) = by_name {
            match msg {
                Informed::Synced { objects, .. } => {
                    *map = objects.into_iter().map(|v| (object::name(&v).to_string(), v)).collect();
                }
                Informed::Applied { object, .. } => {
                    map.insert(object::name(&object).to_string(), object);
                }
                Informed::Deleted { object, .. } => {
                    map.remove(object::name(&object));
                }
            }
            return self.pass(ctx);
        }
        if msg.resource() == kinds::storageclass().resource() {
            let delayed = |c: &Value| c["volumeBindingMode"] == "WaitForFirstConsumer";
            match msg {
                Informed::Synced { objects, .. } => {
                    self.delayed_classes = objects
                        .into_iter()
                        .filter(delayed)
                        .map(|c| (object::name(&c).to_string(), c))
                        .collect();
                }
                Informed::Applied { object, .. } if delayed(&object) => {
                    self.delayed_classes.insert(object::name(&object).to_string(), object);
                }
                Informed::Applied { object, .. } | Informed::Deleted { object, .. } => {
                    self.delayed_classes.remove(object::name(&object));
                }
            }
            return self.pass(ctx);
        }
        let pods = msg.resource() == kinds::pod().resource();
        let claims = msg.resource() == kinds::claim().resource();
        let map = if pods {
            &mut self.pods
        } else if claims {
            &mut self.claims
        } else {
            &mut self.nodes
        };
        let key = |o: &Value| {
            if pods {
                object::uid(o).to_string()
            } else if claims {
                format!("{}/{}", object::namespace(o), object::name(o))
            } else {
                object::name(o).to_string()
            }
        };
        match msg {
            Informed::Synced { objects, .. } => {
                map.clear();
                for o in objects {
                    map.insert(key(&o), o);
                }
            }
            Informed::Applied { object, .. } => {
                if pods {
                    newer(map, object);
                } else {
                    map.insert(key(&object), object);
                }
            }
            Informed::Deleted { object, .. } => {
                // A pod leaving frees room: pending pods may fit now.
                map.remove(&key(&object));
                if pods {
                    self.reported.remove(object::uid(&object));
                }
            }
        }
        self.pass(ctx);
    }
}
