//! `ContainerActor`: one per container of a pod (init, sidecar, app), a
//! child of its `PodActor`. It owns one container's life through its shim:
//! start, wait, the exit record, the restart decision with CrashLoopBackOff,
//! postStart and preStop, kills after failed liveness or startup probes, and
//! the container's probes, each a supervised `ProbeActor` child.
//!
//! The container process is this actor's own child, with the pod's
//! `restartPolicy` as its restart type ([`Restart`]: `Always` permanent,
//! `OnFailure` transient, `Never` temporary) and CrashLoopBackOff as the
//! restart delay. The PodActor decides *whether* the container should run
//! ([`Run`]: init order, termination, eviction) and this actor carries it out.
//!
//! When the actor (re)starts it first observes the runtime: a running start
//! is adopted (never started a second time), one that ended is recorded, the
//! start before it becomes `lastState`.

mod exit;
mod probes;
mod start;
pub mod state;
mod stop;

use crate::clock;
use crate::events::{EventKind, EventRecorder};
use crate::probe::{ProbeActor, ProbeKind};
use crate::runtime::{Observed, Runtime};
use crate::supervisor::{Children, Intensity, Restart, TreeNode};
use actix::prelude::*;
use k8s_openapi::api::core::v1::{Container, Pod};
use peapod_volumes::Published;
pub use state::{ContainerSlot, ContainerState, Finished, Role};
use std::sync::Arc;
pub use stop::parse_signal;
use tokio::time::Instant;

/// Whether the PodActor wants the container to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Not yet (sandbox, volumes or earlier init containers not ready; or the
    /// pod is done): nothing is started, a running container is left alone.
    Hold,
    /// Run it, restarting per its restart type.
    Run,
    /// Stop it by `deadline` and do not start it again. `terminating`: the
    /// pod is being deleted, and readiness keeps being probed meanwhile.
    Stop { deadline: Instant, terminating: bool },
}

/// What the PodActor wants of a container; sent whenever any of it changes
/// (level-triggered: the latest orders are the whole truth).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Orders {
    /// The pod as last seen.
    pub pod: Arc<Pod>,
    /// The pod's published volumes.
    pub volumes: Arc<Vec<Published>>,
    /// The pod's IPs (probes and hooks reach the container there).
    pub pod_ips: Arc<Vec<String>>,
    /// The services' variables, as they were when the pod started.
    pub service_env: Arc<Vec<(String, String)>>,
    /// Run, hold or stop.
    pub run: Run,
    /// Which orders these are (they only grow): a report echoes the
    /// generation it was made under, so the PodActor knows the container
    /// has seen a Stop before it counts it as down for good.
    pub generation: u64,
}

/// A container's state changed; sent to the PodActor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ContainerChanged {
    /// The container's index in the pod (init containers first).
    pub index: usize,
    /// Its state.
    pub slot: ContainerSlot,
    /// Whether the actor has looked at the runtime yet (after a (re)start).
    pub observed: bool,
    /// The generation of the orders the actor acted under.
    pub generation: u64,
}

/// A stop in progress: SIGKILL is due at `deadline`.
struct Stopping {
    attempt: u32,
    deadline: Instant,
    handles: Vec<SpawnHandle>,
}

/// Runs one container.
pub struct ContainerActor {
    rt: Arc<Runtime>,
    /// Where the ConfigMaps and Secrets its environment names are read at each start.
    store: Arc<dyn peapod_core::store::Store>,
    events: EventRecorder,
    node: TreeNode,
    index: usize,
    slot: ContainerSlot,
    orders: Orders,
    parent: Recipient<ContainerChanged>,
    probes: Children<ProbeKind, ProbeActor>,
    intensity: Intensity,
    /// The runtime has been looked at since this actor started.
    observed: bool,
    /// A start ended and its restart is not decided yet (decided once the orders say Run).
    exit_pending: bool,
    /// The running start is being stopped because its image changed: it
    /// starts again at once, whatever the restart policy.
    definition_changed: bool,
    stopping: Option<Stopping>,
    retry: Option<SpawnHandle>,
    /// Pulls of the image that failed in a row: after the first the
    /// container waits in `ImagePullBackOff`, as kubelet shows it.
    pull_failures: u32,
    /// This incarnation's token in the metrics inventory.
    metrics_owner: u64,
}

