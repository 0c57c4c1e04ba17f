//! End-to-end: StatefulSets, on a real daemon with real containers: the
//! order pods come and go in (seen from the watch stream), identity, claims
//! per ordinal, partitioned rolling updates and ControllerRevisions.

use peapod_tests::{binary, wait_for, Node};
use serde_json::Value;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn statefulset(version: &str, partition: i64) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  updateStrategy:
    rollingUpdate: {{partition: {partition}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.35
        command: ["sh", "-c", "hostname; sleep 1; touch /tmp/ready; exec sleep 3600"]
        env: [{{name: VERSION, value: "{version}"}}]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
"#
    )
}

/// A `get pods -w -o json` running, its output gathered as it comes.
struct Watch {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

fn watch(node: &Node, selector: &str) -> Watch {
    let mut child = Command::new(binary())
        .args(["get", "pods", "-l", selector, "-w", "-o", "json"])
        .env("PEAPOD_SOCKET", node.run_dir().join("peapod.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    Watch { child, out, reader }
}

/// Every pod state the watch printed, in order (the starting list flattened).
/// The watch is stopped once its output has been still for a second, so
/// what it had yet to print is not cut off.
fn stop(mut w: Watch) -> Vec<Value> {
    let (mut last, mut still) = (usize::MAX, 0);
    for _ in 0..75 {
        let len = w.out.lock().unwrap().len();
        still = if len == last { still + 1 } else { 0 };
        if still >= 5 {
            break;
        }
        last = len;
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = w.child.kill();
    let _ = w.child.wait();
    let _ = w.reader.join();
    let bytes = w.out.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&bytes);
    let mut seen = Vec::new();
    for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let v = match v {
            Ok(v) => v,
            Err(e) if e.is_eof() => break,
            Err(e) => panic!("watch output is not JSON: {e}"),
        };
        match v["kind"].as_str() {
            Some("List") => seen.extend(v["items"].as_array().cloned().unwrap_or_default()),
            _ => seen.push(v),
        }
    }
    seen
}

fn name(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap_or("")
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn version(p: &Value) -> &str {
    p["spec"]["containers"][0]["env"][0]["value"].as_str().unwrap_or("")
}

fn revision(p: &Value) -> &str {
    p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or("")
}

/// The live pods of the set, by name.
fn pods(node: &Node) -> Vec<Value> {
    let mut v: Vec<Value> = node
        .list("pods", Some("app=web"))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    v.sort_by(|a, b| name(a).cmp(name(b)));
    v
}

fn status(node: &Node) -> Value {
    node.get("sts", "web").map(|s| s["status"].clone()).unwrap_or_default()
}

fn rollout_status(node: &Node) -> String {
    node.ok(&["rollout", "status", "sts/web", "--timeout", "3m"])
}

/// The index of the first state in `seen` that `f` takes.
fn first(seen: &[Value], what: &str, f: impl Fn(&Value) -> bool) -> usize {
    seen.iter()
        .position(f)
        .unwrap_or_else(|| panic!("the watch never saw {what}"))
}

#[test]
fn an_ordered_statefulset_comes_up_in_order_goes_down_from_the_top_and_rolls_by_partition() {
    let node = Node::start();
    let w = watch(&node, "app=web");
    node.apply(&statefulset("1", 0));
    let out = rollout_status(&node);
    assert!(
        out.trim_end()
            .ends_with("partitioned roll out complete: 3 new pods have been updated..."),
        "{out}"
    );
    let seen = stop(w);
    // Each pod is made only once the one below it is Ready.
    for (lower, higher) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let made = first(&seen, higher, |p| name(p) == higher);
        let lower_ready = first(&seen, &format!("{lower} ready"), |p| name(p) == lower && ready(p));
        assert!(
            lower_ready < made,
            "{higher} was made (state {made}) before {lower} was ready (state {lower_ready})"
        );
    }
    let p = node.pod("web-1").unwrap();
    assert_eq!(p["spec"]["hostname"], "web-1");
    assert_eq!(p["spec"]["subdomain"], "nginx");
    assert_eq!(p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(node.logs("web-1", "c").trim(), "web-1", "the container's hostname");
    let st = status(&node);
    assert_eq!(
        (st["replicas"].as_i64(), st["readyReplicas"].as_i64()),
        (Some(3), Some(3))
    );
    let first_revision = st["currentRevision"].as_str().unwrap().to_string();
    assert_eq!(st["updateRevision"], first_revision.as_str());
    assert!(pods(&node).iter().all(|p| revision(p) == first_revision));
    let table = node.ok(&["get", "sts"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..2], ["web", "3/3"], "{table}");
    let table = node.ok(&["get", "controllerrevisions"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(
        &row[..3],
        [first_revision.as_str(), "statefulset.apps/web", "1"],
        "{table}"
    );

    // Scaled to 1: web-2 goes first, and web-1 only once web-2 is gone.
    let w = watch(&node, "app=web");
    node.ok(&["scale", "sts", "web", "--replicas=1"]);
    wait_for("scaled down to one", MIN, || {
        (node.list("pods", Some("app=web")).len() == 1 && status(&node)["replicas"] == 1).then_some(())
    });
    let seen = stop(w);
    let web2_last = seen
        .iter()
        .rposition(|p| name(p) == "web-2")
        .expect("web-2 in the watch");
    let web1_going = first(&seen, "web-1 being deleted", |p| {
        name(p) == "web-1" && !p["metadata"]["deletionTimestamp"].is_null()
    });
    assert!(
        web2_last < web1_going,
        "web-1 was deleted (state {web1_going}) before web-2 was gone (state {web2_last})"
    );
    assert!(node.pod("web-0").is_some());

    // Back to 3, then a new template with partition 2: only web-2 takes it.
    node.ok(&["scale", "sts", "web", "--replicas=3"]);
    rollout_status(&node);
    node.apply(&statefulset("2", 2));
    let out = rollout_status(&node);
    assert!(
        out.trim_end()
            .ends_with("partitioned roll out complete: 1 new pods have been updated..."),
        "{out}"
    );
    let st = status(&node);
    let second_revision = st["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(second_revision, first_revision);
    assert_eq!(st["currentRevision"], first_revision.as_str());
    let now: Vec<(String, String)> = pods(&node)
        .iter()
        .map(|p| (name(p).to_string(), version(p).to_string()))
        .collect();
    assert_eq!(
        now,
        [("web-0", "1"), ("web-1", "1"), ("web-2", "2")].map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // Partition 0: web-1, then web-0, each once the one above is ready again.
    let w = watch(&node, "app=web");
    node.apply(&statefulset("2", 0));
    rollout_status(&node);
    wait_for("the rolling update complete", MIN, || {
        let st = status(&node);
        (st["currentRevision"] == second_revision.as_str() && st["updatedReplicas"] == 3).then_some(())
    });
    let seen = stop(w);
    let web1_new_ready = first(&seen, "web-1 updated and ready", |p| {
        name(p) == "web-1" && version(p) == "2" && ready(p)
    });
    let web0_going = first(&seen, "web-0 replaced", |p| {
        name(p) == "web-0" && version(p) == "1" && !p["metadata"]["deletionTimestamp"].is_null()
    });
    assert!(
        web1_new_ready < web0_going,
        "web-0 was replaced (state {web0_going}) before the new web-1 was ready (state {web1_new_ready})"
    );
    assert!(pods(&node)
        .iter()
        .all(|p| version(p) == "2" && revision(p) == second_revision));

    // History and undo: the first revision comes back as revision 3.
    let out = node.ok(&["rollout", "history", "sts/web"]);
    let revs: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["1", "2"], "{out}");
    assert_eq!(
        node.ok(&["rollout", "undo", "sts/web"]).trim(),
        "statefulset.apps/web rolled back"
    );
    rollout_status(&node);
    wait_for("rolled back to version 1", 2 * MIN, || {
        let p = pods(&node);
        (p.len() == 3 && p.iter().all(|p| version(p) == "1" && ready(p))).then_some(())
    });
    let out = node.ok(&["rollout", "history", "sts/web"]);
    let revs: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["2", "3"], "{out}");
    assert_eq!(
        wait_for("the old revision current again", MIN, || {
            let st = status(&node);
            (st["currentRevision"] == st["updateRevision"]).then(|| st["currentRevision"].clone())
        }),
        first_revision.as_str(),
        "the old revision is reused, not copied"
    );

    // Deleted, the set takes its pods and revisions with it.
    node.ok(&["delete", "sts", "web"]);
    wait_for("pods and revisions gone", MIN, || {
        (node.list("pods", Some("app=web")).is_empty() && node.list("controllerrevisions", None).is_empty())
            .then_some(())
    });
}

const CLAIMED: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Retain}
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.35
        command: ["sleep", "3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

fn claim_uid(node: &Node, name: &str) -> Option<String> {
    node.get("pvc", name)
        .and_then(|c| c["metadata"]["uid"].as_str().map(str::to_string))
}

#[test]
fn claims_are_made_per_ordinal_kept_across_pods_and_retained_as_the_policy_says() {
    let node = Node::start();
    node.apply(CLAIMED);
    // Parallel: both pods at once, each with its claim; no volume binds them
    // yet, so they wait, saying why.
    let (uid0, uid1) = wait_for("both claims", MIN, || {
        Some((claim_uid(&node, "data-db-0")?, claim_uid(&node, "data-db-1")?))
    });
    let c = node.get("pvc", "data-db-0").unwrap();
    assert_eq!(c["status"]["phase"], "Pending");
    assert_eq!(c["metadata"]["labels"]["app"], "db");
    let table = node.ok(&["get", "pvc"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..2], ["data-db-0", "Pending"], "{table}");
    for pod in ["db-0", "db-1"] {
        let p = node.wait_pod(pod, "held by its unbound claim", MIN, |p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
        });
        let claim = format!("data-{pod}");
        assert_eq!(
            p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            claim.as_str()
        );
        let message = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PodScheduled")
            .unwrap()["message"]
            .clone();
        assert_eq!(
            message,
            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }
    let events = node.ok(&["get", "events"]);
    assert!(events.contains("FailedScheduling"), "{events}");
    assert!(
        events.contains("create Claim data-db-0 Pod db-0 in StatefulSet db success"),
        "{events}"
    );

    // A replaced pod gets the same claim back, not a new one.
    let old = node.pod("db-0").unwrap()["metadata"]["uid"].clone();
    node.ok(&["delete", "pod", "db-0"]);
    let new = wait_for("db-0 made again", MIN, || {
        node.pod("db-0").filter(|p| p["metadata"]["uid"] != old)
    });
    assert_eq!(
        new["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-db-0"
    );
    assert_eq!(claim_uid(&node, "data-db-0").as_deref(), Some(uid0.as_str()));

    // whenScaled: Delete: scaling down takes db-1's claim with it.
    node.ok(&["scale", "sts", "db", "--replicas=1"]);
    wait_for("db-1 and its claim gone", MIN, || {
        (node.pod("db-1").is_none() && claim_uid(&node, "data-db-1").is_none()).then_some(())
    });
    assert_eq!(claim_uid(&node, "data-db-0").as_deref(), Some(uid0.as_str()));
    assert_ne!(uid1, uid0);

    // whenDeleted: Retain: the set goes, its remaining claim stays.
    node.ok(&["delete", "sts", "db"]);
    wait_for("the pods gone", MIN, || {
        node.list("pods", Some("app=db")).is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(claim_uid(&node, "data-db-0").as_deref(), Some(uid0.as_str()));
    node.ok(&["delete", "pvc", "data-db-0"]);
}

const STORED: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kv}
spec:
  serviceName: kv
  replicas: 2
  selector:
    matchLabels: {app: kv}
  template:
    metadata:
      labels: {app: kv}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.35
        command: ["sh", "-c", "cat /data/id 2>/dev/null || (hostname > /data/id; echo fresh); sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 8Mi}}
"#;

#[test]
fn claim_templates_are_provisioned_bound_and_keep_each_ordinals_data() {
    let node = Node::start_with_local_storage();
    node.apply(STORED);
    for pod in ["kv-0", "kv-1"] {
        node.wait_pod(pod, "Running on its own volume", MIN, |p| {
            p["status"]["phase"] == "Running"
        });
        let claim = node.get("pvc", &format!("data-{pod}")).unwrap();
        assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
        assert_eq!(claim["spec"]["storageClassName"], "local");
        wait_for("the pod wrote its id", MIN, || {
            node.logs(pod, "c").contains("fresh").then_some(())
        });
    }
    // A replaced pod gets its own data back, not its sibling's.
    let old = node.pod("kv-1").unwrap()["metadata"]["uid"].clone();
    node.ok(&["delete", "pod", "kv-1"]);
    wait_for("kv-1 back, reading its id", MIN, || {
        let p = node.pod("kv-1")?;
        (p["metadata"]["uid"] != old && node.logs("kv-1", "c").trim() == "kv-1").then_some(())
    });
    node.ok(&["delete", "sts", "kv"]);
    wait_for("the pods gone", MIN, || {
        node.list("pods", Some("app=kv")).is_empty().then_some(())
    });
    // whenDeleted defaults to Retain: the claims stay; deleting them frees their volumes.
    node.ok(&["delete", "pvc", "data-kv-0", "data-kv-1"]);
    wait_for("the volumes deleted", MIN, || {
        node.list("pv", None).is_empty().then_some(())
    });
}
