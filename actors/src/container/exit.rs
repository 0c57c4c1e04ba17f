//! A start ended: record it, then let the restart type and CrashLoopBackOff
//! decide whether and when the next one comes.

use super::{ContainerActor, ContainerState, Finished};
use crate::events::EventKind;
use crate::runtime::protocol::ExitRecord;
use actix::prelude::*;
use std::time::Duration;

impl ContainerActor {
    /// Waits (off the actor) for start `attempt` to end.
    pub(super) fn watch_exit(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        let rt = self.rt.clone();
        let uid = self.uid();
        let name = self.slot.name.clone();
        ctx.spawn(
            async move { rt.wait(&uid, &name, attempt).await }
                .into_actor(self)
                .map(move |exit, act, ctx| act.on_exit(attempt, exit, ctx)),
        );
    }

    fn on_exit(&mut self, attempt: u32, exit: ExitRecord, ctx: &mut Context<Self>) {
        crate::faults::point("container.exit", &format!("{}/{}", self.desc(), self.slot.name));
        if !self.is_running(attempt) {
            return;
        }
        // The end is published together with its termination message, as
        // kubelet does: a client that sees `terminated` also sees the message.
        // Reading it is file work: off the actor.
        let rt = self.rt.clone();
        let uid = self.uid();
        let name = self.slot.name.clone();
        ctx.spawn(
            async move { rt.read_termination_message(&uid, &name, attempt).await }
                .into_actor(self)
                .map(move |message, act, ctx| act.exited(attempt, exit, message, ctx)),
        );
    }

    fn exited(&mut self, attempt: u32, exit: ExitRecord, message: Option<String>, ctx: &mut Context<Self>) {
        let ContainerState::Running { started, .. } = &self.slot.state else {
            return;
        };
        if !self.is_running(attempt) {
            return;
        }
        let name = self.slot.name.clone();
        let finished = Finished {
            attempt,
            id: started.id.clone(),
            image_id: started.image_id.clone(),
            message,
            exit,
        };
        if let Some(s) = self.stopping.take() {
            for h in s.handles {
                ctx.cancel_future(h);
            }
        }
        self.stop_probes();
        tracing::info!(
            "pod {}: container {name} exited with {} ({})",
            self.desc(),
            finished.exit.exit_code,
            finished.exit.reason
        );
        if finished.exit.reason == "OOMKilled" {
            peapod_metrics::inventory::container_oom(&self.uid(), &name);
            self.event(
                EventKind::Warning,
                "OOMKilling",
                format!("Container {name} was OOM-killed"),
            );
        }
        self.slot.exited(finished);
        self.exit_pending = true;
        // The rootfs cleanup is file work too, and nothing waits for it.
        let rt = self.rt.clone();
        let uid = self.uid();
        ctx.spawn(async move { rt.release_attempt(&uid, &name, attempt).await }.into_actor(self));
        self.reconcile(ctx);
    }

    /// Applies the container's restart type to the start that just ended.
    pub(super) fn decide_restart(&mut self) {
        self.exit_pending = false;
        let ContainerState::Terminated(done) = &self.slot.state else {
            return;
        };
        if std::mem::take(&mut self.definition_changed) {
            self.slot.schedule_immediate_restart();
            return;
        }
        if !self.restart().restarts(done.exit.exit_code != 0) {
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
        let name = self.slot.name.clone();
        let desc = self.desc();
        let delay = self.slot.schedule_restart(ran, &desc);
        if !delay.is_zero() {
            self.event(
                EventKind::Warning,
                "BackOff",
                format!("Back-off restarting failed container {name} in pod {desc}"),
            );
        }
    }
}
