//! End-to-end: PersistentVolumes, claims and classes, bound by the node's
//! binder as Kubernetes' PersistentVolume controller binds them.

use peapod_tests::{pod_with_claim, wait_for, Node};
use serde_json::Value;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn volume(name: &str, size: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: /srv/{name}}}\n{extra}"
    )
}

fn claim(name: &str, size: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n{extra}"
    )
}

fn phase(v: &Value) -> &str {
    v["status"]["phase"].as_str().unwrap_or("")
}

fn bound(node: &Node, claim: &str) -> Value {
    wait_for(&format!("{claim} bound"), MIN, || {
        node.get("pvc", claim).filter(|c| phase(c) == "Bound")
    })
}

fn event_for(node: &Node, text: &str) {
    wait_for(text, MIN, || node.ok(&["get", "events"]).contains(text).then_some(()));
}

#[test]
fn claims_bind_to_the_smallest_fitting_volume_and_release_it() {
    let node = Node::start();
    for (name, size) in [("tiny", "500Mi"), ("small", "2Gi"), ("big", "10Gi")] {
        node.apply(&volume(name, size, ""));
    }
    wait_for("volumes Available", MIN, || {
        node.list("pv", None)
            .iter()
            .filter(|v| phase(v) == "Available")
            .count()
            .eq(&3)
            .then_some(())
    });
    // 1Gi: tiny is too small, small is the smallest that fits.
    node.apply(&claim("data", "1Gi", ""));
    let c = bound(&node, "data");
    assert_eq!(c["spec"]["volumeName"], "small");
    assert_eq!(c["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes");
    let v = node.get("pv", "small").unwrap();
    assert_eq!(phase(&v), "Bound");
    assert_eq!(v["spec"]["claimRef"]["name"], "data");
    assert_eq!(v["spec"]["claimRef"]["uid"], c["metadata"]["uid"]);
    let table = node.ok(&["get", "pv", "small"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["small", "2Gi", "RWO", "Retain", "Bound", "default/data"],
        "{table}"
    );
    let table = node.ok(&["get", "pvc", "data"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..5], ["data", "Bound", "small", "2Gi", "RWO"], "{table}");

    // Nothing fits 20Gi and no class is set: Pending, saying so.
    node.apply(&claim("huge", "20Gi", ""));
    event_for(
        &node,
        "no persistent volumes available for this claim and no storage class is set",
    );
    assert_eq!(phase(&node.get("pvc", "huge").unwrap()), "Pending");
    // A class that does not exist.
    node.apply(&claim("classy", "1Gi", "  storageClassName: fast\n"));
    event_for(&node, "storageclass.storage.k8s.io \"fast\" not found");
    // A claim naming a volume too small for it.
    node.apply(&claim("named", "1Gi", "  volumeName: tiny\n"));
    event_for(
        &node,
        "Cannot bind to requested volume \"tiny\": requested PV is too small",
    );
    assert_eq!(phase(&node.get("pvc", "named").unwrap()), "Pending");

    // A volume pre-bound to a claim goes to it, larger or not.
    node.apply(&volume(
        "reserved",
        "50Gi",
        "  claimRef: {namespace: default, name: pre}\n",
    ));
    node.apply(&claim("pre", "1Gi", ""));
    assert_eq!(bound(&node, "pre")["spec"]["volumeName"], "reserved");

    // The claim goes: its volume is Released, claimRef kept (Retain).
    node.ok(&["delete", "pvc", "data"]);
    let v = wait_for("small Released", MIN, || {
        node.get("pv", "small").filter(|v| phase(v) == "Released")
    });
    assert_eq!(v["spec"]["claimRef"]["name"], "data");
    // A new claim does not get a Released volume: big is next.
    node.apply(&claim("again", "1Gi", ""));
    assert_eq!(bound(&node, "again")["spec"]["volumeName"], "big");

    for c in ["huge", "classy", "named", "pre", "again"] {
        node.ok(&["delete", "pvc", c]);
    }
    node.ok(&["delete", "pv", "tiny", "small", "big", "reserved"]);
}

fn running(node: &Node, pod: &str) -> Value {
    node.wait_pod(pod, &format!("{pod} Running"), MIN, |p| {
        p["status"]["phase"] == "Running"
    })
}

fn succeeded(node: &Node, pod: &str) -> Value {
    node.wait_pod(pod, &format!("{pod} done"), MIN, |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    })
}

fn gone(node: &Node, kind: &str, name: &str) {
    wait_for(&format!("{kind} {name} gone"), MIN, || {
        node.get(kind, name).is_none().then_some(())
    });
}

/// Volume mount points (staged or published) under `dir`, from this
/// process's mount table.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let root = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&root) && (m.contains("/volumes/") || m.contains("/plugins/")))
        .map(str::to_string)
        .collect()
}

