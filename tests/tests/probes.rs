//! End-to-end probes: httpGet and exec liveness restart the container,
//! tcpSocket readiness flips READY, a startup probe holds liveness back.

use peapod_tests::{container, wait_for, Node};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn secs(t: &serde_json::Value) -> i64 {
    chrono_free_parse(t.as_str().unwrap_or_default())
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (no time zone crate needed).
fn chrono_free_parse(s: &str) -> i64 {
    let n = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    let (y, mo, d, h, mi, se) = (n(0, 4), n(5, 7), n(8, 10), n(11, 13), n(14, 16), n(17, 19));
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + h * 3600 + mi * 60 + se
}

#[test]
fn http_liveness_restarts_after_failure_threshold() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:1.35
    # Serves /healthz for 4 s, then removes it.
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && httpd -p 8080 -h /www && sleep 4 && rm /www/healthz && sleep 3600"]
    ports: [{name: http, containerPort: 8080}]
    livenessProbe:
      httpGet: {path: /healthz, port: http, httpHeaders: [{name: X-Probe, value: peapod}]}
      periodSeconds: 2
      failureThreshold: 3
"#,
    );
    let p = node.wait_pod("web", "restarted by its liveness probe", MIN, |p| {
        container(p, "web")["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    let last = &container(&p, "web")["lastState"]["terminated"];
    let ran = secs(&last["finishedAt"]) - secs(&last["startedAt"]);
    // Removed at 4 s, then 3 failures 2 s apart, then a 1 s grace period: about 10 s.
    assert!((7..=15).contains(&ran), "ran {ran} s before the restart: {last}");
    let described = node.ok(&["describe", "pod", "web"]);
    assert!(
        described.contains("Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{described}"
    );
    assert!(
        described.contains("Container web failed liveness probe, will be restarted"),
        "{described}"
    );
    node.ok(&["delete", "pod", "web"]);
}

#[test]
fn exec_liveness_like_the_kubernetes_docs() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: liveness-exec}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: liveness
    image: busybox:1.35
    args: ["/bin/sh", "-c", "touch /tmp/healthy; sleep 3; rm -f /tmp/healthy; sleep 600"]
    livenessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      initialDelaySeconds: 1
      periodSeconds: 1
"#,
    );
    let p = node.wait_pod("liveness-exec", "restarted", MIN, |p| {
        container(p, "liveness")["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(container(&p, "liveness")["lastState"]["terminated"]["exitCode"], 137);
    let described = node.ok(&["describe", "pod", "liveness-exec"]);
    assert!(
        described.contains("Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory"),
        "{described}"
    );
    node.ok(&["delete", "pod", "liveness-exec"]);
}

#[test]
fn tcp_readiness_flips_ready_when_the_port_opens() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.35
    command: ["sh", "-c", "sleep 4; mkdir -p /www; exec httpd -f -p 9000 -h /www"]
    readinessProbe:
      tcpSocket: {port: 9000}
      periodSeconds: 1
"#,
    );
    node.wait_pod("slow", "running, not ready", MIN, |p| {
        p["status"]["phase"] == "Running" && container(p, "app")["state"]["running"].is_object()
    });
    let before = node.ok(&["get", "pod", "slow"]);
    assert!(before.contains("0/1"), "{before}");
    let p = node.wait_pod("slow", "ready", MIN, |p| container(p, "app")["ready"] == true);
    let cond = |t: &str| {
        p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| c["status"].clone())
    };
    assert_eq!(cond("Ready"), Some("True".into()));
    assert_eq!(cond("ContainersReady"), Some("True".into()));
    let after = node.ok(&["get", "pod", "slow"]);
    assert!(after.contains("1/1"), "{after}");
    let described = node.ok(&["describe", "pod", "slow"]);
    assert!(
        described.contains("Readiness probe failed: dial tcp ") && described.contains("connection refused"),
        "{described}"
    );
    assert_eq!(container(&p, "app")["restartCount"], 0);
    node.ok(&["delete", "pod", "slow"]);
}

#[test]
fn startup_probe_holds_liveness_back_and_kills_when_it_fails() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: gated}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.35
    command: ["sh", "-c", "sleep 5; touch /tmp/started; sleep 3600"]
    # Would kill the container within a second if it ran before startup passed.
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 1
    startupProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 30
