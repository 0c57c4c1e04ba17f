//! Storage figures (run as root, after `scripts/setup.sh`): claim creation
//! to Bound for static and dynamically provisioned volumes; the cost of
//! staging and publishing a volume per plugin, as a pod's apply-to-Running
//! beside the same pod with an emptyDir; and sequential write throughput
//! inside a pod on each plugin beside the same write on the bare backing
//! store. Starts its own NFS server and Ceph cluster.
//!
//! `PEAPOD_BENCH_CLAIMS=20` claims per binding figure; `PEAPOD_BENCH_MIB=64`
//! MiB per write.

use peapod_tests::{pod_with_claim, wait_for, CephCluster, NfsServer, Node, LOCAL_PLUGIN, NFS_PLUGIN, RBD_PLUGIN};
use std::process::Command;
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(120);

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn claim(name: &str, class: &str, size: &str, modes: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [{modes}]\n  storageClassName: \"{class}\"\n  resources: {{requests: {{storage: {size}}}}}\n"
    )
}

fn bound_after(node: &Node, name: &str, start: Instant) -> Duration {
    wait_for(&format!("{name} bound"), MIN, || {
        let c = node.get("pvc", name)?;
        (c["status"]["phase"] == "Bound").then(|| start.elapsed())
    })
}

fn binding(node: &Node, n: usize) {
    let srv = node.dir.path().join("srv");
    let mut stat = Vec::new();
    for i in 0..n {
        std::fs::create_dir_all(srv.join(format!("s{i}"))).unwrap();
        node.apply(&format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: s{i}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: {}}}\n",
            srv.join(format!("s{i}")).display()
        ));
    }
    for i in 0..n {
        let name = format!("static{i}");
        let t = Instant::now();
        node.apply(&claim(&name, "", "1Gi", "ReadWriteOnce"));
        stat.push(bound_after(node, &name, t));
    }
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: now}\nprovisioner: local.peapod.io\n",
    );
    let mut dynamic = Vec::new();
    for i in 0..n {
        let name = format!("dyn{i}");
        let t = Instant::now();
        node.apply(&claim(&name, "now", "8Mi", "ReadWriteOnce"));
        dynamic.push(bound_after(node, &name, t));
    }
    println!("| claim → Bound ({n} claims, one at a time) | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| static hostPath volume | {} | {} |",
        ms(pct(&mut stat, 0.5)),
        ms(pct(&mut stat, 0.99))
    );
    println!(
        "| provisioned by local.peapod.io (an ext4 image each) | {} | {} |",
        ms(pct(&mut dynamic, 0.5)),
        ms(pct(&mut dynamic, 0.99))
    );
    // Claims first: a volume is kept while a claim is bound to it (pv-protection).
    for i in 0..n {
        node.ok(&["delete", "pvc", &format!("static{i}"), &format!("dyn{i}")]);
    }
    for i in 0..n {
        node.ok(&["delete", "pv", &format!("s{i}")]);
    }
}

/// apply→Running of a pod using `claim` (a fresh staging each time).
fn running_after(node: &Node, pod: &str, yaml: &str) -> Duration {
    let t = Instant::now();
    node.apply(yaml);
    let d = wait_for(&format!("{pod} Running"), MIN, || {
        let p = node.pod(pod)?;
        (p["status"]["phase"] == "Running").then(|| t.elapsed())
    });
    node.ok(&["delete", "pod", pod]);
    wait_for(&format!("{pod} gone"), MIN, || node.pod(pod).is_none().then_some(()));
    d
}

/// Seconds from busybox sh's `time` (`real\t0m 0.33s`).
fn real_seconds(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_start().starts_with("real"))?;
    let t = line.trim_start().trim_start_matches("real").trim();
    let (m, s) = t.split_once('m')?;
    Some(m.trim().parse::<f64>().ok()? * 60.0 + s.trim().trim_end_matches('s').parse::<f64>().ok()?)
}

/// MB/s of writing `mib` MiB in `secs`.
fn rate(mib: u32, secs: f64) -> f64 {
    mib as f64 * 1.048576 / secs.max(0.01)
}

fn in_pod_write(node: &Node, pod: &str, claim: &str, mib: u32) -> f64 {
    node.apply(&pod_with_claim(
        pod,
        claim,
        &format!(
            "time dd if=/dev/zero of=/data/bench bs=1M count={mib} conv=fsync 2>&1; rm -f /data/bench; sleep 3600"
        ),
    ));
    let secs = wait_for(&format!("{pod} wrote"), MIN, || real_seconds(&node.logs(pod, "c")));
    node.ok(&["delete", "pod", pod]);
    wait_for(&format!("{pod} gone"), MIN, || node.pod(pod).is_none().then_some(()));
    rate(mib, secs)
}

