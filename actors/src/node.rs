//! `NodeActor`: the node supervisor, root of the actor tree (see
//! [`crate::supervisor`]). It watches the store for pods and keeps exactly
//! one supervised `PodActor` per pod (by uid), and supervises the
//! `NamespaceActor`. It sees pods through an [`crate::informer`]: a full
//! list reconciles the actor set, watch events adjust it, and a lost watch
//! is healed by relisting (level-triggered).
//!
//! A crashed PodActor is rebuilt from the latest pod object and the runtime.
//! One that crashes more often than the restart intensity allows is given
//! up: the pod gets a `FailedSupervision` Warning event, its containers are
//! stopped through normal termination (preStop, stop signal, grace period,
//! SIGKILL), and it is marked Failed with reason `SupervisionFailed` and
//! condition `Supervised=False`; when it is deleted, the node removes it.
//! A NamespaceActor that gives up takes the NodeActor down with it
//! (escalation); [`run`] restarts the NodeActor, or ends the daemon when
//! that happens too often.
//!
//! PodActor subtrees are spread over a few arbiters (threads), by pod uid:
//! nothing in an actor blocks, so one thread could serve them all, but
//! status building and JSON work then use every core, and a pod's own
//! actors stay on one thread so their messages never cross threads.

use crate::binder::Binder;
use crate::controllers::Controller;
use crate::events::{EventKind, EventRecorder};
use crate::gc::GarbageCollector;
use crate::image_gc::ImageGc;
use crate::informer::{self, Informed};
use crate::namespaces::NamespaceActor;
use crate::runtime::projection;
use crate::scheduler::Scheduler;

/// The keys of the node's permanent children (controllers use their own names).
const NAMESPACES_KEY: &str = "namespaces";
const GC_KEY: &str = "garbage-collector";
const SCHEDULER_KEY: &str = "scheduler";
const BINDER_KEY: &str = "binder";
const IMAGE_GC_KEY: &str = "image-gc";
const PROXY_KEY: &str = "service-proxy";
const DNS_KEY: &str = "cluster-dns";
const ROUTES_KEY: &str = "routes";
use crate::pod::{pod_desc, PodActor, PodChanged, Rejection};
use crate::runtime::Runtime;
use crate::supervisor::{
    spawn_linked, ChildExited, ChildSpec, Children, Exit, Intensity, Restart, RestartWindow, Tree, TreeNode, Verdict,
};
use actix::prelude::*;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::resources::Amounts;
use peapod_core::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// The condition a pod given up by its supervisor carries.
pub const SUPERVISED_CONDITION: &str = "Supervised";
/// Its phase reason.
pub const SUPERVISION_FAILED: &str = "SupervisionFailed";

/// What the node supervisor is built from (again, after a crash).
#[derive(Clone)]
pub struct NodeSpec {
    pub rt: Arc<Runtime>,
    pub store: Arc<dyn Store>,
    pub node_name: String,
    pub tree: Tree,
    /// Restart intensity of every supervised actor.
    pub intensity: Intensity,
    /// Where PodActor subtrees run.
    pub arbiters: Arc<Vec<ArbiterHandle>>,
}

/// The node supervisor.
pub struct NodeActor {
    spec: NodeSpec,
    events: EventRecorder,
    node: TreeNode,
    pods: Children<String, PodActor>,
    /// The latest version of every pod seen, to rebuild a crashed PodActor from.
    latest: HashMap<String, Pod>,
    /// Requests of the pods admitted and not yet finished, by uid.
    admitted: HashMap<String, Amounts>,
    namespaces: Children<&'static str, NamespaceActor>,
    gc: Children<&'static str, GarbageCollector>,
    scheduler: Children<&'static str, Scheduler>,
    binder: Children<&'static str, Binder>,
    image_gc: Children<&'static str, ImageGc>,
    proxy: Children<&'static str, crate::proxy::ServiceProxy>,
    dns: Children<&'static str, crate::dns::ClusterDns>,
    routes: Children<&'static str, crate::routes::RouteSync>,
    controllers: Children<&'static str, Controller>,
    /// Pods given up on, whose removal (once deleted) the node itself does.
    given_up: HashSet<String>,
    removing: HashSet<String>,
    /// Admission refusals, so a rebuilt PodActor refuses too.
    rejected: HashMap<String, Rejection>,
    /// Pods whose actor removed them: a late watch event must not start another.
    removed: HashSet<String>,
    /// Staged volumes were checked against the pods of the first full list.
    swept_staging: bool,
    /// The leader Leases this node holds: it runs their children.
    leading: HashSet<&'static str>,
}

