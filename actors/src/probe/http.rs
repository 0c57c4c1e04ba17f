//! The `httpGet` handler for probes and lifecycle hooks: one HTTP/1.1 GET,
//! success on a status from 200 to 399, as kubelet's prober decides.

use super::Outcome;
use k8s_openapi::api::core::v1::HTTPHeader;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET to send.
pub struct Request<'a> {
    /// TLS (certificate not verified, as kubelet's probes) or plain HTTP.
    pub https: bool,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub headers: &'a [HTTPHeader],
}

/// The request bytes: kubelet's default headers, the probe's headers after
/// them (a `Host` header replaces the default host; `User-Agent` and `Accept` too).
pub fn encode(req: &Request<'_>) -> String {
    let path = if req.path.starts_with('/') {
        req.path.to_string()
    } else {
        format!("/{}", req.path)
    };
    let mut host = super::join_host_port(req.host, req.port);
    let mut user_agent = "kube-probe/1.34".to_string();
    let mut accept = "*/*".to_string();
    let mut extra = String::new();
    for h in req.headers {
        match h.name.to_ascii_lowercase().as_str() {
            "host" => host = h.value.clone(),
            "user-agent" => user_agent = h.value.clone(),
            "accept" => accept = h.value.clone(),
            _ => extra.push_str(&format!("{}: {}\r\n", h.name, h.value)),
        }
    }
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nAccept: {accept}\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// The status code of a response's first line.
pub fn status_code(head: &str) -> Option<u16> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Whether a response head has arrived completely (or cannot grow).
fn head_done(buf: &[u8], got: usize, eof: bool) -> bool {
    eof || got == buf.len() || buf[..got].windows(4).any(|w| w == b"\r\n\r\n")
}

/// The `Location` header of a response head.
pub fn location(head: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("location").then(|| v.trim().to_string())
    })
}

