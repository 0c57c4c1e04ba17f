//! Pulls from registries that ask more than an anonymous pull over plain
//! HTTP: TLS from a CA in `certs.d`, htpasswd basic auth, Bearer tokens from
//! an issuer, plain HTTP on a non-loopback address (the insecure list),
//! mirrors, and multi-platform indexes. Debian's docker-registry, run as
//! root.

use peapod_tests::layout::Layout;
use peapod_tests::registry::{Access, Options, Registry};
use peapod_tests::{container, Node, TEST_IMAGE};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn pull(node: &Node, args: &[&str]) -> std::process::Output {
    let root = node.root().display().to_string();
    let mut all = vec!["image", "pull", "--root-dir", root.as_str()];
    all.extend(args);
    node.peapod(&all)
}

fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "pull failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "pull succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn busybox() -> &'static Path {
    Path::new(TEST_IMAGE)
}

/// A Docker `config.json` giving `user:password` for `registry`.
fn auth_file(dir: &Path, registry: &str, user: &str, password: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("auth.json");
    std::fs::write(
        &path,
        json!({"auths": {format!("https://{registry}"): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path.display().to_string()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pp-regcfg-")
        .tempdir_in("/tmp")
        .unwrap()
}

#[test]
fn a_tls_registry_is_trusted_through_its_ca_in_certs_d() {
    let registry = Registry::start_with(Options {
        tls: true,
        ..Default::default()
    });
    registry.push(busybox(), "latest", "pp/tls:1");
    let node = Node::start();
    let name = format!("{}/pp/tls:1", registry.address);
    let certs = temp_dir();
    let certs_dir = certs.path().display().to_string();

    // A loopback registry is plain HTTP unless certs.d has a CA for it.
    let err = failed(&pull(&node, &["--registry-certs-dir", &certs_dir, &name]));
    assert!(err.contains(&name), "{err}");

    // Another CA than the one that signed the registry's certificate.
    let stranger = Registry::start_with(Options {
        tls: true,
        ..Default::default()
    });
    let host_dir = certs.path().join(&registry.address);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(stranger.ca(), host_dir.join("ca.crt")).unwrap();
    let err = failed(&pull(&node, &["--registry-certs-dir", &certs_dir, &name]));
    assert!(
        err.to_lowercase().contains("certificate"),
        "an untrusted certificate: {err}"
    );

    std::fs::copy(registry.ca(), host_dir.join("ca.crt")).unwrap();
    let said = succeeded(&pull(&node, &["--registry-certs-dir", &certs_dir, &name]));
    assert!(said.contains(&format!("pulled {name}")), "{said}");
    assert!(node.image_list().contains(&name));
}

#[test]
fn a_registry_that_demands_a_client_certificate_gets_the_one_in_certs_d() {
    let registry = Registry::start_with(Options {
        tls: true,
        client_ca: true,
        ..Default::default()
    });
    registry.push(busybox(), "latest", "pp/mtls:1");
    let node = Node::start();
    let name = format!("{}/pp/mtls:1", registry.address);
    let certs = temp_dir();
    let certs_dir = certs.path().display().to_string();
    let host_dir = certs.path().join(&registry.address);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(registry.ca(), host_dir.join("ca.crt")).unwrap();

    // The server is trusted, but the registry wants to know who asks.
    let err = failed(&pull(&node, &["--registry-certs-dir", &certs_dir, &name]));
    assert!(err.contains(&name) && err.contains("client certificate"), "{err}");
    assert!(!node.image_list().contains(&name));

    // A client certificate from a CA the registry does not trust.
    let stranger = Registry::start_with(Options {
        tls: true,
        client_ca: true,
        ..Default::default()
    });
    for file in ["client.cert", "client.key"] {
        std::fs::copy(stranger.client_certificate_dir().join(file), host_dir.join(file)).unwrap();
    }
    let err = failed(&pull(&node, &["--registry-certs-dir", &certs_dir, &name]));
    assert!(err.contains(&name) && err.contains("client certificate"), "{err}");
    assert!(!node.image_list().contains(&name));

    // The one it trusts: the pull goes through, and the image runs.
    for file in ["client.cert", "client.key"] {
        std::fs::copy(registry.client_certificate_dir().join(file), host_dir.join(file)).unwrap();
    }
    let said = succeeded(&pull(&node, &["--registry-certs-dir", &certs_dir, &name]));
    assert!(said.contains(&format!("pulled {name}")), "{said}");
    assert!(node.image_list().contains(&name));
    assert!(registry.blob_gets() > 0, "the layers came from the registry");

    // The daemon reads the same directory for the pods it starts.
    drop(node);
    let daemon = Node::start_with_args(&["--registry-certs-dir", &certs_dir], |_| {});
    daemon.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: mtls}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {name}\n    command: [sh, -c, 'echo from-mtls']\n"
    ));
    daemon.wait_pod("mtls", "Succeeded", Duration::from_secs(90), |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert!(daemon.logs("mtls", "c").contains("from-mtls"));
}

#[test]
fn basic_auth_credentials_come_from_the_daemons_auth_file() {
    let registry = Registry::start_with(Options {
        access: Access::Basic("alice".into(), "s3cret".into()),
        ..Default::default()
    });
    registry.push(busybox(), "latest", "pp/private:1");
    let config = temp_dir();
    let auth = auth_file(config.path(), &registry.address, "alice", "wrong");
    let node = Node::start_with_args(&["--registry-auth-file", &auth], |_| {});
    let name = format!("{}/pp/private:1", registry.address);
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: private}}\nspec:\n  containers:\n  - name: c\n    image: {name}\n    command: [\"sleep\", \"3600\"]\n"
    ));
    // Wrong credentials: the registry's 401, in the pod's event.
    peapod_tests::wait_for("a Failed event with the 401", Duration::from_secs(60), || {
        let events = node.ok(&["get", "events", "-o", "json"]);
        let events: Value = serde_json::from_str(&events).unwrap();
        events["items"]
            .as_array()?
            .iter()
            .find(|e| {
                e["reason"] == "Failed"
                    && e["involvedObject"]["name"] == "private"
                    && e["message"].as_str().is_some_and(|m| m.contains("401 Unauthorized"))
            })
            .cloned()
    });
    let p = node.pod("private").unwrap();
    let reason = container(&p, "c")["state"]["waiting"]["reason"].clone();
    assert!(reason == "ErrImagePull" || reason == "ImagePullBackOff", "{reason}");

    // The file is read at each pull: right credentials, and the pod runs.
    auth_file(config.path(), &registry.address, "alice", "s3cret");
    node.wait_pod("private", "running", Duration::from_secs(90), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    assert!(node.image_list().contains(&name));
}

