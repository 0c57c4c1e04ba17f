//! Pulls from registries over the OCI distribution API, through `oci-client`.
//!
//! A pull fetches the manifest (following an index to the host's platform)
//! and the config into a staging layout under `<root>/tmp`, streams each
//! layer the store lacks straight into `blobs/` (verified against its digest
//! and size while it streams), and then imports the staging layout: the
//! same checks, unpacking and index update as `peapod image import`, and the
//! layers already streamed in are not read again. Layers an image shares
//! with one already stored are not fetched.

use std::io::Write;

use futures_util::StreamExt;
use oci_client::client::ClientConfig;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::fsutil::{io_err, sync_dir, unique_temp_name, write_atomic, TempDir, TempFile};
use super::oci::{
    empty_index, only_annotation, parse_document, Descriptor, DescriptorExt, Document, DocumentError, MediaType,
    ANNOTATION_REF_NAME,
};
use super::registries::PullSecret;
use super::{check_digest, check_size, digest_hex, normalize_reference, select_platform, ImageError, ImageStore};
use super::{MAX_INDEX_DEPTH, MAX_JSON_BLOB};
use nix::fcntl::FlockArg;

/// Manifest media types asked for: OCI and Docker v2 schema 2, images and
/// indexes. A registry that has only schema 1 serves it anyway.
const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Layers fetched at once.
const PARALLEL_LAYERS: usize = 3;

/// What a pull reports as it goes, for a progress display. Called from the
/// pull's own thread; every method has an empty default.
pub trait PullProgress: Send + Sync + std::fmt::Debug {
    /// The image's layers: those to fetch (digest, size) and those the
    /// store already has.
    fn layers(&self, _fetch: &[(String, u64)], _present: &[String]) {}
    /// `bytes` more of layer `digest` arrived.
    fn fetched(&self, _digest: &str, _bytes: u64) {}
    /// Layer `digest` is verified and stored.
    fn stored(&self, _digest: &str) {}
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The normalised reference, as `image ls` shows it.
    pub reference: String,
    /// The digest of the image manifest stored (the platform's, not the index's).
    pub digest: String,
    /// Bytes fetched from the registry (layers the store already had are not).
    pub fetched_bytes: u64,
}

fn registry_error(reference: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        reference: reference.to_string(),
        message: e.to_string(),
    }
}

/// An error and its causes (`error sending request …: connection refused`):
/// the client's own message often leaves out why.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

fn client_error(reference: &str, e: oci_client::errors::OciDistributionError) -> ImageError {
    use oci_client::errors::OciDistributionError as E;
    match &e {
        // The client drops the registry's body; say what a 401 means.
        E::UnauthorizedError { url } => registry_error(
            reference,
            format!("401 Unauthorized from {url}: the registry refused the credentials (or their absence)"),
        ),
        _ => {
            let mut message = with_causes(&e);
            // The TLS alert a registry sends when it wants a client
            // certificate it did not get, or does not trust the one it got.
            if ["BadCertificate", "CertificateRequired", "UnknownCA"]
                .iter()
                .any(|alert| message.contains(&format!("fatal alert: {alert}")))
            {
                message += " (the registry refused the client certificate, or its absence: one it demands is read from <certs.d>/<registry>/NAME.cert and NAME.key)";
            }
            registry_error(reference, message)
        }
    }
}

impl ImageStore {
    /// Pulls `reference` (a Docker-style name: `busybox`, `host:5000/app:1`,
    /// `name@sha256:…`) from its registry (or a mirror of it) into the store,
    /// with the credentials, CA certificates and protocol the store's
    /// [`RegistryConfig`](super::RegistryConfig) gives that registry.
    /// Blocks; it runs its own single-threaded runtime for the network.
    ///
    /// # Errors
    /// [`ImageError::Registry`] with the registry's answer (unknown
    /// manifest, authentication required, refused connection);
    /// [`ImageError::DigestMismatch`]/[`ImageError::SizeMismatch`] for a blob
    /// that is not what its descriptor says; [`ImageError::NoMatchingPlatform`]
    /// for an index without the host's platform; and what an import returns.
    /// On error the store's index is unchanged.
    pub fn pull(&self, reference: &str) -> Result<Pulled, ImageError> {
        self.pull_with(reference, &[])
    }

