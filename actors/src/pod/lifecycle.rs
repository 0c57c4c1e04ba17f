//! The pod's way up: recovery, sandbox, volumes; and the node ending it
//! early (admission, eviction, active deadline).

use super::{Lifecycle, PodActor, Rejection};
use crate::events::EventKind;
use actix::prelude::*;
use peapod_volumes::Published;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl PodActor {
    /// Every ContainerActor has looked at the runtime: the pod goes on from
    /// what they found.
    pub(super) fn recovered(&mut self, ctx: &mut Context<Self>) {
        if self
            .slots
            .iter()
            .any(|s| s.role == crate::container::Role::App && s.latest_attempt.is_some())
        {
            // App containers ran, so initialization was over.
            self.initialized = true;
        }
        let terminal = matches!(self.stored_phase().as_deref(), Some("Succeeded" | "Failed"));
        if self.pod.metadata.deletion_timestamp.is_some() {
            // Straight to termination: containers are stopped, nothing needs the sandbox.
            self.begin_termination(ctx);
            self.reconcile(ctx);
        } else if terminal {
            self.set_lifecycle(Lifecycle::Finished);
            self.teardown_sandbox(ctx);
            self.reconcile(ctx);
        } else {
            self.set_lifecycle(Lifecycle::Preparing);
            self.prepare_sandbox(ctx);
        }
    }

    pub(super) fn prepare_sandbox(&mut self, ctx: &mut Context<Self>) {
        if self.lifecycle != Lifecycle::Preparing {
            return;
        }
        let rt = self.rt.clone();
        let pod = self.pod.clone();
        ctx.spawn(
            async move { rt.ensure_sandbox(&pod).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    if act.lifecycle != Lifecycle::Preparing {
                        return;
                    }
                    match res {
                        Ok(info) => {
                            act.pod_ips = Arc::new(info.pod_ips);
                            act.pod_dirty = true;
                            if act.start_time.is_none() {
                                act.start_time = Some(crate::runtime::protocol::now());
                            }
                            act.set_lifecycle(Lifecycle::Mounting);
                            act.check_active_deadline(ctx);
                            act.mount_volumes(ctx);
                        }
                        Err(e) => {
                            act.event(
                                EventKind::Warning,
                                "FailedCreatePodSandBox",
                                format!("Failed to create pod sandbox: {e}"),
                            );
                            ctx.run_later(Duration::from_secs(10), |act, ctx| act.prepare_sandbox(ctx));
                        }
                    }
                }),
        );
    }

    /// Publishes the pod's volumes through their plugins; on failure the
    /// containers wait (`ContainerCreating` with the plugin's message) and
    /// publishing is retried with back-off, as kubelet retries mounts.
    pub(super) fn mount_volumes(&mut self, ctx: &mut Context<Self>) {
        if self.lifecycle != Lifecycle::Mounting || self.failed.is_some() {
            return;
        }
        // One attempt at a time, and one retry pending at most.
        if self.mounting {
            self.mount_again = true;
            return;
        }
        if let Some(h) = self.mount_retry_handle.take() {
            ctx.cancel_future(h);
        }
        self.mounting = true;
        let rt = self.rt.clone();
        let pod = self.pod.clone();
        let store = self.store.clone();
        let pod_dir = self.rt.paths.pod_dir(&self.uid);
        ctx.spawn(
            async move {
                let claims = peapod_volumes::claims::lookup(&*store, &pod).await;
                if let Ok(wanted) = peapod_volumes::VolumeManager::sources(&pod, &claims) {
                    let plugins: Vec<String> = wanted.into_iter().map(|s| s.plugin).collect();
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    peapod_metrics::inventory::update_pod(&uid, |p| p.volumes_desired = plugins);
                }
                let published = match rt.volumes.publish(&pod, &pod_dir, &claims).await {
                    Ok(p) => crate::runtime::projection::project(&rt, &*store, &pod, &p, rt.config.allocatable())
                        .await
                        .map(|_| p)
                        .map_err(|e| peapod_volumes::VolumeError {
                            volume: e.volume.clone(),
                            message: e.to_string(),
                        }),
                    Err(e) => Err(e),
                };
                if let Ok(p) = &published {
                    peapod_volumes::claims::finish_resizes(&*store, &pod, p, &claims).await;
                }
                (published, service_env(&*store, &pod).await)
            }
            .into_actor(self)
            .map(|(res, env), act, ctx| {
                act.mounting = false;
                if act.lifecycle != Lifecycle::Mounting {
                    return;
                }
                match res {
                    Ok(published) => {
                        act.service_env = Arc::new(env);
                        act.mount_error = None;
                        let plugins: Vec<String> = published.iter().map(|p| p.source.plugin.clone()).collect();
                        peapod_metrics::inventory::update_pod(&act.uid, |p| p.volumes_actual = plugins);
                        act.published = Arc::new(published);
                        act.pod_dirty = true;
                        act.set_lifecycle(Lifecycle::Active);
                        act.schedule_housekeeping(ctx);
                        act.schedule_claim_stats(ctx);
                        act.schedule_projection_sync(ctx);
                        if std::mem::take(&mut act.mount_again) {
                            // A ConfigMap or Secret changed while it was written.
                            act.refresh_projections(ctx);
                        }
                        act.reconcile(ctx);
                    }
                    Err(e) => {
                        act.event(EventKind::Warning, "FailedMount", e.message.clone());
                        act.mount_error = Some(e.message.clone());
                        act.write_status(ctx);
                        let delay = act.mount_retry;
                        act.mount_retry = (delay * 2).min(Duration::from_secs(60));
                        if std::mem::take(&mut act.mount_again) {
                            // Something it needs changed while it tried: again at once.
                            act.mount_volumes(ctx);
                        } else {
                            act.mount_retry_handle = Some(ctx.run_later(delay, |act, ctx| {
                                act.mount_retry_handle = None;
                                act.mount_volumes(ctx);
                            }));
                        }
                    }
                }
            }),
        );
    }

    /// Keeps the projected volumes current: every sync period, as kubelet's
    /// resync does, besides the immediate refresh when a referenced object
    /// or the pod itself changes (see [`Self::refresh_projections`]).
    fn schedule_projection_sync(&mut self, ctx: &mut Context<Self>) {
        if !self.has_projections() {
            return;
        }
        ctx.run_interval(self.rt.config.sync_frequency, |act, ctx| act.refresh_projections(ctx));
    }

    fn has_projections(&self) -> bool {
        self.published
            .iter()
            .any(|p| peapod_volumes::sources::is_projection(&p.source.plugin))
    }

    /// Writes the projected volumes again from what the store holds now;
    /// one refresh at a time, a request meanwhile runs after it. A failure
    /// keeps the files as they were (kubelet does the same) and is told once.
    pub(super) fn refresh_projections(&mut self, ctx: &mut Context<Self>) {
        if self.lifecycle != Lifecycle::Active || !self.has_projections() {
            return;
        }
        if self.projecting {
            self.project_again = true;
            return;
        }
        self.projecting = true;
        let (rt, store, pod, published) = (
            self.rt.clone(),
            self.store.clone(),
            self.pod.clone(),
            self.published.clone(),
        );
        let allocatable = self.rt.config.allocatable();
        ctx.spawn(
            async move { crate::runtime::projection::project(&rt, &*store, &pod, &published, allocatable).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.projecting = false;
                    match res {
                        Ok(_) => act.projection_error = None,
                        Err(e) => {
                            let text = e.to_string();
                            if act.projection_error.as_deref() != Some(text.as_str()) {
                                act.event(EventKind::Warning, "FailedMount", text.clone());
                                act.projection_error = Some(text);
                            }
                        }
                    }
                    if std::mem::take(&mut act.project_again) {
                        act.refresh_projections(ctx);
                    }
                }),
        );
    }

    /// Reads the usage of the claims the pod mounts through their plugins'
    /// stats call, now and every housekeeping period, for the
    /// `kubelet_volume_stats_*` series (as kubelet's volume stats
    /// aggregator does; the scrape reads what was collected here).
    fn schedule_claim_stats(&mut self, ctx: &mut Context<Self>) {
        let claims: Vec<(String, Published)> = self
            .published
            .iter()
            .filter_map(|p| {
                let claim = &p.source.persistent.as_ref()?.claim;
                let name = claim.rsplit('/').next().unwrap_or(claim).to_string();
                Some((name, p.clone()))
            })
            .collect();
        if claims.is_empty() {
            return;
        }
        let collect = move |act: &mut Self, ctx: &mut Context<Self>| {
            if act.lifecycle != Lifecycle::Active {
                return;
            }
            let (rt, uid, claims) = (act.rt.clone(), act.uid.clone(), claims.clone());
            ctx.spawn(
                async move {
                    for (claim, p) in claims {
                        let Ok(s) = rt.volumes.stats(&p).await else {
                            continue;
                        };
                        let usage = peapod_metrics::inventory::VolumeUsage {
                            capacity: s.capacity_bytes,
                            available: s.available_bytes,
                            used: s.used_bytes,
                            inodes: s.inodes,
                            inodes_free: s.inodes_free,
                            inodes_used: s.inodes_used,
                        };
                        peapod_metrics::inventory::update_pod(&uid, |e| {
                            e.claims.insert(claim, usage);
                        });
                    }
                }
                .into_actor(act),
            );
        };
        collect(self, ctx);
        ctx.run_interval(self.rt.config.housekeeping, collect);
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
                        peapod_metrics::metrics()
                            .evictions
                            .with_label_values(&["emptydirfs.limit"])
                            .inc();
                        act.fail_pod("Evicted", message, Duration::ZERO, ctx);
                    }
                }),
            );
        });
    }

    /// Ends the pod on the node's behalf (eviction, active deadline): every
    /// container is stopped within `grace` and none restarts; the pod ends
    /// Failed with `reason`.
    pub(super) fn fail_pod(&mut self, reason: &str, message: String, grace: Duration, ctx: &mut Context<Self>) {
        if self.failed.is_some() || !matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Mounting) {
            return;
        }
        self.event(EventKind::Warning, reason, message.clone());
        self.failed = Some(Rejection {
            reason: reason.into(),
            message,
        });
        self.deadline = Some(crate::clock::after(grace));
        self.reconcile(ctx);
    }

    /// kubelet's active deadline: a pod running longer than
    /// `activeDeadlineSeconds` since its start time is ended (DeadlineExceeded).
    /// Checked whenever the pod changes and when the deadline falls due.
    pub(super) fn check_active_deadline(&mut self, ctx: &mut Context<Self>) {
        let Some(limit) = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
            return;
        };
        if !matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Mounting) || self.failed.is_some() {
            return;
        }
        let started = self
            .start_time
            .as_deref()
            .map(crate::clock::instant_of)
            .unwrap_or_else(Instant::now);
        let due = crate::clock::add(started, crate::clock::secs(limit));
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

    /// Releases the network and namespaces of a pod whose containers are
    /// done; a failed CNI DEL is tried again with back-off.
    pub(super) fn teardown_sandbox(&mut self, ctx: &mut Context<Self>) {
        let rt = self.rt.clone();
        let uid = self.uid.clone();
        ctx.spawn(
            async move { rt.teardown(&uid).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    if let Err(e) = res {
                        let delay = act.teardown_failed(&e);
                        ctx.run_later(delay, |act, ctx| {
                            if act.lifecycle == Lifecycle::Finished {
                                act.teardown_sandbox(ctx);
                            }
                        });
                    }
                }),
        );
    }

    /// A teardown failed (a CNI DEL, a cgroup still in use): a `FailedKillPod`
    /// event as kubelet words it; returns the back-off before the next try.
    pub(super) fn teardown_failed(&mut self, e: &str) -> Duration {
        self.event(
            EventKind::Warning,
            "FailedKillPod",
            format!(
                "error killing pod: failed to \"KillPodSandbox\" for \"{}\": {e}",
                self.uid
            ),
        );
        let delay = self.removal_retry;
        self.removal_retry = (delay * 2).min(Duration::from_secs(30));
        delay
    }

    /// Refuses the pod as kubelet admission does: phase Failed with a reason.
    pub(super) fn reject(&mut self, reason: &str, message: String, ctx: &mut Context<Self>) {
        self.event(EventKind::Warning, reason, message.clone());
        self.set_lifecycle(Lifecycle::Finished);
        self.rejection = Some(Rejection {
            reason: reason.into(),
            message,
        });
        self.write_status(ctx);
    }
}

/// The services' variables for the pod's containers: the services of its
/// namespace (with `enableServiceLinks`, the default) and `kubernetes`. A
/// store that cannot be read gives none, as a kubelet whose service
/// informer has not synced.
async fn service_env(
    store: &dyn peapod_core::store::Store,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let resource = peapod_core::kinds::service().resource();
    let mut services = Vec::new();
    if links {
        match store.list(&resource, Some(&ns)).await {
            Ok((s, _)) => services.extend(s),
            Err(e) => tracing::warn!("listing the services of {ns} for their variables: {e}"),
        }
    }
    if ns != "default" || !links {
        if let Ok(k) = store.get(&resource, "default", "kubernetes").await {
            services.push(k);
        }
    }
    peapod_core::service::environment(&services, &ns, links)
}