#[test]
fn image_pull_secrets_of_the_pod_give_the_credentials() {
    let registry = Registry::start_with(Options {
        access: Access::Basic("bob".into(), "pull-pass".into()),
        ..Default::default()
    });
    registry.push(busybox(), "latest", "pp/team:1");
    // The node's own file has wrong credentials: the pod's secret comes first.
    let config = temp_dir();
    let auth = auth_file(config.path(), &registry.address, "bob", "wrong");
    let node = Node::start_with_args(&["--registry-auth-file", &auth], |_| {});
    let name = format!("{}/pp/team:1", registry.address);
    node.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", registry.address),
        "--docker-username=bob",
        "--docker-password=pull-pass",
    ]);
    let pod = |pod: &str, secrets: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  imagePullSecrets: {secrets}\n  containers:\n  - name: c\n    image: {name}\n    command: [\"sleep\", \"3600\"]\n"
        )
    };
    node.apply(&pod("without", "[]"));
    node.wait_pod("without", "ErrImagePull", Duration::from_secs(60), |p| {
        let reason = &container(p, "c")["state"]["waiting"]["reason"];
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    node.apply(&pod("with", "[{name: missing}, {name: regcred}]"));
    node.wait_pod("with", "running", Duration::from_secs(90), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    assert!(node.image_list().contains(&name));
}

#[test]
fn bearer_tokens_come_from_the_registrys_issuer() {
    let registry = Registry::start_with(Options {
        access: Access::Token("alice".into(), "s3cret".into()),
        ..Default::default()
    });
    registry.push(busybox(), "latest", "pp/tokens:1");
    let issuer = registry.issuer.as_ref().unwrap();
    let node = Node::start();
    let name = format!("{}/pp/tokens:1", registry.address);
    let config = temp_dir();

    // Anonymous: the registry's challenge, and no token for an unknown user.
    let err = failed(&pull(&node, &[&name]));
    assert!(err.contains(&name), "{err}");

    let auth = auth_file(config.path(), &registry.address, "alice", "wrong");
    let asked = issuer.requests();
    let err = failed(&pull(&node, &["--registry-auth-file", &auth, &name]));
    assert!(
        err.contains("invalid username or password"),
        "the issuer's answer: {err}"
    );
    assert!(issuer.requests() > asked, "the issuer was asked");

    let auth = auth_file(config.path(), &registry.address, "alice", "s3cret");
    let granted = issuer.granted();
    let said = succeeded(&pull(&node, &["--registry-auth-file", &auth, &name]));
    assert!(said.contains(&format!("pulled {name}")), "{said}");
    assert!(issuer.granted() > granted, "a token was issued");
    assert!(node.image_list().contains(&name));
}

/// The first global IPv4 address of this machine (not loopback).
fn global_address() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.contains(" pptest") && !l.contains(" peapod"))
        .find_map(|l| {
            let cidr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            Some(cidr.split('/').next()?.to_string())
        })
        .expect("this machine has a global IPv4 address")
}

