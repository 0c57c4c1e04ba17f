//! End-to-end volumes through the built-in plugins (loaded from the node's
//! plugin directory like any other): emptyDir on disk and in memory,
//! hostPath with every type, volumeMounts options.

use peapod_tests::{container, wait_for, Node};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(str::to_string)
        .collect()
}

#[test]
fn empty_dir_is_shared_survives_restarts_and_goes_with_the_pod() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: writer
    image: busybox:1.35
    # Counts its starts in the volume; the first start fails, the second stays.
    command: ["sh", "-c", "echo run >> /data/runs; mkdir -p /data/sub; echo hello-through-emptydir > /data/sub/msg; [ $(wc -l < /data/runs) -ge 2 ] || exit 1; exec sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  - name: reader
    image: busybox:1.35
    command: ["sh", "-c", "until [ -f /in/msg ]; do sleep 0.2; done; cat /in/msg; exec sleep 3600"]
    volumeMounts: [{name: data, mountPath: /in, subPath: sub}]
"#,
    );
    let p = node.wait_pod("shared", "writer restarted once and running", MIN, |p| {
        container(p, "writer")["restartCount"] == 1 && container(p, "writer")["ready"] == true
    });
    let logs = wait_for("reader saw the message", MIN, || {
        Some(node.logs("shared", "reader")).filter(|l| l.contains("hello-through-emptydir"))
    });
    assert!(logs.contains("hello-through-emptydir"));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let vol = node.root().join(format!("pods/{uid}/volumes/emptydir/data"));
    assert_eq!(std::fs::read_to_string(vol.join("runs")).unwrap(), "run\nrun\n");
    node.ok(&["delete", "pod", "shared"]);
    assert!(!vol.exists(), "emptyDir data left behind");
    assert!(!node.root().join(format!("pods/{uid}")).exists());
}

#[test]
fn memory_empty_dir_is_a_sized_tmpfs() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: mem}
spec:
  restartPolicy: Never
  volumes:
  - name: cache
    emptyDir: {medium: Memory, sizeLimit: 1Mi}
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "grep ' /cache ' /proc/mounts; dd if=/dev/zero of=/cache/big bs=1024 count=2048 2>&1; ls -l /cache/big"]
    volumeMounts: [{name: cache, mountPath: /cache}]
"#,
    );
    node.wait_pod("mem", "done", MIN, |p| p["status"]["phase"] == "Succeeded");
    let logs = node.logs("mem", "c");
    assert!(
        logs.contains("tmpfs /cache tmpfs") && logs.contains("size=1024k"),
        "{logs}"
    );
    assert!(logs.contains("No space left on device"), "{logs}");
    assert!(logs.contains(" 1048576 "), "only the limit was written: {logs}");
    let uid = node.pod("mem").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    node.ok(&["delete", "pod", "mem"]);
    assert!(mounts_under(&node.root().join(format!("pods/{uid}"))).is_empty());
}

#[test]
fn disk_empty_dir_over_its_size_limit_evicts_the_pod() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  volumes:
  - name: scratch
    emptyDir: {sizeLimit: 1Mi}
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "dd if=/dev/urandom of=/scratch/big bs=1024 count=3072; exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
"#,
    );
    let p = node.wait_pod("hog", "evicted", MIN, |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(
        p["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    assert!(container(&p, "c")["state"]["terminated"].is_object(), "{p}");
    let described = node.ok(&["describe", "pod", "hog"]);
    assert!(described.contains("Reason:       Evicted"), "{described}");
    node.ok(&["delete", "pod", "hog"]);
}

#[test]
fn host_path_types_mounts_and_read_only() {
    let node = Node::start();
    let host = node.dir.path().join("host");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    std::fs::write(host.join("file"), "host-file\n").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(host.join("sock")).unwrap();
    let blk = host.join("blk");
    assert!(std::process::Command::new("mknod")
        .arg(&blk)
        .args(["b", "7", "200"])
        .status()
        .unwrap()
        .success());
    let h = host.display();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: types}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: d, hostPath: {{path: {h}/dir, type: Directory}}}}
  - {{name: dc, hostPath: {{path: {h}/made/dir, type: DirectoryOrCreate}}}}
  - {{name: f, hostPath: {{path: {h}/file, type: File}}}}
  - {{name: fc, hostPath: {{path: {h}/made-file, type: FileOrCreate}}}}
  - {{name: s, hostPath: {{path: {h}/sock, type: Socket}}}}
  - {{name: c, hostPath: {{path: /dev/null, type: CharDevice}}}}
  - {{name: b, hostPath: {{path: {h}/blk, type: BlockDevice}}}}
  - {{name: any, hostPath: {{path: {h}/untyped}}}}
  - {{name: ro, hostPath: {{path: {h}/dir}}}}
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "test -d /d && test -d /dc && grep -q host-file /f && test -f /fc && test -S /s && test -c /c && test -b /b && test -d /any && echo all-types-ok; echo x > /d/written-by-pod; touch /ro/nope 2>&1 || true"]
    volumeMounts:
    - {{name: d, mountPath: /d}}
    - {{name: dc, mountPath: /dc}}
    - {{name: f, mountPath: /f}}
    - {{name: fc, mountPath: /fc}}
    - {{name: s, mountPath: /s}}
    - {{name: c, mountPath: /c}}
    - {{name: b, mountPath: /b}}
    - {{name: any, mountPath: /any}}
    - {{name: ro, mountPath: /ro, readOnly: true}}
