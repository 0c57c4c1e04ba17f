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
    node.ok(&["image", "rm", "--root-dir", &root, "busybox:1.35"]);
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
    assert_eq!(said.lines().count(), 1, "no progress bars off a terminal: {said:?}");
    assert!(blob.exists(), "the layer is stored");
    assert!(node.image_list().contains(&name), "{}", node.image_list());
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
    let before = node.stored_images();
    let out = pull(&node, &format!("{}/pp/busybox:nope", registry.address));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pp/busybox:nope") && err.to_lowercase().contains("manifest unknown"),
        "{err}"
    );
    assert_eq!(node.stored_images(), before);
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
    node.ok(&["image", "rm", "--root-dir", &root, "busybox:1.35"]);
    let before = node.stored_images();
    let out = pull(&node, &format!("{}/pp/busybox:1", registry.address));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&layer), "the error names the layer: {err}");
    assert_eq!(node.stored_images(), before);
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

/// The events' (reason, message) pairs.
fn events(node: &Node) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&node.ok(&["get", "events", "-o", "json"])).unwrap();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn pods_of_an_image_only_in_the_registry_start_after_one_pull() {
    let registry = Registry::start();
    registry.push(std::path::Path::new(TEST_IMAGE), "latest", "pp/app:1");
    let node = Node::start();
    let root = node.root().display().to_string();
    // Without the imported busybox, whose layer the pushed image shares.
    node.ok(&["image", "rm", "--root-dir", &root, "busybox:1.35"]);
    let image = format!("{}/pp/app:1", registry.address);
    let manifests: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: app{i}}}\nspec:\n  containers:\n  - name: c\n    image: {image}\n    command: [sleep, \"3600\"]\n"
            )
        })
        .collect();
    node.apply(&manifests.join("---\n"));
    for i in 0..10 {
        node.wait_pod(&format!("app{i}"), "running", Duration::from_secs(120), |p| {
            container(p, "c")["state"]["running"].is_object()
        });
    }
    let log = registry.log();
    let manifest_gets = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/pp/app/manifests/1"))
        .count();
    assert_eq!(manifest_gets, 1, "one pull for ten pods:\n{log}");
    assert_eq!(registry.blob_gets(), 2, "config and layer once:\n{log}");
    let events = events(&node);
    let pulling = format!("Pulling image \"{image}\"");
    assert_eq!(
        events.iter().filter(|(r, m)| r == "Pulling" && *m == pulling).count(),
        10,
        "{events:?}"
    );
    let pulled: Vec<&String> = events.iter().filter(|(r, _)| r == "Pulled").map(|(_, m)| m).collect();
    assert_eq!(pulled.len(), 10, "{pulled:?}");
    let prefix = format!("Successfully pulled image \"{image}\" in ");
    assert!(
        pulled.iter().all(|m| m.starts_with(&prefix)
            && m.contains(" including waiting). Image size: ")
            && m.ends_with(" bytes.")),
        "{pulled:?}"
    );
}

#[test]
fn an_unknown_tag_waits_in_err_image_pull_then_image_pull_back_off() {
    let registry = Registry::start();
    registry.push(std::path::Path::new(TEST_IMAGE), "latest", "pp/app:1");
    let node = Node::start();
    let image = format!("{}/pp/app:nope", registry.address);
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: nope}}\nspec:\n  containers:\n  - name: c\n    image: {image}\n    command: [sleep, \"3600\"]\n"
    ));
    let p = node.wait_pod("nope", "ErrImagePull", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    let message = container(&p, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.starts_with(&format!("Failed to pull image \"{image}\": ")) && message.contains("manifest unknown"),
        "{message}"
    );
    node.wait_pod("nope", "ImagePullBackOff", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let events = events(&node);
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Failed" && m.contains("manifest unknown")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(r, m)| r == "Failed" && m == "Error: ErrImagePull"),
        "{events:?}"
    );
}

