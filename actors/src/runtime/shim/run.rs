//! `peapod shim run`: create, start and babysit one container.

use super::CleanSignalsExecutor;
use crate::runtime::protocol::{now, ExitRecord, ShimConfig, ShimReply, ShimRequest, StartReport, StartedRecord};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setsid, ForkResult, Pid};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Runs the container described by `config`. The calling process prints one
/// [`StartReport`] line on stdout and exits as soon as the container runs (or
/// failed to); a detached child stays behind as the container's shim.
///
/// `lock_fd` is the attempt's lock, an exclusive flock the daemon took and
/// handed over: the shim keeps it open (and so held) until it exits, which
/// is how a daemon tells a live shim from a dead one without asking it.
pub fn run(config: &ShimConfig, lock_fd: Option<i32>) -> i32 {
    let _lock = lock_fd.map(|fd| {
        // SAFETY: the daemon opened this descriptor for us (dup2'ed to `fd`
        // before exec) and nothing else in this process owns or closes it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // The container's processes must not inherit it.
        let _ = nix::fcntl::fcntl(
            owned.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        owned
    });
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            return report_and_exit(&StartReport::Failed {
                message: format!("pipe: {e}"),
            })
        }
    };
    // SAFETY: `peapod shim` runs no threads (module contract), so the child is a
    // faithful copy of a single-threaded process and may run arbitrary Rust code.
    match unsafe { fork() } {
        Err(e) => report_and_exit(&StartReport::Failed {
            message: format!("fork: {e}"),
        }),
        Ok(ForkResult::Parent { .. }) => {
            drop(write_end);
            let mut line = String::new();
            let _ = File::from(read_end).read_to_string(&mut line);
            let report = serde_json::from_str(line.trim()).unwrap_or(StartReport::Failed {
                message: format!("shim died before reporting: {line:?}"),
            });
            report_and_exit(&report)
        }
        Ok(ForkResult::Child) => {
            drop(read_end);
            // The daemon reads our stdout to EOF; only the report pipe may stay open to it.
            if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
            }
            // Its own session, so the daemon's terminal or process group signals never reach it.
            let _ = setsid();
            // Who to kill should creating the container hang (see `stuck::kill`).
            if let Some(dir) = config.exit_file.parent() {
                write_atomically(&dir.join("shim.pid"), std::process::id().to_string().as_bytes());
            }
            babysit(config, File::from(write_end))
        }
    }
}

fn report_and_exit(report: &StartReport) -> i32 {
    // The daemon may be gone (killed while we started): a closed stdout is no reason to panic.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string(report).unwrap_or_default()
    );
    match report {
        StartReport::Started { .. } => 0,
        StartReport::Failed { .. } => 1,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let ok = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        eprintln!("shim: cannot write {}: {e}", path.display());
    }
}

fn write_exit(path: &Path, exit: &ExitRecord) {
    write_atomically(path, serde_json::to_string(exit).unwrap_or_default().as_bytes());
}

fn fail(config: &ShimConfig, mut report: File, message: String) -> i32 {
    eprintln!("shim {}: {message}", config.id);
    write_exit(&config.exit_file, &ExitRecord::start_error(message.clone()));
    let _ = writeln!(
        report,
        "{}",
        serde_json::to_string(&StartReport::Failed { message }).unwrap_or_default()
    );
    let _ = std::fs::remove_file(&config.socket);
    1
}

fn create(config: &ShimConfig) -> Result<Container, String> {
    crate::faults::point("shim.create", &config.id);
    // State of an earlier try under this id that never ran (its shim died
    // while creating): the daemon reuses the id only then, and only we hold its lock.
    let stale = config.state_root.join(&config.id);
    if stale.exists() {
        let _ = std::fs::remove_dir_all(&stale);
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log_path)
        .map_err(|e| format!("open log {}: {e}", config.log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    let mut container = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .validate_id()
        .and_then(|b| b.with_root_path(&config.state_root))
        .map_err(|e| format!("container {}: {e}", config.id))?
        .with_stdin(null)
        .with_stdout(log)
        .with_stderr(log2)
        .with_executor(CleanSignalsExecutor)
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string())?;
    if config.seal_dev {
        if let Err(e) = container
            .pid()
            .ok_or_else(|| "container has no pid after create".to_string())
            .and_then(super::mounts::seal_dev)
        {
            let _ = container.delete(true);
            return Err(e);
        }
    }
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(e.to_string());
    }
    Ok(container)
}

