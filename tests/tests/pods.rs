//! End-to-end: real daemon, real shims, real containers (run as root).

use peapod_tests::{container, wait_for, Node};
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);

fn phase(p: &serde_json::Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

#[test]
fn two_containers_share_loopback_and_hostname() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: two
  labels: {app: pair}
spec:
  containers:
  - name: server
    image: busybox:1.35
    command: ["sh", "-c", "hostname; while true; do echo hello-from-server | nc -l -p 8080; done"]
  - name: client
    image: busybox:1.35
    # busybox nc may quit at its stdin's end before the reply arrives: ask until it does.
    command: ["sh", "-c", "hostname; until nc 127.0.0.1 8080 </dev/null | grep hello-from-server; do sleep 0.2; done; sleep 3600"]
"#,
    );
    node.wait_pod("two", "both containers running", MIN, |p| {
        container(p, "server")["ready"] == true && container(p, "client")["ready"] == true
    });
    let client = wait_for("client got the message", MIN, || {
        let l = node.ok(&["logs", "two", "-c", "client"]);
        l.contains("hello-from-server").then_some(l)
    });
    let server = node.ok(&["logs", "two", "-c", "server"]);
    assert_eq!(client.lines().next(), Some("two"), "client hostname: {client}");
    assert!(client.contains("hello-from-server"));
    assert_eq!(server.lines().next(), Some("two"), "server hostname: {server}");
    let table = node.ok(&["get", "pods", "-l", "app in (pair)", "--show-labels"]);
    assert!(
        table.contains("2/2") && table.contains("Running") && table.contains("app=pair"),
        "{table}"
    );
    assert!(!node.ok(&["get", "pods", "-l", "app!=pair"]).contains("two"));
    // Several kinds at once, and the `all` category, as kubectl prints them.
    let all = node.ok(&["get", "all"]);
    assert!(all.contains("pod/two") && all.contains("2/2"), "{all}");
    let names = node.ok(&["get", "pods,namespaces", "-o", "name"]);
    assert!(
        names.contains("pod/two\n") && names.contains("namespace/default\n"),
        "{names}"
    );
    let tables = node.ok(&["get", "po,ns"]);
    assert!(
        tables.contains("pod/two") && tables.contains("namespace/kube-system"),
        "{tables}"
    );
    assert!(!node.peapod(&["get", "pods,ns", "two"]).status.success());
    node.ok(&["delete", "pod", "two", "--grace-period", "1"]);
    assert!(node.pod("two").is_none());
}

#[test]
fn on_failure_restarts_until_success_with_previous_logs() {
    let node = Node::start();
    // /dev/shm is the pod's and survives container restarts: the container counts its runs there.
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  restartPolicy: OnFailure
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "n=$(cat /dev/shm/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /dev/shm/n; echo run $n; [ $n -ge 4 ] && exit 0; exit 1"]
"#,
    );
    let p = node.wait_pod("flaky", "phase Succeeded", Duration::from_secs(120), |p| {
        phase(p) == "Succeeded"
    });
    let c = container(&p, "c");
    assert_eq!(c["restartCount"], 3, "{c}");
    assert_eq!(c["state"]["terminated"]["exitCode"], 0);
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(node.ok(&["logs", "flaky"]).trim(), "run 4");
    assert_eq!(node.ok(&["logs", "flaky", "--previous"]).trim(), "run 3");
}

#[test]
fn never_fails_with_the_exit_code() {
    let node = Node::start();
    node.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: three}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox:1.35, command: [sh, -c, 'exit 3']}\n");
    let p = node.wait_pod("three", "phase Failed", MIN, |p| phase(p) == "Failed");
    let c = container(&p, "c");
    assert_eq!(c["state"]["terminated"]["exitCode"], 3, "{c}");
    assert_eq!(c["state"]["terminated"]["reason"], "Error");
    assert_eq!(c["restartCount"], 0);
    let out = node.peapod(&["logs", "three", "--previous"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("previous terminated container \"c\" in pod \"three\" not found")
    );
}

