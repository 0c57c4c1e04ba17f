//! peapod's local image store.
//!
//! Images arrive by import, from OCI layout directories or oci-archive
//! tarballs, or by pull from a registry (`pull.rs`, which stages what it
//! fetches as a layout and imports that), and are resolved by name when a
//! pod starts. The store is itself an OCI image layout, plus a cache of
//! unpacked layers:
//!
//! ```text
//! <root>/oci-layout                      {"imageLayoutVersion":"1.0.0"}
//! <root>/index.json                      one manifest per reference, named by
//!                                        org.opencontainers.image.ref.name
//! <root>/blobs/sha256/<hex>              content-addressed, verified blobs
//! <root>/layers/sha256/<hex-of-blob>/    each layer unpacked once, in
//!                                        overlayfs form, shared read-only by
//!                                        every image and container
//! <root>/tmp/                            staging for archive imports
//! <root>/.lock                           flock guarding index.json (readers shared, writers exclusive)
//! <root>/.gc                             flock guarding blobs/layers: imports shared, collection exclusive
//! ```
//!
//! Crash safety: blobs, `index.json` and unpacked layers are all written to a
//! temporary name and renamed into place, and `index.json` is only updated
//! after everything it points to exists. A crash therefore leaves at worst
//! unreferenced blobs or temporaries, which [`ImageStore::open`] and garbage
//! collection remove.
//!
//! All methods block (file I/O, hashing, decompression, waiting for the
//! lock); async callers should run them on a blocking thread.
//!
//! Requirements: opaque-directory markers are written with `setfattr` (the
//! `attr` package), and preserving ownership and creating whiteout devices
//! needs root.

mod fsutil;
mod oci;
mod pull;
mod reference;
mod registries;
#[cfg(test)]
mod tests;
mod unpack;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::ImageConfiguration;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use fsutil::{io_err, remove_any, sync_dir, unique_temp_name, write_atomic, TempDir, TempFile, TEMP_PREFIX};
use oci::{
    edit_manifests, empty_index, host_platform, layer_compression, only_annotation, parse_document, platform_name,
    Descriptor, DescriptorExt, Document, DocumentError, ImageIndex, Manifest, MediaType, ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME, ANNOTATION_SOURCE_DIGEST,
};
use reference::{is_bare_digest, is_bare_tag, validate_digest, Reference};
use unpack::HashingReader;

pub use pull::{PullProgress, Pulled};
pub use reference::normalize_reference;
pub use registries::{PullSecret, RegistryConfig};

/// Largest manifest, index or config blob the store will read into memory.
/// Registries cap manifests at 4 MiB; configs with long histories are larger
/// but nowhere near this.
const MAX_JSON_BLOB: u64 = 32 * 1024 * 1024;
/// How deep nested indexes may go before the layout is deemed malformed
/// (real images use at most one level).
const MAX_INDEX_DEPTH: usize = 4;

/// Everything that can go wrong in the image store. Variants carry the
/// reference, digest or path involved so that messages are actionable
/// without a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image with this reference (or digest) is in the store.
    #[error("image {reference:?} is not present in the local image store")]
    NotFound { reference: String },

    /// The reference does not follow Docker's reference grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A JSON document (index, manifest, config) could not be parsed.
    #[error("parse {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A digest uses an algorithm or form the store does not support.
    #[error("unsupported digest: {reason}")]
    UnsupportedDigest { digest: String, reason: String },

    /// A descriptor points to a blob the source layout does not contain.
    #[error("blob {digest} is missing (expected at {})", path.display())]
    MissingBlob { digest: String, path: PathBuf },

    /// A blob's content does not hash to its digest.
    #[error("blob {digest} is corrupt: its content ({}) hashes to {actual}", path.display())]
    DigestMismatch {
        digest: String,
        actual: String,
        path: PathBuf,
    },

    /// A blob's length differs from the size its descriptor declares.
    #[error("blob {digest} has {actual} bytes but its descriptor says {expected} ({})", path.display())]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
        path: PathBuf,
    },

    /// A layer's uncompressed content does not match the config's diff_id.
    #[error("layer {digest}: uncompressed content hashes to {actual}, but the image config says {diff_id}")]
    DiffIdMismatch {
        digest: String,
        diff_id: String,
        actual: String,
    },

    /// The layout or stored image is structurally wrong.
    #[error("invalid image at {}: {reason}", path.display())]
    InvalidImage { path: PathBuf, reason: String },

    /// A layer's media type is not one the store can unpack.
    #[error("layer {digest} has unsupported media type {media_type:?} (only uncompressed and gzip tar layers are supported)")]
    UnsupportedMediaType { digest: String, media_type: String },

    /// A registry refused or failed a pull; `message` is its answer.
    #[error("pulling {reference}: {message}")]
    Registry { reference: String, message: String },

    /// An index offers no manifest for the host platform.
    #[error("index {digest} has no manifest for {wanted} (available: {available})")]
    NoMatchingPlatform {
        digest: String,
        wanted: String,
        available: String,
    },

    /// An imported manifest has no usable name and none was supplied.
    #[error("cannot name the image in {}: {reason}", path.display())]
    MissingName { path: PathBuf, reason: String },

    /// A layer entry is unsafe or malformed.
    #[error("layer {digest}: entry {entry:?}: {reason}")]
    LayerEntry {
        digest: String,
        entry: String,
        reason: String,
    },

    /// An oci-archive entry is unsafe or malformed.
    #[error("archive {}: entry {entry:?}: {reason}", path.display())]
    ArchiveEntry {
        path: PathBuf,
        entry: String,
        reason: String,
    },

    /// Setting an extended attribute failed.
    #[error("set xattr {name} on {}: {reason}", path.display())]
    Xattr {
        path: PathBuf,
        name: String,
        reason: String,
    },
}

