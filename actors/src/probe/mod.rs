//! `ProbeActor`: one per probe of a running container, a supervised child
//! of its ContainerActor. It probes on its own schedule (a hung probe blocks nobody else),
//! applies kubelet's thresholds (a result counts only after N identical
//! results in a row) and tells the PodActor when the probe's result changes.

pub mod grpc;
pub mod http;
pub mod tcp;

use crate::events::{EventKind, EventRecorder};
use crate::runtime::Runtime;
use crate::supervisor::TreeNode;
use actix::prelude::*;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// As kubelet names it in events.
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// The result kubelet assumes before the first probe: readiness starts
    /// failed, liveness succeeded, startup unknown.
    fn initial(self) -> Option<bool> {
        match self {
            ProbeKind::Startup => None,
            ProbeKind::Liveness => Some(true),
            ProbeKind::Readiness => Some(false),
        }
    }

    /// The probe of this kind in a container spec.
    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => c.startup_probe.as_ref(),
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// The container a probe or hook reaches.
#[derive(Debug, Clone)]
pub struct Target {
    pub uid: String,
    pub container: Container,
    pub attempt: u32,
    /// The pod's IP (the node's for hostNetwork pods).
    pub pod_ip: Option<String>,
}

/// `host:port`, bracketing IPv6 literals.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The error text Go prints for common socket errors (`connection refused`).
fn os_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_ascii_lowercase(),
        None => s,
    }
}

/// A port by number, or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port number: {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name} in {}", c.name))
        }
    }
}

/// Runs an `httpGet` action against the target (probes and hooks share it).
pub async fn http_get(action: &HTTPGetAction, target: &Target, timeout: Duration) -> Outcome {
    let port = match resolve_port(&action.port, &target.container) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .or(target.pod_ip.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let headers = action.http_headers.clone().unwrap_or_default();
    let req = http::Request {
        https: action.scheme.as_deref() == Some("HTTPS"),
        host: &host,
        port,
        path: action.path.as_deref().unwrap_or("/"),
        headers: &headers,
    };
    http::probe(&req, timeout).await
}

/// Runs one probe of any handler type.
pub async fn run_once(rt: &Runtime, probe: &Probe, target: &Target) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match rt
            .exec(&target.uid, &target.container.name, target.attempt, &cmd, timeout)
            .await
        {
            Ok((0, _)) => Outcome::Success,
            Ok((137, out)) if out.contains("timed out") => Outcome::Failure(format!("command {cmd:?} timed out")),
            Ok((_, out)) => Outcome::Failure(out.trim().to_string()),
            Err(e) => Outcome::Failure(e),
        };
    }
    if let Some(h) = &probe.http_get {
        return http_get(h, target, timeout).await;
    }
    if let Some(t) = &probe.tcp_socket {
        let port = match resolve_port(&t.port, &target.container) {
            Ok(p) => p,
            Err(e) => return Outcome::Failure(e),
        };
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or(target.pod_ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        return tcp::probe(&host, port, timeout).await;
    }
    if let Some(g) = &probe.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return Outcome::Failure(format!("invalid port number: {}", g.port));
        };
        let host = target.pod_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        return grpc::probe(&host, port, g.service.as_deref().unwrap_or(""), timeout).await;
    }
    Outcome::Failure("probe has no handler".into())
}

/// A probe's result changed (after its threshold); sent to the ContainerActor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ProbeChanged {
    /// Which start of the container was probed.
    pub attempt: u32,
    pub kind: ProbeKind,
    pub success: bool,
}

/// Threshold bookkeeping, kubelet's worker rules without the timer.
#[derive(Debug, Clone)]
pub struct Thresholds {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
    reported: Option<bool>,
}

impl Thresholds {
    /// For `probe` of `kind`, whose result is `known` (a probe restarted
    /// after a crash continues from what was reported), else kubelet's initial one.
    pub fn new(kind: ProbeKind, probe: &Probe, known: Option<bool>) -> Self {
        Self {
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            last: None,
            run: 0,
            reported: known.or(kind.initial()),
        }
    }

    /// Feeds one result; returns the new state when it changes.
    pub fn observe(&mut self, success: bool) -> Option<bool> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let needed = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < needed || self.reported == Some(success) {
            return None;
        }
        self.reported = Some(success);
        Some(success)
    }
}

/// Probes one container with one probe.
pub struct ProbeActor {
    kind: ProbeKind,
    probe: Probe,
    target: Target,
    /// When the container started: `initialDelaySeconds` counts from here.
    container_started: Instant,
    rt: Arc<Runtime>,
    events: EventRecorder,
    pod: Arc<Pod>,
    report: Recipient<ProbeChanged>,
    node: TreeNode,
    thresholds: Thresholds,
    in_flight: bool,
    on_hold: bool,
}

/// What a ProbeActor needs to start.
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub probe: Probe,
    pub target: Target,
    pub container_started: Instant,
    /// The result the container's state already reflects (a restarted probe), if any.
    pub known: Option<bool>,
}