fn given_up(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == SUPERVISED_CONDITION && c.status == "False")
}

impl NodeActor {
    /// The node supervisor, registered in the tree as `node`.
    pub fn new(spec: NodeSpec, node: TreeNode) -> Self {
        let events = EventRecorder::new(spec.store.clone(), spec.node_name.clone());
        Self {
            spec,
            events,
            node,
            pods: Children::default(),
            latest: HashMap::new(),
            admitted: HashMap::new(),
            namespaces: Children::default(),
            gc: Children::default(),
            image_gc: Children::default(),
            proxy: Children::default(),
            dns: Children::default(),
            routes: Children::default(),
            scheduler: Children::default(),
            binder: Children::default(),
            controllers: Children::default(),
            given_up: HashSet::new(),
            removing: HashSet::new(),
            rejected: HashMap::new(),
            removed: HashSet::new(),
            swept_staging: false,
            leading: HashSet::new(),
        }
    }

    /// The permanent children the holder of `lease` runs: one scheduler, and
    /// one set of controllers, in the whole cluster.
    fn led_by(&self, lease: &str) -> Vec<&'static str> {
        match lease {
            crate::leader::SCHEDULER_LEASE => vec![SCHEDULER_KEY],
            _ => [NAMESPACES_KEY, GC_KEY, BINDER_KEY]
                .into_iter()
                .chain(crate::controllers::all(&self.spec.rt.config).iter().map(|c| c.name()))
                .collect(),
        }
    }

    /// Whether the child `key` belongs to a lease this node does not hold now.
    fn led_elsewhere(&self, key: &str) -> bool {
        [crate::leader::SCHEDULER_LEASE, crate::leader::CONTROLLERS_LEASE]
            .into_iter()
            .any(|l| !self.leading.contains(l) && self.led_by(l).contains(&key))
    }

    fn arbiter_for(&self, uid: &str) -> Option<&ArbiterHandle> {
        if self.spec.arbiters.is_empty() {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        uid.hash(&mut h);
        self.spec.arbiters.get(h.finish() as usize % self.spec.arbiters.len())
    }

    fn start_pod_actor(&mut self, pod: Pod, rejection: Option<Rejection>, ctx: &mut Context<Self>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let restarts = self.pods.restarts(&uid);
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        let node = self.node.child("PodActor", name, "transient", restarts);
        let (rt, store, events, intensity) = (
            self.spec.rt.clone(),
            self.spec.store.clone(),
            self.events.clone(),
            self.spec.intensity,
        );
        let spec = ChildSpec {
            restart: Restart::Transient,
            intensity,
        };
        let arbiter = self.arbiter_for(&uid).cloned();
        self.pods.start(ctx.address(), uid, spec, arbiter.as_ref(), move |_| {
            PodActor::new(rt, store, events, node, intensity, pod, rejection)
        });
    }

    /// Starts (or restarts) the permanent child `key`: the NamespaceActor,
    /// the garbage collector, the scheduler or a controller.
    fn start_permanent(&mut self, key: &'static str, ctx: &mut Context<Self>) {
        let spec = ChildSpec {
            restart: Restart::Permanent,
            intensity: self.spec.intensity,
        };
        let (store, me) = (self.spec.store.clone(), ctx.address());
        match key {
            NAMESPACES_KEY => {
                let node = self
                    .node
                    .child("NamespaceActor", key, "permanent", self.namespaces.restarts(&key));
                self.namespaces
                    .start(me, key, spec, None, move |_| NamespaceActor::new(store, node));
            }
            GC_KEY => {
                let node = self
                    .node
                    .child("GarbageCollector", key, "permanent", self.gc.restarts(&key));
                self.gc
                    .start(me, key, spec, None, move |_| GarbageCollector::new(store, node));
            }
            SCHEDULER_KEY => {
                let node = self
                    .node
                    .child("Scheduler", key, "permanent", self.scheduler.restarts(&key));
                let events = self.events.clone();
                self.scheduler
                    .start(me, key, spec, None, move |_| Scheduler::new(store, events, node));
            }
            BINDER_KEY => {
                let node = self.node.child("Binder", key, "permanent", self.binder.restarts(&key));
                let cx = crate::binder::BinderContext {
                    store,
                    events: self.events.clone(),
                    volumes: self.spec.rt.volumes.clone(),
                    node_name: self.spec.node_name.clone(),
                };
                self.binder
                    .start(me, key, spec, None, move |_| Binder::new(cx.clone(), node));
            }
            IMAGE_GC_KEY => {
                let node = self
                    .node
                    .child("ImageGc", key, "permanent", self.image_gc.restarts(&key));
                let (rt, events) = (self.spec.rt.clone(), self.events.clone());
                self.image_gc.start(me, key, spec, None, move |_| {
                    ImageGc::new(rt.clone(), events.clone(), node)
                });
            }
            PROXY_KEY => {
                let node = self
                    .node
                    .child("ServiceProxy", key, "permanent", self.proxy.restarts(&key));
                let cfg = &self.spec.rt.config;
                let config = crate::proxy::ProxyConfig {
                    table: cfg.service_proxy_table.clone(),
                    cluster_cidr: cfg.network.pod_cidr.clone(),
                    node_name: cfg.node_name.clone(),
                };
                self.proxy.start(me, key, spec, None, move |_| {
                    crate::proxy::ServiceProxy::new(store, config.clone(), node)
                });
            }
            DNS_KEY => {
                let Some(config) = self.spec.rt.config.dns_server.clone() else {
                    return;
                };
                let node = self.node.child("ClusterDns", key, "permanent", self.dns.restarts(&key));
                self.dns.start(me, key, spec, None, move |_| {
                    crate::dns::ClusterDns::new(store, config.clone(), node)
                });
            }
            ROUTES_KEY => {
                let node = self
                    .node
                    .child("RouteSync", key, "permanent", self.routes.restarts(&key));
                let (name, ip) = (self.spec.node_name.clone(), self.spec.rt.config.node_ip.clone());
                self.routes.start(me, key, spec, None, move |_| {
                    crate::routes::RouteSync::new(store, name, ip, node)
                });
            }
            _ => {
                let Some(reconciler) = crate::controllers::all(&self.spec.rt.config)
                    .into_iter()
                    .find(|r| r.name() == key)
                else {
                    return;
                };
                let node = self
                    .node
                    .child("Controller", key, "permanent", self.controllers.restarts(&key));
                let events = self.events.clone();
                self.controllers.start(me, key, spec, None, move |_| {
                    Controller::new(reconciler, store, events, node)
                });
            }
        }
    }

    /// Whether the pod is bound to this node (the scheduler binds the others, or another node runs them).
    fn ours(&self, pod: &Pod) -> bool {
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.spec.node_name.as_str())
    }

    /// Tells the pods of the object's namespace that it changed.
    fn source_changed(&self, source: projection::Source, object: &serde_json::Value) {
        let (ns, name) = (object::namespace(object), object::name(object));
        for (uid, addr) in self.pods.addrs() {
            if self
                .latest
                .get(uid)
                .is_some_and(|p| p.metadata.namespace.as_deref() == Some(ns))
            {
                addr.do_send(crate::pod::SourceChanged {
                    source,
                    name: name.to_string(),
                });
            }
        }
    }

    fn upsert(&mut self, pod: Pod, ctx: &mut Context<Self>) {
        if !self.ours(&pod) {
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            self.admitted.remove(&uid);
        }
        self.latest.insert(uid.clone(), pod.clone());
        if self.given_up.contains(&uid) || given_up(&pod) {
            self.given_up.insert(uid.clone());
            if pod.metadata.deletion_timestamp.is_some() {
                self.remove_given_up(pod, ctx);
            }
            return;
        }
        match self.pods.get(&uid) {
            Some(addr) => addr.do_send(PodChanged(pod)),
            None if self.removed.contains(&uid) => {}
            None => {
                let rejection = self.admit(&pod);
                if let Some(r) = &rejection {
                    self.rejected.insert(uid, r.clone());
                }
                self.start_pod_actor(pod, rejection, ctx);
            }
        }
    }

    /// kubelet's resource admission for a pod seen for the first time: its
    /// requests must fit in what the admitted pods leave of allocatable.
    /// Pods that already started (before a daemon restart) are admitted as they are.
    fn admit(&mut self, pod: &Pod) -> Option<Rejection> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        if matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
            return None;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let wants = peapod_core::resources::pod_requests(&spec);
        let started = status.and_then(|s| s.start_time.as_ref()).is_some();
        if !started && pod.metadata.deletion_timestamp.is_none() {
            let alloc = self.spec.rt.config.allocatable();
            let used = self.admitted.values().fold(Amounts::default(), |a, b| Amounts {
                cpu_millis: a.cpu_millis.saturating_add(b.cpu_millis),
                memory_bytes: a.memory_bytes.saturating_add(b.memory_bytes),
            });
            for (name, want, used, cap) in [
                ("cpu", wants.cpu_millis, used.cpu_millis, alloc.cpu_millis),
                ("memory", wants.memory_bytes, used.memory_bytes, alloc.memory_bytes),
            ] {
                if want > 0 && want > cap.saturating_sub(used) {
                    return Some(Rejection {
                        reason: format!("OutOf{name}"),
                        message: format!(
                            "Pod was rejected: Node didn't have enough resource: {name}, requested: {want}, used: {used}, capacity: {cap}"
                        ),
                    });
                }
            }
        }
        self.admitted.insert(uid, wants);
        None
    }

    /// The PodActor of `uid` crashed more often than allowed: its containers
    /// are stopped the normal way and the pod is marked, so nothing of it
    /// runs unsupervised and nobody is left guessing.
    fn give_up(&mut self, uid: String, crashes: u32, last: String, ctx: &mut Context<Self>) {
        self.given_up.insert(uid.clone());
        self.admitted.remove(&uid);
        let Some(pod) = self.latest.get(&uid).cloned() else {
            return;
        };
        let message = format!(
            "PodActor crashed {crashes} times within {:?} (last: {last}); its containers are stopped and the pod is no longer run on this node",
            self.spec.intensity.period
        );
        tracing::error!("pod {}: {message}", pod_desc(&pod));
        self.events
            .pod_event(&pod, None, EventKind::Warning, "FailedSupervision", message.clone());
        let (rt, store, events) = (self.spec.rt.clone(), self.spec.store.clone(), self.events.clone());
        let grace = crate::clock::secs(
            pod.metadata
                .deletion_grace_period_seconds
                .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30),
        );
        let deadline = match pod.metadata.deletion_timestamp {
            Some(_) => crate::pod::terminate::deadline(&pod),
            None => crate::clock::after(grace),
        };
        ctx.spawn(
            async move {
                // Marked first, durably: a node restarted meanwhile leaves the pod be.
                mark_given_up(&*store, &pod, &message).await;
                crate::pod::terminate::stop_all(&rt, &events, &pod, deadline).await;
                if let Err(e) = rt.teardown(pod.metadata.uid.as_deref().unwrap_or("")).await {
                    tracing::warn!("pod {}: {e}", pod_desc(&pod));
                }
            }
            .into_actor(self)
            .map(move |_, act, ctx| {
                if let Some(p) = act.latest.get(&uid).cloned() {
                    if p.metadata.deletion_timestamp.is_some() {
                        act.remove_given_up(p, ctx);
                    }
                }
            }),
        );
    }

    /// Removes a given-up pod that was deleted (its containers are already stopped).
    fn remove_given_up(&mut self, pod: Pod, ctx: &mut Context<Self>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if !self.removing.insert(uid.clone()) {
            return;
        }
        let (rt, store, events) = (self.spec.rt.clone(), self.spec.store.clone(), self.events.clone());
        ctx.spawn(
            async move {
                let deadline = crate::pod::terminate::deadline(&pod);
                crate::pod::terminate::stop_all(&rt, &events, &pod, deadline).await;
                // Held by finalizers, it is tried again at its next update.
                crate::pod::terminate::remove(&rt, &*store, &events, &pod)
                    .await
                    .map(drop)
            }
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.removing.remove(&uid);
                if let Err(e) = res {
                    tracing::warn!("removing given-up pod {uid}: {e}; trying again");
                    ctx.run_later(Duration::from_secs(5), move |act, ctx| {
                        if let Some(p) = act.latest.get(&uid).cloned() {
                            act.remove_given_up(p, ctx);
                        }
                    });
                }
            }),
        );
    }

    /// A full list of pods (first, or after a relist): reconciles the actor set.
    fn synced(&mut self, items: Vec<serde_json::Value>, ctx: &mut Context<Self>) {
        let mut live = HashSet::new();
        for v in items {
            match serde_json::from_value::<Pod>(v) {
                Ok(pod) if !self.ours(&pod) => {}
                Ok(pod) => {
                    live.insert(pod.metadata.uid.clone().unwrap_or_default());
                    self.upsert(pod, ctx);
                }
                Err(e) => tracing::error!("undecodable pod in store: {e}"),
            }
        }
        self.admitted.retain(|uid, _| live.contains(uid));
        self.latest.retain(|uid, _| live.contains(uid));
        self.given_up.retain(|uid| live.contains(uid));
        self.rejected.retain(|uid, _| live.contains(uid));
        self.removed.retain(|uid| live.contains(uid));
        // The tree is up once the node has listed its pods and started their actors.
        peapod_metrics::health::set(peapod_metrics::health::Component::Tree, true);
        if !std::mem::replace(&mut self.swept_staging, true) {
            // Volumes staged for pods that went while the daemon was down.
            let rt = self.spec.rt.clone();
            ctx.spawn(
                async move {
                    for e in rt.volumes.sweep_staged(&live).await {
                        tracing::warn!("unstaging a volume no pod uses: {e}");
                    }
                }
                .into_actor(self),
            );
        }
    }
}

