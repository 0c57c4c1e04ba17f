//! `pods/exec`: a command in a running container with its streams open to
//! the client, as kubectl's remotecommand protocol carries them. The client
//! speaks WebSocket (`v5.channel.k8s.io`, kubectl 1.30+ and peapod's CLI)
//! or SPDY/3.1 (kubectl before 1.30, and its fallback); both are turned into
//! the same channels: 0 stdin, 1 stdout, 2 stderr, 3 error (one `Status`,
//! then the end), 4 resize.

pub mod portforward;
pub mod spdy;
pub mod ws;

use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use peapod_actors::runtime::session::{Session, SessionOptions, Terminal, Writer};
use peapod_actors::runtime::Runtime;
use peapod_core::store::Store;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The channel numbers of the remotecommand protocols.
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
}

/// What the client sends, whatever the framing.
#[derive(Debug)]
pub enum Inbound {
    /// Bytes for the command's stdin.
    Stdin(Bytes),
    /// The client closed stdin (WebSocket v5's close-channel message, SPDY's FIN).
    StdinEnd,
    /// A terminal size.
    Resize { width: u16, height: u16 },
}

/// What goes back to the client.
#[derive(Debug)]
pub enum Outbound {
    /// Bytes on stdout or stderr.
    Data(u8, Bytes),
    /// The final `Status` on the error channel; the session ends after it.
    Status(Value),
}

/// What an exec request asks for (`PodExecOptions` in the query).
#[derive(Debug, Default, Clone)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecRequest {
    /// Reads the query: `command` repeats (and is required when
    /// `need_command`: exec, not attach); booleans are `true`/`1` or present empty.
    pub fn from_query(query: &str, need_command: bool) -> Result<Self, String> {
        let mut r = ExecRequest::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let flag = || matches!(v.as_ref(), "" | "true" | "1");
            match k.as_ref() {
                "command" => r.command.push(v.into_owned()),
                "container" => r.container = Some(v.into_owned()),
                "stdin" => r.stdin = flag(),
                "stdout" => r.stdout = flag(),
                "stderr" => r.stderr = flag(),
                "tty" => r.tty = flag(),
                _ => {}
            }
        }
        if r.command.is_empty() && need_command {
            return Err("you must specify at least 1 command".into());
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        if r.tty && r.stderr {
            // kubectl asks for no stderr with a terminal; the API server refuses both.
            r.stderr = false;
        }
        Ok(r)
    }
}

/// `Status` objects of the error channel.
pub fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

fn exit_status(command: &[String], code: i32) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
    })
}

/// A `Status` for a failure before or outside the command.
pub fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// The values a client offers in a header that may repeat and list several
/// (`Sec-WebSocket-Protocol`, `X-Stream-Protocol-Version`).
pub fn offered(req: &HttpRequest, header: &str) -> Vec<String> {
    req.headers()
        .get_all(header)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect()
}

/// The protocol a request asks to upgrade to, lowercased (`websocket`, `spdy/3.1`).
pub fn upgrade(req: &HttpRequest) -> String {
    req.headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The pod, or the error to answer (HTTP code, reason, message).
pub async fn get_pod(store: &dyn Store, ns: &str, name: &str) -> Result<Value, (u16, &'static str, String)> {
    match store.get("pods", ns, name).await {
        Ok(p) => Ok(p),
        Err(peapod_core::store::StoreError::NotFound { .. }) => {
            Err((404, "NotFound", format!("pods \"{name}\" not found")))
        }
        Err(e) => Err((500, "InternalError", e.to_string())),
    }
}

/// Where an exec runs: the pod's uid and the container's current start.
pub struct ExecTarget {
    pub uid: String,
    pub container: String,
    pub attempt: u32,
}

/// Checks the pod and container as the API server and kubelet do before an
/// exec: the pod exists and has not ended, the container is named (or the
/// pod has one) and is running. The error is (HTTP code, reason, message).
pub async fn find_target(
    store: &dyn Store,
    ns: &str,
    name: &str,
    container: Option<&str>,
    verb: &str,
) -> Result<ExecTarget, (u16, &'static str, String)> {
    let pod = get_pod(store, ns, name).await?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err((
            400,
            "BadRequest",
            format!("cannot {verb} a container in a completed pod; current phase is {phase}"),
        ));
    }
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match container {
        Some(c) => c.to_string(),
        None if names.len() == 1 => names[0].to_string(),
        None => {
            return Err((
                400,
                "BadRequest",
                format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                ),
            ))
        }
    };
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|k| pod["status"][*k].as_array().into_iter().flatten())
    .find(|c| c["name"] == container.as_str());
    let Some(status) = status else {
        return Err((
            400,
            "BadRequest",
            format!("container {container} is not valid for pod {name}"),
        ));
    };
    if status["state"]["running"].is_null() {
        return Err((
            400,
            "BadRequest",
            format!("unable to upgrade connection: container not found (\"{container}\")"),
        ));
    }
    Ok(ExecTarget {
        uid: peapod_core::object::uid(&pod).to_string(),
        container,
        attempt: status["restartCount"].as_u64().unwrap_or(0) as u32,
    })
}

