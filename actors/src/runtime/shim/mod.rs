//! `peapod shim`: the small single-threaded processes that create containers.
//!
//! libcontainer `clone()`s its caller and `chdir()`s around its sockets, which
//! is undefined behaviour in a multithreaded process such as the daemon. So
//! the daemon never calls `build()` or `start()`: it starts `peapod shim run`,
//! which creates one container, stays its parent (so it alone can `waitpid`
//! the real exit code), records the exit on disk and answers the daemon on a
//! unix socket. `shim exec` runs a command inside a running container (hooks),
//! and `shim sandbox` creates a pod's shared namespaces. None of these may be
//! called once a thread has been spawned in the process.

pub(crate) mod child;
mod exec;
pub(crate) mod helper;
mod mounts;
mod program;
mod run;
mod sandbox;
mod spawn;
pub(crate) mod stuck;

pub use exec::{exec, exec_as_container};
pub use program::{ShimProgram, SHIM_NAME};
pub use run::run;
pub use sandbox::sandbox;
pub(crate) use spawn::{report, spawn};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{default::DefaultExecutor, Executor, ExecutorError, ExecutorValidationError};

/// Resets signal dispositions and the signal mask before exec: Rust's std sets
/// SIGPIPE to ignored, and an ignored signal survives `execve` into the container.
#[derive(Clone)]
pub(crate) struct CleanSignalsExecutor;

impl Executor for CleanSignalsExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for sig in Signal::iterator() {
            if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
                continue;
            }
            // SAFETY: installing SIG_DFL runs no handler code, so no Rust invariant
            // can be broken by a signal arriving; we are single-threaded right before exec.
            let _ = unsafe { sigaction(sig, &default) };
        }
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// What a command started in a running container (exec, hooks, exec
/// probes) gets right before it runs, on top of [`CleanSignalsExecutor`]:
/// its terminal's size, and the container's seccomp filter.
///
/// libcontainer 0.7 builds a joining process's spec without the container's
/// `linux.seccomp`, so without this the command would run unconfined by the
/// profile its container runs under (and a probe command the image
/// provides would escape it). The filter is installed here, after the
/// capabilities were dropped, which takes `no_new_privs` (set here): a
/// setuid program in an exec'd session of a confined container does not
/// gain privileges, where runc installs the filter before dropping them.
#[derive(Clone, Default)]
pub(crate) struct JoinExecutor {
    /// The terminal's size (width, height) when the command starts.
    pub size: Option<(u16, u16)>,
    /// The container's filter.
    pub seccomp: Option<libcontainer::oci_spec::runtime::LinuxSeccomp>,
}

impl Executor for JoinExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some((width, height)) = self.size {
            let size = libc::winsize {
                ws_row: height,
                ws_col: width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives
            // across the call; a failure leaves the size as it was.
            unsafe { libc::ioctl(0, libc::TIOCSWINSZ, &size) };
        }
        if let Some(seccomp) = &self.seccomp {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only and affects this process alone.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(ExecutorError::Other(format!(
                    "no_new_privs for the container's seccomp filter: {}",
                    std::io::Error::last_os_error()
                )));
            }
            match libcontainer::seccomp::initialize_seccomp(seccomp) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return Err(ExecutorError::Other(
                        "the container's seccomp profile notifies a listener, which a command run in it cannot have"
                            .into(),
                    ))
                }
                Err(e) => return Err(ExecutorError::Other(format!("the container's seccomp filter: {e}"))),
            }
        }
        CleanSignalsExecutor.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        CleanSignalsExecutor.validate(spec)
    }
}
