//! The OCI image-spec documents the store reads and writes, as `oci-spec`'s
//! types (the ones runc's and youki's Rust tools use): manifests, indexes
//! (Docker's schema-2 manifests and manifest lists read through the same
//! types), configurations, descriptors and `oci-layout`. A document they
//! would refuse (a descriptor without `mediaType`, a malformed digest, an
//! index without `manifests`) is refused with its file and JSON position.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

pub(crate) use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest as Manifest, MediaType, Platform};

pub(crate) const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Annotation holding an image's name in an OCI layout's `index.json`.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd and `docker save` add with the full image name when
/// `ref.name` holds only the tag.
pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The digest a registry gave for the name when it was pulled (an index's,
/// when the stored manifest was picked from one), so a later `Always` start
/// can tell whether the registry names something else now.
pub(crate) const ANNOTATION_SOURCE_DIGEST: &str = "io.peapod.image.source-digest";

/// Contents of the `oci-layout` marker file, from `oci-spec`'s type.
pub(crate) fn oci_layout() -> Vec<u8> {
    let layout = oci_spec::image::OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .expect("a version is all an oci-layout needs");
    serde_json::to_vec(&layout).unwrap_or_default()
}

/// An empty index as the store writes one.
pub(crate) fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index
}

/// What the store reads of a descriptor beyond `oci-spec`'s accessors.
pub(crate) trait DescriptorExt {
    /// The digest as written (`sha256:<hex>`).
    fn digest_str(&self) -> &str;
    fn annotation(&self, key: &str) -> Option<&str>;
    fn set_annotation(&mut self, key: &str, value: &str);
    /// The `org.opencontainers.image.ref.name` annotation, if any.
    fn ref_name(&self) -> Option<&str> {
        self.annotation(ANNOTATION_REF_NAME)
    }
}

impl DescriptorExt for Descriptor {
    fn digest_str(&self) -> &str {
        self.digest().as_ref()
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations().as_ref()?.get(key).map(String::as_str)
    }

    fn set_annotation(&mut self, key: &str, value: &str) {
        let mut annotations = self.annotations().clone().unwrap_or_default();
        annotations.insert(key.to_string(), value.to_string());
        self.set_annotations(Some(annotations));
    }
}

/// Edits an index's manifest list in place (`oci-spec` gives only a getter
/// and a setter).
pub(crate) fn edit_manifests<R>(index: &mut ImageIndex, edit: impl FnOnce(&mut Vec<Descriptor>) -> R) -> R {
    let mut manifests = index.manifests().clone();
    let out = edit(&mut manifests);
    index.set_manifests(manifests);
    out
}

/// A descriptor of `size` bytes at `digest`; the error names the digest.
pub(crate) fn descriptor(media_type: MediaType, digest: &str, size: u64) -> Result<Descriptor, String> {
    let digest = Digest::try_from(digest).map_err(|e| format!("{digest:?} is not a valid digest: {e}"))?;
    Ok(Descriptor::new(media_type, size, digest))
}

/// Only `annotations` set to `key: value`.
pub(crate) fn only_annotation(d: &mut Descriptor, key: &str, value: &str) {
    d.set_annotations(Some(HashMap::from([(key.to_string(), value.to_string())])));
}

/// A platform as `os/architecture[/variant]`.
pub(crate) fn platform_name(p: &Platform) -> String {
    match p.variant() {
        Some(variant) => format!("{}/{}/{variant}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// A manifest-or-index blob, read as the `oci-spec` type its content says.
#[derive(Debug)]
pub(crate) enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<Manifest>),
}

/// Why a blob is not a [`Document`].
#[derive(Debug)]
pub(crate) enum DocumentError {
    /// Not JSON, or not what its type requires; the error has the position.
    Json(serde_json::Error),
    /// A Docker schema 1 manifest.
    Schema1,
    /// JSON with neither `manifests` nor `config`.
    Neither,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(e) => write!(f, "{e}"),
            Self::Schema1 => f.write_str("a Docker schema 1 manifest, which is not supported"),
            Self::Neither => f.write_str("neither an image manifest nor an index"),
        }
    }
}