#[test]
fn always_crash_loop_backs_off_10s_then_20s() {
    let node = Node::start();
    node.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: loop}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, command: [sh, -c, 'exit 1']}\n");
    let t0 = Instant::now();
    let mut seen = vec![];
    let mut backoff_seen = false;
    let mut table_seen = false;
    while seen.len() < 3 && t0.elapsed() < Duration::from_secs(90) {
        if let Some(p) = node.pod("loop") {
            let c = container(&p, "c");
            let n = c["restartCount"].as_u64().unwrap_or(0) as usize;
            if n > seen.len() {
                seen.push(t0.elapsed());
            }
            if c["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
                backoff_seen = true;
                table_seen |= node.ok(&["get", "pods"]).contains("CrashLoopBackOff");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(backoff_seen, "never saw CrashLoopBackOff");
    assert!(table_seen, "`get pods` never showed CrashLoopBackOff");
    assert_eq!(seen.len(), 3, "restarts seen at {seen:?}");
    let d1 = seen[1] - seen[0];
    let d2 = seen[2] - seen[1];
    // Generous bounds: the schedule is 10 s then 20 s; the machine is shared.
    assert!(
        d1 >= Duration::from_secs(9) && d1 <= Duration::from_secs(16),
        "first back-off {d1:?}"
    );
    assert!(
        d2 >= Duration::from_secs(19) && d2 <= Duration::from_secs(27),
        "second back-off {d2:?}"
    );
    let events = node.ok(&["describe", "pod", "loop"]);
    assert!(events.contains("Back-off restarting failed container c"), "{events}");
}

#[test]
fn graceful_delete_sigterm_then_sigkill() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: polite}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.2; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]
"#,
    );
    for name in ["polite", "stubborn"] {
        node.wait_pod(name, "running", MIN, |p| container(p, "c")["ready"] == true);
    }
    // The trapping container exits on SIGTERM long before its 30 s grace period.
    let t = Instant::now();
    node.ok(&["delete", "pod", "polite"]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "polite pod took {:?}",
        t.elapsed()
    );
    // The one ignoring SIGTERM is killed when its 2 s are up, not before.
    let t = Instant::now();
    node.ok(&["delete", "pod", "stubborn"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "stubborn pod took {took:?}"
    );
    assert!(node.pod("stubborn").is_none());
    let root = node.dir.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(&root) && l.contains("/pods/") && !l.ends_with("pods")),
        "pod mounts left"
    );
}

#[test]
fn daemon_kill_9_keeps_running_containers_and_records_exits() {
    let mut node = Node::start();
    node.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: steady}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, command: [sh, -c, 'echo up; sleep 3600']}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: brief}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox:1.35, command: [sh, -c, 'sleep 6; exit 7']}\n");
    let before = node.wait_pod("steady", "running", MIN, |p| container(p, "c")["ready"] == true);
    node.wait_pod("brief", "running", MIN, |p| container(p, "c")["ready"] == true);
    let id = container(&before, "c")["containerID"].clone();
    node.kill_daemon();
    std::thread::sleep(Duration::from_secs(7)); // `brief` exits while no daemon runs
    node.start_daemon();
    let p = node.wait_pod("brief", "exit recorded", MIN, |p| phase(p) == "Failed");
    assert_eq!(container(&p, "c")["state"]["terminated"]["exitCode"], 7);
    let after = node.wait_pod("steady", "still running", MIN, |p| container(p, "c")["ready"] == true);
    assert_eq!(container(&after, "c")["containerID"], id, "re-adopted, not restarted");
    assert_eq!(container(&after, "c")["restartCount"], 0);
    std::thread::sleep(Duration::from_secs(2));
    let again = node.pod("steady").unwrap();
    assert_eq!(container(&again, "c")["restartCount"], 0, "never started twice");
    let n = node.ok(&["get", "pods", "-o", "name"]);
    assert_eq!(n.lines().count(), 2, "nothing lost or duplicated: {n}");
}

#[test]
fn invalid_manifest_is_rejected_with_field_path_and_nothing_written() {
    let node = Node::start();
    let f = node.dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: c\n",
    )
    .unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.containers[0].image: Required value"), "{err}");
    assert!(node.pod("bad").is_none());
    std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    ports:\n    - containerPort: http\n").unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.yaml:9"), "{err}");
    assert!(node.pod("bad").is_none());
}

