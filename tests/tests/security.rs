//! Attacks on the node by a container, an image or a local user, each of
//! which must fail (issue: a hostile container or image cannot escape, snoop
//! on or exhaust the node).

use peapod_tests::{container, wait_for, Node};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs `args` as the host user nobody; returns (success, stdout+stderr).
/// Through a shell: setpriv itself keeps its capabilities until its own
/// exec, so a path it execs directly is looked up with them.
fn as_nobody(args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
            "\"$0\" \"$@\"",
        ])
        .args(args)
        .output()
        .expect("run setpriv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn ids_beyond_int32_are_refused_and_valid_ones_apply() {
    let node = Node::start();
    let f = node.dir.path().join("root-by-wraparound.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wrap}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [id]\n    securityContext: {runAsUser: 4294967296}\n",
    )
    .unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a uid of 2^32 was accepted");
    assert!(
        err.contains("spec.containers[0].securityContext.runAsUser")
            && err.contains("must be between 0 and 2147483647, inclusive"),
        "{err}"
    );
    assert!(node.pod("wrap").is_none());

    // A non-root container with the pod's groups still reaches everything the
    // node sets up for it, though the daemon itself creates files 0600.
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: ids}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "id; ls / >/dev/null && echo root-ok; grep -q localhost /etc/hosts && echo hosts-ok; touch /deep/er/scratch/f && echo emptydir-ok; mkdir /tmp/x && echo tmp-ok; echo bye > /dev/termination-log; umask"]
    volumeMounts: [{name: scratch, mountPath: /deep/er/scratch}]
"#,
    );
    let p = node.wait_pod("ids", "finished", MIN, |p| {
        container(p, "c")["state"]["terminated"].is_object()
    });
    let logs = node.logs("ids", "c");
    assert!(logs.contains("uid=1000 gid=3000"), "{logs}");
    assert!(
        logs.contains("2000") && logs.contains("4000"),
        "supplementary groups missing: {logs}"
    );
    for ok in ["root-ok", "hosts-ok", "emptydir-ok", "tmp-ok"] {
        assert!(logs.contains(ok), "{ok} missing: {logs}");
    }
    assert!(logs.trim_end().ends_with("0022"), "container umask: {logs}");
    assert_eq!(container(&p, "c")["state"]["terminated"]["message"], "bye");
    assert_eq!(container(&p, "c")["state"]["terminated"]["exitCode"], 0);
}

#[test]
fn host_users_cannot_read_or_run_what_the_node_keeps() {
    let node = Node::start();
    // The test's own directory is private; open it up as /var/lib is, so
    // only the daemon's modes stand between a host user and its state.
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: victim}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox:1.35
    env: [{name: API_TOKEN, value: s3cret-token}]
    command: ["sh", "-c", "cp /bin/busybox /sb && chmod 4755 /sb && echo planted && exec sleep 3600"]
"#,
    );
    let p = node.wait_pod("victim", "running", MIN, |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    wait_for("setuid binary planted", MIN, || {
        Some(node.logs("victim", "c")).filter(|l| l.contains("planted"))
    });
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let root = node.root();
    let attempt = root.join(format!("pods/{uid}/containers/c/0"));
    let planted = attempt.join("upper/sb");
    assert_eq!(mode(&planted) & 0o4000, 0o4000, "the container planted a setuid binary");
    let config = attempt.join("config.json");
    assert!(std::fs::read_to_string(&config).unwrap().contains("s3cret-token"));

    assert_eq!(mode(&root), 0o711);
    for d in ["images", "pods", "logs"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d}");
    }
    assert_eq!(mode(&root.join("store.db")), 0o600);
    assert_eq!(mode(&config), 0o600);
    let sock = node.run_dir().join("peapod.sock");
    assert_eq!(mode(&sock), 0o600);

    let s = |p: &std::path::Path| p.display().to_string();
    for (what, args) in [
        ("run the planted setuid binary", vec![s(&planted), "id".into()]),
        ("read the store", vec!["cat".into(), s(&root.join("store.db"))]),
        ("read a bundle's env", vec!["cat".into(), s(&config)]),
        ("list the pods", vec!["ls".into(), s(&root.join("pods"))]),
        ("list the image layers", vec!["ls".into(), s(&root.join("images"))]),
        ("read the logs", vec!["ls".into(), s(&root.join("logs"))]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = as_nobody(&args);
        assert!(!ok, "a host user could {what}: {out}");
        assert!(out.contains("Permission denied"), "{what}: {out}");
    }
    // Nor talk to the daemon.
    let env_sock = format!("PEAPOD_SOCKET={}", sock.display());
    let binary = s(&peapod_tests::binary());
    let (ok, out) = as_nobody(&["env", &env_sock, &binary, "get", "pods"]);
    assert!(!ok, "a host user listed pods: {out}");
    node.ok(&["delete", "pod", "victim"]);
}

