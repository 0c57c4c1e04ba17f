//! The side-by-side benchmark: one run, one table, every figure measured on
//! the same machine within minutes of the others, so ratios hold on a noisy
//! machine. Run as root after `scripts/setup.sh` (a release build is used when
//! one exists next to this binary):
//!
//! ```text
//! cargo bench -p peapod-tests --bench node
//! ```
//!
//! - container start: create + start + wait + delete of `/bin/true` through
//!   peapod's shim, `crun run` and `runc run` on one bundle, interleaved. Debian's
//!   crun refuses this cgroup-v1 hybrid host, so all three run in a private
//!   mount namespace without the `unified` hierarchy (the same v1 cgroup
//!   manager for each), with their state on a tmpfs as `/run` is;
//! - pod start: apply→Running p50/p99 of 1, 10, 50 and 100 sequential pods,
//!   and 100 and 500 pods created at once (until all are Running);
//! - footprint: daemon RSS and CPU seconds per idle minute with 0, 100 and 500
//!   pods, and a shim's PSS per container;
//! - `/metrics`: scrape latency and size with 100 and 500 pods;
//! - soak: pod lifecycles (create, run, delete; 4 at a time) beside 20 steady
//!   pods, RSS sampled along the way, and against a fresh daemon with the
//!   same 20 pods;
//! - plugins: a no-op call through the ABI beside the exec of a trivial driver;
//! - pulls: `peapod image pull` of a ~100 MB image in five gzip layers from a
//!   local docker-registry beside `skopeo copy` of it to an OCI layout,
//!   interleaved, and 10 pods of that image started before it is pulled;
//! - remote: `kubectl get pods` with 500 pods (Table beside `-o json`, time
//!   and bytes), an exec of `true` through `peapod exec` and `kubectl exec`
//!   beside the exec helper alone, and port-forward throughput (peapod's,
//!   kubectl's) beside a direct connection to the pod's IP;
//! - services: the service proxy's nftables transaction for 100 and 1000
//!   services, first and after one endpoint changed, HTTP requests
//!   through a cluster IP beside straight to the pod, and DNS queries
//!   through kube-dns;
//! - config: a ConfigMap update until its new content is in a running pod's
//!   volume, and pod starts with five configMap/secret volumes beside the
//!   same pod without them;
//! - cluster: pod apply→Running on an etcd store beside SQLite (one node
//!   each, interleaved), one Deployment of 100 pods per node over three nodes
//!   on a 3-member etcd, the time from a node's daemon death to its pods
//!   Running elsewhere, and API write latency while the etcd leader is killed.
//!
//! `PEAPOD_BENCH_SOAK` (default 2000) sets the lifecycles, `PEAPOD_BENCH_RUNS`
//! (default 30) the container starts per runtime; `PEAPOD_BENCH_QUICK=1` is the
//! short form (fewer of everything, no 500-pod burst); `PEAPOD_BENCH_ONLY`
//! picks sections (`containers,plugins,pods,soak,pulls,remote,services,config,cluster`).