/// The process defaults an image declares (the `config` object of the OCI
/// image configuration). Empty strings in the image are reported as `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`; empty when unset.
    pub entrypoint: Vec<String>,
    /// `Cmd`; empty when unset.
    pub cmd: Vec<String>,
    /// `Env` as `NAME=value` strings, in image order.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, ...), unresolved.
    pub user: Option<String>,
    /// `StopSignal` as written (`SIGTERM`, `15`, ...), unresolved.
    pub stop_signal: Option<String>,
}

/// An image ready to run: its configuration and the unpacked layer
/// directories to stack as overlayfs lowerdirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Normalised reference the image was resolved by (for a bare
    /// `sha256:` image ID, the stored name it matched).
    pub reference: String,
    /// `sha256:<hex>` digest of the image manifest; stable image identity.
    pub manifest_digest: String,
    /// Process defaults from the image configuration.
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom (first) to top. Note overlayfs's
    /// `lowerdir=` option lists the *top* layer first. May be empty for an
    /// image without layers.
    pub layers: Vec<PathBuf>,
}

/// One stored image, as listed by [`ImageStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// `sha256:<hex>` digest of the image manifest.
    pub digest: String,
    /// Bytes of the manifest, config and (compressed) layer blobs, as a
    /// registry would report the image size; shared layers count in full for
    /// every image using them.
    pub size: u64,
    /// When the image was built, as its config says (RFC 3339).
    pub created: Option<String>,
    /// When this store got it (its manifest was written).
    pub stored: Option<std::time::SystemTime>,
}

/// The image store rooted at one directory (e.g. `/var/lib/peapod/images`).
///
/// Cheap to clone; every method re-reads `index.json`, and writers
/// (`import`, `remove`) are serialised with readers across threads and
/// processes by an flock on `<root>/.lock`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: ImportLimits,
    registries: RegistryConfig,
    progress: Option<std::sync::Arc<dyn PullProgress>>,
}

/// What an import accepts: an image is data from anywhere, and a layer can
/// claim or expand to any size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// The largest blob (a compressed layer) copied into the store.
    pub max_blob_bytes: u64,
    /// The most one layer may unpack to: its decompressed tar stream, and
    /// the sizes of its files (a sparse file counts its full size).
    pub max_layer_bytes: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_blob_bytes: 32 << 30,
            max_layer_bytes: 64 << 30,
        }
    }
}

/// A manifest chosen for import, with everything read and verified.
struct PreparedImage {
    reference: String,
    /// Descriptor of the platform-specific manifest (not of any index that
    /// led to it), as it will appear in the store's index.
    descriptor: Descriptor,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    config_bytes: Vec<u8>,
    diff_ids: Vec<String>,
}

/// An OCI layout being imported from.
struct SourceLayout {
    root: PathBuf,
}

impl SourceLayout {
    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs").join("sha256").join(digest_hex(digest)?))
    }
}