/// Loop devices backed by files under `dir`.
fn loops_under(dir: &std::path::Path) -> Vec<String> {
    let root = dir.display().to_string();
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).is_ok_and(|b| b.starts_with(&root)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_pod_reads_and_writes_a_host_path_volume_through_its_claim_which_is_protected_while_used() {
    let node = Node::start();
    let srv = node.dir.path().join("srv");
    std::fs::create_dir_all(srv.join("pv-a")).unwrap();
    std::fs::write(srv.join("pv-a/hello"), "from the host\n").unwrap();
    let pv = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: pv-a}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: {}, type: Directory}}\n",
        srv.join("pv-a").display()
    );
    node.apply(&pv);
    node.apply(&claim("data", "1Gi", ""));
    assert_eq!(bound(&node, "data")["spec"]["volumeName"], "pv-a");
    let c = node.get("pvc", "data").unwrap();
    assert_eq!(c["metadata"]["finalizers"][0], "kubernetes.io/pvc-protection");
    assert_eq!(
        node.get("pv", "pv-a").unwrap()["metadata"]["finalizers"][0],
        "kubernetes.io/pv-protection"
    );
    node.apply(&pod_with_claim(
        "user",
        "data",
        "cat /data/hello; echo from the pod > /data/written; sleep 3600",
    ));
    running(&node, "user");
    wait_for("the pod read the volume", MIN, || {
        node.logs("user", "c").contains("from the host").then_some(())
    });
    wait_for("the pod wrote the volume", MIN, || {
        std::fs::read_to_string(srv.join("pv-a/written"))
            .ok()
            .filter(|t| t == "from the pod\n")
    });

    let d = node.ok(&["describe", "pvc", "data"]);
    assert!(d.contains("Used By:       user"), "{d}");
    assert!(d.contains("Finalizers:    [kubernetes.io/pvc-protection]"), "{d}");
    let d = node.ok(&["describe", "pv", "pv-a"]);
    assert!(d.contains("Claim:           default/data"), "{d}");
    assert!(
        d.contains("Type:          HostPath (bare host directory volume)"),
        "{d}"
    );

    // The claim is in use: deleting it leaves it Terminating until the pod goes.
    node.ok(&["delete", "pvc", "data", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(3));
    let c = node.get("pvc", "data").expect("the claim is kept while used");
    assert!(c["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(phase(&c), "Bound");
    let table = node.ok(&["get", "pvc", "data"]);
    assert!(table.contains("Terminating"), "{table}");
    node.ok(&["delete", "pod", "user"]);
    gone(&node, "pvc", "data");
    // Retain: the volume is Released and its data stays.
    wait_for("pv-a Released", MIN, || {
        node.get("pv", "pv-a").filter(|v| phase(v) == "Released")
    });
    assert_eq!(
        std::fs::read_to_string(srv.join("pv-a/written")).unwrap(),
        "from the pod\n"
    );

    // A pod naming a claim that does not exist waits, saying so.
    node.apply(&pod_with_claim("orphan", "nothing", "true"));
    node.wait_pod("orphan", "held by its missing claim", MIN, |p| {
        p["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("persistentvolumeclaim \"nothing\" not found"))
        })
    });
    node.ok(&["delete", "pod", "orphan"]);
    // A volume no claim is bound to goes at once.
    node.ok(&["delete", "pv", "pv-a"]);
    gone(&node, "pv", "pv-a");
    assert!(
        mounts_under(node.dir.path()).is_empty(),
        "{:?}",
        mounts_under(node.dir.path())
    );
}