use peapod_tests::bench::{self, cpu_seconds, median, pct, pss_kib, rss_mib};
use peapod_tests::{binary, container, Node};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn quick() -> bool {
    std::env::var("PEAPOD_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The table: (what, figure, beside).
struct Table(Vec<(String, String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>, beside: impl Into<String>) {
        let row = (what.into(), figure.into(), beside.into());
        eprintln!("  {} | {} | {}", row.0, row.1, row.2);
        self.0.push(row);
    }

    fn print(&self) {
        println!("| what | figure | beside it |");
        println!("|---|---|---|");
        for (a, b, c) in &self.0 {
            println!("| {a} | {b} | {c} |");
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} RAM, Linux {}", kernel.trim())
}

// ---- container start: shim beside crun and runc ------------------------------------------

/// A bundle for `/bin/true`: busybox-static as the rootfs, `runc spec` as the
/// config (no terminal, read-only root).
fn bundle(dir: &Path) -> PathBuf {
    let b = dir.join("bundle");
    std::fs::create_dir_all(b.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", b.join("rootfs/bin/busybox")).expect("busybox-static (scripts/setup.sh)");
    std::os::unix::fs::symlink("busybox", b.join("rootfs/bin/true")).unwrap();
    let ok = Command::new("runc").args(["spec", "--bundle"]).arg(&b).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "runc spec (scripts/setup.sh installs runc)"
    );
    let path = b.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["readonly"] = true.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    b
}

/// One create + start + wait + delete through `peapod-shim run` (or, with
/// `program` the one `peapod` binary, `peapod shim run`): the shim reports the
/// start, then waits for the container, deletes it and removes its socket,
/// last of all.
fn shim_once(program: &Path, dir: &Path, bundle: &Path, i: usize) -> Duration {
    // As the daemon lays them out: the log and the records in the pod's
    // directory on disk, the socket and libcontainer's state in the run dir.
    let run = dir.join(format!("shim{i}"));
    std::fs::create_dir_all(&run).unwrap();
    let socket = dir.join("run").join(format!("shim{i}.sock"));
    let config = serde_json::json!({
        "id": format!("bench-shim-{i}"),
        "bundle": bundle,
        "state_root": dir.join("run/state"),
        "log_path": run.join("log"),
        "socket": socket,
        "exit_file": run.join("exit.json"),
        "memory_cgroup": null,
    });
    let file = run.join("shim.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let t = Instant::now();
    let mut cmd = Command::new(program);
    if program.file_name().is_some_and(|n| n == "peapod") {
        cmd.arg("shim");
    }
    let out = cmd
        .args(["run", "--config"])
        .arg(&file)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "shim: {}", String::from_utf8_lossy(&out.stdout));
    while socket.exists() || !run.join("exit.json").exists() {
        std::thread::sleep(Duration::from_micros(100));
        assert!(t.elapsed() < Duration::from_secs(30), "shim {i} did not finish");
    }
    t.elapsed()
}

fn runtime_once(runtime: &str, dir: &Path, bundle: &Path, i: usize) -> Duration {
    let t = Instant::now();
    let st = Command::new(runtime)
        .arg("--root")
        .arg(dir.join("run").join(format!("{runtime}-state")))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("bench-{runtime}-{i}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let took = t.elapsed();
    assert!(st.success(), "{runtime} run failed");
    took
}

/// In the private mount namespace: the timings, one JSON line on stdout.
///
/// The order within a round turns with each round, so that every runtime
/// follows every other as often. It matters: the first move of a process
/// into a cgroup v1 hierarchy waits for an RCU grace period (the kernel's
/// cgroup_threadgroup_rwsem), 8 to 20 ms on this VM, unless another move
/// happened within about one grace period before. With a fixed order, crun
/// always ran right after the shim had moved its processes, and got its
/// own move for nothing: 1.1× to 2.0× in runs minutes apart.
fn container_starts_here(dir: &Path) {
    let bundle = bundle(dir);
    let runs = env_usize("PEAPOD_BENCH_RUNS", if quick() { 5 } else { 30 });
    let shim = peapod_tests::artifact("peapod-shim");
    let one = binary();
    let mut times: [Vec<Duration>; 4] = Default::default();
    for i in 0..runs + 2 {
        let mut round = [Duration::ZERO; 4];
        for k in 0..4 {
            let which = (i + k) % 4;
            round[which] = match which {
                0 => shim_once(&shim, dir, &bundle, i),
                1 => runtime_once("crun", dir, &bundle, i),
                2 => runtime_once("runc", dir, &bundle, i),
                _ => shim_once(&one, dir, &bundle, 100_000 + i),
            };
        }
        if i >= 2 {
            for (t, v) in times.iter_mut().zip(round) {
                t.push(v);
            }
        }
    }
    let med: Vec<f64> = times.iter_mut().map(|t| median(t).as_secs_f64() * 1000.0).collect();
    println!(
        "{}",
        serde_json::json!({"shim": med[0], "crun": med[1], "runc": med[2], "one": med[3], "runs": runs})
    );
}

fn container_starts(table: &mut Table) {
    let dir = tempfile::Builder::new()
        .prefix("pp-bench-rt-")
        .tempdir_in("/tmp")
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    // A private mount namespace without the cgroup2 `unified` mount, for
    // crun, and with a tmpfs for the runtimes' state (`<dir>/run`), as `/run`
    // is on a stock system and as runc, crun and peapod keep it there: on
    // this VM `/run` is journal-less ext4, where each new file costs about
    // half a millisecond. The tmpfs goes with the namespace.
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
        .arg(
            r#"umount /sys/fs/cgroup/unified 2>/dev/null
            mkdir -p "$PEAPOD_BENCH_CONTAINERS_IN/run" &&
            mount -t tmpfs -o size=64m,mode=0700 peapod-bench "$PEAPOD_BENCH_CONTAINERS_IN/run" &&
            exec "$0""#,
        )
        .arg(&exe)
        .env("PEAPOD_BENCH_CONTAINERS_IN", dir.path())
        .env("PEAPOD_BIN", binary())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    let (shim, crun, runc, one) = (
        v["shim"].as_f64().unwrap(),
        v["crun"].as_f64().unwrap(),
        v["runc"].as_f64().unwrap(),
        v["one"].as_f64().unwrap(),
    );
    table.row(
        format!(
            "container start: `/bin/true` create+start+wait+delete, median of {}",
            v["runs"]
        ),
        format!("peapod-shim {shim:.1} ms"),
        format!(
            "crun {crun:.1} ms (shim/crun {:.2}×, target ≤ 1.2×); runc {runc:.1} ms (shim/runc {:.2}×); \
             `peapod shim`, the one binary, {one:.1} ms ({:.2}× crun)",
            shim / crun,
            shim / runc,
            one / crun
        ),
    );
}

// ---- pods ---------------------------------------------------------------------------------

fn sequential(node: &Node, n: usize, table: &mut Table) {
    let mut up = Vec::new();
    let names: Vec<String> = (0..n).map(|i| format!("s{n}-{i}")).collect();
    for name in &names {
        let t = Instant::now();
        node.apply(&bench::pod_yaml(name));
        node.wait_pod(name, "running", Duration::from_secs(120), |p| {
            container(p, "c")["state"]["running"].is_object()
        });
        up.push(t.elapsed());
    }
    table.row(
        format!("pod apply→Running, {n} sequential"),
        format!("p50 {}", ms(pct(&mut up, 0.5))),
        format!("p99 {}", ms(pct(&mut up, 0.99))),
    );
    bench::delete_all(node, &names);
}

/// RSS now and CPU seconds per minute over `window` of doing nothing.
fn idle_footprint(pid: u32, window: Duration) -> (f64, f64) {
    let c0 = cpu_seconds(pid);
    std::thread::sleep(window);
    let per_minute = (cpu_seconds(pid) - c0) * 60.0 / window.as_secs_f64();
    (rss_mib(pid), per_minute)
}

fn scrape_figures(node: &Node) -> (Duration, usize) {
    let addr = node.metrics_address();
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let (code, body) = peapod_tests::http_get(&addr, "/metrics");
        times.push(t.elapsed());
        assert_eq!(code, 200);
        size = body.len();
    }
    (median(&mut times), size)
}

fn at_scale(node: &Node, n: usize, table: &mut Table, idle_window: Duration) {
    let pid = node.daemon_pid().unwrap_or(0);
    let names: Vec<String> = (0..n).map(|i| format!("b{n}-{i:04}")).collect();
    let up = bench::create_all(node, &names);
    table.row(
        format!("{n} pods created at once (8 clients)"),
        format!("all Running after {:.1} s", up.as_secs_f64()),
        "polled once a second".to_string(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (rss, cpu) = idle_footprint(pid, idle_window);
    table.row(
        format!("daemon with {n} pods, idle"),
        format!("RSS {rss:.1} MiB"),
        format!("{cpu:.2} CPU s per minute"),
    );
    if n == 100 {
        let mut pss: Vec<f64> = node.shims("").into_iter().map(pss_kib).collect();
        pss.sort_by(f64::total_cmp);
        let mid = pss.get(pss.len() / 2).copied().unwrap_or(0.0);
        table.row(
            "shim PSS per running container (median)",
            format!("{:.2} MB", mid * 1024.0 / 1e6),
            format!("{} shims", pss.len()),
        );
    }
    let (took, size) = scrape_figures(node);
    table.row(
        format!("`/metrics` scrape with {n} pods (median of 10)"),
        ms(took),
        format!("{:.0} KiB", size as f64 / 1024.0),
    );
    bench::delete_all(node, &names);
}

fn pods(table: &mut Table) {
    let node = Node::start_with_args(&["--pod-cidr", "10.94.0.0/20", "--max-pods", "5000"], |_| {});
    std::thread::sleep(Duration::from_secs(3));
    let window = Duration::from_secs(if quick() { 5 } else { 30 });
    let (rss, cpu) = idle_footprint(node.daemon_pid().unwrap_or(0), window);
    table.row(
        "daemon with no pods, idle",
        format!("RSS {rss:.1} MiB"),
        format!("{cpu:.2} CPU s per minute"),
    );
    let sizes: &[usize] = if quick() { &[1, 10] } else { &[1, 10, 50, 100] };
    for &n in sizes {
        sequential(&node, n, table);
    }
    let bursts: &[usize] = if quick() { &[100] } else { &[100, 500] };
    for &n in bursts {
        at_scale(&node, n, table, window);
    }
}

// ---- soak ---------------------------------------------------------------------------------

/// How long the soak waits before it reads RSS: past one of the daemon's
/// `malloc_trim` turns (every 30 s).
const SETTLE: Duration = Duration::from_secs(35);

fn lifecycle(node: &Node, name: &str) {
    node.apply(&bench::pod_yaml(name));
    node.wait_pod(name, "running", Duration::from_secs(120), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    node.ok(&["delete", "pod", name, "--grace-period", "0"]);
}

fn soak(table: &mut Table) {
    let total = env_usize("PEAPOD_BENCH_SOAK", if quick() { 100 } else { 2000 });
    let mut node = Node::start_with_args(&["--pod-cidr", "10.95.0.0/22"], |_| {});
    let steady: Vec<String> = (0..20).map(|i| format!("steady{i}")).collect();
    bench::create_all(&node, &steady);
    // Every figure is taken after the daemon handed freed heap back (it
    // does every 30 s), so what is compared is what stays.
    std::thread::sleep(SETTLE);
    let pid = node.daemon_pid().unwrap_or(0);
    let start = rss_mib(pid);
    let workers = 4;
    let every = (total / 8).max(1);
    let mut samples = vec![format!("{start:.1}")];
    let t = Instant::now();
    let mut done = 0;
    while done < total {
        let batch = every.min(total - done);
        std::thread::scope(|s| {
            for w in 0..workers {
                let node = &node;
                s.spawn(move || {
                    for i in (w..batch).step_by(workers) {
                        lifecycle(node, &format!("soak{}", done + i));
                    }
                });
            }
        });
        done += batch;
        samples.push(format!("{:.1}", rss_mib(pid)));
    }
    let took = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let end = rss_mib(pid);
    std::thread::sleep(SETTLE - Duration::from_secs(3));
    let settled = rss_mib(pid);
    // The same 20 pods re-adopted by a new daemon (which also lists the
    // soak's Events, kept for --event-ttl).
    node.kill_daemon();
    node.start_daemon();
    bench::create_all(&node, &steady);
    std::thread::sleep(SETTLE);
    let restarted = rss_mib(node.daemon_pid().unwrap_or(0));
    table.row(
        format!(
            "soak: {total} pod lifecycles (4 at a time) beside 20 steady pods, {:.0} s",
            took.as_secs_f64()
        ),
        format!(
            "RSS {start:.1} MiB (fresh daemon, same pods) → {settled:.1} MiB, ×{:.2} (target ≤ 1.10)",
            settled / start
        ),
        format!(
            "along the way (MiB): {}, 3 s after: {end:.1}; a fresh daemon on the soaked store, same pods: {restarted:.1} MiB (soaked ×{:.2} of it)",
            samples.join(", "),
            settled / restarted
        ),
    );
}

// ---- plugins ------------------------------------------------------------------------------

fn plugins(table: &mut Table) {
    let c = bench::plugin_calls();
    table.row(
        "volume plugin: no-op call through the C ABI (median)",
        format!(
            "{:.2} µs raw; {:.1} µs the daemon's path",
            c.raw.as_nanos() as f64 / 1000.0,
            c.daemon_path.as_nanos() as f64 / 1000.0
        ),
        format!(
            "exec of a trivial driver {:.2} ms ({:.0}× the daemon's path)",
            c.exec.as_secs_f64() * 1000.0,
            c.exec.as_secs_f64() / c.daemon_path.as_secs_f64()
        ),
    );
}

// ---- pulls ---------------------------------------------------------------------------------

fn pulls(table: &mut Table) {
    use peapod_tests::layout::Layout;
    use peapod_tests::registry::Registry;
    let registry = Registry::start();
    let layout = Layout::copy_of(peapod_tests::TEST_IMAGE);
    let layer = if quick() { 4 << 20 } else { 20 << 20 };
    layout.with_random_layers("big", &[layer; 5]);
    registry.push_gzip(&layout.path(), "big", "pp/big:1");
    let image = format!("{}/pp/big:1", registry.address);
    let manifest = registry.raw_manifest("pp/big:1");
    let total: u64 = manifest["layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|l| l["size"].as_u64()).sum())
        .unwrap_or(0);
    let runs = if quick() { 1 } else { 3 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("pp-bench-pull-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = dir.path().join("root").display().to_string();
        let t = Instant::now();
        let out = Command::new(binary())
            .args(["image", "pull", "--root-dir", &root, &image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "peapod image pull: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ours.push(t.elapsed());
        let t = Instant::now();
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:big", dir.path().join("layout").display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        theirs.push(t.elapsed());
    }
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    table.row(
        format!(
            "image pull: {:.0} MB in 5 gzip layers + busybox from docker-registry on 127.0.0.1 (median of {runs})",
            total as f64 / 1e6
        ),
        format!("peapod {:.2} s (fetch, verify, unpack, index)", ours.as_secs_f64()),
        format!(
            "skopeo copy to an OCI layout {:.2} s (fetch, verify; no unpack): ×{:.2}",
            theirs.as_secs_f64(),
            ours.as_secs_f64() / theirs.as_secs_f64()
        ),
    );

    let node = Node::start();
    let names: Vec<String> = (0..10).map(|i| format!("pull{i}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {n}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {image}\n    command: [sleep, \"3600\"]\n"
            )
        })
        .collect();
    let gets_before = registry.blob_gets();
    let t = Instant::now();
    node.apply(&manifests.join("---\n"));
    for n in &names {
        node.wait_pod(n, "running", Duration::from_secs(600), |p| {
            container(p, "c")["state"]["running"].is_object()
        });
    }
    let took = t.elapsed();
    table.row(
        "10 pods of that image, not yet on the node: apply → all Running",
        format!("{:.2} s", took.as_secs_f64()),
        format!(
            "one pull: {} blob downloads from the registry",
            registry.blob_gets() - gets_before
        ),
    );
}

// ---- remote: kubectl get, exec, port-forward ---------------------------------------------

/// A GET over the daemon's socket with `accept`: (time, bytes on the wire).
fn socket_get(node: &Node, path: &str, accept: &str) -> (Duration, usize) {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(node.run_dir().join("peapod.sock")).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\nAccept: {accept}\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    (t.elapsed(), out.len())
}

/// Median wall time of `runs` runs of `cmd()`, each asserted to succeed.
fn timed(runs: usize, mut cmd: impl FnMut() -> Command) -> Duration {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = cmd().stdin(Stdio::null()).output().expect("run");
        times.push(t.elapsed());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    median(&mut times)
}

/// Downloads `path` from `127.0.0.1:port` (or `addr`): MB/s of the body.
fn download(addr: &str, path: &str) -> f64 {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut n = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("read from {addr}: {e}"),
        }
    }
    n as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// The local port a `port-forward` prints it forwards from.
fn forwarding(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || for _ in reader.lines() {});
    line.split_whitespace().nth(2).unwrap_or_default().to_string()
}

fn remote(table: &mut Table) {
    let node = Node::start_with_args(
        &[
            "--listen-https",
            "127.0.0.1:0",
            "--pod-cidr",
            "10.93.0.0/20",
            "--max-pods",
            "5000",
        ],
        |_| {},
    );
    let record = node.root().join("pki/listen-https");
    peapod_tests::wait_for("the HTTPS listener", Duration::from_secs(20), || {
        std::fs::read_to_string(&record).ok().filter(|a| !a.is_empty())
    });
    let home = node.dir.path().join("kube");
    std::fs::create_dir_all(&home).unwrap();
    let root = node.root().display().to_string();
    std::fs::write(home.join("config"), node.ok(&["kubeconfig", "--root-dir", &root])).unwrap();
    let kubectl = |args: &[&str]| {
        let mut c = Command::new("/usr/local/lib/peapod/kubectl/kubectl-1.33");
        c.arg("--kubeconfig")
            .arg(home.join("config"))
            .args(args)
            .env("HOME", &home);
        c
    };
    let runs = if quick() { 5 } else { 20 };

    // kubectl get pods: Table (what get asks for) beside JSON.
    let n = if quick() { 100 } else { 500 };
    let names: Vec<String> = (0..n).map(|i| format!("g{i:04}")).collect();
    bench::create_all(&node, &names);
    let table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (_, table_bytes) = socket_get(&node, "/api/v1/namespaces/default/pods", table_accept);
    let (_, json_bytes) = socket_get(&node, "/api/v1/namespaces/default/pods", "application/json");
    let get_table = timed(runs.min(10), || kubectl(&["get", "pods"]));
    let get_json = timed(runs.min(10), || kubectl(&["get", "pods", "-o", "json"]));
    table.row(
        format!("`kubectl get pods` with {n} pods, HTTPS (median of {})", runs.min(10)),
        format!("{} (Table, {:.0} KiB)", ms(get_table), table_bytes as f64 / 1024.0),
        format!("`-o json` {} ({:.0} KiB)", ms(get_json), json_bytes as f64 / 1024.0),
    );
    bench::delete_all(&node, &names);

    // exec of `true`: through the API beside the exec helper alone.
    node.apply(&bench::pod_yaml("ex"));
    let pod = node.wait_pod("ex", "running", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    let uid: String = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| *c != '-')
        .take(12)
        .collect();
    let state_root = node.run_dir().join("containers");
    let id = format!("{uid}-c-0");
    let socket = node.run_dir().join("peapod.sock");
    let shim = peapod_tests::artifact("peapod-shim");
    let helper = timed(runs, || {
        let mut c = Command::new(&shim);
        c.args(["exec", "--as-container", "--state-root"])
            .arg(&state_root)
            .args(["--id", &id, "--", "true"]);
        c
    });
    let peapod_exec = timed(runs, || {
        let mut c = Command::new(binary());
        c.args(["exec", "ex", "--", "true"]).env("PEAPOD_SOCKET", &socket);
        c
    });
    let kubectl_exec = timed(runs, || kubectl(&["exec", "ex", "--", "true"]));
    table.row(
        format!("exec of `true`, round trip (median of {runs})"),
        format!("`peapod exec` {} (WebSocket on the unix socket)", ms(peapod_exec)),
        format!(
            "the exec helper alone {}; `kubectl exec` over HTTPS {}",
            ms(helper),
            ms(kubectl_exec)
        ),
    );

    // port-forward throughput beside a direct connection to the pod's IP.
    let size_mb = if quick() { 50 } else { 200 };
    let web = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pf}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'mkdir -p /tmp/w && dd if=/dev/zero of=/tmp/w/f bs=1M count={size_mb} 2>/dev/null && exec httpd -f -p 8080 -h /tmp/w']\n"
    );
    node.apply(&web);
    let pod = node.wait_pod("pf", "serving", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["running"].is_object() && p["status"]["podIP"].is_string()
    });
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default().to_string();
    let direct_addr = format!("{ip}:8080");
    peapod_tests::wait_for("httpd in the pod", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&direct_addr).ok()
    });
    let mut forwards = Vec::new();
    let mut pf = Command::new(binary())
        .args(["port-forward", "pf", ":8080"])
        .env("PEAPOD_SOCKET", &socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let via_peapod = forwarding(&mut pf);
    forwards.push(pf);
    let mut kpf = kubectl(&["port-forward", "pod/pf", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let via_kubectl = forwarding(&mut kpf);
    forwards.push(kpf);
    let (mut direct, mut peapod_pf, mut kubectl_pf) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        direct.push(download(&direct_addr, "/f"));
        peapod_pf.push(download(&via_peapod, "/f"));
        kubectl_pf.push(download(&via_kubectl, "/f"));
    }
    for mut f in forwards {
        let _ = f.kill();
        let _ = f.wait();
    }
    let mid = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    table.row(
        format!("port-forward, {size_mb} MB over one connection (median of 3)"),
        format!(
            "`peapod port-forward` {:.0} MB/s; `kubectl port-forward` (SPDY in WebSocket, HTTPS) {:.0} MB/s",
            mid(&mut peapod_pf),
            mid(&mut kubectl_pf)
        ),
        format!("direct to the pod IP {:.0} MB/s", mid(&mut direct)),
    );
}

/// `n` services of two ports with `endpoints` ready endpoints each, and
/// their slices, as the proxy sees them.
fn synthetic_services(n: usize, endpoints: usize) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    use serde_json::json;
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        let name = format!("svc-{i}");
        services.push(json!({
            "metadata": {"namespace": "bench", "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": format!("10.125.{}.{}", i / 250, i % 250 + 1),
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                               {"name": "metrics", "port": 9090, "protocol": "TCP"}]},
        }));
        let eps: Vec<serde_json::Value> = (0..endpoints)
            .map(|e| {
                json!({"addresses": [format!("10.126.{}.{}", (i * endpoints + e) / 250, (i * endpoints + e) % 250 + 1)],
                            "conditions": {"ready": true}})
            })
            .collect();
        slices.push(json!({
            "metadata": {"namespace": "bench", "name": format!("{name}-x"), "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}],
            "endpoints": eps,
        }));
    }
    (services, slices)
}

/// A DNS query for the A record of `name` (RFC 1035 wire format: header, one question).
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// One HTTP/1.0 GET on a new connection: its latency.
fn get_once(addr: &str) -> Duration {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(
        out.starts_with(b"HTTP/1.") && out.len() > 20,
        "{addr} answered {} bytes",
        out.len()
    );
    t.elapsed()
}

fn config(table: &mut Table) {
    let node = Node::start();
    for i in 0..5 {
        node.ok(&[
            "create",
            "configmap",
            &format!("cm{i}"),
            &format!("--from-literal=k=v{i}"),
        ]);
        node.ok(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=k=v{i}"),
        ]);
    }
    // ConfigMap update until the new content is in the pod's volume (read on
    // the host, where the pod's mount shows it, so no exec is timed).
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: watcher}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600'], volumeMounts: [{name: v, mountPath: /cfg}]}\n  volumes: [{name: v, configMap: {name: cm0}}]\n",
    );
    let pod = node.wait_pod("watcher", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    let file = node
        .root()
        .join("pods")
        .join(pod["metadata"]["uid"].as_str().unwrap())
        .join("volumes/configmap/v/k");
    let updates = if quick() { 10 } else { 20 };
    let mut seen = Vec::new();
    for n in 0..updates {
        let want = format!("update-{n}");
        let t = Instant::now();
        node.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm0}}\ndata: {{k: {want}}}\n"
        ));
        while std::fs::read_to_string(&file).ok().as_deref() != Some(want.as_str()) {
            assert!(t.elapsed() < Duration::from_secs(120), "update {n} never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        seen.push(t.elapsed());
    }
    table.row(
        format!("ConfigMap update (`apply` issued) until the new content is in the pod's volume, {updates} updates"),
        format!("p50 {}, p99 {}", ms(pct(&mut seen, 0.5)), ms(pct(&mut seen, 0.99))),
        "the apply's own CLI round trip included".to_string(),
    );
    // Pod start with five configMap/secret volumes beside none.
    let volumes = "  volumes:\n".to_string()
        + &(0..5)
            .map(|i| {
                if i % 2 == 0 {
                    format!("  - {{name: v{i}, configMap: {{name: cm{i}}}}}\n")
                } else {
                    format!("  - {{name: v{i}, secret: {{secretName: s{i}}}}}\n")
                }
            })
            .collect::<String>();
    let mounts = (0..5)
        .map(|i| format!("{{name: v{i}, mountPath: /v{i}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let n = if quick() { 5 } else { 15 };
    let start = |with: bool| {
        let mut took = Vec::new();
        for i in 0..n {
            let name = format!("{}-{i}", if with { "vols" } else { "bare" });
            let yaml = if with {
                format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600'], volumeMounts: [{mounts}]}}\n{volumes}")
            } else {
                bench::pod_yaml(&name)
            };
            let t = Instant::now();
            node.apply(&yaml);
            node.wait_pod(&name, "running", Duration::from_secs(60), |p| {
                container(p, "c")["state"]["running"].is_object()
            });
            took.push(t.elapsed());
        }
        took
    };
    // Interleaved order would mix the two; each set runs after a warm-up pod.
    let mut bare = start(false);
    let mut with = start(true);
    table.row(
        format!("pod apply→Running with 5 configMap/secret volumes, {n} sequential"),
        format!("p50 {}, p99 {}", ms(pct(&mut with, 0.5)), ms(pct(&mut with, 0.99))),
        format!(
            "without them: p50 {}, p99 {}",
            ms(pct(&mut bare, 0.5)),
            ms(pct(&mut bare, 0.99))
        ),
    );
}

fn services(table: &mut Table) {
    use peapod_actors::proxy::{apply, nft};
    // Rule programming: the whole table as one transaction, for 100 and 1000
    // services (two ports, three endpoints each); then one endpoint changed.
    let table_name = format!("ppbench{}", std::process::id() % 1000);
    let cfg = nft::Config {
        table: table_name.clone(),
        cluster_cidr: "10.126.0.0/16".into(),
        node_name: "bench".into(),
    };
    for n in [100, 1000] {
        let (svcs, mut slices) = synthetic_services(n, 3);
        let t = Instant::now();
        let first = apply(&cfg, &svcs, &slices, None).expect("program the table");
        let full = t.elapsed();
        slices[n / 2]["endpoints"][0]["conditions"]["ready"] = serde_json::json!(false);
        let t = Instant::now();
        apply(&cfg, &svcs, &slices, Some(&first)).expect("reprogram the table");
        let one = t.elapsed();
        let t = Instant::now();
        apply(&cfg, &svcs, &slices, None).expect("rewrite the table");
        let whole = t.elapsed();
        let t = Instant::now();
        let lines = nft::render(
            &cfg,
            &nft::service_ports(&cfg, &svcs, &slices),
            &nft::Existing::default(),
        )
        .lines()
        .count();
        let render = t.elapsed();
        peapod_actors::proxy::cleanup(&table_name).expect("remove the bench table");
        table.row(
            format!("service rules, {n} services (2 ports, 3 endpoints each; {lines} nft commands)"),
            format!("first sync {}, one endpoint changed {}", ms(full), ms(one)),
            format!(
                "rewritten whole (listed first) {}; rendering alone {}",
                ms(whole),
                ms(render)
            ),
        );
    }

    // Requests through a cluster IP beside straight to the pod.
    let node = Node::start();
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'mkdir -p /www && head -c 1024 /dev/zero > /www/index.html && exec httpd -f -p 8080 -h /www']\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    let pod = node.wait_pod("web", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    let pod_addr = format!("{}:8080", pod["status"]["podIP"].as_str().unwrap());
    let svc = node.get("service", "web").unwrap();
    let svc_addr = format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap());
    peapod_tests::wait_for("the service answering", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&svc_addr).ok()
    });
    let n = if quick() { 500 } else { 5000 };
    let (mut via_svc, mut direct) = (Vec::new(), Vec::new());
    let (mut t_svc, mut t_direct) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        let d = get_once(&svc_addr);
        t_svc += d;
        via_svc.push(d);
        let d = get_once(&pod_addr);
        t_direct += d;
        direct.push(d);
    }
    // DNS: A queries for the service through kube-dns's cluster IP (the path a pod's queries take).
    let dns_ip = node.ok(&[
        "get",
        "svc",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let query = dns_query("web.default.svc.cluster.local");
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.connect((dns_ip.as_str(), 53)).unwrap();
    let mut dns_times = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..n {
        let t = Instant::now();
        sock.send(&query).unwrap();
        let len = sock.recv(&mut buf).expect("a DNS answer");
        dns_times.push(t.elapsed());
        assert!(len > query.len() && buf[3] & 0x0f == 0, "an answer without error");
    }
    table.row(
        format!("DNS A query for a service through kube-dns's cluster IP, from the host ({n}, one at a time)"),
        format!(
            "p50 {:.0} µs, p99 {:.0} µs",
            pct(&mut dns_times, 0.5).as_secs_f64() * 1e6,
            pct(&mut dns_times, 0.99).as_secs_f64() * 1e6
        ),
        "the node's DNS server (hickory-server), answered from its zone",
    );
    let rps = |total: Duration| n as f64 / total.as_secs_f64();
    table.row(
        format!("HTTP GET of 1 KiB on a new connection, from the host ({n} each, interleaved)"),
        format!(
            "through the cluster IP {:.0} req/s, p50 {}, p99 {}",
            rps(t_svc),
            ms(pct(&mut via_svc, 0.5)),
            ms(pct(&mut via_svc, 0.99))
        ),
        format!(
            "to the pod IP {:.0} req/s, p50 {}, p99 {}",
            rps(t_direct),
            ms(pct(&mut direct, 0.5)),
            ms(pct(&mut direct, 0.99))
        ),
    );
}

// ---- cluster ------------------------------------------------------------------------------

fn running_count(pods: &[serde_json::Value]) -> usize {
    pods.iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .count()
}

fn deployment_yaml(name: &str, replicas: usize, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n{extra}      containers: [{{name: c, image: 'busybox:1.35', command: [sleep, '3600']}}]\n"
    )
}