impl ImageStore {
    /// The same store with other import limits.
    pub fn with_limits(mut self, limits: ImportLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same store reporting its pulls' progress to `progress`.
    pub fn with_progress(mut self, progress: std::sync::Arc<dyn PullProgress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The same store pulling as `registries` says.
    pub fn with_registries(mut self, registries: RegistryConfig) -> Self {
        self.registries = registries;
        self
    }

    /// Opens the store at `root`, creating its directories, `oci-layout` and
    /// an empty `index.json` if missing, and deleting temporaries left by a
    /// crashed import.
    ///
    /// # Errors
    /// [`ImageError::Io`] when the directories cannot be created or locked.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        for dir in [
            root.join("blobs").join("sha256"),
            root.join("layers").join("sha256"),
            root.join("tmp"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        // Absolute paths go into ResolvedImage::layers and to setfattr.
        let root = fs::canonicalize(&root).map_err(io_err("resolve", &root))?;
        let store = Self {
            root,
            limits: ImportLimits::default(),
            registries: RegistryConfig::default(),
            progress: None,
        };
        let _lock = store.lock(FlockArg::LockExclusive)?;
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, &oci::oci_layout())?;
        }
        if !store.index_path().exists() {
            store.write_index(&empty_index())?;
        }
        // Leftovers of interrupted imports go, unless an import is running now (its own).
        if let Ok(_data) = store.lock_file(".gc", FlockArg::LockExclusiveNonblock) {
            store.remove_temporaries()?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports images from an OCI layout directory or an oci-archive (a tar
    /// of a layout, optionally gzipped) and returns the normalised references
    /// imported, in index order.
    ///
    /// Naming: with `tag` and a single image in the source's `index.json`,
    /// the image gets `tag` (a repository without a tag takes the layout's
    /// own tag, e.g. umoci's `latest`, else `latest`). Otherwise every
    /// manifest carrying `org.opencontainers.image.ref.name` is imported: a
    /// full reference is normalised, a bare tag such as `latest` is combined
    /// with `tag`'s repository or with containerd's `io.containerd.image.name`.
    /// Manifests without a name are skipped.
    ///
    /// Multi-platform indexes are followed to the manifest for linux and the
    /// host architecture. Every blob is verified against its digest and size,
    /// every layer against its diff_id, and layers are unpacked once. An
    /// existing reference is repointed; the image it named stays on disk
    /// (running containers may use its layers) until a later
    /// [`ImageStore::remove`] collects garbage.
    ///
    /// # Errors
    /// [`ImageError::MissingName`] naming the source's `index.json` when a
    /// manifest has only a tag as its name and no `tag` was given;
    /// [`ImageError::DigestMismatch`]/[`ImageError::SizeMismatch`] naming a
    /// corrupt blob; [`ImageError::LayerEntry`] naming an unsafe layer entry;
    /// and I/O or parse errors. On error the store's index is unchanged.
    pub fn import(&self, source: &Path, tag: Option<&str>) -> Result<Vec<String>, ImageError> {
        // The data is written holding only the collector's lock (shared, so
        // imports run side by side and nothing is collected under them); the
        // index lock is taken just for the index update, so pods resolve
        // images while a large import unpacks.
        let _data = self.lock_file(".gc", FlockArg::LockShared)?;
        let meta = fs::metadata(source).map_err(io_err("open import source", source))?;
        // Holds an extracted archive until the import finishes.
        let mut _staging = None;
        let layout_root = if meta.is_dir() {
            source.to_path_buf()
        } else {
            let staging = TempDir::create(self.tmp_dir().join(unique_temp_name("import")))?;
            unpack::extract_archive(source, staging.path())?;
            let root = find_layout_root(staging.path(), source)?;
            _staging = Some(staging);
            root
        };
        let layout = SourceLayout { root: layout_root };
        let index_path = layout.root.join("index.json");
        let index: ImageIndex = read_json_file(&index_path)?;
        let plan = plan_import(&index, tag, &index_path)?;

        // Read and verify all documents before writing anything, so a bad
        // second image does not leave the first half-imported.
        let mut prepared = Vec::with_capacity(plan.len());
        for (reference, candidates) in plan {
            let chosen = select_platform(&candidates, &index_path.display().to_string())?;
            prepared.push(self.prepare(&layout, reference, chosen)?);
        }

        for image in &prepared {
            self.put_blob_bytes(image.descriptor.digest_str(), &image.manifest_bytes)?;
            self.put_blob_bytes(image.manifest.config().digest_str(), &image.config_bytes)?;
            for (layer, diff_id) in image.manifest.layers().iter().zip(&image.diff_ids) {
                self.ingest_blob(&layout, layer)?;
                self.ensure_unpacked(layer, diff_id)?;
            }
        }

        // Only now that everything it points to exists does the index change.
        let _index = self.lock(FlockArg::LockExclusive)?;
        let mut store_index = self.read_index()?;
        let names: HashSet<&str> = prepared.iter().map(|p| p.reference.as_str()).collect();
        edit_manifests(&mut store_index, |manifests| {
            manifests.retain(|d| d.ref_name().is_none_or(|r| !names.contains(r)));
            for image in &prepared {
                let mut descriptor = image.descriptor.clone();
                only_annotation(&mut descriptor, ANNOTATION_REF_NAME, &image.reference);
                manifests.push(descriptor);
            }
        });
        self.write_index(&store_index)?;

        let references: Vec<String> = prepared.into_iter().map(|p| p.reference).collect();
        info!(source = %source.display(), ?references, "imported images");
        Ok(references)
    }

    /// Lists the stored images, sorted by reference.
    ///
    /// # Errors
    /// I/O or parse errors when the index or a manifest cannot be read.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        let index = self.read_index()?;
        let mut out = Vec::new();
        for descriptor in index.manifests() {
            let Some(reference) = descriptor.ref_name() else {
                continue;
            };
            let manifest = self.read_stored_manifest(descriptor)?;
            let size = descriptor.size()
                + manifest.config().size()
                + manifest.layers().iter().map(Descriptor::size).sum::<u64>();
            let config_path = self.blob_path(manifest.config().digest_str())?;
            let created = fs::read(&config_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<ImageConfiguration>(&b).ok())
                .and_then(|c| c.created().clone());
            let stored = fs::metadata(self.blob_path(descriptor.digest_str())?)
                .and_then(|m| m.modified())
                .ok();
            out.push(ImageSummary {
                reference: reference.to_string(),
                digest: descriptor.digest_str().to_string(),
                size,
                created,
                stored,
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes `reference` (a name, or a digest reference / bare `sha256:`
    /// image ID, which removes every name for that manifest), then deletes
    /// blobs and unpacked layers no remaining image uses.
    ///
    /// The caller must ensure no container still runs from the image: its
    /// unpacked layers are deleted if no other image shares them. Use
    /// [`ImageStore::remove_keeping`] to keep what containers use.
    ///
    /// # Errors
    /// [`ImageError::NotFound`] if nothing matches; invalid references and
    /// I/O errors.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        self.remove_keeping(reference, &HashSet::new())
    }

    /// Removes `reference` as [`ImageStore::remove`] does, but keeps the
    /// data of the manifests `in_use` (`sha256:` digests: what containers
    /// run from), named or not, until a later collection finds them unused.
    ///
    /// # Errors
    /// As [`ImageStore::remove`].
    pub fn remove_keeping(&self, reference: &str, in_use: &HashSet<String>) -> Result<(), ImageError> {
        let lookup = Lookup::parse(reference)?;
        let _data = self.lock_file(".gc", FlockArg::LockExclusive)?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let mut index = self.read_index()?;
        let before = index.manifests().len();
        edit_manifests(&mut index, |m| m.retain(|d| !lookup.matches(d)));
        if index.manifests().len() == before {
            return Err(ImageError::NotFound {
                reference: reference.to_string(),
            });
        }
        self.write_index(&index)?;
        info!(reference, "removed image");
        self.collect_garbage(in_use)
    }

    /// The digest a registry gave for `reference` when it was pulled (an
    /// index's, for an image pulled through one); `None` for an image that
    /// was imported.
    ///
    /// # Errors
    /// Invalid references and I/O errors.
    pub fn source_digest(&self, reference: &str) -> Result<Option<String>, ImageError> {
        let name = normalize_reference(reference)?;
        let _lock = self.lock(FlockArg::LockShared)?;
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .find(|d| d.ref_name() == Some(name.as_str()))
            .and_then(|d| d.annotation(ANNOTATION_SOURCE_DIGEST).map(str::to_string)))
    }

    /// Records the digest a registry gave for `reference` (see
    /// [`ImageStore::source_digest`]).
    pub(crate) fn set_source_digest(&self, reference: &str, digest: &str) -> Result<(), ImageError> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let mut index = self.read_index()?;
        let changed = edit_manifests(&mut index, |manifests| {
            let mut changed = false;
            for d in manifests {
                if d.ref_name() == Some(reference) && d.digest_str() != digest {
                    d.set_annotation(ANNOTATION_SOURCE_DIGEST, digest);
                    changed = true;
                }
            }
            changed
        });
        if changed {
            self.write_index(&index)?;
        }
        Ok(())
    }

    /// The manifest digests `reference` names (one for a name; for a digest,
    /// that digest if stored).
    ///
    /// # Errors
    /// [`ImageError::NotFound`] when nothing matches; invalid references.
    pub fn digests_of(&self, reference: &str) -> Result<Vec<String>, ImageError> {
        let lookup = Lookup::parse(reference)?;
        let _lock = self.lock(FlockArg::LockShared)?;
        let mut found: Vec<String> = self
            .read_index()?
            .manifests()
            .iter()
            .filter(|d| lookup.matches(d))
            .map(|d| d.digest_str().to_string())
            .collect();
        found.dedup();
        if found.is_empty() {
            return Err(ImageError::NotFound {
                reference: reference.to_string(),
            });
        }
        Ok(found)
    }

    /// Removes every image whose manifest is not in `in_use`; returns the
    /// references removed.
    ///
    /// # Errors
    /// I/O and parse errors; on error nothing named is removed.
    pub fn prune(&self, in_use: &HashSet<String>) -> Result<Vec<String>, ImageError> {
        let _data = self.lock_file(".gc", FlockArg::LockExclusive)?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let mut index = self.read_index()?;
        let mut removed = Vec::new();
        edit_manifests(&mut index, |manifests| {
            manifests.retain(|d| {
                let keep = in_use.contains(d.digest_str());
                if !keep {
                    removed.push(d.ref_name().unwrap_or(d.digest_str()).to_string());
                }
                keep
            })
        });
        if !removed.is_empty() {
            self.write_index(&index)?;
            info!(?removed, "pruned images");
        }
        self.collect_garbage(in_use)?;
        Ok(removed)
    }

    /// Finds `reference` (normalised first; a digest reference or bare
    /// `sha256:` image ID matches the manifest digest) and returns its
    /// configuration and unpacked layer directories.
    ///
    /// # Errors
    /// [`ImageError::NotFound`] when no such image is stored (the caller
    /// reports `ErrImageNeverPull`); [`ImageError::InvalidReference`];
    /// [`ImageError::InvalidImage`] if a layer directory has gone missing.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let lookup = Lookup::parse(reference)?;
        let _lock = self.lock(FlockArg::LockShared)?;
        let index = self.read_index()?;
        let descriptor = index
            .manifests()
            .iter()
            .find(|d| lookup.matches(d))
            .ok_or_else(|| ImageError::NotFound {
                reference: reference.to_string(),
            })?;
        let manifest = self.read_stored_manifest(descriptor)?;
        let config_path = self.blob_path(manifest.config().digest_str())?;
        let config_bytes = read_verified(&config_path, manifest.config())?;
        let config: ImageConfiguration = parse_json(&config_bytes, &config_path)?;

        let mut layers = Vec::with_capacity(manifest.layers().len());
        for layer in manifest.layers() {
            let dir = self.layer_dir(layer.digest_str())?;
            if !dir.is_dir() {
                return Err(ImageError::InvalidImage {
                    path: dir,
                    reason: format!("layer {} of {} is not unpacked", layer.digest(), descriptor.digest()),
                });
            }
            layers.push(dir);
        }

        let reference = match &lookup {
            Lookup::Name(name) => name.clone(),
            Lookup::Digest {
                normalized: Some(name), ..
            } => name.clone(),
            Lookup::Digest { normalized: None, .. } => {
                descriptor.ref_name().unwrap_or(descriptor.digest_str()).to_string()
            }
        };
        Ok(ResolvedImage {
            reference,
            manifest_digest: descriptor.digest_str().to_string(),
            config: image_config(config),
            layers,
        })
    }

    // ---- import helpers ----

    /// Reads and verifies the manifest `chosen` leads to (through nested
    /// indexes) and its config, checking that every layer can be unpacked.
    fn prepare(
        &self,
        layout: &SourceLayout,
        reference: String,
        chosen: &Descriptor,
    ) -> Result<PreparedImage, ImageError> {
        let (descriptor, manifest_bytes, manifest) = resolve_manifest(layout, chosen, 0)?;
        let config_path = layout.blob_path(manifest.config().digest_str())?;
        let config_bytes = read_verified(&config_path, manifest.config())?;
        let config: ImageConfiguration = parse_json(&config_bytes, &config_path)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::InvalidImage {
                path: config_path,
                reason: format!(
                    "config lists {} diff_ids but manifest {} has {} layers",
                    diff_ids.len(),
                    descriptor.digest(),
                    manifest.layers().len()
                ),
            });
        }
        for (layer, diff_id) in manifest.layers().iter().zip(&diff_ids) {
            digest_hex(layer.digest_str())?;
            digest_hex(diff_id)?;
            let media_type = layer.media_type().to_string();
            if layer_compression(&media_type).is_none() {
                return Err(ImageError::UnsupportedMediaType {
                    digest: layer.digest_str().to_string(),
                    media_type,
                });
            }
        }
        let host = host_platform();
        if config.architecture() != host.architecture() {
            // Not fatal: binfmt_misc emulation can run it.
            warn!(%reference, image_arch = %config.architecture(), host_arch = %host.architecture(), "importing an image built for another architecture");
        }
        Ok(PreparedImage {
            reference,
            descriptor,
            manifest_bytes,
            manifest,
            config_bytes,
            diff_ids,
        })
    }

    /// Stores a blob already read and verified in memory.
    fn put_blob_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            // Content-addressed and only ever renamed in complete and
            // verified, so an existing blob is the right one.
            return Ok(());
        }
        write_atomic(&path, bytes)
    }

    /// Copies a layer blob from the source layout, verifying it while
    /// streaming so large layers are never held in memory.
    fn ingest_blob(&self, layout: &SourceLayout, descriptor: &Descriptor) -> Result<(), ImageError> {
        let dest = self.blob_path(descriptor.digest_str())?;
        if dest.exists() {
            return Ok(());
        }
        let source = layout.blob_path(descriptor.digest_str())?;
        if descriptor.size() > self.limits.max_blob_bytes {
            return Err(ImageError::InvalidImage {
                path: source,
                reason: format!(
                    "{} declares {} bytes, more than the {} allowed for a blob (--max-blob-size)",
                    descriptor.digest(),
                    descriptor.size(),
                    self.limits.max_blob_bytes
                ),
            });
        }
        let input = open_blob(&source, descriptor.digest_str())?;
        let temp = TempFile::create(self.blobs_dir().join(unique_temp_name("blob")))?;
        let mut output = temp.file()?;
        let mut reader = HashingReader::new(input);
        // One byte past the declared size shows a mismatch; a source that
        // never ends is not copied further.
        io::copy(&mut (&mut reader).take(descriptor.size() + 1), &mut output).map_err(io_err("copy blob", &source))?;
        let actual_size = reader.count();
        check_size(descriptor, actual_size, &source)?;
        check_digest(descriptor, reader.digest(), &source)?;
        output.sync_all().map_err(io_err("fsync", temp.path()))?;
        drop(output);
        temp.persist(&dest)?;
        sync_dir(&self.blobs_dir())
    }

    /// Unpacks a stored layer blob into `layers/sha256/<hex>` unless already
    /// there, via a temporary directory so the final name only ever holds a
    /// complete layer.
    fn ensure_unpacked(&self, layer: &Descriptor, diff_id: &str) -> Result<(), ImageError> {
        let dest = self.layer_dir(layer.digest_str())?;
        if dest.is_dir() {
            return Ok(());
        }
        let media_type = layer.media_type().to_string();
        let compression = layer_compression(&media_type).ok_or_else(|| ImageError::UnsupportedMediaType {
            digest: layer.digest_str().to_string(),
            media_type: media_type.clone(),
        })?;
        let hex = digest_hex(layer.digest_str())?;
        let temp = TempDir::create(self.layers_dir().join(unique_temp_name(hex)))?;
        let blob = self.blob_path(layer.digest_str())?;
        debug!(layer = %layer.digest(), "unpacking layer");
        unpack::unpack_layer(
            &blob,
            compression,
            layer.digest_str(),
            diff_id,
            temp.path(),
            self.limits.max_layer_bytes,
        )?;
        // Make the contents durable before the rename publishes them.
        let dir = File::open(temp.path()).map_err(io_err("open", temp.path()))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| io_err("syncfs", temp.path())(e.into()))?;
        drop(dir);
        if let Err(e) = temp.persist(&dest) {
            // Another import unpacked the same layer meanwhile: theirs is as good.
            if !dest.is_dir() {
                return Err(e);
            }
        }
        sync_dir(&self.layers_dir())
    }

    // ---- garbage collection ----

    /// Deletes blobs and unpacked layers that neither an indexed image nor
    /// a manifest in `in_use` references, and any temporaries. Must be called with both locks held exclusively.
    fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<(), ImageError> {
        let mut roots = self.read_index()?.manifests().clone();
        // Manifests containers run from, though no name may point at them
        // any more (removed with --force, or a tag that moved on).
        for digest in in_use {
            if roots.iter().any(|d| d.digest_str() == digest) {
                continue;
            }
            let Ok(path) = self.blob_path(digest) else { continue };
            if let Ok(meta) = fs::metadata(&path) {
                if let Ok(d) = oci::descriptor(MediaType::ImageManifest, digest, meta.len()) {
                    roots.push(d);
                }
            }
        }
        let mut live_blobs = HashSet::new();
        let mut live_layers = HashSet::new();
        for descriptor in &roots {
            let manifest = match self.read_stored_manifest(descriptor) {
                Ok(m) => m,
                Err(e) => {
                    // Without the full live set, sweeping could delete
                    // something still in use; better to leak.
                    warn!(error = %e, "skipping garbage collection: cannot read a stored manifest");
                    return Ok(());
                }
            };
            live_blobs.insert(digest_hex(descriptor.digest_str())?.to_string());
            live_blobs.insert(digest_hex(manifest.config().digest_str())?.to_string());
            for layer in manifest.layers() {
                let hex = digest_hex(layer.digest_str())?.to_string();
                live_blobs.insert(hex.clone());
                live_layers.insert(hex);
            }
        }
        let blobs = sweep(&self.blobs_dir(), &live_blobs)?;
        let layers = sweep(&self.layers_dir(), &live_layers)?;
        self.remove_temporaries()?;
        if blobs + layers > 0 {
            info!(blobs, layers, "garbage-collected image data");
        }
        Ok(())
    }

    /// Removes staging directories and `.tmp-*` leftovers of interrupted
    /// writes. Must be called with `.gc` held exclusively, so no live
    /// import owns them.
    fn remove_temporaries(&self) -> Result<(), ImageError> {
        for dir in [self.root.clone(), self.blobs_dir(), self.layers_dir(), self.tmp_dir()] {
            let entries = fs::read_dir(&dir).map_err(io_err("read directory", &dir))?;
            for entry in entries {
                let entry = entry.map_err(io_err("read directory", &dir))?;
                let stale = dir == self.tmp_dir() || entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
                if stale {
                    debug!(path = %entry.path().display(), "removing stale temporary");
                    remove_any(&entry.path())?;
                }
            }
        }
        Ok(())
    }

    // ---- index, blobs, paths ----

    fn read_index(&self) -> Result<ImageIndex, ImageError> {
        match read_json_file(&self.index_path()) {
            Err(ImageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(empty_index()),
            other => other,
        }
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), ImageError> {
        let path = self.index_path();
        write_atomic(&path, &index_json(index, &path)?)
    }

    /// Reads a manifest the store wrote; verified, since a corrupt manifest
    /// would otherwise steer garbage collection and resolution.
    fn read_stored_manifest(&self, descriptor: &Descriptor) -> Result<Manifest, ImageError> {
        let path = self.blob_path(descriptor.digest_str())?;
        let bytes = read_verified(&path, descriptor)?;
        as_manifest(&bytes, descriptor, &path)
    }

    fn lock(&self, mode: FlockArg) -> Result<Flock<File>, ImageError> {
        self.lock_file(".lock", mode)
    }

    /// `.lock` guards the index; `.gc` guards blobs and layers against the
    /// collector (imports hold it shared, garbage collection exclusive).
    fn lock_file(&self, name: &str, mode: FlockArg) -> Result<Flock<File>, ImageError> {
        let path = self.root.join(name);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock", &path))?;
        Flock::lock(file, mode).map_err(|(_, errno)| io_err("lock", &path)(errno.into()))
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blobs_dir().join(digest_hex(digest)?))
    }

    fn layer_dir(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.layers_dir().join(digest_hex(digest)?))
    }
}

