//! `PodActor`: one per pod on this node. It owns the pod's sandbox and
//! containers, restarts them per `restartPolicy` with kubelet's back-off,
//! writes `status` back to the store, records Events, and on deletion runs
//! preStop hooks, stops containers within the grace period, tears everything
//! down and removes the object.

pub mod container;
pub mod hooks;
pub mod probe;
pub mod status;

use crate::events::{EventKind, EventRecorder};
use crate::runtime::protocol::ExitRecord;
use crate::runtime::{Observed, Runtime, StartError, Started};
use actix::prelude::*;
use container::{should_restart, ContainerSlot, ContainerState, Finished, Role};
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::{Preconditions, Store, StoreError};
use peapod_volumes::Published;
use probe::{ProbeActor, ProbeChanged, ProbeKind, ProbeSpec, StopProbe};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pod's own life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Reading what a previous daemon left, creating the sandbox.
    Preparing,
    /// Sandbox up; publishing the pod's volumes.
    Mounting,
    /// Sandbox up; containers run per policy.
    Active,
    /// All containers ended for good (Succeeded/Failed); the sandbox is gone.
    Finished,
    /// Deletion requested: stopping containers until the deadline.
    Terminating,
    /// Torn down and removed from the store.
    Removed,
}

/// The latest version of the pod object, from the node's watch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PodChanged(pub Pod);

/// Why the node refused a pod at admission (phase Failed with this reason).
#[derive(Debug, Clone)]
pub struct Rejection {
    /// `OutOfcpu`, `OutOfmemory`.
    pub reason: String,
    /// kubelet's wording.
    pub message: String,
}

/// Runs one pod.
pub struct PodActor {
    rt: Arc<Runtime>,
    store: Arc<dyn Store>,
    events: EventRecorder,
    pod: Pod,
    uid: String,
    lifecycle: Lifecycle,
    slots: Vec<ContainerSlot>,
    start_time: Option<String>,
    deadline: Option<Instant>,
    writing_status: bool,
    status_dirty: bool,
    last_written: Option<PodStatus>,
    pod_ips: Vec<String>,
    rejection: Option<Rejection>,
    /// The probe actors of each running container, by slot.
    probes: HashMap<usize, Vec<(ProbeKind, Addr<ProbeActor>)>>,
    /// Every init container completed (sidecars started); sticky, as the condition.
    initialized: bool,
    /// The app containers are done and the sidecars are being stopped.
    finishing: bool,
    /// The pod's volumes, once published.
    published: Vec<Published>,
    /// Delay before the next attempt to publish volumes.
    mount_retry: Duration,
    /// Ended by the node (evicted, or past activeDeadlineSeconds): phase
    /// Failed with this reason once its containers are down; nothing restarts.
    failed: Option<Rejection>,
}

fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

impl PodActor {
    /// An actor for `pod`; it starts working when started.
    pub fn new(
        rt: Arc<Runtime>,
        store: Arc<dyn Store>,
        events: EventRecorder,
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
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(fmt_time);
        let pod_ips = pod
            .status
            .iter()
            .flat_map(|s| s.pod_ips.iter().flatten())
            .map(|ip| ip.ip.clone())
            .collect();
        Self {
            rt,
            store,
            events,
            pod,
            uid,
            lifecycle: Lifecycle::Preparing,
            slots,
            start_time,
            deadline: None,
            writing_status: false,
            status_dirty: false,
            last_written: None,
            pod_ips,
            rejection,
            probes: HashMap::new(),
            initialized,
            finishing: false,
            published: Vec::new(),
            mount_retry: Duration::from_secs(1),
            failed: None,
        }
    }