/// Bytes the process has read through read(2) and friends (`rchar`).
fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: ").and_then(|v| v.trim().parse().ok()))
        .unwrap()
}

#[test]
fn container_controlled_output_is_read_in_bounded_amounts() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  terminationGracePeriodSeconds: 0
  restartPolicy: Never
  containers:
  - name: big-log
    image: busybox:1.35
    command: ["sh", "-c", "head -c 50000000 /dev/zero | tr '\\0' a; echo; echo last-line; exec sleep 3600"]
  - name: big-message
    image: busybox:1.35
    command: ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' m > /dev/termination-log; echo the-end >> /dev/termination-log"]
  - name: loud-probe
    image: busybox:1.35
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {command: ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' p; exit 1"]}
      periodSeconds: 1
"#,
    );
    // A 1 MB termination message: its last 4 KiB, published with the end.
    let p = node.wait_pod("chatty", "big-message ended", MIN, |p| {
        container(p, "big-message")["state"]["terminated"].is_object()
    });
    let message = container(&p, "big-message")["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.ends_with("mmmthe-end"),
        "{}",
        &message[message.len().saturating_sub(40)..]
    );
    assert_eq!(message.len(), 4095, "4 KiB less the trailing newline");
    // An exec probe's output: at most kubelet's 10 KiB reach the event.
    let event = wait_for("an Unhealthy event", MIN, || {
        let v: serde_json::Value = serde_json::from_str(&node.ok(&["get", "events", "-o", "json"])).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "Unhealthy")
            .cloned()
    });
    let text = event["message"].as_str().unwrap();
    assert!(text.contains("ppp"), "{}", &text[..text.len().min(200)]);
    assert!(text.len() <= 10 * 1024 + 200, "a {}-byte probe event", text.len());

    // `logs --tail` reads from the end of a 50 MB log, not all of it.
    let last = wait_for("the big log written", MIN, || {
        Some(node.ok(&["logs", "chatty", "-c", "big-log", "--tail", "1"])).filter(|l| l.contains("last-line"))
    });
    assert_eq!(last, "last-line\n");
    let pid = node.daemon_pid().unwrap();
    let before = bytes_read(pid);
    let out = node.ok(&["logs", "chatty", "-c", "big-log", "--tail", "2"]);
    // Two lines that are the whole 50 MB: found from the end, then streamed a chunk at a time.
    assert!(bytes_read(pid) > before);
    assert!(
        out.ends_with("\nlast-line\n") && out.len() == 50_000_011,
        "{} bytes",
        out.len()
    );
    let before = bytes_read(pid);
    node.ok(&["logs", "chatty", "-c", "big-log", "--tail", "1"]);
    let read = bytes_read(pid) - before;
    assert!(
        read < 4 << 20,
        "the daemon read {read} bytes of a 50 MB log for --tail 1"
    );
    node.ok(&["delete", "pod", "chatty"]);
}

fn oom_score_adj(pid: u32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn the_oom_killer_picks_best_effort_first_and_pods_together_are_capped() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: best-effort}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox:1.35, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: burstable}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox:1.35, command: [sleep, "3600"], resources: {requests: {memory: 1Gi}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox:1.35, command: [sleep, "3600"], resources: {limits: {cpu: 100m, memory: 64Mi}}}]
"#,
    );
    let daemon = node.daemon_pid().unwrap();
    // Lowering a score needs CAP_SYS_RESOURCE; this machine's root lacks it.
    let can_lower = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|b| b & (1 << 24) != 0);
    let daemon_score = oom_score_adj(daemon);
    if can_lower {
        assert_eq!(daemon_score, -999);
    }
    let expect_burstable = (1000 - (1000 * (1i64 << 30)) / mem_total()).clamp(3, 999) as i32;
    let floor = if can_lower { -1000 } else { daemon_score };
    for (name, want) in [
        ("best-effort", 1000),
        ("burstable", expect_burstable.max(floor)),
        ("guaranteed", (-997).max(floor)),
    ] {
        let p = node.wait_pod(name, "running", MIN, |p| {
            container(p, "c")["state"]["running"].is_object()
        });
        let pids = node.pod_processes(&p);
        assert!(!pids.is_empty(), "{name} has no processes");
        for pid in pids {
            assert_eq!(oom_score_adj(pid), want, "{name}, pid {pid}");
        }
    }
    // All pods together: no more than the node's allocatable memory (here
    // all of it, nothing reserved), rounded down to a page by the kernel.
    let limit: i64 = std::fs::read_to_string("/sys/fs/cgroup/memory/peapod/memory.limit_in_bytes")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        limit <= mem_total() && limit > mem_total() - 4096,
        "{limit} vs {}",
        mem_total()
    );
    node.ok(&["delete", "pod", "best-effort", "burstable", "guaranteed"]);
}