/// Marks a given-up pod: phase Failed, reason `SupervisionFailed`, and the
/// `Supervised=False` condition (which also tells a restarted node to leave it be).
async fn mark_given_up(store: &dyn Store, pod: &Pod, message: &str) {
    let resource = kinds::pod().resource();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    for _ in 0..10 {
        let Ok(cur) = store.get(&resource, &ns, &name).await else {
            return;
        };
        if object::uid(&cur) != pod.metadata.uid.as_deref().unwrap_or("") {
            return;
        }
        let mut status: PodStatus = serde_json::from_value(cur["status"].clone()).unwrap_or_default();
        status.phase = Some("Failed".into());
        status.reason = Some(SUPERVISION_FAILED.into());
        status.message = Some(message.to_string());
        let now = Some(crate::runtime::protocol::now_time());
        let mut conditions: Vec<PodCondition> = status
            .conditions
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != SUPERVISED_CONDITION)
            .map(|mut c| {
                if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status == "True" {
                    c.status = "False".into();
                    c.reason = Some("PodFailed".into());
                    c.last_transition_time = now.clone();
                }
                c
            })
            .collect();
        conditions.push(PodCondition {
            type_: SUPERVISED_CONDITION.into(),
            status: "False".into(),
            reason: Some("RestartIntensityExceeded".into()),
            message: Some(message.to_string()),
            last_transition_time: now,
            ..Default::default()
        });
        status.conditions = Some(conditions);
        let mut next = cur.clone();
        next["status"] = object::to_value(&status);
        match store.update(&resource, next).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => return,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!("marking pod {ns}/{name} given up: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Running");
        self.start_permanent(IMAGE_GC_KEY, ctx);
        if !self.spec.rt.config.service_proxy_table.is_empty() {
            self.start_permanent(PROXY_KEY, ctx);
        }
        if self.spec.rt.config.dns_server.is_some() {
            self.start_permanent(DNS_KEY, ctx);
        }
        if self.spec.rt.config.network.cluster_cidr.is_some() {
            self.start_permanent(ROUTES_KEY, ctx);
        }
        // The cluster's scheduler and controllers: here, or where the election says.
        for lease in [crate::leader::SCHEDULER_LEASE, crate::leader::CONTROLLERS_LEASE] {
            match self.spec.rt.config.leader_election {
                None => ctx.notify(crate::leader::Leadership { lease, leading: true }),
                Some(timing) => {
                    let election = crate::leader::run(
                        self.spec.store.clone(),
                        lease,
                        self.spec.node_name.clone(),
                        timing,
                        ctx.address().recipient(),
                    );
                    ctx.spawn(election.into_actor(self));
                }
            }
        }
        // The node's own Node object and heartbeat Lease.
        let (store, config) = (self.spec.store.clone(), self.spec.rt.config.clone());
        let config_heartbeat = config.heartbeat.max(Duration::from_millis(100));
        ctx.spawn(
            async move {
                let Ok(facts) = tokio::task::spawn_blocking(move || crate::registration::gather(&config)).await else {
                    return;
                };
                let mut every = tokio::time::interval(config_heartbeat);
                loop {
                    every.tick().await;
                    if let Err(e) = crate::registration::post(&*store, &facts).await {
                        tracing::warn!("posting the node's status: {e}");
                    }
                }
            }
            .into_actor(self),
        );
        let pods = informer::run(
            self.spec.store.clone(),
            kinds::pod().resource(),
            None,
            ctx.address().recipient(),
        );
        ctx.spawn(pods.into_actor(self));
        // Pods that read ConfigMaps and Secrets hear of their changes at once.
        for source in [projection::Source::ConfigMap, projection::Source::Secret] {
            let watch = informer::run(
                self.spec.store.clone(),
                source.resource().to_string(),
                None,
                ctx.address().recipient(),
            );
            ctx.spawn(watch.into_actor(self));
        }
        let ttl = self.spec.rt.config.event_ttl;
        let every = (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        ctx.run_interval(every, move |act, ctx| {
            let store = act.spec.store.clone();
            ctx.spawn(async move { expire_events(&*store, ttl).await }.into_actor(act));
        });
    }
}

