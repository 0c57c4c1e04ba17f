//! Encryption at rest: a [`Store`] wrapper that seals the objects of chosen
//! kinds (Secrets) with AES-256-GCM before the backend sees them, as the
//! API server's `EncryptionConfiguration` does, so neither the SQLite file
//! nor etcd ever holds a secret in clear.
//!
//! What the backend stores for a sealed object is an envelope: `apiVersion`,
//! `kind`, and of `metadata` only what a backend needs to key, version and
//! precondition it (`name`, `namespace`, `uid`, `resourceVersion`), beside
//! [`SEALED`]: `aesgcm:<key name>:<base64 of nonce, ciphertext and tag>`. The
//! ciphertext is the whole object (annotations too: `kubectl apply`'s
//! last-applied annotation holds the data), sealed with the object's store
//! key (`secrets/<namespace>/<name>`) as associated data, so a sealed value
//! moved to another key does not open. Reads open the envelope and give the
//! object the envelope's `resourceVersion` (the backend sets it after sealing).
//!
//! Keys live in one file (mode 0600, made at first start): one
//! `name:base64(32 bytes)` per line; the first seals, every one opens.
//! Rotation: put a new line first, restart, rewrite every Secret (a
//! `replace` of each), then drop the old line.

use super::{Page, PageKey, Preconditions, Scope, Store, StoreError, StoreFuture, StoreResult, WatchStream};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The envelope field that holds a sealed object.
pub const SEALED: &str = "peapod.io/sealed";
const SCHEME: &str = "aesgcm";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading, creating or checking the file failed.
    #[error("secret encryption key file {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A line is not `name:base64(32 bytes)`.
    #[error("secret encryption key file {path}, line {line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

struct NamedKey {
    name: String,
    key: LessSafeKey,
    /// The same bytes as an HMAC key, for secrets derived from it.
    derive: ring::hmac::Key,
}

/// The node's secret encryption keys: the first seals, all open.
pub struct Keys {
    keys: Vec<NamedKey>,
    path: PathBuf,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("Keys")
            .field("path", &self.path)
            .field("names", &names)
            .finish()
    }
}

impl Keys {
    /// Reads the key file at `path`, creating it with one fresh key (mode
    /// 0600) when it does not exist. A file others may read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| KeyFileError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let rng = SystemRandom::new();
        if !path.exists() {
            let mut key = [0u8; 32];
            rng.fill(&mut key).map_err(|_| KeyFileError::Io {
                path: path.to_path_buf(),
                message: "the system's random source failed".into(),
            })?;
            let line = format!("key1:{}\n", B64.encode(key));
            let tmp = path.with_extension("new");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            std::io::Write::write_all(&mut f, line.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
        }
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Io {
                path: path.to_path_buf(),
                message: format!("mode {:o} lets others read it; it must be 0600", mode & 0o777),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, KeyFileError> {
        let mut keys: Vec<NamedKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| KeyFileError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let (name, b64) = line
                .split_once(':')
                .ok_or_else(|| bad("expected name:base64-key".into()))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(bad(format!("key name {name:?} must be non-empty without spaces")));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(bad(format!("key name {name:?} appears twice")));
            }
            let raw = B64.decode(b64.trim()).map_err(|e| bad(format!("key {name:?}: {e}")))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| bad(format!("key {name:?} is {} bytes; AES-256 needs 32", raw.len())))?;
            keys.push(NamedKey {
                name: name.to_string(),
                key: LessSafeKey::new(unbound),
                derive: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw),
            });
        }
        if keys.is_empty() {
            return Err(KeyFileError::Malformed {
                path: path.to_path_buf(),
                line: 0,
                message: "no key".into(),
            });
        }
        Ok(Self {
            keys,
            path: path.to_path_buf(),
            rng: SystemRandom::new(),
        })
    }

    /// Secrets for `purpose` derived from every key (HMAC-SHA256, hex), the
    /// first key's first: nodes sharing the key file share them, and during
    /// a rotation a node still answers to the old key's.
    pub fn derive(&self, purpose: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| {
                let tag = ring::hmac::sign(&k.derive, purpose.as_bytes());
                tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect()
    }

    fn seal(&self, aad: &str, plain: &[u8]) -> StoreResult<String> {
        let k = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| self.failure("the system's random source failed"))?;
        let mut buf = plain.to_vec();
        k.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| self.failure("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{SCHEME}:{}:{}", k.name, B64.encode(out)))
    }

    fn open(&self, aad: &str, sealed: &str) -> StoreResult<Vec<u8>> {
        let mut parts = sealed.splitn(3, ':');
        let (scheme, name, b64) = (parts.next(), parts.next(), parts.next());
        if scheme != Some(SCHEME) {
            return Err(self.failure(format!("{aad}: unknown sealing scheme {scheme:?}")));
        }
        let name = name.unwrap_or_default();
        let k = self.keys.iter().find(|k| k.name == name).ok_or_else(|| {
            self.failure(format!(
                "{aad} was sealed with key {name:?}, which is not in the key file"
            ))
        })?;
        let raw = B64
            .decode(b64.unwrap_or_default())
            .map_err(|e| self.failure(format!("{aad}: sealed value: {e}")))?;
        if raw.len() < NONCE_LEN {
            return Err(self.failure(format!("{aad}: sealed value is truncated")));
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| self.failure("bad nonce"))?;
        let mut body = body.to_vec();
        let plain = k
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body)
            .map_err(|_| {
                self.failure(format!(
                    "{aad}: does not open with key {name:?} (altered, or moved from another key)"
                ))
            })?;
        Ok(plain.to_vec())
    }

    fn failure(&self, message: impl Into<String>) -> StoreError {
        StoreError::Backend {
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }
}

