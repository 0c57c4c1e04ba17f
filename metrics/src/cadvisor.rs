//! cAdvisor's per-container series, read from the cgroups (v1, or the
//! unified v2 hierarchy where the host mounts it) when scraped.
//!
//! As kubelet's `/metrics/cadvisor` does, every container has a series set
//! labelled `container, id, image, name, namespace, pod` (`id` is its cgroup,
//! `name` its runtime id), and every pod one with `container=""` for its pod
//! cgroup, which is also where the pod's network counters are (the network
//! namespace is the pod's, not a container's: summing by pod stays right).
//! A pod that left the inventory has no series at the next scrape.

use crate::inventory::{ContainerEntry, ContainerState, PodEntry, Snapshot};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, GaugeVec, Opts, Registry};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";

/// The labels of every series, in cAdvisor's order.
const LABELS: &[&str] = &["container", "id", "image", "name", "namespace", "pod"];

/// How long a measured writable-layer size is reused: walking a layer is
/// file-system work, so it is done at most this often per container, as
/// cAdvisor's own disk-usage housekeeping does.
const FS_USAGE_TTL: Duration = Duration::from_secs(60);

/// User-mode ticks per second in `cpuacct.stat` (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Figures of one cgroup; `None` where the file is missing or unreadable.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CgroupStats {
    pub cpu_usage_seconds: Option<f64>,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    pub cpu_throttled_periods: Option<f64>,
    pub cpu_quota: Option<f64>,
    pub memory_usage: Option<f64>,
    pub memory_working_set: Option<f64>,
    pub memory_rss: Option<f64>,
    pub memory_cache: Option<f64>,
    pub memory_limit: Option<f64>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_number(path: &Path) -> Option<f64> {
    read(path)?.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `cpuacct.stat`).
fn flat_keyed(text: &str) -> HashMap<&str, f64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Limits at or above 2^62 mean "none" (v1 writes 9223372036854771712);
/// cAdvisor reports no limit as 0.
fn limit(v: f64) -> f64 {
    if v >= 4.0e18 {
        0.0
    } else {
        v
    }
}

/// Reads a v1 cgroup at `cgroup` (relative to each hierarchy) under `root`.
pub fn read_v1(root: &Path, cgroup: &str) -> CgroupStats {
    let rel = cgroup.trim_start_matches('/');
    let cpuacct = root.join("cpuacct").join(rel);
    let cpu = root.join("cpu").join(rel);
    let memory = root.join("memory").join(rel);
    let mut s = CgroupStats {
        cpu_usage_seconds: read_number(&cpuacct.join("cpuacct.usage")).map(|ns| ns / 1e9),
        ..CgroupStats::default()
    };
    if let Some(text) = read(&cpuacct.join("cpuacct.stat")) {
        let kv = flat_keyed(&text);
        s.cpu_user_seconds = kv.get("user").map(|t| t / USER_HZ);
        s.cpu_system_seconds = kv.get("system").map(|t| t / USER_HZ);
    }
    if let Some(text) = read(&cpu.join("cpu.stat")) {
        s.cpu_throttled_periods = flat_keyed(&text).get("nr_throttled").copied();
    }
    s.cpu_quota = read_number(&cpu.join("cpu.cfs_quota_us")).filter(|q| *q > 0.0);
    s.memory_usage = read_number(&memory.join("memory.usage_in_bytes"));
    if let Some(text) = read(&memory.join("memory.stat")) {
        let kv = flat_keyed(&text);
        s.memory_rss = kv.get("total_rss").copied();
        s.memory_cache = kv.get("total_cache").copied();
        let inactive = kv.get("total_inactive_file").copied().unwrap_or(0.0);
        s.memory_working_set = s.memory_usage.map(|u| (u - inactive).max(0.0));
    }
    s.memory_limit = read_number(&memory.join("memory.limit_in_bytes")).map(limit);
    s
}

