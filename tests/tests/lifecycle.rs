//! End-to-end: activeDeadlineSeconds, a changed image restarting its
//! container, Events expiring after the event TTL, API group discovery.

use peapod_tests::{container, wait_for, Node};
use std::io::{Read, Write};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

#[test]
fn active_deadline_ends_the_pod() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: bounded}
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox:1.35, command: [sleep, "3600"]}
"#,
    );
    node.wait_pod("bounded", "running", MIN, |p| container(p, "c")["ready"] == true);
    let p = node.wait_pod("bounded", "failed", MIN, |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");
    assert_eq!(
        p["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    assert!(container(&p, "c")["state"]["terminated"].is_object(), "{p}");
    assert_eq!(container(&p, "c")["restartCount"], 0);
    node.ok(&["delete", "pod", "bounded"]);
}

#[test]
fn changing_the_image_restarts_the_container() {
    let node = Node::start();
    node.import_image("localhost/busybox:v2");
    let pod = |image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: upgrade}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: {image}, command: [sleep, '3600']}}\n"
        )
    };
    node.apply(&pod("busybox:1.35"));
    let before = node.wait_pod("upgrade", "running", MIN, |p| container(p, "c")["ready"] == true);
    let first_id = container(&before, "c")["containerID"].clone();
    assert!(node.apply(&pod("localhost/busybox:v2")).contains("configured"));
    let after = node.wait_pod("upgrade", "running the new image", MIN, |p| {
        let c = container(p, "c");
        c["image"] == "localhost/busybox:v2" && c["ready"] == true && c["restartCount"] == 1
    });
    assert_ne!(container(&after, "c")["containerID"], first_id);
    assert_eq!(after["status"]["phase"], "Running");
    let described = node.ok(&["describe", "pod", "upgrade"]);
    assert!(
        described.contains("Container c definition changed, will be restarted"),
        "{described}"
    );
    node.ok(&["delete", "pod", "upgrade"]);
}

#[test]
fn events_expire_after_the_ttl() {
    let node = Node::start_with_args(&["--event-ttl", "2"], |_| {});
    node.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: quiet}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n");
    node.wait_pod("quiet", "running", MIN, |p| container(p, "c")["ready"] == true);
    let count = || {
        let v: serde_json::Value = serde_json::from_str(&node.ok(&["get", "events", "-o", "json"])).unwrap();
        v["items"].as_array().map_or(0, Vec::len)
    };
    assert!(count() >= 3, "Pulled, Created, Started recorded");
    wait_for("events expired", MIN, || (count() == 0).then_some(()));
    assert_eq!(container(&node.pod("quiet").unwrap(), "c")["ready"], true);
    node.ok(&["delete", "pod", "quiet", "--grace-period", "1"]);
}