/// What a caller asked `resolve`/`remove` for.
enum Lookup {
    /// A normalised `name:tag`.
    Name(String),
    /// A manifest digest; `normalized` is the full reference when the caller
    /// wrote `name@digest` rather than a bare image ID.
    Digest { digest: String, normalized: Option<String> },
}

impl Lookup {
    fn parse(reference: &str) -> Result<Self, ImageError> {
        // A bare image ID would otherwise parse as repository `sha256` with
        // a 64-character tag.
        if is_bare_digest(reference) {
            return Ok(Self::Digest {
                digest: reference.to_string(),
                normalized: None,
            });
        }
        let parsed = Reference::parse(reference)?;
        Ok(match &parsed.digest {
            Some(digest) => Self::Digest {
                digest: digest.clone(),
                normalized: Some(parsed.normalized()),
            },
            None => Self::Name(parsed.normalized()),
        })
    }

    fn matches(&self, descriptor: &Descriptor) -> bool {
        match self {
            Self::Name(name) => descriptor.ref_name() == Some(name.as_str()),
            // An image pulled by an index's digest is stored as the
            // platform's manifest; the index's digest names it too.
            Self::Digest { digest, .. } => {
                descriptor.digest_str() == digest || descriptor.annotation(ANNOTATION_SOURCE_DIGEST) == Some(digest)
            }
        }
    }
}

