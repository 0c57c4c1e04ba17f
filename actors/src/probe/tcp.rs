//! The `tcpSocket` handler: success when a TCP connection opens in time.

use super::Outcome;
use std::time::Duration;

/// Connects to `host:port` within `timeout`; kubelet's wording on failure.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = super::join_host_port(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: connect: {}", super::os_error_text(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}