"#
    ));
    let p = node.wait_pod("types", "done", MIN, |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    let logs = node.logs("types", "c");
    assert_eq!(p["status"]["phase"], "Succeeded", "{logs}");
    assert!(logs.contains("all-types-ok"), "{logs}");
    assert!(logs.contains("Read-only file system"), "{logs}");
    assert!(host.join("made/dir").is_dir() && host.join("made-file").is_file() && host.join("untyped").is_dir());
    assert_eq!(std::fs::read_to_string(host.join("dir/written-by-pod")).unwrap(), "x\n");
    assert!(!host.join("dir/nope").exists());
    // Every type's failure, with kubelet's words.
    let cases = [
        (
            "not-dir",
            format!("{h}/file"),
            "Directory",
            format!("hostPath type check failed: {h}/file is not a directory"),
        ),
        (
            "not-file",
            format!("{h}/dir"),
            "File",
            format!("hostPath type check failed: {h}/dir is not a file"),
        ),
        (
            "not-sock",
            format!("{h}/file"),
            "Socket",
            format!("hostPath type check failed: {h}/file is not a socket file"),
        ),
        (
            "not-char",
            format!("{h}/file"),
            "CharDevice",
            format!("hostPath type check failed: {h}/file is not a character device"),
        ),
        (
            "not-block",
            "/dev/null".into(),
            "BlockDevice",
            "hostPath type check failed: /dev/null is not a block device".into(),
        ),
        (
            "missing",
            format!("{h}/nothing"),
            "Directory",
            format!("hostPath type check failed: {h}/nothing is not a directory"),
        ),
    ];
    for (name, path, kind, _) in &cases {
        node.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  volumes: [{{name: v, hostPath: {{path: {path}, type: {kind}}}}}]\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600'], volumeMounts: [{{name: v, mountPath: /v}}]}}\n"
        ));
    }
    for (name, _, _, message) in &cases {
        let d = wait_for(&format!("{name}: FailedMount"), MIN, || {
            Some(node.ok(&["describe", "pod", name])).filter(|d| d.contains("FailedMount"))
        });
        assert!(d.contains(message.as_str()), "{name}: {d}");
        let p = node.pod(name).unwrap();
        assert_eq!(container(&p, "c")["state"]["waiting"]["reason"], "ContainerCreating");
        assert!(
            container(&p, "c")["state"]["waiting"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(message.as_str()),
            "{p}"
        );
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let mut args = vec!["delete", "pod", "types"];
    args.extend(names);
    node.ok(&args);
}

#[test]
fn host_path_allow_list_refuses_other_paths_and_symlinks_out() {
    let allowed = tempfile::Builder::new()
        .prefix("pp-allowed-")
        .tempdir_in("/tmp")
        .unwrap();
    let a = allowed.path().display().to_string();
    std::os::unix::fs::symlink("/etc", allowed.path().join("escape")).unwrap();
    std::fs::create_dir(allowed.path().join("ok")).unwrap();
    let node = Node::start_with_args(&["--host-path-allow", &a], |_| {});
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: sneaky}}
spec:
  volumes: [{{name: etc, hostPath: {{path: /etc}}}}]
  containers:
  - {{name: c, image: busybox:1.35, command: [sleep, "3600"], volumeMounts: [{{name: etc, mountPath: /host-etc}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: via-link}}
spec:
  volumes: [{{name: link, hostPath: {{path: {a}/escape}}}}]
  containers:
  - {{name: c, image: busybox:1.35, command: [sleep, "3600"], volumeMounts: [{{name: link, mountPath: /x}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: fine}}
spec:
  restartPolicy: Never
  volumes: [{{name: ok, hostPath: {{path: {a}/ok}}}}]
  containers:
  - {{name: c, image: busybox:1.35, command: [touch, /x/made-by-pod], volumeMounts: [{{name: ok, mountPath: /x}}]}}
"#
    ));
    for (pod, message) in [
        (
            "sneaky",
            format!("volume \"etc\": hostPath /etc: not under an allowed prefix of this node ({a})"),
        ),
        (
            "via-link",
            format!("volume \"link\": hostPath /etc: not under an allowed prefix of this node ({a})"),
        ),
    ] {
        let d = wait_for(&format!("{pod} refused"), MIN, || {
            Some(node.ok(&["describe", "pod", pod])).filter(|d| d.contains("FailedMount"))
        });
        assert!(d.contains(&message), "{pod}: {d}");
    }
    node.wait_pod("fine", "done", MIN, |p| p["status"]["phase"] == "Succeeded");
    assert!(allowed.path().join("ok/made-by-pod").exists());
    node.ok(&["delete", "pod", "sneaky", "via-link", "fine"]);
}

#[test]
fn sub_path_expr_and_host_to_container_propagation() {
    let node = Node::start();
    // A shared mount, as systemd hosts have, so mounts made later propagate.
    let shared = node.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let sh = |args: &[&str]| {
        assert!(std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    let s = shared.display().to_string();
    sh(&["--bind", &s, &s]);
    sh(&["--make-shared", &s]);
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: expr}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: logs, emptyDir: {{}}}}
  - {{name: host, hostPath: {{path: {s}}}}}
  containers:
  - name: c
    image: busybox:1.35
    env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
    command: ["sh", "-c", "echo mine > /per-pod/file; until [ -f /host/late/marker ]; do sleep 0.2; done; echo saw-late-mount; exec sleep 3600"]
    volumeMounts:
    - {{name: logs, mountPath: /per-pod, subPathExpr: "$(POD_NAME)"}}
    - {{name: host, mountPath: /host, mountPropagation: HostToContainer}}
"#
    ));
    let p = node.wait_pod("expr", "running", MIN, |p| container(p, "c")["ready"] == true);
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let file = node.root().join(format!("pods/{uid}/volumes/emptydir/logs/expr/file"));
    wait_for("subPathExpr directory written", MIN, || file.exists().then_some(()));
    // Mounted on the host after the container started: HostToContainer shows it inside.
    let late = shared.join("late");
    std::fs::create_dir_all(&late).unwrap();
    sh(&["-t", "tmpfs", "tmpfs", &late.display().to_string()]);
    std::fs::write(late.join("marker"), "x").unwrap();
    let seen = wait_for("late mount seen", MIN, || {
        Some(node.logs("expr", "c")).filter(|l| l.contains("saw-late-mount"))
    });
    assert!(seen.contains("saw-late-mount"));
    node.ok(&["delete", "pod", "expr"]);
    let _ = std::process::Command::new("umount")
        .args(["-l", &late.display().to_string()])
        .status();
    let _ = std::process::Command::new("umount").args(["-l", &s]).status();
}