    fn spec_container(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned()
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

    fn event(&self, container: Option<&str>, kind: EventKind, reason: &str, message: String) {
        self.events.pod_event(&self.pod, container, kind, reason, message);
    }

    /// Finds what a previous daemon left: running containers are adopted,
    /// exits that happened meanwhile are recorded.
    fn recover(&mut self, ctx: &mut Context<Self>) {
        let rt = self.rt.clone();
        let uid = self.uid.clone();
        let names: Vec<String> = self.slots.iter().map(|s| s.name.clone()).collect();
        let fut = async move {
            let mut found = Vec::new();
            for n in names {
                found.push(rt.observe(&uid, &n).await);
            }
            found
        };
        ctx.wait(fut.into_actor(self).map(|found, act, ctx| {
            let stored = act.pod.status.clone().unwrap_or_default();
            let terminal = matches!(act.stored_phase().as_deref(), Some("Succeeded" | "Failed"));
            for (i, obs) in found.into_iter().enumerate() {
                let Some((attempt, obs)) = obs else { continue };
                if act.slots[i].role == Role::App {
                    // App containers ran, so initialization was over.
                    act.initialized = true;
                }
                let name = act.slots[i].name.clone();
                let recorded = stored
                    .container_statuses
                    .iter()
                    .flatten()
                    .find(|c| c.name == name)
                    .cloned();
                match obs {
                    Observed::Running {
                        id,
                        pid,
                        stop_signal,
                        image,
                    } => {
                        tracing::info!(
                            "pod {}: adopting running container {name} ({id}, pid {pid})",
                            pod_desc(&act.pod)
                        );
                        let started_at = recorded
                            .as_ref()
                            .and_then(|r| r.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                            .map(fmt_time)
                            .unwrap_or_else(crate::runtime::protocol::now);
                        let image_id = recorded.as_ref().map(|r| r.image_id.clone()).unwrap_or_default();
                        let image = image
                            .or_else(|| recorded.as_ref().map(|r| r.image.clone()))
                            .unwrap_or_default();
                        let started = Started {
                            id,
                            pid,
                            started_at,
                            image_id,
                            image,
                            stop_signal,
                        };
                        act.restore_last(i, &recorded);
                        let since = instant_of(&started.started_at);
                        act.slots[i].started(attempt, started);
                        if let ContainerState::Running { since: s, .. } = &mut act.slots[i].state {
                            *s = since;
                        }
                        act.watch_exit(i, attempt, ctx);
                    }
                    Observed::Exited { id, exit } => {
                        act.restore_last(i, &recorded);
                        let image_id = recorded.as_ref().map(|r| r.image_id.clone()).unwrap_or_default();
                        let message = act.rt.termination_message(&act.uid, &name, attempt);
                        act.rt.release_rootfs(&act.uid, &name, attempt);
                        let finished = Finished {
                            attempt,
                            id,
                            exit,
                            image_id,
                            message,
                        };
                        act.slots[i].exited(finished);
                        if !terminal {
                            act.decide_restart(i, ctx);
                        }
                    }
                }
            }
            if terminal {
                act.lifecycle = Lifecycle::Finished;
                act.teardown_sandbox(ctx);
                act.reconcile(ctx);
            } else {
                act.prepare_sandbox(ctx);
            }
        }));
    }

    /// Restores `lastState` from the stored status after a daemon restart.
    fn restore_last(&mut self, i: usize, recorded: &Option<k8s_openapi::api::core::v1::ContainerStatus>) {
        let Some(t) = recorded
            .as_ref()
            .and_then(|r| r.last_state.as_ref()?.terminated.clone())
        else {
            return;
        };
        let id = t
            .container_id
            .clone()
            .unwrap_or_default()
            .trim_start_matches("peapod://")
            .to_string();
        let attempt = id.rsplit('-').next().and_then(|a| a.parse().ok()).unwrap_or(0);
        self.slots[i].last = Some(Finished {
            attempt,
            id,
            exit: ExitRecord {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: t.reason.clone().unwrap_or_default(),
                message: t.message.clone(),
                started_at: t.started_at.map(|s| fmt_time(&s)),
                finished_at: t.finished_at.map(|s| fmt_time(&s)).unwrap_or_default(),
            },
            image_id: recorded.as_ref().map(|r| r.image_id.clone()).unwrap_or_default(),
            message: t.message,
        });
    }

    fn prepare_sandbox(&mut self, ctx: &mut Context<Self>) {
        let rt = self.rt.clone();
        let pod = self.pod.clone();
        ctx.wait(
            async move { rt.ensure_sandbox(&pod).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(info) => {
                        act.pod_ips = info.pod_ips;
                        if act.start_time.is_none() {
                            act.start_time = Some(crate::runtime::protocol::now());
                        }
                        if act.lifecycle == Lifecycle::Preparing {
                            act.lifecycle = Lifecycle::Mounting;
                            act.check_active_deadline(ctx);
                            act.mount_volumes(ctx);
                        }
                    }
                    Err(e) => {
                        act.event(
                            None,
                            EventKind::Warning,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {e}"),
                        );
                        ctx.run_later(Duration::from_secs(10), |act, ctx| act.prepare_sandbox(ctx));
                    }
                }),
        );
    }

    /// Publishes the pod's volumes through their plugins; on failure the
    /// containers wait (`ContainerCreating` with the plugin's message) and
    /// publishing is retried with back-off, as kubelet retries mounts.
    fn mount_volumes(&mut self, ctx: &mut Context<Self>) {
        if self.lifecycle != Lifecycle::Mounting || self.failed.is_some() {
            return;
        }
        let rt = self.rt.clone();
        let pod = self.pod.clone();
        let pod_dir = self.rt.paths.pod_dir(&self.uid);
        ctx.wait(
            async move { rt.volumes.publish(&pod, &pod_dir).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    if act.lifecycle != Lifecycle::Mounting {
                        return;
                    }
                    match res {
                        Ok(published) => {
                            act.published = published;
                            act.lifecycle = Lifecycle::Active;
                            // Containers adopted from a previous daemon are probed afresh.
                            for i in 0..act.slots.len() {
                                if let ContainerState::Running { attempt, since, .. } = act.slots[i].state {
                                    if !act.probes.contains_key(&i) {
                                        act.start_probes(i, attempt, since, ctx);
                                    }
                                }
                            }
                            act.schedule_housekeeping(ctx);
                            act.restart_changed_containers(ctx);
                            act.reconcile(ctx);
                        }
                        Err(e) => {
                            act.event(None, EventKind::Warning, "FailedMount", e.message.clone());
                            for slot in &mut act.slots {
                                if let ContainerState::Waiting { reason, message, .. } = &mut slot.state {
                                    if reason == "ContainerCreating" {
                                        *message = Some(e.message.clone());
                                    }
                                }
                            }
                            act.write_status(ctx);
                            let delay = act.mount_retry;
                            act.mount_retry = (delay * 2).min(Duration::from_secs(60));
                            ctx.run_later(delay, |act, ctx| act.mount_volumes(ctx));
                        }
                    }
                }),
        );
    }

