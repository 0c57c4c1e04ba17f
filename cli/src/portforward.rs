//! `peapod port-forward`: local TCP ports forwarded to ports on a pod's own
//! loopback, each local connection over its own WebSocket to the daemon
//! (Kubernetes' `v4.channel.k8s.io` port-forward: channel 0 data, 1 errors,
//! each opened by the port as two little-endian bytes).

use crate::client::Client;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};

#[derive(clap::Args)]
pub struct PortForwardArgs {
    /// The pod: `NAME`, `pod/NAME`, or `TYPE/NAME` of a workload
    /// (`deploy/web`: one of its pods, a running one first).
    pod: String,
    /// `[LOCAL:]REMOTE`: a local port (0 or none, as in `:8080`, picks a free
    /// one) forwarded to the pod's port.
    #[arg(required = true)]
    ports: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Local addresses to listen on (comma-separated).
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    address: Vec<IpAddr>,
}

/// `LOCAL:REMOTE`, `:REMOTE` or `PORT` (the same on both sides).
fn parse_ports(spec: &str) -> Result<(u16, u16)> {
    let port = |p: &str| -> Result<u16> {
        p.parse::<u16>()
            .with_context(|| format!("invalid port {p:?} in {spec:?} (want [LOCAL:]REMOTE)"))
    };
    let (local, remote) = match spec.split_once(':') {
        Some(("", r)) => (0, port(r)?),
        Some((l, r)) => (port(l)?, port(r)?),
        None => (port(spec)?, port(spec)?),
    };
    if remote == 0 {
        bail!("invalid port {spec:?}: the pod's port cannot be 0");
    }
    Ok((local, remote))
}

pub fn port_forward(client: &Client, a: PortForwardArgs) -> Result<()> {
    let ns = a.namespace.clone().unwrap_or_else(|| "default".into());
    let pod = crate::commands::pod_of(client, &ns, &a.pod)?;
    let object = client.call("GET", &format!("/api/v1/namespaces/{ns}/pods/{pod}"), None)?;
    let phase = object["status"]["phase"].as_str().unwrap_or("Unknown");
    if phase != "Running" {
        bail!("unable to forward port because pod is not running. Current status={phase}");
    }
    let pairs = a.ports.iter().map(|p| parse_ports(p)).collect::<Result<Vec<_>>>()?;
    let mut threads = Vec::new();
    for (local, remote) in pairs {
        for address in &a.address {
            let listener = TcpListener::bind(SocketAddr::new(*address, local))
                .with_context(|| format!("listen on {address}:{local}"))?;
            let bound = listener.local_addr()?;
            println!("Forwarding from {bound} -> {remote}");
            let (client, ns, pod) = (Client::new(client.socket().to_path_buf()), ns.clone(), pod.clone());
            threads.push(std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    println!("Handling connection for {remote}");
                    let (client, ns, pod) = (Client::new(client.socket().to_path_buf()), ns.clone(), pod.clone());
                    std::thread::spawn(move || {
                        if let Err(e) = forward(&client, &ns, &pod, remote, conn) {
                            eprintln!(
                                "error: an error occurred forwarding {} -> {remote}: {e:#}",
                                bound.port()
                            );
                        }
                    });
                }
            }));
        }
    }
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// One local connection, until the pod's side ends it.
fn forward(client: &Client, ns: &str, pod: &str, remote: u16, local: TcpStream) -> Result<()> {
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/portforward?port={remote}");
    let mut conn = crate::exec::connect(client, &path, "v4.channel.k8s.io")?;
    let socket = conn.socket.clone();
    let mut from_local = local.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_local.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if socket.send(0, &buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut to_local = local;
    // Each channel opens with the port; errors are text after it.
    let mut seen = [false; 2];
    let mut error = Vec::new();
    while let Some((ch, data)) = conn.next_message()? {
        let Some(first) = seen.get_mut(usize::from(ch)) else {
            continue;
        };
        let data = if *first { &data[..] } else { &data[data.len().min(2)..] };
        *first = true;
        match ch {
            0 => {
                if to_local.write_all(data).is_err() {
                    break;
                }
            }
            _ => error.extend_from_slice(data),
        }
    }
    let _ = to_local.shutdown(Shutdown::Both);
    if !error.is_empty() {
        bail!("{}", String::from_utf8_lossy(&error));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn port_pairs_read_as_kubectl_reads_them() {
        assert_eq!(super::parse_ports("8080").unwrap(), (8080, 8080));
        assert_eq!(super::parse_ports(":80").unwrap(), (0, 80));
        assert_eq!(super::parse_ports("9000:80").unwrap(), (9000, 80));
        assert!(super::parse_ports("9000:0").is_err());
        assert!(super::parse_ports("x:80").unwrap_err().to_string().contains("\"x\""));
    }
}
