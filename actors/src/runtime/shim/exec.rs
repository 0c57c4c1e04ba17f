//! `peapod shim exec`: run a command inside a running container (lifecycle
//! hooks now, exec probes and `peapod exec` later). It joins the container's
//! namespaces and cgroup through libcontainer's tenant builder, which clones,
//! hence a process of its own.

use super::run::pidfd_open;
use super::JoinExecutor;
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
    let seccomp = match container_spec(state_root, id) {
        Ok(spec) => spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        Err(e) => {
            eprintln!("exec {args:?}: {e}");
            return 126;
        }
    };
    let pid = match ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_root)
        .map(|b| {
            b.with_executor(JoinExecutor { size: None, seccomp })
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

/// Runs `args` in container `id` as its own process runs (user, groups,
/// capabilities, environment, working directory: the container's `process`
/// with other arguments, as runc exec is given by containerd), for `exec`
/// from a user. Without `tty` the command's stdio is this process's. With
/// `tty` (a socket path for libcontainer's console socket), the command
/// gets a new pseudo-terminal as its controlling terminal and the master's
/// descriptor is passed on over this process's stdin, which must be a unix
/// socket (the daemon's end holds it), and `size` (width, height) is the
/// terminal's size when the command starts. Returns the exit code as [`exec`].
pub fn exec_as_container(
    state_root: &Path,
    id: &str,
    args: Vec<String>,
    tty: Option<&Path>,
    size: Option<(u16, u16)>,
) -> i32 {
    match exec_as_container_inner(state_root, id, args, tty, size) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            126
        }
    }
}

fn exec_as_container_inner(
    state_root: &Path,
    id: &str,
    args: Vec<String>,
    tty: Option<&Path>,
    size: Option<(u16, u16)>,
) -> Result<i32, String> {
    let dir = state_root.join(id);
    let spec = container_spec(state_root, id)?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| format!("container {id}: its spec has no process"))?;
    if args.is_empty() {
        return Err("exec: no command".into());
    }
    process.set_args(Some(args.clone()));
    process.set_terminal(Some(tty.is_some()));
    if tty.is_some() {
        // As containerd does for a terminal exec without TERM.
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        process.set_env(Some(env));
    }
    let process_file = dir.join(format!("exec-{}.json", std::process::id()));
    let text = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    std::fs::write(&process_file, text).map_err(|e| format!("write {}: {e}", process_file.display()))?;
    let listener = match tty {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            Some(
                std::os::unix::net::UnixListener::bind(path)
                    .map_err(|e| format!("listen on {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_root)
        .map(|b| {
            let executor = JoinExecutor {
                size: size.filter(|_| tty.is_some()),
                seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
            };
            b.with_executor(executor)
                .with_console_socket(tty)
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(tty.is_some())
                .build()
        });
    let _ = std::fs::remove_file(&process_file);
    let pid = match built {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) | Err(e) => {
            if let Some(path) = tty {
                let _ = std::fs::remove_file(path);
            }
            return Err(format!("exec {args:?} in container {id}: {e}"));
        }
    };
    if let (Some(listener), Some(path)) = (listener, tty) {
        let passed = pass_terminal(&listener);
        let _ = std::fs::remove_file(path);
        remove_console_links(&dir, path);
        if let Err(e) = passed {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(format!("exec {args:?} in container {id}: the terminal: {e}"));
        }
    }
    match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, code)) => Ok(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(128 + sig as i32),
        other => Err(format!("exec {args:?}: unexpected wait status {other:?}")),
    }
}

/// Takes the pseudo-terminal master libcontainer sends to the console
/// socket and passes it on over stdin.
fn pass_terminal(listener: &std::os::unix::net::UnixListener) -> Result<(), String> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    let master = receive_terminal(listener)?;
    let fds = [master.as_raw_fd()];
    sendmsg::<UnixAddr>(
        0,
        &[std::io::IoSlice::new(b"t")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("pass the terminal on: {e}"))?;
    Ok(())
}

/// The pseudo-terminal master libcontainer sends to the console socket
/// `listener` (within 10 s).
pub(super) fn receive_terminal(listener: &std::os::unix::net::UnixListener) -> Result<std::os::fd::OwnedFd, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(10_000u16)).map_err(|e| e.to_string())? == 0 {
        return Err("libcontainer sent no terminal in 10s".into());
    }
    let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receive: {e}"))?;
    let master = msg
        .cmsgs()
        .map_err(|e| e.to_string())?
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .ok_or("no descriptor in the console message")?;
    // SAFETY: SCM_RIGHTS just installed this descriptor in our table; we own it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(master) })
}

/// libcontainer links a console socket into the container's state dir
/// (under a fresh name for an exec) and leaves the link behind.
pub(super) fn remove_console_links(dir: &Path, socket: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() == Some(socket) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The OCI spec container `id` was created from (its bundle's config.json).
fn container_spec(state_root: &Path, id: &str) -> Result<libcontainer::oci_spec::runtime::Spec, String> {
    let container =
        libcontainer::container::Container::load(state_root.join(id)).map_err(|e| format!("container {id}: {e}"))?;
    let config = container.bundle().join("config.json");
    libcontainer::oci_spec::runtime::Spec::load(&config).map_err(|e| format!("read {}: {e}", config.display()))
}