#[test]
fn the_local_provisioner_enforces_the_size_and_reclaims_by_policy() {
    let node = Node::start_with_local_storage();
    // A fresh node's default class.
    let table = node.ok(&["get", "sc"]);
    assert!(table.contains("local (default)"), "{table}");
    assert!(
        table.contains("local.peapod.io") && table.contains("WaitForFirstConsumer"),
        "{table}"
    );

    let d = node.ok(&["describe", "sc", "local"]);
    assert!(d.contains("IsDefaultClass:        Yes"), "{d}");
    assert!(d.contains("AllowVolumeExpansion:  True"), "{d}");

    // No class named: the default one; it binds at first use, so it waits.
    node.apply(&claim("scratch", "8Mi", ""));
    wait_for("the default class assigned", MIN, || {
        node.get("pvc", "scratch")
            .filter(|c| c["spec"]["storageClassName"] == "local")
    });
    event_for(&node, "waiting for first consumer to be created before binding");
    assert_eq!(phase(&node.get("pvc", "scratch").unwrap()), "Pending");

    // The first pod makes it provisioned, bound and mounted; writing past
    // the size fails inside the pod.
    node.apply(&pod_with_claim(
        "filler",
        "scratch",
        "dd if=/dev/zero of=/data/a bs=1M count=4 && echo FIRST-OK; \
         dd if=/dev/zero of=/data/b bs=1M count=16 2>&1; df -k /data | tail -1",
    ));
    let c = bound(&node, "scratch");
    let pv_name = c["spec"]["volumeName"].as_str().unwrap().to_string();
    assert_eq!(pv_name, format!("pvc-{}", c["metadata"]["uid"].as_str().unwrap()));
    let pv = node.get("pv", &pv_name).unwrap();
    assert_eq!(pv["spec"]["csi"]["driver"], "local.peapod.io");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["capacity"]["storage"], "8Mi");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "local.peapod.io"
    );
    assert!(pv["spec"]["nodeAffinity"]["required"].is_object());
    assert!(c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].is_string());
    let p = succeeded(&node, "filler");
    let logs = node.logs("filler", "c");
    assert!(logs.contains("FIRST-OK"), "{logs}");
    assert!(logs.contains("No space left on device"), "{logs}");
    assert_eq!(p["status"]["phase"], "Succeeded", "{logs}");
    let events = node.ok(&["get", "events"]);
    assert!(
        events.contains(&format!("Successfully provisioned volume {pv_name}")),
        "{events}"
    );

    // Delete: the claim goes, the volume and its image with it.
    let image_dir = node.root().join("plugins/local.peapod.io/volumes").join(&pv_name);
    assert!(image_dir.join("disk.img").exists());
    node.ok(&["delete", "pod", "filler"]);
    node.ok(&["delete", "pvc", "scratch"]);
    gone(&node, "pv", &pv_name);
    assert!(!image_dir.exists(), "the image is deleted with its volume");

    // Retain (a class of the operator's, binding at once): the data stays.
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: keep}\nprovisioner: local.peapod.io\nreclaimPolicy: Retain\n",
    );
    node.apply(&claim("kept", "4Mi", "  storageClassName: keep\n"));
    let c = bound(&node, "kept");
    let kept_pv = c["spec"]["volumeName"].as_str().unwrap().to_string();
    node.ok(&["delete", "pvc", "kept"]);
    let v = wait_for("kept Released", MIN, || {
        node.get("pv", &kept_pv).filter(|v| phase(v) == "Released")
    });
    assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert!(node
        .root()
        .join("plugins/local.peapod.io/volumes")
        .join(&kept_pv)
        .join("disk.img")
        .exists());
    node.ok(&["delete", "pv", &kept_pv]);
    gone(&node, "pv", &kept_pv);
    assert!(
        mounts_under(node.dir.path()).is_empty(),
        "{:?}",
        mounts_under(node.dir.path())
    );
    assert!(
        loops_under(node.dir.path()).is_empty(),
        "{:?}",
        loops_under(node.dir.path())
    );
}