    /// Periodically compares disk emptyDir usage with `sizeLimit` and evicts
    /// the pod when a volume is over, as kubelet's eviction manager does.
    fn schedule_housekeeping(&mut self, ctx: &mut Context<Self>) {
        let limited: Vec<(Published, i64, String)> = self
            .published
            .iter()
            .filter(|p| {
                p.source.plugin == peapod_volumes::sources::EMPTY_DIR
                    && p.source.context.get("medium").is_none_or(|m| m.is_empty())
            })
            .filter_map(|p| {
                let limit = p.source.context.get("sizeLimit")?.parse::<i64>().ok()?;
                let text = p
                    .source
                    .context
                    .get("sizeLimitText")
                    .cloned()
                    .unwrap_or_else(|| limit.to_string());
                Some((p.clone(), limit, text))
            })
            .collect();
        if limited.is_empty() {
            return;
        }
        let period = self.rt.config.housekeeping;
        ctx.run_interval(period, move |act, ctx| {
            if act.lifecycle != Lifecycle::Active || act.failed.is_some() {
                return;
            }
            let rt = act.rt.clone();
            let limited = limited.clone();
            ctx.spawn(
                async move {
                    for (p, limit, text) in limited {
                        if let Ok(stats) = rt.volumes.stats(&p).await {
                            if stats.used_bytes > limit {
                                return Some(format!(
                                    "Usage of EmptyDir volume {:?} exceeds the limit {text:?}. ",
                                    p.source.name
                                ));
                            }
                        }
                    }
                    None
                }
                .into_actor(act)
                .map(|over, act, ctx| {
                    if let Some(message) = over {
                        act.fail_pod("Evicted", message, Duration::ZERO, ctx);
                    }
                }),
            );
        });
    }