impl Handler<crate::leader::Leadership> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: crate::leader::Leadership, ctx: &mut Context<Self>) {
        let keys = self.led_by(msg.lease);
        if msg.leading {
            if self.leading.insert(msg.lease) {
                for key in keys {
                    self.start_permanent(key, ctx);
                }
            }
            return;
        }
        self.leading.remove(msg.lease);
        // Another node leads now: these stop here, at once.
        for key in keys {
            // Their tree entries leave with them.
            let _ = match key {
                NAMESPACES_KEY => self.namespaces.remove(&key),
                GC_KEY => self.gc.remove(&key),
                SCHEDULER_KEY => self.scheduler.remove(&key),
                BINDER_KEY => self.binder.remove(&key),
                _ => self.controllers.remove(&key),
            };
        }
    }
}

impl Handler<Informed> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: Informed, ctx: &mut Context<Self>) {
        let source = match msg.resource() {
            "configmaps" => Some(projection::Source::ConfigMap),
            "secrets" => Some(projection::Source::Secret),
            _ => None,
        };
        if let Some(source) = source {
            // A relist (Synced) says nothing changed in particular: the pods' own sync covers it.
            if let Informed::Applied { object, .. } | Informed::Deleted { object, .. } = &msg {
                self.source_changed(source, object);
            }
            return;
        }
        match msg {
            Informed::Synced { objects, .. } => self.synced(objects, ctx),
            Informed::Applied { object, .. } => {
                crate::faults::point("node.watch", object::name(&object));
                match serde_json::from_value::<Pod>(object) {
                    Ok(pod) => self.upsert(pod, ctx),
                    Err(e) => tracing::error!("undecodable pod in watch: {e}"),
                }
            }
            Informed::Deleted { object, .. } => {
                crate::faults::point("node.watch", object::name(&object));
                // The pod actor removed it: nothing more to run.
                let uid = object::uid(&object).to_string();
                self.admitted.remove(&uid);
                self.latest.remove(&uid);
                self.given_up.remove(&uid);
                self.rejected.remove(&uid);
                self.removed.remove(&uid);
            }
        }
    }
}

