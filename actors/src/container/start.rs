//! Starting the container: one attempt through a new shim, then postStart
//! and probing.

use super::{ContainerActor, ContainerState, Finished, Run};
use crate::events::EventKind;
use crate::hooks;
use crate::runtime::protocol::ExitRecord;
use crate::runtime::{go_duration, ImageReady, StartError, Started};
use actix::prelude::*;
use std::time::Duration;
use tokio::time::Instant;

impl ContainerActor {
    /// Starts the next attempt.
    pub(super) fn start(&mut self, ctx: &mut Context<Self>) {
        let Some(spec) = self.spec() else {
            return;
        };
        let attempt = self.slot.begin_start();
        // Counted as kubelet counts them: every start it sets out to make.
        peapod_metrics::metrics()
            .started_containers
            .with_label_values(&[self.container_type()])
            .inc();
        let rt = self.rt.clone();
        let pod = self.orders.pod.clone();
        let volumes = self.orders.volumes.clone();
        let service_env = self.orders.service_env.clone();
        let store = self.store.clone();
        let allocatable = self.rt.config.allocatable();
        // "Pulling" is told when a pull is needed, not after it.
        let (pulling, needed) = tokio::sync::oneshot::channel::<()>();
        let image = spec.image.clone().unwrap_or_default();
        ctx.spawn(
            async move { needed.await.is_ok() }
                .into_actor(self)
                .map(move |needed, act, _| {
                    if needed {
                        act.event(EventKind::Normal, "Pulling", format!("Pulling image \"{image}\""));
                    }
                }),
        );
        ctx.spawn(
            async move {
                // Read at every start, as kubelet reads them when it creates a container.
                let env = outer_env(&*store, &pod, &spec, &service_env, allocatable).await?;
                let secrets_for_pull = || pull_secrets(&*store, &pod);
                // Always asks the registry before every start, as kubelet's
                // pull does; otherwise the store is looked at once per start,
                // and only a missing image costs a pull and a second try.
                if spec.image_pull_policy.as_deref() == Some("Always") {
                    let ready = rt
                        .pull_image(&spec, secrets_for_pull().await, move || {
                            let _ = pulling.send(());
                        })
                        .await?;
                    return Ok((rt.start(&pod, &spec, attempt, &volumes, &env).await?, ready));
                }
                match rt.start(&pod, &spec, attempt, &volumes, &env).await {
                    Err(e) if e.image_missing => {
                        let ready = rt
                            .pull_image(&spec, secrets_for_pull().await, move || {
                                let _ = pulling.send(());
                            })
                            .await?;
                        Ok((rt.start(&pod, &spec, attempt, &volumes, &env).await?, ready))
                    }
                    res => res.map(|started| (started, ImageReady::Present)),
                }
            }
            .into_actor(self)
            .map(move |res, act, ctx| act.on_started(attempt, res, ctx)),
        );
    }