fn mountinfo_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default()
}

#[test]
fn a_shim_sees_only_its_own_pods_mounts() {
    let node = Node::start();
    for name in ["first", "second"] {
        node.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  volumes: [{{name: m, emptyDir: {{medium: Memory}}}}]\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sh, -c, 'echo hi > /m/f; exec sleep 3600'], volumeMounts: [{{name: m, mountPath: /m}}]}}\n"
        ));
    }
    let uid = |name: &str| {
        let p = node.wait_pod(name, "running", MIN, |p| {
            container(p, "c")["state"]["running"].is_object()
        });
        p["metadata"]["uid"].as_str().unwrap().to_string()
    };
    let (first, second) = (uid("first"), uid("second"));
    // The host holds both pods' mounts (rootfs, memory emptyDir, pinned namespaces).
    let host = mountinfo_of(std::process::id());
    for u in [&first, &second] {
        assert!(
            host.lines().filter(|l| l.contains(u.as_str())).count() >= 4,
            "host lacks mounts of {u}:\n{host}"
        );
    }
    let shims = node.shims(&second);
    assert_eq!(shims.len(), 1, "one shim for the second pod");
    let table = mountinfo_of(shims[0]);
    assert!(
        !table.contains(first.as_str()),
        "the second pod's shim sees the first pod's mounts:\n{table}"
    );
    let own: Vec<&str> = table.lines().filter(|l| l.contains(second.as_str())).collect();
    for what in ["/rootfs ", "/volumes/emptydir/m ", "/net ", "/shm "] {
        assert!(
            own.iter().any(|l| l.contains(what)),
            "its own {what} is missing:\n{table}"
        );
    }
    // The container runs from its own mounts: what it wrote is in the host's view of its volume.
    let f = node.root().join(format!("pods/{second}/volumes/emptydir/m/f"));
    assert_eq!(
        wait_for("the file the container wrote", MIN, || std::fs::read_to_string(&f).ok()),
        "hi\n"
    );
    node.ok(&["delete", "pod", "first", "second"]);
}

