//! Tests for the image store. They build OCI layouts by hand and must run as
//! root (whiteouts are device nodes, ownership is preserved) with `setfattr`
//! and `getfattr` from the `attr` package installed.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use super::oci::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use super::*;

const MTIME: u64 = 1_600_000_000;
const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(hex_of(&digest)), bytes).unwrap();
    digest
}

fn header(path: &str, kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h.set_cksum();
    h
}

/// A tar layer in the making.
struct LayerTar(Builder<Vec<u8>>);

impl LayerTar {
    fn new() -> Self {
        Self(Builder::new(Vec::new()))
    }

    fn dir(mut self, path: &str, mode: u32) -> Self {
        let h = header(path, EntryType::Directory, mode, 0);
        self.0.append(&h, std::io::empty()).unwrap();
        self
    }

    fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let h = header(path, EntryType::Regular, mode, data.len() as u64);
        self.0.append(&h, data).unwrap();
        self
    }

    fn owned_file(mut self, path: &str, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = header(path, EntryType::Regular, 0o640, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn link(mut self, kind: EntryType, path: &str, target: &str) -> Self {
        let mut h = header(path, kind, 0o777, 0);
        h.set_link_name(target).unwrap();
        h.set_cksum();
        self.0.append(&h, std::io::empty()).unwrap();
        self
    }

    /// An entry whose raw name bypasses tar-rs's own `..` check, as a
    /// malicious layer would.
    fn raw_file(mut self, raw_name: &str, data: &[u8]) -> Self {
        let mut h = Header::new_old();
        h.as_old_mut().name[..raw_name.len()].copy_from_slice(raw_name.as_bytes());
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    /// A directory entry with a raw name (tar-rs strips a leading `/`).
    fn raw_dir(mut self, raw_name: &str, mode: u32) -> Self {
        let mut h = header("x", EntryType::Directory, mode, 0);
        h.as_gnu_mut().unwrap().name = [0; 100];
        h.as_gnu_mut().unwrap().name[..raw_name.len()].copy_from_slice(raw_name.as_bytes());
        h.set_cksum();
        self.0.append(&h, std::io::empty()).unwrap();
        self
    }

    /// A GNU sparse entry of `real_size` bytes whose only data, `data` (one
    /// 512-byte block), sits at its very end: a block of archive for a file
    /// of any size.
    fn sparse(mut self, path: &str, real_size: u64, data: &[u8; 512]) -> Self {
        let mut h = header(path, EntryType::GNUSparse, 0o644, 512);
        let octal = |field: &mut [u8; 12], v: u64| {
            let text = format!("{v:011o}\0");
            field.copy_from_slice(text.as_bytes());
        };
        let gnu = h.as_gnu_mut().unwrap();
        octal(&mut gnu.realsize, real_size);
        octal(&mut gnu.sparse[0].offset, real_size - 512);
        octal(&mut gnu.sparse[0].numbytes, 512);
        h.set_cksum();
        self.0.append(&h, &data[..]).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The blobs of one image written into a layout.
struct TestImage {
    manifest_digest: String,
    manifest_size: u64,
    config_digest: String,
    layer_digests: Vec<String>,
    total_size: u64,
}

impl TestImage {
    fn descriptor(&self, ref_name: Option<&str>) -> Value {
        let mut d = json!({
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": self.manifest_digest,
            "size": self.manifest_size,
        });
        if let Some(name) = ref_name {
            d["annotations"] = json!({ ANNOTATION_REF_NAME: name });
        }
        d
    }
}

/// Writes config, layer and manifest blobs; `layers` are uncompressed tars
/// paired with whether to store them gzipped.
fn add_image(layout: &Path, layers: &[(Vec<u8>, bool)]) -> TestImage {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    let mut total = 0u64;
    for (tar, gz) in layers {
        let blob = if *gz { gzip(tar) } else { tar.clone() };
        let digest = write_blob(layout, &blob);
        layer_descs.push(json!({
            "mediaType": if *gz { GZIP_LAYER } else { TAR_LAYER },
            "digest": digest,
            "size": blob.len(),
        }));
        diff_ids.push(sha(tar));
        layer_digests.push(digest);
        total += blob.len() as u64;
    }
    let config = serde_json::to_vec(&json!({
        "architecture": host_platform().architecture().to_string(),
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/tool"],
            "Cmd": ["--help"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/etc",
            "User": "1000:1000",
            "StopSignal": "SIGINT",
            "Labels": null,
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let config_digest = write_blob(layout, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = write_blob(layout, &manifest);
    total += (config.len() + manifest.len()) as u64;
    TestImage {
        manifest_digest,
        manifest_size: manifest.len() as u64,
        config_digest,
        layer_digests,
        total_size: total,
    }
}

fn write_index(layout: &Path, manifests: Vec<Value>) {
    fs::write(layout.join("oci-layout"), super::oci::oci_layout()).unwrap();
    let index = json!({ "schemaVersion": 2, "manifests": manifests });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A layer exercising every entry kind the unpacker converts.
fn rich_layer() -> Vec<u8> {
    LayerTar::new()
        // umoci names the root entry "/"; it must be accepted as the root.
        .raw_dir("/", 0o755)
        .dir("etc/", 0o755)
        .owned_file("etc/hello", 1000, 1001, b"hello world\n")
        .link(EntryType::Symlink, "etc/link", "hello")
        .link(EntryType::Link, "etc/hard", "etc/hello")
        .file("etc/.wh.gone", 0o644, b"")
        .dir("opt/", 0o755)
        .file("opt/.wh..wh..opq", 0o644, b"")
        .file("opt/new", 0o644, b"new\n")
        .file("bin/tool", 0o4755, b"#!/bin/sh\n")
        .dir("bin/", 0o555)
        .finish()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn getfattr(path: &Path, name: &str) -> Option<String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn normalisation_table() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let ok: &[(&str, String)] = &[
        ("busybox", "docker.io/library/busybox:latest".into()),
        ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
        ("foo/bar", "docker.io/foo/bar:latest".into()),
        ("docker.io/busybox", "docker.io/library/busybox:latest".into()),
        (
            "index.docker.io/library/busybox:1",
            "docker.io/library/busybox:1".into(),
        ),
        ("localhost/x", "localhost/x:latest".into()),
        ("localhost:5000/x", "localhost:5000/x:latest".into()),
        ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1".into()),
        ("example.com/team/app:1.0", "example.com/team/app:1.0".into()),
        ("Registry.Example/x", "Registry.Example/x:latest".into()),
        ("[::1]:5000/x", "[::1]:5000/x:latest".into()),
        ("x:1.0", "docker.io/library/x:1.0".into()),
        ("foo/a.b_c__d-e--f", "docker.io/foo/a.b_c__d-e--f:latest".into()),
        ("my_app-2", "docker.io/library/my_app-2:latest".into()),
        (&format!("x@{digest}") as &str, format!("docker.io/library/x@{digest}")),
        (
            &format!("x:1@{digest}") as &str,
            format!("docker.io/library/x:1@{digest}"),
        ),
        // Docker reads this as repository `localhost` with tag 5000.
        ("localhost:5000", "docker.io/library/localhost:5000".into()),
    ];
    for (input, want) in ok {
        assert_eq!(&normalize_reference(input).unwrap(), want, "input {input:?}");
    }

    let bad = [
        "",
        "Busybox",
        "foo/Bar",
        "x:",
        "x:-bad",
        "x y",
        "a//b",
        "-x",
        "x-",
        "x@sha256:abc",
        "x@sha512:aaaa",
        &format!("x@sha256:{}", "A".repeat(64)),
        &"a".repeat(64),
        "exa_mple.com/x",
        "x:tag:tag",
        &format!("x:{}", "t".repeat(129)),
    ];
    for input in bad {
        match normalize_reference(input) {
            Err(ImageError::InvalidReference { reference, .. }) => assert_eq!(reference, input),
            other => panic!("{input:?} should be rejected, got {other:?}"),
        }
    }
    let message = normalize_reference("Busybox").unwrap_err().to_string();
    assert!(message.contains("\"Busybox\""), "{message}");
}

#[test]
fn plan_naming_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.json");
    let desc = |name: Option<&str>, n: u8| {
        let mut d = super::oci::descriptor(
            MediaType::ImageManifest,
            &format!("sha256:{}", format!("{n:x}").repeat(64)),
            1,
        )
        .unwrap();
        if let Some(name) = name {
            d.set_annotation(ANNOTATION_REF_NAME, name);
        }
        d
    };
    let index = |manifests| {
        let mut index = super::oci::empty_index();
        index.set_manifests(manifests);
        index
    };
    let names = |plan: Vec<(String, Vec<Descriptor>)>| plan.into_iter().map(|(r, _)| r).collect::<Vec<_>>();

    let single = index(vec![desc(Some("latest"), 1)]);
    assert_eq!(
        names(plan_import(&single, Some("busybox"), &path).unwrap()),
        ["docker.io/library/busybox:latest"]
    );
    assert_eq!(
        names(plan_import(&single, Some("busybox:1"), &path).unwrap()),
        ["docker.io/library/busybox:1"]
    );
    let err = plan_import(&single, None, &path).unwrap_err();
    assert!(matches!(err, ImageError::MissingName { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert!(matches!(
        plan_import(&single, Some(&format!("x@sha256:{}", "a".repeat(64))), &path),
        Err(ImageError::InvalidReference { .. })
    ));

    let unnamed = index(vec![desc(None, 1)]);
    assert_eq!(
        names(plan_import(&unnamed, Some("img"), &path).unwrap()),
        ["docker.io/library/img:latest"]
    );
    assert!(matches!(
        plan_import(&unnamed, None, &path),
        Err(ImageError::MissingName { .. })
    ));

    let full = index(vec![desc(Some("docker.io/library/alpine:3.19"), 1)]);
    assert_eq!(
        names(plan_import(&full, None, &path).unwrap()),
        ["docker.io/library/alpine:3.19"]
    );
    assert_eq!(
        names(plan_import(&full, Some("mine"), &path).unwrap()),
        ["docker.io/library/mine:3.19"]
    );

    let multi = index(vec![desc(Some("latest"), 1), desc(Some("v2"), 2), desc(None, 3)]);
    assert_eq!(
        names(plan_import(&multi, Some("repo"), &path).unwrap()),
        ["docker.io/library/repo:latest", "docker.io/library/repo:v2"]
    );
    assert!(matches!(
        plan_import(&multi, Some("repo:x"), &path),
        Err(ImageError::InvalidReference { .. })
    ));

    let mut containerd = desc(Some("latest"), 1);
    containerd.set_annotation(ANNOTATION_CONTAINERD_NAME, "docker.io/library/busybox:1.36");
    let docker_save = index(vec![containerd, desc(Some("quay.io/x/y:2"), 2)]);
    assert_eq!(
        names(plan_import(&docker_save, None, &path).unwrap()),
        ["docker.io/library/busybox:1.36", "quay.io/x/y:2"]
    );
}

#[test]
fn import_resolve_list_remove_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let root = store.root().to_path_buf();
    assert!(root.join("oci-layout").is_file());
    assert!(store.list().unwrap().is_empty());

    // Layout A: umoci-style bare tag, one gzipped layer.
    let layout_a = tmp.path().join("a");
    let image_a = add_image(&layout_a, &[(rich_layer(), true)]);
    write_index(&layout_a, vec![image_a.descriptor(Some("latest"))]);

    let err = store.import(&layout_a, None).unwrap_err();
    assert!(matches!(err, ImageError::MissingName { .. }), "{err:?}");
    assert!(err.to_string().contains("index.json"), "{err}");
    assert!(store.list().unwrap().is_empty());

    let refs = store.import(&layout_a, Some("testimg")).unwrap();
    assert_eq!(refs, ["docker.io/library/testimg:latest"]);

    let resolved = store.resolve("testimg").unwrap();
    assert_eq!(resolved.reference, "docker.io/library/testimg:latest");
    assert_eq!(resolved.manifest_digest, image_a.manifest_digest);
    assert_eq!(
        resolved.config,
        ImageConfig {
            entrypoint: vec!["/bin/tool".into()],
            cmd: vec!["--help".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: Some("/etc".into()),
            user: Some("1000:1000".into()),
            stop_signal: Some("SIGINT".into()),
        }
    );
    assert_eq!(
        resolved.layers,
        [root.join("layers/sha256").join(hex_of(&image_a.layer_digests[0]))]
    );

    // The unpacked layer, in overlayfs form.
    let layer = &resolved.layers[0];
    let root_meta = fs::metadata(layer).unwrap();
    assert_eq!(root_meta.mode() & 0o7777, 0o755);
    assert_eq!(root_meta.mtime() as u64, MTIME);
    let hello = layer.join("etc/hello");
    assert_eq!(fs::read(&hello).unwrap(), b"hello world\n");
    let meta = fs::metadata(&hello).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime() as u64, MTIME);
    assert_eq!(fs::read_link(layer.join("etc/link")).unwrap(), Path::new("hello"));
    assert_eq!(
        fs::symlink_metadata(layer.join("etc/link")).unwrap().mtime() as u64,
        MTIME
    );
    assert_eq!(fs::metadata(layer.join("etc/hard")).unwrap().ino(), meta.ino());
    let gone = fs::symlink_metadata(layer.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!layer.join("etc/.wh.gone").exists());
    assert!(!layer.join("opt/.wh..wh..opq").exists());
    assert_eq!(
        getfattr(&layer.join("opt"), "trusted.overlay.opaque").as_deref(),
        Some("y")
    );
    assert_eq!(getfattr(&layer.join("etc"), "trusted.overlay.opaque"), None);
    assert_eq!(fs::read(layer.join("opt/new")).unwrap(), b"new\n");
    assert_eq!(fs::metadata(layer.join("bin/tool")).unwrap().mode() & 0o7777, 0o4755);
    let bin = fs::metadata(layer.join("bin")).unwrap();
    assert_eq!(bin.mode() & 0o7777, 0o555);
    assert_eq!(bin.mtime() as u64, MTIME);
    assert_eq!(fs::metadata(layer.join("etc")).unwrap().mtime() as u64, MTIME);

    let list = store.list().unwrap();
    assert!(list[0].stored.is_some(), "{list:?}");
    assert_eq!(
        list,
        [ImageSummary {
            reference: "docker.io/library/testimg:latest".into(),
            digest: image_a.manifest_digest.clone(),
            size: image_a.total_size,
            created: None,
            stored: list[0].stored,
        }]
    );

    // Layout B shares A's layer (same blob) and adds an uncompressed one.
    let layout_b = tmp.path().join("b");
    let extra = LayerTar::new().file("usr/x", 0o755, b"x").finish();
    let image_b = add_image(&layout_b, &[(rich_layer(), true), (extra, false)]);
    assert_eq!(image_b.layer_digests[0], image_a.layer_digests[0]);
    write_index(&layout_b, vec![image_b.descriptor(Some("example.com/team/app:1.0"))]);
    assert_eq!(store.import(&layout_b, None).unwrap(), ["example.com/team/app:1.0"]);
    // Importing again is a no-op that still succeeds.
    assert_eq!(store.import(&layout_b, None).unwrap(), ["example.com/team/app:1.0"]);
    assert_eq!(store.list().unwrap().len(), 2);

    let by_id = store.resolve(&image_b.manifest_digest).unwrap();
    assert_eq!(by_id.reference, "example.com/team/app:1.0");
    assert_eq!(by_id.layers.len(), 2);
    assert_eq!(fs::read(by_id.layers[1].join("usr/x")).unwrap(), b"x");
    let pinned = format!("example.com/team/app@{}", image_b.manifest_digest);
    assert_eq!(store.resolve(&pinned).unwrap().reference, pinned);

    // Removing A keeps the shared layer but drops A's own blobs.
    store.remove("docker.io/library/testimg:latest").unwrap();
    let blobs = root.join("blobs/sha256");
    let layers = root.join("layers/sha256");
    assert!(!blobs.join(hex_of(&image_a.manifest_digest)).exists());
    assert!(!blobs.join(hex_of(&image_a.config_digest)).exists());
    assert!(blobs.join(hex_of(&image_a.layer_digests[0])).exists());
    assert!(layers.join(hex_of(&image_a.layer_digests[0])).is_dir());
    assert!(matches!(store.resolve("testimg"), Err(ImageError::NotFound { reference }) if reference == "testimg"));
    assert!(matches!(store.remove("testimg"), Err(ImageError::NotFound { .. })));

    store.remove("example.com/team/app:1.0").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(entries(&blobs), Vec::<String>::new());
    assert_eq!(entries(&layers), Vec::<String>::new());
    assert_eq!(entries(&root.join("tmp")), Vec::<String>::new());

    // The index stays a valid OCI index.
    let index: Value = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], json!([]));
}

#[test]
fn stored_index_names_full_references() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layout = tmp.path().join("l");
    let image = add_image(&layout, &[(LayerTar::new().file("f", 0o644, b"f").finish(), true)]);
    write_index(&layout, vec![image.descriptor(Some("latest"))]);
    store.import(&layout, Some("localhost:5000/team/tool")).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["mediaType"], MEDIA_TYPE_OCI_INDEX);
    assert_eq!(index["manifests"][0]["digest"], json!(image.manifest_digest));
    assert_eq!(index["manifests"][0]["mediaType"], MEDIA_TYPE_OCI_MANIFEST);
    assert_eq!(
        index["manifests"][0]["annotations"][ANNOTATION_REF_NAME],
        "localhost:5000/team/tool:latest"
    );
}

#[test]
fn digest_mismatch_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layout = tmp.path().join("l");
    let image = add_image(&layout, &[(rich_layer(), true)]);
    write_index(&layout, vec![image.descriptor(Some("latest"))]);

    // Same size, different content.
    let blob = layout.join("blobs/sha256").join(hex_of(&image.layer_digests[0]));
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();

    match store.import(&layout, Some("bad")) {
        Err(ImageError::DigestMismatch { digest, .. }) => {
            assert_eq!(digest, image.layer_digests[0])
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    let message = store.import(&layout, Some("bad")).unwrap_err().to_string();
    assert!(message.contains(&image.layer_digests[0]), "{message}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(entries(&store.root().join("layers/sha256")), Vec::<String>::new());

    // A corrupt manifest is caught before anything is written.
    let layout2 = tmp.path().join("l2");
    let image2 = add_image(&layout2, &[(LayerTar::new().file("a", 0o644, b"a").finish(), false)]);
    write_index(&layout2, vec![image2.descriptor(Some("latest"))]);
    let manifest = layout2.join("blobs/sha256").join(hex_of(&image2.manifest_digest));
    let mut bytes = fs::read(&manifest).unwrap();
    bytes[0] = b' ';
    fs::write(&manifest, &bytes).unwrap();
    assert!(matches!(
        store.import(&layout2, Some("bad2")),
        Err(ImageError::DigestMismatch { digest, .. }) if digest == image2.manifest_digest
    ));
}

#[test]
fn path_traversal_entries_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layers_dir = store.root().join("layers/sha256");

    for (raw, tar) in [
        (
            "../evil",
            LayerTar::new()
                .file("ok", 0o644, b"ok")
                .raw_file("../evil", b"evil")
                .finish(),
        ),
        (
            "a/../../evil",
            LayerTar::new().raw_file("a/../../evil", b"evil").finish(),
        ),
        ("/evil", LayerTar::new().raw_file("/evil", b"evil").finish()),
    ] {
        let layout = tmp.path().join(format!("layout-{}", raw.len()));
        let image = add_image(&layout, &[(tar, false)]);
        write_index(&layout, vec![image.descriptor(Some("latest"))]);
        match store.import(&layout, Some("evil")) {
            Err(err @ ImageError::LayerEntry { .. }) => {
                let ImageError::LayerEntry { entry, digest, .. } = &err else {
                    unreachable!()
                };
                assert_eq!(entry, raw);
                assert_eq!(digest, &image.layer_digests[0]);
                assert!(err.to_string().contains(raw), "{err}");
            }
            other => panic!("{raw}: expected a layer entry error, got {other:?}"),
        }
        assert_eq!(
            entries(&layers_dir),
            Vec::<String>::new(),
            "{raw}: temporary left behind"
        );
    }
    assert!(!store.root().join("layers/evil").exists());
    assert!(!store.root().join("evil").exists());
    assert!(!Path::new("/evil").exists());

    // Writing through a symlink planted earlier in the same layer.
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let layout = tmp.path().join("symlink-escape");
    let tar = LayerTar::new()
        .link(EntryType::Symlink, "escape", outside.to_str().unwrap())
        .file("escape/pwned", 0o644, b"pwned")
        .finish();
    let image = add_image(&layout, &[(tar, false)]);
    write_index(&layout, vec![image.descriptor(Some("latest"))]);
    match store.import(&layout, Some("evil")) {
        Err(ImageError::LayerEntry { entry, .. }) => assert_eq!(entry, "escape/pwned"),
        other => panic!("expected a layer entry error, got {other:?}"),
    }
    assert!(!outside.join("pwned").exists());

    // Hard links must point inside the layer too.
    let layout = tmp.path().join("hardlink-escape");
    let tar = LayerTar::new().raw_file("ok", b"ok").finish();
    let mut builder = Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_path("steal").unwrap();
    h.set_entry_type(EntryType::Link);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.as_gnu_mut().unwrap().linkname[..9].copy_from_slice(b"../passwd");
    h.set_size(0);
    h.set_cksum();
    builder.append(&h, std::io::empty()).unwrap();
    let mut combined = tar[..tar.len() - 1024].to_vec();
    combined.extend(builder.into_inner().unwrap());
    let image = add_image(&layout, &[(combined, false)]);
    write_index(&layout, vec![image.descriptor(Some("latest"))]);
    match store.import(&layout, Some("evil")) {
        Err(ImageError::LayerEntry { entry, reason, .. }) => assert_eq!(entry, "steal", "{reason}"),
        other => panic!("expected a layer entry error, got {other:?}"),
    }
}

#[test]
fn archive_with_nested_index_picks_host_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layout = tmp.path().join("layout");
    let image = add_image(
        &layout,
        &[(LayerTar::new().file("bin/sh", 0o755, b"sh").finish(), true)],
    );
    let host = host_platform();
    let other_arch = if host.architecture().to_string() == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    // The foreign manifest's blob is absent: choosing it would fail.
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": format!("sha256:{}", "b".repeat(64)),
                "size": 100,
                "platform": { "architecture": other_arch, "os": "linux" },
            },
            {
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": image.manifest_size,
                "platform": { "architecture": host.architecture().to_string(), "os": "linux" },
            },
        ],
    }))
    .unwrap();
    let nested_digest = write_blob(&layout, &nested);
    write_index(
        &layout,
        vec![json!({
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "digest": nested_digest,
            "size": nested.len(),
            "annotations": { ANNOTATION_REF_NAME: "docker.io/library/multi:3" },
        })],
    );

    // A gzipped oci-archive whose layout sits in a top-level directory.
    let archive = tmp.path().join("multi.tar.gz");
    let mut builder = Builder::new(GzEncoder::new(
        fs::File::create(&archive).unwrap(),
        flate2::Compression::default(),
    ));
    builder.append_dir_all("layout", &layout).unwrap();
    builder.into_inner().unwrap().finish().unwrap();

    assert_eq!(store.import(&archive, None).unwrap(), ["docker.io/library/multi:3"]);
    let resolved = store.resolve("multi:3").unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest_digest);
    assert_eq!(fs::read(resolved.layers[0].join("bin/sh")).unwrap(), b"sh");
    // The staging copy of the archive is gone and the index blob was not kept.
    assert_eq!(entries(&store.root().join("tmp")), Vec::<String>::new());
    assert!(!store.root().join("blobs/sha256").join(hex_of(&nested_digest)).exists());

    // An index with only foreign platforms is refused by name.
    let foreign = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": format!("sha256:{}", "c".repeat(64)),
            "size": 1,
            "platform": { "architecture": other_arch, "os": "linux" },
        }],
    }))
    .unwrap();
    let foreign_digest = write_blob(&layout, &foreign);
    write_index(
        &layout,
        vec![
            json!({ "mediaType": MEDIA_TYPE_OCI_INDEX, "digest": foreign_digest, "size": foreign.len(), "annotations": { ANNOTATION_REF_NAME: "foreign:1" } }),
        ],
    );
    match store.import(&layout, None) {
        Err(ImageError::NoMatchingPlatform { digest, .. }) => assert_eq!(digest, foreign_digest),
        other => panic!("expected no matching platform, got {other:?}"),
    }
}

