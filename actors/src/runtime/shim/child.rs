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

/// How much of each output stream is kept: kubelet keeps the first 10 KiB
/// of an exec probe's output (`maxReadLength`). Exec probes and hooks run
/// what a container image chose; shim reports and sandbox helpers say far less.
pub(crate) const MAX_OUTPUT: usize = 10 * 1024;

/// Reads the pipe to its end, keeping the first [`MAX_OUTPUT`] bytes; the
/// rest is read and dropped, so a chatty command neither grows the daemon's
/// memory nor blocks on a full pipe.
async fn read_capped(pipe: Option<OwnedFd>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(fd) = pipe {
        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = rx.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let room = MAX_OUTPUT - out.len();
            out.extend_from_slice(&buf[..n.min(room)]);
        }
    }
    Ok(out)
}

/// The child's exit status and what it wrote to its piped stdout and stderr
/// (the first [`MAX_OUTPUT`] bytes of each).
pub(crate) async fn output(mut child: Child) -> std::io::Result<Output> {
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    let pidfd = pidfd_open(nix::unistd::Pid::from_raw(child.id() as i32))?;
    let mut reap = Reap(Some(child));
    let (out, err) = tokio::try_join!(read_capped(stdout), read_capped(stderr))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[tokio::test]
    async fn endless_output_is_cut_and_the_child_still_finishes() {
        let child = Command::new("sh")
            .args(["-c", "head -c 20000000 /dev/zero; echo done >&2; exit 3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output(child).await.unwrap();
        assert_eq!(out.stdout.len(), MAX_OUTPUT);
        assert_eq!(out.stderr, b"done\n");
        assert_eq!(out.status.code(), Some(3));
    }
}