/// Decides which manifests of a source index to import and under which
/// names. Entries sharing a ref name are platform variants of one image.
fn plan_import(
    index: &ImageIndex,
    tag: Option<&str>,
    index_path: &Path,
) -> Result<Vec<(String, Vec<Descriptor>)>, ImageError> {
    if index.manifests().is_empty() {
        return Err(ImageError::InvalidImage {
            path: index_path.to_path_buf(),
            reason: "index lists no manifests".into(),
        });
    }
    let mut groups: Vec<(Option<&str>, Vec<Descriptor>)> = Vec::new();
    for descriptor in index.manifests() {
        let name = descriptor.ref_name();
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, members)) => members.push(descriptor.clone()),
            None => groups.push((name, vec![descriptor.clone()])),
        }
    }

    let tag_ref = tag.map(Reference::parse).transpose()?;
    if let (Some(tag), Some(tag_ref)) = (tag, &tag_ref) {
        if tag_ref.digest.is_some() {
            return Err(ImageError::InvalidReference {
                reference: tag.to_string(),
                reason: "an import name cannot carry a digest; the digest comes from the image".into(),
            });
        }
    }

    if let (Some(tag_ref), [(layout_name, members)]) = (&tag_ref, groups.as_slice()) {
        let mut named = tag_ref.clone();
        if named.tag.is_none() {
            named.tag = layout_name.and_then(layout_tag);
        }
        return Ok(vec![(named.normalized(), members.clone())]);
    }

    let mut plan: Vec<(String, Vec<Descriptor>)> = Vec::new();
    for (name, members) in groups {
        let Some(name) = name else {
            debug!(index = %index_path.display(), "skipping manifest without a ref name");
            continue;
        };
        let reference = if is_bare_tag(name) {
            match (tag, &tag_ref) {
                (Some(tag), Some(tag_ref)) => {
                    if tag_ref.tag.is_some() {
                        return Err(ImageError::InvalidReference {
                            reference: tag.to_string(),
                            reason: format!(
                                "{} holds several images; give a repository without a tag so each keeps its own tag",
                                index_path.display()
                            ),
                        });
                    }
                    let mut named = tag_ref.clone();
                    named.tag = Some(name.to_string());
                    named.normalized()
                }
                _ => match members[0].annotation(ANNOTATION_CONTAINERD_NAME) {
                    Some(full) => normalize_reference(full)?,
                    None => {
                        return Err(ImageError::MissingName {
                            path: index_path.to_path_buf(),
                            reason: format!(
                                "manifest {} is named only by the tag {name:?}; pass a name to import it as (e.g. `busybox`)",
                                members[0].digest()
                            ),
                        })
                    }
                },
            }
        } else {
            normalize_reference(name)?
        };
        match plan.iter_mut().find(|(r, _)| *r == reference) {
            Some((_, existing)) => existing.extend(members),
            None => plan.push((reference, members)),
        }
    }
    if plan.is_empty() {
        return Err(ImageError::MissingName {
            path: index_path.to_path_buf(),
            reason: format!("no manifest carries {ANNOTATION_REF_NAME}; pass a name to import the image as"),
        });
    }
    Ok(plan)
}

