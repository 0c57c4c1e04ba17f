//! The pod's way down: termination on deletion (the grace period counts from
//! the deletion request, whatever restarts in between), teardown, and the
//! removal of the object. The free functions here are also what the node
//! uses for a pod whose actor it gave up on.

use super::{Lifecycle, PodActor};
use crate::events::{EventKind, EventRecorder};
use crate::runtime::{Observed, Runtime};
use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use peapod_core::kinds;
use peapod_core::store::{Preconditions, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// When the containers of a pod being deleted must be gone, as seen now:
/// the grace period from now (what kubelet does when it sees the deletion),
/// but never later than `metadata.deletionTimestamp`, which the API sets to
/// the time of the request plus the grace period (rounded up to the second).
/// A daemon restarted during termination so keeps the original deadline
/// rather than starting the grace period anew.
pub fn deadline(pod: &Pod) -> Instant {
    let grace = crate::clock::after(crate::clock::secs(
        pod.metadata.deletion_grace_period_seconds.unwrap_or(30),
    ));
    match &pod.metadata.deletion_timestamp {
        Some(t) => crate::clock::instant_of_time(t).min(grace),
        None => grace,
    }
}

impl PodActor {
    pub(super) fn begin_termination(&mut self, ctx: &mut Context<Self>) {
        self.set_lifecycle(Lifecycle::Terminating);
        // An eviction or deadline already stopping the pod sooner keeps its deadline.
        let due = deadline(&self.pod);
        self.deadline = Some(self.deadline.map_or(due, |d| d.min(due)));
        crate::faults::point("pod.terminating", &super::pod_desc(&self.pod));
        self.write_status(ctx);
    }

    /// Every container is down: volumes, sandbox, cgroups and files go, then
    /// the object. A teardown that fails (a CNI DEL) is retried with back-off
    /// and the pod stays Terminating meanwhile, so nothing leaks.
    pub(super) fn finish_removal(&mut self, ctx: &mut Context<Self>) {
        if self.lifecycle == Lifecycle::Removing {
            return;
        }
        self.set_lifecycle(Lifecycle::Removing);
        let rt = self.rt.clone();
        let store = self.store.clone();
        let pod = self.pod.clone();
        let events = self.events.clone();
        ctx.spawn(
            async move { remove(&rt, &*store, &events, &pod).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(true) => ctx.stop(),
                    // Finalizers hold the object: nothing of the pod is left
                    // here, and the next change of the object tries again.
                    Ok(false) => act.held = true,
                    Err(e) => {
                        let delay = act.teardown_failed(&e);
                        act.set_lifecycle(Lifecycle::Terminating);
                        ctx.run_later(delay, |act, ctx| act.reconcile(ctx));
                    }
                }),
        );
    }

    /// The object changed while finalizers held it: remove it if none is left.
    pub(super) fn retry_held(&mut self, ctx: &mut Context<Self>) {
        self.held = false;
        let store = self.store.clone();
        let pod = self.pod.clone();
        ctx.spawn(
            async move { remove_object(&*store, &pod).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(true) => ctx.stop(),
                    Ok(false) => act.held = true,
                    Err(e) => {
                        tracing::warn!("{e}; trying again");
                        act.held = true;
                        ctx.run_later(std::time::Duration::from_secs(5), |act, ctx| act.retry_held(ctx));
                    }
                }),
        );
    }
}

/// Unpublishes the pod's volumes, removes everything the node holds for it
/// and then the object (only that object: a same-named successor stays).
/// False when finalizers still hold the object (see [`remove_object`]).
pub async fn remove(rt: &Arc<Runtime>, store: &dyn Store, events: &EventRecorder, pod: &Pod) -> Result<bool, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_dir = rt.paths.pod_dir(&uid);
    rt.close_projections(pod).await;
    for attempt in 0..3 {
        match rt.volumes.unpublish(pod, &pod_dir).await {
            Ok(()) => break,
            Err(e) => {
                events.pod_event(pod, None, EventKind::Warning, "FailedUnmount", e.message.clone());
                if attempt < 2 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    rt.remove_pod(pod).await?;
    let removed = remove_object(store, pod).await?;
    if removed {
        events.forget(&uid);
    }
    Ok(removed)
}

/// Removes the pod object, unless finalizers hold it: then it is marked
/// (its grace period over) and false is returned; whoever removes the last
/// finalizer updates it, and the node calls this again.
pub async fn remove_object(store: &dyn Store, pod: &Pod) -> Result<bool, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pre = Preconditions {
        uid: pod.metadata.uid.clone(),
        resource_version: None,
    };
    match peapod_core::deletion::remove(store, &kinds::pod().resource(), &ns, &name, pre).await {
        Ok(Some(_)) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => Ok(true),
        Ok(None) => Ok(false),
        Err(e) => Err(format!("removing pod {ns}/{name} from the store: {e}")),
    }
}

/// Stops every running container of a pod the normal way, without its
/// actors: preStop (unless it already ran for that start), the stop signal,
/// SIGKILL at `deadline`, repeated until each has exited. For a pod the
/// node gave up supervising, so nothing of it keeps running.
pub async fn stop_all(rt: &Arc<Runtime>, events: &EventRecorder, pod: &Pod, deadline: Instant) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .cloned()
        .collect();
    let mut stops = Vec::new();
    for c in containers {
        let Some((attempt, Observed::Running(started))) = rt.observe(&uid, &c.name).await.latest else {
            continue;
        };
        let (rt, events, pod, uid, pod_ip) = (rt.clone(), events.clone(), pod.clone(), uid.clone(), pod_ip.clone());
        stops.push(async move {
            let name = c.name.clone();
            events.pod_event(
                &pod,
                Some(&name),
                EventKind::Normal,
                "Killing",
                format!("Stopping container {name}"),
            );
            let first = rt.begin_stop(&uid, &name, attempt).await;
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) {
                if first && !left.is_zero() {
                    let target = crate::probe::Target {
                        uid: uid.clone(),
                        container: c.clone(),
                        attempt,
                        pod_ip,
                    };
                    let _ = crate::hooks::run(&rt, &hook, &target, left).await;
                }
            }
            let signal = started
                .stop_signal
                .as_deref()
                .and_then(crate::container::parse_signal)
                .unwrap_or(libc::SIGTERM);
            let _ = rt.kill(&uid, &name, attempt, signal).await;
            let exited = tokio::time::timeout_at(deadline, rt.wait(&uid, &name, attempt)).await;
            if exited.is_err() {
                let wait = rt.wait(&uid, &name, attempt);
                tokio::pin!(wait);
                loop {
                    let _ = rt.kill(&uid, &name, attempt, libc::SIGKILL).await;
                    if tokio::time::timeout(Duration::from_secs(1), &mut wait).await.is_ok() {
                        break;
                    }
                }
            }
            rt.finish_attempt(&uid, &name, attempt).await;
        });
    }
    futures_join_all(stops).await;
}

/// Runs the futures concurrently to completion.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let set: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut set = set;
    std::future::poll_fn(move |cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
