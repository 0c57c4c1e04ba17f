//! `PodActor`: one per pod on this node, a supervised child of the
//! NodeActor. It owns the pod's sandbox, volumes, phase, conditions and the
//! status write, and supervises one `ContainerActor` per container, telling
//! each whether it should run ([`Run`]): init containers one at a time, then
//! sidecars and app containers; everything stopped when the pod is deleted,
//! evicted or past its deadline. On deletion it waits for its containers to
//! stop, tears everything down and removes the object.
//!
//! After a crash (its own, or the daemon's) it is rebuilt from the store and
//! the runtime: its ContainerActors observe the containers first (adopting
//! the running ones), and only then does the pod go on.

mod lifecycle;
pub mod status;
pub mod terminate;

use crate::container::{ContainerActor, ContainerChanged, ContainerSlot, Orders, Role, Run};
use crate::events::{EventKind, EventRecorder};
use crate::runtime::Runtime;
use crate::supervisor::{ChildExited, ChildSpec, Children, Intensity, Restart, TreeNode, Verdict};
use actix::prelude::*;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use peapod_core::store::Store;
use peapod_volumes::Published;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The pod's own life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// The ContainerActors are looking at what a previous actor or daemon left.
    Recovering,
    /// Creating the sandbox.
    Preparing,
    /// Sandbox up; publishing the pod's volumes.
    Mounting,
    /// Sandbox up; containers run per policy.
    Active,
    /// All containers ended for good (Succeeded/Failed); the sandbox is gone.
    Finished,
    /// Deletion requested: stopping containers until the deadline.
    Terminating,
    /// Containers down; tearing down and removing the object.
    Removing,
}

impl Lifecycle {
    fn label(self) -> &'static str {
        match self {
            Lifecycle::Recovering => "Recovering",
            Lifecycle::Preparing => "Preparing",
            Lifecycle::Mounting => "Mounting",
            Lifecycle::Active => "Active",
            Lifecycle::Finished => "Finished",
            Lifecycle::Terminating => "Terminating",
            Lifecycle::Removing => "Removing",
        }
    }
}

/// The latest version of the pod object, from the node's watch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PodChanged(pub Pod);

/// A ConfigMap or Secret in the pod's namespace changed (or came or went):
/// a pod that reads it refreshes its volumes, or retries mounting them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SourceChanged {
    pub source: crate::runtime::projection::Source,
    pub name: String,
}

/// Why the node refused a pod at admission (phase Failed with this reason).
#[derive(Debug, Clone)]
pub struct Rejection {
    /// `OutOfcpu`, `OutOfmemory`.
    pub reason: String,
    /// kubelet's wording.
    pub message: String,
}