/// Wraps a store; objects of the `sealed` kinds (store keys) are sealed on write and opened on read.
pub struct EncryptedStore<S> {
    inner: S,
    keys: Arc<Keys>,
    sealed: &'static [&'static str],
}

impl<S: Store> EncryptedStore<S> {
    /// `inner`, with the objects of `sealed` (store keys, `secrets`) sealed by `keys`.
    pub fn new(inner: S, keys: Keys, sealed: &'static [&'static str]) -> Self {
        Self {
            inner,
            keys: Arc::new(keys),
            sealed,
        }
    }

    /// The keys it seals with.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn sealed(&self, resource: &str) -> bool {
        self.sealed.contains(&resource)
    }
}

impl<S: Store> EncryptedStore<S> {
    /// Seals again every object of the sealed kinds that is not sealed with
    /// the first key (sealed with an older one, or written before
    /// encryption): run at start, this is what makes a rotation complete.
    /// Returns how many were written; one that cannot be opened is an error
    /// naming it, and the others are still done.
    pub async fn reseal_stale(&self) -> Result<usize, Vec<StoreError>> {
        let mut done = 0;
        let mut errors = Vec::new();
        let current = format!("{SCHEME}:{}:", self.keys.keys[0].name);
        for resource in self.sealed {
            let items = match self.inner.list(resource, None).await {
                Ok((items, _)) => items,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for raw in items {
                if raw
                    .get(SEALED)
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with(&current))
                {
                    continue;
                }
                let res = async {
                    let rv = crate::object::resource_version(&raw).to_string();
                    let mut plain = open(&self.keys, resource, raw)?;
                    crate::object::set_meta(&mut plain, "resourceVersion", rv);
                    self.inner.update(resource, seal(&self.keys, resource, plain)?).await
                }
                .await;
                match res {
                    Ok(_) => done += 1,
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(errors)
        }
    }
}

fn aad(resource: &str, obj: &Value) -> String {
    format!(
        "{resource}/{}/{}",
        crate::object::namespace(obj),
        crate::object::name(obj)
    )
}

fn seal(keys: &Keys, resource: &str, obj: Value) -> StoreResult<Value> {
    let sealed = keys.seal(&aad(resource, &obj), obj.to_string().as_bytes())?;
    let mut meta = Map::new();
    for field in ["name", "namespace", "uid", "resourceVersion"] {
        if let Some(v) = obj["metadata"].get(field) {
            meta.insert(field.into(), v.clone());
        }
    }
    Ok(json!({
        "apiVersion": obj.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": obj.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": meta,
        SEALED: sealed,
    }))
}

/// Opens an envelope; an object written before encryption was on passes as it is.
fn open(keys: &Keys, resource: &str, envelope: Value) -> StoreResult<Value> {
    let Some(sealed) = envelope.get(SEALED).and_then(Value::as_str) else {
        return Ok(envelope);
    };
    let plain = keys.open(&aad(resource, &envelope), sealed)?;
    let mut obj: Value = serde_json::from_slice(&plain).map_err(|e| keys.failure(format!("sealed object: {e}")))?;
    if let Some(rv) = envelope["metadata"].get("resourceVersion").and_then(Value::as_str) {
        crate::object::set_meta(&mut obj, "resourceVersion", rv);
    }
    Ok(obj)
}

impl<S: Store> Store for EncryptedStore<S> {
    fn get<'a>(&'a self, resource: &'a str, namespace: &'a str, name: &'a str) -> StoreFuture<'a, Value> {
        if !self.sealed(resource) {
            return self.inner.get(resource, namespace, name);
        }
        Box::pin(async move { open(&self.keys, resource, self.inner.get(resource, namespace, name).await?) })
    }

    fn list<'a>(&'a self, resource: &'a str, namespace: Option<&'a str>) -> StoreFuture<'a, (Vec<Value>, u64)> {
        if !self.sealed(resource) {
            return self.inner.list(resource, namespace);
        }
        Box::pin(async move {
            let (items, rev) = self.inner.list(resource, namespace).await?;
            let items = items
                .into_iter()
                .map(|o| open(&self.keys, resource, o))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok((items, rev))
        })
    }