    /// kubelet's `container_type` label.
    fn container_type(&self) -> &'static str {
        match self.slot.role {
            super::Role::App => "container",
            super::Role::Init | super::Role::Sidecar => "init_container",
        }
    }

    fn on_started(&mut self, attempt: u32, res: Result<(Started, ImageReady), StartError>, ctx: &mut Context<Self>) {
        crate::faults::point("container.start", &format!("{}/{}", self.desc(), self.slot.name));
        if let Err(e) = &res {
            peapod_metrics::metrics()
                .started_containers_errors
                .with_label_values(&[self.container_type(), e.reason])
                .inc();
        }
        let name = self.slot.name.clone();
        let image = self.spec().and_then(|c| c.image).unwrap_or_default();
        match res {
            Ok((started, ready)) => {
                self.pull_failures = 0;
                match ready {
                    ImageReady::Pulled { took, waited, size } => self.event(
                        EventKind::Normal,
                        "Pulled",
                        format!(
                            "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {size} bytes.",
                            go_duration(took),
                            go_duration(waited)
                        ),
                    ),
                    ImageReady::Present if attempt == 0 || self.slot.latest_attempt.is_none() => self.event(
                        EventKind::Normal,
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                    ),
                    ImageReady::Present => {}
                }
                self.event(EventKind::Normal, "Created", format!("Created container: {name}"));
                self.event(EventKind::Normal, "Started", format!("Started container {name}"));
                self.slot.started(attempt, started);
                self.watch_exit(attempt, ctx);
                match self.orders.run {
                    // Started while the pod (or, for a sidecar, its app containers) ended: stop it again.
                    Run::Stop { deadline, .. } => {
                        self.stop(deadline, format!("Stopping container {name}"), ctx);
                    }
                    _ => self.after_start(attempt, Instant::now(), ctx),
                }
            }
            Err(e) if e.reason == "RunContainerError" => {
                // The shim ran and the container failed to start: that start counts, as in kubelet.
                self.event(EventKind::Warning, "Failed", format!("Error: {}", e.message));
                let exit = ExitRecord::start_error(e.message.clone());
                let id = crate::runtime::container_id(&self.uid(), &name, attempt);
                self.slot.exited(Finished {
                    attempt,
                    id,
                    exit,
                    image_id: String::new(),
                    message: Some(e.message),
                });
                self.exit_pending = true;
                let rt = self.rt.clone();
                let uid = self.uid();
                ctx.spawn(
                    async move {
                        rt.finish_attempt(&uid, &name, attempt).await;
                    }
                    .into_actor(self),
                );
            }
            Err(e) => {
                let mut reason = e.reason;
                let mut delay = if reason == "CreateContainerConfigError" {
                    // Nothing ran, so no crash back-off: it starts soon after the
                    // missing ConfigMap or Secret appears, as kubelet's resync finds it.
                    Duration::from_secs(5)
                } else {
                    self.slot.backoff.next_delay(Duration::ZERO).max(Duration::from_secs(5))
                };
                if e.reason == "ErrImagePull" {
                    delay = pull_backoff(self.pull_failures);
                    // kubelet tells the registry's answer and the reason; from
                    // the second failure on, the container waits backing off.
                    self.event(EventKind::Warning, "Failed", e.message.clone());
                    self.event(EventKind::Warning, "Failed", format!("Error: {reason}"));
                    if self.pull_failures > 0 {
                        reason = "ImagePullBackOff";
                        self.event(
                            EventKind::Normal,
                            "BackOff",
                            format!("Back-off pulling image \"{image}\""),
                        );
                    }
                    self.pull_failures = self.pull_failures.saturating_add(1);
                } else {
                    self.event(EventKind::Warning, "Failed", format!("Error: {}", e.message));
                }
                self.slot.failed_to_create(reason, e.message, Instant::now() + delay);
            }
        }
        self.reconcile(ctx);
    }

    /// Right after a start: the postStart hook, then probing. A failed hook
    /// kills the container, which then restarts per its policy.
    fn after_start(&mut self, attempt: u32, since: Instant, ctx: &mut Context<Self>) {
        let name = self.slot.name.clone();
        let hook = self.spec().and_then(|c| c.lifecycle?.post_start);
        let (Some(hook), Some(target)) = (hook, self.target(attempt)) else {
            self.start_probes(attempt, since, ctx);
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
                let still_running = act.slot.running_attempt() == Some(attempt);
                if !still_running || !matches!(act.orders.run, Run::Run) || act.stopping.is_some() {
                    return;
                }
                match res {
                    Ok(()) => {
                        act.start_probes(attempt, since, ctx);
                        act.report();
                    }
                    Err(e) => {
                        act.event(
                            EventKind::Warning,
                            "FailedPostStartHook",
                            format!(
                                "PostStartHook failed: {kind} lifecycle hook for Container {name:?} in Pod {:?} failed: {e}",
                                act.desc()
                            ),
                        );
                        let deadline = crate::clock::after(act.grace_period());
                        act.stop(deadline, "FailedPostStartHook".into(), ctx);
                    }
                }
            }),
        );
    }

    /// Whether the container runs (as `attempt`).
    pub(super) fn is_running(&self, attempt: u32) -> bool {
        matches!(&self.slot.state, ContainerState::Running { attempt: a, .. } if *a == attempt)
    }
}

/// The pod's `imagePullSecrets` that exist and hold a Docker config, in
/// order; one that does not is passed over, as kubelet passes it over (the
/// pull then goes on with the node's credentials).
async fn pull_secrets(
    store: &dyn peapod_core::store::Store,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Vec<crate::image::PullSecret> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Vec::new();
    for r in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
        let v = match store.get("secrets", ns, &r.name).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(pod = %pod.metadata.name.as_deref().unwrap_or_default(), "imagePullSecret {ns}/{}: {e}", r.name);
                continue;
            }
        };
        let Ok(secret) = serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(v) else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        // `.dockercfg` is the older form: the `auths` map alone.
        let config = match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
            (Some(c), _) => String::from_utf8_lossy(&c.0).into_owned(),
            (None, Some(c)) => format!("{{\"auths\": {}}}", String::from_utf8_lossy(&c.0)),
            (None, None) => continue,
        };
        out.push(crate::image::PullSecret {
            name: format!("secret {ns}/{}", r.name),
            config,
        });
    }
    out
}

/// The container's variables from outside its spec: the services', and
/// what it reads from ConfigMaps and Secrets (a missing one, or key, is
/// `CreateContainerConfigError` with kubelet's words).
async fn outer_env(
    store: &dyn peapod_core::store::Store,
    pod: &k8s_openapi::api::core::v1::Pod,
    c: &k8s_openapi::api::core::v1::Container,
    services: &[(String, String)],
    allocatable: peapod_core::resources::Amounts,
) -> Result<crate::runtime::spec::OuterEnv, StartError> {
    use crate::runtime::projection;
    let refs = projection::env_references(c);
    let config = if refs.is_empty() {
        projection::ConfigEnv::default()
    } else {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let objs = projection::Objects::read(store, ns, &refs)
            .await
            .map_err(|e| StartError::new("CreateContainerConfigError", e))?;
        projection::container_env(c, &objs).map_err(|e| StartError::new("CreateContainerConfigError", e))?
    };
    Ok(crate::runtime::spec::OuterEnv {
        services: services.to_vec(),
        config,
        allocatable,
    })
}

/// kubelet's image pull back-off: 10 s after the first failed pull,
/// doubling to 300 s.
fn pull_backoff(failures: u32) -> Duration {
    Duration::from_secs(10u64.saturating_mul(1u64 << failures.min(5)).min(300))
}

#[cfg(test)]
mod pull_backoff_tests {
    #[test]
    fn pulls_back_off_as_kubelet_does() {
        let secs: Vec<u64> = (0..8).map(|n| super::pull_backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(super::pull_backoff(u32::MAX).as_secs(), 300);
    }
}