/// Reads a manifest or an index. Descriptors do not always say which (an
/// index may omit its own `mediaType`), so the fields present decide, and
/// the blob is then read as that type.
pub(crate) fn parse_document(bytes: &[u8]) -> Result<Document, DocumentError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        #[serde(default)]
        schema_version: Option<u64>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<IgnoredAny>,
        #[serde(default)]
        config: Option<IgnoredAny>,
    }
    let shape: Shape = serde_json::from_slice(bytes).map_err(DocumentError::Json)?;
    if shape.schema_version == Some(1) {
        return Err(DocumentError::Schema1);
    }
    let declared = shape.media_type.as_deref();
    let index_type = matches!(declared, Some(MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST));
    let manifest_type = matches!(declared, Some(MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST));
    if index_type || (shape.manifests.is_some() && shape.config.is_none() && !manifest_type) {
        serde_json::from_slice(bytes)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(DocumentError::Json)
    } else if shape.config.is_some() || manifest_type {
        serde_json::from_slice(bytes)
            .map(Document::Manifest)
            .map_err(DocumentError::Json)
    } else {
        Err(DocumentError::Neither)
    }
}

/// How a layer blob is compressed, derived from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Maps a layer media type to its compression; `None` for types the store
/// cannot unpack (encrypted, foreign URLs without content).
pub(crate) fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The host's platform in OCI (Go) spelling, used to pick a manifest out of a
/// multi-platform index.
pub(crate) fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    let mut platform = Platform::default();
    platform.set_architecture(architecture.into());
    platform.set_os("linux".into());
    platform
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn documents_are_read_as_the_type_their_fields_say() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": digest('a'), "size": 3},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest('b'), "size": 4}],
        });
        match parse_document(manifest.to_string().as_bytes()).unwrap() {
            Document::Manifest(m) => {
                assert_eq!(m.config().digest_str(), digest('a'));
                assert_eq!(m.layers()[0].size(), 4);
            }
            other => panic!("{other:?}"),
        }
        // An index that leaves its own mediaType out, with a Docker-list platform.
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest('c'), "size": 5,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}],
        });
        match parse_document(index.to_string().as_bytes()).unwrap() {
            Document::Index(i) => {
                let platform = i.manifests()[0].platform().clone().unwrap();
                assert_eq!(platform_name(&platform), "linux/arm/v7");
            }
            other => panic!("{other:?}"),
        }
        let schema1 = br#"{"schemaVersion": 1, "name": "x", "fsLayers": []}"#;
        assert!(matches!(parse_document(schema1), Err(DocumentError::Schema1)));
        assert!(matches!(
            parse_document(br#"{"schemaVersion": 2}"#),
            Err(DocumentError::Neither)
        ));
        let e =
            parse_document(format!(r#"{{"schemaVersion": 2, "mediaType": "{MEDIA_TYPE_OCI_MANIFEST}"}}"#).as_bytes())
                .unwrap_err()
                .to_string();
        assert!(e.contains("config"), "{e}");
        // What the spec requires is required, and the error says where.
        let no_media_type = format!(
            "{{\"schemaVersion\": 2,\n \"manifests\": [{{\"digest\": \"{}\", \"size\": 1}}]}}",
            digest('d')
        );
        let e = parse_document(no_media_type.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("mediaType") && e.contains("line 2"), "{e}");
        let bad_digest = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": "sha256:not-hex", "size": 1}]});
        let e = parse_document(bad_digest.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256:not-hex") || e.contains("digest"), "{e}");
    }

    #[test]
    fn what_the_store_writes_is_oci_specs() {
        let mut d = descriptor(MediaType::ImageManifest, &digest('a'), 3).unwrap();
        only_annotation(&mut d, ANNOTATION_REF_NAME, "x:1");
        d.set_annotation(ANNOTATION_SOURCE_DIGEST, &digest('b'));
        let mut index = empty_index();
        index.set_manifests(vec![d]);
        let written: serde_json::Value = serde_json::to_value(&index).unwrap();
        assert_eq!(written["mediaType"], MEDIA_TYPE_OCI_INDEX);
        assert_eq!(written["schemaVersion"], 2);
        assert_eq!(written["manifests"][0]["annotations"][ANNOTATION_REF_NAME], "x:1");
        assert_eq!(
            written["manifests"][0]["annotations"][ANNOTATION_SOURCE_DIGEST],
            digest('b')
        );
        let e = descriptor(MediaType::ImageManifest, "sha256:nope", 1).unwrap_err();
        assert!(e.contains("sha256:nope"), "{e}");
        let layout: serde_json::Value = serde_json::from_slice(&oci_layout()).unwrap();
        assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    }
}
