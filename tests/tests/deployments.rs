//! End-to-end: Deployments, on a real daemon with real containers.

use peapod_tests::{binary, wait_for, Node};
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn deployment(version: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    kubernetes.io/change-cause: "version {version}"
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
{extra_spec}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.35
        command: ["sleep", "3600"]
        env: [{{name: VERSION, value: "{version}"}}]
        readinessProbe:
          exec: {{command: ["true"]}}
          periodSeconds: 1
"#
    )
}

fn rolling(surge: &str, unavailable: &str) -> String {
    format!(
        "  strategy:\n    type: RollingUpdate\n    rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}"
    )
}

fn version_of(p: &Value) -> String {
    p["spec"]["containers"][0]["env"][0]["value"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn live(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// The pods of `app=web` that run, by version, once the rollout settled.
fn versions(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = node
        .list("pods", Some("app=web"))
        .iter()
        .filter(|p| live(p) && ready(p))
        .map(version_of)
        .collect();
    v.sort();
    v
}

fn rollout_done(node: &Node) {
    let out = node.ok(&["rollout", "status", "deployment/web", "--timeout", "3m"]);
    assert!(
        out.trim_end().ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );
}

/// `rollout history` as (revision, change-cause) rows.
fn history(node: &Node) -> Vec<(String, String)> {
    let out = node.ok(&["rollout", "history", "deploy/web"]);
    assert_eq!(out.lines().next(), Some("deployment.apps/web"), "{out}");
    out.lines()
        .skip(2)
        .filter_map(|l| l.split_once(' '))
        .map(|(r, c)| (r.to_string(), c.trim().to_string()))
        .collect()
}

fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn replicasets(node: &Node) -> Vec<Value> {
    node.list("rs", Some("app=web"))
}

#[test]
fn a_rolling_update_keeps_its_bounds_and_rolls_back() {
    let node = Node::start();
    node.apply(&deployment("1", &rolling("1", "0")));
    rollout_done(&node);
    assert_eq!(versions(&node), ["1", "1", "1"]);
    let d = node.get("deploy", "web").unwrap();
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    assert_eq!(d["status"]["observedGeneration"], 1);
    let table = node.ok(&["get", "deploy"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "3/3", "3", "3"], "{table}");

    // Watch every pod change while rolling to version 2.
    let mut watch = Command::new(binary())
        .args(["get", "pods", "-l", "app=web", "-w", "-o", "json"])
        .env("PEAPOD_SOCKET", node.run_dir().join("peapod.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    node.apply(&deployment("2", &rolling("1", "0")));
    rollout_done(&node);
    assert_eq!(versions(&node), ["2", "2", "2"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pods: HashMap<String, Value> = HashMap::new();
    let mut events = 0;
    for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        // The watch was killed, perhaps in the middle of an object.
        let v = match v {
            Ok(v) => v,
            Err(e) if e.is_eof() => break,
            Err(e) => panic!("watch output is not JSON: {e}"),
        };
        let items = match v["kind"].as_str() {
            Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![v],
        };
        // The first output is the list the watch starts from: checked as a whole.
        for p in items {
            pods.insert(p["metadata"]["name"].as_str().unwrap_or("").to_string(), p);
            events += 1;
        }
        {
            let up = pods.values().filter(|p| live(p)).count();
            let available = pods.values().filter(|p| live(p) && ready(p)).count();
            assert!(
                up <= 4,
                "more than replicas + maxSurge pods at once ({up}) after {events} events"
            );
            assert!(
                available >= 3,
                "fewer than replicas - maxUnavailable available ({available}) after {events} events"
            );
        }
    }
    assert!(events > 10, "the watch saw the rollout: {events} events");
    assert!(pods.values().any(|p| version_of(p) == "2" && ready(p)));

    // Two ReplicaSets, the old one scaled to 0, revisions and history.
    let rss = replicasets(&node);
    assert_eq!(rss.len(), 2, "{rss:?}");
    for rs in &rss {
        let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str().unwrap();
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        let rev = rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .unwrap();
        let want = if rev == "1" { 0 } else { 3 };
        assert_eq!(rs["spec"]["replicas"], want, "revision {rev}");
    }
    assert_eq!(history(&node), rows(&[("1", "version 1"), ("2", "version 2")]));

    // Undo brings back revision 1's template as revision 3, reusing its ReplicaSet.
    assert_eq!(
        node.ok(&["rollout", "undo", "deploy/web"]).trim(),
        "deployment.apps/web rolled back"
    );
    rollout_done(&node);
    assert_eq!(versions(&node), ["1", "1", "1"]);
    assert_eq!(replicasets(&node).len(), 2, "no new ReplicaSet for an old template");
    assert_eq!(history(&node), rows(&[("2", "version 2"), ("3", "version 1")]));
    node.ok(&["rollout", "undo", "deploy/web", "--to-revision=2"]);
    rollout_done(&node);
    assert_eq!(versions(&node), ["2", "2", "2"]);
    let d = node.get("deploy", "web").unwrap();
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4");
    assert_eq!(d["metadata"]["annotations"]["kubernetes.io/change-cause"], "version 2");

    // set image and pause: nothing rolls while paused; resume rolls it.
    node.ok(&["rollout", "pause", "deploy/web"]);
    assert_eq!(
        node.ok(&["set", "image", "deploy/web", "c=docker.io/library/busybox:1.35"])
            .trim(),
        "deployment.apps/web image updated"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replicasets(&node).len(), 2, "paused: no new ReplicaSet");
    let d = node.get("deploy", "web").unwrap();
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["reason"], "DeploymentPaused");
    // Scaling still applies while paused.
    node.ok(&["scale", "deploy/web", "--replicas=2"]);
    wait_for("scaled to 2 while paused", MIN, || {
        (versions(&node).len() == 2).then_some(())
    });
    node.ok(&["rollout", "resume", "deploy/web"]);
    rollout_done(&node);
    assert_eq!(replicasets(&node).len(), 3);
    let images: Vec<String> = node
        .list("pods", Some("app=web"))
        .iter()
        .filter(|p| live(p))
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        images,
        ["docker.io/library/busybox:1.35", "docker.io/library/busybox:1.35"]
    );

    // Deleting the Deployment deletes its ReplicaSets and their pods (background).
    node.ok(&["delete", "deploy", "web"]);
    wait_for("ReplicaSets and pods gone", MIN, || {
        (replicasets(&node).is_empty() && node.list("pods", Some("app=web")).is_empty()).then_some(())
    });
}

#[test]
fn a_never_ready_rollout_stalls_at_its_deadline() {
    let node = Node::start();
    let bad = deployment("1", "  progressDeadlineSeconds: 4\n  strategy: {type: Recreate}")
        .replace(r#"exec: {command: ["true"]}"#, r#"exec: {command: ["false"]}"#);
    node.apply(&bad);
    let d = wait_for("ProgressDeadlineExceeded", MIN, || {
        node.get("deploy", "web").filter(|d| {
            d["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
                c["type"] == "Progressing" && c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"
            })
        })
    });
    let available = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Available")
        .cloned()
        .unwrap();
    assert_eq!(available["status"], "False", "{available}");
    let out = node.peapod(&["rollout", "status", "deploy/web"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deployment \"web\" exceeded its progress deadline"),
        "{out:?}"
    );
    // Recreate: a fixed template replaces every old pod, none overlapping.
    node.apply(&deployment(
        "2",
        "  progressDeadlineSeconds: 60\n  strategy: {type: Recreate}",
    ));
    rollout_done(&node);
    assert_eq!(versions(&node), ["2", "2", "2"]);
    let described = node.ok(&["describe", "deploy", "web"]);
    assert!(
        described.contains("StrategyType:           Recreate")
            && described.contains("3 desired | 3 updated | 3 total | 3 available | 0 unavailable")
            && described.contains("ScalingReplicaSet"),
        "{described}"
    );
    // Orphaning keeps the ReplicaSets and pods, without their owner.
    node.ok(&["delete", "deploy", "web", "--cascade=orphan"]);
    let rss = replicasets(&node);
    assert_eq!(rss.len(), 2);
    assert!(
        rss.iter().all(|rs| rs["metadata"]["ownerReferences"].is_null()),
        "{rss:?}"
    );
    assert_eq!(versions(&node), ["2", "2", "2"]);
}

#[test]
fn a_rollout_interrupted_by_kill_9_completes_with_the_right_counts() {
    let mut node = Node::start();
    let ten = |v: &str| deployment(v, &rolling("1", "0")).replace("replicas: 3", "replicas: 10");
    node.apply(&ten("1"));
    rollout_done(&node);
    node.apply(&ten("2"));
    wait_for("a few pods updated", 2 * MIN, || {
        let d = node.get("deploy", "web")?;
        (d["status"]["updatedReplicas"].as_i64() >= Some(3)).then_some(())
    });
    node.kill_daemon();
    node.start_daemon();
    rollout_done(&node);
    let pods: Vec<Value> = node.list("pods", Some("app=web")).into_iter().filter(live).collect();
    assert_eq!(pods.len(), 10, "no pod lost or doubled: {}", pods.len());
    assert!(pods.iter().all(|p| version_of(p) == "2" && ready(p)));
    let rss = replicasets(&node);
    assert_eq!(rss.len(), 2);
    let total: i64 = rss.iter().map(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(0)).sum();
    assert_eq!(total, 10);
    let d = node.get("deploy", "web").unwrap();
    assert_eq!(
        (
            d["status"]["replicas"].as_i64(),
            d["status"]["updatedReplicas"].as_i64(),
            d["status"]["availableReplicas"].as_i64()
        ),
        (Some(10), Some(10), Some(10))
    );
}

/// The ReplicaSets of `app=web` as (version, spec replicas), old first.
fn sizes(node: &Node) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = replicasets(node)
        .iter()
        .map(|rs| {
            (
                rs["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                rs["spec"]["replicas"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn scaling_in_the_middle_of_a_rollout_shares_the_change_proportionally() {
    let node = Node::start();
    let five = |version: &str| deployment(version, &rolling("2", "1")).replace("replicas: 3", "replicas: 5");
    node.apply(&five("1"));
    rollout_done(&node);
    // Version 2 never gets ready: the rollout stops with 4 old and 3 new
    // (5 + 2 surge in all, at least 5 - 1 available).
    node.apply(&five("2").replace(r#"exec: {command: ["true"]}"#, r#"exec: {command: ["false"]}"#));
    let stuck = [("1".to_string(), 4), ("2".to_string(), 3)];
    wait_for("the rollout stuck at 4 old and 3 new", MIN, || {
        (sizes(&node) == stuck).then_some(())
    });
    // Scaled to 10 (12 allowed with the surge), the 5 more go 3 to the old
    // ReplicaSet (4 * 12/7 = 6.9, so 7) and 2 to the new (3 * 12/7 = 5.1, so 5),
    // as Kubernetes shares them; not all to the new one.
    node.ok(&["scale", "deploy", "web", "--replicas=10"]);
    let scaled = [("1".to_string(), 7), ("2".to_string(), 5)];
    wait_for("the change shared proportionally", MIN, || {
        (sizes(&node) == scaled).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sizes(&node), scaled, "and it stays so");
    node.ok(&["delete", "deploy", "web"]);
    wait_for("the pods gone", MIN, || {
        node.list("pods", Some("app=web")).is_empty().then_some(())
    });
}
