//! `peapod shim exec`: run a command inside a running container (lifecycle
//! hooks now, exec probes and `peapod exec` later). It joins the container's
//! namespaces and cgroup through libcontainer's tenant builder, which clones,
//! hence a process of its own.

use super::run::pidfd_open;
use super::CleanSignalsExecutor;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs `args` in container `id` and returns its exit code (128+signal when
/// killed; 137 after `timeout`, when the command is SIGKILLed). Output goes to
/// this process's stdout/stderr. Errors before the command runs return 126 with a message on stderr.
pub fn exec(state_root: &Path, id: &str, args: Vec<String>, timeout: Option<Duration>) -> i32 {
    let pid = match ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_root)
        .map(|b| {
            b.with_executor(CleanSignalsExecutor)
                .as_tenant()
                .with_container_args(args.clone())
                .with_detach(false)
                .build()
        }) {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) | Err(e) => {
            eprintln!("exec {args:?} in container {id}: {e}");
            return 126;
        }
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    if let (Some(deadline), Ok(fd)) = (deadline, pidfd_open(pid)) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) if Instant::now() >= deadline => {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    eprintln!("command {args:?} timed out after {:?}", timeout.unwrap_or_default());
                    return 137;
                }
                Ok(n) if n > 0 => break,
                _ => continue,
            }
        }
    }
    match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, code)) => code,
        Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        other => {
            eprintln!("exec {args:?}: unexpected wait status {other:?}");
            126
        }
    }
}
