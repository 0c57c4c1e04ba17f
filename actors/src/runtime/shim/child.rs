//! Waiting for a helper or shim process without holding a thread: its
//! output pipes are read and its pidfd awaited on the actor's own event
//! loop. Hundreds of pods starting at once would otherwise park hundreds of
//! blocking-pool threads in `waitpid`.

use super::run::pidfd_open;
use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus, Output};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;

/// Reaps the child if the waiting future is dropped before it could.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // Rare (the caller gave up): a thread of its own, so no zombie is left.
            let _ = std::thread::Builder::new()
                .name("reap".into())
                .spawn(move || child.wait());
        }
    }
}

async fn read_all(pipe: Option<OwnedFd>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(fd) = pipe {
        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
        rx.read_to_end(&mut out).await?;
    }
    Ok(out)
}

/// The child's exit status and everything it wrote to its piped stdout and stderr.
pub(crate) async fn output(mut child: Child) -> std::io::Result<Output> {
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    let pidfd = pidfd_open(nix::unistd::Pid::from_raw(child.id() as i32))?;
    let mut reap = Reap(Some(child));
    let (out, err) = tokio::try_join!(read_all(stdout), read_all(stderr))?;
    let status = exited(pidfd, &mut reap).await?;
    Ok(Output {
        status,
        stdout: out,
        stderr: err,
    })
}

/// Waits for the child to exit (its pidfd turns readable), then reaps it.
async fn exited(pidfd: OwnedFd, reap: &mut Reap) -> std::io::Result<ExitStatus> {
    // SAFETY: the AsyncFd owns the OwnedFd for its whole life, so the
    // descriptor stays open and always names the same pidfd.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let _ready = fd.readable().await?;
    let mut child = reap.0.take().ok_or_else(|| std::io::Error::other("already reaped"))?;
    // It has exited: this wait returns at once.
    child.wait()
}