/// Reads a v2 cgroup at `cgroup` under the unified `root`.
pub fn read_v2(root: &Path, cgroup: &str) -> CgroupStats {
    let dir = root.join(cgroup.trim_start_matches('/'));
    let mut s = CgroupStats::default();
    if let Some(text) = read(&dir.join("cpu.stat")) {
        let kv = flat_keyed(&text);
        s.cpu_usage_seconds = kv.get("usage_usec").map(|u| u / 1e6);
        s.cpu_user_seconds = kv.get("user_usec").map(|u| u / 1e6);
        s.cpu_system_seconds = kv.get("system_usec").map(|u| u / 1e6);
        s.cpu_throttled_periods = kv.get("nr_throttled").copied();
    }
    if let Some(text) = read(&dir.join("cpu.max")) {
        s.cpu_quota = text
            .split_whitespace()
            .next()
            .and_then(|q| q.parse().ok())
            .filter(|q: &f64| *q > 0.0);
    }
    s.memory_usage = read_number(&dir.join("memory.current"));
    if let Some(text) = read(&dir.join("memory.stat")) {
        let kv = flat_keyed(&text);
        s.memory_rss = kv.get("anon").copied();
        s.memory_cache = kv.get("file").copied();
        let inactive = kv.get("inactive_file").copied().unwrap_or(0.0);
        s.memory_working_set = s.memory_usage.map(|u| (u - inactive).max(0.0));
    }
    s.memory_limit = Some(read_number(&dir.join("memory.max")).map_or(0.0, limit));
    s
}

fn read_cgroup(cgroup: &str) -> CgroupStats {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        read_v2(root, cgroup)
    } else {
        read_v1(root, cgroup)
    }
}

/// Received and transmitted bytes per interface (loopback left out, as
/// cAdvisor leaves it) from a `/proc/<pid>/net/dev` text.
pub fn parse_net_dev(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let f: Vec<f64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            (f.len() >= 9).then(|| (name.to_string(), f[0], f[8]))
        })
        .collect()
}

/// Bytes a directory tree takes on disk (blocks, as `du` counts them).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add(md.blocks().saturating_mul(512));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

static FS_USAGE: LazyLock<Mutex<HashMap<PathBuf, (Instant, u64)>>> = LazyLock::new(Mutex::default);

/// Forgets the measured layers not in `live` (once per scrape).
fn prune_fs_usage(live: &HashSet<&Path>) {
    let mut cache = FS_USAGE.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|k, _| live.contains(k.as_path()));
}

/// The writable layer's size, measured at most once per [`FS_USAGE_TTL`].
fn fs_usage(dir: &Path) -> u64 {
    let mut cache = FS_USAGE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, bytes)) = cache.get(dir) {
        if at.elapsed() < FS_USAGE_TTL {
            return *bytes;
        }
    }
    let bytes = disk_usage(dir);
    cache.insert(dir.to_path_buf(), (Instant::now(), bytes));
    bytes
}

/// The families of one scrape.
struct Families {
    registry: Registry,
    gauges: HashMap<&'static str, GaugeVec>,
    counters: HashMap<&'static str, CounterVec>,
}

/// cAdvisor's definitions: name, help, whether a counter, extra labels.
const DEFINITIONS: &[(&str, &str, bool, &[&str])] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        true,
        &["cpu"],
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        true,
        &[],
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        true,
        &[],
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        true,
        &[],
    ),
    ("container_spec_cpu_quota", "CPU quota of the container.", false, &[]),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        false,
        &[],
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        false,
        &[],
    ),
    ("container_memory_rss", "Size of RSS in bytes.", false, &[]),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        false,
        &[],
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        false,
        &[],
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        false,
        &[],
    ),
    (
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        true,
        &[],
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        true,
        &["interface"],
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        true,
        &["interface"],
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        false,
        &["device"],
    ),
];

/// The names of every cAdvisor family served.
pub fn names() -> Vec<&'static str> {
    DEFINITIONS.iter().map(|d| d.0).collect()
}

