//! Logs, exec, attach and port-forward of a pod on another node of the
//! cluster, as the API server proxies them to the pod's kubelet: the node
//! that was asked forwards the request, as it came, to the pod's node and
//! relays the answer (an upgraded connection byte for byte).
//!
//! Every node of a cluster serves these four subresources, for its own pods
//! only, on its daemon endpoint (kubelet's port): TLS with a certificate of
//! the node's CA, published with the port in its Node (the CA in the
//! `peapod.io/daemon-endpoint-ca` annotation, the port in
//! `status.daemonEndpoints`). The caller proves it is a node of the cluster
//! with a bearer token derived from the Secret encryption key file, which
//! every node of one store shares.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use peapod_core::store::{Store, StoreError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// What the node-to-node token is derived for (see `Keys::derive`).
const PURPOSE: &str = "peapod node-to-node v1";

/// How long a connection to another node may take, TLS included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response head read from another node.
const MAX_HEAD: usize = 64 << 10;

/// This node's part in the cluster's node-to-node traffic.
pub struct NodeLink {
    /// This node's name: pods bound elsewhere are forwarded.
    pub node_name: String,
    /// The token sent to other nodes.
    send: String,
    /// The tokens accepted from them (every key's, during a rotation).
    accepted: Vec<String>,
}

impl NodeLink {
    /// `derived` is `Keys::derive(PURPOSE)`'s answer: the first is sent, all are accepted.
    pub fn new(node_name: String, derive: impl Fn(&str) -> Vec<String>) -> Self {
        let accepted = derive(PURPOSE);
        NodeLink {
            node_name,
            send: accepted.first().cloned().unwrap_or_default(),
            accepted,
        }
    }

    fn accepts(&self, token: &str) -> bool {
        !token.is_empty()
            && self
                .accepted
                .iter()
                .fold(false, |ok, t| ok | same_bytes(t.as_bytes(), token.as_bytes()))
    }
}

/// Equal, in time that depends only on the lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Marks a request that came from another node: it is answered here or not at all.
#[derive(Clone, Copy)]
pub struct FromNode;

/// The pod subresources a node serves to other nodes.
const SERVED: [&str; 4] = ["log", "exec", "attach", "portforward"];

/// Whether `path` is one of [`SERVED`] of a pod: `/api/v1/namespaces/NS/pods/NAME/SUB`.
pub fn served_path(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(segs.as_slice(), ["api", "v1", "namespaces", ns, "pods", name, sub]
        if !ns.is_empty() && !name.is_empty() && SERVED.contains(sub))
}

/// The daemon endpoint's gate: a node's token, and only the pod
/// subresources other nodes forward.
pub async fn admit(
    link: actix_web::web::Data<NodeLink>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !link.accepts(crate::https::bearer(&req).unwrap_or("")) {
        let response = crate::https::status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        return Ok(req.into_response(response));
    }
    if !served_path(req.path()) {
        let message = format!(
            "{} {}: a node's daemon endpoint serves only pods' {}",
            req.method(),
            req.path(),
            SERVED.join(", ")
        );
        let response = crate::https::status_response(StatusCode::FORBIDDEN, "Forbidden", &message);
        return Ok(req.into_response(response));
    }
    req.extensions_mut().insert(FromNode);
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Another node's daemon endpoint, as its Node publishes it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub node: String,
    pub addr: SocketAddr,
    pub ca_pem: String,
}

/// Where a pod's subresource is answered.
pub enum Placement {
    /// On this node (or the pod is not bound, or does not exist: the local
    /// handler gives the error).
    Here,
    /// On the pod's node.
    There(Remote),
}

fn failure(code: u16, reason: &str, message: String) -> HttpResponse {
    crate::api::status(code, reason, message, None)
}

/// Where the pod `ns/name` is served. A request that came from another
/// node is never sent on: a pod that is not here is an error then.
pub async fn placement(
    store: &dyn Store,
    link: &NodeLink,
    ns: &str,
    name: &str,
    from_node: bool,
) -> Result<Placement, HttpResponse> {
    let pod = match store.get("pods", ns, name).await {
        Ok(p) => p,
        Err(StoreError::NotFound { .. }) => return Ok(Placement::Here),
        Err(e) => return Err(failure(500, "InternalError", e.to_string())),
    };
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() || node == link.node_name {
        return Ok(Placement::Here);
    }
    if from_node {
        return Err(failure(
            404,
            "NotFound",
            format!("pod {ns}/{name} is bound to node {node}, not to {}", link.node_name),
        ));
    }
    let node_obj = match store.get("nodes", "", node).await {
        Ok(n) => n,
        Err(StoreError::NotFound { .. }) => {
            return Err(failure(
                404,
                "NotFound",
                format!("pod {ns}/{name} is bound to node {node}, which does not exist"),
            ))
        }
        Err(e) => return Err(failure(500, "InternalError", e.to_string())),
    };
    remote_of(&node_obj).map(Placement::There).map_err(|why| {
        failure(
            502,
            "ServiceUnavailable",
            format!("pod {ns}/{name} is on node {node}, which cannot be reached: {why}"),
        )
    })
}