#[test]
fn an_image_in_use_is_neither_removed_nor_pruned() {
    let node = Node::start();
    let root = node.root().display().to_string();
    // `spare:latest` is busybox under another name; `spare:v2` is another image (its config differs).
    let layout = peapod_tests::layout::Layout::copy_of(TEST_IMAGE);
    layout.variant("v2", |config| {
        config["config"]["Env"] = serde_json::json!(["PATH=/bin", "VARIANT=2"]);
    });
    import(&node, &layout, "spare");
    let listed = node.image_list();
    assert!(
        listed.contains("spare:latest") && listed.contains("spare:v2"),
        "{listed}"
    );
    let header = listed.lines().next().unwrap();
    assert!(header.contains("CREATED") && header.contains("AGE"), "{header}");

    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: user}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:1.35\n    imagePullPolicy: Never\n    command: [sh, -c, \"while cat /bin/busybox >/dev/null; do echo alive; sleep 1; done\"]\n",
    );
    node.wait_pod("user", "running", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    let out = node.peapod(&["image", "rm", "--root-dir", &root, "busybox:1.35"]);
    assert!(!out.status.success(), "removed an image in use");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("default/user (container c)") && err.contains("--force"),
        "{err}"
    );
    assert!(node.image_list().contains("busybox:1.35"));

    // Prune keeps what a container uses, whatever its name.
    let pruned = node.ok(&["image", "prune", "--root-dir", &root]);
    assert_eq!(pruned.trim(), "deleted docker.io/library/spare:v2", "{pruned}");
    let listed = node.image_list();
    assert!(
        listed.contains("busybox:1.35") && listed.contains("spare:latest"),
        "{listed}"
    );

    // --force takes the names (spare:latest is the same image); the data
    // stays while the container runs.
    node.ok(&["image", "rm", "--root-dir", &root, "--force", "busybox:1.35"]);
    node.ok(&["image", "rm", "--root-dir", &root, "-f", "spare"]);
    assert!(!node.image_list().contains("busybox"), "{}", node.image_list());
    let (layer, _) = test_layer();
    let unpacked = node
        .root()
        .join("images/layers/sha256")
        .join(layer.trim_start_matches("sha256:"));
    assert!(unpacked.is_dir(), "the running container's layer is kept");
    let alive = || node.logs("user", "c").matches("alive").count();
    let before = alive();
    peapod_tests::wait_for(
        "the container still reading its image's files",
        Duration::from_secs(30),
        || (alive() > before + 1).then_some(()),
    );
    let p = node.pod("user").unwrap();
    assert!(container(&p, "c")["state"]["running"].is_object(), "{p}");

    node.ok(&["delete", "pod", "user"]);
    peapod_tests::wait_for("the pod gone", Duration::from_secs(60), || {
        node.pod("user").is_none().then_some(())
    });
    node.ok(&["image", "prune", "--root-dir", &root]);
    assert!(!unpacked.exists(), "unused data is collected once nothing uses it");
}

/// `imageID` of container `c`.
fn image_id(p: &serde_json::Value) -> String {
    container(p, "c")["imageID"].as_str().unwrap_or("").to_string()
}