impl Families {
    fn new() -> Self {
        let registry = Registry::new();
        let mut gauges = HashMap::new();
        let mut counters = HashMap::new();
        for (name, help, is_counter, extra) in DEFINITIONS {
            let labels: Vec<&str> = LABELS.iter().chain(extra.iter()).copied().collect();
            if *is_counter {
                let c = CounterVec::new(Opts::new(*name, *help), &labels).expect("valid counter");
                registry.register(Box::new(c.clone())).expect("unique names");
                counters.insert(*name, c);
            } else {
                let g = GaugeVec::new(Opts::new(*name, *help), &labels).expect("valid gauge");
                registry.register(Box::new(g.clone())).expect("unique names");
                gauges.insert(*name, g);
            }
        }
        Self {
            registry,
            gauges,
            counters,
        }
    }

    fn put(&self, name: &str, labels: &[&str], value: f64) {
        if let Some(c) = self.counters.get(name) {
            c.with_label_values(labels).inc_by(value.max(0.0));
        } else if let Some(g) = self.gauges.get(name) {
            g.with_label_values(labels).set(value);
        }
    }

    fn cgroup(&self, labels: &[&str; 6], s: &CgroupStats) {
        if let Some(v) = s.cpu_usage_seconds {
            // Per-CPU series are off in kubelet's cAdvisor: one `cpu="total"`.
            let with_cpu: Vec<&str> = labels.iter().copied().chain(["total"]).collect();
            self.put("container_cpu_usage_seconds_total", &with_cpu, v);
        }
        // As cAdvisor: throttling and the quota only for a cgroup with a CPU limit.
        let limited = s.cpu_quota.is_some();
        let figures = [
            ("container_cpu_user_seconds_total", s.cpu_user_seconds),
            ("container_cpu_system_seconds_total", s.cpu_system_seconds),
            (
                "container_cpu_cfs_throttled_periods_total",
                s.cpu_throttled_periods.filter(|_| limited),
            ),
            ("container_spec_cpu_quota", s.cpu_quota),
            ("container_memory_usage_bytes", s.memory_usage),
            ("container_memory_working_set_bytes", s.memory_working_set),
            ("container_memory_rss", s.memory_rss),
            ("container_memory_cache", s.memory_cache),
            ("container_spec_memory_limit_bytes", s.memory_limit),
        ];
        for (name, v) in figures {
            if let Some(v) = v {
                self.put(name, labels, v);
            }
        }
    }
}

fn container_series(f: &Families, c: &ContainerEntry) {
    let labels = [
        c.container.as_str(),
        c.cgroup.as_str(),
        c.image.as_str(),
        c.id.as_str(),
        c.namespace.as_str(),
        c.pod.as_str(),
    ];
    f.put("container_oom_events_total", &labels, c.oom_events as f64);
    if c.state != ContainerState::Running {
        return;
    }
    f.cgroup(&labels, &read_cgroup(&c.cgroup));
    f.put("container_start_time_seconds", &labels, c.started_at);
    if let Some(upper) = &c.upper_dir {
        let bytes = fs_usage(upper) as f64;
        let with_device: Vec<&str> = labels.iter().copied().chain(["overlay"]).collect();
        f.put("container_fs_usage_bytes", &with_device, bytes);
    }
}

fn pod_series(f: &Families, p: &PodEntry, containers: &[&ContainerEntry]) {
    if !p.sandbox_running || p.cgroup.is_empty() {
        return;
    }
    let labels = ["", p.cgroup.as_str(), "", "", p.namespace.as_str(), p.name.as_str()];
    f.cgroup(&labels, &read_cgroup(&p.cgroup));
    if p.host_network {
        return;
    }
    // Any running container's process sees the pod's network namespace.
    let Some(pid) = containers
        .iter()
        .find(|c| c.state == ContainerState::Running && c.pid > 0)
        .map(|c| c.pid)
    else {
        return;
    };
    let Some(text) = read(&PathBuf::from(format!("/proc/{pid}/net/dev"))) else {
        return;
    };
    for (iface, rx, tx) in parse_net_dev(&text) {
        let with_iface: Vec<&str> = labels.iter().copied().chain([iface.as_str()]).collect();
        f.put("container_network_receive_bytes_total", &with_iface, rx);
        f.put("container_network_transmit_bytes_total", &with_iface, tx);
    }
}