#[test]
fn an_image_whose_blob_never_ends_is_refused_by_import() {
    let node = Node::start();
    // A copy of the test image with its largest blob (the layer) replaced by
    // a symlink to /dev/zero: read before its size was checked, it was copied forever.
    let layout = node.dir.path().join("endless");
    assert!(Command::new("cp")
        .args(["-a", peapod_tests::TEST_IMAGE])
        .arg(&layout)
        .status()
        .unwrap()
        .success());
    let blobs = layout.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    std::fs::remove_file(&layer).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &layer).unwrap();
    // A store that does not hold the layer yet (a node's already does).
    let root = node.dir.path().join("fresh-root");
    let out = Command::new(peapod_tests::binary())
        .args(["image", "import", "--root-dir"])
        .arg(&root)
        .arg(&layout)
        .args(["--tag", "endless"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "imported an endless blob");
    assert!(
        err.contains("is not a regular file") && err.contains(&layer.display().to_string()),
        "{err}"
    );
    // Nothing was stored.
    let images = Command::new(peapod_tests::binary())
        .args(["image", "ls", "--root-dir"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&images.stdout).contains("endless"));
}

/// `Seccomp:` of the container's shell (0 unconfined, 2 filtered) and what
/// `unshare -Ur` (a user namespace with every capability in it) said.
const SECCOMP_PROBE: &str = "grep ^Seccomp: /proc/self/status; unshare -Ur id && echo unshared || echo unshare-refused";

#[test]
fn seccomp_runtime_default_is_the_default_and_stops_user_namespaces() {
    let node = Node::start();
    let profiles = node.root().join("seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let pod = |name: &str, sc: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, '{SECCOMP_PROBE}; mkdir /made && echo mkdir-ok']\n    securityContext: {sc}\n"
        )
    };
    node.apply(
        &[
            pod("said-nothing", "{}"),
            pod("runtime-default", "{seccompProfile: {type: RuntimeDefault}}"),
            pod("unconfined", "{seccompProfile: {type: Unconfined}}"),
            pod(
                "privileged",
                "{privileged: true, seccompProfile: {type: RuntimeDefault}}",
            ),
            pod(
                "localhost",
                "{seccompProfile: {type: Localhost, localhostProfile: profiles/no-mkdir.json}}",
            ),
        ]
        .join("---\n"),
    );
    let done = |name: &str| {
        node.wait_pod(name, "finished", MIN, |p| {
            container(p, "c")["state"]["terminated"].is_object()
        });
        node.logs(name, "c")
    };
    for name in ["said-nothing", "runtime-default"] {
        let out = done(name);
        assert!(out.contains("Seccomp:\t2"), "{name}: {out}");
        assert!(
            out.contains("unshare-refused") && !out.contains("unshared"),
            "{name}: {out}"
        );
        assert!(out.contains("mkdir-ok"), "{name}: {out}");
    }
    // Without a filter the same container gets its user namespace: the attack
    // the default profile stops.
    for name in ["unconfined", "privileged"] {
        let out = done(name);
        assert!(out.contains("Seccomp:\t0"), "{name}: {out}");
        assert!(out.contains("uid=0(root)") && out.contains("unshared"), "{name}: {out}");
    }
    let out = done("localhost");
    assert!(out.contains("Seccomp:\t2") && out.contains("unshared"), "{out}");
    assert!(
        out.contains("Operation not permitted") && !out.contains("mkdir-ok"),
        "{out}"
    );
}

