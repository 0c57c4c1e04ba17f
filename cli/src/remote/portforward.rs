//! `pods/portforward`: TCP connections to a port on the pod's own loopback
//! (inside its network namespace, as kubelet connects), carried over SPDY
//! (`portforward.k8s.io`) or over SPDY tunnelled in a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+). For each connection the
//! client opens an `error` and a `data` stream sharing a `requestID`, with
//! the pod's port in a `port` header.

use super::spdy::{self, Stream, StreamWriter};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use peapod_core::store::Store;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The port-forward protocol over SPDY.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The same, tunnelled in WebSocket binary messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Where connections go: the pod's network namespace (`None`: the node's,
/// for a hostNetwork pod), and what the messages call the pod.
#[derive(Clone)]
struct Target {
    netns: Option<PathBuf>,
    pod: String,
    uid: String,
}

/// `GET`/`POST …/pods/NAME/portforward`.
pub async fn port_forward(
    req: HttpRequest,
    payload: web::Payload,
    store: Arc<dyn Store>,
    paths: peapod_actors::runtime::NodePaths,
    ns: String,
    name: String,
) -> HttpResponse {
    let bad = |code: u16, reason: &str, message: String| crate::api::status(code, reason, message, None);
    let pod = match super::get_pod(&*store, &ns, &name).await {
        Ok(p) => p,
        Err((code, reason, message)) => return bad(code, reason, message),
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or("Unknown");
    if phase != "Running" {
        return bad(
            400,
            "BadRequest",
            format!("unable to forward port because pod is not running. Current status={phase}"),
        );
    }
    let uid = peapod_core::object::uid(&pod).to_string();
    let host_network = pod["spec"]["hostNetwork"].as_bool().unwrap_or(false);
    let target = Target {
        netns: (!host_network).then(|| paths.sandbox_dir(&uid).join("net")),
        pod: format!("{ns}/{name}"),
        uid,
    };
    let upgrade = super::upgrade(&req);
    let tunnelled = super::offered(&req, "sec-websocket-protocol")
        .iter()
        .any(|p| p == TUNNEL_PROTOCOL);
    if upgrade == "websocket" && !tunnelled {
        return websocket_ports(&req, payload, target);
    }
    if upgrade == "websocket" {
        let tunnel = match super::ws::tunnel(&req, payload, TUNNEL_PROTOCOL) {
            Ok(t) => t,
            Err(refused) => return *refused,
        };
        let incoming = Box::pin(futures_util::stream::unfold(tunnel.incoming, |mut rx| async move {
            rx.recv().await.map(|m| (Ok::<_, String>(Bytes::from(m)), rx))
        }));
        let (streams, _closer) = spdy::connection(incoming, tunnel.outgoing);
        actix_web::rt::spawn(forward_streams(streams, target));
        return tunnel.response;
    }
    if !upgrade.starts_with("spdy/3.1") {
        return bad(
            400,
            "BadRequest",
            "Upgrade request required: port-forward needs a SPDY/3.1 connection".into(),
        );
    }
    if !super::offered(&req, "x-stream-protocol-version")
        .iter()
        .any(|p| p == PROTOCOL)
    {
        return bad(
            403,
            "Forbidden",
            format!("unable to upgrade: unable to negotiate protocol: server accepts [\"{PROTOCOL}\"]"),
        );
    }
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(64);
    let (streams, _closer) = spdy::connection(spdy::payload_chunks(payload), body_tx);
    actix_web::rt::spawn(forward_streams(streams, target));
    HttpResponse::SwitchingProtocols()
        .upgrade("SPDY/3.1")
        .insert_header(("x-stream-protocol-version", PROTOCOL))
        .streaming(spdy::body_stream(body_rx))
}

/// Pairs each connection's error and data streams and forwards it.
async fn forward_streams(mut streams: mpsc::Receiver<Stream>, target: Target) {
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    let mut unnamed = 0u64;
    let mut running = Vec::new();
    while let Some(s) = streams.recv().await {
        running.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
        // Clients before requestID pair an error stream with the data stream after it.
        let id = match s.header("requestid") {
            Some(id) => id.to_string(),
            None => {
                if s.header("streamtype") == Some("error") {
                    unnamed += 1;
                }
                format!("unnamed-{unnamed}")
            }
        };
        let entry = pending.entry(id.clone()).or_default();
        match s.header("streamtype") {
            Some("error") => entry.0 = Some(s),
            Some("data") => entry.1 = Some(s),
            _ => continue,
        }
        if let (Some(_), Some(_)) = entry {
            if let Some((Some(error), Some(data))) = pending.remove(&id) {
                running.push(actix_web::rt::spawn(forward(error, data, target.clone())));
            }
        }
    }
    // The client is gone: so are its connections into the pod.
    for h in running {
        h.abort();
    }
}

/// One forwarded connection.
async fn forward(error: Stream, data: Stream, target: Target) {
    let port = data.header("port").unwrap_or("");
    let Ok(port) = port.parse::<u16>() else {
        report(&error.out, &format!("invalid port {port:?}")).await;
        data.out.finish().await;
        return;
    };
    let tcp = match connect(target.netns.clone(), port).await {
        Ok(t) => t,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside namespace: {e}",
                target.pod, target.uid
            );
            report(&error.out, &message).await;
            data.out.finish().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let mut incoming = data.incoming;
    // Client to pod runs on its own; the connection ends when the pod's side
    // does (as containerd forwards): kubectl closes its local connection once
    // both streams it reads have ended.
    let up = async move {
        while let Some(chunk) = incoming.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let out = data.out.clone();
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        out.finish().await;
    };
    actix_web::rt::spawn(up);
    down.await;
    error.out.finish().await;
}

async fn report(error: &StreamWriter, message: &str) {
    let _ = error.send(Bytes::from(message.to_string())).await;
    error.finish().await;
}

/// Connects to `127.0.0.1:port` in `netns` (or the node's). A thread of
/// its own enters the namespace, so no shared thread is left in it; the
/// socket stays in the namespace it was made in.
async fn connect(netns: Option<PathBuf>, port: u16) -> Result<tokio::net::TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connected = (|| -> Result<TcpStream, String> {
            if let Some(path) = &netns {
                let ns = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("enter {}: {e}", path.display()))?;
            }
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let stream = TcpStream::connect_timeout(&address, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(stream)
        })();
        let _ = tx.send(connected);
    });
    let stream = rx.await.map_err(|_| "the connecting thread died".to_string())??;
    tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
}