fn exit_text(e: &Exit) -> String {
    match e {
        Exit::Normal => "ended".into(),
        Exit::Crashed(t) => t.clone(),
    }
}

impl Handler<ChildExited<String>> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited<String>, ctx: &mut Context<Self>) {
        match self.pods.exited(&msg) {
            Verdict::Stale => {}
            Verdict::Done => {
                // It removed its pod; until the store's Deleted event, events about it change nothing.
                if self.latest.contains_key(&msg.key) {
                    self.removed.insert(msg.key.clone());
                }
            }
            Verdict::Restart { restarts } => {
                // The pod's worker starts again for the same uid.
                peapod_metrics::metrics().restarted_pods.with_label_values(&[""]).inc();
                let Some(cached) = self.latest.get(&msg.key).cloned() else {
                    self.pods.remove(&msg.key);
                    return;
                };
                tracing::warn!(
                    "pod {}: PodActor crashed ({}); rebuilding it from the store and the runtime (restart {restarts})",
                    pod_desc(&cached),
                    exit_text(&msg.exit)
                );
                // Rebuilt from the store's current object, not from what this actor last saw.
                let store = self.spec.store.clone();
                let uid = msg.key.clone();
                ctx.spawn(
                    async move {
                        let ns = cached.metadata.namespace.clone().unwrap_or_default();
                        let name = cached.metadata.name.clone().unwrap_or_default();
                        match store.get(&kinds::pod().resource(), &ns, &name).await {
                            Ok(v) => serde_json::from_value::<Pod>(v)
                                .ok()
                                .filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str())),
                            Err(StoreError::NotFound { .. }) => None,
                            Err(_) => Some(cached),
                        }
                    }
                    .into_actor(self)
                    .map(move |pod, act, ctx| match pod {
                        Some(pod) => {
                            let uid = pod.metadata.uid.clone().unwrap_or_default();
                            let rejection = act.rejected.get(&uid).cloned();
                            act.latest.insert(uid, pod.clone());
                            act.start_pod_actor(pod, rejection, ctx);
                        }
                        // Gone meanwhile: nothing to rebuild.
                        None => {
                            act.pods.remove(&msg.key);
                        }
                    }),
                );
            }
            Verdict::GiveUp { crashes } => {
                let last = exit_text(&msg.exit);
                self.give_up(msg.key, crashes, last, ctx);
            }
        }
    }
}

