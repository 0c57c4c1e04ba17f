//! End-to-end: controllers (ReplicaSet, ReplicationController) and the
//! scheduler, on a real daemon with real containers.

use peapod_tests::{wait_for, Node};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn name(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn controller_uid(p: &Value) -> Option<String> {
    p["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str().map(str::to_string))
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
}

/// Waits until exactly `n` pods of `owner` run and nothing else of it is left.
fn wait_replicas(node: &Node, owner: &Value, selector: &str, n: usize) -> BTreeSet<String> {
    let uid = owner["metadata"]["uid"].as_str().unwrap_or("").to_string();
    wait_for(&format!("{n} running pods of {}", name(owner)), 2 * MIN, || {
        let all: Vec<Value> = node
            .list("pods", Some(selector))
            .into_iter()
            .filter(|p| controller_uid(p).as_deref() == Some(uid.as_str()))
            .collect();
        let up: BTreeSet<String> = all.iter().filter(|p| running(p)).map(name).collect();
        (all.len() == n && up.len() == n).then_some(up)
    })
}

/// A pod of busybox sleeping, with `labels` and more `spec` lines (indented by 2).
fn sleeper(name: &str, labels: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n{spec}  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n"
    )
}

const RS: &str = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [fe, canary]}
  template:
    metadata:
      labels: {app: web, tier: fe}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.35
        command: ["sleep", "3600"]
"#;

#[test]
fn a_replicaset_keeps_scales_adopts_and_releases_its_pods() {
    let node = Node::start();
    // An orphan the ReplicaSet's selector takes, there before it.
    node.apply(&sleeper("stray", "{app: web, tier: canary}", ""));
    node.wait_pod("stray", "the orphan running", MIN, running);
    // A template its selector does not take is refused, naming the field.
    let bad = RS.replace("labels: {app: web, tier: fe}", "labels: {app: web, tier: db}");
    let f = node.root().join("bad-rs.yaml");
    std::fs::write(&f, bad).unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("spec.template.metadata.labels: Invalid value")
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );

    node.apply(RS);
    let rs = node.get("rs", "web").expect("the ReplicaSet");
    let sel = "app=web";
    let pods = wait_replicas(&node, &rs, sel, 3);
    assert!(pods.contains("stray"), "the orphan is adopted: {pods:?}");
    for p in pods.iter().filter(|p| *p != "stray") {
        assert!(p.starts_with("web-") && p.len() == 9, "named <rs>-<5 chars>: {p}");
    }
    let rs = wait_for("status of 3 ready", MIN, || {
        node.get("rs", "web").filter(|r| {
            r["status"]["readyReplicas"] == 3
                && r["status"]["availableReplicas"] == 3
                && r["status"]["observedGeneration"] == 1
        })
    });
    assert_eq!(rs["status"]["replicas"], 3);
    assert_eq!(
        rs["status"]["fullyLabeledReplicas"], 2,
        "stray has tier=canary: {}",
        rs["status"]
    );
    let table = node.ok(&["get", "rs", "-o", "wide"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "3", "3", "3"], "{table}");
    assert!(table.contains("app=web,tier in (canary,fe)"), "{table}");

    // A deleted pod is replaced.
    let victim = pods.iter().find(|p| *p != "stray").unwrap().clone();
    node.ok(&["delete", "pod", &victim]);
    let after = wait_replicas(&node, &rs, sel, 3);
    assert!(!after.contains(&victim), "{after:?}");

    // A crashed container restarts in its pod: the pods stay the same.
    let one = node.pod(after.iter().next().unwrap()).unwrap();
    for pid in node.pod_processes(&one) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    node.wait_pod(&name(&one), "the container restarted", MIN, |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1) && running(p)
    });
    assert_eq!(wait_replicas(&node, &rs, sel, 3), after);

    // Scaled up and down through the scale subresource.
    assert_eq!(
        node.ok(&["scale", "rs", "web", "--replicas=5"]).trim(),
        "replicaset.apps/web scaled"
    );
    wait_replicas(&node, &rs, sel, 5);
    let out = node.peapod(&["scale", "rs/web", "--replicas", "1", "--current-replicas", "4"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Expected replicas to be 4, was 5"),
        "{out:?}"
    );
    node.ok(&["scale", "rs/web", "--replicas", "1", "--current-replicas", "5"]);
    let last = wait_replicas(&node, &rs, sel, 1);
    let rs = wait_for("observed generation 3", MIN, || {
        node.get("rs", "web")
            .filter(|r| r["status"]["observedGeneration"] == 3 && r["status"]["replicas"] == 1)
    });
    assert_eq!(rs["metadata"]["generation"], 3, "two spec changes");
    let described = node.ok(&["describe", "rs", "web"]);
    assert!(
        described.contains("Replicas:     1 current / 1 desired") && described.contains("Image:      busybox"),
        "{described}"
    );
    let events = node.ok(&["get", "events"]);
    assert!(
        events.contains("SuccessfulCreate")
            && events.contains("SuccessfulDelete")
            && events.contains("Created pod: web-"),
        "{events}"
    );

    // A pod whose labels stop matching is released, and replaced.
    let last = last.into_iter().next().unwrap();
    node.ok(&["label", "pod", &last, "app=other", "--overwrite"]);
    node.wait_pod(&last, "released", MIN, |p| controller_uid(p).is_none());
    let replacement = wait_replicas(&node, &rs, sel, 1);
    assert!(!replacement.contains(&last));
    let both = node.list("pods", Some("app in (web,other)"));
    assert_eq!(both.len(), 2, "{both:?}");

    // Deleting the ReplicaSet deletes what it owns, not what it released.
    node.ok(&["delete", "rs", "web"]);
    wait_for("its pod gone", MIN, || {
        node.list("pods", Some(sel)).is_empty().then_some(())
    });
    assert!(node.pod(&last).is_some_and(|p| running(&p)));
}

