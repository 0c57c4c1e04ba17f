//! The supervision tree under faults (the test build's fault points, see
//! actors/src/faults.rs): an actor that panics is rebuilt and re-adopts its
//! containers exactly once, crashes are counted in the tree view, repeated
//! crashes escalate with the documented event, and the daemon killed at each
//! crash window neither runs a container twice nor forgets one.

use peapod_tests::{container, tree_find, tree_orphans, wait_for, Node};
use serde_json::Value;
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn running(p: &Value, c: &str) -> bool {
    container(p, c)["state"]["running"].is_object()
}

fn pod_yaml(name: &str, container: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: {container}\n    image: busybox:1.35\n    command: [sh, -c, {command:?}]\n"
    )
}

/// Restart count of the actor at `path` in the tree, once it is there.
fn restarts_at(node: &Node, path: &[(&str, &str)]) -> Option<u64> {
    tree_find(&node.tree(), path).and_then(|a| a["restarts"].as_u64())
}

#[test]
fn a_crashed_pod_actor_is_rebuilt_and_readopts_its_container() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "sleep 6; touch /tmp/ready; sleep 3600"]
    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}
"#,
    );
    let before = node.wait_pod("web", "running", MIN, |p| running(p, "c"));
    let id = container(&before, "c")["containerID"].clone();
    let shims = node.shims("/containers/c/");
    assert_eq!(shims.len(), 1);
    node.arm("pod.reconcile@web_default=panic*1");
    // Any change to the pod makes it reconcile: a new label.
    node.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {poke: '1'}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [\"sh\", \"-c\", \"sleep 6; touch /tmp/ready; sleep 3600\"]\n    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}\n");
    wait_for("PodActor restarted once", MIN, || {
        (restarts_at(&node, &[("PodActor", "default/web")]) == Some(1)).then_some(())
    });
    assert!(node.daemon_log().contains("fault injected at pod.reconcile"));
    // The rebuilt actors carry on: readiness turns true through them.
    let after = node.wait_pod("web", "ready after the rebuild", MIN, |p| {
        container(p, "c")["ready"] == true
    });
    assert_eq!(
        container(&after, "c")["containerID"],
        id,
        "re-adopted, not started again"
    );
    assert_eq!(container(&after, "c")["restartCount"], 0);
    assert_eq!(node.shims("/containers/c/"), shims, "the same single shim");
    let tree = node.tree();
    let c = tree_find(&tree, &[("PodActor", "default/web"), ("ContainerActor", "c")]).expect("container actor");
    assert_eq!(c["state"], "Running (attempt 0)", "{tree}");
    assert!(tree_orphans(&tree).is_empty(), "{tree}");
    node.ok(&["delete", "pod", "web", "--grace-period", "1"]);
    assert!(node.shims("").is_empty(), "no shim left");
}

#[test]
fn a_container_actor_crashing_on_an_exit_records_it_once() {
    let node = Node::start();
    // Counts its runs in the pod's /dev/shm: the first exits 3, the next ones stay up.
    node.apply(&pod_yaml(
        "crashy",
        "cx",
        "n=$(cat /dev/shm/n 2>/dev/null || echo 0); echo $((n+1)) > /dev/shm/n; [ $n -eq 0 ] && { sleep 3; exit 3; }; sleep 3600",
    ));
    node.wait_pod("crashy", "running", MIN, |p| running(p, "cx"));
    node.arm("container.exit@crashy_default=panic*1");
    let p = node.wait_pod("crashy", "restarted once", MIN, |p| {
        container(p, "cx")["restartCount"] == 1 && running(p, "cx")
    });
    assert_eq!(container(&p, "cx")["lastState"]["terminated"]["exitCode"], 3, "{p}");
    assert!(node.daemon_log().contains("fault injected at container.exit"));
    assert_eq!(
        restarts_at(&node, &[("PodActor", "default/crashy"), ("ContainerActor", "cx")]),
        Some(1)
    );
    std::thread::sleep(Duration::from_secs(2));
    let p = node.pod("crashy").unwrap();
    assert_eq!(container(&p, "cx")["restartCount"], 1, "the exit was counted once: {p}");
    assert_eq!(node.shims("/containers/cx/").len(), 1);
}

