//! Many pods at once (run as root): 500 pods created by 8 clients at the
//! same time each get exactly one container, none is reported
//! `ContainerStatusUnknown`, and deleting them all with 8 parallel clients
//! leaves nothing behind: no shim, socket, cgroup, mount, lease or directory.

use peapod_tests::{container, wait_for, Node};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const PODS: usize = 500;
const CLIENTS: usize = 8;

fn pods(node: &Node) -> Vec<Value> {
    let v: Value = serde_json::from_str(&node.ok(&["get", "pods", "-o", "json"])).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn five_hundred_pods_at_once_run_once_each_and_a_mass_delete_leaves_nothing() {
    // A /22: room for 500 pod addresses.
    let node = Node::start_with_args(&["--pod-cidr", "10.98.0.0/22", "--max-pods", "600"], |_| {});
    let names: Vec<String> = (0..PODS).map(|i| format!("p{i:03}")).collect();
    let files: Vec<std::path::PathBuf> = names
        .chunks(PODS.div_ceil(CLIENTS))
        .enumerate()
        .map(|(i, chunk)| {
            let docs: Vec<String> = chunk
                .iter()
                .map(|n| {
                    format!(
                        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {n}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600']}}\n"
                    )
                })
                .collect();
            let f = node.dir.path().join(format!("batch{i}.yaml"));
            std::fs::write(&f, docs.join("---\n")).unwrap();
            f
        })
        .collect();
    let sock = node.run_dir().join("peapod.sock");
    let appliers: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new(peapod_tests::binary())
                .args(["apply", "-f"])
                .arg(f)
                .env("PEAPOD_SOCKET", &sock)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut a in appliers {
        assert!(a.wait().unwrap().success());
    }
    let all = wait_for("all 500 running", Duration::from_secs(600), || {
        let all = pods(&node);
        (all.len() == PODS && all.iter().all(|p| container(p, "c")["state"]["running"].is_object())).then_some(all)
    });
    for p in &all {
        let c = container(p, "c");
        assert_eq!(c["restartCount"], 0, "{p}");
        assert!(c["containerID"].as_str().unwrap_or("").ends_with("-c-0"), "{p}");
        assert!(!p.to_string().contains("ContainerStatusUnknown"), "{p}");
    }
    assert_eq!(node.shims("").len(), PODS, "one shim per pod");
    let processes: usize = all.iter().map(|p| node.pod_processes(p).len()).sum();
    assert_eq!(processes, PODS, "one container process per pod");
    let uids: Vec<String> = all
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();

    let deleters: Vec<_> = names
        .chunks(PODS.div_ceil(CLIENTS))
        .map(|chunk| {
            Command::new(peapod_tests::binary())
                .args(["delete", "pod", "--grace-period", "0"])
                .args(chunk)
                .env("PEAPOD_SOCKET", &sock)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for("every pod gone", Duration::from_secs(600), || {
        pods(&node).is_empty().then_some(())
    });
    for mut d in deleters {
        assert!(d.wait().unwrap().success());
    }
    assert!(node.shims("").is_empty(), "no shim left");
    let sockets = std::fs::read_dir(node.run_dir().join("shims")).unwrap().count();
    assert_eq!(sockets, 0, "no shim socket left");
    for uid in &uids {
        for h in ["pids", "memory", "cpu"] {
            let cg = std::path::PathBuf::from(format!("/sys/fs/cgroup/{h}/peapod/pod{uid}"));
            assert!(!cg.exists(), "{} left", cg.display());
        }
        assert!(!node.root().join("pods").join(uid).exists());
    }
    // What stays: the node's two bind mounts of `<root>/pods` and `<run>/pods` onto themselves.
    let root = node.dir.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&root) && !l.split(' ').nth(4).unwrap_or("").ends_with("/pods"))
        .collect();
    assert!(ours.is_empty(), "mounts left: {ours:?}");
    let leases: Vec<_> = std::fs::read_dir(node.root().join("cni/ipam"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|net| std::fs::read_dir(net.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    let tree = node.tree();
    let mut kinds: Vec<&str> = tree["items"][0]["children"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["kind"].as_str().unwrap_or(""))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "Binder",
            "ClusterDns",
            "Controller",
            "Controller",
            "Controller",
            "Controller",
            "Controller",
            "Controller",
            "Controller",
            "Controller",
            "Controller",
            "Controller",
            "GarbageCollector",
            "ImageGc",
            "NamespaceActor",
            "Scheduler",
            "ServiceProxy",
        ],
        "only the node's controllers, no pod actor: {tree}"
    );
}