#[test]
fn always_asks_the_registry_before_each_start() {
    let mut registry = Some(Registry::start());
    let address = registry.as_ref().unwrap().address.clone();
    let layout = peapod_tests::layout::Layout::copy_of(TEST_IMAGE);
    let v2 = layout.variant("v2", |config| {
        config["config"]["Env"] = serde_json::json!(["PATH=/bin", "VARIANT=2"]);
    });
    let reg = registry.as_ref().unwrap();
    reg.push(&layout.path(), "latest", "pp/app:latest");
    let node = Node::start();
    // No tag: imagePullPolicy defaults to Always.
    let image = format!("{address}/pp/app");
    let start = |name: &str| {
        node.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {image}\n    command: [sleep, \"3600\"]\n"
        ));
    };
    let running = |name: &str| {
        node.wait_pod(name, "running", Duration::from_secs(60), |p| {
            container(p, "c")["state"]["running"].is_object()
        })
    };
    let requests = |reg: &Registry, method: &str| {
        reg.log()
            .lines()
            .filter(|l| l.contains(&format!("\"{method} /v2/pp/app/manifests/latest")))
            .count()
    };
    start("first");
    let first = running("first");
    assert_eq!(first["spec"]["containers"][0]["imagePullPolicy"], "Always");
    let first_id = image_id(&first);
    let (heads, gets) = (requests(reg, "HEAD"), requests(reg, "GET"));

    // The tag moves on: the next start pulls the new manifest.
    reg.push(&layout.path(), "v2", "pp/app:latest");
    start("second");
    let second = running("second");
    let second_id = image_id(&second);
    assert!(
        second_id.ends_with(v2["digest"].as_str().unwrap()),
        "{second_id} vs {v2}"
    );
    assert_ne!(first_id, second_id);
    assert!(requests(reg, "HEAD") > heads, "asked the registry:\n{}", reg.log());
    assert_eq!(
        requests(reg, "GET"),
        gets + 1,
        "one pull of the new manifest:\n{}",
        reg.log()
    );

    // Unchanged: asked, not fetched.
    let (heads, gets, blobs) = (requests(reg, "HEAD"), requests(reg, "GET"), reg.blob_gets());
    start("third");
    assert_eq!(image_id(&running("third")), second_id);
    assert_eq!(requests(reg, "HEAD"), heads + 1, "{}", reg.log());
    assert_eq!(
        (requests(reg, "GET"), reg.blob_gets()),
        (gets, blobs),
        "nothing fetched"
    );
    let pulled: Vec<String> = events(&node)
        .into_iter()
        .filter(|(r, m)| r == "Pulled" && m.contains(&image))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        pulled.len(),
        3,
        "each start says Pulled, as kubelet's Always does: {pulled:?}"
    );

    // The registry gone: Always fails though the image is stored, as with kubelet.
    registry.take();
    start("fourth");
    node.wait_pod("fourth", "ErrImagePull", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    let listed = node.image_list();
    assert!(listed.contains(&format!("{image}:latest")), "{listed}");
}

/// A node whose image store is a 64 MiB tmpfs, collecting images past
/// `high`% down to `low`%, checking every second.
fn node_with_small_image_fs(high: &str, low: &str, min_age: &str) -> Node {
    Node::start_with_args(
        &[
            "--image-gc-high-threshold",
            high,
            "--image-gc-low-threshold",
            low,
            "--image-minimum-gc-age",
            min_age,
            "--image-gc-period",
            "1s",
        ],
        |node| {
            let images = node.root().join("images");
            std::fs::remove_dir_all(&images).unwrap();
            std::fs::create_dir_all(&images).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
                .arg(&images)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount a tmpfs on {}", images.display());
            node.import_image("busybox:1.35");
        },
    )
}

/// Imports `gc:<tag>`: busybox and a 6 MiB layer of its own (12 MiB stored).
fn import_filler(node: &Node, tag: &str) {
    let layout = peapod_tests::layout::Layout::copy_of(TEST_IMAGE);
    layout.with_random_layer(tag, 6 << 20);
    import(node, &layout, "gc");
}

/// Imports every image of `layout` as `repository:<its tag>`.
fn import(node: &Node, layout: &peapod_tests::layout::Layout, repository: &str) {
    let (root, path) = (node.root().display().to_string(), layout.path().display().to_string());
    node.ok(&["image", "import", "--root-dir", &root, &path, "--tag", repository]);
}

fn pod_of(node: &Node, name: &str, image: &str) {
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {image}\n    command: [sleep, \"3600\"]\n"
    ));
    node.wait_pod(name, "running", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
}