impl Handler<ChildExited<&'static str>> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited<&'static str>, ctx: &mut Context<Self>) {
        let (verdict, actor) = match msg.key {
            NAMESPACES_KEY => (self.namespaces.exited(&msg), "NamespaceActor"),
            GC_KEY => (self.gc.exited(&msg), "GarbageCollector"),
            SCHEDULER_KEY => (self.scheduler.exited(&msg), "Scheduler"),
            BINDER_KEY => (self.binder.exited(&msg), "Binder"),
            IMAGE_GC_KEY => (self.image_gc.exited(&msg), "ImageGc"),
            PROXY_KEY => (self.proxy.exited(&msg), "ServiceProxy"),
            DNS_KEY => (self.dns.exited(&msg), "ClusterDns"),
            ROUTES_KEY => (self.routes.exited(&msg), "RouteSync"),
            key => (self.controllers.exited(&msg), key),
        };
        match verdict {
            Verdict::Stale | Verdict::Done => {}
            Verdict::Restart { .. } if self.led_elsewhere(msg.key) => {}
            Verdict::Restart { restarts } => {
                tracing::warn!(
                    "{actor} ended ({}); restarting it (restart {restarts})",
                    exit_text(&msg.exit)
                );
                self.start_permanent(msg.key, ctx);
            }
            Verdict::GiveUp { crashes } => crate::supervisor::escalate(format!(
                "{actor} crashed {crashes} times within {:?} (last: {})",
                self.spec.intensity.period,
                exit_text(&msg.exit)
            )),
        }
    }
}

