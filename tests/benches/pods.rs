//! Prints pod lifecycle figures against a real daemon (run as root, after
//! `scripts/setup.sh`): apply-to-Running and delete-to-gone latency for N
//! sequential single-container busybox pods, and the daemon's RSS with 50 pods running.

use peapod_tests::{container, Node};
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let counts: Vec<usize> = std::env::var("PEAPOD_BENCH_N")
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 10, 50]);
    println!("daemon binary: {}", peapod_tests::binary().display());
    println!(
        "{:>4}  {:>14}  {:>14}  {:>14}  {:>14}",
        "N", "run p50", "run p99", "gone p50", "gone p99"
    );
    for n in counts {
        let node = Node::start();
        let mut up = vec![];
        for i in 0..n {
            let t = Instant::now();
            node.apply(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: b{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: busybox, command: [sleep, '3600']}}\n"
            ));
            node.wait_pod(&format!("b{i}"), "running", Duration::from_secs(60), |p| {
                container(p, "c")["ready"] == true
            });
            up.push(t.elapsed());
        }
        if n == 50 {
            println!(
                "daemon RSS with 50 pods running: {} KiB",
                rss_kib(node.daemon_pid().unwrap_or(0))
            );
        }
        let mut gone = vec![];
        for i in 0..n {
            let t = Instant::now();
            node.ok(&["delete", "pod", &format!("b{i}")]);
            gone.push(t.elapsed());
        }
        println!(
            "{n:>4}  {:>14?}  {:>14?}  {:>14?}  {:>14?}",
            pct(&mut up, 0.5),
            pct(&mut up, 0.99),
            pct(&mut gone, 0.5),
            pct(&mut gone, 0.99)
        );
    }
}
