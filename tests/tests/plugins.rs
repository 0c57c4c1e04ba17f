//! Volume plugins as a third party ships them: an out-of-tree Rust crate and
//! the SDK's C example are built, dropped into the node's plugin directory,
//! loaded and used by pods; broken plugins (wrong ABI, duplicate name,
//! writable by others, panicking, hanging) never take the daemon down.

use peapod_tests::{artifact, container, wait_for, Node, LOCAL_PLUGIN, NFS_PLUGIN};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn sdk_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk")
}

fn gcc(out: &Path, defines: &[&str]) {
    let sdk = sdk_dir();
    let status = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(sdk.join("include"))
        .args(defines)
        .arg("-o")
        .arg(out)
        .arg(sdk.join("examples/c/noop.c"))
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed for {}", out.display());
}

fn prepare(node: &Node) {
    let dir = node.plugin_dir();
    std::fs::copy(artifact("libpeapod_test_plugin.so"), dir.join("libmisbehave.so")).unwrap();
    gcc(&dir.join("libcnoop.so"), &[]);
    gcc(
        &dir.join("libcnoop-future.so"),
        &["-DNOOP_ABI_MAJOR=99", "-DNOOP_NAME=\"cnoop-future\""],
    );
    gcc(
        &dir.join("libcnoop-stuck.so"),
        &["-DNOOP_HANG_ON_LOAD", "-DNOOP_NAME=\"cnoop-stuck\""],
    );
    std::fs::copy(dir.join("libpeapod_emptydir.so"), dir.join("zz-duplicate.so")).unwrap();
    let open = dir.join("writable-by-all.so");
    std::fs::copy(dir.join("libpeapod_hostpath.so"), &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
}

#[test]
fn third_party_plugins_load_serve_pods_and_bad_ones_are_refused() {
    let node = Node::start_with(prepare);
    let list: serde_json::Value = serde_json::from_str(&node.ok(&["plugins", "-o", "json"])).unwrap();
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cnoop", "emptydir", "hostpath", "misbehave"], "{list}");
    let cnoop = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cnoop")
        .unwrap();
    assert_eq!(cnoop["version"], "1.0.0");
    assert_eq!(cnoop["abi"], "1.0");
    assert!(cnoop["path"].as_str().unwrap().ends_with("/libcnoop.so"));
    let emptydir = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "emptydir")
        .unwrap();
    assert_eq!(emptydir["capabilities"], serde_json::json!(["stats"]));
    let table = node.ok(&["plugins"]);
    assert!(
        table.starts_with("NAME") && table.contains("misbehave") && table.contains("0.0.1"),
        "{table}"
    );

    let log = node.daemon_log();
    for refusal in [
        "libcnoop-future.so: ABI 99.0 is not supported (this daemon speaks ABI 1.x)",
        "zz-duplicate.so: a plugin named \"emptydir\" is already loaded from",
        "writable-by-all.so: refusing a file writable by group or others (mode 666)",
        "libcnoop-stuck.so: peapod_volume_plugin did not return its table within 5s",
    ] {
        assert!(log.contains(refusal), "missing {refusal:?} in {log}");
    }
    let events: serde_json::Value =
        serde_json::from_str(&node.ok(&["get", "events", "-n", "default", "-o", "json"])).unwrap();
    let refused = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "FailedLoadPlugin" && e["involvedObject"]["kind"] == "Node")
        .count();
    assert_eq!(refused, 4, "{events}");

    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: vendor}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: rust, csi: {driver: misbehave, volumeAttributes: {mode: ok}}}
  - {name: c, csi: {driver: cnoop}}
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "cat /rust/from-rust-plugin /c/from-c; exec sleep 3600"]
    volumeMounts: [{name: rust, mountPath: /rust}, {name: c, mountPath: /c}]
---
apiVersion: v1
kind: Pod
metadata: {name: boom}
spec:
  volumes: [{name: v, csi: {driver: misbehave, volumeAttributes: {mode: panic}}}]
  containers:
  - {name: c, image: busybox:1.35, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /v}]}