#[test]
fn open_removes_stale_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    let stale: Vec<PathBuf> = vec![
        store.root().join("blobs/sha256/.tmp-blob-1"),
        store.root().join(".tmp-index.json-1"),
        store.root().join("tmp/import-leftover"),
    ];
    for path in &stale {
        fs::write(path, b"x").unwrap();
    }
    fs::create_dir(store.root().join("layers/sha256/.tmp-abc")).unwrap();
    fs::set_permissions(
        store.root().join("layers/sha256/.tmp-abc"),
        fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    ImageStore::open(&root).unwrap();
    for path in &stale {
        assert!(!path.exists(), "{} survived", path.display());
    }
    assert!(!store.root().join("layers/sha256/.tmp-abc").exists());
}

fn one_layer_layout(dir: &Path, tar: Vec<u8>, gz: bool) -> TestImage {
    let image = add_image(dir, &[(tar, gz)]);
    write_index(dir, vec![image.descriptor(Some("latest"))]);
    image
}

#[test]
fn a_blob_that_is_not_a_regular_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layout = tmp.path().join("l");
    let image = one_layer_layout(&layout, LayerTar::new().file("a", 0o644, b"a").finish(), false);
    let blob = layout.join("blobs/sha256").join(hex_of(&image.layer_digests[0]));
    // A source that never ends: copied forever before the size check, once.
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    let e = store.import(&layout, Some("zero")).unwrap_err().to_string();
    assert!(e.contains("is not a regular file"), "{e}");
    // A FIFO nobody writes to: refused, not waited on.
    fs::remove_file(&blob).unwrap();
    nix::unistd::mkfifo(&blob, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = store.import(&layout, Some("fifo")).unwrap_err().to_string();
    assert!(e.contains("is not a regular file"), "{e}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_blob_is_read_no_further_than_its_size_and_the_blob_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let layout = tmp.path().join("l");
    let tar = LayerTar::new().file("a", 0o644, b"a").finish();
    let image = one_layer_layout(&layout, tar.clone(), false);
    // Over the limit: refused from the descriptor, before any copy.
    let small = store.clone().with_limits(ImportLimits {
        max_blob_bytes: 100,
        ..ImportLimits::default()
    });
    let e = small.import(&layout, Some("big")).unwrap_err().to_string();
    assert!(e.contains("--max-blob-size"), "{e}");
    // Longer than declared: one byte more is read, not the rest.
    let blob = layout.join("blobs/sha256").join(hex_of(&image.layer_digests[0]));
    let mut longer = tar.clone();
    longer.extend(std::iter::repeat_n(0u8, 10 << 20));
    fs::write(&blob, &longer).unwrap();
    match store.import(&layout, Some("long")) {
        Err(ImageError::SizeMismatch { expected, actual, .. }) => assert_eq!(actual, expected + 1),
        other => panic!("expected a size mismatch, got {other:?}"),
    }
}

#[test]
fn a_layer_that_expands_past_the_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let limited = store.clone().with_limits(ImportLimits {
        max_layer_bytes: 1 << 20,
        ..ImportLimits::default()
    });
    // 8 MB of zeros gzip to a few KB.
    let layout = tmp.path().join("bomb");
    one_layer_layout(
        &layout,
        LayerTar::new().file("zeros", 0o644, &vec![0u8; 8 << 20]).finish(),
        true,
    );
    let e = limited.import(&layout, Some("bomb")).unwrap_err().to_string();
    assert!(e.contains("--max-layer-size"), "{e}");
    assert!(limited.list().unwrap().is_empty());
    assert_eq!(entries(&store.root().join("layers/sha256")), Vec::<String>::new());
    // The same image within the default limits imports.
    store.import(&layout, Some("bomb")).unwrap();
}