/// Runs the node's actor tree: starts the NodeActor and restarts it when
/// it crashes (rebuilt from the store; its PodActors are rebuilt in turn and
/// re-adopt their containers). Returns why it gave up, when the NodeActor
/// crashed more often than the intensity allows: the daemon then exits and
/// its own supervisor (systemd) starts it again, as OTP lets an application fail.
pub async fn run(spec: NodeSpec) -> String {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut window = RestartWindow::new(spec.intensity);
    loop {
        let node = spec
            .tree
            .root("Node", spec.node_name.clone(), "permanent", window.total);
        let (s, t) = (spec.clone(), tx.clone());
        let (_addr, link) = spawn_linked(
            None,
            move |_| NodeActor::new(s, node),
            move |exit| {
                let _ = t.send(exit);
            },
        );
        let exit = rx.recv().await.unwrap_or(Exit::Normal);
        drop(link);
        let text = exit_text(&exit);
        peapod_metrics::health::set(peapod_metrics::health::Component::Tree, false);
        if !window.allow(tokio::time::Instant::now()) {
            peapod_metrics::metrics()
                .supervisor_escalations
                .with_label_values(&["NodeActor"])
                .inc();
            return format!(
                "the NodeActor crashed more than {} times within {:?} (last: {text})",
                spec.intensity.max_restarts, spec.intensity.period
            );
        }
        if exit.is_crash() {
            peapod_metrics::metrics()
                .actor_restarts
                .with_label_values(&["NodeActor"])
                .inc();
        }
        tracing::error!("NodeActor ended ({text}); restarting the node's actor tree");
    }
}

