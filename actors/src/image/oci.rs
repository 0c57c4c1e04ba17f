//! The few OCI image-spec documents the store reads and writes.
//!
//! Image configurations are read as `oci-spec`'s `ImageConfiguration` (the
//! type runc's and youki's Rust tools use), and what the store writes itself
//! (`index.json`, `oci-layout`) goes through its types too, so a document
//! they would refuse is refused here. Manifests and indexes are still read
//! through the lenient structs below: unknown fields ignored, `null` read as
//! empty, a descriptor's `mediaType` optional, Docker's schema-2 manifests
//! and manifest lists read through the same shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

pub(crate) const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

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

/// `index` as `oci-spec`'s `ImageIndex` would write it: every descriptor
/// needs a media type, a well-formed digest and a size.
pub(crate) fn typed_index(index: &ImageIndex, path: &std::path::Path) -> Result<Vec<u8>, super::ImageError> {
    let invalid = |e: String| super::ImageError::InvalidImage {
        path: path.to_path_buf(),
        reason: format!("not a valid OCI image index: {e}"),
    };
    let value = serde_json::to_value(index).map_err(|e| invalid(e.to_string()))?;
    let typed: oci_spec::image::ImageIndex = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    serde_json::to_vec_pretty(&typed).map_err(|e| invalid(e.to_string()))
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

/// Treats an explicit JSON `null` like a missing field; several tools write
/// `"annotations": null` or `"Env": null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub(crate) annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub(crate) fn ref_name(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_REF_NAME).map(String::as_str)
    }
}

/// The platform a manifest in an index is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// An OCI image index (also the shape of a layout's `index.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageIndex {
    pub(crate) schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) manifests: Vec<Descriptor>,
}

impl Default for ImageIndex {
    fn default() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
            manifests: Vec::new(),
        }
    }
}

/// Either an index or a manifest: descriptors do not always say which (their
/// `mediaType` is optional), so a blob is parsed once into this and classified
/// by which fields are present.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexOrManifest {
    #[serde(default)]
    pub(crate) schema_version: Option<u32>,
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    #[serde(default)]
    pub(crate) manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub(crate) config: Option<Descriptor>,
    #[serde(default)]
    pub(crate) layers: Option<Vec<Descriptor>>,
}

/// An image manifest: one config blob and the layers, bottom first.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) media_type: Option<String>,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
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
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(media_type: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.map(str::to_string),
            digest: digest.to_string(),
            size: 3,
            platform: None,
            annotations: BTreeMap::from([(ANNOTATION_REF_NAME.to_string(), "x:1".to_string())]),
        }
    }

    #[test]
    fn what_the_store_writes_passes_oci_specs_types() {
        let path = std::path::Path::new("/store/index.json");
        let good = ImageIndex {
            manifests: vec![descriptor(
                Some(MEDIA_TYPE_OCI_MANIFEST),
                &format!("sha256:{}", "a".repeat(64)),
            )],
            ..ImageIndex::default()
        };
        let written: serde_json::Value = serde_json::from_slice(&typed_index(&good, path).unwrap()).unwrap();
        assert_eq!(written["manifests"][0]["annotations"][ANNOTATION_REF_NAME], "x:1");
        assert_eq!(written["schemaVersion"], 2);
        for bad in [
            descriptor(None, &format!("sha256:{}", "a".repeat(64))),
            descriptor(Some(MEDIA_TYPE_OCI_MANIFEST), "sha256:not-hex"),
        ] {
            let index = ImageIndex {
                manifests: vec![bad],
                ..ImageIndex::default()
            };
            let e = typed_index(&index, path).unwrap_err().to_string();
            assert!(
                e.contains("/store/index.json") && e.contains("not a valid OCI image index"),
                "{e}"
            );
        }
        let layout: serde_json::Value = serde_json::from_slice(&oci_layout()).unwrap();
        assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    }
}