#[test]
fn sparse_entries_count_in_full_and_stay_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let mut block = [b'x'; 512];
    block[511] = b'\n';
    let layout = tmp.path().join("sparse");
    let tar = LayerTar::new().sparse("big", 1 << 30, &block).finish();
    assert!(tar.len() < 8192, "a GiB file in {} bytes of archive", tar.len());
    let image = one_layer_layout(&layout, tar, false);
    // A GiB file in a few KB of archive is over a 100 MiB limit.
    let limited = store.clone().with_limits(ImportLimits {
        max_layer_bytes: 100 << 20,
        ..ImportLimits::default()
    });
    let e = limited.import(&layout, Some("sparse")).unwrap_err().to_string();
    assert!(e.contains("--max-layer-size"), "{e}");
    // Within the limits it unpacks to a GiB file that takes almost no disk.
    store.import(&layout, Some("sparse")).unwrap();
    let file = store.layer_dir(&image.layer_digests[0]).unwrap().join("big");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    assert!(meta.blocks() * 512 < 1 << 20, "{} bytes allocated", meta.blocks() * 512);
    let bytes = fs::read(&file).unwrap();
    assert_eq!(&bytes[bytes.len() - 512..], &block[..]);
    assert!(bytes[..bytes.len() - 512].iter().all(|b| *b == 0));
}

