//! Test support: a real `peapod daemon` in a temporary root and run dir,
//! driven through the real CLI, and torn down (processes, mounts, cgroups)
//! even when the test fails.

pub mod bench;
pub mod cluster;
pub mod etcd;
pub mod layout;
pub mod pki;
pub mod registry;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the README's set-up leaves the busybox OCI layout.
pub const TEST_IMAGE: &str = "/var/lib/peapod/test-image/busybox";

/// A build output next to the test executable (`target/<profile>/<name>`),
/// falling back to the debug profile when the current one has none.
pub fn artifact(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let here = dir.join(name);
    let debug = dir.parent().map(|t| t.join("debug").join(name)).unwrap_or_default();
    let found = if here.exists() { here } else { debug };
    assert!(
        found.exists(),
        "{} missing: run `cargo build --workspace` first",
        found.display()
    );
    found
}

/// The `peapod` binary next to the test executable (or `PEAPOD_BIN`).
pub fn binary() -> PathBuf {
    if let Ok(b) = std::env::var("PEAPOD_BIN") {
        return PathBuf::from(b);
    }
    artifact("peapod")
}

/// The built-in volume plugins, as `cargo build --workspace` leaves them.
pub const BUILTIN_PLUGINS: &[&str] = &["libpeapod_emptydir.so", "libpeapod_hostpath.so"];
/// The local provisioner: a node with it gets the default StorageClass.
pub const LOCAL_PLUGIN: &str = "libpeapod_local.so";
/// The RBD plugin.
pub const RBD_PLUGIN: &str = "libpeapod_rbd.so";
/// The NFS plugin and its userspace client.
pub const NFS_PLUGIN: &str = "libpeapod_nfs.so";
pub const NFS_HELPER: &str = "peapod-nfs-fuse";

/// A test NFS server (nfs-ganesha + rpcbind on 127.0.0.1, `scripts/nfs-test-server.sh`),
/// exporting [`NfsServer::export_dir`] as `/export`; stopped when dropped.
pub struct NfsServer {
    pub dir: tempfile::TempDir,
}

impl NfsServer {
    pub fn start() -> NfsServer {
        let dir = tempfile::Builder::new()
            .prefix("pp-nfs-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nfs-test-server.sh");
        let server = NfsServer { dir };
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(server.dir.path())
            .output()
            .expect("run nfs-test-server.sh");
        assert!(
            out.status.success(),
            "NFS test server: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        server
    }

    /// The directory exported as `/export`.
    pub fn export_dir(&self) -> PathBuf {
        self.dir.path().join("export")
    }
}

/// A temporary directory (`/tmp/<prefix>…`) for a test server, and a free
/// `127.0.0.1:PORT` for it to listen on.
pub fn server_dir_and_address(prefix: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    (dir, format!("127.0.0.1:{port}"))
}

/// A Prometheus server (Debian's `prometheus`) on 127.0.0.1 scraping
/// `targets` every second, its data in a temporary directory; killed (by
/// its PID) when dropped.
pub struct PrometheusServer {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    pub fn start(targets: &[String]) -> PrometheusServer {
        let (dir, address) = server_dir_and_address("pp-prom-");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: peapod\n  static_configs: [{{targets: [{}]}}]\n",
            list.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus (scripts/setup.sh installs it)");
        let server = PrometheusServer {
            child,
            address,
            _dir: dir,
        };
        wait_for("prometheus ready", Duration::from_secs(60), || {
            std::net::TcpStream::connect(&server.address)
                .is_ok()
                .then(|| http_get(&server.address, "/-/ready"))
                .filter(|(code, _)| *code == 200)
        });
        server
    }

