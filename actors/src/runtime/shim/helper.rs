//! Short-lived helper processes (`peapod shim exec` for probes and hooks):
//! run to completion off the actor threads, and never outliving the one who
//! wants their result. A helper whose caller gave up (its actor stopped) is
//! killed at once with every process it cloned (its own process group), or
//! never started if it had not started yet, and every helper dies with the
//! daemon: none can touch a pod after it was torn down (libcontainer's exec
//! process recreates the container's cgroups when it joins them).

use super::run::pidfd_open;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    /// The caller is gone: do not start, or kill.
    cancelled: bool,
    /// The running helper.
    pidfd: Option<OwnedFd>,
    pid: u32,
}

fn kill(fd: &OwnedFd, pid: u32) {
    // libcontainer's intermediate and init processes are clones in the
    // helper's process group: they go too (the leader is not reaped yet, so
    // the group id cannot have been reused).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    // SAFETY: pidfd_send_signal takes a pidfd we own, a signal number and
    // null info; no memory is shared. A pidfd names one process, never a
    // later one with the same pid.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Cancels the helper when dropped (the caller's future was dropped).
struct Cancel(Arc<Mutex<State>>);

impl Drop for Cancel {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.cancelled = true;
        if let Some(fd) = s.pidfd.take() {
            tracing::debug!("helper {} killed: its caller is gone", s.pid);
            kill(&fd, s.pid);
        }
    }
}

/// Runs `cmd` to completion on the blocking pool and returns its output.
pub(crate) async fn run(mut cmd: Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setpgid, prctl and getppid, which are async-signal-safe. The parent-death signal
    // ties the helper to the thread that waits for it (busy until it exits),
    // so a daemon that dies takes its helpers with it; a parent that died
    // before prctl took effect is caught by the getppid check.
    unsafe {
        cmd.pre_exec(move || {
            // A process group of its own, for everything it clones.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the daemon is gone"));
            }
            Ok(())
        });
    }
    let state = Arc::new(Mutex::new(State::default()));
    let cancel = Cancel(state.clone());
    // Spawning forks: a moment on the blocking pool. Waiting needs no thread.
    let spawned = tokio::task::spawn_blocking(move || {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if s.cancelled {
            return Err(std::io::Error::other("cancelled before it started"));
        }
        let child = cmd.spawn()?;
        tracing::debug!(
            "helper {} started: {:?}",
            child.id(),
            cmd.get_args().collect::<Vec<_>>()
        );
        s.pidfd = pidfd_open(nix::unistd::Pid::from_raw(child.id() as i32)).ok();
        s.pid = child.id();
        Ok(child)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))?;
    let pid = spawned.id();
    let out = super::child::output(spawned).await;
    // Reaped: nothing of it is left to kill.
    cancel.0.lock().unwrap_or_else(|p| p.into_inner()).pidfd.take();
    tracing::debug!("helper {pid} ended: {:?}", out.as_ref().map(|o| o.status));
    drop(cancel);
    out
}