#[test]
fn device_nodes_in_a_layer_are_not_made() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let device = |mut t: LayerTar, path: &str, kind: EntryType, major: u32, minor: u32| {
        let mut h = header(path, kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        t.0.append(&h, std::io::empty()).unwrap();
        t
    };
    // The host's first disk and /dev/mem, world-writable, next to a FIFO and a file.
    let tar = LayerTar::new().dir("dev", 0o755);
    let tar = device(tar, "dev/sda", EntryType::Block, 8, 0);
    let tar = device(tar, "dev/mem", EntryType::Char, 1, 1);
    let tar = device(tar, "run/pipe", EntryType::Fifo, 0, 0);
    let tar = tar.file("etc/ok", 0o644, b"ok").finish();
    let layout = tmp.path().join("devices");
    let image = one_layer_layout(&layout, tar, false);
    store.import(&layout, Some("devices")).unwrap();
    let dir = store.layer_dir(&image.layer_digests[0]).unwrap();
    assert!(
        fs::symlink_metadata(dir.join("dev/sda")).is_err(),
        "a block device was made"
    );
    assert!(
        fs::symlink_metadata(dir.join("dev/mem")).is_err(),
        "a char device was made"
    );
    assert!(fs::symlink_metadata(dir.join("run/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(dir.join("etc/ok")).unwrap(), b"ok");
}

/// Image configurations are read as oci-spec's `ImageConfiguration`: what
/// the image spec requires must be there, and the error names the file.
#[test]
fn a_config_without_what_the_image_spec_requires_is_refused_by_path() {
    let path = Path::new("/layout/blobs/sha256/cfg");
    let good = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Env": null, "Entrypoint": ["/x"], "WorkingDir": ""}});
    let config: ImageConfiguration = parse_json(&serde_json::to_vec(&good).unwrap(), path).unwrap();
    let image = image_config(config);
    assert_eq!(image.entrypoint, ["/x"]);
    assert!(image.env.is_empty(), "null reads as empty");
    assert_eq!(image.working_dir, None, "empty reads as unset");
    for missing in ["architecture", "os", "rootfs"] {
        let mut bad = good.clone();
        bad.as_object_mut().unwrap().remove(missing);
        let e = parse_json::<ImageConfiguration>(&serde_json::to_vec(&bad).unwrap(), path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/layout/blobs/sha256/cfg") && e.contains(missing), "{e}");
    }
}
