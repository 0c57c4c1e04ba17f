//! `peapod shim run`: create, start and babysit one container.

use super::CleanSignalsExecutor;
use crate::runtime::logfile::{self, Lines, LogWriter, Stream};
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

/// Writes a record whole or not at all (a reader never sees half of one),
/// without waiting for the disk: `shim.pid` and `started.json` hold pids,
/// which mean nothing once the machine has restarted, and a record lost
/// then reads as missing, which the daemon handles. The two fsyncs this
/// saves took 0.4-2 ms each on every start (`strace -T`, this VM's ext4).
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let ok = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        eprintln!("shim: cannot write {}: {e}", path.display());
    }
}

fn write_exit(path: &Path, exit: &ExitRecord) {
    write_atomically(path, serde_json::to_string(exit).unwrap_or_default().as_bytes());
}

/// Makes the exit record durable: how a container ended must survive a
/// power loss (a Job's success is counted from it). Done once everyone
/// waiting has been told, so no one waits for the disk.
fn sync_exit(path: &Path) {
    let synced = File::open(path).and_then(|f| f.sync_all()).and_then(|()| {
        path.parent()
            .map_or(Ok(()), |dir| File::open(dir).and_then(|d| d.sync_all()))
    });
    if let Err(e) = synced {
        eprintln!("shim: cannot sync {}: {e}", path.display());
    }
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
    sync_exit(&config.exit_file);
    1
}

/// The container's stdout and stderr: the read ends of its pipes, and the
/// log they are written to.
struct Output {
    pipes: [Option<OwnedFd>; 2],
    lines: [Lines; 2],
    log: LogWriter,
    /// A write to the log failed; said once on stderr, not per line.
    failed: bool,
    /// Attached clients, sent each piece of output as it is read.
    subscribers: Vec<UnixStream>,
}

/// What `attach` hands out: the write end of the container's stdin pipe,
/// or its terminal's master.
struct Attach {
    stdin: Option<OwnedFd>,
    console: Option<OwnedFd>,
    stdin_once: bool,
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

impl Output {
    /// Reads once from pipe `i` (which must be readable or hung up) and
    /// logs the lines; false once it is at its end.
    fn pump(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let Some(fd) = &self.pipes[i] else { return false };
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(0) => {
                self.pipes[i] = None;
                let log = &mut self.log;
                let mut failed = None;
                self.lines[i].finish(&mut |line, partial| {
                    if let Err(e) = log.push(&logfile::timestamp(chrono::Utc::now()), STREAMS[i], line, partial) {
                        failed = Some(e);
                    }
                });
                self.note(failed);
                false
            }
            Ok(n) => {
                self.broadcast(i, &buf[..n]);
                // One time for all the lines of one read, as they came together.
                let time = logfile::timestamp(chrono::Utc::now());
                let log = &mut self.log;
                let mut failed = None;
                self.lines[i].feed(&buf[..n], &mut |line, partial| {
                    if let Err(e) = log.push(&time, STREAMS[i], line, partial) {
                        failed = Some(e);
                    }
                });
                let flushed = self.log.flush().err();
                self.note(failed.or(flushed));
                true
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => true,
            // A terminal's master once every slave descriptor is closed: its end.
            Err(nix::errno::Errno::EIO) => {
                self.pipes[i] = None;
                false
            }
            Err(e) => {
                eprintln!("shim: read container output: {e}");
                self.pipes[i] = None;
                false
            }
        }
    }

    /// Sends what pipe `i` gave to every attached client; one that cannot
    /// take a whole piece at once (it fell behind) is dropped, so the
    /// container never waits for a client.
    fn broadcast(&mut self, i: usize, data: &[u8]) {
        if self.subscribers.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(data.len() + 5);
        frame.push(i as u8 + 1);
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        self.subscribers
            .retain_mut(|s| matches!(s.write(&frame), Ok(n) if n == frame.len()));
    }