fn cluster(table: &mut Table) {
    use peapod_tests::cluster::Cluster;
    // The same pod, started one at a time on a node whose store is etcd and on one whose is SQLite, interleaved.
    {
        let etcd = peapod_tests::etcd::EtcdCluster::start();
        let url = etcd.url("bench");
        let on_etcd = Node::start_with_args(
            &["--store", &url, "--node-name", "bench-etcd", "--kubelet-port", "0"],
            |_| {},
        );
        let on_sqlite = Node::start();
        let n = if quick() { 5 } else { 30 };
        let (mut e, mut s) = (Vec::new(), Vec::new());
        for i in 0..n {
            for (node, out) in [(&on_etcd, &mut e), (&on_sqlite, &mut s)] {
                let name = format!("st{i}");
                let t = Instant::now();
                node.apply(&bench::pod_yaml(&name));
                node.wait_pod(&name, "running", Duration::from_secs(120), |p| {
                    container(p, "c")["state"]["running"].is_object()
                });
                out.push(t.elapsed());
            }
        }
        table.row(
            format!("pod apply→Running on etcd (3 members), {n} sequential"),
            format!("p50 {} p99 {}", ms(pct(&mut e, 0.5)), ms(pct(&mut e, 0.99))),
            format!("SQLite: p50 {} p99 {}", ms(pct(&mut s, 0.5)), ms(pct(&mut s, 0.99))),
        );
    }
    let per_node = if quick() { 10 } else { 100 };
    let mut cl = Cluster::start("bench", 3);
    let t = Instant::now();
    let total = per_node * 3;
    cl.nodes[0].apply(&deployment_yaml("many", total, ""));
    cl.wait(&format!("{total} pods running"), Duration::from_secs(900), || {
        (running_count(&cl.pods(Some("app=many"))) == total).then_some(())
    });
    table.row(
        format!("3 nodes × {per_node} pods of one Deployment, until all Running"),
        format!("{:.1} s", t.elapsed().as_secs_f64()),
        "etcd store, 3 daemons and 3 etcd members on this machine",
    );
    cl.nodes[0].ok(&["delete", "deployment", "many"]);
    cl.wait("the pods gone", Duration::from_secs(600), || {
        cl.pods(Some("app=many")).is_empty().then_some(())
    });
    // A node dies: its pods (2 s toleration) Running elsewhere.
    let tolerate = "      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]\n";
    cl.nodes[0].apply(&deployment_yaml("moving", 6, tolerate));
    cl.wait("6 pods running", Duration::from_secs(120), || {
        (running_count(&cl.pods(Some("app=moving"))) == 6).then_some(())
    });
    let leaders = [cl.leader("kube-scheduler"), cl.leader("kube-controller-manager")];
    let victim = (0..3)
        .rev()
        .find(|i| !leaders.contains(&Some(cl.name(*i))))
        .unwrap_or(2);
    let victim_name = cl.name(victim);
    let on_victim = cl
        .pods(Some("app=moving"))
        .iter()
        .filter(|p| p["spec"]["nodeName"] == victim_name.as_str())
        .count();
    eprintln!("  killing {victim_name}, which runs {on_victim} of the 6 pods");
    for i in 0..3 {
        let n = cl.nodes[0].get("node", &cl.name(i)).unwrap_or_default();
        eprintln!("    {}: taints {}", cl.name(i), n["spec"]["taints"]);
    }
    let t = Instant::now();
    cl.nodes[victim].kill_daemon();
    cl.wait("the pods running elsewhere", Duration::from_secs(120), || {
        let pods = cl.pods(Some("app=moving"));
        let elsewhere = pods
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["spec"]["nodeName"] != victim_name.as_str()
            })
            .count();
        (elsewhere == 6).then_some(())
    });
    table.row(
        "a node's daemon killed → its pods Running on the others",
        format!("{:.1} s", t.elapsed().as_secs_f64()),
        "grace 6 s, heartbeat 1 s, toleration 2 s (kube defaults: 40 s, 10 s, 300 s)",
    );
    cl.nodes[victim].start_daemon();
    // API writes while the etcd leader is killed: the longest wait for one.
    let writer = cl.any_alive();
    let leader = cl.etcd.leader().unwrap_or(0);
    let mut waits = Vec::new();
    let t0 = Instant::now();
    let mut killed = false;
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        if !killed && t0.elapsed() > Duration::from_secs(2) {
            cl.etcd.kill(leader);
            killed = true;
        }
        let t = Instant::now();
        writer.ok(&["create", "configmap", &format!("w{i}"), "--from-literal=a=b"]);
        waits.push(t.elapsed());
        i += 1;
    }
    cl.etcd.restart(leader);
    let longest = waits.iter().max().copied().unwrap_or_default();
    table.row(
        "`peapod create configmap` while the etcd leader is killed",
        format!("longest {}", ms(longest)),
        format!("p50 {} over {} writes", ms(pct(&mut waits, 0.5)), i),
    );
}