/// Runs an exec: starts the command, then moves bytes between it and the
/// client until it exits, and sends its `Status`. A client that goes away
/// (`inbound` closes) ends the command.
pub async fn run(
    runtime: Arc<Runtime>,
    target: ExecTarget,
    req: ExecRequest,
    mut inbound: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Outbound>,
) {
    // A terminal starts at the client's size: kubectl sends it first thing,
    // so it is waited for (briefly), and what came before it is kept.
    let mut early = Vec::new();
    let mut size = None;
    if req.tty {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        while size.is_none() {
            match tokio::time::timeout_at(deadline, inbound.recv()).await {
                Ok(Some(Inbound::Resize { width, height })) => size = Some((width, height)),
                Ok(Some(other)) => early.push(other),
                Ok(None) => return,
                Err(_) => break,
            }
        }
    }
    let opts = SessionOptions {
        stdin: req.stdin,
        tty: req.tty,
        size,
    };
    let mut session: Session = match runtime
        .exec_session(&target.uid, &target.container, target.attempt, &req.command, opts)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let _ = out
                .send(Outbound::Status(failure(
                    500,
                    "InternalError",
                    &format!("error executing command in container: {e}"),
                )))
                .await;
            return;
        }
    };
    let copy = |reader: Option<peapod_actors::runtime::session::Reader>, ch: u8, wanted: bool| {
        let out = out.clone();
        actix_web::rt::spawn(async move {
            let Some(mut reader) = reader else { return };
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        // Unwanted output is read and dropped so the command never blocks on it.
                        if wanted
                            && out
                                .send(Outbound::Data(ch, Bytes::copy_from_slice(&buf[..n])))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        })
    };
    let stdout = copy(session.stdout.take(), channel::STDOUT, req.stdout);
    let stderr = copy(session.stderr.take(), channel::STDERR, req.stderr);
    let mut stdin = session.stdin.take();
    let terminal = session.terminal.clone();
    let mut early = early.into_iter();
    let code = loop {
        let next = async {
            match early.next() {
                Some(e) => Some(e),
                None => inbound.recv().await,
            }
        };
        tokio::select! {
            event = next => match event {
                // The client is gone: dropping the session kills the command.
                None => return,
                Some(event) => deliver(event, &mut stdin, terminal.as_ref()).await,
            },
            code = session.wait() => break code,
        }
    };
    drop(stdin);
    let _ = stdout.await;
    let _ = stderr.await;
    let status = match code {
        Ok(0) => success(),
        Ok(code) => exit_status(&req.command, code),
        Err(e) => failure(
            500,
            "InternalError",
            &format!("error executing command in container: {e}"),
        ),
    };
    let _ = out.send(Outbound::Status(status)).await;
}

/// Passes what the client sent to the command: stdin bytes (a write that
/// fails closes stdin), stdin's end, a terminal size.
async fn deliver(event: Inbound, stdin: &mut Option<Writer>, terminal: Option<&Terminal>) {
    match event {
        Inbound::Stdin(data) => {
            if let Some(w) = stdin.as_mut() {
                if w.write_all(&data).await.is_err() {
                    *stdin = None;
                }
            }
        }
        Inbound::StdinEnd => {
            if let Some(mut w) = stdin.take() {
                let _ = w.shutdown().await;
            }
        }
        Inbound::Resize { width, height } => {
            if let Some(t) = terminal {
                let _ = t.resize(width, height);
            }
        }
    }
}