/// Kubernetes' WebSocket port-forward (`v4.channel.k8s.io`, the ports in
/// `port` query parameters; peapod's CLI and other clients use it): one
/// connection into the pod per port, on channels `2i` (data) and `2i+1`
/// (errors), each opened by the port as two little-endian bytes.
fn websocket_ports(req: &HttpRequest, payload: web::Payload, target: Target) -> HttpResponse {
    let bad = |message: String| crate::api::status(400, "BadRequest", message, None);
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        if k == "port" || k == "ports" {
            for p in v.split(',') {
                match p.trim().parse::<u16>() {
                    Ok(p) if p > 0 => ports.push(p),
                    _ => return bad(format!("invalid port {p:?} in the query")),
                }
            }
        }
    }
    if ports.is_empty() || ports.len() > 127 {
        return bad("a WebSocket port-forward names 1 to 127 ports in `port` query parameters".into());
    }
    let super::ws::Accepted {
        response,
        mut messages,
        frames,
    } = match super::ws::accept(req, payload, &["v4.channel.k8s.io"]) {
        Ok(a) => a,
        Err(refused) => return *refused,
    };
    actix_web::rt::spawn(async move {
        let mut to_pods: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
        let mut readers = Vec::new();
        for (i, &port) in ports.iter().enumerate() {
            let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
            for ch in [data, error] {
                let _ = frames.send(super::ws::frame(ch, &port.to_le_bytes(), false)).await;
            }
            match connect(target.netns.clone(), port).await {
                Ok(tcp) => {
                    let (mut from_pod, to_pod) = tcp.into_split();
                    to_pods.push(Some(to_pod));
                    let frames = frames.clone();
                    readers.push(actix_web::rt::spawn(async move {
                        let mut buf = vec![0u8; 32 * 1024];
                        loop {
                            match from_pod.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if frames.send(super::ws::frame(data, &buf[..n], false)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }));
                }
                Err(e) => {
                    to_pods.push(None);
                    let message = format!(
                        "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside namespace: {e}",
                        target.pod, target.uid
                    );
                    let _ = frames.send(super::ws::frame(error, message.as_bytes(), false)).await;
                }
            }
        }
        let aborts: Vec<_> = readers.iter().map(|h| h.abort_handle()).collect();
        let all_read = futures_util::future::join_all(readers);
        tokio::pin!(all_read);
        loop {
            tokio::select! {
                // Every pod connection has ended: so does the forward.
                _ = &mut all_read => break,
                m = messages.recv() => {
                    let Some(m) = m else { break };
                    let Some((&ch, data)) = m.split_first() else { continue };
                    if ch % 2 == 1 {
                        continue;
                    }
                    if let Some(Some(w)) = to_pods.get_mut(usize::from(ch / 2)) {
                        if w.write_all(data).await.is_err() {
                            to_pods[usize::from(ch / 2)] = None;
                        }
                    }
                }
            }
        }
        for a in aborts {
            a.abort();
        }
        let _ = frames.send(super::ws::close_frame()).await;
    });
    response
}