#[test]
fn a_volume_is_staged_once_for_all_its_pods_and_survives_a_daemon_kill() {
    let mut node = Node::start_with_local_storage();
    node.apply(&claim("shared", "8Mi", ""));
    node.apply(&pod_with_claim("first", "shared", "echo kept > /data/note; sleep 3600"));
    let c = bound(&node, "shared");
    let pv_name = c["spec"]["volumeName"].as_str().unwrap().to_string();
    running(&node, "first");
    node.apply(&pod_with_claim("second", "shared", "cat /data/note; sleep 3600"));
    running(&node, "second");
    wait_for("the second pod sees the first's file", MIN, || {
        node.logs("second", "c").contains("kept").then_some(())
    });
    let staged = node.root().join("plugins/.staging/local.peapod.io").join(&pv_name);
    let record = || -> Value { serde_json::from_slice(&std::fs::read(staged.join("staged.json")).unwrap()).unwrap() };
    assert_eq!(record()["users"].as_array().unwrap().len(), 2, "{}", record());
    let staging_mounts = || mounts_under(&staged).iter().filter(|m| m.ends_with("/mount")).count();
    assert_eq!(staging_mounts(), 1, "staged once");
    assert_eq!(loops_under(node.dir.path()).len(), 1);

    // kill -9 while staged and in use: nothing staged twice, the pods keep their data.
    let before = node.pod("first").unwrap()["status"]["containerStatuses"][0]["containerID"].clone();
    node.kill_daemon();
    node.start_daemon();
    node.apply(&pod_with_claim("third", "shared", "cat /data/note; sleep 3600"));
    running(&node, "third");
    wait_for("the third pod sees the data", MIN, || {
        node.logs("third", "c").contains("kept").then_some(())
    });
    assert_eq!(
        node.pod("first").unwrap()["status"]["containerStatuses"][0]["containerID"],
        before,
        "the running container was adopted"
    );
    assert_eq!(staging_mounts(), 1, "not staged again after the restart");
    assert_eq!(loops_under(node.dir.path()).len(), 1);
    assert_eq!(record()["users"].as_array().unwrap().len(), 3, "{}", record());

    // The last pod to go unstages it.
    node.ok(&["delete", "pod", "first", "second"]);
    gone(&node, "pod", "second");
    assert_eq!(staging_mounts(), 1, "still used by the third pod");
    node.ok(&["delete", "pod", "third"]);
    gone(&node, "pod", "third");
    wait_for("unstaged", MIN, || (!staged.exists()).then_some(()));
    assert!(
        loops_under(node.dir.path()).is_empty(),
        "{:?}",
        loops_under(node.dir.path())
    );
    node.ok(&["delete", "pvc", "shared"]);
    gone(&node, "pv", &pv_name);
}