#[test]
fn a_replication_controller_selects_its_template_labels() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: legacy}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.35
        command: ["sleep", "3600"]
"#,
    );
    let rc = node.get("rc", "legacy").expect("the controller");
    assert_eq!(rc["spec"]["selector"]["app"], "legacy", "defaulted from the template");
    wait_replicas(&node, &rc, "app=legacy", 2);
    let table = node.ok(&["get", "replicationcontrollers"]);
    assert!(table.contains("legacy") && table.contains("DESIRED"), "{table}");
    let all = node.ok(&["get", "all"]);
    assert!(all.contains("replicationcontroller/legacy"), "{all}");
    assert_eq!(
        node.ok(&["scale", "rc", "legacy", "--replicas=0"]).trim(),
        "replicationcontroller/legacy scaled"
    );
    wait_for("no pods left", MIN, || {
        node.list("pods", Some("app=legacy")).is_empty().then_some(())
    });
    wait_for("status of 0", MIN, || {
        node.get("rc", "legacy")
            .filter(|r| r["status"]["replicas"] == 0 && r["status"]["readyReplicas"].is_null())
    });
}

fn failed_scheduling(node: &Node, pod: &str) -> Option<String> {
    let events: Value = serde_json::from_str(&node.ok(&["get", "events", "-o", "json"])).unwrap();
    events["items"]
        .as_array()?
        .iter()
        .find(|e| e["involvedObject"]["name"] == pod && e["reason"] == "FailedScheduling")
        .and_then(|e| e["message"].as_str().map(str::to_string))
}

#[test]
fn unfit_pods_wait_with_failed_scheduling_until_the_node_fits() {
    let node = Node::start();
    let node_name = wait_for("the node registered", MIN, || {
        node.list("nodes", None).first().map(name)
    });
    node.apply(&sleeper("picky", "{}", "  nodeSelector: {disktype: nvme}\n"));
    let message = wait_for("FailedScheduling", MIN, || failed_scheduling(&node, "picky"));
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
    let p = node.pod("picky").unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert!(p["spec"]["nodeName"].is_null());
    let cond = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    let events = node.ok(&["describe", "pod", "picky"]);
    assert!(events.contains("FailedScheduling"), "{events}");

    // The node gains the label: the pod is bound and runs.
    node.ok(&["label", "node", &node_name, "disktype=nvme"]);
    let p = node.wait_pod("picky", "bound and running", MIN, running);
    assert_eq!(p["spec"]["nodeName"], node_name.as_str());
    let wide = node.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("NODE") && wide.contains(&node_name), "{wide}");

    // A taint keeps out pods that do not tolerate it.
    let out = node.ok(&["taint", "nodes", &node_name, "dedicated=db:NoSchedule"]);
    assert_eq!(out.trim(), format!("node/{node_name} tainted"));
    let dup = node.peapod(&["taint", "nodes", &node_name, "dedicated=web:NoSchedule"]);
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("already has dedicated taint(s) with same effect(s)"),
        "{dup:?}"
    );
    node.apply(&sleeper("intolerant", "{}", ""));
    node.apply(&sleeper(
        "tolerant",
        "{}",
        "  tolerations:\n  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}\n",
    ));
    node.wait_pod("tolerant", "the tolerant pod running", MIN, running);
    let message = wait_for("FailedScheduling for the taint", MIN, || {
        failed_scheduling(&node, "intolerant")
    });
    assert!(
        message.starts_with("0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}."),
        "{message}"
    );
    assert_eq!(node.pod("intolerant").unwrap()["status"]["phase"], "Pending");
    // A pod deleted before it was bound is removed at once: nothing runs it.
    node.ok(&["delete", "pod", "intolerant"]);
    assert!(node.pod("intolerant").is_none());
    let out = node.ok(&["taint", "nodes", &node_name, "dedicated-"]);
    assert_eq!(out.trim(), format!("node/{node_name} untainted"));
    assert!(node.get("node", &node_name).unwrap()["spec"]["taints"].is_null());
}
