//! End-to-end: PersistentVolumes, claims and classes, bound by the node's
//! binder as Kubernetes' PersistentVolume controller binds them.

use peapod_tests::{wait_for, Node};
use serde_json::Value;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn volume(name: &str, size: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: /srv/{name}}}\n{extra}"
    )
}

fn claim(name: &str, size: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n{extra}"
    )
}

fn phase(v: &Value) -> &str {
    v["status"]["phase"].as_str().unwrap_or("")
}

fn bound(node: &Node, claim: &str) -> Value {
    wait_for(&format!("{claim} bound"), MIN, || {
        node.get("pvc", claim).filter(|c| phase(c) == "Bound")
    })
}

fn event_for(node: &Node, text: &str) {
    wait_for(text, MIN, || node.ok(&["get", "events"]).contains(text).then_some(()));
}

#[test]
fn claims_bind_to_the_smallest_fitting_volume_and_release_it() {
    let node = Node::start();
    for (name, size) in [("tiny", "500Mi"), ("small", "2Gi"), ("big", "10Gi")] {
        node.apply(&volume(name, size, ""));
    }
    wait_for("volumes Available", MIN, || {
        node.list("pv", None)
            .iter()
            .filter(|v| phase(v) == "Available")
            .count()
            .eq(&3)
            .then_some(())
    });
    // 1Gi: tiny is too small, small is the smallest that fits.
    node.apply(&claim("data", "1Gi", ""));
    let c = bound(&node, "data");
    assert_eq!(c["spec"]["volumeName"], "small");
    assert_eq!(c["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes");
    let v = node.get("pv", "small").unwrap();
    assert_eq!(phase(&v), "Bound");
    assert_eq!(v["spec"]["claimRef"]["name"], "data");
    assert_eq!(v["spec"]["claimRef"]["uid"], c["metadata"]["uid"]);
    let table = node.ok(&["get", "pv", "small"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["small", "2Gi", "RWO", "Retain", "Bound", "default/data"],
        "{table}"
    );
    let table = node.ok(&["get", "pvc", "data"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..5], ["data", "Bound", "small", "2Gi", "RWO"], "{table}");

    // Nothing fits 20Gi and no class is set: Pending, saying so.
    node.apply(&claim("huge", "20Gi", ""));
    event_for(
        &node,
        "no persistent volumes available for this claim and no storage class is set",
    );
    assert_eq!(phase(&node.get("pvc", "huge").unwrap()), "Pending");
    // A class that does not exist.
    node.apply(&claim("classy", "1Gi", "  storageClassName: fast\n"));
    event_for(&node, "storageclass.storage.k8s.io \"fast\" not found");
    // A claim naming a volume too small for it.
    node.apply(&claim("named", "1Gi", "  volumeName: tiny\n"));
    event_for(
        &node,
        "Cannot bind to requested volume \"tiny\": requested PV is too small",
    );
    assert_eq!(phase(&node.get("pvc", "named").unwrap()), "Pending");

    // A volume pre-bound to a claim goes to it, larger or not.
    node.apply(&volume(
        "reserved",
        "50Gi",
        "  claimRef: {namespace: default, name: pre}\n",
    ));
    node.apply(&claim("pre", "1Gi", ""));
    assert_eq!(bound(&node, "pre")["spec"]["volumeName"], "reserved");

    // The claim goes: its volume is Released, claimRef kept (Retain).
    node.ok(&["delete", "pvc", "data"]);
    let v = wait_for("small Released", MIN, || {
        node.get("pv", "small").filter(|v| phase(v) == "Released")
    });
    assert_eq!(v["spec"]["claimRef"]["name"], "data");
    // A new claim does not get a Released volume: big is next.
    node.apply(&claim("again", "1Gi", ""));
    assert_eq!(bound(&node, "again")["spec"]["volumeName"], "big");

    for c in ["huge", "classy", "named", "pre", "again"] {
        node.ok(&["delete", "pvc", c]);
    }
    node.ok(&["delete", "pv", "tiny", "small", "big", "reserved"]);
}
