//! Interactive exec sessions (`kubectl exec`, `peapod exec`, `cp`): a
//! command in a running container whose stdin, stdout and stderr (or one
//! pseudo-terminal) stay open to the caller while it runs. The command is
//! created by a `peapod shim exec --as-container` helper (libcontainer
//! clones, so never from the daemon's threads); the helper stays its parent
//! and exits with its exit code.

use super::{container_id, io_err, Runtime};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStderr};

/// A byte stream the caller reads from.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A byte stream the caller writes to.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What the caller wants connected.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    /// Keep the command's stdin open to the caller (else it reads /dev/null).
    pub stdin: bool,
    /// A pseudo-terminal: stdout and stderr are one stream, stdin goes through it.
    pub tty: bool,
    /// The terminal's size (width, height) when the command starts.
    pub size: Option<(u16, u16)>,
}

/// One running command. Dropping it kills the helper and what it cloned;
/// a terminal's command gets SIGHUP when the master closes.
pub struct Session {
    child: Child,
    /// The command's stdin (`None` unless asked for).
    pub stdin: Option<Writer>,
    /// The command's stdout (the terminal's output with a tty).
    pub stdout: Option<Reader>,
    /// The command's stderr (`None` with a tty).
    pub stderr: Option<Reader>,
    /// The terminal, to resize it.
    pub terminal: Option<Terminal>,
    /// With a tty, the helper's own errors (the command's stderr is the terminal).
    helper_errors: Option<ChildStderr>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The helper leads its own process group, with libcontainer's clones.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Session {
    /// Waits for the command and returns its exit code (126 when it could not
    /// be run, with the reason), as the helper reports it.
    pub async fn wait(&mut self) -> Result<i32, String> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| format!("wait for the exec helper: {e}"))?;
        let code = status
            .code()
            .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9));
        if let Some(mut errors) = self.helper_errors.take() {
            let mut text = String::new();
            let _ = errors.read_to_string(&mut text).await;
            if code == 126 && !text.trim().is_empty() {
                return Err(text.trim().to_string());
            }
        }
        Ok(code)
    }
}

/// A session's pseudo-terminal master.
#[derive(Clone)]
pub struct Terminal(Arc<AsyncFd<OwnedFd>>);

impl Terminal {
    /// A master descriptor, made non-blocking and registered with the runtime.
    fn new(master: OwnedFd) -> Result<Self, String> {
        nix::fcntl::fcntl(
            master.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| e.to_string())?;
        // SAFETY: the OwnedFd is valid and stays open, unreplaced, while the AsyncFd owns it.
        let registered = unsafe { AsyncFd::register(master) }.map_err(|e| e.to_string())?;
        Ok(Terminal(Arc::new(registered)))
    }