---
apiVersion: v1
kind: Pod
metadata: {name: never-starts}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
    startupProbe:
      exec: {command: ["false"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    let early = node.wait_pod("gated", "running", MIN, |p| {
        container(p, "app")["state"]["running"].is_object()
    });
    assert_eq!(container(&early, "app")["started"], false);
    let p = node.wait_pod("gated", "started and ready", MIN, |p| {
        container(p, "app")["started"] == true && container(p, "app")["ready"] == true
    });
    std::thread::sleep(Duration::from_secs(3));
    let p2 = node.pod("gated").unwrap();
    assert_eq!(container(&p2, "app")["restartCount"], 0, "{p}");
    let n = node.wait_pod("never-starts", "killed by its startup probe", MIN, |p| {
        container(p, "app")["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(container(&n, "app")["ready"], false);
    let described = wait_for("kill event", MIN, || {
        Some(node.ok(&["describe", "pod", "never-starts"]))
            .filter(|d| d.contains("Container app failed startup probe, will be restarted"))
    });
    assert!(described.contains("Startup probe failed"), "{described}");
    node.ok(&["delete", "pod", "gated", "never-starts"]);
}

/// A TLS server with a throwaway self-signed certificate, killed on drop.
struct TlsServer(std::process::Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tls_server(dir: &std::path::Path, port: u32) -> TlsServer {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=probe-test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl req");
    assert!(ok.success());
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    TlsServer(child)
}

#[test]
fn https_readiness_skips_certificate_verification() {
    let node = Node::start();
    let port = 19000 + node.net;
    let server = tls_server(node.dir.path(), port);
    wait_for("TLS server listening", MIN, || {
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).ok()
    });
    // The daemon probes from the host: 127.0.0.1 is the host's loopback here.
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: tls}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
    readinessProbe:
      httpGet: {{host: 127.0.0.1, port: {port}, scheme: HTTPS, path: /}}
      periodSeconds: 1
"#
    ));
    node.wait_pod("tls", "ready over HTTPS with a self-signed certificate", MIN, |p| {
        container(p, "app")["ready"] == true
    });
    drop(server);
    node.wait_pod("tls", "not ready once the server is gone", MIN, |p| {
        container(p, "app")["ready"] == false
    });
    let described = node.ok(&["describe", "pod", "tls"]);
    assert!(
        described.contains(&format!("Readiness probe failed: Get \"https://127.0.0.1:{port}/\"")),
        "{described}"
    );
    node.ok(&["delete", "pod", "tls"]);
}

/// A process killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn grpc_readiness_follows_the_health_service() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: rpc}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.35
    command: ["sleep", "3600"]
    readinessProbe:
      grpc: {port: 50051}
      periodSeconds: 1
"#,
    );
    let p = node.wait_pod("rpc", "running with an IP", MIN, |p| {
        container(p, "app")["state"]["running"].is_object() && p["status"]["podIP"].is_string()
    });
    assert_eq!(container(&p, "app")["ready"], false, "nothing serves yet");
    // The health server runs in the pod's network namespace, as a sidecar would.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let state = node.dir.path().join("health-state");
    std::fs::write(&state, "SERVING").unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/grpc_health.py");
    let _server = Server(
        std::process::Command::new("nsenter")
            .arg(format!(
                "--net={}",
                node.run_dir().join("pods").join(uid).join("net").display()
            ))
            .arg("/usr/bin/python3")
            .arg(&script)
            .arg("50051")
            .arg(&state)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the gRPC health server"),
    );
    node.wait_pod("rpc", "ready while SERVING", MIN, |p| {
        container(p, "app")["ready"] == true
    });
    std::fs::write(&state, "NOT_SERVING").unwrap();
    node.wait_pod("rpc", "not ready while NOT_SERVING", MIN, |p| {
        container(p, "app")["ready"] == false
    });
    let described = node.ok(&["describe", "pod", "rpc"]);
    assert!(
        described.contains("Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"),
        "{described}"
    );
    node.ok(&["delete", "pod", "rpc"]);
}

#[test]
fn readiness_keeps_probing_while_the_pod_terminates() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: draining}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: app
    image: busybox:1.35
    # On SIGTERM it stops being ready, drains for a while, then exits.
    command: ["sh", "-c", "touch /tmp/ready; trap 'rm -f /tmp/ready; sleep 6; exit 0' TERM; while true; do sleep 0.2; done"]
    readinessProbe:
      exec: {command: ["test", "-f", "/tmp/ready"]}
      periodSeconds: 1
"#,
    );
    node.wait_pod("draining", "ready", MIN, |p| container(p, "app")["ready"] == true);
    let mut delete = node.spawn_peapod(&["delete", "pod", "draining"]);
    let p = node.wait_pod("draining", "terminating and unready", MIN, |p| {
        !p["metadata"]["deletionTimestamp"].is_null() && container(p, "app")["ready"] == false
    });
    assert!(
        container(&p, "app")["state"]["running"].is_object(),
        "still running while unready: {p}"
    );
    assert!(delete.wait().unwrap().success());
    assert!(node.pod("draining").is_none());
}