#[test]
fn a_container_actor_crashing_after_a_start_adopts_instead_of_starting_again() {
    let node = Node::start();
    node.arm("container.start@starter_default=panic*1");
    node.apply(&pod_yaml("starter", "sc", "sleep 3600"));
    let p = node.wait_pod("starter", "running", MIN, |p| container(p, "sc")["ready"] == true);
    assert!(node.daemon_log().contains("fault injected at container.start"));
    assert!(
        container(&p, "sc")["containerID"]
            .as_str()
            .unwrap_or("")
            .ends_with("-sc-0"),
        "{p}"
    );
    assert_eq!(container(&p, "sc")["restartCount"], 0);
    assert_eq!(node.shims("/containers/sc/").len(), 1, "one shim");
    assert_eq!(node.pod_processes(&p).len(), 1, "one container process");
    assert_eq!(
        restarts_at(&node, &[("PodActor", "default/starter"), ("ContainerActor", "sc")]),
        Some(1)
    );
}

#[test]
fn a_crashed_probe_actor_is_restarted_and_keeps_probing() {
    let node = Node::start();
    node.arm("probe.tick@probed/pc=panic*2");
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: pc
    image: busybox:1.35
    command: ["sh", "-c", "touch /tmp/alive; sleep 8; rm /tmp/alive; sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}
"#,
    );
    wait_for("probe restarted twice", MIN, || {
        (restarts_at(
            &node,
            &[
                ("PodActor", "default/probed"),
                ("ContainerActor", "pc"),
                ("ProbeActor", "liveness"),
            ],
        ) == Some(2))
        .then_some(())
    });
    // The rebuilt probe still works: it kills the container once /tmp/alive is gone.
    let p = node.wait_pod("probed", "killed by liveness", MIN, |p| {
        container(p, "pc")["restartCount"].as_u64() >= Some(1)
    });
    assert_eq!(container(&p, "pc")["lastState"]["terminated"]["exitCode"], 137, "{p}");
}

#[test]
fn a_crashed_node_actor_rebuilds_the_tree_and_readopts_every_pod() {
    let node = Node::start();
    node.apply(&pod_yaml("steady", "st", "sleep 3600"));
    let before = node.wait_pod("steady", "running", MIN, |p| running(p, "st"));
    let shims = node.shims("/containers/st/");
    node.arm("node.watch@late=panic*1");
    node.apply(&pod_yaml("late", "lt", "sleep 3600"));
    wait_for("node restarted once", MIN, || {
        let t = node.tree();
        (t["items"][0]["kind"] == "Node" && t["items"][0]["restarts"] == 1).then_some(())
    });
    let late = node.wait_pod("late", "running", MIN, |p| running(p, "lt"));
    assert_eq!(container(&late, "lt")["restartCount"], 0);
    let after = node.wait_pod("steady", "still running", MIN, |p| running(p, "st"));
    assert_eq!(
        container(&after, "st")["containerID"],
        container(&before, "st")["containerID"]
    );
    assert_eq!(node.shims("/containers/st/"), shims, "re-adopted, the same shim");
    assert_eq!(node.shims("/containers/lt/").len(), 1);
    let tree = node.tree();
    assert!(tree_find(&tree, &[("PodActor", "default/steady"), ("ContainerActor", "st")]).is_some());
    assert!(
        tree_find(&tree, &[("NamespaceActor", "namespaces")]).is_some(),
        "{tree}"
    );
    assert!(tree_orphans(&tree).is_empty(), "{tree}");
}

#[test]
fn a_crashed_namespace_actor_is_restarted_and_still_deletes_namespaces() {
    let node = Node::start();
    node.arm("namespace.pass=panic*1");
    node.ok(&["create", "namespace", "scratch"]);
    wait_for("namespace actor restarted", MIN, || {
        (restarts_at(&node, &[("NamespaceActor", "namespaces")]) == Some(1)).then_some(())
    });
    node.ok(&["delete", "namespace", "scratch"]);
    wait_for("namespace gone", MIN, || {
        (!node.ok(&["get", "ns"]).contains("scratch")).then_some(())
    });
}