/// Where a redirect leads: `Some(path)` on the same host, `None` elsewhere.
pub fn same_host_target(loc: &str, host: &str) -> Option<String> {
    if loc.starts_with('/') {
        return Some(loc.to_string());
    }
    let rest = loc.strip_prefix("http://").or_else(|| loc.strip_prefix("https://"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let h = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_matches(['[', ']']);
    (h == host).then_some(path)
}

/// One GET; returns the response head.
async fn exchange_plain(req: &Request<'_>, timeout: Duration) -> Result<String, String> {
    let addr = super::join_host_port(req.host, req.port);
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", super::os_error_text(&e)))?;
        stream
            .write_all(encode(req).as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        // Enough for the status line and headers; the body is not needed.
        let mut buf = vec![0u8; 8192];
        let mut got = 0;
        loop {
            let n = stream.read(&mut buf[got..]).await.map_err(|e| format!("read: {e}"))?;
            got += n;
            if head_done(&buf, got, n == 0) {
                return Ok(String::from_utf8_lossy(&buf[..got]).into_owned());
            }
        }
    };
    tokio::time::timeout(timeout, talk)
        .await
        .unwrap_or_else(|_| Err(TIMED_OUT.into()))
}

/// Sends the GET and judges the answer within `timeout` overall, following
/// up to 10 redirects on the same host as kubelet's prober does (a redirect
/// to another host counts as success, as there).
pub async fn probe(req: &Request<'_>, timeout: Duration) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let scheme = if req.https { "https" } else { "http" };
    let mut path = req.path.to_string();
    for _ in 0..=10 {
        let url = format!("{scheme}://{}{path}", super::join_host_port(req.host, req.port));
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Outcome::Failure(format!("Get \"{url}\": {TIMED_OUT}"));
        }
        let this = Request {
            https: req.https,
            host: req.host,
            port: req.port,
            path: &path,
            headers: req.headers,
        };
        let head = if req.https {
            let (host, port, bytes) = (req.host.to_string(), req.port, encode(&this));
            tokio::task::spawn_blocking(move || tls::exchange(&host, port, &bytes, left))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        } else {
            exchange_plain(&this, left).await
        };
        let head = match head {
            Ok(h) => h,
            Err(e) => return Outcome::Failure(format!("Get \"{url}\": {e}")),
        };
        let Some(code) = status_code(&head) else {
            return Outcome::Failure(format!("Get \"{url}\": malformed HTTP response"));
        };
        if (300..400).contains(&code) {
            if let Some(loc) = location(&head) {
                match same_host_target(&loc, req.host) {
                    Some(next) => {
                        path = next;
                        continue;
                    }
                    None => return Outcome::Success,
                }
            }
        }
        return if (200..400).contains(&code) {
            Outcome::Success
        } else {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    Outcome::Failure(format!(
        "Get \"{scheme}://{}{path}\": stopped after 10 redirects",
        super::join_host_port(req.host, req.port)
    ))
}

const TIMED_OUT: &str = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)";

/// HTTPS without certificate verification (kubelet's `InsecureSkipVerify`):
/// the chain and name are not checked, the handshake signatures still are.
mod tls {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};

    #[derive(Debug)]
    struct SkipVerify(Arc<CryptoProvider>);

    impl ServerCertVerifier for SkipVerify {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn config() -> Result<Arc<rustls::ClientConfig>, String> {
        static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
                    .with_no_client_auth();
                Ok(Arc::new(cfg))
            })
            .clone()
    }

    /// Sends `request` over TLS and returns the response head, all within `timeout`.
    pub fn exchange(host: &str, port: u16, request: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let hp = super::super::join_host_port(host, port);
        let addr = hp
            .to_socket_addrs()
            .map_err(|e| format!("dial tcp {hp}: {e}"))?
            .next()
            .ok_or_else(|| format!("dial tcp {hp}: no address"))?;
        let sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                super::TIMED_OUT.to_string()
            } else {
                format!("dial tcp {hp}: connect: {}", super::super::os_error_text(&e))
            }
        })?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = sock.set_read_timeout(Some(left));
        let _ = sock.set_write_timeout(Some(left));
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config()?, name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let io = |e: std::io::Error| {
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                super::TIMED_OUT.to_string()
            } else {
                e.to_string()
            }
        };
        tls.write_all(request.as_bytes()).map_err(io)?;
        let mut buf = vec![0u8; 8192];
        let mut got = 0;
        loop {
            // One deadline for the whole exchange, not one per read.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(super::TIMED_OUT.to_string());
            }
            let _ = tls.sock.set_read_timeout(Some(left));
            let n = tls.read(&mut buf[got..]).map_err(io)?;
            got += n;
            if super::head_done(&buf, got, n == 0) {
                return Ok(String::from_utf8_lossy(&buf[..got]).into_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_overrides_and_extras_follow() {
        let headers = vec![
            HTTPHeader {
                name: "Host".into(),
                value: "example.test".into(),
            },
            HTTPHeader {
                name: "X-Probe".into(),
                value: "1".into(),
            },
        ];
        let r = encode(&Request {
            https: false,
            host: "10.0.0.2",
            port: 8080,
            path: "healthz",
            headers: &headers,
        });
        assert!(r.starts_with("GET /healthz HTTP/1.1\r\nHost: example.test\r\n"), "{r}");
        assert!(r.contains("User-Agent: kube-probe/1.34\r\n"));
        assert!(r.contains("X-Probe: 1\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let plain = encode(&Request {
            https: false,
            host: "fd00::2",
            port: 80,
            path: "/",
            headers: &[],
        });
        assert!(plain.contains("Host: [fd00::2]:80\r\n"), "{plain}");
    }

    #[tokio::test]
    async fn a_redirect_is_judged_by_where_it_leads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut paths = Vec::new();
            for answer in [
                "HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n",
                "HTTP/1.1 500 Oops\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                paths.push(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                );
                s.write_all(answer.as_bytes()).await.unwrap();
            }
            paths
        });
        let req = Request {
            https: false,
            host: "127.0.0.1",
            port,
            path: "/healthz",
            headers: &[],
        };
        assert_eq!(
            probe(&req, Duration::from_secs(2)).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(server.await.unwrap(), ["GET /healthz HTTP/1.1", "GET /login HTTP/1.1"]);
    }

    #[test]
    fn redirects_stay_on_the_host() {
        let head = "HTTP/1.1 302 Found\r\nContent-Length: 0\r\nLocation: /login\r\n\r\n";
        assert_eq!(location(head).as_deref(), Some("/login"));
        assert_eq!(same_host_target("/login", "10.0.0.2").as_deref(), Some("/login"));
        assert_eq!(
            same_host_target("http://10.0.0.2:8080/x", "10.0.0.2").as_deref(),
            Some("/x")
        );
        assert_eq!(same_host_target("https://example.com/", "10.0.0.2"), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code("HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(status_code("SSH-2.0-OpenSSH\r\n"), None);
    }

    #[tokio::test]
    async fn judges_real_responses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for answer in ["HTTP/1.1 302 Found\r\n\r\n", "HTTP/1.1 500 Oops\r\n\r\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let req = Request {
            https: false,
            host: "127.0.0.1",
            port,
            path: "/",
            headers: &[],
        };
        assert_eq!(probe(&req, Duration::from_secs(2)).await, Outcome::Success);
        assert_eq!(
            probe(&req, Duration::from_secs(2)).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        server.await.unwrap();
        let closed = Request {
            https: false,
            host: "127.0.0.1",
            port,
            path: "/",
            headers: &[],
        };
        match probe(&closed, Duration::from_secs(2)).await {
            Outcome::Failure(m) => assert!(m.contains("connect: connection refused"), "{m}"),
            o => panic!("{o:?}"),
        }
    }
}
