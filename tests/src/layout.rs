//! OCI layouts built by hand from the busybox test layout: variants of its
//! image and indexes over them, for imports and for skopeo to push whole.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// `sha256:<hex>` of `data`.
pub fn blob_digest(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    format!(
        "sha256:{}",
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A copy of the busybox test layout that blobs can be added to.
pub struct Layout {
    pub dir: tempfile::TempDir,
}

impl Layout {
    pub fn copy_of(source: &str) -> Layout {
        let dir = tempfile::Builder::new()
            .prefix("pp-layout-")
            .tempdir_in("/tmp")
            .unwrap();
        let ok = std::process::Command::new("cp")
            .args(["-a", &format!("{source}/."), &dir.path().display().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "copy {source}");
        Layout { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub fn read(&self, digest: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.blob(digest)).unwrap()).unwrap()
    }

    /// Stores `doc` as a blob; returns its descriptor with `media_type`.
    pub fn put(&self, media_type: &str, doc: &Value) -> Value {
        let bytes = serde_json::to_vec(doc).unwrap();
        let digest = blob_digest(&bytes);
        std::fs::write(self.blob(&digest), &bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// The descriptor the layout's `index.json` has first.
    pub fn first(&self) -> Value {
        let index: Value = serde_json::from_slice(&std::fs::read(self.dir.path().join("index.json")).unwrap()).unwrap();
        index["manifests"][0].clone()
    }

    /// Adds `descriptor` to `index.json` as `tag`.
    pub fn tag(&self, descriptor: &Value, tag: &str) {
        let path = self.dir.path().join("index.json");
        let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut d = descriptor.clone();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        index["manifests"].as_array_mut().unwrap().push(d);
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// A manifest like the first one but with its config edited by `edit`,
    /// tagged `tag`; returns its descriptor.
    pub fn variant(&self, tag: &str, edit: impl FnOnce(&mut Value)) -> Value {
        self.derive(tag, |_, config| edit(config))
    }

    /// A manifest like the first one with one more layer on top: a file
    /// `/filler` of `bytes` random bytes (uncompressed, so it takes its size
    /// in the store twice: blob and unpacked), tagged `tag`.
    pub fn with_random_layer(&self, tag: &str, bytes: usize) -> Value {
        self.with_random_layers(tag, &[bytes])
    }

    /// Like [`Layout::with_random_layer`], one layer per entry of `sizes`
    /// (files `/filler0`, `/filler1`, …).
    pub fn with_random_layers(&self, tag: &str, sizes: &[usize]) -> Value {
        let rng = ring::rand::SystemRandom::new();
        let mut layers = Vec::new();
        for (i, bytes) in sizes.iter().enumerate() {
            let work = tempfile::Builder::new().prefix("pp-layer-").tempdir_in("/tmp").unwrap();
            let mut data = vec![0u8; *bytes];
            ring::rand::SecureRandom::fill(&rng, &mut data).unwrap();
            let file = if sizes.len() == 1 {
                "filler".to_string()
            } else {
                format!("filler{i}")
            };
            std::fs::write(work.path().join(&file), &data).unwrap();
            layers.push(self.layer(work.path(), &file));
        }
        self.with_layers(tag, layers)
    }

    /// A manifest like the first one with one more layer on top: the tree
    /// `build` makes in an empty directory (symlinks kept as they are),
    /// tagged `tag`.
    pub fn with_tree(&self, tag: &str, build: impl FnOnce(&Path)) -> Value {
        let work = tempfile::Builder::new().prefix("pp-layer-").tempdir_in("/tmp").unwrap();
        build(work.path());
        let layer = self.layer(work.path(), ".");
        self.with_layers(tag, vec![layer])
    }

    /// `what` under `dir` as an uncompressed layer blob: its digest and size.
    fn layer(&self, dir: &Path, what: &str) -> (String, usize) {
        let out = std::process::Command::new("tar")
            .args(["-cf", "-", "--owner=0", "--group=0", "-C"])
            .arg(dir)
            .arg(what)
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
        let tar = out.stdout;
        let digest = blob_digest(&tar);
        std::fs::write(self.blob(&digest), &tar).unwrap();
        (digest, tar.len())
    }

    /// The first manifest with `layers` (digest, size) on top, tagged `tag`.
    fn with_layers(&self, tag: &str, layers: Vec<(String, usize)>) -> Value {
        self.derive(tag, |manifest, config| {
            for (digest, size) in layers {
                config["rootfs"]["diff_ids"]
                    .as_array_mut()
                    .unwrap()
                    .push(Value::from(digest.clone()));
                manifest["layers"].as_array_mut().unwrap().push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": size,
                }));
            }
        })
    }

    /// A manifest derived from the first one by `edit` (of the manifest and
    /// its config; the config's descriptor is set after), tagged `tag`.
    fn derive(&self, tag: &str, edit: impl FnOnce(&mut Value, &mut Value)) -> Value {
        let first = self.first();
        let mut manifest = self.read(first["digest"].as_str().unwrap());
        let mut config = self.read(manifest["config"]["digest"].as_str().unwrap());
        edit(&mut manifest, &mut config);
        manifest["config"] = self.put(manifest["config"]["mediaType"].as_str().unwrap(), &config);
        let media_type = first["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json");
        let descriptor = self.put(media_type, &manifest);
        self.tag(&descriptor, tag);
        descriptor
    }
}