#[test]
fn bidirectional_mounts_from_a_privileged_container_reach_the_host() {
    let node = Node::start();
    let shared = node.dir.path().join("bidi");
    std::fs::create_dir_all(&shared).unwrap();
    let s = shared.display().to_string();
    let sh = |args: &[&str]| {
        assert!(std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    sh(&["--bind", &s, &s]);
    sh(&["--make-shared", &s]);
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: bidi}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: host, hostPath: {{path: {s}}}}}]
  containers:
  - name: c
    image: busybox:1.35
    securityContext: {{privileged: true}}
    command: ["sh", "-c", "mkdir -p /host/inner && mount -t tmpfs tmpfs /host/inner && echo from-inside > /host/inner/made && exec sleep 3600"]
    volumeMounts: [{{name: host, mountPath: /host, mountPropagation: Bidirectional}}]
"#
    ));
    node.wait_pod("bidi", "running", MIN, |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    let made = shared.join("inner/made");
    let got = wait_for("the container's mount seen on the host", MIN, || {
        std::fs::read_to_string(&made).ok()
    });
    assert_eq!(got, "from-inside\n");
    node.ok(&["delete", "pod", "bidi"]);
    let inner = shared.join("inner").display().to_string();
    let _ = std::process::Command::new("umount").args(["-l", &inner]).status();
    let _ = std::process::Command::new("umount").args(["-l", &s]).status();
}

/// A mount destination the image made a symlink is followed as the container
/// sees it: `..` past its root stays at its root, so the volume lands on the
/// image's own directory, never on the host's path of the same name.
#[test]
fn mount_destinations_follow_symlinks_inside_the_container_root() {
    let node = Node::start();
    // On the host: a directory of the name the symlink climbs out to.
    let host = tempfile::Builder::new()
        .prefix("pp-escape-")
        .tempdir_in("/tmp")
        .unwrap();
    let inside = host.path().strip_prefix("/").unwrap().to_path_buf();
    let layout = peapod_tests::layout::Layout::copy_of(peapod_tests::TEST_IMAGE);
    layout.with_tree("links", |dir| {
        std::fs::create_dir_all(dir.join(&inside)).unwrap();
        let climb = format!("../../../../../../../../{}", inside.display());
        std::os::unix::fs::symlink(&climb, dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::os::unix::fs::symlink(&climb, dir.join("etc/data")).unwrap();
    });
    let (root, path) = (node.root().display().to_string(), layout.path().display().to_string());
    node.ok(&["image", "import", "--root-dir", &root, &path, "--tag", "links"]);
    let there = host.path().display();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: links}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: links:links
    command: [sh, -c, "echo through-the-link > /data/marker && cat {there}/marker && grep -c ' {there} ' /proc/self/mountinfo"]
    volumeMounts:
    - {{name: scratch, mountPath: /data}}
    - {{name: scratch2, mountPath: /etc/data}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: scratch2, emptyDir: {{}}}}
"#
    ));
    let pod = node.wait_pod("links", "done", MIN, |p| {
        container(p, "c")["state"]["terminated"].is_object()
    });
    let logs = node.ok(&["logs", "links"]);
    assert_eq!(
        container(&pod, "c")["state"]["terminated"]["exitCode"],
        0,
        "{logs}\n{pod}"
    );
    // Both volumes went onto the image's directory (one over the other).
    assert_eq!(logs.lines().collect::<Vec<_>>(), ["through-the-link", "2"], "{logs}");
    // Nothing reached the host's directory of that name.
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    assert!(mounts_under(host.path()).is_empty());
}