    /// An instant query: each result's labels and value.
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let (code, body) = http_get(&self.address, &format!("/api/v1/query?query={}", url_encode(promql)));
        assert_eq!(code, 200, "query {promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {promql}: {e}: {body}"));
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let value = r["value"][1].as_str().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A single-node Ceph cluster for the tests (one mon, one memstore OSD,
/// pool `rbd`; `scripts/ceph-test-cluster.sh`); stopped when dropped.
pub struct CephCluster {
    pub dir: tempfile::TempDir,
}

impl CephCluster {
    pub fn start() -> CephCluster {
        let dir = tempfile::Builder::new()
            .prefix("pp-ceph-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let cluster = CephCluster { dir };
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("up")
            .arg(cluster.dir.path())
            .output()
            .expect("run ceph-test-cluster.sh");
        assert!(
            out.status.success(),
            "Ceph test cluster: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ceph-test-cluster.sh")
    }

    /// The admin keyring.
    pub fn keyring(&self) -> PathBuf {
        self.dir.path().join("ceph.client.admin.keyring")
    }

    /// Runs `rbd` against the cluster; stdout.
    pub fn rbd(&self, args: &[&str]) -> String {
        self.tool("rbd", args)
    }

    /// Runs a Ceph tool (`rbd`, `rados`) against the cluster; stdout.
    pub fn tool(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .arg("60")
            .arg(tool)
            .arg("-c")
            .arg(self.dir.path().join("ceph.conf"))
            .args(args)
            .output()
            .expect("run a ceph tool");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for CephCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nfs-test-server.sh");
        let _ = Command::new("bash")
            .arg(&script)
            .arg("down")
            .arg(self.dir.path())
            .status();
    }
}

/// One isolated node.
pub struct Node {
    /// Temporary directory holding root/ and run/.
    pub dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// This node's slot: its bridge is `pptest<n>` and its pod CIDR `10.99.<n>.0/24`.
    pub net: u32,
    /// More `peapod daemon` flags for this node.
    extra_args: Vec<String>,
    /// Environment of the next daemon start (e.g. `PEAPOD_FAULTS`).
    env: Vec<(String, String)>,
    /// The network namespace (`/run/netns/NAME`) the daemon runs in; `None`: the host's.
    netns: Option<String>,
    /// The `peapod` the next daemon start runs; `None`: [`binary`].
    program: Option<PathBuf>,
}

static NEXT_NET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Node {
    /// Imports the test image and starts a daemon with the built-in plugins.
    pub fn start() -> Node {
        Self::start_with(|_| {})
    }

    /// Like [`Node::start`], after `prepare` (e.g. dropping more plugins into
    /// [`Node::plugin_dir`]) runs before the daemon starts.
    pub fn start_with(prepare: impl FnOnce(&Node)) -> Node {
        Self::start_with_args(&[], prepare)
    }

    /// Like [`Node::start_with`], with more daemon flags.
    pub fn start_with_args(args: &[&str], prepare: impl FnOnce(&Node)) -> Node {
        Self::start_in(None, args, prepare)
    }

    /// Like [`Node::start_with_args`], the daemon in network namespace
    /// `netns` (entered with `nsenter --net`, so it keeps the host's mounts
    /// and cgroups); the CLI still reaches it through its unix socket.
    pub fn start_in(netns: Option<&str>, args: &[&str], prepare: impl FnOnce(&Node)) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("pp-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let n = NEXT_NET.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let net = (std::process::id() % 50 * 5 + n) % 250 + 1;
        let mut node = Node {
            dir,
            daemon: None,
            net,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            netns: netns.map(str::to_string),
            program: None,
        };
        node.import_image("busybox:1.35");
        std::fs::create_dir_all(node.plugin_dir()).unwrap();
        for p in BUILTIN_PLUGINS {
            std::fs::copy(artifact(p), node.plugin_dir().join(p)).expect("copy plugin");
        }
        prepare(&node);
        node.start_daemon();
        node
    }

    /// The value of daemon flag `name` this node was given, if any.
    pub fn flag(&self, name: &str) -> Option<String> {
        let i = self.extra_args.iter().position(|a| a == name)?;
        self.extra_args.get(i + 1).cloned()
    }

    /// The daemon flags this node was given beyond the harness's own.
    pub fn extra_args(&self) -> &[String] {
        &self.extra_args
    }

    /// `image ls` of this node's store, as printed.
    pub fn image_list(&self) -> String {
        let root = self.root().display().to_string();
        self.ok(&["image", "ls", "--root-dir", &root])
    }

    /// The stored images' names and digests: `image ls` without its
    /// columns that move with time.
    pub fn stored_images(&self) -> Vec<(String, String)> {
        self.image_list()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    }

    /// Imports the test image into this node's store under `tag`.
    pub fn import_image(&self, tag: &str) {
        let root = self.root().display().to_string();
        let out = self.peapod(&["image", "import", "--root-dir", &root, TEST_IMAGE, "--tag", tag]);
        assert!(
            out.status.success(),
            "image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the CLI without waiting for it (e.g. a delete that waits out a grace period).
    pub fn spawn_peapod(&self, args: &[&str]) -> Child {
        Command::new(binary())
            .args(args)
            .env("PEAPOD_SOCKET", self.run_dir().join("peapod.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run peapod")
    }

    /// This node's volume plugin directory.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Before the daemon starts (in a `start_with` closure): adds the built
    /// plugin `lib`, with `config` as its configuration file `<name>.yaml`.
    pub fn add_plugin(&self, lib: &str, config: Option<(&str, String)>) {
        std::fs::copy(artifact(lib), self.plugin_dir().join(lib)).expect("copy plugin");
        if let Some((name, text)) = config {
            std::fs::create_dir_all(self.plugin_config_dir()).unwrap();
            std::fs::write(self.plugin_config_dir().join(format!("{name}.yaml")), text).unwrap();
        }
    }

    /// The NFS plugin's configuration: its userspace client.
    pub fn nfs_config() -> (&'static str, String) {
        (
            "nfs",
            format!("client: fuse\nfuseHelper: {}\n", artifact(NFS_HELPER).display()),
        )
    }

    /// The RBD plugin's configuration for `ceph`, mapping through rbd-fuse.
    pub fn rbd_config(ceph: &CephCluster) -> (&'static str, String) {
        (
            "rbd",
            format!(
                "monitors: 127.0.0.1:6789\nkeyring: {}\nmapper: fuse\n",
                ceph.keyring().display()
            ),
        )
    }

    /// Starts a node with the local provisioner too (so a default class).
    pub fn start_with_local_storage() -> Node {
        Self::start_with(|n| n.add_plugin(LOCAL_PLUGIN, None))
    }

    /// Starts a node with the NFS plugin, its client the userspace one.
    pub fn start_with_nfs() -> Node {
        Self::start_with(|n| n.add_plugin(NFS_PLUGIN, Some(Self::nfs_config())))
    }

    /// Starts a node with the RBD plugin configured for `ceph`, mapping through rbd-fuse.
    pub fn start_with_rbd(ceph: &CephCluster) -> Node {
        Self::start_with(|n| n.add_plugin(RBD_PLUGIN, Some(Self::rbd_config(ceph))))
    }

    /// Where the daemon reads its plugins' configuration files.
    pub fn plugin_config_dir(&self) -> PathBuf {
        self.dir.path().join("plugin-config")
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The daemon's root dir.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The daemon's run dir.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Sets the environment of later daemon starts (replacing what was set).
    /// `PEAPOD_FAULTS` arms the test build's fault points (actors/src/faults.rs).
    pub fn set_env(&mut self, vars: &[(&str, &str)]) {
        self.env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Arms fault points in the running daemon (and the shims it starts)
    /// from now on, replacing what was armed this way before.
    pub fn arm(&self, faults: &str) {
        let file = self.dir.path().join("faults");
        let tmp = self.dir.path().join("faults.tmp");
        std::fs::write(&tmp, faults).unwrap();
        std::fs::rename(tmp, file).unwrap();
    }

    /// Starts the daemon with `PEAPOD_FAULTS=faults` (and nothing else armed).
    pub fn restart_with_faults(&mut self, faults: &str) {
        self.kill_daemon();
        self.set_env(&[("PEAPOD_FAULTS", faults)]);
        self.start_daemon();
    }

    /// Waits for the daemon process to end by itself (a fault killed it).
    pub fn wait_daemon_exit(&mut self, timeout: Duration) {
        let child = self.daemon.as_mut().expect("daemon running");
        wait_for("the daemon to die", timeout, || {
            child.try_wait().ok().flatten().map(|_| ())
        });
        self.daemon = None;
    }

    /// The live actor tree (`peapod tree -o json`).
    pub fn tree(&self) -> Value {
        serde_json::from_str(&self.ok(&["tree", "-o", "json"])).expect("tree json")
    }

    /// Pids of this node's shim processes whose command line contains `filter`.
    pub fn shims(&self, filter: &str) -> Vec<u32> {
        let root = self.root().display().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("shim run --config") && cmd.contains(&root) && cmd.contains(filter) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Processes running in a pod's cgroup (any container), by the pids hierarchy.
    pub fn pod_processes(&self, pod: &Value) -> Vec<u32> {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let dir = PathBuf::from(format!("/sys/fs/cgroup/pids/peapod/pod{uid}"));
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for line in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(p) = line.trim().parse() {
                    out.push(p);
                }
            }
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out
    }

    /// Runs the daemon from `program` at its next start (e.g. a copy of
    /// `peapod` without `peapod-shim` beside it).
    pub fn set_program(&mut self, program: PathBuf) {
        self.program = Some(program);
    }

    /// Starts (or restarts) the daemon and waits for its socket.
    pub fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let program = self.program.clone().unwrap_or_else(binary);
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = command
            .args(["daemon", "--root-dir"])
            .arg(self.root())
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--cni-conf-dir")
            .arg(self.dir.path().join("cni"))
            .args(["--cni-bridge", &self.bridge()])
            .args(
                // A test that needs more addresses passes its own --pod-cidr;
                // one that gives a --node-cidr-mask-size has its node claim a
                // range from --cluster-cidr.
                (!self
                    .extra_args
                    .iter()
                    .any(|a| a == "--pod-cidr" || a == "--node-cidr-mask-size"))
                .then(|| ["--pod-cidr".to_string(), self.pod_cidr()])
                .into_iter()
                .flatten(),
            )
            // Every node its own service addresses, node ports and nftables
            // table, so nodes run side by side (nodes of one cluster pass
            // the cluster's own ranges).
            .args(
                (!self.extra_args.iter().any(|a| a == "--service-cluster-ip-range"))
                    .then(|| ["--service-cluster-ip-range".to_string(), self.service_cidr()])
                    .into_iter()
                    .flatten(),
            )
            .args(
                (!self.extra_args.iter().any(|a| a == "--service-node-port-range"))
                    .then(|| ["--service-node-port-range".to_string(), self.node_port_range()])
                    .into_iter()
                    .flatten(),
            )
            .args(["--service-proxy-table", &self.proxy_table()])
            .arg("--plugin-dir")
            .arg(self.plugin_dir())
            .arg("--plugin-config-dir")
            .arg(self.plugin_config_dir())
            .args(["--plugin-timeout", "3", "--housekeeping-interval", "1"])
            .args(
                // Every node its own metrics port, so nodes run side by side.
                (!self
                    .extra_args
                    .iter()
                    .any(|a| a == "--metrics-address" || a == "--no-metrics"))
                .then_some(["--metrics-address", "127.0.0.1:0"])
                .into_iter()
                .flatten(),
            )
            .args(&self.extra_args)
            .env("PEAPOD_FAULTS_FILE", self.dir.path().join("faults"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start daemon");
        self.daemon = Some(child);
        let sock = self.run_dir().join("peapod.sock");
        let _ = std::fs::remove_file(self.run_dir().join("metrics-address"));
        wait_for("daemon socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok().then_some(())
        });
    }

    /// The `IP:port` the daemon serves metrics on.
    pub fn metrics_address(&self) -> String {
        let file = self.run_dir().join("metrics-address");
        wait_for("metrics address", Duration::from_secs(20), || {
            std::fs::read_to_string(&file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
    }

    /// `GET path` on the metrics listener: the status code and the body.
    pub fn metrics_get(&self, path: &str) -> (u16, String) {
        http_get(&self.metrics_address(), path)
    }

    /// One scrape of `/metrics`, parsed.
    pub fn scrape(&self) -> Scrape {
        let (code, body) = self.metrics_get("/metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        Scrape::parse(&body)
    }

    /// The pod CIDR of this node.
    pub fn pod_cidr(&self) -> String {
        self.extra_args
            .iter()
            .position(|a| a == "--pod-cidr")
            .and_then(|i| self.extra_args.get(i + 1).cloned())
            .unwrap_or_else(|| format!("10.99.{}.0/24", self.net))
    }

    /// This node's service cluster IP range.
    pub fn service_cidr(&self) -> String {
        self.extra_args
            .iter()
            .position(|a| a == "--service-cluster-ip-range")
            .and_then(|i| self.extra_args.get(i + 1).cloned())
            .unwrap_or_else(|| format!("10.120.{}.0/24", self.net))
    }

    /// This node's NodePort range: ten ports of its own.
    pub fn node_port_range(&self) -> String {
        let first = 30000 + self.net * 10;
        format!("{first}-{}", first + 9)
    }

    /// The nftables table this node's service proxy programs.
    pub fn proxy_table(&self) -> String {
        format!("pptest{}", self.net)
    }

    /// The pod bridge of this node.
    pub fn bridge(&self) -> String {
        format!("pptest{}", self.net)
    }

    /// The daemon's pid, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// `kill -9` of the daemon; containers and shims keep running.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CLI against this node, to run or spawn (a follow, a watch).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env("PEAPOD_SOCKET", self.run_dir().join("peapod.sock"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the CLI against this node.
    pub fn peapod(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run peapod")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.peapod(args);
        assert!(
            out.status.success(),
            "peapod {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A container's logs, or nothing while it cannot have any yet.
    pub fn logs(&self, pod: &str, container: &str) -> String {
        let out = self.peapod(&["logs", pod, "-c", container]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `yaml` to a file and applies it.
    pub fn apply(&self, yaml: &str) -> String {
        let f = self.dir.path().join(format!("m{}.yaml", rand_suffix()));
        std::fs::write(&f, yaml).unwrap();
        self.ok(&["apply", "-f", f.to_str().unwrap()])
    }

    /// The pod object, if it exists.
    pub fn pod(&self, name: &str) -> Option<Value> {
        let out = self.peapod(&["get", "pod", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("pod json"))
    }

    /// An object of any kind (`rs`, `node` …), if it exists.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.peapod(&["get", kind, name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("object json"))
    }

    /// The objects of a kind in the default namespace, optionally by label selector.
    pub fn list(&self, kind: &str, selector: Option<&str>) -> Vec<Value> {
        let mut args = vec!["get", kind, "-o", "json"];
        if let Some(s) = selector {
            args.extend(["-l", s]);
        }
        let list: Value = serde_json::from_str(&self.ok(&args)).expect("list json");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `f(pod)` holds.
    pub fn wait_pod(&self, name: &str, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, timeout, || self.pod(name).filter(|p| f(p)))
    }
}

/// A pod running `script` in busybox with claim `claim` at `/data`
/// (restartPolicy Never, grace period 1 s).
pub fn pod_with_claim(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

/// A name no other call in this process gets: threads applying at the same
/// clock tick once wrote one manifest file and applied each other's pods.
fn rand_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos}-{n}")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The actor under `path` in a tree snapshot: kinds and names, e.g.
/// `[("PodActor", "default/web"), ("ContainerActor", "c")]` below the node.
pub fn tree_find<'a>(tree: &'a Value, path: &[(&str, &str)]) -> Option<&'a Value> {
    let mut here = tree["items"].as_array()?.first()?;
    for (kind, name) in path {
        here = here["children"]
            .as_array()?
            .iter()
            .find(|c| c["kind"] == *kind && c["name"] == *name)?;
    }
    Some(here)
}

/// Every actor in a tree snapshot whose kind starts with `orphaned:`.
pub fn tree_orphans(tree: &Value) -> Vec<Value> {
    tree["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["kind"].as_str().is_some_and(|k| k.starts_with("orphaned:")))
        .cloned()
        .collect()
}

/// A container's status by name.
pub fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_daemon();
        let root = self.dir.path().display().to_string();
        // Shims of this node, then every process left in this node's pod
        // cgroups; twice: a shim the killed daemon had forked but not yet
        // exec'd (its name still the daemon's) is only found the second time.
        let mut uids: Vec<String> = Vec::new();
        for _ in 0..2 {
            let _ = Command::new("pkill")
                .args(["-9", "-f", &format!("shim run --config {root}")])
                .status();
            let pods = std::fs::read_dir(self.root().join("pods"))
                .into_iter()
                .flatten()
                .flatten();
            uids = pods.map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            for uid in &uids {
                for ctrl in ["pids", "memory", "freezer", "cpu,cpuacct", "devices", "blkio", "cpuset"] {
                    let dir = PathBuf::from(format!("/sys/fs/cgroup/{ctrl}/peapod/pod{uid}"));
                    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        for pid in std::fs::read_to_string(e.path().join("cgroup.procs"))
                            .unwrap_or_default()
                            .lines()
                        {
                            let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        // Network attachments a dead daemon left: DEL them as the daemon would.
        let cni = peapod_actors::runtime::cni::Cni::new(peapod_actors::runtime::cni::NetworkConfig {
            conf_dir: self.dir.path().join("cni"),
            bin_dirs: vec!["/usr/lib/cni".into()],
            bridge: self.bridge(),
            pod_cidr: self.pod_cidr(),
            ipam_dir: PathBuf::new(),
            cluster_cidr: self.flag("--cluster-cidr"),
        });
        cni.remove_masquerade();
        for uid in &uids {
            let file = self.root().join("pods").join(uid).join("network.json");
            if let Some(at) = peapod_actors::runtime::cni::read_attachment(&file) {
                let _ = cni.del(&at);
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(Stdio::null())
            .status();
        // The service proxy's rules, as `peapod daemon --cleanup` removes them,
        // and the flows to this node's service addresses and from its pods.
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.proxy_table()])
            .stderr(Stdio::null())
            .status();
        let (svc_net, pod_net) = (self.service_cidr(), self.pod_cidr());
        for (flag, mask_flag, cidr) in [("-d", "--mask-dst", &svc_net), ("-s", "--mask-src", &pod_net)] {
            let (net, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
            let len: u32 = len.parse().unwrap_or(32);
            let mask = std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - len).unwrap_or(0)).to_string();
            let _ = Command::new("conntrack")
                .args(["-D", flag, net, mask_flag, &mask])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Loop devices over this node's volume images (normally released with their last mount),
        // while their backing files still have their paths: detached once their mounts go.
        for e in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            if backing.starts_with(&root) {
                let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                let _ = Command::new("losetup").args(["-d", &dev]).status();
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        // FUSE helpers of this node's volumes (normally gone with their unmount).
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("peapod-nfs-fuse mount .*--mountpoint {root}")])
            .status();
        // rbd-fuse helpers of this node's RBD volumes, once their loop devices are gone.
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("rbd-fuse .*{root}")])
            .status();
        for uid in &uids {
            for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                let dir = e.path().join("peapod").join(format!("pod{uid}"));
                for c in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_dir(c.path());
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// A plain HTTP/1.0 `GET` of `path` at `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

/// One sample of a scrape: its name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape in the text exposition format, parsed.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` lines: family name to type.
    pub types: std::collections::BTreeMap<String, String>,
    pub text: String,
}

impl Scrape {
    /// Parses the text format (as much of it as peapod writes).
    pub fn parse(text: &str) -> Self {
        let mut s = Scrape {
            text: text.to_string(),
            ..Scrape::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(n), Some(t)) = (it.next(), it.next()) {
                    s.types.insert(n.to_string(), t.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut map = std::collections::BTreeMap::new();
            // Label values peapod writes hold no `",` sequences.
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                if let Some((k, v)) = pair.split_once("=\"") {
                    map.insert(
                        k.trim_start_matches(',').to_string(),
                        v.trim_end_matches('"').to_string(),
                    );
                }
            }
            s.samples.push(Sample {
                name: name.to_string(),
                labels: map,
                value: value.parse().unwrap_or(f64::NAN),
            });
        }
        s
    }

    /// Samples named `name` whose labels include every `(key, value)` of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of the samples [`Scrape::find`] returns (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }
}

/// What a helper script printed as its first line (an HTTP status code) and
/// the rest (the body, trimmed); it must have succeeded.
pub fn status_and_body(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
    (code.trim().parse().unwrap_or(0), body.trim().to_string())
}