#[test]
fn api_discovery_lists_versions_and_groups() {
    let node = Node::start();
    let get = |path: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(node.run_dir().join("peapod.sock")).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let api = get("/api");
    assert!(
        api.starts_with("HTTP/1.") && api.contains("\"APIVersions\"") && api.contains("\"v1\""),
        "{api}"
    );
    let apis = get("/apis");
    assert!(apis.contains("\"APIGroupList\""), "{apis}");
    // The core group's resources, with subresources and categories, from the kind table.
    let body = |resp: &str| -> serde_json::Value {
        serde_json::from_str(resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)).unwrap_or_default()
    };
    let v1 = body(&get("/api/v1"));
    let resources: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for r in [
        "pods",
        "pods/log",
        "pods/status",
        "namespaces",
        "namespaces/status",
        "events",
    ] {
        assert!(resources.contains(&r), "{r} missing from {resources:?}");
    }
    let pods = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["categories"], serde_json::json!(["all"]));
    assert_eq!(pods["shortNames"], serde_json::json!(["po"]));
    let apps = body(&get("/apis/apps/v1"));
    assert_eq!(apps["groupVersion"], "apps/v1");
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "replicasets/scale")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&scale["group"], &scale["version"], &scale["kind"]),
        (
            &serde_json::json!("autoscaling"),
            &serde_json::json!("v1"),
            &serde_json::json!("Scale")
        ),
        "{apps}"
    );
    assert!(apis.contains("\"apps\""), "{apis}");
    assert!(
        get("/apis/policy/v1").starts_with("HTTP/1.0 404"),
        "no kind is served there yet"
    );
    // A subresource the kind table does not list is not there.
    assert!(get("/api/v1/namespaces/default/pods/x/proxy").starts_with("HTTP/1.0 404"));
    // exec checks its query, then the pod, before any upgrade.
    let no_command = get("/api/v1/namespaces/default/pods/x/exec?stdout=true");
    assert!(
        no_command.starts_with("HTTP/1.0 400") && no_command.contains("at least 1 command"),
        "{no_command}"
    );
    let missing = get("/api/v1/namespaces/default/pods/x/exec?command=ls&stdout=true");
    assert!(
        missing.starts_with("HTTP/1.0 404") && missing.contains(r#"pods \"x\" not found"#),
        "{missing}"
    );
    // A Table, as kubectl's `get` asks for one.
    let table = |path: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(node.run_dir().join("peapod.sock")).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        body(&out)
    };
    let t = table("/api/v1/namespaces");
    assert_eq!(t["kind"], "Table");
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Status", "Age"]);
    let default = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["object"]["metadata"]["name"] == "default")
        .expect("a row for default");
    assert_eq!(default["cells"][1], "Active");
    assert_eq!(default["object"]["kind"], "PartialObjectMetadata");
    let one = table("/api/v1/namespaces/default?includeObject=None");
    assert_eq!(one["rows"][0]["cells"][0], "default");
    assert!(one["rows"][0]["object"].is_null());

    // The node registers itself, and its Lease (the first named group) is renewed.
    let groups = body(&get("/apis"));
    assert_eq!(groups["groups"][0]["name"], "coordination.k8s.io", "{groups}");
    let coordination = body(&get("/apis/coordination.k8s.io/v1"));
    assert_eq!(coordination["resources"][0]["name"], "leases");
    let nodes = wait_for("the node registered", MIN, || {
        Some(node.ok(&["get", "nodes", "-o", "wide"])).filter(|t| t.contains("Ready"))
    });
    assert!(nodes.contains("peapod://"), "{nodes}");
    let obj: serde_json::Value = serde_json::from_str(&node.ok(&["get", "nodes", "-o", "json"])).unwrap();
    let n = &obj["items"][0];
    assert!(
        n["status"]["capacity"]["cpu"].is_string() && n["status"]["allocatable"]["memory"].is_string(),
        "{n}"
    );
    assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "linux");
    let lease = |node: &Node| -> serde_json::Value {
        serde_json::from_str(&node.ok(&["get", "leases", "-n", "kube-node-lease", "-o", "json"])).unwrap()
    };
    let first = lease(&node)["items"][0]["spec"]["renewTime"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        lease(&node)["items"][0]["spec"]["holderIdentity"],
        n["metadata"]["name"]
    );
    wait_for("the lease renewed", Duration::from_secs(30), || {
        (lease(&node)["items"][0]["spec"]["renewTime"].as_str() != Some(first.as_str())).then_some(())
    });
}

#[test]
fn a_second_delete_with_a_shorter_grace_period_kills_sooner() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 120
  containers:
  - {name: c, image: busybox:1.35, command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}
"#,
    );
    node.wait_pod("stubborn", "running", MIN, |p| container(p, "c")["ready"] == true);
    // The first delete waits out a 120 s grace period in the background.
    let mut first = node.spawn_peapod(&["delete", "pod", "stubborn"]);
    node.wait_pod("stubborn", "terminating", MIN, |p| {
        !p["metadata"]["deletionTimestamp"].is_null()
    });
    let t = std::time::Instant::now();
    node.ok(&["delete", "pod", "stubborn", "--grace-period", "1"]);
    assert!(node.pod("stubborn").is_none());
    assert!(t.elapsed() < Duration::from_secs(60), "took {:?}", t.elapsed());
    let _ = first.wait();
    let described = node.ok(&["get", "events", "-o", "json"]);
    let killings = serde_json::from_str::<serde_json::Value>(&described).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "Killing")
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum::<i64>();
    assert_eq!(killings, 1, "one stop, not two: {described}");
}