    /// Sets the terminal's size (kubectl's resize channel); the command gets SIGWINCH.
    pub fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives
        // across the call; the descriptor is ours.
        let rc = unsafe { libc::ioctl(self.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsyncRead for Terminal {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref().as_raw_fd(), unfilled).map_err(io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Every slave descriptor closed (the command and its children exited): end of output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Terminal {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A terminal has no half-close: EOF is the user's ^D, sent as data.
        Poll::Ready(Ok(()))
    }
}

static SESSIONS: AtomicU64 = AtomicU64::new(0);

impl Runtime {
    /// Starts `args` in start `attempt` of a running container, as its own
    /// process runs, with the streams `opts` asks for.
    pub async fn exec_session(
        &self,
        uid: &str,
        container: &str,
        attempt: u32,
        args: &[String],
        opts: SessionOptions,
    ) -> Result<Session, String> {
        use std::process::Stdio;
        let id = container_id(uid, container, attempt);
        let mut cmd = self.shim.tokio_command(["exec", "--as-container", "--state-root"]);
        cmd.arg(self.paths.container_state_root()).args(["--id", &id]);
        let mut ours = None;
        if opts.tty {
            let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
            let socket = self
                .paths
                .run
                .join("shims")
                .join(format!("tty-{}-{n}.sock", std::process::id()));
            cmd.arg("--tty-socket").arg(socket);
            if let Some((w, h)) = opts.size {
                cmd.arg("--tty-size").arg(format!("{w}x{h}"));
            }
            let (daemon_end, helper_end) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
            cmd.stdin(Stdio::from(OwnedFd::from(helper_end)))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            ours = Some(daemon_end);
        } else {
            cmd.stdin(if opts.stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        cmd.arg("--").args(args).process_group(0).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| io_err("run exec helper", &self.shim.path, e))?;
        drop(cmd);
        let mut session = Session {
            stdin: child.stdin.take().map(|s| Box::new(s) as Writer),
            stdout: child.stdout.take().map(|s| Box::new(s) as Reader),
            stderr: None,
            terminal: None,
            helper_errors: None,
            child,
        };
        let Some(ours) = ours else {
            session.stderr = session.child.stderr.take().map(|s| Box::new(s) as Reader);
            return Ok(session);
        };
        session.helper_errors = session.child.stderr.take();
        match tokio::time::timeout(Duration::from_secs(30), receive_terminal(ours)).await {
            Ok(Ok(master)) => {
                let terminal = Terminal::new(master)?;
                session.stdout = Some(Box::new(terminal.clone()));
                if opts.stdin {
                    session.stdin = Some(Box::new(terminal.clone()));
                }
                session.terminal = Some(terminal);
                Ok(session)
            }
            // The helper failed before the command ran: its reason.
            Ok(Err(e)) => match session.wait().await {
                Err(reason) => Err(reason),
                Ok(code) => Err(format!("exec helper exited with {code}: {e}")),
            },
            Err(_) => Err("exec helper passed no terminal in 30s".into()),
        }
    }
}

/// Receives the terminal master the helper passes over its stdin.
async fn receive_terminal(stream: std::os::unix::net::UnixStream) -> Result<OwnedFd, String> {
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
    match receive_reply(&stream).await {
        Ok((_, fds)) => fds
            .into_iter()
            .next()
            .ok_or_else(|| "the helper sent no terminal".to_string()),
        Err(_) => Err("the helper closed without passing a terminal".into()),
    }
}

/// A running container attached to: its output from now on, and its stdin
/// or terminal when it has one.
pub struct Attachment {
    /// The container's output, as its shim reads it.
    pub output: AttachOutput,
    /// Its stdin (a `stdin: true` container's pipe, or its terminal).
    pub stdin: Option<Writer>,
    /// Its terminal (`tty: true`), to resize.
    pub terminal: Option<Terminal>,
}

/// The output an attached shim sends: `[stream][u32 length][bytes]` pieces.
pub struct AttachOutput {
    stream: tokio::net::UnixStream,
    buf: Vec<u8>,
}

impl AttachOutput {
    /// The next piece as (stream, bytes): stream 1 is stdout, 2 stderr.
    /// `None` once the container has ended (or the shim dropped us).
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() >= 5 + len {
                    let stream = self.buf[0];
                    let data = self.buf[5..5 + len].to_vec();
                    self.buf.drain(..5 + len);
                    return Some((stream, data));
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

impl Runtime {
    /// Attaches to start `attempt` of a running container through its shim.
    pub async fn attach(&self, uid: &str, container: &str, attempt: u32) -> Result<Attachment, String> {
        use tokio::io::AsyncWriteExt;
        let id = container_id(uid, container, attempt);
        let socket = self.paths.shim_socket(&id);
        let mut stream = match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => s,
            // The container ended (its shim with it) after its pod's status was read.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                return Err(format!("container {container} is not running"))
            }
            Err(e) => return Err(io_err("connect", &socket, e)),
        };
        let mut line = serde_json::to_string(&super::protocol::ShimRequest::Attach).unwrap_or_default();
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .await
            .map_err(|e| io_err("write", &socket, e))?;
        let (head, fds) = tokio::time::timeout(Duration::from_secs(5), receive_reply(&stream))
            .await
            .map_err(|_| format!("shim {id}: no reply to attach in 5s"))??;
        let newline = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
        let reply: super::protocol::ShimReply = serde_json::from_slice(&head[..newline])
            .map_err(|e| format!("shim {id} replied {:?}: {e}", String::from_utf8_lossy(&head)))?;
        let (stdin, tty) = match reply {
            super::protocol::ShimReply::Attached { stdin, tty } => (stdin, tty),
            super::protocol::ShimReply::Error { message } => return Err(message),
            other => return Err(format!("shim {id} replied {other:?} to attach")),
        };
        let mut fds = fds.into_iter();
        let mut attachment = Attachment {
            output: AttachOutput {
                stream,
                buf: head.get(newline + 1..).unwrap_or_default().to_vec(),
            },
            stdin: None,
            terminal: None,
        };
        if stdin {
            let fd = fds.next().ok_or("the shim sent no stdin")?;
            let pipe = tokio::net::unix::pipe::Sender::from_owned_fd(fd).map_err(|e| e.to_string())?;
            attachment.stdin = Some(Box::new(pipe));
        }
        if tty {
            let terminal = Terminal::new(fds.next().ok_or("the shim sent no terminal")?)?;
            // Written to and resized only: the shim reads the output.
            attachment.stdin = Some(Box::new(terminal.clone()));
            attachment.terminal = Some(terminal);
        }
        Ok(attachment)
    }
}

/// The first message on `stream` and the descriptors sent with it (an
/// attach reply from a shim; a terminal from an exec helper).
async fn receive_reply(stream: &tokio::net::UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::FromRawFd;
    loop {
        stream.readable().await.map_err(|e| e.to_string())?;
        let got = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut buf = vec![0u8; 4096];
            let mut iov = [io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
            let msg = recvmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(list) = c {
                    // SAFETY: SCM_RIGHTS just installed these descriptors; nothing else owns them.
                    fds.extend(list.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
            let n = msg.bytes;
            buf.truncate(n);
            Ok((buf, fds))
        });
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("receive the attach reply: {e}")),
            Ok((buf, _)) if buf.is_empty() => return Err("the shim closed the connection".into()),
            Ok(reply) => return Ok(reply),
        }
    }
}
