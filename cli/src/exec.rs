//! `peapod exec`: a command in a pod's container, its streams connected to
//! this terminal, over the daemon's `pods/exec` WebSocket
//! (`v5.channel.k8s.io`, as kubectl 1.30+ speaks it).

use crate::client::Client;
use crate::remote::channel;
use actix_http::ws::{OpCode, Parser};
use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

#[derive(clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: AttachArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// A WebSocket connection to the daemon, client side (frames masked).
#[derive(Clone)]
pub(crate) struct Socket(Arc<Mutex<UnixStream>>);

impl Socket {
    pub fn send(&self, ch: u8, data: &[u8]) -> std::io::Result<()> {
        let frame = crate::remote::ws::frame(ch, data, true);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write_all(&frame)
    }
    fn send_close_stdin(&self) -> std::io::Result<()> {
        let mut f = BytesMut::new();
        Parser::write_message(&mut f, [255, channel::STDIN], OpCode::Binary, true, true);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write_all(&f)
    }
}

/// A container and how to connect to it (`exec` and `attach`).
#[derive(clap::Args, Clone)]
pub struct AttachArgs {
    /// The pod: `NAME`, `pod/NAME`, or `TYPE/NAME` of a workload
    /// (`deploy/web`: one of its pods, a running one first).
    pod: String,
    /// The container (default: the pod's only container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Pass stdin (attach: the container must have `stdin: true`).
    #[arg(short = 'i', long)]
    stdin: bool,
    /// A terminal (attach: the container must have `tty: true`).
    #[arg(short = 't', long)]
    tty: bool,
}

/// The path and query of an exec request, or of an attach (no command).
fn exec_path(
    ns: &str,
    pod: &str,
    container: Option<&str>,
    command: &[String],
    stdin: bool,
    tty: bool,
    verb: &str,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for c in command {
        q.append_pair("command", c);
    }
    if let Some(c) = container {
        q.append_pair("container", c);
    }
    if stdin {
        q.append_pair("stdin", "true");
    }
    q.append_pair("stdout", "true");
    if tty {
        q.append_pair("tty", "true");
    } else {
        q.append_pair("stderr", "true");
    }
    format!("/api/v1/namespaces/{ns}/pods/{pod}/{verb}?{}", q.finish())
}

/// The local terminal in raw mode while the command has a terminal; restored on drop.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin().as_fd(), nix::sys::termios::SetArg::TCSANOW, saved);
        }
    }
}

/// The local terminal's size as a resize message.
fn terminal_size() -> Option<Vec<u8>> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which lives across the call.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0)
        .then(|| format!("{{\"Width\":{},\"Height\":{}}}", size.ws_col, size.ws_row).into_bytes())
}

/// A WebSocket to the daemon (client side): the writer half (frames are
/// masked) and a reader of whole messages.
pub(crate) struct Connection {
    pub socket: Socket,
    reader: BufReader<UnixStream>,
    buf: BytesMut,
}

/// Opens `path` on the daemon as a WebSocket with subprotocol `protocol`.
/// A refusal is the error, with the Status message the daemon gave.
pub(crate) fn connect(client: &Client, path: &str, protocol: &str) -> Result<Connection> {
    let mut stream = UnixStream::connect(client.socket()).with_context(|| {
        format!(
            "cannot reach the peapod daemon at {} (is `peapod daemon` running?)",
            client.socket().display()
        )
    })?;
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand_key());
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: peapod\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the daemon closed the connection without a response");
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if code != 101 {
        let mut body = String::new();
        let _ = reader.read_to_string(&mut body);
        // The body of a refusal is a Status (possibly chunked: take the JSON in it).
        let json = body.find('{').and_then(|s| body.rfind('}').map(|e| &body[s..=e]));
        let message = json
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("{message}");
    }
    Ok(Connection {
        socket: Socket(Arc::new(Mutex::new(stream))),
        reader,
        buf: BytesMut::new(),
    })
}

