//! Prints figures for Deployments (run as root, after `scripts/setup.sh`; a
//! release daemon when one is built):
//! - a Deployment of busybox pods scaled from 0 to N: the time until all N
//!   are Ready (`status.readyReplicas`), for each N in `PEAPOD_BENCH_DEPLOY`
//!   (default `100,500`), each on a fresh node;
//! - on the first size, a rolling update of all of them (`rollout restart`,
//!   the default 25% surge and unavailability): the time until the rollout is
//!   complete, the daemon's CPU seconds during it and its peak RSS during it.

use peapod_tests::Node;
use serde_json::Value;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);

fn deployment(replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bench}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: bench}}}}\n  template:\n    metadata: {{labels: {{app: bench}}}}\n    spec:\n      terminationGracePeriodSeconds: 0\n      containers:\n      - {{name: c, image: busybox:1.35, command: [sleep, '3600']}}\n"
    )
}

fn status(node: &Node) -> Value {
    node.get("deploy", "bench")
        .map(|d| d["status"].clone())
        .unwrap_or_default()
}

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not done after {limit:?}");
        std::thread::sleep(POLL);
    }
    start.elapsed()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let sizes: Vec<usize> = std::env::var("PEAPOD_BENCH_DEPLOY")
        .unwrap_or_else(|_| "100,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let limit = Duration::from_secs(900);
    for (i, &n) in sizes.iter().enumerate() {
        let node = Node::start_with_args(&["--pod-cidr", "10.93.0.0/20", "--max-pods", "5000"], |_| {});
        let pid = node.daemon_pid().unwrap_or(0);
        node.apply(&deployment(0));
        wait("the deployment observed", limit, || {
            status(&node)["observedGeneration"] == 1
        });
        node.ok(&["scale", "deploy/bench", &format!("--replicas={n}")]);
        let up = wait("all ready", limit, || {
            status(&node)["readyReplicas"].as_u64() == Some(n as u64)
        });
        println!("deployment 0 -> {n} pods: all Ready after {:.1} s", up.as_secs_f64());
        if i == 0 {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
            let cpu = cpu_seconds(pid);
            node.ok(&["rollout", "restart", "deploy/bench"]);
            let rolled = wait("rolled out", limit, || {
                let d = node.get("deploy", "bench").unwrap_or_default();
                let s = &d["status"];
                d["metadata"]["generation"] == s["observedGeneration"]
                    && s["updatedReplicas"].as_u64() == Some(n as u64)
                    && s["replicas"].as_u64() == Some(n as u64)
                    && s["availableReplicas"].as_u64() == Some(n as u64)
            });
            println!(
                "rolling update of {n} pods: {:.1} s, daemon CPU {:.1} s, daemon peak RSS {:.1} MiB",
                rolled.as_secs_f64(),
                cpu_seconds(pid) - cpu,
                peak_rss_mib(pid)
            );
        }
        node.ok(&["scale", "deploy/bench", "--replicas=0"]);
        wait("all gone", limit, || node.list("pods", Some("app=bench")).is_empty());
    }
}
