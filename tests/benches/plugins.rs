//! Volume plugin figures: the per-call cost of a no-op call through the ABI
//! (raw, and through the daemon's thread-and-deadline path) beside exec'ing a
//! trivial FlexVolume-style driver for the same call, and the apply-to-Running
//! latency of a pod with an emptyDir volume (run as root, after set-up).

use peapod_tests::{container, Node};
use peapod_volumes::{Operation, Registry};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The SDK's no-op example plugin, built on demand.
fn noop_plugin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let lib = profile_dir.join("examples/libnoop.so");
    if !lib.exists() {
        let release = profile_dir.ends_with("release");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "peapod-plugin-sdk", "--example", "noop"]);
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building the noop example");
    }
    lib
}

fn abi_call_figures() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(noop_plugin(), dir.path().join("libnoop.so")).unwrap();
    let (reg, refused) = Registry::load(&[dir.path().to_path_buf()]);
    assert!(refused.is_empty(), "{refused:?}");
    let plugin = reg.get("noop").expect("noop loaded").clone();
    let req = br#"{"volumeId":"v","volumePath":"/tmp"}"#;
    // Raw calls, timed in batches of 1000 so the clock's cost disappears.
    let mut raw = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..1000 {
            let (code, _) = plugin.call_raw(Operation::GetVolumeStats, req);
            assert_eq!(code, 0);
        }
        raw.push(t.elapsed() / 1000);
    }
    // The daemon's path: a thread per call, a deadline, JSON both ways.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut guarded = Vec::new();
    let stats_req = peapod_plugin_sdk::VolumeStatsRequest {
        volume_id: "v".into(),
        volume_path: "/tmp".into(),
        ..Default::default()
    };
    for _ in 0..2000 {
        let t = Instant::now();
        let r: Result<peapod_plugin_sdk::VolumeStats, _> =
            rt.block_on(plugin.call(Operation::GetVolumeStats, &stats_req, Duration::from_secs(5)));
        r.unwrap();
        guarded.push(t.elapsed());
    }
    // A FlexVolume-style driver: a program exec'd per call, JSON on stdout.
    let driver = dir.path().join("flex-driver");
    std::fs::write(&driver, "#!/bin/sh\necho '{\"status\":\"Success\"}'\n").unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&driver)
        .status()
        .unwrap();
    let mut exec = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let out = std::process::Command::new(&driver)
            .arg("getvolumestats")
            .output()
            .unwrap();
        assert!(out.status.success());
        exec.push(t.elapsed());
    }
    println!("no-op get_volume_stats through the C ABI (JSON in and out), median per call:");
    println!(
        "  raw table call:                          {:>10} ns",
        median(&mut raw).as_nanos()
    );
    println!(
        "  daemon path (thread + deadline + serde): {:>10} ns",
        median(&mut guarded).as_nanos()
    );
    println!(
        "  exec of a FlexVolume-style driver:       {:>10} ns",
        median(&mut exec).as_nanos()
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
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n{volumes}  containers:\n  - {{name: c, image: busybox, command: [sleep, '3600']{mounts}}}\n"
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