fn main() {
    if let Some(dir) = std::env::var_os("PEAPOD_BENCH_CONTAINERS_IN") {
        container_starts_here(Path::new(&dir));
        return;
    }
    let began = Instant::now();
    let mut table = Table(Vec::new());
    eprintln!("measuring (rows as they come):");
    let only = std::env::var("PEAPOD_BENCH_ONLY").unwrap_or_default();
    let wanted = |s: &str| only.is_empty() || only.split(',').any(|o| o == s);
    if wanted("containers") {
        container_starts(&mut table);
    }
    if wanted("plugins") {
        plugins(&mut table);
    }
    if wanted("pods") {
        pods(&mut table);
    }
    if wanted("soak") {
        soak(&mut table);
    }
    if wanted("pulls") {
        pulls(&mut table);
    }
    if wanted("remote") {
        remote(&mut table);
    }
    if wanted("services") {
        services(&mut table);
    }
    if wanted("config") {
        config(&mut table);
    }
    if wanted("cluster") {
        cluster(&mut table);
    }
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "\npeapod side by side, {date}, {} ({} daemon), {:.0} s:\n",
        machine(),
        if binary().display().to_string().contains("/release/") {
            "release"
        } else {
            "debug"
        },
        began.elapsed().as_secs_f64()
    );
    table.print();
}