#[test]
fn a_claim_grows_its_volume_and_filesystem_while_in_use() {
    let node = Node::start_with_local_storage();
    node.apply(&claim("grow", "8Mi", ""));
    node.apply(&pod_with_claim(
        "first",
        "grow",
        "dd if=/dev/zero of=/data/a bs=1M count=6 2>/dev/null && echo A-OK; sleep 3600",
    ));
    wait_for("the first write", MIN, || {
        node.logs("first", "c").contains("A-OK").then_some(())
    });
    let pv = bound(&node, "grow")["spec"]["volumeName"].as_str().unwrap().to_string();

    // 8Mi -> 24Mi while the first pod has it mounted: the image grows at
    // once; its ext4 grows online where the kernel lets it (not here: no
    // CAP_SYS_RESOURCE), else the claim waits FileSystemResizePending and the
    // next staging grows it unmounted.
    node.apply(&claim("grow", "24Mi", ""));
    wait_for("the volume grown", MIN, || {
        node.get("pv", &pv)
            .filter(|v| v["spec"]["capacity"]["storage"] == "24Mi")
    });
    let c = wait_for("the claim grown or waiting for its filesystem", MIN, || {
        node.get("pvc", "grow").filter(|c| {
            c["status"]["capacity"]["storage"] == "24Mi"
                || c["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| x["type"] == "FileSystemResizePending"))
        })
    });
    if c["status"]["capacity"]["storage"] != "24Mi" {
        event_for(&node, "Require file system resize of volume on node");
        node.ok(&["delete", "pod", "first"]);
        gone(&node, "pod", "first");
    }
    node.apply(&pod_with_claim(
        "second",
        "grow",
        "dd if=/dev/zero of=/data/b bs=1M count=12 2>&1 && echo B-OK; sleep 3600",
    ));
    wait_for("a write that fits only the grown volume", MIN, || {
        let logs = node.logs("second", "c");
        assert!(!logs.contains("No space left"), "{logs}");
        logs.contains("B-OK").then_some(())
    });
    let c = node.get("pvc", "grow").unwrap();
    assert_eq!(c["status"]["capacity"]["storage"], "24Mi", "{c}");
    assert!(
        !c["status"]["conditions"]
            .to_string()
            .contains("FileSystemResizePending"),
        "{c}"
    );

    // A class that does not allow expansion says so.
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fixed}\nprovisioner: local.peapod.io\n",
    );
    node.apply(&claim("stuck", "4Mi", "  storageClassName: fixed\n"));
    bound(&node, "stuck");
    node.apply(&claim("stuck", "8Mi", "  storageClassName: fixed\n"));
    event_for(&node, "the storageclass that provisions the pvc must support resize");
    assert_eq!(
        node.get("pvc", "stuck").unwrap()["status"]["capacity"]["storage"],
        "4Mi"
    );
    let _ = node.peapod(&["delete", "pod", "first"]);
    node.ok(&["delete", "pod", "second"]);
    node.ok(&["delete", "pvc", "grow", "stuck"]);
    wait_for("the volumes deleted", MIN, || {
        node.list("pv", None).is_empty().then_some(())
    });
    assert!(
        loops_under(node.dir.path()).is_empty(),
        "{:?}",
        loops_under(node.dir.path())
    );
}

#[test]
fn a_local_volume_is_used_through_its_claim() {
    let node = Node::start();
    let disk = node.dir.path().join("disk1");
    std::fs::create_dir_all(&disk).unwrap();
    std::fs::write(disk.join("label"), "disk one\n").unwrap();
    node.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: local-a}}\nspec:\n  capacity: {{storage: 10Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: local-disks\n  local: {{path: {}}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions: [{{key: kubernetes.io/os, operator: In, values: [linux]}}]\n",
        disk.display()
    ));
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: local-disks}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    node.apply(&claim("disk", "5Gi", "  storageClassName: local-disks\n"));
    event_for(&node, "waiting for first consumer to be created before binding");
    node.apply(&pod_with_claim("reader", "disk", "cat /data/label; sleep 3600"));
    assert_eq!(bound(&node, "disk")["spec"]["volumeName"], "local-a");
    wait_for("the pod read the local volume", MIN, || {
        node.logs("reader", "c").contains("disk one").then_some(())
    });
    let d = node.ok(&["describe", "pv", "local-a"]);
    assert!(d.contains("kubernetes.io/os in [linux]"), "{d}");

    // A local volume of another node: its pod is not scheduled here.
    node.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: far-away}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  local: {{path: {}}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [another-node]}}]\n",
        disk.display()
    ));
    node.apply(&claim(
        "far",
        "1Gi",
        "  storageClassName: \"\"\n  volumeName: far-away\n",
    ));
    bound(&node, "far");
    node.apply(&pod_with_claim("stranded", "far", "sleep 3600"));
    event_for(
        &node,
        "0/1 nodes are available: 1 node(s) had volume node affinity conflict",
    );
    assert_eq!(node.pod("stranded").unwrap()["spec"]["nodeName"], Value::Null);
    node.ok(&["delete", "pod", "stranded"]);
    node.ok(&["delete", "pvc", "far"]);
    node.ok(&["delete", "pod", "reader"]);
    node.ok(&["delete", "pvc", "disk"]);
    wait_for("local-a Released", MIN, || {
        node.get("pv", "local-a").filter(|v| phase(v) == "Released")
    });
    assert!(disk.join("label").exists(), "Retain keeps the data");
}
