//! Probes and lifecycle handlers of a container: Kubernetes' defaults
//! (`SetDefaults_Probe`, `SetDefaults_HTTPGetAction`) and validation
//! (`validateProbe`, `validateHandler`, `validateLifecycle`).

use crate::field::{FieldError, FieldErrors};
use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const SCHEMES: &[&str] = &["HTTP", "HTTPS"];

/// Fills a container's probe and hook defaults.
pub fn set_defaults(c: &mut Container) {
    for p in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe]
        .into_iter()
        .flatten()
    {
        for (field, default) in [
            (&mut p.timeout_seconds, 1),
            (&mut p.period_seconds, 10),
            (&mut p.success_threshold, 1),
            (&mut p.failure_threshold, 3),
        ] {
            if field.unwrap_or(0) == 0 {
                *field = Some(default);
            }
        }
        if let Some(h) = p.http_get.as_mut() {
            default_http(h);
        }
    }
    if let Some(l) = c.lifecycle.as_mut() {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = h.http_get.as_mut() {
                default_http(g);
            }
        }
    }
}

fn default_http(h: &mut HTTPGetAction) {
    if h.path.as_deref().unwrap_or("").is_empty() {
        h.path = Some("/".into());
    }
    h.scheme.get_or_insert_with(|| "HTTP".into());
}

/// The handler fields a probe or hook may set; exactly one must be set.
struct Handlers<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    grpc: Option<&'a GRPCAction>,
    sleep: bool,
}

