//! Several nodes of one cluster: a 3-member etcd cluster and a daemon per
//! node on it, with short election and heartbeat timings so failover tests
//! take seconds. Every node keeps its own bridge, pod range and nft table;
//! the cluster shares one service range and one Secret key file.

use crate::etcd::EtcdCluster;
use crate::{wait_for, Node};
use serde_json::Value;
use std::time::Duration;

/// How long a leader's Lease lasts unrenewed in test clusters.
pub const LEASE: Duration = Duration::from_secs(4);
/// How long a silent node stays Ready in test clusters.
pub const NODE_GRACE: Duration = Duration::from_secs(6);

/// A cluster of nodes on one etcd. Dropped: the nodes first, then their
/// network namespaces and link, then etcd.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub lan: Option<Lan>,
    pub etcd: EtcdCluster,
    shared: tempfile::TempDir,
}

/// Separate hosts on one link: a network namespace per node, joined by a
/// bridge in the host's namespace (`10.201.<k>.1/24`, where etcd listens);
/// node `i` is `10.201.<k>.<i+2>` with its default route through the bridge.
pub struct Lan {
    pub bridge: String,
    pub netns: Vec<String>,
    pub subnet: u32,
}

static NEXT_LAN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn run(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run a network command");
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    fn start(n: usize) -> Lan {
        let k = (std::process::id() % 50 * 4 + NEXT_LAN.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) % 200 + 1;
        let lan = Lan {
            bridge: format!("ppclbr{k}"),
            netns: (0..n).map(|i| format!("ppcl{k}-{i}")).collect(),
            subnet: k,
        };
        run(&["ip", "link", "add", &lan.bridge, "type", "bridge"]);
        run(&["ip", "addr", "add", &format!("10.201.{k}.1/24"), "dev", &lan.bridge]);
        run(&["ip", "link", "set", &lan.bridge, "up"]);
        for (i, ns) in lan.netns.iter().enumerate() {
            let host_side = format!("ppcl{k}h{i}");
            run(&["ip", "netns", "add", ns]);
            run(&[
                "ip", "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            run(&["ip", "link", "set", &host_side, "master", &lan.bridge, "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.201.{k}.{}/24", i + 2),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.201.{k}.1"),
            ]);
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        lan
    }

    /// The address of the host's end, where etcd listens.
    pub fn host_ip(&self) -> String {
        format!("10.201.{}.1", self.subnet)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Daemons and pods before the namespaces they run in; etcd last (its field's drop).
        self.nodes.clear();
        self.lan = None;
    }
}

impl Cluster {
    /// `n` nodes named `<prefix>-0`…, all Ready, all in the host's network namespace.
    pub fn start(prefix: &str, n: usize) -> Cluster {
        Self::start_with(prefix, n, false, &[])
    }

    /// `n` nodes, each in a network namespace of its own on one link (see
    /// [`Lan`]), routing each other's pod ranges (`--cluster-cidr`).
    pub fn start_on_lan(prefix: &str, n: usize) -> Cluster {
        Self::start_with(prefix, n, true, &[])
    }

    /// As [`Cluster::start_on_lan`], every daemon with `extra` flags too.
    pub fn start_on_lan_with(prefix: &str, n: usize, extra: &[&str]) -> Cluster {
        Self::start_with(prefix, n, true, extra)
    }

    fn start_with(prefix: &str, n: usize, separate: bool, extra: &[&str]) -> Cluster {
        let lan = separate.then(|| Lan::start(n));
        let etcd = match &lan {
            Some(l) => EtcdCluster::start_on(&l.host_ip()),
            None => EtcdCluster::start(),
        };
        let shared = tempfile::Builder::new()
            .prefix("pp-cl-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let keys = shared.path().join("secret-encryption.keys");
        let url = etcd.url(&format!("{prefix}-{}", std::process::id()));
        // One service range for the cluster, apart from every lone test node's.
        let services = format!("10.121.{}.0/24", std::process::id() % 250);
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            let keys = keys.display().to_string();
            let args = [
                "--store",
                &url,
                "--node-name",
                &name,
                "--encryption-key-file",
                &keys,
                "--service-cluster-ip-range",
                &services,
                "--leader-elect-lease-duration",
                "4s",
                "--leader-elect-renew-deadline",
                "3s",
                "--leader-elect-retry-period",
                "1s",
                "--node-monitor-grace-period",
                "6s",
                // Heartbeats well inside the grace, as kubelet's 10 s are inside 40 s.
                "--node-status-update-frequency",
                "1s",
                "--etcd-compaction-interval",
                "1m",
                // Nodes on one host share its address: each picks a free port.
                "--kubelet-port",
                "0",
            ];
            let mut args: Vec<&str> = args.to_vec();
            if separate {
                // Every test node's range is in 10.99.0.0/16.
                args.extend(["--cluster-cidr", "10.99.0.0/16"]);
            }
            args.extend_from_slice(extra);
            let netns = lan.as_ref().map(|l| l.netns[i].as_str());
            nodes.push(Node::start_in(netns, &args, |_| {}));
        }
        let cluster = Cluster {
            nodes,
            lan,
            etcd,
            shared,
        };
        for i in 0..n {
            cluster.wait_ready(i, true);
        }
        cluster
    }

    /// The Secret key file every node shares.
    pub fn key_file(&self) -> std::path::PathBuf {
        self.shared.path().join("secret-encryption.keys")
    }

    /// The name of node `i`.
    pub fn name(&self, i: usize) -> String {
        self.node_names()[i].clone()
    }

    fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let args = n.extra_args();
                let i = args.iter().position(|a| a == "--node-name").expect("--node-name");
                args[i + 1].clone()
            })
            .collect()
    }

    /// The node index whose name is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.node_names().iter().position(|n| n == name)
    }

    /// A node that runs, to ask the cluster through.
    pub fn any_alive(&self) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.daemon_pid().is_some())
            .expect("a node with a daemon")
    }

    /// Waits until node `i`'s Ready condition is True (or not), as any live node reports it.
    pub fn wait_ready(&self, i: usize, ready: bool) -> Value {
        let name = self.node_names()[i].clone();
        wait_for(&format!("node {name} Ready={ready}"), NODE_GRACE * 4, || {
            let node = self.any_alive().get("node", &name)?;
            let status = node["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?["status"]
                .as_str()?
                .to_string();
            ((status == "True") == ready).then_some(node)
        })
    }

    /// The node holding a leader Lease (`kube-scheduler`, `kube-controller-manager`).
    pub fn leader(&self, lease: &str) -> Option<String> {
        let out = self
            .any_alive()
            .peapod(&["get", "lease", lease, "-n", "kube-system", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    /// Every pod in the cluster, as any live node lists it.
    pub fn pods(&self, selector: Option<&str>) -> Vec<Value> {
        self.any_alive().list("pods", selector)
    }

    /// The node that runs pod `name` (by its `spec.nodeName`).
    pub fn node_of(&self, pod: &Value) -> Option<&Node> {
        let name = pod["spec"]["nodeName"].as_str()?;
        self.index_of(name).map(|i| &self.nodes[i])
    }
}

impl Cluster {
    /// What the cluster looks like, for a failure message: pods, nodes and each daemon's last log lines.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let alive = self.any_alive();
        for args in [["get", "pods", "-A", "-o", "wide"], ["get", "nodes", "-o", "wide", ""]] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            let o = alive.peapod(&args);
            out.push_str(&String::from_utf8_lossy(&o.stdout));
            out.push_str(&String::from_utf8_lossy(&o.stderr));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let log = n.daemon_log();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            out.push_str(&format!("\n--- node {i} ({}) log tail ---\n", self.name(i)));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// [`wait_for`], with [`Cluster::dump`] in the failure.
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let end = std::time::Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if std::time::Instant::now() > end {
                panic!("timed out after {timeout:?} waiting for {what}\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `duration` as a short text, for figures printed by tests.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