/// Runs an attach: the container's output from now on to the client, the
/// client's input to its stdin or terminal, until the container ends (then
/// `Success`) or the client goes away (which, with `stdinOnce`, closes the
/// container's stdin).
pub async fn run_attach(
    runtime: Arc<Runtime>,
    target: ExecTarget,
    req: ExecRequest,
    mut inbound: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Outbound>,
) {
    let attachment = match runtime.attach(&target.uid, &target.container, target.attempt).await {
        Ok(a) => a,
        Err(e) => {
            let message = format!("error attaching to container: {e}");
            let _ = out
                .send(Outbound::Status(failure(500, "InternalError", &message)))
                .await;
            return;
        }
    };
    let mut output = attachment.output;
    let mut stdin = if req.stdin { attachment.stdin } else { None };
    let terminal = attachment.terminal;
    let pump_out = out.clone();
    let (stdout, stderr) = (req.stdout, req.stderr);
    let mut pump = actix_web::rt::spawn(async move {
        while let Some((stream, data)) = output.next().await {
            let (ch, wanted) = match stream {
                2 => (channel::STDERR, stderr),
                _ => (channel::STDOUT, stdout),
            };
            if wanted && pump_out.send(Outbound::Data(ch, Bytes::from(data))).await.is_err() {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            _ = &mut pump => break,
            event = inbound.recv() => match event {
                None => {
                    pump.abort();
                    return;
                }
                Some(event) => deliver(event, &mut stdin, terminal.as_ref()).await,
            },
        }
    }
    let _ = out.send(Outbound::Status(success())).await;
}

/// Which of the two the request is.
#[derive(Clone, Copy, PartialEq)]
pub enum Verb {
    /// `pods/exec`: a new command.
    Exec,
    /// `pods/attach`: the container's own process.
    Attach,
}

/// `GET`/`POST …/pods/NAME/exec` and `…/attach`: checks the request and the
/// pod, then upgrades to the protocol the client offers.
pub async fn exec_or_attach(
    verb: Verb,
    req: HttpRequest,
    payload: actix_web::web::Payload,
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    ns: String,
    name: String,
) -> HttpResponse {
    let bad = |code: u16, reason: &str, message: String| crate::api::status(code, reason, message, None);
    let (word, verb_phrase) = match verb {
        Verb::Exec => ("exec", "exec into"),
        Verb::Attach => ("attach", "attach to"),
    };
    let request = match ExecRequest::from_query(req.query_string(), verb == Verb::Exec) {
        Ok(r) => r,
        Err(e) => return bad(400, "BadRequest", e),
    };
    let target = match find_target(&*store, &ns, &name, request.container.as_deref(), verb_phrase).await {
        Ok(t) => t,
        Err((code, reason, message)) => return bad(code, reason, message),
    };
    let upgrade = upgrade(&req);
    if upgrade != "websocket" && !upgrade.starts_with("spdy/3.1") {
        return bad(
            400,
            "BadRequest",
            format!("Upgrade request required: {word} needs a WebSocket (v5.channel.k8s.io) or SPDY/3.1 connection"),
        );
    }
    let session = move |inbound, out| async move {
        match verb {
            Verb::Exec => run(runtime, target, request, inbound, out).await,
            Verb::Attach => run_attach(runtime, target, request, inbound, out).await,
        }
    };
    if upgrade == "websocket" {
        ws::serve(&req, payload, session)
    } else {
        spdy::serve(&req, payload, session)
    }
}

#[cfg(test)]
mod tests {
    use super::ExecRequest;

    #[test]
    fn exec_options_read_repeated_commands_and_flags() {
        let r = ExecRequest::from_query(
            "command=sh&command=-c&command=echo+a%20b&container=c&stdin=true&stdout=1&tty=true&stderr=true",
            true,
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo a b"]);
        assert_eq!(r.container.as_deref(), Some("c"));
        assert!(r.stdin && r.stdout && r.tty);
        assert!(!r.stderr, "a terminal has no separate stderr");
        assert!(ExecRequest::from_query("stdout=true", true)
            .unwrap_err()
            .contains("command"));
        assert!(ExecRequest::from_query("command=ls", true)
            .unwrap_err()
            .contains("stdin, stdout, stderr"));
        // attach takes no command.
        assert!(ExecRequest::from_query("stdout=true", false)
            .unwrap()
            .command
            .is_empty());
    }
}
