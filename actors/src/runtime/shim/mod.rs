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
mod run;
mod sandbox;
mod spawn;
pub(crate) mod stuck;

pub use exec::{exec, exec_as_container};
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

/// For an exec with a terminal: sets the terminal's size (the client's, as
/// it was when the exec was asked for) on stdin, the new pty, right before
/// the command runs, so it never starts at 0x0 and races the first resize.
#[derive(Clone)]
pub(crate) struct TerminalSizeExecutor {
    pub width: u16,
    pub height: u16,
}

impl Executor for TerminalSizeExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let size = libc::winsize {
            ws_row: self.height,
            ws_col: self.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives
        // across the call; a failure leaves the size as it was.
        unsafe { libc::ioctl(0, libc::TIOCSWINSZ, &size) };
        CleanSignalsExecutor.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        CleanSignalsExecutor.validate(spec)
    }
}
