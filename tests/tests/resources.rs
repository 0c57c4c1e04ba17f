//! End-to-end resources: cgroup limits from requests/limits, OOMKilled,
//! QoS classes, and admission against the node's allocatable.

use peapod_tests::{container, Node};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn cgroup_file(ctrl: &str, rel: &str, file: &str) -> String {
    let p = format!("/sys/fs/cgroup/{ctrl}/peapod/{rel}/{file}");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {p}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn limits_land_in_cgroups_and_qos_is_reported() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
    resources:
      limits: {cpu: 500m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: burstable}
spec:
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
    resources:
      requests: {cpu: 250m}
---
apiVersion: v1
kind: Pod
metadata: {name: besteffort}
spec:
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
"#,
    );
    let g = node.wait_pod("guaranteed", "running", MIN, |p| container(p, "app")["ready"] == true);
    assert_eq!(g["status"]["qosClass"], "Guaranteed");
    // The API server defaults requests to limits.
    assert_eq!(g["spec"]["containers"][0]["resources"]["requests"]["cpu"], "500m");
    let uid = g["metadata"]["uid"].as_str().unwrap();
    let id = container(&g, "app")["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("peapod://")
        .to_string();
    let pod = format!("pod{uid}");
    let ctr = format!("pod{uid}/{id}");
    assert_eq!(cgroup_file("cpu", &ctr, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file("cpu", &ctr, "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_file("cpu", &ctr, "cpu.shares"), "512");
    assert_eq!(
        cgroup_file("memory", &ctr, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cgroup_file("cpu", &pod, "cpu.cfs_quota_us"), "50000");
    assert_eq!(
        cgroup_file("memory", &pod, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cgroup_file("pids", &pod, "pids.max"), "4096");
    let b = node.wait_pod("burstable", "running", MIN, |p| container(p, "app")["ready"] == true);
    assert_eq!(b["status"]["qosClass"], "Burstable");
    let buid = b["metadata"]["uid"].as_str().unwrap();
    assert_eq!(cgroup_file("cpu", &format!("pod{buid}"), "cpu.shares"), "256");
    assert_eq!(cgroup_file("cpu", &format!("pod{buid}"), "cpu.cfs_quota_us"), "-1");
    let e = node.wait_pod("besteffort", "running", MIN, |p| container(p, "app")["ready"] == true);
    assert_eq!(e["status"]["qosClass"], "BestEffort");
    node.ok(&[
        "delete",
        "pod",
        "guaranteed",
        "burstable",
        "besteffort",
        "--grace-period",
        "1",
    ]);
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/cpu/peapod/{pod}")).exists());
}

#[test]
fn over_the_memory_limit_is_oom_killed_and_restarted() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: OnFailure
  containers:
  - name: hog
    image: busybox:1.35
    # tail -c keeps the last 200 MB in memory: far over the limit.
    command: ["sh", "-c", "head -c 300000000 /dev/zero | tail -c 200000000 > /dev/null"]
    resources:
      limits: {memory: 24Mi}
"#,
    );
    let p = node.wait_pod("hog", "an OOM kill recorded and a restart", MIN, |p| {
        let c = container(p, "hog");
        c["restartCount"].as_i64().unwrap_or(0) >= 1 && !c["lastState"]["terminated"].is_null()
    });
    let last = &container(&p, "hog")["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{p}");
    assert_eq!(last["exitCode"], 137);
    let events = node.ok(&["describe", "pod", "hog"]);
    assert!(events.contains("OOMKilled"), "{events}");
}

#[test]
fn admission_refuses_what_does_not_fit() {
    let node = Node::start();
    let node_name = peapod_tests::wait_for("the node registered", MIN, || {
        node.list("nodes", None)
            .first()
            .and_then(|n| n["metadata"]["name"].as_str().map(str::to_string))
    });
    // The greedy pods are bound to the node by their manifests, so the
    // scheduler never sees them: the node's own admission (kubelet's) refuses them.
    let pod = |name: &str, node: &str, requests: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{node}  containers:\n  - name: app\n    image: busybox:1.35\n    command: [sleep, '3600']\n    resources: {{requests: {requests}}}\n---\n"
        )
    };
    let bound = format!("  nodeName: {node_name}\n");
    node.apply(
        &[
            pod("greedy-cpu", &bound, "{cpu: '1000'}"),
            pod("greedy-memory", &bound, "{memory: 64Ti}"),
            pod("modest", "", "{cpu: 100m, memory: 16Mi}"),
            pod("unplaceable", "", "{cpu: '1000'}"),
        ]
        .concat(),
    );
    for (name, reason, what) in [
        ("greedy-cpu", "OutOfcpu", "cpu"),
        ("greedy-memory", "OutOfmemory", "memory"),
    ] {
        let p = node.wait_pod(name, "rejected", MIN, |p| p["status"]["phase"] == "Failed");
        assert_eq!(p["status"]["reason"], reason);
        let msg = p["status"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!(
                "Pod was rejected: Node didn't have enough resource: {what}, requested: "
            )),
            "{msg}"
        );
        assert!(p["status"]["containerStatuses"].is_null(), "no container ran: {p}");
    }
    node.wait_pod("modest", "admitted and running", MIN, |p| {
        container(p, "app")["ready"] == true
    });
    // Without a node, the scheduler finds none that fits, and says why.
    let p = node.wait_pod("unplaceable", "unschedulable", MIN, |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
    });
    assert!(p["spec"]["nodeName"].is_null());
    let message = p["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        message,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
    let table = node.ok(&["get", "pods"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("greedy-cpu") && l.contains("OutOfcpu")),
        "{table}"
    );
    node.ok(&[
        "delete",
        "pod",
        "greedy-cpu",
        "greedy-memory",
        "modest",
        "unplaceable",
        "--grace-period",
        "1",
    ]);
}
