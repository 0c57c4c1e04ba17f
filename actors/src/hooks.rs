//! Lifecycle hooks (`postStart`, `preStop`): exec in the container, an HTTP
//! GET against it, or a sleep; the same handlers probes use.

use crate::probe::{self, Outcome, Target};
use crate::runtime::Runtime;
use k8s_openapi::api::core::v1::LifecycleHandler;
use std::time::Duration;

/// Runs `hook` against `target` within `timeout`; the error says what failed.
pub async fn run(rt: &Runtime, hook: &LifecycleHandler, target: &Target, timeout: Duration) -> Result<(), String> {
    if let Some(e) = &hook.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match rt
            .exec(&target.uid, &target.container.name, target.attempt, &cmd, timeout)
            .await?
        {
            (0, _) => Ok(()),
            (code, out) => Err(format!("command {cmd:?} exited with {code}: {}", out.trim())),
        };
    }
    if let Some(h) = &hook.http_get {
        return match probe::http_get(h, target, timeout).await {
            Outcome::Success => Ok(()),
            Outcome::Failure(m) => Err(m),
        };
    }
    if let Some(s) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    // tcpSocket is accepted for compatibility and does nothing, as in kubelet.
    Ok(())
}

/// Kubernetes' name for a hook handler in messages.
pub fn kind(hook: &LifecycleHandler) -> &'static str {
    if hook.exec.is_some() {
        "Exec"
    } else if hook.http_get.is_some() {
        "HTTP"
    } else if hook.sleep.is_some() {
        "Sleep"
    } else {
        "TCP"
    }
}