fn owned_pod(name: &str, owner: &serde_json::Value) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  ownerReferences:
  - {{apiVersion: v1, kind: Pod, name: {}, uid: {}, controller: true, blockOwnerDeletion: true}}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{{name: c, image: busybox:1.35, command: [sleep, "3600"]}}]
"#,
        owner["metadata"]["name"].as_str().unwrap(),
        owner["metadata"]["uid"].as_str().unwrap()
    )
}

fn plain_pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers: [{{name: c, image: busybox:1.35, command: [sleep, \"3600\"]}}]\n"
    )
}

#[test]
fn dependents_are_collected_orphaned_or_deleted_first_as_the_cascade_says() {
    let node = Node::start();
    for n in ["bg", "orphaner", "fg"] {
        node.apply(&plain_pod(n));
    }
    let owners: Vec<serde_json::Value> = ["bg", "orphaner", "fg"].iter().map(|n| node.pod(n).unwrap()).collect();
    node.apply(&owned_pod("bg-dep", &owners[0]));
    node.apply(&owned_pod("orphaner-dep", &owners[1]));
    node.apply(&owned_pod("fg-dep", &owners[2]));
    for n in ["bg-dep", "orphaner-dep", "fg-dep"] {
        node.wait_pod(n, "running", MIN, |p| container(p, "c")["state"]["running"].is_object());
    }
    assert_eq!(node.pod("bg-dep").unwrap()["metadata"]["generation"], 1);

    // Background (the default): the owner goes, then the collector deletes its dependent.
    node.ok(&["delete", "pod", "bg"]);
    wait_for("bg-dep collected", MIN, || node.pod("bg-dep").is_none().then_some(()));

    // Orphan: the dependent stays, running, without its reference.
    node.ok(&["delete", "pod", "orphaner", "--cascade=orphan"]);
    let dep = wait_for("orphaner-dep released", MIN, || {
        node.pod("orphaner-dep")
            .filter(|p| p["metadata"]["ownerReferences"].is_null())
    });
    assert!(dep["metadata"]["deletionTimestamp"].is_null());
    std::thread::sleep(Duration::from_secs(2));
    assert!(container(&node.pod("orphaner-dep").unwrap(), "c")["state"]["running"].is_object());

    // Foreground: the owner waits, marked, until its blocking dependent is gone.
    node.ok(&["delete", "pod", "fg", "--cascade=foreground", "--wait=false"]);
    let fg = node.pod("fg").expect("the owner stays while its dependent exists");
    assert_eq!(fg["metadata"]["finalizers"], serde_json::json!(["foregroundDeletion"]));
    wait_for("fg and fg-dep gone", MIN, || {
        let (owner, dep) = (node.pod("fg"), node.pod("fg-dep"));
        assert!(owner.is_some() || dep.is_none(), "the owner went before its dependent");
        (owner.is_none() && dep.is_none()).then_some(())
    });
    node.ok(&["delete", "pod", "orphaner-dep"]);
}

#[test]
fn finalizers_hold_a_deleted_object_and_generation_counts_spec_changes() {
    let node = Node::start();
    let held = "apiVersion: v1\nkind: Pod\nmetadata: {name: held, finalizers: [example.com/hold]}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers: [{name: c, image: busybox:1.35, command: [sleep, \"3600\"]}]\n";
    node.apply(held);
    node.wait_pod("held", "running", MIN, |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    assert_eq!(node.pod("held").unwrap()["metadata"]["generation"], 1);
    node.apply(held);
    assert_eq!(
        node.pod("held").unwrap()["metadata"]["generation"],
        1,
        "an unchanged apply"
    );
    node.apply(&held.replace("image: busybox:1.35", "image: docker.io/library/busybox:1.35"));
    assert_eq!(node.pod("held").unwrap()["metadata"]["generation"], 2, "a new image");

    node.ok(&["delete", "pod", "held", "--wait=false"]);
    // The containers stop, but the finalizer keeps the object, its deletion over.
    let p = node.wait_pod("held", "terminated and held", MIN, |p| {
        p["metadata"]["deletionGracePeriodSeconds"] == 0 && !p["metadata"]["deletionTimestamp"].is_null()
    });
    assert_eq!(p["metadata"]["finalizers"], serde_json::json!(["example.com/hold"]));
    // No new finalizer may be added now.
    let mut more = p.clone();
    more["metadata"]["finalizers"] = serde_json::json!(["example.com/hold", "example.com/more"]);
    let f = node.dir.path().join("more.json");
    std::fs::write(&f, more.to_string()).unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Removing the last finalizer removes the object.
    let mut release = p.clone();
    release["metadata"].as_object_mut().unwrap().remove("finalizers");
    std::fs::write(&f, release.to_string()).unwrap();
    node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    wait_for("held removed", MIN, || node.pod("held").is_none().then_some(()));
}

/// A GET over the node's socket; the body as JSON.
fn get_json(node: &Node, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(node.run_dir().join("peapod.sock")).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, serde_json::from_str(body).unwrap_or_default())
}

#[test]
fn lists_come_in_pages_and_watches_get_bookmarks() {
    let mut node = Node::start();
    node.set_env(&[("PEAPOD_WATCH_BOOKMARK_SECONDS", "1")]);
    node.kill_daemon();
    node.start_daemon();
    for n in ["pa", "pb", "pc", "pd", "pe"] {
        let team = if n == "pb" || n == "pd" { "alpha" } else { "beta" };
        node.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}, labels: {{team: {team}}}}}\n"
        ));
    }
    let (_, all) = get_json(&node, "/api/v1/namespaces");
    let everything: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    // limit=2 pages through every namespace once, in order, at one resourceVersion.
    let mut paged = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    let mut path = "/api/v1/namespaces?limit=2".to_string();
    loop {
        let (code, page) = get_json(&node, &path);
        assert_eq!(code, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        paged.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        versions.insert(page["metadata"]["resourceVersion"].as_str().unwrap().to_string());
        match page["metadata"]["continue"].as_str() {
            Some(c) => path = format!("/api/v1/namespaces?limit=2&continue={c}"),
            None => break,
        }
    }
    assert_eq!(paged, everything);
    assert_eq!(versions.len(), 1, "{versions:?}");
    // A page that ends the list carries no token (no empty page to fetch after it).
    let (_, whole) = get_json(&node, &format!("/api/v1/namespaces?limit={}", everything.len()));
    assert_eq!(whole["items"].as_array().unwrap().len(), everything.len(), "{whole}");
    assert!(whole["metadata"]["continue"].is_null(), "{whole}");
    // A selector applies before the limit: one matching namespace a page.
    let (_, first) = get_json(&node, "/api/v1/namespaces?limit=1&labelSelector=team%3Dalpha");
    assert_eq!(first["items"][0]["metadata"]["name"], "pb", "{first}");
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, second) = get_json(
        &node,
        &format!("/api/v1/namespaces?limit=1&labelSelector=team%3Dalpha&continue={token}"),
    );
    assert_eq!(second["items"][0]["metadata"]["name"], "pd", "{second}");
    let (code, bad) = get_json(&node, "/api/v1/namespaces?limit=1&continue=garbage");
    assert_eq!(code, 400, "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("continue"), "{bad}");

    // A watch that allows bookmarks gets one carrying the revision it reached.
    use std::io::{BufRead, Write};
    let rv: u64 = all["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(node.run_dir().join("peapod.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /api/v1/namespaces?watch=true&resourceVersion={rv}&allowWatchBookmarks=true HTTP/1.0\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    node.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: pf}\n");
    let mut added = None;
    for line in std::io::BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue;
        };
        let at: u64 = ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap();
        match ev["type"].as_str() {
            Some("ADDED") => added = Some(at),
            Some("BOOKMARK") if added.is_some() => {
                assert_eq!(ev["object"]["kind"], "Namespace", "{ev}");
                assert!(at >= added.unwrap(), "a bookmark behind the watch: {ev}");
                return;
            }
            _ => {}
        }
    }
    panic!("no bookmark after the ADDED event (added at {added:?})");
}
