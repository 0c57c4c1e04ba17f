//! The store: where every object lives. A trait, so the embedded SQLite file
//! can give way to etcd when nodes share state; nothing above it may assume
//! it is local.
//!
//! One global revision counts every write. An object's
//! `metadata.resourceVersion` is the revision of its last write; updates carry
//! the version they read and fail with [`StoreError::Conflict`] when it is
//! stale. Watches replay events after a revision, then stream.

mod encrypted;
mod etcd;
mod sqlite;
pub mod suite;

pub use encrypted::{EncryptedStore, KeyFileError, Keys, SEALED};
pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use sqlite::SqliteStore;

use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

/// What a store call can fail with; each maps onto a Kubernetes `Status` reason.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object at that key.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// Create of a key that exists.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// The write carried a stale resourceVersion or uid precondition.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {reason}")]
    Conflict {
        resource: String,
        name: String,
        reason: String,
    },
    /// A watch asked for a revision older than the store keeps.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    /// The object has no usable name.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// The backend failed.
    #[error("store backend at {path}: {message}")]
    Backend { path: String, message: String },
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// The future a store call returns: boxed so the trait is object-safe and backends may be remote.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// What happened to an object, as Kubernetes' watch event `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed; the object is its last state.
    Deleted,
}

/// One change, in revision order.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// Added, Modified or Deleted.
    pub event_type: EventType,
    /// The store revision of this change.
    pub revision: u64,
    /// The store key of the object's kind (`pods`).
    pub resource: String,
    /// The object after the change (before it, for Deleted).
    pub object: Value,
}

/// Preconditions on a delete, as Kubernetes' `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// Delete only the object with this uid (not a same-named successor).
    pub uid: Option<String>,
    /// Delete only if nothing changed since this revision.
    pub resource_version: Option<u64>,
}

/// A stream of watch events; an `Err` (e.g. [`StoreError::Expired`] when the
/// watcher fell too far behind) ends it, and the watcher must relist.
pub type WatchStream = mpsc::Receiver<StoreResult<WatchEvent>>;

/// Which objects a watch or list covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// One kind (store key), or all kinds.
    pub resource: Option<String>,
    /// One namespace, or all.
    pub namespace: Option<String>,
}

/// Where a paged list resumes: the (namespace, name) of the last object
/// returned; objects sort by namespace, then name.
pub type PageKey = (String, String);

/// One page of a list.
#[derive(Debug, Default)]
pub struct Page {
    /// Up to `limit` objects, after the key asked for.
    pub items: Vec<Value>,
    /// The store's revision when this page was read (pages are not one snapshot).
    pub revision: u64,
    /// The key to ask for next; `None` when this page ended the list.
    pub next: Option<PageKey>,
}

/// The (namespace, name) key of an object to be written.
fn key_of(resource: &str, obj: &Value) -> StoreResult<(String, String)> {
    let name = crate::object::name(obj);
    if name.is_empty() {
        return Err(StoreError::Invalid(format!("{resource}: metadata.name is empty")));
    }
    Ok((crate::object::namespace(obj).to_string(), name.to_string()))
}

fn conflict(resource: &str, name: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Conflict {
        resource: resource.to_string(),
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// The API server's words for a stale resourceVersion.
const MODIFIED: &str = "the object has been modified; please apply your changes to the latest version and try again";

fn uid_conflict(resource: &str, name: &str, want: &str, have: &str) -> StoreError {
    conflict(
        resource,
        name,
        format!("Precondition failed: UID in precondition: {want}, UID in object meta: {have}"),
    )
}

/// A backend chosen at run time (`--store`) is a store too.
impl Store for Box<dyn Store> {
    fn get<'a>(&'a self, resource: &'a str, namespace: &'a str, name: &'a str) -> StoreFuture<'a, Value> {
        (**self).get(resource, namespace, name)
    }
    fn list<'a>(&'a self, resource: &'a str, namespace: Option<&'a str>) -> StoreFuture<'a, (Vec<Value>, u64)> {
        (**self).list(resource, namespace)
    }
    fn list_page<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: Option<PageKey>,
        limit: usize,
    ) -> StoreFuture<'a, Page> {
        (**self).list_page(resource, namespace, after, limit)
    }
    fn create<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        (**self).create(resource, object)
    }
    fn update<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        (**self).update(resource, object)
    }
    fn delete<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        preconditions: Preconditions,
    ) -> StoreFuture<'a, Value> {
        (**self).delete(resource, namespace, name, preconditions)
    }
    fn watch(&self, scope: Scope, after_revision: u64) -> StoreFuture<'_, WatchStream> {
        (**self).watch(scope, after_revision)
    }
    fn revision(&self) -> StoreFuture<'_, u64> {
        (**self).revision()
    }
    fn watchers(&self) -> usize {
        (**self).watchers()
    }
}

/// The store interface. All calls may cross a network; all writes are durable when they return.
pub trait Store: Send + Sync + 'static {
    /// The object at (resource, namespace, name).
    fn get<'a>(&'a self, resource: &'a str, namespace: &'a str, name: &'a str) -> StoreFuture<'a, Value>;
    /// All objects of a kind (in one namespace or all), with the revision the list is consistent at.
    fn list<'a>(&'a self, resource: &'a str, namespace: Option<&'a str>) -> StoreFuture<'a, (Vec<Value>, u64)>;
    /// At most `limit` objects of a kind after `after`, in (namespace, name)
    /// order, so a caller that walks many objects holds one page at a time.
    fn list_page<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: Option<PageKey>,
        limit: usize,
    ) -> StoreFuture<'a, Page>;
    /// Stores a new object; sets its resourceVersion. AlreadyExists if the key is taken.
    fn create<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value>;
    /// Replaces an object if its `metadata.resourceVersion` is current (0 or absent: unconditional).
    fn update<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value>;
    /// Removes an object, honouring preconditions; returns its last state.
    fn delete<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        preconditions: Preconditions,
    ) -> StoreFuture<'a, Value>;
    /// Events in `scope` after `after_revision`: first the recorded ones, then live ones.
    fn watch(&self, scope: Scope, after_revision: u64) -> StoreFuture<'_, WatchStream>;
    /// The current global revision.
    fn revision(&self) -> StoreFuture<'_, u64>;
    /// How many watches are open now (for the `peapod_store_watchers` gauge);
    /// 0 from a store that does not count them.
    fn watchers(&self) -> usize {
        0
    }
}