#[test]
fn plain_http_off_loopback_needs_the_insecure_list() {
    let registry = Registry::start_with(Options {
        host: Some(global_address()),
        ..Default::default()
    });
    registry.push(busybox(), "latest", "pp/insecure:1");
    let node = Node::start();
    let name = format!("{}/pp/insecure:1", registry.address);
    let err = failed(&pull(&node, &[&name]));
    assert!(err.contains(&name) && err.contains("https://"), "tried over TLS: {err}");
    succeeded(&pull(&node, &["--insecure-registry", &registry.address, &name]));
    assert!(node.image_list().contains(&name));
}

#[test]
fn mirrors_are_tried_in_order_before_the_registry() {
    let origin = Registry::start();
    origin.push(busybox(), "latest", "pp/mirrored:1");
    let empty = Registry::start();
    let node = Node::start();

    // A mirror serves a registry that does not exist; the image keeps its name.
    let name = "registry.invalid:5000/pp/mirrored:1";
    let mirror = format!("registry.invalid:5000={}", origin.address);
    let said = succeeded(&pull(&node, &["--registry-mirror", &mirror, name]));
    assert!(said.contains(&format!("pulled {name}")), "{said}");
    assert!(node.image_list().contains(name), "{}", node.image_list());

    // A mirror without the image: the registry itself serves it.
    let name = format!("{}/pp/mirrored:1", origin.address);
    let mirror = format!("{}={}", origin.address, empty.address);
    succeeded(&pull(&node, &["--registry-mirror", &mirror, &name]));
    assert!(
        empty.log().contains("/v2/pp/mirrored/manifests/1"),
        "the mirror was asked first:\n{}",
        empty.log()
    );
    let err = failed(&pull(&node, &["--registry-mirror", "docker.io", &name]));
    assert!(err.contains("REGISTRY=MIRROR"), "{err}");
}