---
apiVersion: v1
kind: Pod
metadata: {name: stuck}
spec:
  volumes: [{name: v, csi: {driver: misbehave, volumeAttributes: {mode: hang}}}]
  containers:
  - {name: c, image: busybox:1.35, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /v}]}
"#,
    );
    let vendor = node.wait_pod("vendor", "running", MIN, |p| container(p, "c")["ready"] == true);
    let logs = wait_for("both plugins' files", MIN, || {
        Some(node.logs("vendor", "c")).filter(|l| l.contains("written by a C plugin"))
    });
    assert!(logs.contains(vendor["metadata"]["uid"].as_str().unwrap()), "{logs}");
    let boom = wait_for("panic reported", MIN, || {
        Some(node.ok(&["describe", "pod", "boom"])).filter(|d| d.contains("FailedMount"))
    });
    assert!(
        boom.contains(
            "volume plugin \"misbehave\" publish: plugin panicked: misbehave was asked to panic for pod boom"
        ),
        "{boom}"
    );
    let stuck = wait_for("hang reported", MIN, || {
        Some(node.ok(&["describe", "pod", "stuck"])).filter(|d| d.contains("FailedMount"))
    });
    assert!(
        stuck.contains("volume plugin \"misbehave\" publish: no reply within 3s"),
        "{stuck}"
    );
    let p = node.pod("stuck").unwrap();
    assert_eq!(container(&p, "c")["state"]["waiting"]["reason"], "ContainerCreating");
    // The daemon is alive and still runs the good pod.
    let pid = node.daemon_pid().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(container(&node.pod("vendor").unwrap(), "c")["ready"], true);

    // A third-party plugin backs a PersistentVolume through its csi source.
    node.apply(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {name: vendor-pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  csi: {driver: misbehave, volumeHandle: vol-1, volumeAttributes: {mode: ok}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: vendor-claim}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: claimed}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: v, persistentVolumeClaim: {claimName: vendor-claim}}]
  containers:
  - {name: c, image: busybox:1.35, command: ["sh", "-c", "cat /v/from-rust-plugin; exec sleep 3600"], volumeMounts: [{name: v, mountPath: /v}]}
"#,
    );
    let claimed = node.wait_pod("claimed", "running on the vendor's volume", MIN, |p| {
        container(p, "c")["ready"] == true
    });
    let uid = claimed["metadata"]["uid"].as_str().unwrap().to_string();
    wait_for("the vendor plugin published the claim's volume", MIN, || {
        node.logs("claimed", "c").contains(&uid).then_some(())
    });
    node.ok(&["delete", "pod", "vendor", "boom", "stuck"]);
}

#[test]
fn a_plugin_configuration_that_is_wrong_is_named_and_the_daemon_runs_on() {
    let node = Node::start_with(|n| {
        n.add_plugin(LOCAL_PLUGIN, Some(("local.peapod.io", "basePath: [unclosed\n".into())));
        n.add_plugin(NFS_PLUGIN, Some(("nfs", "clinet: fuse\n".into())));
    });
    let events = wait_for("both plugins reported", MIN, || {
        let e = node.ok(&["get", "events", "-o", "json"]);
        (e.matches("FailedInitPlugin").count() >= 2).then_some(e)
    });
    assert!(
        events.contains("local.peapod.io.yaml:1:")
            && events.contains("configuration not loaded, plugin not initialised"),
        "{events}"
    );
    assert!(
        events.contains("init failed: configuration: unknown field `clinet`"),
        "{events}"
    );
    // The daemon runs on, and a claim for the unconfigured provisioner says why it waits.
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: now}\nprovisioner: local.peapod.io\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: now\n  resources: {requests: {storage: 4Mi}}\n",
    );
    wait_for("the claim's provisioning failure", MIN, || {
        node.ok(&["get", "events"])
            .contains("the plugin is not initialised")
            .then_some(())
    });
    assert_eq!(node.get("pvc", "c").unwrap()["status"]["phase"], "Pending");
}