/// The daemon endpoint a Node publishes.
pub fn remote_of(node: &Value) -> Result<Remote, String> {
    let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ip: IpAddr = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or("it publishes no InternalIP address")?
        .parse()
        .map_err(|e| format!("its InternalIP: {e}"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| (1..=65535).contains(p))
        .ok_or("it publishes no daemon endpoint port (status.daemonEndpoints.kubeletEndpoint.Port)")?;
    let ca_pem = node["metadata"]["annotations"][peapod_actors::config::DAEMON_CA_ANNOTATION]
        .as_str()
        .ok_or_else(|| {
            format!(
                "it publishes no CA for its endpoint (annotation {})",
                peapod_actors::config::DAEMON_CA_ANNOTATION
            )
        })?
        .to_string();
    Ok(Remote {
        node: name,
        addr: SocketAddr::new(ip, port as u16),
        ca_pem,
    })
}

/// Headers that belong to one connection, not to the request or answer.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
    )
}

/// The request line and headers sent on: the client's headers but its
/// credentials and connection ones, with this node's token.
fn request_head(req: &HttpRequest, remote: &Remote, token: &str, from: &str, body_len: Option<usize>) -> Vec<u8> {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut head = format!("{} {path} HTTP/1.1\r\nhost: {}\r\n", req.method(), remote.addr);
    for (name, value) in req.headers() {
        if hop_by_hop(name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str(&format!("authorization: Bearer {token}\r\n"));
    head.push_str(&format!("x-forwarded-by-node: {from}\r\n"));
    let upgrade = crate::remote::upgrade(req);
    match body_len {
        None => head.push_str(&format!("connection: Upgrade\r\nupgrade: {upgrade}\r\n")),
        Some(n) => head.push_str(&format!("connection: close\r\ncontent-length: {n}\r\n")),
    }
    head.push_str("\r\n");
    head.into_bytes()
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `remote`, its certificate checked against the CA its Node publishes.
async fn connect(remote: &Remote) -> Result<Tls, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(remote.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("its CA annotation: {e}"))?;
        roots.add(cert).map_err(|e| format!("its CA annotation: {e}"))?;
    }
    if roots.is_empty() {
        return Err("its CA annotation holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(remote.addr.ip().into());
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(remote.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", remote.addr))?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", remote.addr))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no connection to {} within {CONNECT_TIMEOUT:?}", remote.addr))?
}

/// A parsed response head and what was read past it.
struct Head {
    code: u16,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Result<Head, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the connection closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                return Ok(Head {
                    code: resp.code.unwrap_or(502),
                    headers,
                    rest: buf[len..].to_vec(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err("the answer's head is too large".into()),
            Err(e) => return Err(format!("the answer does not parse: {e}")),
        }
    }
}

/// Sends the request to `remote` and relays its answer: an upgrade is
/// answered with the remote's 101 and both directions copied until either
/// side ends; anything else streams the remote's body (a followed log as it comes).
pub async fn forward(
    remote: Remote,
    link: &NodeLink,
    req: HttpRequest,
    payload: actix_web::web::Payload,
) -> HttpResponse {
    let unreachable = |why: String| {
        failure(
            502,
            "ServiceUnavailable",
            format!("proxying to node {} at {}: {why}", remote.node, remote.addr),
        )
    };
    let upgrade = !crate::remote::upgrade(&req).is_empty();
    let (body, body_len, upgraded) = if upgrade {
        (None, None, Some(payload))
    } else {
        match payload.to_bytes_limited(3 << 20).await {
            Ok(Ok(b)) => {
                let n = b.len();
                (Some(b), Some(n), None)
            }
            _ => return failure(400, "BadRequest", "reading the request body".into()),
        }
    };
    let mut stream = match connect(&remote).await {
        Ok(s) => s,
        Err(e) => return unreachable(e),
    };
    let head = request_head(&req, &remote, &link.send, &link.node_name, body_len);
    let sent = async {
        stream.write_all(&head).await?;
        if let Some(b) = &body {
            stream.write_all(b).await?;
        }
        stream.flush().await
    };
    if let Err(e) = sent.await {
        return unreachable(format!("sending the request: {e}"));
    }
    let head = match read_head(&mut stream).await {
        Ok(h) => h,
        Err(e) => return unreachable(e),
    };
    let status = StatusCode::from_u16(head.code).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    for (name, value) in &head.headers {
        if !hop_by_hop(name) {
            answer.insert_header((name.as_str(), value.as_str()));
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (reader, mut writer) = tokio::io::split(stream);
    if let (101, Some(payload)) = (head.code, upgraded) {
        let protocol = head
            .headers
            .iter()
            .find(|(n, _)| n == "upgrade")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        answer.upgrade(protocol);
        // The client's bytes go on as they come; its end ends the remote's side.
        let mut from_client = crate::remote::spdy::payload_chunks(payload);
        actix_web::rt::spawn(async move {
            while let Some(Ok(chunk)) = from_client.next().await {
                if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        actix_web::rt::spawn(copy_raw(head.rest, reader, tx));
    } else {
        drop(writer);
        let chunked = head
            .headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let length = head
            .headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.trim().parse::<u64>().ok());
        let reader = BufReader::new(std::io::Cursor::new(head.rest).chain(reader));
        if chunked {
            actix_web::rt::spawn(copy_chunked(reader, tx));
        } else {
            actix_web::rt::spawn(copy_length(reader, length, tx));
        }
    }
    answer.streaming(crate::remote::spdy::body_stream(rx))
}

/// The remote's side of an upgraded connection, as it comes.
async fn copy_raw(rest: Vec<u8>, mut reader: impl AsyncRead + Unpin, tx: mpsc::Sender<Bytes>) {
    if !rest.is_empty() && tx.send(Bytes::from(rest)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A body of `length` bytes, or up to the connection's end.
async fn copy_length(mut reader: impl AsyncRead + Unpin, length: Option<u64>, tx: mpsc::Sender<Bytes>) {
    let mut left = length.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; 32 << 10];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match reader.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                left -= n as u64;
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A chunked body, its chunks passed on as they come.
async fn copy_chunked(mut reader: impl tokio::io::AsyncBufRead + Unpin, tx: mpsc::Sender<Bytes>) {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let size = line.trim().split(';').next().unwrap_or("");
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return;
        };
        if size == 0 {
            return;
        }
        let mut data = vec![0u8; size];
        if reader.read_exact(&mut data).await.is_err() {
            return;
        }
        if tx.send(Bytes::from(data)).await.is_err() {
            return;
        }
        let mut crlf = [0u8; 2];
        if reader.read_exact(&mut crlf).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_pod_streams_are_served_to_other_nodes() {
        assert!(served_path("/api/v1/namespaces/default/pods/web/log"));
        assert!(served_path("/api/v1/namespaces/default/pods/web/exec"));
        assert!(served_path("/api/v1/namespaces/a/pods/b/portforward"));
        assert!(!served_path("/api/v1/namespaces/default/pods/web"));
        assert!(!served_path("/api/v1/namespaces/default/pods/web/status"));
        assert!(!served_path("/api/v1/namespaces/default/secrets/x/log"));
        assert!(!served_path("/api/v1/pods"));
        assert!(!served_path("/apis/apps/v1/namespaces/default/pods/web/exec"));
    }

    #[test]
    fn a_link_accepts_every_keys_token_and_sends_the_first() {
        let link = NodeLink::new("a".into(), |p| {
            assert_eq!(p, PURPOSE);
            vec!["new".into(), "old".into()]
        });
        assert_eq!(link.send, "new");
        assert!(link.accepts("new") && link.accepts("old"));
        assert!(!link.accepts("") && !link.accepts("ne") && !link.accepts("newer"));
    }

    #[test]
    fn a_nodes_endpoint_is_read_from_its_status_and_annotation() {
        let mut node = json!({"metadata": {"name": "n1", "annotations": {
                peapod_actors::config::DAEMON_CA_ANNOTATION: "PEM"}},
            "status": {"addresses": [{"type": "Hostname", "address": "h"},
                    {"type": "InternalIP", "address": "10.0.0.7"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        let r = remote_of(&node).unwrap();
        assert_eq!(
            (r.node.as_str(), r.addr.to_string().as_str(), r.ca_pem.as_str()),
            ("n1", "10.0.0.7:10250", "PEM")
        );
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = json!(0);
        assert!(remote_of(&node).unwrap_err().contains("kubeletEndpoint.Port"));
    }

    #[tokio::test]
    async fn chunked_bodies_are_passed_on_chunk_by_chunk() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n".to_vec();
        let (tx, mut rx) = mpsc::channel(8);
        copy_chunked(BufReader::new(std::io::Cursor::new(body)), tx).await;
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"hello, world");
    }
}