#[test]
fn apply_twice_is_idempotent_and_namespaces_work() {
    let node = Node::start();
    let ns = node.ok(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public"] {
        assert!(ns.contains(n), "{ns}");
    }
    node.ok(&["create", "namespace", "team"]);
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: same, namespace: team}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n";
    assert!(node.apply(yaml).contains("pod/same created"));
    let rv = |n: &Node| {
        let o = n.ok(&["get", "pod", "same", "-n", "team", "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&o).unwrap()["metadata"]["resourceVersion"].clone()
    };
    wait_for("running", MIN, || {
        let o = node.ok(&["get", "pod", "same", "-n", "team", "-o", "json"]);
        let p: serde_json::Value = serde_json::from_str(&o).unwrap();
        (container(&p, "c")["ready"] == true).then_some(())
    });
    let before = rv(&node);
    assert!(node.apply(yaml).contains("pod/same unchanged"));
    assert_eq!(rv(&node), before);
    assert!(node.ok(&["get", "pods", "-A"]).contains("team"));
    node.ok(&["delete", "namespace", "team"]);
    wait_for("namespace gone", MIN, || {
        (!node.ok(&["get", "ns"]).contains("team")).then_some(())
    });
}

#[test]
fn missing_image_with_pull_never_waits_with_a_clear_reason() {
    let node = Node::start();
    node.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: noimg}\nspec:\n  containers:\n  - {name: c, image: 'example.com/nothing:1', imagePullPolicy: Never}\n");
    let p = node.wait_pod("noimg", "ErrImageNeverPull", MIN, |p| {
        container(p, "c")["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert!(container(&p, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .contains("is not present with pull policy of Never"));
    node.ok(&["delete", "pod", "noimg"]);
}

#[test]
fn prestop_runs_before_sigterm_and_logs_follow_and_get_watch_stream() {
    let node = Node::start();
    let sock = node.run_dir().join("peapod.sock");
    let spawn = |args: &[&str]| {
        std::process::Command::new(peapod_tests::binary())
            .args(args)
            .env("PEAPOD_SOCKET", &sock)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut watch = spawn(&["get", "pods", "-w"]);
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "trap 'echo TERM after $(cat /dev/shm/hook); exit 0' TERM; echo started; while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo prestop-ran > /dev/shm/hook"]
"#,
    );
    node.wait_pod("hooked", "running", MIN, |p| container(p, "c")["ready"] == true);
    let follow = spawn(&["logs", "-f", "hooked"]);
    std::thread::sleep(Duration::from_millis(500));
    node.ok(&["delete", "pod", "hooked"]);
    let out = follow.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("started") && text.contains("TERM after prestop-ran"),
        "followed log: {text}"
    );
    let _ = watch.kill();
    let w = watch.wait_with_output().unwrap();
    let w = String::from_utf8_lossy(&w.stdout);
    assert!(
        w.contains("hooked") && w.contains("Running") && w.contains("Terminating"),
        "watch: {w}"
    );
}

#[test]
fn logs_are_timed_records_read_across_rotations() {
    let node = Node::start_with_args(
        &["--container-log-max-size=64Ki", "--container-log-max-files=5"],
        |_| {},
    );
    // `lines` writes 3000 numbered lines once it is followed (a file in
    // its emptyDir says so); `shapes` writes on stdout and stderr, a line far
    // longer than one record, and ends with a line without a newline.
    let shapes = "echo one; sleep 2; echo two >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; printf unfinished";
    let lines = "while [ ! -e /go/now ]; do sleep 0.1; done; seq 1 3000 | sed 's/^/line/'; sleep 1";
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: talk}}
spec:
  terminationGracePeriodSeconds: 0
  restartPolicy: Never
  volumes: [{{name: go, emptyDir: {{}}}}]
  containers:
  - name: shapes
    image: busybox:1.35
    command: ["sh", "-c", {}]
  - name: lines
    image: busybox:1.35
    command: ["sh", "-c", {}]
    volumeMounts: [{{name: go, mountPath: /go}}]