/// A layout holding an index `multi` of the busybox manifest (as amd64) and
/// a copy of it whose config says `arch`, and an index `foreign` of that copy
/// and one for s390x only.
fn multi_platform_layout(arch: &str) -> (Layout, String, String) {
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    let layout = Layout::copy_of(TEST_IMAGE);
    let amd64 = layout.first();
    let manifest = layout.read(amd64["digest"].as_str().unwrap());
    let other = |arch: &str| {
        let mut config = layout.read(manifest["config"]["digest"].as_str().unwrap());
        config["architecture"] = json!(arch);
        let config = layout.put(CONFIG, &config);
        let mut m = manifest.clone();
        m["config"] = config;
        let mut d = layout.put(MANIFEST, &m);
        d["platform"] = json!({"os": "linux", "architecture": arch});
        d
    };
    let mut host = amd64.clone();
    host.as_object_mut().unwrap().remove("annotations");
    host["mediaType"] = json!(MANIFEST);
    host["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let foreign = other(arch);
    let multi = layout.put(
        INDEX,
        &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [foreign, host]}),
    );
    layout.tag(&multi, "multi");
    let s390x = other("s390x");
    let only_foreign = layout.put(
        INDEX,
        &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [foreign, s390x]}),
    );
    layout.tag(&only_foreign, "foreign");
    let index = multi["digest"].as_str().unwrap().to_string();
    (layout, amd64["digest"].as_str().unwrap().to_string(), index)
}

#[test]
fn an_index_gives_the_amd64_manifest_or_a_clear_error() {
    let registry = Registry::start();
    let (layout, amd64, index) = multi_platform_layout("arm64");
    registry.push_all(&layout.path(), "multi", "pp/multi:1");
    registry.push_all(&layout.path(), "foreign", "pp/foreign:1");
    let node = Node::start();

    let name = format!("{}/pp/multi:1", registry.address);
    let said = succeeded(&pull(&node, &[&name]));
    assert!(said.contains(&amd64), "the amd64 manifest {amd64}: {said}");
    let listed = node.image_list();
    let line = listed
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        amd64.starts_with(line.split_whitespace().nth(1).unwrap()),
        "{line} vs {amd64}"
    );

    // By digest: the index's names the amd64 manifest, and a pod runs it.
    let by_digest = format!("{}/pp/multi@{index}", registry.address);
    let said = succeeded(&pull(&node, &[&by_digest]));
    assert!(
        said.contains(&format!("pulled {by_digest}")) && said.contains(&amd64),
        "{said}"
    );
    assert!(node.image_list().contains(&by_digest), "{}", node.image_list());
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pinned}}\nspec:\n  containers:\n  - name: c\n    image: {by_digest}\n    command: [sleep, \"3600\"]\n"
    ));
    let p = node.wait_pod("pinned", "running", Duration::from_secs(60), |p| {
        container(p, "c")["state"]["running"].is_object()
    });
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    let wrong = format!("{}/pp/multi@sha256:{}", registry.address, "0".repeat(64));
    let err = failed(&pull(&node, &[&wrong]));
    assert!(
        err.contains(&wrong) && err.to_lowercase().contains("manifest unknown"),
        "{err}"
    );

    let name = format!("{}/pp/foreign:1", registry.address);
    let before = node.stored_images();
    let err = failed(&pull(&node, &[&name]));
    assert!(
        err.contains(&name)
            && err.contains("no manifest for linux/amd64")
            && err.contains("linux/arm64")
            && err.contains("linux/s390x"),
        "{err}"
    );
    assert_eq!(node.stored_images(), before, "nothing stored");
}

#[test]
fn a_schema_1_image_is_refused_with_the_reason() {
    let registry = Registry::start_with(Options {
        schema1: true,
        ..Default::default()
    });
    registry.push_schema1(busybox(), "latest", "pp/old:1");
    let manifest = registry.raw_manifest("pp/old:1");
    assert_eq!(manifest["schemaVersion"], 1, "{manifest}");
    let node = Node::start();
    let before = node.stored_images();
    let name = format!("{}/pp/old:1", registry.address);
    let err = failed(&pull(&node, &[&name]));
    assert!(
        err.contains(&name) && err.contains("schema 1") && err.contains("not supported"),
        "{err}"
    );
    assert_eq!(node.stored_images(), before, "nothing stored");
}