#[test]
fn a_pod_actor_that_keeps_crashing_is_given_up_and_its_containers_stopped() {
    let host = tempfile::Builder::new()
        .prefix("pp-doomed-")
        .tempdir_in("/tmp")
        .unwrap();
    let h = host.path().display().to_string();
    let node = Node::start_with_args(&["--actor-max-restarts", "2", "--actor-restart-period", "60"], |_| {});
    node.apply(&pod_yaml("bystander", "by", "sleep 3600"));
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: doomed}}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{{name: h, hostPath: {{path: {h}}}}}]
  containers:
  - name: dc
    image: busybox:1.35
    command: ["sh", "-c", "trap 'echo got TERM >> /h/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: h, mountPath: /h}}]
"#
    ));
    node.wait_pod("doomed", "running", MIN, |p| running(p, "dc"));
    let by = node.wait_pod("bystander", "running", MIN, |p| running(p, "by"));
    node.arm("pod.reconcile@doomed_default=panic");
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: doomed, labels: {{poke: '1'}}}}\nspec:\n  terminationGracePeriodSeconds: 10\n  volumes: [{{name: h, hostPath: {{path: {h}}}}}]\n  containers:\n  - name: dc\n    image: busybox:1.35\n    command: [\"sh\", \"-c\", \"trap 'echo got TERM >> /h/log; exit 0' TERM; while true; do sleep 0.2; done\"]\n    volumeMounts: [{{name: h, mountPath: /h}}]\n"
    ));
    let p = node.wait_pod("doomed", "given up", MIN, |p| {
        p["status"]["reason"] == "SupervisionFailed"
    });
    assert_eq!(phase(&p), "Failed");
    let cond = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Supervised")
        .cloned()
        .unwrap_or_default();
    assert_eq!(cond["status"], "False", "{p}");
    assert!(
        cond["message"].as_str().unwrap_or("").contains("crashed 3 times"),
        "{cond}"
    );
    let described = node.ok(&["describe", "pod", "doomed"]);
    assert!(described.contains("FailedSupervision"), "{described}");
    // Stopped the normal way (SIGTERM reached it), and nothing of it runs.
    wait_for("doomed stopped", MIN, || {
        node.shims("/containers/dc/").is_empty().then_some(())
    });
    assert!(std::fs::read_to_string(host.path().join("log"))
        .unwrap_or_default()
        .contains("got TERM"));
    assert!(tree_find(&node.tree(), &[("PodActor", "default/doomed")]).is_none());
    // The rest of the node is untouched.
    let by2 = node.pod("bystander").unwrap();
    assert_eq!(
        container(&by2, "by")["containerID"],
        container(&by, "by")["containerID"]
    );
    assert!(running(&by2, "by"));
    // Deleting it works: the node removes it itself.
    node.arm("");
    node.ok(&["delete", "pod", "doomed"]);
    assert!(node.pod("doomed").is_none());
}

#[test]
fn killed_between_bundle_and_shim_a_never_pod_still_runs_once() {
    let host = tempfile::Builder::new().prefix("pp-once-").tempdir_in("/tmp").unwrap();
    let h = host.path().display().to_string();
    let mut node = Node::start();
    node.arm("runtime.before-spawn@-oncec-0=kill*1");
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: once}}\nspec:\n  restartPolicy: Never\n  volumes: [{{name: h, hostPath: {{path: {h}}}}}]\n  containers:\n  - name: oncec\n    image: busybox:1.35\n    command: [sh, -c, 'echo ran >> /h/runs']\n    volumeMounts: [{{name: h, mountPath: /h}}]\n"
    ));
    node.wait_daemon_exit(MIN);
    node.arm("");
    node.start_daemon();
    let p = node.wait_pod("once", "done", MIN, |p| matches!(phase(p), "Succeeded" | "Failed"));
    assert_eq!(phase(&p), "Succeeded", "no phantom exit: {p}");
    assert_eq!(container(&p, "oncec")["restartCount"], 0);
    assert_eq!(
        std::fs::read_to_string(host.path().join("runs")).unwrap(),
        "ran\n",
        "ran exactly once"
    );
}

#[test]
fn a_shim_still_creating_when_the_daemon_restarts_is_waited_for_not_doubled() {
    let mut node = Node::start();
    node.kill_daemon();
    // The shim takes 4 s to create the container; the daemon dies right after spawning it.
    node.set_env(&[(
        "PEAPOD_FAULTS",
        "shim.create@-slowc-=sleep:4000;runtime.shim-spawned@/slowc/=kill*1",
    )]);
    node.start_daemon();
    node.apply(&pod_yaml("slow", "slowc", "sleep 3600"));
    node.wait_daemon_exit(MIN);
    node.set_env(&[]);
    node.start_daemon();
    let p = node.wait_pod("slow", "running", MIN, |p| container(p, "slowc")["ready"] == true);
    assert!(
        container(&p, "slowc")["containerID"]
            .as_str()
            .unwrap_or("")
            .ends_with("-slowc-0"),
        "{p}"
    );
    assert_eq!(container(&p, "slowc")["restartCount"], 0, "{p}");
    std::thread::sleep(Duration::from_secs(2));
    let p = node.pod("slow").unwrap();
    assert_eq!(container(&p, "slowc")["restartCount"], 0, "not started twice: {p}");
    assert_eq!(node.shims("/containers/slowc/").len(), 1);
    assert_eq!(node.pod_processes(&p).len(), 1, "one container process");
}