/// `name_namespace(uid)`, as kubelet names a pod in messages.
pub fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// Runs one pod.
pub struct PodActor {
    rt: Arc<Runtime>,
    store: Arc<dyn Store>,
    events: EventRecorder,
    node: TreeNode,
    intensity: Intensity,
    pod: Arc<Pod>,
    uid: String,
    lifecycle: Lifecycle,
    /// What each ContainerActor last reported, by index (init containers first).
    slots: Vec<ContainerSlot>,
    /// Whether each ContainerActor has observed the runtime since it started.
    observed: Vec<bool>,
    containers: Children<usize, ContainerActor>,
    /// What each container was last told, to send orders only when they change.
    sent: Vec<Option<Run>>,
    /// The generation of the orders last sent to each container, and the
    /// one each last reported under.
    sent_generation: Vec<u64>,
    acked_generation: Vec<u64>,
    generation: u64,
    /// The pod object changed since the orders were last sent.
    pod_dirty: bool,
    start_time: Option<String>,
    deadline: Option<Instant>,
    /// Everything of the pod is gone but the object, which finalizers hold.
    held: bool,
    writing_status: bool,
    status_dirty: bool,
    last_written: Option<PodStatus>,
    pod_ips: Arc<Vec<String>>,
    /// The services' variables for its containers, read as its volumes are published.
    service_env: Arc<Vec<(String, String)>>,
    rejection: Option<Rejection>,
    /// Every init container completed (sidecars started); sticky, as the condition.
    initialized: bool,
    /// The app containers are done and the sidecars are being stopped.
    finishing: bool,
    /// The pod's volumes, once published.
    published: Arc<Vec<Published>>,
    /// Delay before the next attempt to publish volumes.
    mount_retry: Duration,
    /// Why the volumes could not be published, shown on waiting containers.
    mount_error: Option<String>,
    /// A publish of the volumes is under way; another was asked for meanwhile;
    /// the retry after a failure, if one is pending.
    mounting: bool,
    mount_again: bool,
    mount_retry_handle: Option<SpawnHandle>,
    /// A write of the projected volumes is under way; another was asked for meanwhile.
    projecting: bool,
    project_again: bool,
    /// The last failure to refresh them, told once.
    projection_error: Option<String>,
    /// Delay before the next attempt to remove a pod whose teardown failed.
    removal_retry: Duration,
    /// Ended by the node (evicted, or past activeDeadlineSeconds): phase
    /// Failed with this reason once its containers are down; nothing restarts.
    failed: Option<Rejection>,
    /// This incarnation's token in the metrics inventory.
    metrics_owner: u64,
    /// What the next pass is, for `kubelet_pod_worker_duration_seconds`:
    /// `create` (the first), `update` (the object changed) or `sync`.
    worker_op: &'static str,
    /// The pod's start (first Running) was measured, or it was running before this actor.
    start_measured: bool,
}