    fn list_page<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: Option<PageKey>,
        limit: usize,
    ) -> StoreFuture<'a, Page> {
        if !self.sealed(resource) {
            return self.inner.list_page(resource, namespace, after, limit);
        }
        Box::pin(async move {
            let mut page = self.inner.list_page(resource, namespace, after, limit).await?;
            page.items = std::mem::take(&mut page.items)
                .into_iter()
                .map(|o| open(&self.keys, resource, o))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(page)
        })
    }

    fn create<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        if !self.sealed(resource) {
            return self.inner.create(resource, object);
        }
        Box::pin(async move {
            let envelope = seal(&self.keys, resource, object)?;
            open(&self.keys, resource, self.inner.create(resource, envelope).await?)
        })
    }

    fn update<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        if !self.sealed(resource) {
            return self.inner.update(resource, object);
        }
        Box::pin(async move {
            let envelope = seal(&self.keys, resource, object)?;
            open(&self.keys, resource, self.inner.update(resource, envelope).await?)
        })
    }

    fn delete<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        preconditions: Preconditions,
    ) -> StoreFuture<'a, Value> {
        if !self.sealed(resource) {
            return self.inner.delete(resource, namespace, name, preconditions);
        }
        Box::pin(async move {
            let last = self.inner.delete(resource, namespace, name, preconditions).await?;
            open(&self.keys, resource, last)
        })
    }

    fn watch(&self, scope: Scope, after_revision: u64) -> StoreFuture<'_, WatchStream> {
        let covers_sealed = scope.resource.as_deref().is_none_or(|r| self.sealed(r));
        if !covers_sealed {
            return self.inner.watch(scope, after_revision);
        }
        Box::pin(async move {
            let mut raw = self.inner.watch(scope, after_revision).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            let (keys, sealed) = (self.keys.clone(), self.sealed);
            tokio::spawn(async move {
                loop {
                    // A watcher that went away ends this at once, not at the next write.
                    let ev = tokio::select! {
                        ev = raw.recv() => ev,
                        () = tx.closed() => return,
                    };
                    let Some(ev) = ev else { return };
                    let ev = ev.and_then(|mut ev| {
                        if sealed.contains(&ev.resource.as_str()) {
                            ev.object = open(&keys, &ev.resource, std::mem::take(&mut ev.object))?;
                        }
                        Ok(ev)
                    });
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            });
            Ok(rx)
        })
    }

    fn revision(&self) -> StoreFuture<'_, u64> {
        self.inner.revision()
    }

    fn watchers(&self) -> usize {
        self.inner.watchers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn secret(value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default", "uid": "u1",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": value}},
            "data": {"k": B64.encode(value)}})
    }

    #[tokio::test]
    async fn secrets_never_reach_the_file_in_clear_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(&dir.path().join("k")).unwrap();
        let db = dir.path().join("s.db");
        let store = EncryptedStore::new(SqliteStore::open(&db).unwrap(), keys, &["secrets"]);
        let mut watch = store.watch(Scope::default(), 0).await.unwrap();
        let plain = "hunter2-very-secret";
        let made = store.create("secrets", secret(plain)).await.unwrap();
        assert_eq!(made["data"]["k"], B64.encode(plain));
        let rv = made["metadata"]["resourceVersion"].clone();
        assert!(rv.as_str().is_some_and(|r| r != "0"));
        let mut changed = made.clone();
        changed["data"]["k"] = json!(B64.encode("second"));
        let updated = store.update("secrets", changed).await.unwrap();
        assert_eq!(updated["data"]["k"], B64.encode("second"));
        let got = store.get("secrets", "default", "s").await.unwrap();
        assert_eq!(got, updated);
        assert_eq!(store.list("secrets", None).await.unwrap().0, vec![updated.clone()]);
        let ev = watch.recv().await.unwrap().unwrap();
        assert_eq!(ev.object["data"]["k"], B64.encode(plain));
        // A stale version is still refused by the backend.
        assert!(matches!(
            store.update("secrets", made).await,
            Err(StoreError::Conflict { .. })
        ));
        store
            .create(
                "configmaps",
                json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"plain": "visible"}}),
            )
            .await
            .unwrap();
        drop(store);
        let mut bytes = Vec::new();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with("s.db") {
                bytes.extend(std::fs::read(p).unwrap());
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("visible"), "the file was not read");
        for needle in [
            plain.to_string(),
            B64.encode(plain),
            "second".into(),
            B64.encode("second"),
        ] {
            assert!(!text.contains(&needle), "{needle} is in the store file");
        }
    }

    #[test]
    fn derived_secrets_follow_the_key_file_and_the_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("key1:{}\n", B64.encode([1u8; 32]))).unwrap();
        let a = Keys::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
        let b = Keys::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
        // Two nodes with one key file derive the same secret; another purpose or key, another.
        assert_eq!(a.derive("p"), b.derive("p"));
        assert_eq!(a.derive("p")[0].len(), 64);
        assert_ne!(a.derive("p"), a.derive("q"));
        let rotated = format!("key2:{}\nkey1:{}\n", B64.encode([2u8; 32]), B64.encode([1u8; 32]));
        let r = Keys::parse(&path, &rotated).unwrap();
        let derived = r.derive("p");
        assert_eq!(derived.len(), 2);
        assert_ne!(derived[0], a.derive("p")[0]);
        assert_eq!(derived[1], a.derive("p")[0], "the old key's secret is still among them");
    }

    #[tokio::test]
    async fn a_sealed_value_opens_only_with_its_key_and_at_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let keys = Keys::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let env = seal(&keys, "secrets", secret("x")).unwrap();
        assert!(open(&keys, "secrets", env.clone()).is_ok());
        let mut moved = env.clone();
        moved["metadata"]["name"] = json!("other");
        let e = open(&keys, "secrets", moved).unwrap_err().to_string();
        assert!(e.contains("does not open with key \"key1\""), "{e}");
        // Rotation: a new first key seals, the old one still opens.
        let old = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("key2:{}\n{old}", B64.encode([7u8; 32]))).unwrap();
        let rotated = Keys::load_or_create(&path).unwrap();
        assert!(open(&rotated, "secrets", env.clone()).is_ok());
        assert!(seal(&rotated, "secrets", secret("x")).unwrap()[SEALED]
            .as_str()
            .unwrap()
            .starts_with("aesgcm:key2:"));
        // Re-sealing at start moves every stored object to the first key.
        let dir2 = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(dir2.path().join("s.db")).unwrap();
        db.create("secrets", env.clone()).await.unwrap();
        db.create(
            "secrets",
            json!({"metadata": {"name": "clear", "namespace": "default"}, "data": {}}),
        )
        .await
        .unwrap();
        let store = EncryptedStore::new(db, Keys::load_or_create(&path).unwrap(), &["secrets"]);
        assert_eq!(store.reseal_stale().await.unwrap(), 2);
        assert_eq!(store.reseal_stale().await.unwrap(), 0);
        let (raw, _) = store.inner.list("secrets", None).await.unwrap();
        assert!(
            raw.iter()
                .all(|o| o[SEALED].as_str().unwrap().starts_with("aesgcm:key2:")),
            "{raw:?}"
        );
        assert_eq!(
            store.get("secrets", "default", "s").await.unwrap()["data"]["k"],
            B64.encode("x")
        );
        // Without the old key it does not open, and says which key it needs.
        std::fs::write(&path, format!("key2:{}\n", B64.encode([7u8; 32]))).unwrap();
        let only_new = Keys::load_or_create(&path).unwrap();
        let e = open(&only_new, "secrets", env).unwrap_err().to_string();
        assert!(
            e.contains("sealed with key \"key1\", which is not in the key file"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keys::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("it must be 0600"), "{e}");
        std::fs::write(&path, "key3:c2hvcnQ=\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Keys::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("line 1: key \"key3\" is 5 bytes; AES-256 needs 32"), "{e}");
    }
}