impl Connection {
    /// The next binary message as (channel, data); `None` once closed.
    pub fn next_message(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            while let Some((_fin, op, data)) =
                Parser::parse(&mut self.buf, false, 16 << 20).map_err(|e| anyhow::anyhow!("{e}"))?
            {
                let data = data.unwrap_or_default();
                match op {
                    OpCode::Close => return Ok(None),
                    OpCode::Binary => {
                        if let Some((&ch, rest)) = data.split_first() {
                            return Ok(Some((ch, rest.to_vec())));
                        }
                    }
                    _ => {}
                }
            }
            let n = self.reader.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// An exec's streams on this side.
pub(crate) struct Streams<'a> {
    /// Copied to the command's stdin on a thread of its own, then closed.
    pub stdin: Option<Box<dyn Read + Send>>,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

/// Runs `command` in the pod's container with `streams`; returns its exit
/// code, or the daemon's error.
pub(crate) fn run(
    client: &Client,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    command: &[String],
    tty: bool,
    streams: Streams<'_>,
) -> Result<i32> {
    let path = exec_path(ns, pod, container, command, streams.stdin.is_some(), tty, "exec");
    connected(client, &path, tty, streams)
}

/// Carries `streams` over an exec or attach at `path` until its Status.
fn connected(client: &Client, path: &str, tty: bool, streams: Streams<'_>) -> Result<i32> {
    let mut conn = connect(client, path, crate::remote::ws::PROTOCOLS[0])?;
    let _raw = tty.then(RawMode::enter);
    if tty {
        if let Some(size) = terminal_size() {
            conn.socket.send(channel::RESIZE, &size)?;
        }
        watch_resizes(conn.socket.clone());
    }
    if let Some(mut input) = streams.stdin {
        let socket = conn.socket.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = socket.send_close_stdin();
                        return;
                    }
                    Ok(n) => {
                        if socket.send(channel::STDIN, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut status: Option<Value> = None;
    while let Some((ch, data)) = conn.next_message()? {
        match ch {
            channel::STDOUT => {
                streams.stdout.write_all(&data)?;
                streams.stdout.flush()?;
            }
            channel::STDERR => {
                streams.stderr.write_all(&data)?;
                streams.stderr.flush()?;
            }
            channel::ERROR => status = serde_json::from_slice(&data).ok(),
            _ => {}
        }
    }
    drop(_raw);
    let Some(status) = status else {
        bail!("the connection closed before the command's status arrived");
    };
    if status["status"] == "Success" {
        return Ok(0);
    }
    if status["reason"] == "NonZeroExitCode" {
        if let Some(code) = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str()?.parse::<i32>().ok())
        {
            return Ok(code);
        }
    }
    bail!("{}", status["message"].as_str().unwrap_or("exec failed"))
}

/// This terminal's streams for `a` (a terminal only if stdin is one).
fn local_streams(a: &AttachArgs) -> (bool, Option<Box<dyn Read + Send>>) {
    let tty = a.tty && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if a.tty && !tty {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    (tty, a.stdin.then(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>))
}

/// `peapod exec`: returns the command's exit code.
pub fn exec(client: &Client, a: ExecArgs) -> Result<i32> {
    let t = &a.target;
    let ns = t.namespace.clone().unwrap_or_else(|| "default".into());
    let (tty, stdin) = local_streams(t);
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let streams = Streams {
        stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    let pod = crate::commands::pod_of(client, &ns, &t.pod)?;
    run(client, &ns, &pod, t.container.as_deref(), &a.command, tty, streams)
}

/// `peapod attach`: the container's own process, until it ends.
pub fn attach(client: &Client, a: AttachArgs) -> Result<i32> {
    let ns = a.namespace.clone().unwrap_or_else(|| "default".into());
    let pod = crate::commands::pod_of(client, &ns, &a.pod)?;
    let (tty, stdin) = local_streams(&a);
    if tty {
        eprintln!("If you don't see a command prompt, try pressing enter.");
    }
    let path = exec_path(&ns, &pod, a.container.as_deref(), &[], stdin.is_some(), tty, "attach");
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let streams = Streams {
        stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    connected(client, &path, tty, streams)
}

/// Sends the terminal's size again whenever it changes (SIGWINCH).
fn watch_resizes(socket: Socket) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    // Blocked here, before the thread starts, so only sigwait sees it.
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || loop {
        if set.wait().is_err() {
            return;
        }
        if let Some(size) = terminal_size() {
            if socket.send(channel::RESIZE, &size).is_err() {
                return;
            }
        }
    });
}

/// A WebSocket key: 16 bytes, random enough to defeat caches (RFC 6455 4.1).
fn rand_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    key.copy_from_slice(&(nanos ^ u128::from(std::process::id())).to_le_bytes());
    key
}