#[test]
fn a_seccomp_profile_that_cannot_be_applied_fails_the_container_and_says_why() {
    let node = Node::start_with_args(&["--seccomp-default=false"], |_| {});
    // kubelet's default, restored by the flag: no profile, no filter.
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox:1.35, command: [grep, '^Seccomp:', /proc/self/status]}\n",
    );
    node.wait_pod("plain", "finished", MIN, |p| {
        container(p, "c")["state"]["terminated"].is_object()
    });
    assert!(node.logs("plain", "c").contains("Seccomp:\t0"));

    // Refused at the API, with the field.
    let f = node.dir.path().join("escape.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: escape}\nspec:\n  securityContext: {seccompProfile: {type: Localhost, localhostProfile: ../../etc/x.json}}\n  containers: [{name: c, image: busybox:1.35}]\n",
    )
    .unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.securityContext.seccompProfile.localhostProfile") && err.contains("must not contain '..'"),
        "{err}"
    );

    // A profile that is missing, then broken, then present: the container
    // waits with the reason, and starts once the profile can be applied.
    let profile = node.root().join("seccomp/later.json");
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: waits}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'grep ^Seccomp: /proc/self/status; exec sleep 3600']\n    securityContext: {seccompProfile: {type: Localhost, localhostProfile: later.json}}\n",
    );
    let waiting = |what: &'static str| {
        let p = node.wait_pod("waits", what, MIN, |p| {
            container(p, "c")["state"]["waiting"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(what))
        });
        let w = container(&p, "c")["state"]["waiting"].clone();
        assert_eq!(w["reason"], "CreateContainerError", "{w}");
        w["message"].as_str().unwrap().to_string()
    };
    let m = waiting("No such file");
    assert!(
        m.contains(&format!("cannot load seccomp profile \"{}\"", profile.display())),
        "{m}"
    );
    std::fs::write(&profile, "{\n  \"defaultAction\": \"SCMP_ACT_ALLOW\",\n  \"syscalls\": [{\"names\": [\"mkdir\"], \"action\": \"SCMP_ACT_DENY\"}]\n}\n").unwrap();
    let m = waiting("unknown variant");
    assert!(m.contains("SCMP_ACT_DENY") && m.contains("line 3"), "{m}");
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_LOG"}"#).unwrap();
    node.wait_pod("waits", "running", MIN, |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    wait_for("the filter in place", MIN, || {
        Some(node.logs("waits", "c")).filter(|l| l.contains("Seccomp:\t2"))
    });
    assert!(node.daemon_pid().is_some(), "the daemon is still up");

    // A profile libseccomp takes but that leaves the container unable to
    // run: the start fails with what the kernel said.
    std::fs::write(
        node.root().join("seccomp/nothing.json"),
        r#"{"defaultAction": "SCMP_ACT_ERRNO"}"#,
    )
    .unwrap();
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: starved}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [\"true\"]\n    securityContext: {seccompProfile: {type: Localhost, localhostProfile: nothing.json}}\n",
    );
    let p = node.wait_pod("starved", "failed", MIN, |p| {
        let s = &container(p, "c")["state"];
        s["terminated"].is_object()
            || s["waiting"]["reason"]
                .as_str()
                .is_some_and(|r| r != "ContainerCreating")
    });
    let state = &container(&p, "c")["state"];
    let said = format!("{}", state);
    assert!(
        said.contains("after loading seccomp profile Localhost") && said.contains("nothing.json"),
        "{said}"
    );
    node.ok(&["delete", "pod", "waits", "plain", "starved"]);
}