/// The tag part of a layout's ref name (`latest`, or the tag of a full
/// reference), used when the caller's name has none.
fn layout_tag(name: &str) -> Option<String> {
    if is_bare_tag(name) {
        return Some(name.to_string());
    }
    Reference::parse(name).ok().and_then(|r| r.tag)
}

/// Picks the candidate for linux and the host architecture; a lone candidate
/// without platform information is taken as is (single-image layouts rarely
/// record one).
fn select_platform<'a>(candidates: &'a [Descriptor], context: &str) -> Result<&'a Descriptor, ImageError> {
    let host = host_platform();
    if let Some(found) = candidates.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| p.os() == host.os() && p.architecture() == host.architecture())
    }) {
        return Ok(found);
    }
    let unlabelled: Vec<&Descriptor> = candidates.iter().filter(|d| d.platform().is_none()).collect();
    if let [only] = unlabelled.as_slice() {
        return Ok(only);
    }
    let available: Vec<String> = candidates
        .iter()
        .map(|d| {
            d.platform()
                .as_ref()
                .map_or_else(|| "unspecified".to_string(), platform_name)
        })
        .collect();
    Err(ImageError::NoMatchingPlatform {
        digest: context.to_string(),
        wanted: platform_name(&host),
        available: available.join(", "),
    })
}

