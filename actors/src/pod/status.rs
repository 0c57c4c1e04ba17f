//! Pod status from the containers' states, with kubelet's phase rules.

use super::{Lifecycle, PodActor};
use crate::container::{ContainerSlot, ContainerState, Finished, Role};
use actix::prelude::*;
use k8s_openapi::api::core::v1::{
    ContainerState as KState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::StoreError;
use std::time::Duration;

fn time(s: &str) -> Option<Time> {
    s.parse::<k8s_openapi::jiff::Timestamp>().ok().map(Time)
}

fn terminated(f: &Finished) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: f.exit.exit_code,
        signal: f.exit.signal,
        reason: Some(f.exit.reason.clone()),
        message: f.message.clone().or(f.exit.message.clone()),
        started_at: f.exit.started_at.as_deref().and_then(time),
        finished_at: time(&f.exit.finished_at),
        container_id: Some(format!("peapod://{}", f.id)),
    }
}

/// The phase by kubelet's `getPhase`: Pending until initialized (Failed if
/// an init container failed for good); then from the app containers, where a
/// crash-looping container counts as stopped and Succeeded/Failed come only
/// once nothing will restart.
pub fn phase(policy: &str, slots: &[ContainerSlot], initialized: bool) -> &'static str {
    if !initialized {
        let failed = slots.iter().any(|s| {
            s.role == Role::Init && matches!(&s.state, ContainerState::Terminated(f) if f.exit.exit_code != 0)
        });
        return if failed { "Failed" } else { "Pending" };
    }
    let slots: Vec<&ContainerSlot> = slots.iter().filter(|s| s.role == Role::App).collect();
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in &slots {
        match &s.state {
            ContainerState::Running { .. } => running += 1,
            ContainerState::Terminated(f) => {
                stopped += 1;
                if f.exit.exit_code == 0 {
                    succeeded += 1;
                }
            }
            ContainerState::Waiting { .. } | ContainerState::Starting { .. } => {
                if s.last.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        // Containers waiting to restart are "stopped" but the pod is not over.
        let restarting = slots.iter().any(|s| !matches!(s.state, ContainerState::Terminated(_)));
        if policy == "Always" || restarting {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        return "Failed";
    }
    "Pending"
}

/// The pod's and the node's addresses.
pub struct Addresses<'a> {
    /// From the sandbox (CNI), IPv4 first.
    pub pod_ips: &'a [String],
    /// The node's IP.
    pub host_ip: &'a str,
}

/// One container's status.
fn container_status(s: &ContainerSlot, image: String, initialized: bool) -> ContainerStatus {
    let waiting = |reason: &str, message: Option<String>| KState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    };
    let (state, ready, started, id, image_id) = match &s.state {
        ContainerState::Waiting { reason, message, .. } => {
            // Nothing of the pod runs yet beyond its init containers.
            let reason = if !initialized && s.latest_attempt.is_none() && reason == "ContainerCreating" {
                "PodInitializing"
            } else {
                reason
            };
            (
                waiting(reason, message.clone()),
                false,
                false,
                s.last.as_ref().map(|l| l.id.clone()),
                s.last.as_ref().map(|l| l.image_id.clone()),
            )
        }
        ContainerState::Starting { .. } => (waiting("ContainerCreating", None), false, false, None, None),
        ContainerState::Running {
            started,
            ready,
            startup_passed,
            ..
        } => (
            KState {
                running: Some(ContainerStateRunning {
                    started_at: time(&started.started_at),
                }),
                ..Default::default()
            },
            *ready,
            *startup_passed,
            Some(started.id.clone()),
            Some(started.image_id.clone()),
        ),
        ContainerState::Terminated(f) => (
            KState {
                terminated: Some(terminated(f)),
                ..Default::default()
            },
            false,
            false,
            Some(f.id.clone()),
            Some(f.image_id.clone()),
        ),
    };
    let last_state = s.last.as_ref().map(|l| KState {
        terminated: Some(terminated(l)),
        ..Default::default()
    });
    // What runs is reported, as kubelet reports the running container's image.
    let image = match &s.state {
        ContainerState::Running { started, .. } if !started.image.is_empty() => started.image.clone(),
        _ => image,
    };
    ContainerStatus {
        name: s.name.clone(),
        image,
        image_id: image_id.unwrap_or_default(),
        container_id: id.map(|i| format!("peapod://{i}")),
        ready,
        started: Some(started),
        restart_count: s.restart_count() as i32,
        state: Some(state),
        last_state: last_state.or(Some(KState::default())),
        ..Default::default()
    }
}