    /// Ends the pod on the node's behalf (eviction, active deadline): every
    /// container is stopped within `grace` and none restarts; the pod ends
    /// Failed with `reason`.
    fn fail_pod(&mut self, reason: &str, message: String, grace: Duration, ctx: &mut Context<Self>) {
        if self.failed.is_some() || !matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Mounting) {
            return;
        }
        self.event(None, EventKind::Warning, reason, message.clone());
        self.failed = Some(Rejection {
            reason: reason.into(),
            message,
        });
        let deadline = Instant::now() + grace;
        self.deadline = Some(deadline);
        for i in 0..self.slots.len() {
            self.stop_for_good(i, deadline, ctx);
        }
        self.reconcile(ctx);
    }

    /// A running container whose image was changed in the spec is stopped and
    /// started again with the new one, whatever the restart policy, as kubelet
    /// does when a container's definition changes.
    fn restart_changed_containers(&mut self, ctx: &mut Context<Self>) {
        if self.lifecycle != Lifecycle::Active || self.failed.is_some() {
            return;
        }
        for i in 0..self.slots.len() {
            let name = self.slots[i].name.clone();
            let ContainerState::Running { started, .. } = &self.slots[i].state else {
                continue;
            };
            let wanted = self.spec_container(&name).and_then(|c| c.image).unwrap_or_default();
            if started.image.is_empty() || started.image == wanted || self.slots[i].definition_changed {
                continue;
            }
            self.slots[i].definition_changed = true;
            self.stop_probes(i);
            let deadline = Instant::now() + self.grace_period();
            self.stop_container(
                i,
                deadline,
                format!("Container {name} definition changed, will be restarted"),
                ctx,
            );
        }
    }

    /// kubelet's active deadline: a pod running longer than
    /// `activeDeadlineSeconds` since its start time is ended (DeadlineExceeded).
    /// Checked whenever the pod changes and when the deadline falls due.
    fn check_active_deadline(&mut self, ctx: &mut Context<Self>) {
        let Some(limit) = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
            return;
        };
        if !matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Mounting) || self.failed.is_some() {
            return;
        }
        let started = self.start_time.as_deref().map(instant_of).unwrap_or_else(Instant::now);
        let due = started + Duration::from_secs(limit.max(0) as u64);
        let now = Instant::now();
        if due <= now {
            let grace = self.grace_period();
            self.fail_pod(
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline".into(),
                grace,
                ctx,
            );
        } else {
            ctx.run_later(due - now, |act, ctx| act.check_active_deadline(ctx));
        }
    }

    /// Releases the network and namespaces of a pod whose containers are done.
    fn teardown_sandbox(&mut self, ctx: &mut Context<Self>) {
        let fut = self.rt.clone().teardown_blocking(self.uid.clone());
        ctx.spawn(fut.into_actor(self));
    }

    /// Refuses the pod as kubelet admission does: phase Failed with a reason.
    fn reject(&mut self, reason: &str, message: String, ctx: &mut Context<Self>) {
        self.event(None, EventKind::Warning, reason, message.clone());
        self.lifecycle = Lifecycle::Finished;
        self.rejection = Some(Rejection {
            reason: reason.into(),
            message,
        });
        self.write_status(ctx);
    }

    /// The level-triggered heart: compares what should run with what does and acts.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if self.pod.metadata.deletion_timestamp.is_some()
            && !matches!(self.lifecycle, Lifecycle::Terminating | Lifecycle::Removed)
        {
            self.begin_termination(ctx);
        }
        match self.lifecycle {
            Lifecycle::Preparing | Lifecycle::Removed => return,
            Lifecycle::Terminating => {
                if !self.slots.iter().any(ContainerSlot::is_active) {
                    self.finish_removal(ctx);
                }
                return;
            }
            Lifecycle::Mounting if self.failed.is_some() => {
                // Ended before any container ran (e.g. its deadline passed while mounting).
                self.lifecycle = Lifecycle::Finished;
                self.teardown_sandbox(ctx);
                self.write_status(ctx);
                return;
            }
            Lifecycle::Finished | Lifecycle::Mounting => {
                self.write_status(ctx);
                return;
            }
            Lifecycle::Active => {}
        }
        if self.failed.is_some() {
            if !self.slots.iter().any(ContainerSlot::is_active) {
                self.lifecycle = Lifecycle::Finished;
                self.teardown_sandbox(ctx);
            }
            self.write_status(ctx);
            return;
        }
        let now = Instant::now();
        if !self.initialized {
            // Init containers one at a time, in order: each to completion (a
            // sidecar until started) before the next.
            let next = self.slots.iter().position(|s| match s.role {
                Role::Init => !s.completed(),
                Role::Sidecar => !s.is_started(),
                Role::App => false,
            });
            match next {
                None => self.initialized = true,
                Some(i) => {
                    if self.slots[i].start_due(now) {
                        self.start_container(i, ctx);
                    }
                }
            }
        }
        if self.initialized {
            for i in 0..self.slots.len() {
                let role = self.slots[i].role;
                let wanted = match role {
                    Role::Init => false,
                    Role::Sidecar => !self.finishing,
                    Role::App => true,
                };
                if wanted && self.slots[i].start_due(now) {
                    self.start_container(i, ctx);
                }
            }
        }
        let policy = self.restart_policy();
        let phase = status::phase(&policy, &self.slots, self.initialized);
        if phase == "Succeeded" || phase == "Failed" {
            if self.slots.iter().any(ContainerSlot::is_active) {
                // The app containers are done: sidecars stop now, and are not restarted.
                if !self.finishing {
                    self.finishing = true;
                    self.stop_sidecars(ctx);
                }
            } else {
                self.lifecycle = Lifecycle::Finished;
                self.teardown_sandbox(ctx);
            }
        }
        self.write_status(ctx);
    }

    /// Stops the sidecars once the app containers are done, as kubelet does.
    fn stop_sidecars(&mut self, ctx: &mut Context<Self>) {
        let deadline = Instant::now() + self.grace_period();
        self.deadline = Some(deadline);
        for i in 0..self.slots.len() {
            if self.slots[i].role == Role::Sidecar {
                self.stop_for_good(i, deadline, ctx);
            }
        }
    }

    fn start_container(&mut self, i: usize, ctx: &mut Context<Self>) {
        let Some(spec) = self.spec_container(&self.slots[i].name) else {
            return;
        };
        let attempt = self.slots[i].begin_start();
        let rt = self.rt.clone();
        let pod = self.pod.clone();
        let c = spec.clone();
        let volumes = self.published.clone();
        ctx.spawn(
            async move { rt.start(&pod, &c, attempt, &volumes).await }
                .into_actor(self)
                .map(move |res, act, ctx| act.on_started(i, attempt, &spec, res, ctx)),
        );
    }

    fn on_started(
        &mut self,
        i: usize,
        attempt: u32,
        spec: &Container,
        res: Result<Started, StartError>,
        ctx: &mut Context<Self>,
    ) {
        let name = spec.name.clone();
        let image = spec.image.clone().unwrap_or_default();
        match res {
            Ok(started) => {
                if attempt == 0 || self.slots[i].latest_attempt.is_none() {
                    self.event(
                        Some(&name),
                        EventKind::Normal,
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                    );
                }
                self.event(
                    Some(&name),
                    EventKind::Normal,
                    "Created",
                    format!("Created container: {name}"),
                );
                self.event(
                    Some(&name),
                    EventKind::Normal,
                    "Started",
                    format!("Started container {name}"),
                );
                self.slots[i].started(attempt, started);
                self.watch_exit(i, attempt, ctx);
                // Started while the pod (or, for a sidecar, its app containers) ended: stop it again.
                let ending = self.lifecycle == Lifecycle::Terminating
                    || self.failed.is_some()
                    || (self.finishing && self.slots[i].role == Role::Sidecar);
                if ending {
                    let deadline = self.deadline.unwrap_or_else(Instant::now);
                    self.stop_container(i, deadline, format!("Stopping container {name}"), ctx);
                } else {
                    self.after_start(i, attempt, Instant::now(), ctx);
                }
            }
            Err(e) if e.reason == "RunContainerError" => {
                // The shim ran and the container failed to start: that start counts, as in kubelet.
                self.event(
                    Some(&name),
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {}", e.message),
                );
                let exit = ExitRecord::start_error(e.message.clone());
                let id = crate::runtime::container_id(&self.uid, &name, attempt);
                self.slots[i].exited(Finished {
                    attempt,
                    id,
                    exit,
                    image_id: String::new(),
                    message: Some(e.message),
                });
                self.rt.release_rootfs(&self.uid, &name, attempt);
                self.decide_restart(i, ctx);
            }
            Err(e) => {
                let delay = self.slots[i]
                    .backoff
                    .next_delay(Duration::ZERO)
                    .max(Duration::from_secs(5));
                let reason = if e.reason == "ErrImagePull" && self.slots[i].next_attempt() > 0 {
                    "ImagePullBackOff"
                } else {
                    e.reason
                };
                self.event(
                    Some(&name),
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {}", e.message),
                );
                self.slots[i].failed_to_create(reason, e.message, Instant::now() + delay);
                ctx.run_later(delay, |act, ctx| act.reconcile(ctx));
            }
        }
        self.reconcile(ctx);
    }

    fn watch_exit(&mut self, i: usize, attempt: u32, ctx: &mut Context<Self>) {
        let rt = self.rt.clone();
        let uid = self.uid.clone();
        let name = self.slots[i].name.clone();
        ctx.spawn(
            async move { rt.wait(&uid, &name, attempt).await }
                .into_actor(self)
                .map(move |exit, act, ctx| act.on_exit(i, attempt, exit, ctx)),
        );
    }

    fn on_exit(&mut self, i: usize, attempt: u32, exit: ExitRecord, ctx: &mut Context<Self>) {
        let ContainerState::Running {
            attempt: running,
            started,
            ..
        } = &self.slots[i].state
        else {
            return;
        };
        if *running != attempt {
            return;
        }
        let name = self.slots[i].name.clone();
        let finished = Finished {
            attempt,
            id: started.id.clone(),
            image_id: started.image_id.clone(),
            message: self.rt.termination_message(&self.uid, &name, attempt),
            exit,
        };
        self.stop_probes(i);
        tracing::info!(
            "pod {}: container {name} exited with {} ({})",
            pod_desc(&self.pod),
            finished.exit.exit_code,
            finished.exit.reason
        );
        if finished.exit.reason == "OOMKilled" {
            self.event(
                Some(&name),
                EventKind::Warning,
                "OOMKilling",
                format!("Container {name} was OOM-killed"),
            );
        }
        self.rt.release_rootfs(&self.uid, &name, attempt);
        self.slots[i].exited(finished);
        if self.lifecycle != Lifecycle::Terminating {
            self.decide_restart(i, ctx);
        }
        self.reconcile(ctx);
    }

    /// Applies the restart policy to a container that just ended.
    fn decide_restart(&mut self, i: usize, ctx: &mut Context<Self>) {
        if !matches!(self.slots[i].state, ContainerState::Terminated(_)) {
            return;
        }
        if std::mem::take(&mut self.slots[i].definition_changed) && self.failed.is_none() && !self.finishing {
            self.slots[i].schedule_immediate_restart();
            return;
        }
        let ContainerState::Terminated(done) = &self.slots[i].state else {
            return;
        };
        let role = self.slots[i].role;
        if self.failed.is_some()
            || (self.finishing && role == Role::Sidecar)
            || !should_restart(role.restart_policy(&self.restart_policy()), done.exit.exit_code)
        {
            return;
        }
        let ran = match (done.exit.started_at.as_deref(), Some(done.exit.finished_at.as_str())) {
            (Some(s), Some(f)) => match (
                chrono::DateTime::parse_from_rfc3339(s),
                chrono::DateTime::parse_from_rfc3339(f),
            ) {
                (Ok(s), Ok(f)) => (f - s).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            },
            _ => Duration::ZERO,
        };
        let name = self.slots[i].name.clone();
        let delay = self.slots[i].schedule_restart(ran, &pod_desc(&self.pod));
        if !delay.is_zero() {
            self.event(
                Some(&name),
                EventKind::Warning,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    pod_desc(&self.pod)
                ),
            );
            ctx.run_later(delay, |act, ctx| act.reconcile(ctx));
        }
    }

    /// What probes and hooks of start `attempt` of slot `i` reach.
    fn target(&self, i: usize, attempt: u32) -> Option<probe::Target> {
        Some(probe::Target {
            uid: self.uid.clone(),
            container: self.spec_container(&self.slots[i].name)?,
            attempt,
            pod_ip: self.pod_ips.first().cloned(),
        })
    }

    /// Right after a start: the postStart hook, then probing. A failed hook
    /// kills the container, which then restarts per its policy.
    fn after_start(&mut self, i: usize, attempt: u32, since: Instant, ctx: &mut Context<Self>) {
        let name = self.slots[i].name.clone();
        let hook = self.spec_container(&name).and_then(|c| c.lifecycle?.post_start);
        let (Some(hook), Some(target)) = (hook, self.target(i, attempt)) else {
            self.start_probes(i, attempt, since, ctx);
            return;
        };
        let rt = self.rt.clone();
        let timeout = self.grace_period().max(Duration::from_secs(30));
        ctx.spawn(
            async move {
                let res = hooks::run(&rt, &hook, &target, timeout).await;
                (res, hooks::kind(&hook))
            }
            .into_actor(self)
            .map(move |(res, kind), act, ctx| {
                let still_running =
                    matches!(&act.slots[i].state, ContainerState::Running { attempt: a, .. } if *a == attempt);
                if !still_running
                    || act.lifecycle != Lifecycle::Active
                    || act.failed.is_some()
                    || act.slots[i].stop_deadline.is_some()
                {
                    return;
                }
                match res {
                    Ok(()) => {
                        act.start_probes(i, attempt, since, ctx);
                        act.reconcile(ctx);
                    }
                    Err(e) => {
                        act.event(
                            Some(&name),
                            EventKind::Warning,
                            "FailedPostStartHook",
                            format!(
                                "PostStartHook failed: {kind} lifecycle hook for Container {name:?} in Pod {:?} failed: {e}",
                                pod_desc(&act.pod)
                            ),
                        );
                        let deadline = Instant::now() + act.grace_period();
                        act.stop_container(i, deadline, "FailedPostStartHook".into(), ctx);
                    }
                }
            }),
        );
    }

    /// Starts the container's probe actors: the startup probe alone if there
    /// is one (liveness and readiness wait for it), else liveness and readiness.
    fn start_probes(&mut self, i: usize, attempt: u32, since: Instant, ctx: &mut Context<Self>) {
        let Some(spec) = self.spec_container(&self.slots[i].name) else {
            return;
        };
        if spec.startup_probe.is_some() {
            self.spawn_probe(i, attempt, ProbeKind::Startup, since, ctx);
        } else {
            self.startup_passed(i, attempt, since, ctx);
        }
    }

    fn startup_passed(&mut self, i: usize, attempt: u32, since: Instant, ctx: &mut Context<Self>) {
        let Some(spec) = self.spec_container(&self.slots[i].name) else {
            return;
        };
        let ready = spec.readiness_probe.is_none().then_some(true);
        self.slots[i].set_probe_state(attempt, Some(true), ready);
        for kind in [ProbeKind::Liveness, ProbeKind::Readiness] {
            if kind.of(&spec).is_some() {
                self.spawn_probe(i, attempt, kind, since, ctx);
            }
        }
    }

    fn spawn_probe(&mut self, i: usize, attempt: u32, kind: ProbeKind, since: Instant, ctx: &mut Context<Self>) {
        let Some(container) = self.spec_container(&self.slots[i].name) else {
            return;
        };
        let Some(probe) = kind.of(&container).cloned() else {
            return;
        };
        let spec = ProbeSpec {
            kind,
            probe,
            target: probe::Target {
                uid: self.uid.clone(),
                container,
                attempt,
                pod_ip: self.pod_ips.first().cloned(),
            },
            slot: i,
            container_started: since,
        };
        let actor = ProbeActor::new(
            spec,
            self.rt.clone(),
            self.events.clone(),
            self.pod.clone(),
            ctx.address().recipient(),
        );
        self.probes.entry(i).or_default().push((kind, actor.start()));
    }

    fn stop_probes(&mut self, i: usize) {
        for (_, p) in self.probes.remove(&i).into_iter().flatten() {
            p.do_send(StopProbe);
        }
    }

    /// Stops every probe of container `i` but readiness, which kubelet keeps
    /// running while a pod terminates (a container shutting down may turn unready).
    fn stop_probes_but_readiness(&mut self, i: usize) {
        let Some(list) = self.probes.remove(&i) else { return };
        let (keep, stop): (Vec<_>, Vec<_>) = list.into_iter().partition(|(k, _)| *k == ProbeKind::Readiness);
        for (_, p) in stop {
            p.do_send(StopProbe);
        }
        if !keep.is_empty() {
            self.probes.insert(i, keep);
        }
    }

    /// A liveness or startup probe failed: kill the container (it restarts per policy).
    fn kill_unhealthy(&mut self, i: usize, kind: ProbeKind, ctx: &mut Context<Self>) {
        let name = self.slots[i].name.clone();
        self.stop_probes(i);
        let probe_grace = self
            .spec_container(&name)
            .and_then(|c| kind.of(&c)?.termination_grace_period_seconds);
        let grace = probe_grace.map_or_else(|| self.grace_period(), |g| Duration::from_secs(g.max(0) as u64));
        let why = format!(
            "Container {name} failed {} probe, will be restarted",
            kind.label().to_ascii_lowercase()
        );
        self.stop_container(i, Instant::now() + grace, why, ctx);
    }

    fn grace_period(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    fn begin_termination(&mut self, ctx: &mut Context<Self>) {
        self.lifecycle = Lifecycle::Terminating;
        let deadline = Instant::now() + self.grace_period();
        self.deadline = Some(deadline);
        for i in 0..self.slots.len() {
            self.stop_for_good(i, deadline, ctx);
        }
        self.write_status(ctx);
    }

    /// Ends container `i` without a restart: probes stop, a running container
    /// is stopped by `deadline`, a waiting one is shown as it last ended.
    fn stop_for_good(&mut self, i: usize, deadline: Instant, ctx: &mut Context<Self>) {
        if self.lifecycle == Lifecycle::Terminating {
            self.stop_probes_but_readiness(i);
        } else {
            self.stop_probes(i);
        }
        match self.slots[i].state {
            ContainerState::Running { .. } => {
                let name = self.slots[i].name.clone();
                self.stop_container(i, deadline, format!("Stopping container {name}"), ctx);
            }
            ContainerState::Waiting { .. } => {
                if let Some(last) = self.slots[i].last.take() {
                    self.slots[i].state = ContainerState::Terminated(last);
                }
            }
            _ => {}
        }
    }

    /// preStop hook, then the stop signal, then SIGKILL at `deadline`.
    /// A container already being stopped is not stopped twice (one preStop,
    /// one Killing event); a later request with an earlier deadline only
    /// brings its SIGKILL forward, as a delete with a shorter grace period does.
    fn stop_container(&mut self, i: usize, deadline: Instant, why: String, ctx: &mut Context<Self>) {
        let ContainerState::Running { attempt, started, .. } = &self.slots[i].state else {
            return;
        };
        let attempt = *attempt;
        if let Some(due) = self.slots[i].stop_deadline {
            if deadline < due {
                self.slots[i].stop_deadline = Some(deadline);
                let rt = self.rt.clone();
                let uid = self.uid.clone();
                let name = self.slots[i].name.clone();
                ctx.spawn(
                    async move {
                        tokio::time::sleep_until(deadline.into()).await;
                        let _ = rt.kill(&uid, &name, attempt, libc::SIGKILL).await;
                    }
                    .into_actor(self),
                );
            }
            return;
        }
        let stop_signal = started
            .stop_signal
            .as_deref()
            .and_then(parse_signal)
            .unwrap_or(libc::SIGTERM);
        self.slots[i].stop_deadline = Some(deadline);
        let name = self.slots[i].name.clone();
        let pre_stop = self
            .spec_container(&name)
            .and_then(|c| c.lifecycle?.pre_stop)
            .zip(self.target(i, attempt));
        self.event(Some(&name), EventKind::Normal, "Killing", why);
        let rt = self.rt.clone();
        let uid = self.uid.clone();
        let events = self.events.clone();
        let pod = self.pod.clone();
        ctx.spawn(
            async move {
                let left = deadline.saturating_duration_since(Instant::now());
                // The hook's time counts against the grace period.
                if let Some((hook, target)) = pre_stop.filter(|_| !left.is_zero()) {
                    if let Err(e) = hooks::run(&rt, &hook, &target, left).await {
                        events.pod_event(
                            &pod,
                            Some(&name),
                            EventKind::Warning,
                            "FailedPreStopHook",
                            format!(
                                "PreStopHook failed: {} lifecycle hook for Container {name:?} failed: {e}",
                                hooks::kind(&hook)
                            ),
                        );
                    }
                }
                if deadline > Instant::now() {
                    let _ = rt.kill(&uid, &name, attempt, stop_signal).await;
                    tokio::time::sleep_until(deadline.into()).await;
                }
                let _ = rt.kill(&uid, &name, attempt, libc::SIGKILL).await;
            }
            .into_actor(self),
        );
    }

    fn finish_removal(&mut self, ctx: &mut Context<Self>) {
        self.lifecycle = Lifecycle::Removed;
        let rt = self.rt.clone();
        let store = self.store.clone();
        let pod = self.pod.clone();
        let uid = self.uid.clone();
        let events = self.events.clone();
        ctx.wait(
            async move {
                let pod_dir = rt.paths.pod_dir(&uid);
                for attempt in 0..3 {
                    match rt.volumes.unpublish(&pod, &pod_dir).await {
                        Ok(()) => break,
                        Err(e) => {
                            events.pod_event(&pod, None, EventKind::Warning, "FailedUnmount", e.message.clone());
                            if attempt < 2 {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
                let p = pod.clone();
                let _ = tokio::task::spawn_blocking(move || rt.remove_pod(&p)).await;
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let pre = Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                };
                match store.delete(&kinds::pod().resource(), &ns, &name, pre).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => tracing::warn!("removing pod {ns}/{name}: {e}"),
                }
                events.forget(&uid);
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    fn write_status(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.lifecycle, Lifecycle::Removed | Lifecycle::Preparing) {
            return;
        }
        if let Some(r) = &self.rejection {
            let status = PodStatus {
                phase: Some("Failed".into()),
                reason: Some(r.reason.clone()),
                message: Some(r.message.clone()),
                qos_class: Some(peapod_core::resources::qos_class(&self.pod.spec.clone().unwrap_or_default()).into()),
                start_time: self.pod.status.as_ref().and_then(|s| s.start_time.clone()),
                ..Default::default()
            };
            self.write_status_value(status, ctx);
            return;
        }
        let sandbox_ready = matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Mounting);
        let net = status::Addresses {
            pod_ips: &self.pod_ips,
            host_ip: &self.rt.config.node_ip,
        };
        let mut st = status::build(
            &self.pod,
            &self.slots,
            sandbox_ready,
            self.start_time.as_deref(),
            self.initialized,
            &net,
        );
        // Failed once every container is down, as kubelet reports an eviction.
        if let Some(e) = self
            .failed
            .as_ref()
            .filter(|_| !self.slots.iter().any(ContainerSlot::is_active))
        {
            st.phase = Some("Failed".into());
            st.reason = Some(e.reason.clone());
            st.message = Some(e.message.clone());
        }
        status::keep_transition_times(&mut st, self.pod.status.as_ref());
        if self.lifecycle == Lifecycle::Finished
            && matches!(self.stored_phase().as_deref(), Some("Failed"))
            && self.pod.status.as_ref().and_then(|s| s.reason.as_ref()).is_some()
        {
            return; // a rejected pod keeps its rejection
        }
        self.write_status_value(st, ctx);
    }

    fn write_status_value(&mut self, st: PodStatus, ctx: &mut Context<Self>) {
        let same = |old: Option<&PodStatus>| old.is_some_and(|o| status::same_ignoring_times(o, &st));
        if same(self.last_written.as_ref()) || same(self.pod.status.as_ref()) {
            return;
        }
        if self.writing_status {
            self.status_dirty = true;
            return;
        }
        self.writing_status = true;
        let store = self.store.clone();
        let pod = self.pod.clone();
        let st2 = st.clone();
        ctx.spawn(
            async move {
                let resource = kinds::pod().resource();
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                for _ in 0..5 {
                    let cur = match store.get(&resource, &ns, &name).await {
                        Ok(cur) => cur,
                        Err(StoreError::NotFound { .. }) => return true,
                        Err(_) => return false,
                    };
                    if object::uid(&cur) != pod.metadata.uid.as_deref().unwrap_or("") {
                        return true;
                    }
                    let mut next = cur.clone();
                    next["status"] = object::to_value(&st2);
                    match store.update(&resource, next).await {
                        Ok(_) | Err(StoreError::NotFound { .. }) => return true,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => {
                            tracing::warn!("writing status of pod {ns}/{name}: {e}");
                            return false;
                        }
                    }
                }
                false
            }
            .into_actor(self)
            .map(move |written, act, ctx| {
                act.writing_status = false;
                // Only a status that landed counts as written; a failed write is retried.
                if written {
                    act.last_written = Some(st);
                } else {
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.write_status(ctx));
                }
                if std::mem::take(&mut act.status_dirty) {
                    act.write_status(ctx);
                }
            }),
        );
    }
}

fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

impl Actor for PodActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.rejection.clone() {
            Some(r) => self.reject(&r.reason, r.message, ctx),
            None => self.recover(ctx),
        }
    }
}