pub(super) fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn oom_kills(memory_cgroup: Option<&Path>) -> u64 {
    let Some(dir) = memory_cgroup else { return 0 };
    std::fs::read_to_string(dir.join("memory.oom_control"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
        })
        .or_else(|| {
            std::fs::read_to_string(dir.join("memory.events")).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
            })
        })
        .unwrap_or(0)
}

fn babysit(config: &ShimConfig, mut report: File) -> i32 {
    let _ = std::fs::remove_file(&config.socket);
    // Born 0600: only the daemon (root) may talk to a shim.
    let old_mask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(&config.socket);
    nix::sys::stat::umask(old_mask);
    let listener = match bound {
        Ok(l) => l,
        Err(e) => return fail(config, report, format!("bind {}: {e}", config.socket.display())),
    };
    if let Err(e) = super::mounts::narrow(&config.mount_scope) {
        return fail(config, report, e);
    }
    let mut container = match create(config) {
        Ok(c) => c,
        Err(e) => return fail(config, report, e),
    };
    let Some(pid) = container.pid() else {
        let _ = container.delete(true);
        return fail(config, report, "container has no pid after start".into());
    };
    let started_at = now();
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = container.delete(true);
            return fail(config, report, format!("pidfd_open({pid}): {e}"));
        }
    };
    // From here on the attempt counts as a start, whatever becomes of this shim.
    let record = StartedRecord {
        pid: pid.as_raw(),
        started_at: started_at.clone(),
    };
    if let Some(dir) = config.exit_file.parent() {
        write_atomically(
            &dir.join("started.json"),
            &serde_json::to_vec(&record).unwrap_or_default(),
        );
    }
    let started = StartReport::Started {
        pid: pid.as_raw(),
        started_at: started_at.clone(),
    };
    let _ = writeln!(report, "{}", serde_json::to_string(&started).unwrap_or_default());
    drop(report);

    let mut waiters: Vec<UnixStream> = Vec::new();
    let exit = loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("shim {}: poll: {e}", config.id);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        let client = fds[1].revents().is_some_and(|r| !r.is_empty());
        if exited {
            let status = waitpid(pid, None);
            let oom = oom_kills(config.memory_cgroup.as_deref()) > 0;
            break match status {
                Ok(WaitStatus::Exited(_, code)) => ExitRecord::from_wait(Some(code), None, oom, Some(started_at)),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    ExitRecord::from_wait(None, Some(sig as i32), oom, Some(started_at))
                }
                other => {
                    eprintln!("shim {}: unexpected wait status {other:?}", config.id);
                    ExitRecord::unknown(Some(started_at))
                }
            };
        }
        if client {
            if let Ok((stream, _)) = listener.accept() {
                if let Some(waiter) = serve(stream, pid) {
                    waiters.push(waiter);
                }
            }
        }
    };
    write_exit(&config.exit_file, &exit);
    if let Err(e) = container.delete(true) {
        eprintln!("shim {}: delete: {e}", config.id);
    }
    let reply = serde_json::to_string(&ShimReply::Exited { exit }).unwrap_or_default();
    for mut w in waiters {
        let _ = writeln!(w, "{reply}");
    }
    let _ = std::fs::remove_file(&config.socket);
    0
}

/// Answers one request; returns the stream if it waits for the exit.
fn serve(stream: UnixStream, pid: Pid) -> Option<UnixStream> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    if reader.read_line(&mut line).is_err() {
        return None;
    }
    let mut stream = reader.into_inner();
    let reply = match serde_json::from_str::<ShimRequest>(line.trim()) {
        Ok(ShimRequest::Wait) => return Some(stream),
        Ok(ShimRequest::State) => ShimReply::Ok { pid: pid.as_raw() },
        Ok(ShimRequest::Kill { signal }) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(sig) => match nix::sys::signal::kill(pid, sig) {
                Ok(()) => ShimReply::Ok { pid: pid.as_raw() },
                Err(e) => ShimReply::Error {
                    message: format!("kill {pid} {sig}: {e}"),
                },
            },
            Err(e) => ShimReply::Error {
                message: format!("signal {signal}: {e}"),
            },
        },
        Err(e) => ShimReply::Error {
            message: format!("bad request {line:?}: {e}"),
        },
    };
    let _ = writeln!(stream, "{}", serde_json::to_string(&reply).unwrap_or_default());
    None
}