    fn note(&mut self, err: Option<std::io::Error>) {
        match err {
            Some(e) if !self.failed => {
                eprintln!("shim: write log: {e}");
                self.failed = true;
            }
            Some(_) => {}
            None => self.failed = false,
        }
    }

    /// Reads what the pipes hold until both end, nothing more comes for
    /// `quiet`, or `limit` passes (a process outside the container may hold
    /// a pipe open and write for ever).
    fn drain(&mut self, quiet: Duration, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let mut buf = vec![0u8; logfile::CHUNK];
        while self.pipes.iter().any(Option::is_some) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let open: Vec<usize> = (0..2).filter(|i| self.pipes[*i].is_some()).collect();
            let ready: Vec<usize> = {
                let mut fds: Vec<PollFd> = open
                    .iter()
                    .filter_map(|i| self.pipes[*i].as_ref())
                    .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                let wait = PollTimeout::try_from(quiet.min(left)).unwrap_or(PollTimeout::ZERO);
                match poll(&mut fds, wait) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                }
                open.iter()
                    .zip(fds.iter())
                    .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| *i)
                    .collect()
            };
            for i in ready {
                self.pump(i, &mut buf);
            }
        }
        let _ = self.log.flush();
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    nix::fcntl::fcntl(
        r.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("pipe: {e}"))?;
    Ok((r, w))
}

fn create(config: &ShimConfig) -> Result<(Container, Output, Attach), String> {
    crate::faults::point("shim.create", &config.id);
    // State of an earlier try under this id that never ran (its shim died
    // while creating): the daemon reuses the id only then, and only we hold its lock.
    let stale = config.state_root.join(&config.id);
    if stale.exists() {
        let _ = std::fs::remove_dir_all(&stale);
    }
    let log = LogWriter::open(&config.log_path, config.log_max_size, config.log_max_files)
        .map_err(|e| format!("open log {}: {e}", config.log_path.display()))?;
    // Pipes, not the file: the shim writes each line as a record with its
    // time, and rotates the file, which the container cannot then grow.
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    // stdin: /dev/null, or a pipe whose write end the shim keeps for attach.
    let (stdin, stdin_w): (OwnedFd, Option<OwnedFd>) = if config.stdin && !config.tty {
        let (r, w) = pipe_pair()?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
        (null.into(), None)
    };
    // A terminal: libcontainer makes it in the container and sends its master here.
    let console_path = config.socket.with_extension("tty");
    let console = if config.tty {
        let _ = std::fs::remove_file(&console_path);
        Some(UnixListener::bind(&console_path).map_err(|e| format!("bind {}: {e}", console_path.display()))?)
    } else {
        None
    };
    let built = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .validate_id()
        .and_then(|b| b.with_root_path(&config.state_root))
        .map_err(|e| format!("container {}: {e}", config.id))?
        .with_stdin(stdin)
        .with_stdout(out_w)
        .with_stderr(err_w)
        .with_console_socket(console.as_ref().map(|_| &console_path))
        .with_executor(CleanSignalsExecutor)
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string());
    let master = match (&console, built.is_ok()) {
        (Some(listener), true) => Some(super::exec::receive_terminal(listener)),
        _ => None,
    };
    if console.is_some() {
        let _ = std::fs::remove_file(&console_path);
        super::exec::remove_console_links(&config.state_root.join(&config.id), &console_path);
    }
    let mut container = built?;
    let master = match master.transpose() {
        Ok(m) => m,
        Err(e) => {
            let _ = container.delete(true);
            return Err(format!("the container's terminal: {e}"));
        }
    };
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
    // With a terminal, its master is the one output (stdout) and the stdin.
    let (pipes, console) = match master {
        Some(m) => {
            let copy = m.try_clone().map_err(|e| format!("dup the terminal: {e}"))?;
            ([Some(m), None], Some(copy))
        }
        None => ([Some(out_r), Some(err_r)], None),
    };
    let output = Output {
        pipes,
        lines: Default::default(),
        log,
        failed: false,
        subscribers: Vec::new(),
    };
    let attach = Attach {
        stdin: stdin_w,
        console,
        stdin_once: config.stdin_once,
    };
    Ok((container, output, attach))
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
    let (mut container, mut output, mut attach) = match create(config) {
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
    let mut buf = vec![0u8; logfile::CHUNK];
    let exit = loop {
        let open: Vec<usize> = (0..2).filter(|i| output.pipes[*i].is_some()).collect();
        let (exited, client, ready) = {
            let mut fds = vec![
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                open.iter()
                    .filter_map(|i| output.pipes[*i].as_ref())
                    .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("shim {}: poll: {e}", config.id);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let fired = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let ready: Vec<usize> = open
                .iter()
                .zip(fds[2..].iter())
                .filter(|(_, f)| fired(f))
                .map(|(i, _)| *i)
                .collect();
            (fired(&fds[0]), fired(&fds[1]), ready)
        };
        for i in ready {
            output.pump(i, &mut buf);
        }
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
                if let Some(waiter) = serve(stream, pid, &mut attach, &mut output) {
                    waiters.push(waiter);
                }
            }
        }
    };
    // What the container wrote before it ended is logged before its end is
    // told: a client that sees the end then reads the whole log. The pipes
    // end with it unless a process it left behind (in a shared pid
    // namespace) still holds them; those go with the container's deletion.
    output.drain(Duration::from_millis(100), Duration::from_secs(1));
    write_exit(&config.exit_file, &exit);
    if let Err(e) = container.delete(true) {
        eprintln!("shim {}: delete: {e}", config.id);
    }
    output.drain(Duration::from_secs(2), Duration::from_secs(2));
    drop(output);
    let reply = serde_json::to_string(&ShimReply::Exited { exit }).unwrap_or_default();
    for mut w in waiters {
        let _ = writeln!(w, "{reply}");
    }
    let _ = std::fs::remove_file(&config.socket);
    sync_exit(&config.exit_file);
    0
}

