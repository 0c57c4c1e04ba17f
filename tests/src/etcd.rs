//! A 3-member etcd cluster on loopback ports (`scripts/etcd-test-cluster.sh`),
//! its data in a temporary directory; every member killed by its PID when dropped.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running 3-member etcd cluster.
pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    /// Client `127.0.0.1:PORT` of members m1, m2, m3.
    pub clients: Vec<String>,
    /// With TLS: the directory of `ca.crt`, `server.*` and `client.*`.
    pub tls: Option<PathBuf>,
}

impl EtcdCluster {
    pub fn start() -> EtcdCluster {
        Self::start_on("127.0.0.1")
    }

    /// The cluster listening on `host` (an address of this machine).
    pub fn start_on(host: &str) -> EtcdCluster {
        Self::start_with(host, false)
    }

    /// The cluster on 127.0.0.1 speaking TLS to clients, which must show a
    /// certificate of its CA: `tls/ca.crt` signed the members' `server.crt`
    /// (for 127.0.0.1) and a client's `client.crt` (CN peapod-node); `stranger.crt`
    /// is a client certificate of another CA.
    pub fn start_tls() -> EtcdCluster {
        Self::start_with("127.0.0.1", true)
    }

    fn start_with(host: &str, tls: bool) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("pp-etcd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let tls = tls.then(|| {
            let t = dir.path().join("tls");
            std::fs::create_dir(&t).unwrap();
            crate::pki::ca(&t, "ca");
            crate::pki::signed(
                &t,
                "ca",
                "server",
                "/CN=etcd",
                &format!("subjectAltName=IP:{host}\nextendedKeyUsage=serverAuth,clientAuth\n"),
            );
            crate::pki::client_certificate(&t, "ca", "client", "/CN=peapod-node");
            crate::pki::ca(&t, "other");
            crate::pki::client_certificate(&t, "other", "stranger", "/CN=stranger");
            t
        });
        // Held together while choosing, so the six ports differ.
        let listeners: Vec<_> = (0..6)
            .map(|_| std::net::TcpListener::bind((host, 0)).expect("a free port"))
            .collect();
        let ports: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port().to_string())
            .collect();
        drop(listeners);
        let cluster = EtcdCluster {
            clients: vec![
                format!("{host}:{}", ports[0]),
                format!("{host}:{}", ports[2]),
                format!("{host}:{}", ports[4]),
            ],
            dir,
            tls,
        };
        let mut up = Command::new("bash");
        up.arg(script())
            .arg("up")
            .arg(cluster.dir.path())
            .args(&ports)
            .env("ETCD_HOST", host);
        if let Some(t) = &cluster.tls {
            up.env("ETCD_TLS_DIR", t);
        }
        let out = up.output().expect("run etcd-test-cluster.sh");
        assert!(
            out.status.success(),
            "etcd test cluster: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    /// `etcd://` URL of every member, with a key prefix of its own.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{}", self.clients.join(","), prefix.trim_start_matches('/'))
    }

    /// The PID of member `i` (0-based), if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        let p = std::fs::read_to_string(self.dir.path().join(format!("m{}.pid", i + 1))).ok()?;
        let pid: u32 = p.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Kills member `i` with SIGKILL and waits until it is gone.
    pub fn kill(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&self, i: usize) {
        let status = Command::new("bash")
            .arg(self.dir.path().join(format!("m{}.sh", i + 1)))
            .status()
            .expect("start an etcd member");
        assert!(status.success());
    }

    /// etcdctl for every member (with the client certificate under TLS).
    fn etcdctl(&self) -> Command {
        let mut c = Command::new("etcdctl");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = self.clients.iter().map(|e| format!("{scheme}://{e}")).collect();
        c.env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "--dial-timeout", "2s"]);
        if let Some(t) = &self.tls {
            c.arg("--cacert")
                .arg(t.join("ca.crt"))
                .arg("--cert")
                .arg(t.join("client.crt"))
                .arg("--key")
                .arg(t.join("client.key"));
        }
        c
    }

    /// The index of the member that leads now, as the members report it.
    pub fn leader(&self) -> Option<usize> {
        let out = self
            .etcdctl()
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        let status: Value = serde_json::from_slice(&out.stdout).ok()?;
        let statuses = status.as_array()?;
        let leader = statuses.iter().find_map(|s| s["Status"]["leader"].as_u64())?;
        statuses
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|s| s["Endpoint"].as_str())
            .and_then(|e| self.clients.iter().position(|c| e.ends_with(c.as_str())))
    }

    /// Every key that contains `part` (etcdctl, keys only).
    pub fn keys_with(&self, part: &str) -> Vec<String> {
        let out = self
            .etcdctl()
            .args(["get", "", "--prefix", "--keys-only"])
            .output()
            .expect("run etcdctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|k| k.contains(part))
            .map(str::to_string)
            .collect()
    }

    /// Writes `value` at `key` behind every daemon's back (etcdctl put).
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl().args(["put", key, value]).output().expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The members' logs, for a failure message.
    pub fn logs(&self) -> String {
        (1..=3)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd-test-cluster.sh")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}