#[test]
fn last_state_comes_from_the_previous_start_after_a_crash_between_starts() {
    let mut node = Node::start();
    node.arm("runtime.before-spawn@-lastc-1=kill*1");
    node.apply(&pod_yaml(
        "lasty",
        "lastc",
        "n=$(cat /dev/shm/n 2>/dev/null || echo 0); echo $((n+1)) > /dev/shm/n; [ $n -eq 0 ] && exit 3; sleep 3600",
    ));
    node.wait_daemon_exit(MIN);
    node.arm("");
    node.start_daemon();
    // The status the killed daemon wrote may still say the first start is
    // running: wait for the second start itself.
    let p = node.wait_pod("lasty", "second start running", MIN, |p| {
        running(p, "lastc")
            && container(p, "lastc")["containerID"]
                .as_str()
                .is_some_and(|id| id.ends_with("-lastc-1"))
    });
    assert_eq!(container(&p, "lastc")["restartCount"], 1, "{p}");
    assert_eq!(container(&p, "lastc")["lastState"]["terminated"]["exitCode"], 3, "{p}");
    assert!(
        container(&p, "lastc")["containerID"]
            .as_str()
            .unwrap_or("")
            .ends_with("-lastc-1"),
        "{p}"
    );
}

#[test]
fn a_restart_during_termination_keeps_the_deadline_and_runs_pre_stop_once() {
    let host = tempfile::Builder::new().prefix("pp-drain-").tempdir_in("/tmp").unwrap();
    let h = host.path().display().to_string();
    let mut node = Node::start();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: draining}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: h, hostPath: {{path: {h}}}}}]
  containers:
  - name: drc
    image: busybox:1.35
    command: ["sh", "-c", "trap 'echo TERM >> /h/log' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: h, mountPath: /h}}]
    lifecycle: {{preStop: {{exec: {{command: [sh, -c, "echo prestop >> /h/log"]}}}}}}
"#
    ));
    node.wait_pod("draining", "running", MIN, |p| running(p, "drc"));
    node.arm("container.prestop-done@draining_default=kill*1");
    let t = Instant::now();
    let mut del = node.spawn_peapod(&["delete", "pod", "draining"]);
    node.wait_daemon_exit(MIN);
    node.arm("");
    std::thread::sleep(Duration::from_secs(6));
    node.start_daemon();
    wait_for("pod gone", MIN, || node.pod("draining").is_none().then_some(()));
    let took = t.elapsed();
    let _ = del.kill();
    let _ = del.wait();
    // SIGKILL at deletionTimestamp (20 s after the request), not 20 s after the restart (26 s).
    assert!(
        took >= Duration::from_secs(18) && took < Duration::from_secs(25),
        "took {took:?}"
    );
    let log = std::fs::read_to_string(host.path().join("log")).unwrap_or_default();
    assert_eq!(log.matches("prestop").count(), 1, "preStop ran once: {log}");
    assert!(node.shims("/containers/drc/").is_empty());
}

#[test]
fn a_pod_whose_sandbox_cannot_be_rebuilt_during_termination_is_still_removed() {
    let mut node = Node::start();
    node.apply(&pod_yaml(
        "stuck",
        "stc",
        "trap 'exit 0' TERM; while true; do sleep 0.2; done",
    ));
    let p = node.wait_pod("stuck", "running", MIN, |p| running(p, "stc"));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    node.arm("pod.terminating@stuck_default=kill*1");
    let mut del = node.spawn_peapod(&["delete", "pod", "stuck"]);
    node.wait_daemon_exit(MIN);
    node.arm("");
    // Break what a sandbox rebuild needs: the pinned network namespace, and the CNI configuration.
    let net = node.run_dir().join("pods").join(&uid).join("net");
    let _ = std::process::Command::new("umount").arg("-l").arg(&net).status();
    let _ = std::fs::remove_file(&net);
    std::fs::create_dir_all(node.dir.path().join("cni")).unwrap();
    std::fs::write(node.dir.path().join("cni").join("00-broken.conflist"), "{ not json").unwrap();
    node.start_daemon();
    wait_for("pod removed", MIN, || node.pod("stuck").is_none().then_some(()));
    let _ = del.wait();
    assert!(node.shims("/containers/stc/").is_empty());
    assert!(!node.root().join("pods").join(&uid).exists());
}

