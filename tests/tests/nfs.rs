//! End-to-end: the NFS plugin against a real NFS server (nfs-ganesha on
//! 127.0.0.1), mounted through its userspace client (this kernel has no
//! NFS): a ReadWriteMany volume shared by two pods, and provisioning
//! through a StorageClass. One test: the server holds the host's NFS and
//! portmapper ports.

use peapod_tests::{pod_with_claim as pod, wait_for, NfsServer, Node};
use serde_json::Value;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn bound(node: &Node, claim: &str) -> Value {
    wait_for(&format!("{claim} bound"), MIN, || {
        node.get("pvc", claim).filter(|c| c["status"]["phase"] == "Bound")
    })
}

fn helpers(node: &Node) -> usize {
    let out = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("peapod-nfs-fuse mount .*--mountpoint {}", node.dir.path().display()),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn nfs_volumes_are_shared_between_pods_and_provisioned_per_claim() {
    let server = NfsServer::start();
    let mut node = Node::start_with_nfs();
    std::fs::write(server.export_dir().join("seed"), "on the server\n").unwrap();

    // A static ReadWriteMany volume: one pod writes, the other reads.
    node.apply(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: shared}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteMany]\n  mountOptions: [hard]\n  nfs: {server: 127.0.0.1, path: /export}\n",
    );
    node.apply("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: shared}\nspec:\n  accessModes: [ReadWriteMany]\n  storageClassName: \"\"\n  resources: {requests: {storage: 1Gi}}\n");
    assert_eq!(bound(&node, "shared")["spec"]["volumeName"], "shared");
    node.apply(&pod(
        "writer",
        "shared",
        "cat /data/seed; dd if=/dev/urandom of=/data/blob bs=1k count=256 2>/dev/null; md5sum /data/blob > /data/sum; sleep 3600",
    ));
    node.apply(&pod(
        "reader",
        "shared",
        "while [ ! -s /data/sum ]; do sleep 0.2; done; md5sum -c /data/sum && echo READ-OK; sleep 3600",
    ));
    wait_for("the writer read the seed", MIN, || {
        node.logs("writer", "c").contains("on the server").then_some(())
    });
    wait_for("the reader verified the writer's file", MIN, || {
        node.logs("reader", "c").contains("READ-OK").then_some(())
    });
    assert_eq!(
        std::fs::metadata(server.export_dir().join("blob")).unwrap().len(),
        256 * 1024,
        "the data is on the server"
    );
    assert_eq!(helpers(&node), 1, "one client for both pods on this node");
    // kill -9 of the daemon: the client and the pods keep going; the restarted
    // daemon adopts the staging instead of mounting the export again.
    node.kill_daemon();
    node.start_daemon();
    node.apply(&pod(
        "late",
        "shared",
        "md5sum -c /data/sum && echo LATE-OK; sleep 3600",
    ));
    wait_for("a pod after the restart reads the data", MIN, || {
        node.logs("late", "c").contains("LATE-OK").then_some(())
    });
    assert_eq!(helpers(&node), 1, "still one client after the restart");
    node.ok(&["delete", "pod", "late"]);
    node.ok(&["delete", "pod", "writer", "reader"]);
    wait_for("the client ends with the last pod", MIN, || {
        (helpers(&node) == 0).then_some(())
    });

    // Provisioning: a subdirectory per claim on the share; Delete archives it.
    node.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: nfs}\nprovisioner: nfs\nparameters: {server: 127.0.0.1, share: /export, onDelete: archive}\n",
    );
    node.apply("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: dyn}\nspec:\n  accessModes: [ReadWriteMany]\n  storageClassName: nfs\n  resources: {requests: {storage: 100Mi}}\n");
    let c = bound(&node, "dyn");
    let pv = c["spec"]["volumeName"].as_str().unwrap().to_string();
    let sub = server.export_dir().join(&pv);
    assert!(sub.is_dir(), "the claim's directory is on the share");
    node.apply(&pod("user", "dyn", "echo mine > /data/file; sleep 3600"));
    wait_for("the pod wrote into its directory", MIN, || {
        std::fs::read_to_string(sub.join("file")).ok().filter(|t| t == "mine\n")
    });
    node.ok(&["delete", "pod", "user"]);
    node.ok(&["delete", "pvc", "dyn"]);
    wait_for("the volume deleted", MIN, || {
        node.get("pv", &pv).is_none().then_some(())
    });
    assert!(!sub.exists());
    assert_eq!(
        std::fs::read_to_string(server.export_dir().join(format!("archived-{pv}")).join("file")).unwrap(),
        "mine\n",
        "onDelete: archive keeps the data aside"
    );
    node.ok(&["delete", "pvc", "shared"]);
    drop(node);
    drop(server);
}
