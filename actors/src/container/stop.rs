//! Stopping the running start: preStop (once per start, even across daemon
//! restarts), the stop signal, and SIGKILL at the deadline, repeated until
//! the exit is seen. A kill that could not be delivered is never taken for
//! one that was.

use super::{ContainerActor, Stopping};
use crate::events::EventKind;
use crate::hooks;
use crate::probe::ProbeKind;
use actix::prelude::*;
use std::time::Duration;
use tokio::time::Instant;

/// How often an undelivered signal is sent again.
const RESEND: Duration = Duration::from_secs(1);

/// A signal by name (`SIGQUIT`, `quit`) or number, as images give their StopSignal.
pub fn parse_signal(s: &str) -> Option<i32> {
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

impl ContainerActor {
    /// Stops the running start by `deadline`. A container already being
    /// stopped is not stopped twice (one preStop, one Killing event); a later
    /// request with an earlier deadline brings its SIGKILL forward, as a
    /// delete with a shorter grace period does.
    pub(super) fn stop(&mut self, deadline: Instant, why: String, ctx: &mut Context<Self>) {
        let super::ContainerState::Running { attempt, started, .. } = &self.slot.state else {
            return;
        };
        let attempt = *attempt;
        let rt = self.rt.clone();
        let uid = self.uid();
        let name = self.slot.name.clone();
        if let Some(s) = self.stopping.as_mut().filter(|s| s.attempt == attempt) {
            if deadline < s.deadline {
                s.deadline = deadline;
                let h = ctx.spawn(
                    async move {
                        tokio::time::sleep_until(deadline).await;
                        kill_until_gone(&rt, &uid, &name, attempt).await;
                    }
                    .into_actor(self),
                );
                if let Some(s) = self.stopping.as_mut() {
                    s.handles.push(h);
                }
            }
            return;
        }
        let stop_signal = started
            .stop_signal
            .as_deref()
            .and_then(parse_signal)
            .unwrap_or(libc::SIGTERM);
        let pre_stop = self
            .spec()
            .and_then(|c| c.lifecycle?.pre_stop)
            .zip(self.target(attempt));
        self.event(EventKind::Normal, "Killing", why);
        let events = self.events.clone();
        let pod = self.orders.pod.clone();
        let desc = format!("{}/{}", self.desc(), name);
        let h = ctx.spawn(
            async move {
                // Marked before preStop runs, so a daemon restarted meanwhile does not run it again.
                let first = rt.begin_stop(&uid, &name, attempt).await;
                crate::faults::point("container.prestop-started", &desc);
                let left = deadline.saturating_duration_since(Instant::now());
                // The hook's time counts against the grace period.
                if let Some((hook, target)) = pre_stop.filter(|_| first && !left.is_zero()) {
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
                    crate::faults::point("container.prestop-done", &desc);
                }
                while Instant::now() < deadline {
                    match rt.kill(&uid, &name, attempt, stop_signal).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!("container {name}: stop signal not delivered ({e}); trying again");
                            tokio::time::sleep(RESEND.min(deadline.saturating_duration_since(Instant::now()))).await;
                        }
                    }
                }
                tokio::time::sleep_until(deadline).await;
                kill_until_gone(&rt, &uid, &name, attempt).await;
            }
            .into_actor(self),
        );
        self.stopping = Some(Stopping {
            attempt,
            deadline,
            handles: vec![h],
        });
        self.report();
    }

    /// A liveness or startup probe failed: kill the container (it restarts per policy).
    pub(super) fn kill_unhealthy(&mut self, kind: ProbeKind, ctx: &mut Context<Self>) {
        let name = self.slot.name.clone();
        self.stop_probes();
        let probe_grace = self.spec().and_then(|c| kind.of(&c)?.termination_grace_period_seconds);
        let grace = probe_grace.map_or_else(|| self.grace_period(), crate::clock::secs);
        let why = format!(
            "Container {name} failed {} probe, will be restarted",
            kind.label().to_ascii_lowercase()
        );
        self.stop(crate::clock::after(grace), why, ctx);
    }
}

/// SIGKILL, again every second, until the exit arrives (the caller's future
/// is cancelled then) or the shim is gone.
async fn kill_until_gone(rt: &crate::runtime::Runtime, uid: &str, name: &str, attempt: u32) {
    loop {
        if let Err(e) = rt.kill(uid, name, attempt, libc::SIGKILL).await {
            tracing::debug!("container {name}: SIGKILL not delivered ({e}); trying again");
        }
        tokio::time::sleep(RESEND).await;
    }
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