/// Follows `descriptor` through nested indexes (manifest lists) to an image
/// manifest, returning the manifest's descriptor, bytes and parsed form.
fn resolve_manifest(
    layout: &SourceLayout,
    descriptor: &Descriptor,
    depth: usize,
) -> Result<(Descriptor, Vec<u8>, Manifest), ImageError> {
    let path = layout.blob_path(descriptor.digest_str())?;
    let bytes = read_verified(&path, descriptor)?;
    match parse_document(&bytes) {
        Ok(Document::Index(index)) => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImageError::InvalidImage {
                    path,
                    reason: format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
                });
            }
            let child = select_platform(index.manifests(), descriptor.digest_str())?;
            resolve_manifest(layout, child, depth + 1)
        }
        Ok(Document::Manifest(manifest)) => {
            let mut descriptor = descriptor.clone();
            descriptor.set_annotations(None);
            Ok((descriptor, bytes, *manifest))
        }
        Err(e) => Err(document_error(e, descriptor, &path)),
    }
}

/// Reads `bytes` (the blob `descriptor` names, at `path`) as an image manifest.
fn as_manifest(bytes: &[u8], descriptor: &Descriptor, path: &Path) -> Result<Manifest, ImageError> {
    match parse_document(bytes) {
        Ok(Document::Manifest(manifest)) => Ok(*manifest),
        Ok(Document::Index(_)) => Err(ImageError::InvalidImage {
            path: path.to_path_buf(),
            reason: format!(
                "{} is an index where an image manifest was expected",
                descriptor.digest()
            ),
        }),
        Err(e) => Err(document_error(e, descriptor, path)),
    }
}