impl PodActor {
    /// An actor for `pod`; it starts working when started.
    pub fn new(
        rt: Arc<Runtime>,
        store: Arc<dyn Store>,
        events: EventRecorder,
        node: TreeNode,
        intensity: Intensity,
        pod: Pod,
        rejection: Option<Rejection>,
    ) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let slots: Vec<ContainerSlot> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let role = if peapod_core::resources::is_sidecar(c) {
                    Role::Sidecar
                } else {
                    Role::Init
                };
                ContainerSlot::new(c.name.clone(), role)
            })
            .chain(
                spec.containers
                    .iter()
                    .map(|c| ContainerSlot::new(c.name.clone(), Role::App)),
            )
            .collect();
        let initialized = slots.iter().all(|s| s.role == Role::App)
            || pod
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Initialized" && c.status == "True");
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(status::fmt_time);
        let pod_ips = pod
            .status
            .iter()
            .flat_map(|s| s.pod_ips.iter().flatten())
            .map(|ip| ip.ip.clone())
            .collect();
        let n = slots.len();
        Self {
            rt,
            store,
            events,
            node,
            intensity,
            pod: Arc::new(pod),
            uid,
            lifecycle: Lifecycle::Recovering,
            slots,
            observed: vec![false; n],
            containers: Children::default(),
            sent: vec![None; n],
            sent_generation: vec![0; n],
            acked_generation: vec![0; n],
            generation: 0,
            pod_dirty: false,
            start_time,
            deadline: None,
            held: false,
            writing_status: false,
            status_dirty: false,
            last_written: None,
            pod_ips: Arc::new(pod_ips),
            service_env: Arc::new(Vec::new()),
            rejection,
            initialized,
            finishing: false,
            published: Arc::default(),
            mount_retry: Duration::from_secs(1),
            mount_error: None,
            mounting: false,
            mount_again: false,
            mount_retry_handle: None,
            projecting: false,
            project_again: false,
            projection_error: None,
            removal_retry: Duration::from_secs(1),
            failed: None,
            metrics_owner: peapod_metrics::inventory::owner(),
            worker_op: "create",
            start_measured: false,
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn stored_phase(&self) -> Option<String> {
        self.pod.status.as_ref().and_then(|s| s.phase.clone())
    }

    fn event(&self, kind: EventKind, reason: &str, message: String) {
        self.events.pod_event(&self.pod, None, kind, reason, message);
    }

    fn set_lifecycle(&mut self, l: Lifecycle) {
        self.lifecycle = l;
        self.node.set_state(l.label());
        let running = matches!(l, Lifecycle::Mounting | Lifecycle::Active);
        peapod_metrics::inventory::update_pod(&self.uid, |p| p.sandbox_running = running);
    }

    fn grace_period(&self) -> Duration {
        crate::clock::secs(
            self.pod
                .metadata
                .deletion_grace_period_seconds
                .or(self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30),
        )
    }

    /// Starts (or restarts) the ContainerActor of container `i`.
    fn start_container_actor(&mut self, i: usize, ctx: &mut Context<Self>) {
        let restarts = self.containers.restarts(&i);
        let name = self.slots[i].name.clone();
        let role = self.slots[i].role;
        let node = self.node.child("ContainerActor", name.clone(), "transient", restarts);
        let orders = self.orders_for(i, self.sent[i].unwrap_or(Run::Hold));
        self.sent[i] = Some(orders.run);
        self.sent_generation[i] = orders.generation;
        self.observed[i] = false;
        let (rt, store, events, parent, intensity) = (
            self.rt.clone(),
            self.store.clone(),
            self.events.clone(),
            ctx.address().recipient(),
            self.intensity,
        );
        let spec = ChildSpec {
            restart: Restart::Transient,
            intensity: self.intensity,
        };
        self.containers.start(ctx.address(), i, spec, None, move |_| {
            ContainerActor::new(rt, store, events, node, i, name, role, orders, parent, intensity)
        });
    }

    fn orders_for(&mut self, _i: usize, run: Run) -> Orders {
        self.generation += 1;
        Orders {
            pod: self.pod.clone(),
            volumes: self.published.clone(),
            pod_ips: self.pod_ips.clone(),
            service_env: self.service_env.clone(),
            run,
            generation: self.generation,
        }
    }

    /// Whether container `i` is down and has seen the latest orders: only
    /// then can a report of "not running" be trusted not to be overtaken by
    /// a start the container made before it saw a Stop.
    fn settled_down(&self, i: usize) -> bool {
        self.observed[i] && !self.slots[i].is_active() && self.acked_generation[i] >= self.sent_generation[i]
    }

    fn all_settled_down(&self) -> bool {
        (0..self.slots.len()).all(|i| self.settled_down(i))
    }

    /// What container `i` should do now.
    fn wanted(&self, i: usize) -> Run {
        if matches!(self.lifecycle, Lifecycle::Terminating | Lifecycle::Removing) {
            let deadline = self.deadline.unwrap_or_else(Instant::now);
            return Run::Stop {
                deadline,
                terminating: true,
            };
        }
        if self.failed.is_some() {
            return Run::Stop {
                deadline: self.deadline.unwrap_or_else(Instant::now),
                terminating: false,
            };
        }
        if self.lifecycle != Lifecycle::Active {
            return Run::Hold;
        }
        let slot = &self.slots[i];
        if self.finishing && slot.role == Role::Sidecar {
            return Run::Stop {
                deadline: self.deadline.unwrap_or_else(Instant::now),
                terminating: false,
            };
        }
        if self.initialized {
            return match slot.role {
                Role::Init => Run::Hold,
                Role::Sidecar | Role::App => Run::Run,
            };
        }
        // Init containers one at a time, in order: each to completion (a
        // sidecar until started) before the next; sidecars keep running.
        let next = self.slots.iter().position(|s| match s.role {
            Role::Init => !s.completed(),
            Role::Sidecar => !s.is_started(),
            Role::App => false,
        });
        match (slot.role, next) {
            (Role::App, _) => Run::Hold,
            (_, Some(n)) if n == i => Run::Run,
            (Role::Sidecar, Some(n)) if i < n => Run::Run,
            _ => Run::Hold,
        }
    }

    /// Tells every container what it should do, where that changed.
    fn send_orders(&mut self) {
        let pod_dirty = std::mem::take(&mut self.pod_dirty);
        for i in 0..self.slots.len() {
            let run = self.wanted(i);
            if !pod_dirty && self.sent[i] == Some(run) {
                continue;
            }
            self.sent[i] = Some(run);
            // Only orders really sent await an answer (a refused pod has no containers to tell).
            if let Some(addr) = self.containers.get(&i).cloned() {
                let orders = self.orders_for(i, run);
                self.sent_generation[i] = orders.generation;
                addr.do_send(orders);
            }
        }
    }

    /// The level-triggered heart: compares what should run with what does
    /// and acts. Each pass is timed as kubelet times a pod worker's sync.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let timer = peapod_metrics::Timer::start();
        self.reconcile_pass(ctx);
        peapod_metrics::metrics()
            .pod_worker_duration
            .with_label_values(&[std::mem::replace(&mut self.worker_op, "sync")])
            .observe(timer.seconds());
    }

    fn reconcile_pass(&mut self, ctx: &mut Context<Self>) {
        crate::faults::point("pod.reconcile", &pod_desc(&self.pod));
        if self.pod.metadata.deletion_timestamp.is_some()
            && !matches!(
                self.lifecycle,
                Lifecycle::Recovering | Lifecycle::Terminating | Lifecycle::Removing
            )
        {
            self.begin_termination(ctx);
        }
        match self.lifecycle {
            Lifecycle::Recovering | Lifecycle::Preparing | Lifecycle::Removing => {
                self.send_orders();
                return;
            }
            Lifecycle::Terminating => {
                self.send_orders();
                if self.all_settled_down() {
                    self.finish_removal(ctx);
                }
                self.write_status(ctx);
                return;
            }
            Lifecycle::Mounting if self.failed.is_some() => {
                // Ended before any container ran (e.g. its deadline passed while mounting).
                self.set_lifecycle(Lifecycle::Finished);
                self.teardown_sandbox(ctx);
                self.write_status(ctx);
                return;
            }
            Lifecycle::Finished | Lifecycle::Mounting => {
                self.send_orders();
                self.write_status(ctx);
                return;
            }
            Lifecycle::Active => {}
        }
        if self.failed.is_some() {
            self.send_orders();
            if self.all_settled_down() {
                self.set_lifecycle(Lifecycle::Finished);
                self.teardown_sandbox(ctx);
            }
            self.write_status(ctx);
            return;
        }
        if !self.initialized
            && self.slots.iter().all(|s| match s.role {
                Role::Init => s.completed(),
                Role::Sidecar => s.is_started(),
                Role::App => true,
            })
        {
            self.initialized = true;
        }
        let policy = self.restart_policy();
        let phase = status::phase(&policy, &self.slots, self.initialized);
        if phase == "Succeeded" || phase == "Failed" {
            if self.slots.iter().any(ContainerSlot::is_active) {
                // The app containers are done: sidecars stop now, and are not restarted.
                if !self.finishing {
                    self.finishing = true;
                    self.deadline = Some(crate::clock::after(self.grace_period()));
                }
            } else {
                self.set_lifecycle(Lifecycle::Finished);
                self.teardown_sandbox(ctx);
            }
        }
        self.send_orders();
        self.write_status(ctx);
    }
}

