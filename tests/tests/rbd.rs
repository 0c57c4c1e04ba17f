//! End-to-end: the RBD plugin against a real single-node Ceph cluster (one
//! mon, one memstore OSD on 127.0.0.1), mapped through rbd-fuse and a loop
//! device (this kernel has neither krbd nor nbd). One test: the cluster
//! holds the host's Ceph ports.

use peapod_tests::{pod_with_claim, wait_for, CephCluster, Node};
use serde_json::Value;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn bound(node: &Node, claim: &str) -> Value {
    wait_for(&format!("{claim} bound"), MIN, || {
        node.get("pvc", claim).filter(|c| c["status"]["phase"] == "Bound")
    })
}

fn static_volume(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: 64Mi}}\n  accessModes: [ReadWriteOnce]\n  claimRef: {{namespace: default, name: {name}}}\n  rbd: {{monitors: ['127.0.0.1:6789'], pool: rbd, image: {image}, fsType: ext4}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  volumeName: {name}\n  resources: {{requests: {{storage: 64Mi}}}}\n"
    )
}

fn helpers(node: &Node) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("rbd-fuse .*{}", node.dir.path().display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn rbd_images_keep_their_data_are_exclusive_when_read_write_once_and_are_provisioned() {
    let ceph = CephCluster::start();
    let mut node = Node::start_with_rbd(&ceph);
    ceph.rbd(&["create", "--size", "64", "rbd/shared"]);
    // Two volumes over one image: only one may be staged ReadWriteOnce.
    node.apply(&static_volume("first", "shared"));
    node.apply(&static_volume("second", "shared"));
    bound(&node, "first");
    bound(&node, "second");
    node.apply(&pod_with_claim(
        "writer",
        "first",
        "echo written-once > /data/note && sync && echo WROTE; sleep 3600",
    ));
    wait_for("the note on the image", MIN, || {
        node.logs("writer", "c").contains("WROTE").then_some(())
    });
    node.apply(&pod_with_claim("reader", "second", "cat /data/note; sleep 3600"));
    wait_for("the second stage refused", MIN, || {
        node.ok(&["get", "events"])
            .contains("is in use elsewhere (locked as")
            .then_some(())
    });
    assert_eq!(node.pod("reader").unwrap()["status"]["phase"], "Pending");
    // kill -9 of the daemon while the image is staged and written: after the
    // restart it is still staged once, locked once, and the writer runs on.
    let before = node.pod("writer").unwrap()["status"]["containerStatuses"][0]["containerID"].clone();
    node.kill_daemon();
    node.start_daemon();
    wait_for("the restarted daemon reports the writer", MIN, || {
        let p = node.pod("writer")?;
        (p["status"]["containerStatuses"][0]["containerID"] == before && p["status"]["phase"] == "Running")
            .then_some(())
    });
    assert_eq!(helpers(&node), 1, "not mapped again after the restart");
    let lock = ["-p", "rbd", "lock", "info", "peapod.lock.shared", "peapod"];
    let holders = ceph.tool("rados", &lock);
    assert!(holders.contains("peapod:"), "{holders}");

    // The writer goes: the image is unstaged and unlocked, and the other
    // volume's pod mounts it and sees the data (the filesystem is not made again).
    node.ok(&["delete", "pod", "writer"]);
    wait_for("the reader sees the note", Duration::from_secs(150), || {
        node.logs("reader", "c").contains("written-once").then_some(())
    });
    assert_eq!(helpers(&node), 1, "one rbd-fuse for the one staged image");
    node.ok(&["delete", "pod", "reader"]);
    wait_for("rbd-fuse ends with the last pod", MIN, || {
        (helpers(&node) == 0).then_some(())
    });
    assert!(!ceph.tool("rados", &lock).contains("peapod:"), "unlocked");

    // Provisioning: an image per claim, deleted with it.
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: ceph}\nprovisioner: rbd\nallowVolumeExpansion: true\nparameters: {pool: rbd}\n",
    );
    node.apply("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: dyn}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: ceph\n  resources: {requests: {storage: 32Mi}}\n");
    let c = bound(&node, "dyn");
    let pv = c["spec"]["volumeName"].as_str().unwrap().to_string();
    assert!(ceph.rbd(&["ls", "rbd"]).lines().any(|l| l == pv), "the image exists");
    assert_eq!(c["status"]["capacity"]["storage"], "32Mi");
    node.apply(&pod_with_claim(
        "user",
        "dyn",
        "df -k /data | tail -1; echo DONE; sleep 3600",
    ));
    wait_for("the provisioned volume mounted", MIN, || {
        node.logs("user", "c").contains("DONE").then_some(())
    });
    // Expansion while mounted: the image grows at once, its filesystem
    // online where the kernel lets it, else when next staged.
    node.apply("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: dyn}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: ceph\n  resources: {requests: {storage: 64Mi}}\n");
    wait_for("the volume grown", MIN, || {
        let events = node.ok(&["get", "events"]);
        assert!(!events.contains("VolumeResizeFailed"), "{events}");
        node.get("pv", &pv)
            .filter(|v| v["spec"]["capacity"]["storage"] == "64Mi")
    });
    node.ok(&["delete", "pod", "user"]);
    wait_for("unstaged", MIN, || (helpers(&node) == 0).then_some(()));
    let info = ceph.rbd(&["info", "--format", "json", &format!("rbd/{pv}")]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["size"], 64 << 20, "{info}");
    node.apply(&pod_with_claim(
        "sizer",
        "dyn",
        "df -k /data | tail -1 | awk '{print \"KB=\" $2}'; sleep 3600",
    ));
    let kb = wait_for("the grown filesystem seen in a pod", MIN, || {
        let logs = node.logs("sizer", "c");
        logs.split("KB=").nth(1).and_then(|t| t.trim().parse::<u64>().ok())
    });
    assert!(kb > 50 * 1024, "the filesystem is {kb} KiB");
    assert_eq!(node.get("pvc", "dyn").unwrap()["status"]["capacity"]["storage"], "64Mi");
    node.ok(&["delete", "pod", "sizer"]);
    node.ok(&["delete", "pvc", "dyn"]);
    wait_for("the volume deleted", MIN, || {
        node.get("pv", &pv).is_none().then_some(())
    });
    assert!(
        !ceph.rbd(&["ls", "rbd"]).lines().any(|l| l == pv),
        "the image is deleted"
    );
    for c in ["first", "second"] {
        node.ok(&["delete", "pvc", c]);
    }
    drop(node);
    drop(ceph);
}
