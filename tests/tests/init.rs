//! End-to-end init containers, sidecars and lifecycle hooks.

use peapod_tests::{container, wait_for, Node};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn init_status<'a>(p: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    p["status"]["initContainerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

fn status_column(node: &Node, pod: &str) -> String {
    let t = node.ok(&["get", "pod", pod]);
    t.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_string()
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let node = Node::start();
    // /dev/shm is the pod's: every container appends to the same file.
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  initContainers:
  - name: first
    image: busybox:1.35
    command: ["sh", "-c", "sleep 3; echo first >> /dev/shm/order; echo first-ran"]
  - name: second
    image: busybox:1.35
    command: ["sh", "-c", "echo second >> /dev/shm/order"]
  containers:
  - name: app
    image: busybox:1.35
    command: ["sh", "-c", "echo app >> /dev/shm/order; cat /dev/shm/order; sleep 3600"]
"#,
    );
    let early = wait_for("Init:0/2 shown", MIN, || {
        Some(status_column(&node, "ordered")).filter(|s| s == "Init:0/2")
    });
    assert_eq!(early, "Init:0/2");
    let p = node.wait_pod("ordered", "app running", MIN, |p| container(p, "app")["ready"] == true);
    assert_eq!(status_column(&node, "ordered"), "Running");
    for n in ["first", "second"] {
        let t = &init_status(&p, n)["state"]["terminated"];
        assert_eq!(t["exitCode"], 0, "{p}");
        assert_eq!(t["reason"], "Completed");
    }
    let logs = wait_for("app logs", MIN, || {
        Some(node.logs("ordered", "app")).filter(|l| l.contains("app"))
    });
    assert_eq!(logs, "first\nsecond\napp\n");
    // An init container's logs, as `kubectl logs -c` shows them.
    assert_eq!(node.ok(&["logs", "ordered", "-c", "first"]), "first-ran\n");
    let cond = p["status"]["conditions"].as_array().unwrap();
    assert!(cond.iter().any(|c| c["type"] == "Initialized" && c["status"] == "True"));
    node.ok(&["delete", "pod", "ordered", "--grace-period", "1"]);
}

#[test]
fn failing_init_container_fails_or_retries_per_policy() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  restartPolicy: Never
  initContainers:
  - name: setup
    image: busybox:1.35
    command: ["sh", "-c", "exit 1"]
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: retry}
spec:
  restartPolicy: Always
  initContainers:
  - name: setup
    image: busybox:1.35
    # Fails on its first run, succeeds on the second.
    command: ["sh", "-c", "if [ -f /dev/shm/ran ]; then exit 0; fi; touch /dev/shm/ran; exit 1"]
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
"#,
    );
    let p = node.wait_pod("never", "failed", MIN, |p| p["status"]["phase"] == "Failed");
    assert_eq!(init_status(&p, "setup")["state"]["terminated"]["exitCode"], 1);
    assert_eq!(container(&p, "app")["state"]["waiting"]["reason"], "PodInitializing");
    assert_eq!(status_column(&node, "never"), "Init:Error");
    let r = node.wait_pod("retry", "app running after one retry", MIN, |p| {
        container(p, "app")["ready"] == true
    });
    assert_eq!(init_status(&r, "setup")["restartCount"], 1, "{r}");
    assert_eq!(init_status(&r, "setup")["state"]["terminated"]["exitCode"], 0);
    node.ok(&["delete", "pod", "never", "retry", "--grace-period", "1"]);
}

#[test]
fn sidecar_runs_beside_the_app_and_stops_after_it() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: with-sidecar}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: proxy
    image: busybox:1.35
    restartPolicy: Always
    command: ["sh", "-c", "mkdir -p /www && echo from-sidecar > /www/index.html && exec httpd -f -p 8080 -h /www"]
    startupProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
  containers:
  - name: app
    image: busybox:1.35
    command: ["sh", "-c", "wget -q -O- http://127.0.0.1:8080/ && sleep 4"]
"#,
    );
    let running = node.wait_pod("with-sidecar", "app and sidecar running", MIN, |p| {
        container(p, "app")["state"]["running"].is_object() && init_status(p, "proxy")["ready"] == true
    });
    assert_eq!(init_status(&running, "proxy")["started"], true);
    let table = node.ok(&["get", "pod", "with-sidecar"]);
    assert!(table.contains("2/2"), "{table}");
    let done = node.wait_pod("with-sidecar", "succeeded", MIN, |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(container(&done, "app")["state"]["terminated"]["exitCode"], 0);
    assert!(
        init_status(&done, "proxy")["state"]["terminated"].is_object(),
        "sidecar stopped: {done}"
    );
    assert_eq!(init_status(&done, "proxy")["restartCount"], 0);
    assert!(node.ok(&["logs", "with-sidecar", "-c", "app"]).contains("from-sidecar"));
    node.ok(&["delete", "pod", "with-sidecar"]);
}

#[test]
fn post_start_and_pre_stop_hooks_take_effect() {
    let node = Node::start();
    // A recorder pod prints every request it receives.
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: recorder}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: nc
    image: busybox:1.35
    command: ["sh", "-c", "while true; do printf 'HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n' | nc -l -p 8080; done"]
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"#,
    );
    let rec = node.wait_pod("recorder", "recorder ready", MIN, |p| {
        container(p, "nc")["ready"] == true
    });
    let rec_ip = rec["status"]["podIP"].as_str().unwrap().to_string();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: exec-hook
    image: busybox:1.35
    command: ["sh", "-c", "until [ -f /tmp/post-start ]; do sleep 0.1; done; echo saw-post-start; sleep 3600"]
    lifecycle:
      postStart:
        exec: {{command: ["touch", "/tmp/post-start"]}}
  - name: http-hook
    image: busybox:1.35
    command: ["sleep", "3600"]
    lifecycle:
      postStart:
        httpGet: {{host: "{rec_ip}", port: 8080, path: /post-start-hook}}
      preStop:
        httpGet: {{host: "{rec_ip}", port: 8080, path: /pre-stop-hook}}
---
apiVersion: v1
kind: Pod
metadata: {{name: bad-hook}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "exit 7"]}}
"#
    ));
    wait_for("postStart exec ran", MIN, || {
        Some(node.logs("hooked", "exec-hook")).filter(|l| l.contains("saw-post-start"))
    });
    wait_for("postStart httpGet received", MIN, || {
        Some(node.logs("recorder", "nc")).filter(|l| l.contains("GET /post-start-hook HTTP/1.1"))
    });
    node.ok(&["delete", "pod", "hooked"]);
    let logs = node.ok(&["logs", "recorder"]);
    assert!(logs.contains("GET /pre-stop-hook HTTP/1.1"), "{logs}");
    assert!(logs.contains("User-Agent: kube-probe/"), "{logs}");
    let bad = node.wait_pod("bad-hook", "restarted after its hook failed", MIN, |p| {
        container(p, "app")["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(container(&bad, "app")["ready"], false);
    let described = node.ok(&["describe", "pod", "bad-hook"]);
    assert!(described.contains("FailedPostStartHook"), "{described}");
    assert!(described.contains("exited with 7"), "{described}");
    node.ok(&["delete", "pod", "recorder", "bad-hook"]);
}
