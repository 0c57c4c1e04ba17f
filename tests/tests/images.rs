//! Images from a registry: Debian's docker-registry on 127.0.0.1, images
//! pushed with skopeo from the busybox test layout, pulled by
//! `peapod image pull` into a node's store (run as root).

use peapod_tests::registry::Registry;
use peapod_tests::{container, Node, TEST_IMAGE};
use std::time::Duration;

/// The busybox layout's single layer (what a pull must fetch or share).
fn test_layer() -> (String, u64) {
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(format!("{TEST_IMAGE}/{p}")).unwrap()).unwrap()
    };
    let index = read("index.json");
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest = read(&format!("blobs/sha256/{digest}"));
    let layer = &manifest["layers"][0];
    (
        layer["digest"].as_str().unwrap().to_string(),
        layer["size"].as_u64().unwrap(),
    )
}

fn images(node: &Node) -> String {
    let root = node.root().display().to_string();
    node.ok(&["image", "ls", "--root-dir", &root])
}

fn pull(node: &Node, name: &str) -> std::process::Output {
    let root = node.root().display().to_string();
    node.peapod(&["image", "pull", "--root-dir", &root, name])
}

#[test]
fn a_pulled_image_runs_and_shares_stored_layers() {
    let registry = Registry::start();
    registry.push(std::path::Path::new(TEST_IMAGE), "latest", "pp/busybox:1");
    registry.push(std::path::Path::new(TEST_IMAGE), "latest", "pp/other:2");
    let node = Node::start();
    let root = node.root().display().to_string();
    // The node starts with busybox imported: remove it, so the layer is fetched.
    node.ok(&["image", "rm", "--root-dir", &root, "busybox"]);
    let (layer, layer_size) = test_layer();
    let blob = node
        .root()
        .join("images/blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    assert!(!blob.exists(), "the layer went with the image");

    let name = format!("{}/pp/busybox:1", registry.address);
    let out = pull(&node, &name);
    assert!(out.status.success(), "pull: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("pulled {name}")), "{said}");
    assert!(blob.exists(), "the layer is stored");
    assert!(images(&node).contains(&name), "{}", images(&node));
    let gets = registry.blob_gets();
    assert_eq!(gets, 2, "config and layer, once each:\n{}", registry.log());

    // Another image with the same layer: only its config is fetched.
    let other = format!("{}/pp/other:2", registry.address);
    let out = pull(&node, &other);
    assert!(out.status.success(), "pull: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    let fetched: u64 = said
        .split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("fetched bytes in {said:?}"));
    assert!(fetched < layer_size, "{fetched} bytes fetched: the layer is shared");
    assert_eq!(registry.blob_gets(), gets + 1, "only the config:\n{}", registry.log());

    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pulled}}\nspec:\n  containers:\n  - name: c\n    image: {name}\n    command: [\"sh\", \"-c\", \"echo from-the-registry; sleep 3600\"]\n"
    ));
    node.wait_pod("pulled", "running", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    peapod_tests::wait_for("the container's output", Duration::from_secs(30), || {
        node.peapod(&["logs", "pulled"])
            .stdout
            .windows(b"from-the-registry".len())
            .any(|w| w == b"from-the-registry")
            .then_some(())
    });
}

#[test]
fn an_unknown_tag_fails_with_the_registrys_answer() {
    let registry = Registry::start();
    registry.push(std::path::Path::new(TEST_IMAGE), "latest", "pp/busybox:1");
    let node = Node::start();
    let before = images(&node);
    let out = pull(&node, &format!("{}/pp/busybox:nope", registry.address));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pp/busybox:nope") && err.to_lowercase().contains("manifest unknown"),
        "{err}"
    );
    assert_eq!(images(&node), before);
}

#[test]
fn a_tampered_layer_is_refused_and_nothing_is_stored() {
    let registry = Registry::start();
    registry.push(std::path::Path::new(TEST_IMAGE), "latest", "pp/busybox:1");
    let (layer, _) = test_layer();
    // One byte changed in the registry's copy, the size unchanged.
    let path = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let node = Node::start();
    let root = node.root().display().to_string();
    node.ok(&["image", "rm", "--root-dir", &root, "busybox"]);
    let before = images(&node);
    let out = pull(&node, &format!("{}/pp/busybox:1", registry.address));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&layer), "the error names the layer: {err}");
    assert_eq!(images(&node), before);
    let store = node.root().join("images");
    assert!(!store
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"))
        .exists());
    let leftovers: Vec<_> = std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .chain(std::fs::read_dir(store.join("tmp")).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.contains("tmp") || n.contains("pull") || n.contains("blob"))
        .collect();
    assert!(leftovers.is_empty(), "half-stored: {leftovers:?}");
}
