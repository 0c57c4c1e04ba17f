//! Volume plugin figures: the per-call cost of a no-op call through the ABI
//! (raw, and through the daemon's thread-and-deadline path) beside exec'ing a
//! trivial FlexVolume-style driver for the same call, and the apply-to-Running
//! latency of a pod with an emptyDir volume (run as root, after set-up).

use peapod_tests::bench::{self, pct};
use peapod_tests::{container, Node};
use std::time::{Duration, Instant};

fn abi_call_figures() {
    let c = bench::plugin_calls();
    println!("no-op get_volume_stats through the C ABI (JSON in and out), median per call:");
    println!("  raw table call:                          {:>10} ns", c.raw.as_nanos());
    println!(
        "  daemon path (thread + deadline + serde): {:>10} ns",
        c.daemon_path.as_nanos()
    );
    println!(
        "  exec of a FlexVolume-style driver:       {:>10} ns",
        c.exec.as_nanos()
    );
}

fn empty_dir_pod_figures() {
    let node = Node::start();
    let mut with = Vec::new();
    let mut without = Vec::new();
    for i in 0..20 {
        for (vol, out) in [(true, &mut with), (false, &mut without)] {
            let name = format!("{}{i}", if vol { "e" } else { "n" });
            let volumes = if vol {
                "  volumes: [{name: d, emptyDir: {}}]\n"
            } else {
                ""
            };
            let mounts = if vol {
                ", volumeMounts: [{name: d, mountPath: /d}]"
            } else {
                ""
            };
            let t = Instant::now();
            node.apply(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n{volumes}  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600']{mounts}}}\n"
            ));
            node.wait_pod(&name, "running", Duration::from_secs(60), |p| {
                container(p, "c")["ready"] == true
            });
            out.push(t.elapsed());
            node.ok(&["delete", "pod", &name]);
        }
    }
    println!("apply-to-Running, 20 pods each:");
    println!(
        "  with an emptyDir volume: p50 {:?}, p99 {:?}",
        pct(&mut with, 0.5),
        pct(&mut with, 0.99)
    );
    println!(
        "  without volumes:         p50 {:?}, p99 {:?}",
        pct(&mut without, 0.5),
        pct(&mut without, 0.99)
    );
}

fn main() {
    abi_call_figures();
    empty_dir_pod_figures();
}