#[test]
fn device_nodes_a_container_makes_open_nothing() {
    let node = Node::start();
    // c 1 3 is /dev/null: a device the device cgroup allows, so only nodev
    // stands between the container and what it makes. b 8 0 (a host disk)
    // may be made (runc's rules allow mknod of anything) but not opened.
    let script = "for d in /dev /made /scratch; do mkdir -p $d; mknod $d/twin c 1 3 && (echo x > $d/twin && echo $d-opened || echo $d-refused); done; \
                  mknod /disk b 8 0; head -c 1 /disk && echo disk-read || echo disk-unreadable; \
                  echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c && echo devices-work; \
                  grep -E ' / | /dev ' /proc/self/mountinfo";
    let pod = |name: &str, privileged: bool| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  volumes: [{{name: scratch, emptyDir: {{}}}}]\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, {}]\n    securityContext: {{privileged: {privileged}}}\n    volumeMounts: [{{name: scratch, mountPath: /scratch}}]\n",
            serde_json::to_string(script).unwrap()
        )
    };
    node.apply(&[pod("plain", false), pod("privileged", true)].join("---\n"));
    let out = |name: &str| {
        node.wait_pod(name, "finished", MIN, |p| {
            container(p, "c")["state"]["terminated"].is_object()
        });
        node.logs(name, "c")
    };
    let plain = out("plain");
    for d in ["/dev", "/made", "/scratch"] {
        assert!(plain.contains(&format!("{d}-refused")), "{d}: {plain}");
    }
    assert!(plain.contains("disk-unreadable"), "{plain}");
    assert!(
        plain.contains("devices-work"),
        "the runtime's own devices broke: {plain}"
    );
    // A privileged container may use what it makes.
    let privileged = out("privileged");
    for d in ["/dev", "/made", "/scratch"] {
        assert!(privileged.contains(&format!("{d}-opened")), "{d}: {privileged}");
    }
}

#[test]
fn a_volume_path_swapped_for_a_link_is_never_mounted() {
    let node = Node::start();
    let outer = node.dir.path().join("shared");
    std::fs::create_dir_all(outer.join("inner")).unwrap();
    // `inner` is a hostPath of its own and also a directory of `outer`, which
    // the container may write: it swaps `inner` and `outer/sub` (a subPath)
    // for links to the host's `/`, then exits to be started again.
    let script = "if [ -e /inner/etc/os-release ] || [ -e /sub/etc/os-release ]; then echo ESCAPED; sleep 3600; fi; \
                  if [ -e /outer/swapped ]; then echo second-start; sleep 3600; fi; \
                  touch /outer/swapped; rm -rf /outer/inner /outer/sub; ln -s / /outer/inner; ln -s / /outer/sub; exit 1";
    // Applies the pod (with or without the `inner` hostPath) and returns the
    // message of its refused second start.
    let refused = |name: &str, with_inner: bool| {
        let (volume, mount) = if with_inner {
            (
                format!(
                    "  - {{name: inner, hostPath: {{path: {}/inner, type: Directory}}}}\n",
                    outer.display()
                ),
                "    - {name: inner, mountPath: /inner}\n",
            )
        } else {
            (String::new(), "")
        };
        node.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  volumes:\n  - {{name: outer, hostPath: {{path: {o}}}}}\n{volume}  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, {s}]\n    volumeMounts:\n    - {{name: outer, mountPath: /outer}}\n{mount}    - {{name: outer, mountPath: /sub, subPath: sub}}\n",
            o = outer.display(),
            s = serde_json::to_string(script).unwrap()
        ));
        let p = node.wait_pod(name, "refused at its second start", MIN, |p| {
            container(p, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        });
        let logs = node.logs(name, "c");
        assert!(!logs.contains("ESCAPED"), "{logs}");
        // The refused start staged `outer` before it refused the rest; the
        // staging point is gone with the attempt.
        let staged = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&*node.root().to_string_lossy()) && l.contains("/mounts/"))
            .map(str::to_string)
            .collect::<Vec<_>>();
        assert!(staged.is_empty(), "{staged:?}");
        node.ok(&["delete", "pod", name]);
        wait_for("the pod gone", MIN, || node.pod(name).is_none().then_some(()));
        for f in ["swapped", "inner", "sub"] {
            let _ = std::fs::remove_file(outer.join(f));
        }
        container(&p, "c")["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let message = refused("swapper", true);
    assert!(
        message.contains(&format!("hostPath {}/inner now resolves to /", outer.display())),
        "{message}"
    );
    // Without the `inner` hostPath, the subPath is what is refused.
    let message = refused("sub-swapper", false);
    assert!(
        message.contains("subPath \"sub\" resolves outside the volume"),
        "{message}"
    );
}