/// Builds the status the pod actor writes.
pub fn build(
    pod: &Pod,
    slots: &[ContainerSlot],
    sandbox_ready: bool,
    start_time: Option<&str>,
    initialized: bool,
    net: &Addresses<'_>,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let mut phase = phase(policy, slots, initialized);
    if (phase == "Succeeded" || phase == "Failed") && slots.iter().any(ContainerSlot::is_active) {
        // Sidecars are still being stopped.
        phase = "Running";
    }
    let image_of = |name: &str| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    let all: Vec<(Role, ContainerStatus)> = slots
        .iter()
        .map(|s| (s.role, container_status(s, image_of(&s.name), initialized)))
        .collect();
    // Sidecars count for readiness beside the app containers.
    let all_ready =
        all.iter().any(|(r, _)| *r == Role::App) && all.iter().filter(|(r, _)| *r != Role::Init).all(|(_, c)| c.ready);
    let (apps, inits): (Vec<_>, Vec<_>) = all.into_iter().partition(|(r, _)| *r == Role::App);
    let statuses: Vec<ContainerStatus> = apps.into_iter().map(|(_, c)| c).collect();
    let init_statuses: Vec<ContainerStatus> = inits.into_iter().map(|(_, c)| c).collect();
    let now = Some(crate::runtime::protocol::now_time());
    let cond = |t: &str, ok: bool, reason: Option<&str>| PodCondition {
        type_: t.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: now.clone(),
        reason: reason.map(str::to_string),
        ..Default::default()
    };
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        Some("PodCompleted")
    } else if all_ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let conditions = vec![
        cond("PodReadyToStartContainers", sandbox_ready, None),
        cond(
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
        ),
        cond("Ready", all_ready, not_ready_reason),
        cond("ContainersReady", all_ready, not_ready_reason),
        cond("PodScheduled", true, None),
    ];
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        start_time: start_time.and_then(time),
        qos_class: Some(peapod_core::resources::qos_class(&spec).into()),
        host_ip: Some(net.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: net.host_ip.to_string(),
        }]),
        pod_ip: net.pod_ips.first().cloned(),
        pod_ips: (!net.pod_ips.is_empty()).then(|| net.pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        ..Default::default()
    }
}

