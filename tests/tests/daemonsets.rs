//! End-to-end: DaemonSets, on a real daemon with real containers.

use peapod_tests::{wait_for, Node};
use serde_json::Value;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn daemonset(version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {{app: agent}}
  template:
    metadata:
      labels: {{app: agent}}
    spec:
      nodeSelector: {{role: edge}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.35
        command: ["sleep", "3600"]
        env: [{{name: VERSION, value: "{version}"}}]
"#
    )
}

/// The live daemon pods.
fn daemon_pods(node: &Node) -> Vec<Value> {
    node.list("pods", Some("app=agent"))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn status(node: &Node) -> Value {
    node.get("ds", "agent").map(|d| d["status"].clone()).unwrap_or_default()
}

#[test]
fn a_daemonset_runs_one_pod_on_each_eligible_node() {
    let node = Node::start();
    let node_name = wait_for("the node registered", MIN, || {
        node.list("nodes", None)
            .first()
            .and_then(|n| n["metadata"]["name"].as_str().map(str::to_string))
    });
    node.apply(&daemonset("1"));
    // The node lacks the label: no pod.
    wait_for("observed with nothing to run", MIN, || {
        let s = status(&node);
        (s["observedGeneration"] == 1 && s["desiredNumberScheduled"] == 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon_pods(&node).is_empty());

    // Labelled, it runs one, bound to it.
    node.ok(&["label", "node", &node_name, "role=edge"]);
    let first = wait_for("a daemon pod running", MIN, || {
        let pods = daemon_pods(&node);
        (pods.len() == 1 && pods[0]["status"]["phase"] == "Running").then(|| pods[0].clone())
    });
    assert_eq!(first["spec"]["nodeName"], node_name.as_str());
    let s = wait_for("status of one ready", MIN, || {
        let s = status(&node);
        (s["numberReady"] == 1 && s["numberAvailable"] == 1).then_some(s)
    });
    assert_eq!(
        (
            s["desiredNumberScheduled"].as_i64(),
            s["currentNumberScheduled"].as_i64()
        ),
        (Some(1), Some(1))
    );
    let table = node.ok(&["get", "ds"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..7], ["agent", "1", "1", "1", "1", "1", "role=edge"], "{table}");

    // Cordoned, the node takes no new plain pod, but its daemon pod comes back.
    assert_eq!(
        node.ok(&["cordon", &node_name]).trim(),
        format!("node/{node_name} cordoned")
    );
    assert_eq!(node.get("node", &node_name).unwrap()["spec"]["unschedulable"], true);
    node.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n");
    let message = wait_for("FailedScheduling", MIN, || {
        node.pod("plain").and_then(|p| {
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                .and_then(|c| c["message"].as_str().map(str::to_string))
        })
    });
    assert!(
        message.starts_with("0/1 nodes are available: 1 node(s) were unschedulable."),
        "{message}"
    );
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    node.ok(&["delete", "pod", &first_name]);
    let second = wait_for("a new daemon pod on the cordoned node", MIN, || {
        let pods = daemon_pods(&node);
        (pods.len() == 1
            && pods[0]["metadata"]["name"] != first_name.as_str()
            && pods[0]["status"]["phase"] == "Running")
            .then(|| pods[0].clone())
    });
    let tolerations = second["spec"]["tolerations"].to_string();
    assert!(
        tolerations.contains("node.kubernetes.io/unschedulable"),
        "{tolerations}"
    );
    assert_eq!(
        node.ok(&["uncordon", &node_name]).trim(),
        format!("node/{node_name} uncordoned")
    );
    node.wait_pod("plain", "scheduled once uncordoned", MIN, |p| {
        p["status"]["phase"] == "Running"
    });

    // A template change replaces the pod (RollingUpdate, maxUnavailable 1).
    let old_hash = second["metadata"]["labels"]["controller-revision-hash"].clone();
    node.apply(&daemonset("2"));
    let third = wait_for("the pod replaced", MIN, || {
        let pods = daemon_pods(&node);
        (pods.len() == 1
            && pods[0]["metadata"]["labels"]["controller-revision-hash"] != old_hash
            && pods[0]["status"]["phase"] == "Running")
            .then(|| pods[0].clone())
    });
    assert_eq!(third["spec"]["containers"][0]["env"][0]["value"], "2");
    wait_for("updated status", MIN, || {
        (status(&node)["updatedNumberScheduled"] == 1).then_some(())
    });
    // The history is in ControllerRevisions: undo brings version 1 back as revision 3.
    let revisions = |node: &Node| -> Vec<String> {
        let out = node.ok(&["rollout", "history", "ds/agent"]);
        out.lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    assert_eq!(revisions(&node), ["1", "2"]);
    let table = node.ok(&["get", "controllerrevisions"]);
    assert!(table.contains("daemonset.apps/agent"), "{table}");
    assert_eq!(
        node.ok(&["rollout", "undo", "ds/agent"]).trim(),
        "daemonset.apps/agent rolled back"
    );
    let third = wait_for("version 1 again", MIN, || {
        let pods = daemon_pods(&node);
        (pods.len() == 1
            && pods[0]["spec"]["containers"][0]["env"][0]["value"] == "1"
            && pods[0]["status"]["phase"] == "Running")
            .then(|| pods[0].clone())
    });
    assert_eq!(
        third["metadata"]["labels"]["controller-revision-hash"], old_hash,
        "the old revision, renumbered"
    );
    assert_eq!(revisions(&node), ["2", "3"]);
    let out = node.ok(&["rollout", "status", "ds/agent", "--timeout", "1m"]);
    assert!(out.contains("daemon set \"agent\" successfully rolled out"), "{out}");

    // The label goes: so does the pod.
    node.ok(&["label", "node", &node_name, "role-"]);
    wait_for("the daemon pod gone", MIN, || {
        daemon_pods(&node).is_empty().then_some(())
    });
    wait_for("nothing desired", MIN, || {
        (status(&node)["desiredNumberScheduled"] == 0).then_some(())
    });
    node.ok(&["delete", "pod", "plain", "--grace-period", "1"]);
}
