//! Ending a shim that hangs while creating its container (libcontainer
//! never returning): found by the pid it recorded in `shim.pid`, checked
//! against its command line so a reused pid is never hit.

use std::path::Path;
use std::time::Duration;

/// How long creating a container may take before its shim is killed.
pub const START_LIMIT: Duration = Duration::from_secs(120);

/// SIGKILLs the shim of the attempt in `dir` if it is still the process that
/// recorded itself there. True when one was killed.
pub fn kill(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join("shim.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let config = dir.join("shim.json").display().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(&config) {
        return false;
    }
    tracing::warn!(
        "shim {pid} of {}: still creating after {START_LIMIT:?}; killing it",
        dir.display()
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok()
}