impl Actor for PodActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state(self.lifecycle.label());
        let (owner, pod) = (self.metrics_owner, self.pod.clone());
        peapod_metrics::inventory::update_pod(&self.uid, |p| {
            p.owner = owner;
            p.namespace = pod.metadata.namespace.clone().unwrap_or_default();
            p.name = pod.metadata.name.clone().unwrap_or_default();
            p.host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
            p.cgroup = crate::runtime::cgroups::pod_path(&p.uid);
            p.sandbox_running = false;
        });
        if let Some(r) = self.rejection.clone() {
            // Nothing of it ever runs: no containers to look after.
            self.observed.fill(true);
            self.reject(&r.reason, r.message, ctx);
            return;
        }
        for i in 0..self.slots.len() {
            self.start_container_actor(i, ctx);
        }
        if self.slots.is_empty() {
            self.recovered(ctx);
        }
    }
}

impl Handler<ContainerChanged> for PodActor {
    type Result = ();

    fn handle(&mut self, msg: ContainerChanged, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(msg.index) else {
            return;
        };
        *slot = msg.slot;
        let was = self.observed[msg.index];
        self.observed[msg.index] = msg.observed;
        self.acked_generation[msg.index] = msg.generation;
        if self.lifecycle == Lifecycle::Recovering {
            if self.observed.iter().all(|o| *o) {
                self.recovered(ctx);
            }
            return;
        }
        if !was && msg.observed {
            // A restarted ContainerActor: tell it what it should do.
            self.sent[msg.index] = None;
        }
        self.reconcile(ctx);
    }
}