    /// [`ImageStore::pull`] with a pod's `imagePullSecrets`, tried before the node's credentials.
    ///
    /// # Errors
    /// As [`ImageStore::pull`]; a pull secret that is not a Docker config is named.
    pub fn pull_with(&self, reference: &str, secrets: &[PullSecret]) -> Result<Pulled, ImageError> {
        let (name, sources) = self.sources(reference)?;
        self.try_sources(&name, sources, |source| self.pull_from(source, &name, secrets))
    }

    /// What `imagePullPolicy: Always` does: asks the registry which
    /// manifest `reference` names now and pulls only if the store does not
    /// have that one. An image the store has and the registry names alike
    /// comes back with nothing fetched.
    ///
    /// # Errors
    /// As [`ImageStore::pull`]; an unreachable registry is an error even
    /// when the store has the image, as with kubelet.
    pub fn pull_if_changed(&self, reference: &str, secrets: &[PullSecret]) -> Result<Pulled, ImageError> {
        let (name, sources) = self.sources(reference)?;
        let stored = match self.resolve(&name) {
            Ok(image) => Some((image.manifest_digest.clone(), self.source_digest(&name)?)),
            Err(ImageError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        self.try_sources(&name, sources, |source| {
            if let Some((manifest, pulled)) = &stored {
                let remote = self.remote_digest(source, &name, secrets)?;
                if &remote == manifest || pulled.as_ref() == Some(&remote) {
                    return Ok(Pulled {
                        reference: name.clone(),
                        digest: manifest.clone(),
                        fetched_bytes: 0,
                    });
                }
            }
            self.pull_from(source, &name, secrets)
        })
    }

    /// The normalised name and where to get it: its mirrors first, in
    /// order, then its registry.
    fn sources(&self, reference: &str) -> Result<(String, Vec<oci_client::Reference>), ImageError> {
        let name = normalize_reference(reference)?;
        let target: oci_client::Reference = name.parse().map_err(|e| ImageError::InvalidReference {
            reference: reference.to_string(),
            reason: format!("{e}"),
        })?;
        // reqwest's rustls carries no crypto provider of its own here (no
        // aws-lc build); ring, which the probes use too, serves the process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut sources: Vec<oci_client::Reference> = self
            .registries
            .mirrors_of(target.registry())
            .iter()
            .map(|m| match target.digest() {
                Some(d) => oci_client::Reference::with_digest(m.clone(), target.repository().into(), d.into()),
                None => oci_client::Reference::with_tag(
                    m.clone(),
                    target.repository().into(),
                    target.tag().unwrap_or("latest").into(),
                ),
            })
            .collect();
        sources.push(target);
        Ok((name, sources))
    }

    /// Tries `op` on each source until one succeeds; the registry's own
    /// error is the one returned.
    fn try_sources<T>(
        &self,
        name: &str,
        sources: Vec<oci_client::Reference>,
        mut op: impl FnMut(&oci_client::Reference) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let last = sources.len() - 1;
        for (i, source) in sources.into_iter().enumerate() {
            match op(&source) {
                Ok(p) => return Ok(p),
                Err(e) if i < last => {
                    warn!(image = %name, mirror = source.registry(), "mirror failed, trying the next source: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the registry itself is always the last source")
    }

    /// A client and credentials for `source`, and a runtime to drive it.
    fn connect(
        &self,
        source: &oci_client::Reference,
        name: &str,
        secrets: &[PullSecret],
    ) -> Result<(Client, RegistryAuth, tokio::runtime::Runtime), ImageError> {
        let endpoint = self
            .registries
            .endpoint(source.registry(), source.repository(), name, secrets)?;
        let client = Client::try_from(ClientConfig {
            protocol: endpoint.protocol,
            extra_root_certificates: endpoint.roots,
            client_identity: endpoint.identity,
            ..Default::default()
        })
        .map_err(|e| client_error(name, e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| registry_error(name, format!("start the pull's runtime: {e}")))?;
        Ok((client, endpoint.auth, runtime))
    }

    /// The digest of what `source` names now (an index or a manifest).
    fn remote_digest(
        &self,
        source: &oci_client::Reference,
        name: &str,
        secrets: &[PullSecret],
    ) -> Result<String, ImageError> {
        let (client, auth, runtime) = self.connect(source, name, secrets)?;
        runtime.block_on(async {
            client
                .auth(source, &auth, RegistryOperation::Pull)
                .await
                .map_err(|e| client_error(name, e))?;
            client
                .fetch_manifest_digest(source, &auth)
                .await
                .map_err(|e| client_error(name, e))
        })
    }

    /// Pulls `name` from `source` (the registry the name says, or a mirror).
    fn pull_from(
        &self,
        source: &oci_client::Reference,
        name: &str,
        secrets: &[PullSecret],
    ) -> Result<Pulled, ImageError> {
        let name = name.to_string();
        let (client, auth, runtime) = self.connect(source, &name, secrets)?;
        let target = source;
        // Nothing is collected while blobs arrive that no index names yet.
        let _data = self.lock_file(".gc", FlockArg::LockShared)?;
        let staging = TempDir::create(self.tmp_dir().join(unique_temp_name("pull")))?;
        let (top, fetched_bytes) = runtime.block_on(self.fetch(&client, &auth, target, &name, staging.path()))?;
        drop(runtime);
        let top_digest = top.digest_str().to_string();
        let mut named = top;
        only_annotation(&mut named, ANNOTATION_REF_NAME, &name);
        let mut index = empty_index();
        index.set_manifests(vec![named]);
        let index_path = staging.path().join("index.json");
        write_atomic(&index_path, &super::index_json(&index, &index_path)?)?;
        write_atomic(&staging.path().join("oci-layout"), &super::oci::oci_layout())?;
        // The staging index names the image in full (`repo:tag` or `repo@digest`).
        let imported = self.import(staging.path(), None)?;
        let reference = imported.into_iter().next().unwrap_or(name);
        self.set_source_digest(&reference, &top_digest)?;
        let digest = self.resolve(&reference)?.manifest_digest;
        Ok(Pulled {
            reference,
            digest,
            fetched_bytes,
        })
    }

    /// Fetches the manifests and config into `staging` and the missing
    /// layers into the store; returns the descriptor of what the tag names
    /// (an index or a manifest) and the bytes fetched.
    async fn fetch(
        &self,
        client: &Client,
        auth: &RegistryAuth,
        target: &oci_client::Reference,
        name: &str,
        staging: &std::path::Path,
    ) -> Result<(Descriptor, u64), ImageError> {
        // Asked first so a refusal carries the registry's own words.
        client
            .auth(target, auth, RegistryOperation::Pull)
            .await
            .map_err(|e| client_error(name, e))?;
        let blobs = staging.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        let mut fetched = 0u64;

        let (bytes, digest) = client
            .pull_manifest_raw(target, auth, ACCEPTED)
            .await
            .map_err(|e| match e {
                // A signed schema 1 manifest's digest covers its payload
                // without the signatures, so the client's check fails
                // before anyone sees the schema.
                oci_client::errors::OciDistributionError::DigestError(d) => registry_error(
                    name,
                    format!(
                        "the manifest does not hash to the digest the registry gave ({d}): a signed Docker schema 1 manifest, which is not supported (push the image again with a current Docker, Podman or skopeo), or a corrupt registry"
                    ),
                ),
                e => client_error(name, e),
            })?;
        let mut parsed = parse_document(&bytes).map_err(|e| manifest_error(name, &e))?;
        // OCI documents may leave their own mediaType out; a descriptor may not.
        let media_type = match &parsed {
            Document::Index(i) => i.media_type().clone().unwrap_or(MediaType::ImageIndex),
            Document::Manifest(m) => m.media_type().clone().unwrap_or(MediaType::ImageManifest),
        };
        let top = super::oci::descriptor(media_type, &digest, bytes.len() as u64)
            .map_err(|e| registry_error(name, format!("the registry gave a manifest digest that {e}")))?;
        // Pulled by digest: the registry must serve exactly that.
        if let Some(wanted) = target.digest() {
            if wanted != digest {
                return Err(ImageError::DigestMismatch {
                    digest: wanted.to_string(),
                    actual: digest,
                    path: std::path::PathBuf::from(format!("{name} (manifest)")),
                });
            }
        }
        store_document(&blobs, &top, &bytes)?;
        fetched += bytes.len() as u64;
        let mut depth = 0;
        let manifest = loop {
            let index = match parsed {
                Document::Manifest(manifest) => break *manifest,
                Document::Index(index) => index,
            };
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(registry_error(
                    name,
                    format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
                ));
            }
            let child = select_platform(index.manifests(), &format!("{digest} of {name}"))?.clone();
            let at = oci_client::Reference::with_digest(
                target.resolve_registry().to_string(),
                target.repository().to_string(),
                child.digest_str().to_string(),
            );
            let (bytes, _) = client
                .pull_manifest_raw(&at, auth, ACCEPTED)
                .await
                .map_err(|e| client_error(name, e))?;
            store_document(&blobs, &child, &bytes)?;
            fetched += bytes.len() as u64;
            parsed = parse_document(&bytes).map_err(|e| manifest_error(name, &e))?;
        };
        let config = manifest.config();
        if config.size() > MAX_JSON_BLOB {
            return Err(registry_error(
                name,
                format!(
                    "config {} declares {} bytes, more than {MAX_JSON_BLOB}",
                    config.digest(),
                    config.size()
                ),
            ));
        }
        let mut config_bytes = Vec::new();
        client
            .pull_blob(target, config.digest_str(), &mut config_bytes)
            .await
            .map_err(|e| client_error(name, e))?;
        store_document(&blobs, config, &config_bytes)?;
        fetched += config_bytes.len() as u64;

        let mut missing = Vec::new();
        let mut present = Vec::new();
        for layer in manifest.layers() {
            if self.blob_path(layer.digest_str())?.exists() {
                present.push(layer.digest_str().to_string());
            } else {
                missing.push(layer);
            }
        }
        if let Some(p) = &self.progress {
            let fetch: Vec<(String, u64)> = missing.iter().map(|l| (l.digest_str().to_string(), l.size())).collect();
            p.layers(&fetch, &present);
        }
        let mut downloads =
            futures_util::stream::iter(missing.iter().map(|l| self.fetch_layer(client, target, name, l)))
                .buffer_unordered(PARALLEL_LAYERS);
        while let Some(done) = downloads.next().await {
            fetched += done?;
        }
        Ok((top, fetched))
    }

    /// Streams one layer into `blobs/`, hashing as it goes; nothing is
    /// renamed into place unless size and digest match the descriptor.
    async fn fetch_layer(
        &self,
        client: &Client,
        target: &oci_client::Reference,
        name: &str,
        layer: &Descriptor,
    ) -> Result<u64, ImageError> {
        let dest = self.blob_path(layer.digest_str())?;
        if layer.size() > self.limits.max_blob_bytes {
            return Err(registry_error(
                name,
                format!(
                    "layer {} declares {} bytes, more than the {} allowed for a blob",
                    layer.digest(),
                    layer.size(),
                    self.limits.max_blob_bytes
                ),
            ));
        }
        let mut stream = client
            .pull_blob_stream(target, layer.digest_str())
            .await
            .map_err(|e| client_error(name, e))?;
        let temp = TempFile::create(self.blobs_dir().join(unique_temp_name("blob")))?;
        let mut out = temp.file()?;
        let mut hash = Sha256::new();
        let mut count = 0u64;
        let source = std::path::PathBuf::from(format!("{name} layer {}", layer.digest()));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| registry_error(name, format!("layer {}: {e}", layer.digest())))?;
            count += chunk.len() as u64;
            if count > layer.size() {
                break;
            }
            hash.update(&chunk);
            out.write_all(&chunk).map_err(io_err("write", temp.path()))?;
            if let Some(p) = &self.progress {
                p.fetched(layer.digest_str(), chunk.len() as u64);
            }
        }
        check_size(layer, count, &source)?;
        check_digest(layer, format!("sha256:{}", hex::encode(hash.finalize())), &source)?;
        out.sync_all().map_err(io_err("fsync", temp.path()))?;
        drop(out);
        temp.persist(&dest)?;
        sync_dir(&self.blobs_dir())?;
        if let Some(p) = &self.progress {
            p.stored(layer.digest_str());
        }
        Ok(count)
    }
}

/// Writes a manifest, index or config into the staging layout after
/// checking it against its descriptor.
fn store_document(blobs: &std::path::Path, descriptor: &Descriptor, bytes: &[u8]) -> Result<(), ImageError> {
    let path = blobs.join(digest_hex(descriptor.digest_str())?);
    check_size(descriptor, bytes.len() as u64, &path)?;
    check_digest(
        descriptor,
        format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
        &path,
    )?;
    write_atomic(&path, bytes)
}

/// A manifest or index from the registry that is not one peapod reads.
fn manifest_error(name: &str, e: &DocumentError) -> ImageError {
    registry_error(
        name,
        match e {
            DocumentError::Schema1 => "the registry serves a Docker schema 1 manifest, which is not supported; push the image again with a current Docker, Podman or skopeo".to_string(),
            DocumentError::Json(e) => format!("the manifest is not a valid OCI or Docker v2 document: {e}"),
            DocumentError::Neither => "the manifest has no config: not an image manifest".to_string(),
        },
    )
}