fn validate_handlers(h: Handlers<'_>, path: &str, errs: &mut FieldErrors) {
    let mut count = 0;
    let mut check = |set: bool, field: &str, errs: &mut FieldErrors| {
        if set {
            count += 1;
            if count > 1 {
                errs.push(FieldError::forbidden(
                    format!("{path}.{field}"),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    };
    check(h.exec.is_some(), "exec", errs);
    check(h.http_get.is_some(), "httpGet", errs);
    check(h.tcp_socket.is_some(), "tcpSocket", errs);
    check(h.grpc.is_some(), "grpc", errs);
    check(h.sleep, "sleep", errs);
    if count == 0 {
        errs.push(FieldError::invalid(path, "", "must specify a handler type"));
    }
    if let Some(e) = h.exec {
        if e.command.as_ref().is_none_or(Vec::is_empty) {
            errs.push(FieldError::required(format!("{path}.exec.command")));
        }
    }
    if let Some(g) = h.http_get {
        validate_port(&g.port, &format!("{path}.httpGet.port"), errs);
        if let Some(s) = g.scheme.as_deref() {
            if !SCHEMES.contains(&s) {
                errs.push(FieldError::not_supported(format!("{path}.httpGet.scheme"), s, SCHEMES));
            }
        }
        for (i, hdr) in g.http_headers.iter().flatten().enumerate() {
            let ok = !hdr.name.is_empty()
                && hdr
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
            if !ok {
                errs.push(FieldError::invalid(
                    format!("{path}.httpGet.httpHeaders[{i}].name"),
                    &hdr.name,
                    "a valid HTTP header must consist of alphanumeric characters or '-'",
                ));
            }
        }
    }
    if let Some(t) = h.tcp_socket {
        validate_port(&t.port, &format!("{path}.tcpSocket.port"), errs);
    }
    if let Some(g) = h.grpc {
        if !(1..=65535).contains(&g.port) {
            errs.push(FieldError::invalid(
                format!("{path}.grpc.port"),
                g.port,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

fn validate_port(port: &IntOrString, path: &str, errs: &mut FieldErrors) {
    match port {
        IntOrString::Int(n) if !(1..=65535).contains(n) => {
            errs.push(FieldError::invalid(path, n, "must be between 1 and 65535, inclusive"))
        }
        IntOrString::String(s) => {
            let ok = !s.is_empty()
                && s.len() <= 15
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && s.chars().any(|c| c.is_ascii_lowercase())
                && !s.starts_with('-')
                && !s.ends_with('-')
                && !s.contains("--");
            if !ok {
                errs.push(FieldError::invalid(
                    path,
                    s,
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at most 15 characters",
                ));
            }
        }
        _ => {}
    }
}

fn validate_probe(p: &Probe, path: &str, must_succeed_once: bool, errs: &mut FieldErrors) {
    validate_handlers(
        Handlers {
            exec: p.exec.as_ref(),
            http_get: p.http_get.as_ref(),
            tcp_socket: p.tcp_socket.as_ref(),
            grpc: p.grpc.as_ref(),
            sleep: false,
        },
        path,
        errs,
    );
    for (field, v, min) in [
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("timeoutSeconds", p.timeout_seconds, 1),
        ("periodSeconds", p.period_seconds, 1),
        ("successThreshold", p.success_threshold, 1),
        ("failureThreshold", p.failure_threshold, 1),
    ] {
        if let Some(v) = v.filter(|v| *v < min) {
            errs.push(FieldError::invalid(
                format!("{path}.{field}"),
                v,
                format!("must be greater than or equal to {min}"),
            ));
        }
    }
    if must_succeed_once {
        if let Some(s) = p.success_threshold.filter(|s| *s != 1) {
            errs.push(FieldError::invalid(format!("{path}.successThreshold"), s, "must be 1"));
        }
    }
    if let Some(g) = p.termination_grace_period_seconds.filter(|g| *g < 1) {
        errs.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            g,
            "must be greater than 0",
        ));
    }
}

fn validate_hook(h: &LifecycleHandler, path: &str, errs: &mut FieldErrors) {
    validate_handlers(
        Handlers {
            exec: h.exec.as_ref(),
            http_get: h.http_get.as_ref(),
            tcp_socket: h.tcp_socket.as_ref(),
            grpc: None,
            sleep: h.sleep.is_some(),
        },
        path,
        errs,
    );
    if h.tcp_socket.is_some() {
        errs.push(FieldError::forbidden(
            format!("{path}.tcpSocket"),
            "tcpSocket is not supported for lifecycle hooks",
        ));
    }
    if let Some(s) = h.sleep.as_ref().filter(|s| s.seconds < 0) {
        errs.push(FieldError::invalid(
            format!("{path}.sleep.seconds"),
            s.seconds,
            "must be greater than or equal to 0",
        ));
    }
}

/// Validates the probes and hooks of container `c` at `path`; `regular_init`
/// is an init container that runs to completion (no probes or hooks allowed).
pub fn validate(c: &Container, path: &str, regular_init: bool, errs: &mut FieldErrors) {
    let probes = [
        ("livenessProbe", &c.liveness_probe, true),
        ("readinessProbe", &c.readiness_probe, false),
        ("startupProbe", &c.startup_probe, true),
    ];
    for (field, probe, once) in probes {
        let Some(p) = probe else { continue };
        let p_path = format!("{path}.{field}");
        if regular_init {
            errs.push(FieldError::forbidden(
                p_path,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        validate_probe(p, &p_path, once, errs);
    }
    if let Some(l) = &c.lifecycle {
        if regular_init {
            errs.push(FieldError::forbidden(
                format!("{path}.lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            ));
            return;
        }
        if let Some(h) = &l.post_start {
            validate_hook(h, &format!("{path}.lifecycle.postStart"), errs);
        }
        if let Some(h) = &l.pre_stop {
            validate_hook(h, &format!("{path}.lifecycle.preStop"), errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(c: serde_json::Value, regular_init: bool) -> Vec<String> {
        let mut c: Container = serde_json::from_value(c).unwrap();
        set_defaults(&mut c);
        let mut errs = FieldErrors::default();
        validate(&c, "spec.containers[0]", regular_init, &mut errs);
        errs.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn defaults_follow_kubernetes() {
        let mut c: Container = serde_json::from_value(json!({"name": "c",
            "livenessProbe": {"httpGet": {"port": 80}}}))
        .unwrap();
        set_defaults(&mut c);
        let p = c.liveness_probe.unwrap();
        assert_eq!(
            (
                p.timeout_seconds,
                p.period_seconds,
                p.success_threshold,
                p.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let h = p.http_get.unwrap();
        assert_eq!((h.path.as_deref(), h.scheme.as_deref()), (Some("/"), Some("HTTP")));
    }

    #[test]
    fn messages_name_the_field() {
        assert_eq!(
            errors(json!({"name": "c", "livenessProbe": {"periodSeconds": 3}}), false),
            ["spec.containers[0].livenessProbe: Invalid value: \"\": must specify a handler type"]
        );
        assert_eq!(
            errors(
                json!({"name": "c", "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}),
                false
            ),
            ["spec.containers[0].livenessProbe.successThreshold: Invalid value: \"2\": must be 1"]
        );
        assert!(errors(
            json!({"name": "c", "readinessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}),
            false
        )
        .is_empty());
        assert_eq!(
            errors(
                json!({"name": "c", "readinessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}}),
                false
            ),
            ["spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"]
        );
        assert_eq!(
            errors(json!({"name": "c", "readinessProbe": {"tcpSocket": {"port": 70000}}}), false),
            ["spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: \"70000\": must be between 1 and 65535, inclusive"]
        );
        assert_eq!(
            errors(json!({"name": "c", "startupProbe": {"exec": {"command": ["true"]}}}), true),
            ["spec.containers[0].startupProbe: Forbidden: may not be set for init containers without restartPolicy=Always"]
        );
    }
}
