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
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wrap}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [id]\n    securityContext: {runAsUser: 4294967296}\n",
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
    image: busybox
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
    image: busybox
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
        .arg(peapod_tests::binary())
        .args(["get", "pods"])
        .env("PEAPOD_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a host user listed pods");
    node.ok(&["delete", "pod", "victim"]);
}