impl ProbeActor {
    /// A probe actor reporting to `report`.
    pub fn new(
        spec: ProbeSpec,
        rt: Arc<Runtime>,
        events: EventRecorder,
        pod: Arc<Pod>,
        report: Recipient<ProbeChanged>,
        node: TreeNode,
    ) -> Self {
        Self {
            thresholds: Thresholds::new(spec.kind, &spec.probe, spec.known),
            kind: spec.kind,
            probe: spec.probe,
            target: spec.target,
            container_started: spec.container_started,
            rt,
            events,
            pod,
            report,
            node,
            in_flight: false,
            on_hold: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        crate::faults::point(
            "probe.tick",
            &format!(
                "{}/{}",
                self.pod.metadata.name.as_deref().unwrap_or(""),
                self.target.container.name
            ),
        );
        if self.in_flight || self.on_hold {
            return;
        }
        self.in_flight = true;
        let rt = self.rt.clone();
        let probe = self.probe.clone();
        let target = self.target.clone();
        // The handler enforces timeoutSeconds; this bound only guards against a stuck helper.
        let guard = crate::clock::secs(probe.timeout_seconds.unwrap_or(1).max(1).into()) + Duration::from_secs(5);
        ctx.spawn(
            async move {
                let timer = peapod_metrics::Timer::start();
                let outcome = tokio::time::timeout(guard, run_once(&rt, &probe, &target))
                    .await
                    .unwrap_or_else(|_| Outcome::Failure("probe timed out".into()));
                (outcome, timer.seconds())
            }
            .into_actor(self)
            .map(|(outcome, seconds), act, ctx| {
                act.in_flight = false;
                act.record(&outcome, seconds);
                act.on_result(outcome, ctx);
            }),
        );
    }

    /// `prober_probe_total` and `prober_probe_duration_seconds`, as kubelet
    /// records them: a failure is counted without a duration.
    fn record(&self, outcome: &Outcome, seconds: f64) {
        if self.on_hold {
            return;
        }
        let (result, seconds) = match outcome {
            Outcome::Success => ("successful", Some(seconds)),
            Outcome::Failure(_) => ("failed", None),
        };
        let meta = &self.pod.metadata;
        peapod_metrics::metrics().observe_probe(
            self.kind.label(),
            result,
            &self.target.container.name,
            meta.name.as_deref().unwrap_or_default(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default(),
            seconds,
        );
    }

    fn on_result(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        if self.on_hold {
            return;
        }
        let success = outcome == Outcome::Success;
        if let Outcome::Failure(msg) = &outcome {
            self.events.pod_event(
                &self.pod,
                Some(&self.target.container.name),
                EventKind::Warning,
                "Unhealthy",
                format!("{} probe failed: {msg}", self.kind.label()),
            );
        }
        let Some(changed) = self.thresholds.observe(success) else {
            return;
        };
        self.node.set_state(match changed {
            true => "Probing (passing)",
            false => "Probing (failing)",
        });
        self.report.do_send(ProbeChanged {
            attempt: self.target.attempt,
            kind: self.kind,
            success: changed,
        });
        match (self.kind, changed) {
            // The container will be killed; probing resumes with its next start.
            (ProbeKind::Liveness | ProbeKind::Startup, false) => self.on_hold = true,
            // Startup probing ends once it succeeded.
            (ProbeKind::Startup, true) => ctx.stop(),
            _ => {}
        }
    }
}

impl Actor for ProbeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.set_state("Probing");
        let delay = crate::clock::secs(self.probe.initial_delay_seconds.unwrap_or(0).into());
        let first = crate::clock::add(self.container_started, delay).saturating_duration_since(Instant::now());
        let period = crate::clock::secs(self.probe.period_seconds.unwrap_or(10).max(1).into());
        ctx.run_later(first, move |act, ctx| {
            act.tick(ctx);
            ctx.run_interval(period, |act, ctx| act.tick(ctx));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    #[test]
    fn liveness_changes_after_failure_threshold_in_a_row() {
        let mut t = Thresholds::new(ProbeKind::Liveness, &probe(1, 3), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None, "already healthy");
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
        assert_eq!(t.observe(false), None, "reported once");
    }

    #[test]
    fn readiness_starts_failed_and_needs_success_threshold() {
        let mut t = Thresholds::new(ProbeKind::Readiness, &probe(2, 1), None);
        assert_eq!(t.observe(false), None, "already not ready");
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn a_restarted_readiness_probe_reports_against_what_is_known() {
        // The container was ready when the probe crashed: the next failure run counts.
        let mut t = Thresholds::new(ProbeKind::Readiness, &probe(1, 2), Some(true));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn startup_reports_first_success() {
        let mut t = Thresholds::new(ProbeKind::Startup, &probe(1, 3), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), Some(true));
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]}))
        .unwrap();
        assert_eq!(resolve_port(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("grpc".into()), &c).is_err());
    }
}
