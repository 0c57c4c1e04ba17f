//! Prints pod lifecycle figures against a real daemon (run as root, after
//! `scripts/setup.sh`): apply-to-Running and delete-to-gone latency for N
//! sequential single-container busybox pods, the daemon's RSS with 50 pods
//! running, apply-to-Ready of pods with a readiness probe and a CNI IP, and
//! the time of CNI ADD and DEL per pod (from the daemon's log).

use peapod_tests::bench::{pct, rss_mib};
use peapod_tests::{container, Node};
use std::time::{Duration, Instant};

/// Millisecond figures after `marker` ... `in N ms` in the daemon's log.
fn logged_ms(node: &Node, marker: &str) -> Vec<Duration> {
    std::fs::read_to_string(node.dir.path().join("daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = &l[l.rfind(" in ")? + 4..];
            rest.strip_suffix(" ms")?.parse::<u64>().ok()
        })
        .map(Duration::from_millis)
        .collect()
}

/// 50 pods with a tcpSocket readiness probe: apply until READY 1/1, then CNI figures.
fn ready_bench() {
    let node = Node::start();
    let mut ready = vec![];
    for i in 0..50 {
        let t = Instant::now();
        node.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: r{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [httpd, -f, -p, '8080']\n    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n"
        ));
        node.wait_pod(&format!("r{i}"), "ready", Duration::from_secs(60), |p| {
            container(p, "c")["ready"] == true && p["status"]["podIP"].is_string()
        });
        ready.push(t.elapsed());
    }
    for i in 0..50 {
        node.ok(&["delete", "pod", &format!("r{i}")]);
    }
    let mut add = logged_ms(&node, "CNI ADD gave");
    let mut del = logged_ms(&node, "CNI DEL");
    println!(
        "apply-to-Ready (tcpSocket readiness, periodSeconds 1, CNI IP), 50 pods: p50 {:?}, p99 {:?}",
        pct(&mut ready, 0.5),
        pct(&mut ready, 0.99)
    );
    if !add.is_empty() && !del.is_empty() {
        println!(
            "CNI per pod ({} ADD, {} DEL): ADD p50 {:?} p99 {:?}, DEL p50 {:?} p99 {:?}",
            add.len(),
            del.len(),
            pct(&mut add, 0.5),
            pct(&mut add, 0.99),
            pct(&mut del, 0.5),
            pct(&mut del, 0.99)
        );
    }
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
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: b{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600']}}\n"
            ));
            node.wait_pod(&format!("b{i}"), "running", Duration::from_secs(60), |p| {
                container(p, "c")["ready"] == true
            });
            up.push(t.elapsed());
        }
        if n == 50 {
            println!(
                "daemon RSS with 50 pods running: {:.1} MiB",
                rss_mib(node.daemon_pid().unwrap_or(0))
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
    ready_bench();
}