/// Answers one request; returns the stream if it waits for the exit.
fn serve(stream: UnixStream, pid: Pid, attach: &mut Attach, output: &mut Output) -> Option<UnixStream> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    if reader.read_line(&mut line).is_err() {
        return None;
    }
    let mut stream = reader.into_inner();
    let reply = match serde_json::from_str::<ShimRequest>(line.trim()) {
        Ok(ShimRequest::Wait) => return Some(stream),
        Ok(ShimRequest::Attach) => {
            attach_client(stream, attach, output);
            return None;
        }
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

/// Hands an attaching client the container's stdin (or terminal) and adds
/// it to those sent the output.
fn attach_client(stream: UnixStream, attach: &mut Attach, output: &mut Output) {
    use nix::sys::socket::{sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags, UnixAddr};
    let stdin = attach.stdin.as_ref().and_then(|fd| fd.try_clone().ok());
    let console = attach.console.as_ref().and_then(|fd| fd.try_clone().ok());
    let reply = ShimReply::Attached {
        stdin: stdin.is_some(),
        tty: console.is_some(),
    };
    let line = format!("{}\n", serde_json::to_string(&reply).unwrap_or_default());
    let fds: Vec<i32> = stdin.iter().chain(console.iter()).map(|fd| fd.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = match fds.is_empty() {
        true => Vec::new(),
        false => vec![ControlMessage::ScmRights(&fds)],
    };
    let sent = sendmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(line.as_bytes())],
        &cmsgs,
        MsgFlags::empty(),
        None,
    );
    if !matches!(sent, Ok(n) if n == line.len()) {
        return;
    }
    // stdinOnce: the client holds the last write end; its close is the container's EOF.
    if attach.stdin_once && stdin.is_some() {
        attach.stdin = None;
    }
    let _ = setsockopt(&stream, sockopt::SndBuf, &(4 << 20));
    if stream.set_nonblocking(true).is_ok() {
        output.subscribers.push(stream);
    }
}