impl Handler<ChildExited<usize>> for PodActor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited<usize>, ctx: &mut Context<Self>) {
        let i = msg.key;
        match self.containers.exited(&msg) {
            Verdict::Stale | Verdict::Done => {}
            Verdict::Restart { restarts } => {
                let reason = match &msg.exit {
                    crate::supervisor::Exit::Crashed(t) => t.clone(),
                    crate::supervisor::Exit::Normal => "ended".into(),
                };
                tracing::warn!(
                    "pod {}: ContainerActor {} crashed ({reason}); rebuilding it (restart {restarts})",
                    pod_desc(&self.pod),
                    self.slots[i].name
                );
                self.start_container_actor(i, ctx);
            }
            Verdict::GiveUp { crashes } => crate::supervisor::escalate(format!(
                "ContainerActor {} crashed {crashes} times within {:?} (last: {})",
                self.slots[i].name,
                self.intensity.period,
                match &msg.exit {
                    crate::supervisor::Exit::Crashed(t) => t.as_str(),
                    crate::supervisor::Exit::Normal => "ended",
                }
            )),
        }
    }
}

impl Handler<PodChanged> for PodActor {
    type Result = ();

    fn handle(&mut self, msg: PodChanged, ctx: &mut Context<Self>) {
        if msg.0.metadata.uid.as_deref() != Some(self.uid.as_str()) {
            return;
        }
        let deadline_changed = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds)
            != msg.0.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        let meta_changed = self.pod.metadata.labels != msg.0.metadata.labels
            || self.pod.metadata.annotations != msg.0.metadata.annotations;
        self.pod = Arc::new(msg.0);
        self.pod_dirty = true;
        if self.worker_op == "sync" {
            self.worker_op = "update";
        }
        if self.held {
            self.retry_held(ctx);
            return;
        }
        // The stored status is the truth now (another writer, or a late write of ours).
        self.last_written = None;
        if self.lifecycle == Lifecycle::Terminating {
            // A second delete with a shorter grace period brings the deadline forward.
            let deadline = terminate::deadline(&self.pod);
            if self.deadline.is_none_or(|d| deadline < d) {
                self.deadline = Some(deadline);
            }
        }
        if deadline_changed {
            self.check_active_deadline(ctx);
        }
        // The downward API shows labels and annotations as they are now.
        if meta_changed {
            self.refresh_projections(ctx);
        }
        self.reconcile(ctx);
    }
}

impl Handler<SourceChanged> for PodActor {
    type Result = ();

    fn handle(&mut self, msg: SourceChanged, ctx: &mut Context<Self>) {
        if !crate::runtime::projection::volume_references(&self.pod).contains(&(msg.source, msg.name)) {
            return;
        }
        if self.lifecycle == Lifecycle::Mounting {
            // Now, not after the back-off (an attempt under way runs again after it).
            self.mount_retry = Duration::from_secs(1);
            self.mount_volumes(ctx);
        } else {
            self.refresh_projections(ctx);
        }
    }
}

impl Drop for PodActor {
    /// The pod's series leave with its actor (a rebuilt actor reports again).
    fn drop(&mut self) {
        peapod_metrics::inventory::remove_pod(&self.uid, self.metrics_owner);
    }
}