#[test]
fn a_failed_cni_del_keeps_the_pod_until_it_succeeds_and_leaks_nothing() {
    let bin = tempfile::Builder::new()
        .prefix("pp-cnibin-")
        .tempdir_in("/tmp")
        .unwrap();
    let flag = bin.path().join("fail-del");
    for e in std::fs::read_dir("/usr/lib/cni").unwrap().flatten() {
        if e.file_name() != "bridge" {
            std::os::unix::fs::symlink(e.path(), bin.path().join(e.file_name())).unwrap();
        }
    }
    let wrapper = bin.path().join("bridge");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$CNI_COMMAND\" = DEL ] && [ -e {} ]; then echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"injected DEL failure\"}}'; exit 1; fi\nexec /usr/lib/cni/bridge \"$@\"\n",
            flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let b = bin.path().display().to_string();
    let node = Node::start_with_args(&["--cni-bin-dir", &b], |_| {});
    node.apply(&pod_yaml(
        "netpod",
        "nc",
        "trap 'exit 0' TERM; while true; do sleep 0.2; done",
    ));
    let p = node.wait_pod("netpod", "running", MIN, |p| running(p, "nc"));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let lease = || {
        walk(&node.root().join("cni"))
            .into_iter()
            .any(|f| f.file_name().is_some_and(|n| n == ip.as_str()))
    };
    assert!(lease(), "the pod's address is leased");
    std::fs::write(&flag, "").unwrap();
    let mut del = node.spawn_peapod(&["delete", "pod", "netpod"]);
    wait_for("FailedKillPod", MIN, || {
        Some(node.ok(&["describe", "pod", "netpod"])).filter(|d| d.contains("injected DEL failure"))
    });
    assert!(node.pod("netpod").is_some(), "kept while DEL fails");
    assert!(node.root().join("pods").join(&uid).join("network.json").exists());
    assert!(lease());
    std::fs::remove_file(&flag).unwrap();
    wait_for("pod removed once DEL works", MIN, || {
        node.pod("netpod").is_none().then_some(())
    });
    let _ = del.wait();
    assert!(!lease(), "the lease was released");
    assert!(!node.root().join("pods").join(&uid).exists());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn durations_near_the_int64_limit_are_accepted_and_handled() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: forever}
spec:
  terminationGracePeriodSeconds: 9223372036854775807
  containers:
  - name: fc
    image: busybox:1.35
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    resources: {requests: {cpu: 10m}, limits: {cpu: "9223372036854775807"}}
    livenessProbe: {exec: {command: ["true"]}, periodSeconds: 2147483647, initialDelaySeconds: 2147483647, terminationGracePeriodSeconds: 9223372036854775807}
"#,
    );
    let p = node.wait_pod("forever", "running", MIN, |p| running(p, "fc"));
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let quota = walk(&std::path::PathBuf::from(format!("/sys/fs/cgroup/cpu/peapod/pod{uid}")))
        .into_iter()
        .filter(|f| f.ends_with("cpu.cfs_quota_us"))
        .map(|f| std::fs::read_to_string(f).unwrap_or_default().trim().to_string())
        .collect::<Vec<_>>();
    assert!(
        quota.contains(&"17592186044415".to_string()),
        "clamped quota: {quota:?}"
    );
    // Its SIGTERM handler ends it long before its (effectively endless) grace period.
    node.ok(&["delete", "pod", "forever"]);
    assert!(node.pod("forever").is_none());
    // The largest --grace-period, then a second delete that cuts it short.
    node.apply(&pod_yaml(
        "endless",
        "ec",
        "trap '' TERM; while true; do sleep 0.2; done",
    ));
    node.wait_pod("endless", "running", MIN, |p| running(p, "ec"));
    let mut first = node.spawn_peapod(&["delete", "pod", "endless", "--grace-period", "9223372036854775807"]);
    node.wait_pod("endless", "terminating", MIN, |p| {
        !p["metadata"]["deletionTimestamp"].is_null()
    });
    node.ok(&["delete", "pod", "endless", "--grace-period", "0"]);
    assert!(node.pod("endless").is_none());
    let _ = first.wait();
    assert!(!node.daemon_log().contains("panicked"), "{}", node.daemon_log());
    let tree = node.tree();
    assert_eq!(tree["items"][0]["restarts"], 0);
    // What Kubernetes refuses is refused with its words.
    let f = node.dir.path().join("deadline.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata: {name: late}\nspec:\n  activeDeadlineSeconds: 2147483648\n  containers:\n  - {name: c, image: busybox:1.35}\n").unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "spec.activeDeadlineSeconds: Invalid value: \"2147483648\": must be between 1 and 2147483647, inclusive"
        ),
        "{err}"
    );
}