impl Handler<ProbeChanged> for PodActor {
    type Result = ();

    fn handle(&mut self, msg: ProbeChanged, ctx: &mut Context<Self>) {
        let terminating_readiness = self.lifecycle == Lifecycle::Terminating && msg.kind == ProbeKind::Readiness;
        if self.lifecycle != Lifecycle::Active && !terminating_readiness {
            return;
        }
        let ContainerState::Running { attempt, since, .. } = &self.slots[msg.slot].state else {
            return;
        };
        if *attempt != msg.attempt {
            return;
        }
        if terminating_readiness {
            self.slots[msg.slot].set_probe_state(msg.attempt, None, Some(msg.success));
            self.write_status(ctx);
            return;
        }
        let since = *since;
        match (msg.kind, msg.success) {
            (ProbeKind::Startup, true) => self.startup_passed(msg.slot, msg.attempt, since, ctx),
            (ProbeKind::Readiness, ready) => {
                self.slots[msg.slot].set_probe_state(msg.attempt, None, Some(ready));
            }
            (ProbeKind::Liveness, true) => return,
            (kind, false) => self.kill_unhealthy(msg.slot, kind, ctx),
        }
        // A sidecar that became started lets the next init container run.
        self.reconcile(ctx);
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
        let old_grace = self.pod.metadata.deletion_grace_period_seconds;
        self.pod = msg.0;
        if self.lifecycle == Lifecycle::Terminating {
            let new_grace = self.pod.metadata.deletion_grace_period_seconds;
            if let (Some(new), Some(old)) = (new_grace, old_grace) {
                if new < old {
                    // A second delete with a shorter grace period: kill sooner.
                    let deadline = Instant::now() + Duration::from_secs(new.max(0) as u64);
                    if self.deadline.is_none_or(|d| deadline < d) {
                        self.deadline = Some(deadline);
                        for i in 0..self.slots.len() {
                            let name = self.slots[i].name.clone();
                            self.stop_container(i, deadline, format!("Stopping container {name}"), ctx);
                        }
                    }
                }
            }
        }
        self.restart_changed_containers(ctx);
        if deadline_changed {
            self.check_active_deadline(ctx);
        }
        self.reconcile(ctx);
    }
}

/// The monotonic instant of an RFC 3339 time in the past (now, if unreadable).
fn instant_of(rfc3339: &str) -> Instant {
    let ago = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .and_then(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).to_std().ok())
        .unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// RFC 3339 with second precision, as the shim writes times.
fn fmt_time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(super::parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(super::parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(super::parse_signal("9"), Some(9));
        assert_eq!(super::parse_signal("NOPE"), None);
    }
}