/// Copies condition transition times from `old` where the status did not change,
/// so rewriting the status does not make every condition look new.
pub fn keep_transition_times(new: &mut PodStatus, old: Option<&PodStatus>) {
    let Some(old) = old.and_then(|o| o.conditions.as_ref()) else {
        return;
    };
    for c in new.conditions.iter_mut().flatten() {
        if let Some(o) = old.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

/// Whether two statuses say the same thing once condition transition times
/// are set aside: rewriting such a status would only bump the resourceVersion.
pub fn same_ignoring_times(a: &PodStatus, b: &PodStatus) -> bool {
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = None;
            c.last_probe_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// RFC 3339 with second precision, as the shim writes times.
pub fn fmt_time(t: &Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl PodActor {
    /// Writes the pod's status when it says something new.
    pub(super) fn write_status(&mut self, ctx: &mut Context<Self>) {
        if matches!(
            self.lifecycle,
            Lifecycle::Removing | Lifecycle::Preparing | Lifecycle::Recovering
        ) {
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
        let net = Addresses {
            pod_ips: &self.pod_ips,
            host_ip: &self.rt.config.node_ip,
        };
        // Containers waiting for volumes say why, as kubelet shows a mount failure.
        let mut slots = self.slots.clone();
        if let Some(m) = &self.mount_error {
            for slot in &mut slots {
                if let ContainerState::Waiting { reason, message, .. } = &mut slot.state {
                    if reason == "ContainerCreating" && message.is_none() {
                        *message = Some(m.clone());
                    }
                }
            }
        }
        let mut st = build(
            &self.pod,
            &slots,
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
        keep_transition_times(&mut st, self.pod.status.as_ref());
        self.measure_start(&st);
        if self.lifecycle == Lifecycle::Finished
            && matches!(self.stored_phase().as_deref(), Some("Failed"))
            && self.pod.status.as_ref().and_then(|s| s.reason.as_ref()).is_some()
        {
            return; // a rejected pod keeps its rejection
        }
        self.write_status_value(st, ctx);
    }

    /// The first Running status of a pod this actor saw pending: observed as
    /// kubelet's pod start latency, from the pod's creation (image pulls and
    /// init containers are not subtracted: images are local, and an init
    /// container's run is part of what the user waits for).
    fn measure_start(&mut self, st: &PodStatus) {
        if self.start_measured || st.phase.as_deref() != Some("Running") {
            return;
        }
        self.start_measured = true;
        if !matches!(self.stored_phase().as_deref(), None | Some("Pending")) {
            return;
        }
        let Some(created) = self.pod.metadata.creation_timestamp.as_ref() else {
            return;
        };
        let millis = chrono::Utc::now().timestamp_millis() - created.0.as_millisecond();
        let seconds = millis.max(0) as f64 / 1000.0;
        let m = peapod_metrics::metrics();
        m.pod_start_duration.observe(seconds);
        m.pod_start_sli_duration.observe(seconds);
    }

    fn write_status_value(&mut self, st: PodStatus, ctx: &mut Context<Self>) {
        let same = |old: Option<&PodStatus>| old.is_some_and(|o| same_ignoring_times(o, &st));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::protocol::ExitRecord;

    fn done(code: i32) -> ContainerSlot {
        let mut s = ContainerSlot::new("c".into(), Role::App);
        s.exited(Finished {
            attempt: 0,
            id: "x".into(),
            exit: ExitRecord::from_wait(Some(code), None, false, None),
            image_id: String::new(),
            message: None,
        });
        s
    }

    #[test]
    fn phases_follow_kubelet() {
        assert_eq!(
            phase("Always", &[ContainerSlot::new("c".into(), Role::App)], true),
            "Pending"
        );
        assert_eq!(phase("Never", &[done(0)], true), "Succeeded");
        assert_eq!(phase("Never", &[done(3)], true), "Failed");
        assert_eq!(phase("OnFailure", &[done(0), done(0)], true), "Succeeded");
        assert_eq!(phase("Always", &[done(0)], true), "Running");
        let mut looping = done(1);
        looping.schedule_restart(std::time::Duration::from_secs(1), "p_ns(u)");
        looping.schedule_restart(std::time::Duration::from_secs(1), "p_ns(u)");
        assert_eq!(phase("OnFailure", &[looping], true), "Running");
    }

    #[test]
    fn init_containers_gate_the_phase() {
        let mut init = done(1);
        init.role = Role::Init;
        let app = ContainerSlot::new("a".into(), Role::App);
        // An init container that failed for good fails the pod (restartPolicy Never).
        assert_eq!(phase("Never", &[init.clone(), app.clone()], false), "Failed");
        let mut ok = done(0);
        ok.role = Role::Init;
        assert_eq!(phase("Never", &[ok.clone(), app.clone()], false), "Pending");
        // Once initialized, only app containers decide; a finished sidecar does not count.
        let mut side = done(0);
        side.role = Role::Sidecar;
        assert_eq!(phase("Never", &[ok, side, done(0)], true), "Succeeded");
    }
}