/// Bytes in the files directly in `dir`, and their names.
fn dir_usage(dir: &std::path::Path) -> (u64, Vec<String>) {
    let mut names = Vec::new();
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        // A file rotated away between the listing and the stat is simply gone.
        if let Ok(m) = e.metadata() {
            total += m.len();
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    (total, names)
}

#[test]
fn a_container_that_writes_without_end_cannot_fill_the_disk_with_logs() {
    const MAX: u64 = 256 * 1024;
    let node = Node::start_with_args(
        &["--container-log-max-size=256Ki", "--container-log-max-files=3"],
        |_| {},
    );
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: flood}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: "yes"
    image: busybox:1.35
    command: ["/bin/yes"]
"#,
    );
    let p = node.wait_pod("flood", "running", MIN, |p| {
        container(p, "yes")["state"]["running"].is_object()
    });
    let dir = node.root().join(format!(
        "logs/default_flood_{}/yes",
        p["metadata"]["uid"].as_str().unwrap()
    ));
    // The bound is the live file and two rotated ones, each at most the
    // size (plus one record of at most 16 KiB and its header).
    let bound = 3 * MAX + 16 * 1024 + 64;
    let (mut most, mut rotations_seen) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut last_oldest = None;
    while std::time::Instant::now() < deadline {
        let (used, names) = dir_usage(&dir);
        most = most.max(used);
        assert!(used <= bound, "{used} bytes of logs in {names:?}, more than {bound}");
        assert!(names.len() <= 3, "{names:?}");
        // The oldest file changing is the flood being rotated away.
        let oldest = std::fs::metadata(dir.join("0.log.2")).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        if oldest.is_some() && oldest != last_oldest {
            rotations_seen += 1;
            last_oldest = oldest;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        rotations_seen >= 3,
        "the flood was rotated only {rotations_seen} times in 8 s"
    );
    assert!(most > 2 * MAX, "the log never reached two files: {most} bytes");
    // The container runs on, its latest output readable as ever.
    let p = node.pod("flood").unwrap();
    assert!(container(&p, "yes")["state"]["running"].is_object(), "{p}");
    assert_eq!(container(&p, "yes")["restartCount"], 0);
    assert_eq!(node.ok(&["logs", "flood", "--tail", "3"]), "y\ny\ny\n");
    let stamped = node.ok(&["logs", "flood", "--tail", "1", "--timestamps"]);
    let (time, line) = stamped.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{stamped}");
    assert_eq!(line, "y\n");
    node.ok(&["delete", "pod", "flood"]);
}

/// `Seccomp:` and `NoNewPrivs:` of /proc/self/status, from a command's output.
fn seccomp_status(text: &str) -> (String, String) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("Seccomp:"), field("NoNewPrivs:"))
}

#[test]
fn commands_run_in_a_container_keep_its_seccomp_filter() {
    let node = Node::start();
    // The probe passes only for a filtered process: a probe command from the
    // image must not run outside the profile its container runs under.
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: confined}\nspec:\n  securityContext: {seccompProfile: {type: RuntimeDefault}}\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'grep -E \"^(Seccomp|NoNewPrivs):\" /proc/self/status; sleep 3600']\n    readinessProbe:\n      exec: {command: [sh, -c, 'grep -q \"^Seccomp:.*2\" /proc/self/status']}\n      periodSeconds: 1\n",
    );
    node.wait_pod("confined", "ready", Duration::from_secs(60), |p| {
        container(p, "c")["ready"] == true
    });
    let (init, _) = seccomp_status(&node.logs("confined", "c"));
    assert_eq!(init, "2", "the container itself is filtered");
    let out = node.ok(&[
        "exec",
        "confined",
        "--",
        "grep",
        "-E",
        "^(Seccomp|NoNewPrivs):",
        "/proc/self/status",
    ]);
    assert_eq!(seccomp_status(&out), ("2".to_string(), "1".to_string()), "{out}");
    // What the filter forbids stays forbidden in an exec: a user namespace
    // (RuntimeDefault allows unshare only with CAP_SYS_ADMIN).
    let userns = |pod: &str| {
        let out = node.peapod(&["exec", pod, "--", "sh", "-c", "unshare -U true; echo rc=$?"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_ne!(userns("confined"), "rc=0");
    // An unconfined container's execs stay unconfined, and keep no_new_privs off.
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: free}\nspec:\n  securityContext: {seccompProfile: {type: Unconfined}}\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n",
    );
    node.wait_pod("free", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    let out = node.ok(&[
        "exec",
        "free",
        "--",
        "grep",
        "-E",
        "^(Seccomp|NoNewPrivs):",
        "/proc/self/status",
    ]);
    assert_eq!(seccomp_status(&out), ("0".to_string(), "0".to_string()), "{out}");
    assert_eq!(userns("free"), "rc=0", "the same unshare outside a filter");
}