#[test]
fn unused_images_go_past_the_threshold_least_recently_used_first() {
    let node = node_with_small_image_fs("55", "50", "0s");
    import_filler(&node, "a");
    pod_of(&node, "uses-a", "gc:a");
    import_filler(&node, "b");
    pod_of(&node, "used-b", "gc:b");
    // Seen in use by a pass, then unused.
    std::thread::sleep(Duration::from_secs(3));
    node.ok(&["delete", "pod", "used-b"]);
    peapod_tests::wait_for("used-b gone", Duration::from_secs(60), || {
        node.pod("used-b").is_none().then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let listed = node.image_list();
    assert!(
        listed.contains("gc:a") && listed.contains("gc:b"),
        "below the threshold nothing goes: {listed}"
    );

    // c takes usage past 55%: freeing 7 MiB takes busybox (never used, no
    // bytes of its own) and then b (used before c was ever seen); c stays.
    import_filler(&node, "c");
    peapod_tests::wait_for("gc:b collected", Duration::from_secs(60), || {
        (!node.image_list().contains("gc:b")).then_some(())
    });
    let listed = node.image_list();
    assert!(listed.contains("gc:a") && listed.contains("gc:c"), "{listed}");
    assert!(!listed.contains("busybox:1.35"), "{listed}");
    let p = node.pod("uses-a").unwrap();
    assert!(container(&p, "c")["state"]["running"].is_object(), "{p}");
    let events = events(&node);
    assert!(!events.iter().any(|(r, _)| r == "ImageGCFailed"), "{events:?}");
}

#[test]
fn images_younger_than_the_minimum_age_stay_and_the_node_says_so() {
    let node = node_with_small_image_fs("55", "50", "1h");
    for tag in ["a", "b", "c"] {
        import_filler(&node, tag);
    }
    let event = peapod_tests::wait_for("an ImageGCFailed event", Duration::from_secs(60), || {
        let v: serde_json::Value = serde_json::from_str(&node.ok(&["get", "events", "-o", "json"])).unwrap();
        v["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "ImageGCFailed")
            .cloned()
    });
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["involvedObject"]["kind"], "Node");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.starts_with("Failed to garbage collect required amount of images. Attempted to free ")
            && message.ends_with(", but only found 0 bytes eligible to free."),
        "{message}"
    );
    let listed = node.image_list();
    assert!(
        ["gc:a", "gc:b", "gc:c", "busybox:1.35"]
            .iter()
            .all(|i| listed.contains(i)),
        "{listed}"
    );
}

#[test]
fn a_zstd_image_is_pulled_and_runs() {
    let registry = Registry::start();
    registry.push_zstd(std::path::Path::new(TEST_IMAGE), "latest", "pp/zstd:1");
    let manifest = registry.raw_manifest("pp/zstd:1");
    let media_type = manifest["layers"][0]["mediaType"].as_str().unwrap_or("");
    assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar+zstd", "{manifest}");
    let node = Node::start();
    let root = node.root().display().to_string();
    node.ok(&["image", "rm", "--root-dir", &root, "busybox:1.35"]);
    let image = format!("{}/pp/zstd:1", registry.address);
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: zstd}}\nspec:\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", \"ls /bin/busybox && sleep 3600\"]\n"
    ));
    node.wait_pod("zstd", "running", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    assert!(node.logs("zstd", "c").contains("/bin/busybox"));
}

#[test]
fn a_pull_on_a_terminal_draws_a_bar_per_layer() {
    let registry = Registry::start();
    let layout = peapod_tests::layout::Layout::copy_of(TEST_IMAGE);
    layout.with_random_layer("big", 4 << 20);
    registry.push(&layout.path(), "big", "pp/bars:1");
    let node = Node::start();
    let root = node.root().display().to_string();
    // A pseudo-terminal for stdout, from util-linux's script(1).
    let command = format!(
        "{} image pull --root-dir {root} {}/pp/bars:1",
        peapod_tests::binary().display(),
        registry.address
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    let (layer, _) = test_layer();
    let busybox_layer = &layer.trim_start_matches("sha256:")[..12];
    // The busybox layer is stored already; the 4 MiB one is fetched.
    assert!(
        said.contains(busybox_layer) && said.contains("Already exists"),
        "{said}"
    );
    assert!(
        said.contains("Pull complete") && said.contains("total") && said.contains("MiB"),
        "{said}"
    );
    assert!(said.contains("pulled "), "{said}");
}