fn document_error(e: DocumentError, descriptor: &Descriptor, path: &Path) -> ImageError {
    match e {
        DocumentError::Json(source) => ImageError::Json {
            path: path.to_path_buf(),
            source,
        },
        other => ImageError::InvalidImage {
            path: path.to_path_buf(),
            reason: format!("{} is {other}", descriptor.digest()),
        },
    }
}

/// `index` as the store writes it.
pub(crate) fn index_json(index: &ImageIndex, path: &Path) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec_pretty(index).map_err(|source| ImageError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn image_config(file: ImageConfiguration) -> ImageConfig {
    let config = file.config().clone().unwrap_or_default();
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    ImageConfig {
        entrypoint: config.entrypoint().clone().unwrap_or_default(),
        cmd: config.cmd().clone().unwrap_or_default(),
        env: config.env().clone().unwrap_or_default(),
        working_dir: non_empty(config.working_dir()),
        user: non_empty(config.user()),
        stop_signal: non_empty(config.stop_signal()),
    }
}

/// An oci-archive may hold the layout at its root or in one top directory.
fn find_layout_root(extracted: &Path, archive: &Path) -> Result<PathBuf, ImageError> {
    if extracted.join("index.json").is_file() {
        return Ok(extracted.to_path_buf());
    }
    let mut dirs = Vec::new();
    for entry in fs::read_dir(extracted).map_err(io_err("read directory", extracted))? {
        let entry = entry.map_err(io_err("read directory", extracted))?;
        if entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    match dirs.as_slice() {
        [only] if only.join("index.json").is_file() => Ok(only.clone()),
        _ => Err(ImageError::InvalidImage {
            path: archive.to_path_buf(),
            reason: "not an OCI layout or oci-archive: no index.json".into(),
        }),
    }
}

/// The hex part of a `sha256:` digest, which doubles as a file name.
fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    validate_digest(digest).map_err(|reason| ImageError::UnsupportedDigest {
        digest: digest.to_string(),
        reason,
    })?;
    Ok(&digest["sha256:".len()..])
}

/// Opens a blob of a source layout; it must be a regular file (a FIFO,
/// a device such as /dev/zero or a directory is refused, and opening does
/// not wait for a FIFO's writer).
fn open_blob(path: &Path, digest: &str) -> Result<File, ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ImageError::MissingBlob {
                    digest: digest.to_string(),
                    path: path.to_path_buf(),
                }
            } else {
                io_err("open blob", path)(e)
            }
        })?;
    let kind = file.metadata().map_err(io_err("stat blob", path))?.file_type();
    if !kind.is_file() {
        return Err(ImageError::InvalidImage {
            path: path.to_path_buf(),
            reason: format!("blob {digest} is not a regular file"),
        });
    }
    Ok(file)
}

/// Reads a small (JSON) blob and checks its size and digest.
fn read_verified(path: &Path, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
    digest_hex(descriptor.digest_str())?;
    if descriptor.size() > MAX_JSON_BLOB {
        return Err(ImageError::InvalidImage {
            path: path.to_path_buf(),
            reason: format!(
                "{} declares {} bytes, more than the {MAX_JSON_BLOB} allowed for a manifest or config",
                descriptor.digest(),
                descriptor.size()
            ),
        });
    }
    let file = open_blob(path, descriptor.digest_str())?;
    let mut bytes = Vec::new();
    // One byte past the declared size is enough to detect a mismatch without
    // reading an arbitrarily large file.
    file.take(descriptor.size() + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read blob", path))?;
    check_size(descriptor, bytes.len() as u64, path)?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    check_digest(descriptor, actual, path)?;
    Ok(bytes)
}

fn check_size(descriptor: &Descriptor, actual: u64, path: &Path) -> Result<(), ImageError> {
    if actual != descriptor.size() {
        return Err(ImageError::SizeMismatch {
            digest: descriptor.digest_str().to_string(),
            expected: descriptor.size(),
            actual,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn check_digest(descriptor: &Descriptor, actual: String, path: &Path) -> Result<(), ImageError> {
    if actual != descriptor.digest_str() {
        return Err(ImageError::DigestMismatch {
            digest: descriptor.digest_str().to_string(),
            actual,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn read_json_file<T: DeserializeOwned>(path: &Path) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    parse_json(&bytes, path)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Deletes every entry of `dir` whose name is not in `live`; returns how
/// many were deleted.
fn sweep(dir: &Path, live: &HashSet<String>) -> Result<usize, ImageError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let name = entry.file_name();
        if live.contains(name.to_string_lossy().as_ref()) {
            continue;
        }
        debug!(path = %entry.path().display(), "removing unreferenced image data");
        remove_any(&entry.path())?;
        removed += 1;
    }
    Ok(removed)
}