/// Deletes Events whose last occurrence is older than `ttl`.
async fn expire_events(store: &dyn Store, ttl: Duration) {
    let resource = kinds::event().resource();
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(ttl).unwrap_or_default();
    // A page at a time: a node that recorded tens of thousands of Events
    // within the TTL would otherwise hold them all in memory at once, and the
    // allocator keeps such a peak long after.
    let mut after = None;
    loop {
        let Ok(page) = store.list_page(&resource, None, after, EXPIRY_PAGE).await else {
            return;
        };
        for ev in &page.items {
            let last = ev["lastTimestamp"]
                .as_str()
                .or(ev["eventTime"].as_str())
                .or(ev["metadata"]["creationTimestamp"].as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if last.is_some_and(|t| t < cutoff) {
                let ns = ev["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = ev["metadata"]["name"].as_str().unwrap_or_default();
                let pre = peapod_core::store::Preconditions {
                    uid: Some(object::uid(ev).to_string()),
                    resource_version: None,
                };
                let _ = store.delete(&resource, ns, name, pre).await;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return,
        }
    }
}

/// Events read per page by the expiry.
const EXPIRY_PAGE: usize = 256;

/// Ensures the namespaces every cluster has (`default`, `kube-system`, `kube-public`, `kube-node-lease`).
pub async fn ensure_default_namespaces(store: &dyn Store) -> Result<(), StoreError> {
    let kind = kinds::namespace();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        (kind.admit_create)(&mut ns).map_err(|e| StoreError::Invalid(e.to_string()))?;
        object::set_meta(&mut ns, "uid", object::new_uid());
        object::set_meta(&mut ns, "creationTimestamp", object::now_rfc3339());
        match store.create(&kind.resource(), ns).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use peapod_core::store::SqliteStore;

    fn event(name: &str, last: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "lastTimestamp": last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }

    #[tokio::test]
    async fn expiry_walks_every_page_and_keeps_recent_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db")).unwrap();
        let resource = kinds::event().resource();
        let old = chrono::Utc::now() - chrono::Duration::hours(2);
        let new = chrono::Utc::now();
        // More than two pages, old and recent interleaved in key order.
        let total = EXPIRY_PAGE * 2 + 17;
        for i in 0..total {
            let at = if i % 3 == 0 { new } else { old };
            store.create(&resource, event(&format!("e{i:05}"), at)).await.unwrap();
        }
        expire_events(&store, Duration::from_secs(3600)).await;
        let (left, _) = store.list(&resource, None).await.unwrap();
        let names: Vec<&str> = left.iter().map(object::name).collect();
        let want: Vec<String> = (0..total).filter(|i| i % 3 == 0).map(|i| format!("e{i:05}")).collect();
        assert_eq!(names, want);
    }
}