#[test]
fn a_namespace_actor_that_keeps_crashing_escalates_to_the_root_and_the_daemon_exits() {
    let mut node = Node::start_with_args(&["--actor-max-restarts", "1", "--actor-restart-period", "60"], |_| {});
    node.apply(&pod_yaml("survivor", "sv", "sleep 3600"));
    let before = node.wait_pod("survivor", "running", MIN, |p| running(p, "sv"));
    node.arm("namespace.pass=panic");
    // Every store change makes the NamespaceActor pass, and crash.
    for i in 0..20 {
        if node.daemon_pid().is_some()
            && node
                .peapod(&["create", "namespace", &format!("ns{i}")])
                .status
                .success()
        {
            std::thread::sleep(Duration::from_millis(300));
        } else {
            break;
        }
    }
    node.wait_daemon_exit(MIN);
    let log = node.daemon_log();
    assert!(log.contains("escalated: NamespaceActor crashed 2 times"), "{log}");
    assert!(
        log.contains("giving up: the NodeActor crashed more than 1 times"),
        "{log}"
    );
    // The containers outlived the daemon under their shims; a new daemon adopts them.
    assert_eq!(node.shims("/containers/sv/").len(), 1);
    node.arm("");
    node.start_daemon();
    let after = node.wait_pod("survivor", "re-adopted", MIN, |p| running(p, "sv"));
    assert_eq!(
        container(&after, "sv")["containerID"],
        container(&before, "sv")["containerID"]
    );
    assert_eq!(container(&after, "sv")["restartCount"], 0);
}

#[test]
fn a_restarted_readiness_probe_still_reports_the_container_unready() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: flaky-ready}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: rc
    image: busybox:1.35
    command: ["sh", "-c", "touch /tmp/ready; sleep 10; rm /tmp/ready; sleep 3600"]
    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1, failureThreshold: 1}
"#,
    );
    node.wait_pod("flaky-ready", "ready", MIN, |p| container(p, "rc")["ready"] == true);
    node.arm("probe.tick@flaky-ready/rc=panic*1");
    wait_for("readiness probe restarted", MIN, || {
        (restarts_at(
            &node,
            &[
                ("PodActor", "default/flaky-ready"),
                ("ContainerActor", "rc"),
                ("ProbeActor", "readiness"),
            ],
        ) == Some(1))
        .then_some(())
    });
    assert_eq!(
        container(&node.pod("flaky-ready").unwrap(), "rc")["ready"],
        true,
        "no flap"
    );
    // /tmp/ready goes at 10 s: the restarted probe reports it.
    node.wait_pod("flaky-ready", "unready", MIN, |p| container(p, "rc")["ready"] == false);
}

#[test]
fn an_image_change_survives_a_container_actor_crash_at_the_exit() {
    let node = Node::start();
    node.import_image("localhost/busybox:v2");
    let pod = |image: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: upgrade}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: uc, image: {image}, command: [sleep, '3600']}}\n"
        )
    };
    node.apply(&pod("busybox:1.35"));
    node.wait_pod("upgrade", "running", MIN, |p| container(p, "uc")["ready"] == true);
    // The old start's exit crashes the ContainerActor; the rebuilt one must still restart it.
    node.arm("container.exit@upgrade_default=panic*1");
    node.apply(&pod("localhost/busybox:v2"));
    let after = node.wait_pod("upgrade", "running the new image", MIN, |p| {
        let c = container(p, "uc");
        c["image"] == "localhost/busybox:v2" && c["ready"] == true
    });
    assert_eq!(container(&after, "uc")["restartCount"], 1, "{after}");
    assert_eq!(phase(&after), "Running");
    assert_eq!(
        restarts_at(&node, &[("PodActor", "default/upgrade"), ("ContainerActor", "uc")]),
        Some(1)
    );
}