impl ContainerActor {
    /// An actor for container `name` (`index` in the pod), reporting to `parent`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: Arc<Runtime>,
        store: Arc<dyn peapod_core::store::Store>,
        events: EventRecorder,
        node: TreeNode,
        index: usize,
        name: String,
        role: Role,
        orders: Orders,
        parent: Recipient<ContainerChanged>,
        intensity: Intensity,
    ) -> Self {
        Self {
            rt,
            store,
            events,
            node,
            index,
            slot: ContainerSlot::new(name, role),
            orders,
            parent,
            probes: Children::default(),
            intensity,
            observed: false,
            exit_pending: false,
            definition_changed: false,
            stopping: None,
            retry: None,
            pull_failures: 0,
            metrics_owner: peapod_metrics::inventory::owner(),
        }
    }

    fn uid(&self) -> String {
        self.orders.pod.metadata.uid.clone().unwrap_or_default()
    }

    fn spec(&self) -> Option<Container> {
        let spec = self.orders.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == self.slot.name)
            .cloned()
    }

    /// The restart type of the container process.
    fn restart(&self) -> Restart {
        let policy = self
            .orders
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        self.slot.role.restart(&policy)
    }

    fn grace_period(&self) -> std::time::Duration {
        clock::secs(
            self.orders
                .pod
                .metadata
                .deletion_grace_period_seconds
                .or(self
                    .orders
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30),
        )
    }

    fn desc(&self) -> String {
        crate::pod::pod_desc(&self.orders.pod)
    }

    fn event(&self, kind: EventKind, reason: &str, message: String) {
        let name = self.slot.name.clone();
        self.events
            .pod_event(&self.orders.pod, Some(&name), kind, reason, message);
    }

    /// Tells the PodActor (and the tree view) where the container is.
    fn report(&mut self) {
        self.node.set_state(self.state_label());
        self.report_metrics();
        self.parent.do_send(ContainerChanged {
            index: self.index,
            slot: self.slot.clone(),
            observed: self.observed,
            generation: self.orders.generation,
        });
    }

    /// Keeps the container's entry in the metrics inventory: what the
    /// scrape reads its cgroup, state and restarts from. A container that
    /// never started has none (the runtime holds nothing of it).
    fn report_metrics(&self) {
        use peapod_metrics::inventory::{self, ContainerState as Metric};
        let uid = self.uid();
        let (state, started, attempt) = match &self.slot.state {
            ContainerState::Starting { attempt } => (Metric::Created, None, Some(*attempt)),
            ContainerState::Running { attempt, started, .. } => (Metric::Running, Some(started), Some(*attempt)),
            ContainerState::Terminated(f) => (Metric::Exited, None, Some(f.attempt)),
            ContainerState::Waiting { .. } => (Metric::Exited, None, self.slot.latest_attempt),
        };
        let Some(attempt) = attempt else {
            inventory::remove_container(&uid, &self.slot.name, self.metrics_owner);
            return;
        };
        let id = crate::runtime::container_id(&uid, &self.slot.name, attempt);
        let pod = &self.orders.pod;
        // The running start's image; the spec's (a clone of the container) only when none runs.
        let image = match started {
            Some(s) => s.image.clone(),
            None => self.spec().and_then(|c| c.image).unwrap_or_default(),
        };
        let upper = self.rt.paths.attempt_dir(&uid, &self.slot.name, attempt).join("upper");
        let owner = self.metrics_owner;
        let restarts = self.slot.restart_count();
        inventory::update_container(&uid, &self.slot.name, |c| {
            c.owner = owner;
            c.namespace = pod.metadata.namespace.clone().unwrap_or_default();
            c.pod = pod.metadata.name.clone().unwrap_or_default();
            c.image = image;
            c.cgroup = format!("{}/{id}", crate::runtime::cgroups::pod_path(&uid));
            c.pid = started.map_or(0, |s| s.pid);
            c.started_at = started
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s.started_at).ok())
                .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
            c.id = id;
            c.state = state;
            c.restarts = restarts;
            c.upper_dir = Some(upper);
        });
    }

    fn state_label(&self) -> String {
        if !self.observed {
            return "Observing".into();
        }
        match &self.slot.state {
            ContainerState::Waiting { reason, .. } => format!("Waiting ({reason})"),
            ContainerState::Starting { attempt } => format!("Starting (attempt {attempt})"),
            ContainerState::Running { attempt, .. } if self.stopping.is_some() => {
                format!("Stopping (attempt {attempt})")
            }
            ContainerState::Running { attempt, .. } => format!("Running (attempt {attempt})"),
            ContainerState::Terminated(f) => format!("Terminated ({}, exit {})", f.exit.reason, f.exit.exit_code),
        }
    }

    /// Looks at the runtime: adopts a running start, records an ended one.
    fn observe(&mut self, ctx: &mut Context<Self>) {
        let rt = self.rt.clone();
        let uid = self.uid();
        let name = self.slot.name.clone();
        ctx.wait(
            async move { rt.observe(&uid, &name).await }
                .into_actor(self)
                .map(|found, act, ctx| {
                    act.slot.last = found.previous;
                    act.definition_changed = found.definition_changed;
                    match found.latest {
                        Some((attempt, Observed::Running(started))) => {
                            tracing::info!(
                                "pod {}: adopting running container {} ({}, pid {})",
                                act.desc(),
                                act.slot.name,
                                started.id,
                                started.pid
                            );
                            let since = clock::instant_of(&started.started_at);
                            act.slot.started(attempt, started);
                            if let ContainerState::Running { since: s, .. } = &mut act.slot.state {
                                *s = since;
                            }
                            act.watch_exit(attempt, ctx);
                            if !matches!(act.orders.run, Run::Hold) {
                                act.after_adoption(attempt, since, ctx);
                            }
                        }
                        Some((_, Observed::Exited(finished))) => {
                            act.slot.exited(finished);
                            act.exit_pending = true;
                        }
                        None => {}
                    }
                    act.observed = true;
                    act.reconcile(ctx);
                }),
        );
    }

    /// Compares what the orders want with the container's state and acts.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if !self.observed {
            return;
        }
        match self.orders.run {
            Run::Hold => {}
            Run::Run => {
                if self.exit_pending {
                    self.decide_restart();
                }
                self.restart_if_image_changed(ctx);
                if let ContainerState::Waiting { retry_at, .. } = &self.slot.state {
                    let now = Instant::now();
                    match retry_at {
                        Some(t) if *t > now => {
                            let left = *t - now;
                            if let Some(h) = self.retry.take() {
                                ctx.cancel_future(h);
                            }
                            self.retry = Some(ctx.run_later(left, |act, ctx| {
                                act.retry = None;
                                act.reconcile(ctx);
                            }));
                        }
                        _ => self.start(ctx),
                    }
                }
            }
            Run::Stop { deadline, terminating } => {
                self.exit_pending = false;
                if let Some(h) = self.retry.take() {
                    ctx.cancel_future(h);
                }
                if terminating {
                    self.stop_probes_but_readiness();
                } else {
                    self.stop_probes();
                }
                match self.slot.state {
                    ContainerState::Running { .. } => {
                        let why = format!("Stopping container {}", self.slot.name);
                        self.stop(deadline, why, ctx);
                    }
                    ContainerState::Waiting { .. } => {
                        // Shown as it last ended (or still waiting, if it never ran).
                        if let Some(last) = self.slot.last.take() {
                            self.slot.state = ContainerState::Terminated(last);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.report();
    }

    /// A running container whose image was changed in the spec is stopped and
    /// started again with the new one, whatever the restart policy, as kubelet
    /// does when a container's definition changes.
    fn restart_if_image_changed(&mut self, ctx: &mut Context<Self>) {
        let ContainerState::Running { started, .. } = &self.slot.state else {
            return;
        };
        let wanted = self.spec().and_then(|c| c.image).unwrap_or_default();
        if started.image.is_empty() || started.image == wanted || self.definition_changed {
            return;
        }
        self.definition_changed = true;
        self.stop_probes();
        let attempt = self.slot.running_attempt().unwrap_or_default();
        let (rt, uid, name) = (self.rt.clone(), self.uid(), self.slot.name.clone());
        // Remembered on disk before the stop begins, so a rebuilt actor restarts it too.
        ctx.wait(async move { rt.mark_definition_changed(&uid, &name, attempt).await }.into_actor(self));
        let deadline = clock::after(self.grace_period());
        let why = format!("Container {} definition changed, will be restarted", self.slot.name);
        self.stop(deadline, why, ctx);
    }
}

impl Actor for ContainerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.report();
        self.observe(ctx);
    }
}

impl Handler<Orders> for ContainerActor {
    type Result = ();

    fn handle(&mut self, orders: Orders, ctx: &mut Context<Self>) {
        let was_hold = matches!(self.orders.run, Run::Hold);
        self.orders = orders;
        if was_hold && !matches!(self.orders.run, Run::Hold) {
            // Adopted while the pod was still getting ready: probing starts now.
            if let ContainerState::Running { attempt, since, .. } = self.slot.state {
                self.after_adoption(attempt, since, ctx);
            }
        }
        self.reconcile(ctx);
    }
}

impl Drop for ContainerActor {
    /// The container's series leave with its actor (a rebuilt actor reports again).
    fn drop(&mut self) {
        peapod_metrics::inventory::remove_container(&self.uid(), &self.slot.name, self.metrics_owner);
    }
}
