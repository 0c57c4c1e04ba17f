//! The container's probes: one supervised `ProbeActor` child per probe of
//! the running start, and what their results mean for the container.

use super::{ContainerActor, ContainerState, Run};
use crate::probe::{self, ProbeActor, ProbeChanged, ProbeKind, ProbeSpec};
use crate::supervisor::{ChildExited, ChildSpec, Restart, Verdict};
use actix::prelude::*;
use tokio::time::Instant;

impl ContainerActor {
    /// What probes and hooks of start `attempt` reach.
    pub(super) fn target(&self, attempt: u32) -> Option<probe::Target> {
        Some(probe::Target {
            uid: self.uid(),
            container: self.spec()?,
            attempt,
            pod_ip: self.orders.pod_ips.first().cloned(),
        })
    }

    /// Probing of a start found running when this actor (re)started: no
    /// postStart again; while the pod terminates only readiness is probed.
    pub(super) fn after_adoption(&mut self, attempt: u32, since: Instant, ctx: &mut Context<Self>) {
        if self.probes.keys().next().is_some() {
            return;
        }
        match self.orders.run {
            Run::Run => self.start_probes(attempt, since, ctx),
            Run::Stop { terminating: true, .. } if self.spec().is_some_and(|c| c.readiness_probe.is_some()) => {
                self.spawn_probe(attempt, ProbeKind::Readiness, since, ctx);
            }
            _ => {}
        }
    }

    /// Starts the probe actors: the startup probe alone if there is one
    /// (liveness and readiness wait for it), else liveness and readiness.
    pub(super) fn start_probes(&mut self, attempt: u32, since: Instant, ctx: &mut Context<Self>) {
        let Some(spec) = self.spec() else {
            return;
        };
        if spec.startup_probe.is_some() {
            self.spawn_probe(attempt, ProbeKind::Startup, since, ctx);
        } else {
            self.startup_passed(attempt, since, ctx);
        }
    }

    fn startup_passed(&mut self, attempt: u32, since: Instant, ctx: &mut Context<Self>) {
        let Some(spec) = self.spec() else {
            return;
        };
        let ready = spec.readiness_probe.is_none().then_some(true);
        self.slot.set_probe_state(attempt, Some(true), ready);
        for kind in [ProbeKind::Liveness, ProbeKind::Readiness] {
            if kind.of(&spec).is_some() {
                self.spawn_probe(attempt, kind, since, ctx);
            }
        }
    }

    fn spawn_probe(&mut self, attempt: u32, kind: ProbeKind, since: Instant, ctx: &mut Context<Self>) {
        self.spawn_probe_knowing(attempt, kind, since, None, ctx);
    }

    fn spawn_probe_knowing(
        &mut self,
        attempt: u32,
        kind: ProbeKind,
        since: Instant,
        known: Option<bool>,
        ctx: &mut Context<Self>,
    ) {
        let Some(container) = self.spec() else {
            return;
        };
        let Some(probe) = kind.of(&container).cloned() else {
            return;
        };
        let spec = ProbeSpec {
            kind,
            probe,
            target: probe::Target {
                uid: self.uid(),
                container,
                attempt,
                pod_ip: self.orders.pod_ips.first().cloned(),
            },
            container_started: since,
            known,
        };
        let restarts = self.probes.restarts(&kind);
        let node = self
            .node
            .child("ProbeActor", kind.label().to_ascii_lowercase(), "transient", restarts);
        let rt = self.rt.clone();
        let events = self.events.clone();
        let pod = self.orders.pod.clone();
        let report = ctx.address().recipient();
        let child = ChildSpec {
            restart: Restart::Transient,
            intensity: self.intensity,
        };
        self.probes.start(ctx.address(), kind, child, None, move |_| {
            ProbeActor::new(spec, rt, events, pod, report, node)
        });
    }

    /// Ends every probe of the container.
    pub(super) fn stop_probes(&mut self) {
        self.probes.clear();
    }

    /// Ends every probe but readiness, which kubelet keeps running while a
    /// pod terminates (a container shutting down may turn unready).
    pub(super) fn stop_probes_but_readiness(&mut self) {
        for kind in [ProbeKind::Startup, ProbeKind::Liveness] {
            self.probes.remove(&kind);
        }
    }
}

impl Handler<ProbeChanged> for ContainerActor {
    type Result = ();

    fn handle(&mut self, msg: ProbeChanged, ctx: &mut Context<Self>) {
        let ContainerState::Running { attempt, since, .. } = &self.slot.state else {
            return;
        };
        if *attempt != msg.attempt {
            return;
        }
        let since = *since;
        match self.orders.run {
            Run::Stop { .. } => {
                // Ending: only readiness still counts.
                if msg.kind == ProbeKind::Readiness {
                    self.slot.set_probe_state(msg.attempt, None, Some(msg.success));
                }
            }
            Run::Hold | Run::Run => match (msg.kind, msg.success) {
                (ProbeKind::Startup, true) => self.startup_passed(msg.attempt, since, ctx),
                (ProbeKind::Readiness, ready) => {
                    self.slot.set_probe_state(msg.attempt, None, Some(ready));
                }
                (ProbeKind::Liveness, true) => return,
                (kind, false) => self.kill_unhealthy(kind, ctx),
            },
        }
        self.report();
    }
}

impl Handler<ChildExited<ProbeKind>> for ContainerActor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited<ProbeKind>, ctx: &mut Context<Self>) {
        match self.probes.exited(&msg) {
            Verdict::Stale | Verdict::Done => {}
            Verdict::Restart { restarts } => {
                tracing::warn!(
                    "pod {}: {} probe of {} crashed ({}); restarting it (restart {restarts})",
                    self.desc(),
                    msg.kind_label(),
                    self.slot.name,
                    crash_text(&msg.exit)
                );
                if let ContainerState::Running {
                    attempt,
                    since,
                    ready,
                    startup_passed,
                    ..
                } = self.slot.state
                {
                    // The new probe goes on from what the container shows now.
                    let known = match msg.key {
                        ProbeKind::Readiness => Some(ready),
                        ProbeKind::Liveness => Some(true),
                        ProbeKind::Startup => startup_passed.then_some(true),
                    };
                    self.spawn_probe_knowing(attempt, msg.key, since, known, ctx);
                }
            }
            Verdict::GiveUp { crashes } => crate::supervisor::escalate(format!(
                "{} probe of container {} crashed {crashes} times within {:?} (last: {})",
                msg.kind_label(),
                self.slot.name,
                self.intensity.period,
                crash_text(&msg.exit)
            )),
        }
    }
}

fn crash_text(e: &crate::supervisor::Exit) -> String {
    match e {
        crate::supervisor::Exit::Normal => "ended".into(),
        crate::supervisor::Exit::Crashed(t) => t.clone(),
    }
}

impl ChildExited<ProbeKind> {
    fn kind_label(&self) -> &'static str {
        self.key.label()
    }
}