fn host_write(dir: &std::path::Path, mib: u32) -> f64 {
    let f = dir.join("bench");
    let t = Instant::now();
    let ok = Command::new("busybox")
        .args([
            "dd",
            "if=/dev/zero",
            &format!("of={}", f.display()),
            "bs=1M",
            &format!("count={mib}"),
            "conv=fsync",
        ])
        .output()
        .unwrap()
        .status
        .success();
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&f);
    assert!(ok, "dd into {}", dir.display());
    rate(mib, secs)
}

fn main() {
    let n: usize = std::env::var("PEAPOD_BENCH_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mib: u32 = std::env::var("PEAPOD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let nfs = NfsServer::start();
    let ceph = CephCluster::start();
    let node = Node::start_with(|n| {
        n.add_plugin(LOCAL_PLUGIN, None);
        n.add_plugin(NFS_PLUGIN, Some(Node::nfs_config()));
        n.add_plugin(RBD_PLUGIN, Some(Node::rbd_config(&ceph)));
    });
    binding(&node, n);

    // Volumes to mount.
    node.apply("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: nfs}\nprovisioner: nfs\nparameters: {server: 127.0.0.1, share: /export}\n");
    node.apply("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: ceph}\nprovisioner: rbd\n");
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: disk}\nprovisioner: local.peapod.io\n",
    );
    let size = format!("{}Mi", mib * 2);
    for (c, class, modes) in [
        ("vl", "disk", "ReadWriteOnce"),
        ("vn", "nfs", "ReadWriteMany"),
        ("vr", "ceph", "ReadWriteOnce"),
    ] {
        node.apply(&claim(c, class, &size, modes));
        bound_after(&node, c, Instant::now());
    }
    let rounds = 5;
    let mut rows = Vec::new();
    let empty = |i: usize| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: e{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600'], volumeMounts: [{{name: data, mountPath: /data}}]}}\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n"
        )
    };
    let mut base: Vec<Duration> = (0..rounds)
        .map(|i| running_after(&node, &format!("e{i}"), &empty(i)))
        .collect();
    let base = pct(&mut base, 0.5);
    for (label, c) in [
        ("local.peapod.io (ext4 image on loop)", "vl"),
        ("nfs (userspace NFSv3 client over FUSE)", "vn"),
        ("rbd (rbd-fuse + loop + ext4)", "vr"),
    ] {
        let mut v: Vec<Duration> = (0..rounds)
            .map(|i| {
                running_after(
                    &node,
                    &format!("{c}{i}"),
                    &pod_with_claim(&format!("{c}{i}"), c, "sleep 3600"),
                )
            })
            .collect();
        let p50 = pct(&mut v, 0.5);
        rows.push((label, p50, p50.saturating_sub(base)));
    }
    println!();
    println!(
        "| pod apply → Running (median of {rounds}) | time | over emptyDir ({}) |",
        ms(base)
    );
    println!("|---|---|---|");
    for (label, t, extra) in &rows {
        println!("| {label} | {} | {} |", ms(*t), ms(*extra));
    }

    // Sequential writes.
    let local_pod = in_pod_write(&node, "wl", "vl", mib);
    let local_host = host_write(&node.root().join("plugins/local.peapod.io/volumes"), mib);
    let nfs_pod = in_pod_write(&node, "wn", "vn", mib);
    let nfs_host = host_write(&nfs.export_dir(), mib);
    let rbd_pod = in_pod_write(&node, "wr", "vr", mib);
    let scratch = "rbd/bench-bare";
    ceph.rbd(&["create", "--size", &format!("{}", mib * 2), scratch]);
    let t = Instant::now();
    ceph.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "1M",
        "--io-threads",
        "1",
        "--io-pattern",
        "seq",
        "--io-total",
        &format!("{mib}M"),
        scratch,
    ]);
    let rbd_host = rate(mib, t.elapsed().as_secs_f64());
    ceph.rbd(&["rm", "--no-progress", scratch]);
    println!();
    println!("| {mib} MiB sequential write, 1 MiB blocks, fsync | in a pod | bare backing store |");
    println!("|---|---|---|");
    println!("| local.peapod.io | {local_pod:.0} MB/s | {local_host:.0} MB/s (the node's disk) |");
    println!(
        "| nfs (FUSE client → ganesha on 127.0.0.1) | {nfs_pod:.0} MB/s | {nfs_host:.0} MB/s (the export's disk) |"
    );
    println!("| rbd (rbd-fuse → memstore OSD) | {rbd_pod:.0} MB/s | {rbd_host:.0} MB/s (`rbd bench`, 1 thread) |");
    for c in ["vl", "vn", "vr"] {
        node.ok(&["delete", "pvc", c]);
    }
    wait_for("volumes deleted", MIN, || {
        node.list("pv", None).is_empty().then_some(())
    });
    drop(node);
    drop(ceph);
    drop(nfs);
}
