//! Pod status from the containers' states, with kubelet's phase rules.

use super::container::{ContainerSlot, ContainerState, Finished, Role};
use k8s_openapi::api::core::v1::{
    ContainerState as KState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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