/// The cAdvisor families for the pods and containers of `snap`, read now.
pub fn gather(snap: &Snapshot) -> Vec<MetricFamily> {
    let f = Families::new();
    // Everything here is linear in the containers: a scrape of a full node
    // must not cost the square of its pods.
    let live: HashSet<&Path> = snap.containers.iter().filter_map(|c| c.upper_dir.as_deref()).collect();
    prune_fs_usage(&live);
    let mut by_pod: HashMap<&str, Vec<&ContainerEntry>> = HashMap::new();
    for c in &snap.containers {
        by_pod.entry(c.pod_uid.as_str()).or_default().push(c);
    }
    for p in &snap.pods {
        pod_series(&f, p, by_pod.get(p.uid.as_str()).map_or(&[], Vec::as_slice));
    }
    for c in &snap.containers {
        container_series(&f, c);
    }
    f.registry.gather()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_files_become_cadvisor_figures() {
        let dir = std::env::temp_dir().join(format!("pp-cadv-{}", std::process::id()));
        let cg = "/peapod/podx/c1";
        let put = |ctrl: &str, file: &str, text: &str| {
            let d = dir.join(ctrl).join(cg.trim_start_matches('/'));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), text).unwrap();
        };
        put("cpuacct", "cpuacct.usage", "2500000000\n");
        put("cpuacct", "cpuacct.stat", "user 150\nsystem 50\n");
        put("cpu", "cpu.stat", "nr_periods 10\nnr_throttled 3\nthrottled_time 5\n");
        put("cpu", "cpu.cfs_quota_us", "-1\n");
        put("memory", "memory.usage_in_bytes", "1000000\n");
        put(
            "memory",
            "memory.stat",
            "rss 1\ntotal_rss 600000\ntotal_cache 300000\ntotal_inactive_file 100000\n",
        );
        put("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        let s = read_v1(&dir, cg);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.cpu_usage_seconds, Some(2.5));
        assert_eq!(s.cpu_user_seconds, Some(1.5));
        assert_eq!(s.cpu_system_seconds, Some(0.5));
        assert_eq!(s.cpu_throttled_periods, Some(3.0));
        assert_eq!(s.cpu_quota, None);
        assert_eq!(s.memory_working_set, Some(900000.0));
        assert_eq!(s.memory_rss, Some(600000.0));
        assert_eq!(s.memory_cache, Some(300000.0));
        assert_eq!(s.memory_limit, Some(0.0));
    }

    #[test]
    fn v2_files_become_cadvisor_figures() {
        let dir = std::env::temp_dir().join(format!("pp-cadv2-{}", std::process::id()));
        let d = dir.join("peapod/podx/c1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("cpu.stat"),
            "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\nnr_throttled 7\n",
        )
        .unwrap();
        std::fs::write(d.join("cpu.max"), "50000 100000\n").unwrap();
        std::fs::write(d.join("memory.current"), "4096\n").unwrap();
        std::fs::write(d.join("memory.stat"), "anon 1024\nfile 2048\ninactive_file 1000\n").unwrap();
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        let s = read_v2(&dir, "/peapod/podx/c1");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.cpu_usage_seconds, Some(3.0));
        assert_eq!(s.cpu_throttled_periods, Some(7.0));
        assert_eq!(s.cpu_quota, Some(50000.0));
        assert_eq!(s.memory_working_set, Some(3096.0));
        assert_eq!(s.memory_limit, Some(0.0));
    }

    #[test]
    fn net_dev_skips_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      40    0    0    0     0          0         0     7000      50    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(text), vec![("eth0".to_string(), 5000.0, 7000.0)]);
    }
}