"#,
        serde_json::to_string(shapes).unwrap(),
        serde_json::to_string(lines).unwrap()
    ));
    node.wait_pod("talk", "both running", MIN, |p| {
        container(p, "lines")["state"]["running"].is_object() && container(p, "shapes")["state"]["running"].is_object()
    });
    let sock = node.run_dir().join("peapod.sock");
    let follow = std::process::Command::new(peapod_tests::binary())
        .args(["logs", "-f", "talk", "-c", "lines"])
        .env("PEAPOD_SOCKET", &sock)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let uid = node.pod("talk").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(node.root().join(format!("pods/{uid}/volumes/emptydir/go/now")), "").unwrap();

    let long = "x".repeat(40000);
    node.wait_pod("talk", "shapes ended", MIN, |p| {
        container(p, "shapes")["state"]["terminated"].is_object()
    });
    let all = node.logs("talk", "shapes");
    assert_eq!(all, format!("one\ntwo\n{long}\nunfinished\n"));
    // The file holds CRI records: a long line is three, the last a piece.
    let file = node.root().join(format!("logs/default_talk_{uid}/shapes/0.log"));
    let raw = std::fs::read_to_string(&file).unwrap();
    let tags: Vec<(&str, &str)> = raw
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            (f[1], f[2])
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("stdout", "F"),
            ("stderr", "F"),
            ("stdout", "P"),
            ("stdout", "P"),
            ("stdout", "F"),
            ("stdout", "F")
        ],
        "{}",
        &raw[..raw.len().min(300)]
    );

    // --timestamps: each line starts with its time; --since-time from the second.
    let stamped = node.ok(&["logs", "talk", "-c", "shapes", "--timestamps"]);
    let times: Vec<&str> = stamped.lines().map(|l| l.split_once(' ').unwrap().0).collect();
    assert_eq!(times.len(), 4, "{}", &stamped[..200]);
    let parsed: Vec<_> = times
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}")))
        .collect();
    assert!(
        parsed[1] - parsed[0] >= chrono::Duration::milliseconds(1900),
        "{times:?}"
    );
    let since_two = node.ok(&["logs", "talk", "-c", "shapes", "--since-time", times[1]]);
    assert_eq!(since_two, format!("two\n{long}\nunfinished\n"));
    assert_eq!(node.ok(&["logs", "talk", "-c", "shapes", "--since", "1h"]), all);
    // --tail counts lines, not records; --limit-bytes cuts the output.
    assert_eq!(
        node.ok(&["logs", "talk", "-c", "shapes", "--tail", "2"]),
        format!("{long}\nunfinished\n")
    );
    assert_eq!(
        node.ok(&["logs", "talk", "-c", "shapes", "--limit-bytes", "6"]),
        "one\ntw"
    );
    let bad = node.peapod(&["logs", "talk", "-c", "shapes", "--since-time", "yesterday"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since-time \"yesterday\""));

    // The follower saw all 3000 lines in order, though the log rotated
    // under it (3000 records of ~45 bytes are two files of 64 KiB).
    let out = follow.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let want: String = (1..=3000).map(|i| format!("line{i}\n")).collect();
    assert!(
        text == want,
        "followed {} bytes: ...{}",
        text.len(),
        &text[text.len().saturating_sub(100)..]
    );
    let rotated = node.root().join(format!("logs/default_talk_{uid}/lines/0.log.1"));
    assert!(rotated.exists(), "the log never rotated");
    // And read afterwards, the rotated files and the live one are one log.
    assert_eq!(node.logs("talk", "lines"), want);
    let tail: String = (2901..=3000).map(|i| format!("line{i}\n")).collect();
    assert_eq!(node.ok(&["logs", "talk", "-c", "lines", "--tail", "100"]), tail);
    node.ok(&["delete", "pod", "talk"]);
}

/// The daemon runs `peapod-shim` from beside its own executable; a node
/// where only `peapod` was installed runs the same commands as `peapod shim`,
/// and says so. Either way pods start, exec and go.
#[test]
fn shims_are_peapod_shim_or_the_one_binary_where_it_is_alone() {
    let mut node = Node::start();
    let exe_name = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n"
        )
    };
    let running = |node: &Node, name: &str| {
        node.wait_pod(name, "running", MIN, |p| {
            container(p, "c")["state"]["running"].is_object()
        })
    };
    node.apply(&pod("own"));
    running(&node, "own");
    let shims = node.shims("");
    assert_eq!(shims.len(), 1, "{shims:?}");
    assert_eq!(exe_name(shims[0]).as_deref(), Some("peapod-shim"));
    assert_eq!(node.ok(&["exec", "own", "--", "echo", "in-own"]).trim(), "in-own");
    assert!(!node.daemon_log().contains("no peapod-shim beside"));

    // Only `peapod`, copied alone into a directory of its own.
    node.kill_daemon();
    let alone = node.dir.path().join("bin");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(peapod_tests::binary(), alone.join("peapod")).unwrap();
    node.set_program(alone.join("peapod"));
    node.start_daemon();
    node.apply(&pod("alone"));
    let uid = running(&node, "alone")["metadata"]["uid"].as_str().unwrap().to_string();
    let shims = node.shims(&uid);
    assert_eq!(shims.len(), 1, "{shims:?}");
    assert_eq!(exe_name(shims[0]).as_deref(), Some("peapod"));
    assert_eq!(node.ok(&["exec", "alone", "--", "echo", "in-alone"]).trim(), "in-alone");
    assert!(
        node.daemon_log().contains("no peapod-shim beside"),
        "{}",
        node.daemon_log()
    );
    // The shim of the first daemon's pod was adopted and still answers.
    assert_eq!(node.ok(&["exec", "own", "--", "echo", "still"]).trim(), "still");
    node.ok(&["delete", "pod", "own", "alone", "--now"]);
    wait_for("both pods gone", MIN, || node.shims("").is_empty().then_some(()));
}
