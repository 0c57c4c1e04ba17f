//! The one informer: list a kind, then watch it from the list's revision,
//! resuming from the last revision seen when a watch stream ends and
//! relisting when the store says that revision is gone (`Expired`), as
//! client-go's reflector does. The node, the namespace controller and every
//! controller see their kinds through it; none hand-rolls a watch loop.
//!
//! An informer runs as a task of the actor that owns it (started in the
//! actor's context), so it stops with that actor and a restarted actor
//! begins with a fresh list. It tells the owner through [`Informed`]
//! messages and waits for each to be handled before it reads on.

use actix::prelude::*;
use peapod_core::store::{EventType, Scope, Store, StoreError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What an informer tells its owner.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Informed {
    /// Everything of the kind (in scope) as of one revision: after the first
    /// list and after every relist. Objects absent here are gone.
    Synced { resource: String, objects: Vec<Value> },
    /// An object was created or changed.
    Applied { resource: String, object: Value },
    /// An object was removed; its last state.
    Deleted { resource: String, object: Value },
}

impl Informed {
    /// The store key of the kind this is about.
    pub fn resource(&self) -> &str {
        match self {
            Informed::Synced { resource, .. }
            | Informed::Applied { resource, .. }
            | Informed::Deleted { resource, .. } => resource,
        }
    }
}

/// The objects of one kind as its informer last told them, by namespace
/// and name: for actors that act on the whole set (the service proxy, the
/// DNS server).
#[derive(Debug, Default)]
pub struct Mirror {
    objects: std::collections::BTreeMap<(String, String), Value>,
    synced: bool,
}

impl Mirror {
    /// Takes in what the informer said.
    pub fn apply(&mut self, msg: Informed) {
        let key = |o: &Value| {
            (
                peapod_core::object::namespace(o).to_string(),
                peapod_core::object::name(o).to_string(),
            )
        };
        match msg {
            Informed::Synced { objects, .. } => {
                self.objects = objects.into_iter().map(|o| (key(&o), o)).collect();
                self.synced = true;
            }
            Informed::Applied { object, .. } => {
                self.objects.insert(key(&object), object);
            }
            Informed::Deleted { object, .. } => {
                self.objects.remove(&key(&object));
            }
        }
    }

    /// Whether the first list came: before it, the set is not known.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Every object, in (namespace, name) order.
    pub fn objects(&self) -> Vec<Value> {
        self.objects.values().cloned().collect()
    }
}

/// How long to wait before trying a failed list or watch again.
const RETRY: Duration = Duration::from_secs(1);

/// Runs an informer over `resource` (a store key, in `namespace` or all)
/// until `to` is gone. Spawn it in the owner's context:
/// `ctx.spawn(informer::run(store, "pods", None, ctx.address().recipient()).into_actor(self))`.
pub async fn run(store: Arc<dyn Store>, resource: String, namespace: Option<String>, to: Recipient<Informed>) {
    loop {
        // List.
        let (objects, mut revision) = match store.list(&resource, namespace.as_deref()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("listing {resource}: {e}; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let synced = Informed::Synced {
            resource: resource.clone(),
            objects,
        };
        if to.send(synced).await.is_err() {
            return;
        }
        // Watch from there, resuming where the last stream ended, until the
        // store no longer has the revision we are at.
        loop {
            let scope = Scope {
                resource: Some(resource.clone()),
                namespace: namespace.clone(),
            };
            let mut rx = match store.watch(scope, revision).await {
                Ok(rx) => rx,
                Err(StoreError::Expired { .. }) => break,
                Err(e) => {
                    tracing::warn!("watching {resource}: {e}; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let mut expired = false;
            while let Some(ev) = rx.recv().await {
                match ev {
                    Ok(ev) => {
                        revision = revision.max(ev.revision);
                        let msg = match ev.event_type {
                            EventType::Deleted => Informed::Deleted {
                                resource: ev.resource,
                                object: ev.object,
                            },
                            EventType::Added | EventType::Modified => Informed::Applied {
                                resource: ev.resource,
                                object: ev.object,
                            },
                        };
                        if to.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("watch of {resource} ended: {e}; relisting");
                        expired = true;
                        break;
                    }
                }
            }
            if expired {
                break;
            }
            // The stream ended cleanly (the store dropped it): resume.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peapod_core::store::SqliteStore;
    use serde_json::json;

    /// Collects what an informer says.
    struct Sink(Vec<String>);

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<Informed> for Sink {
        type Result = ();
        fn handle(&mut self, msg: Informed, _: &mut Context<Self>) {
            let line = match msg {
                Informed::Synced { objects, .. } => {
                    let mut names: Vec<&str> = objects
                        .iter()
                        .map(|o| o["metadata"]["name"].as_str().unwrap())
                        .collect();
                    names.sort();
                    format!("synced {}", names.join(","))
                }
                Informed::Applied { object, .. } => format!("applied {}", object["metadata"]["name"].as_str().unwrap()),
                Informed::Deleted { object, .. } => format!("deleted {}", object["metadata"]["name"].as_str().unwrap()),
            };
            self.0.push(line);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<String>")]
    struct Take;

    impl Handler<Take> for Sink {
        type Result = Vec<String>;
        fn handle(&mut self, _: Take, _: &mut Context<Self>) -> Vec<String> {
            std::mem::take(&mut self.0)
        }
    }

    fn ns(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    }

    async fn until(sink: &Addr<Sink>, want: usize) -> Vec<String> {
        let mut got = Vec::new();
        for _ in 0..200 {
            got.extend(sink.send(Take).await.unwrap());
            if got.len() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        got
    }

    #[actix::test]
    async fn lists_then_streams_changes_of_its_kind_only() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
        store.create("namespaces", ns("a")).await.unwrap();
        let sink = Sink(Vec::new()).start();
        actix::spawn(run(store.clone(), "namespaces".into(), None, sink.clone().recipient()));
        assert_eq!(until(&sink, 1).await, ["synced a"]);
        store.create("namespaces", ns("b")).await.unwrap();
        store
            .create("pods", json!({"metadata": {"name": "p", "namespace": "a"}}))
            .await
            .unwrap();
        store.delete("namespaces", "", "a", Default::default()).await.unwrap();
        assert_eq!(until(&sink, 2).await, ["applied b", "deleted a"]);
    }

    /// The SQLite store, but its first watch answers that the revision is
    /// compacted away, as a store does to a watcher that fell too far behind.
    struct CompactedOnce {
        inner: SqliteStore,
        watches: std::sync::atomic::AtomicU32,
    }

    impl Store for CompactedOnce {
        fn get<'a>(&'a self, r: &'a str, ns: &'a str, n: &'a str) -> peapod_core::store::StoreFuture<'a, Value> {
            self.inner.get(r, ns, n)
        }
        fn list<'a>(
            &'a self,
            r: &'a str,
            ns: Option<&'a str>,
        ) -> peapod_core::store::StoreFuture<'a, (Vec<Value>, u64)> {
            self.inner.list(r, ns)
        }
        fn list_page<'a>(
            &'a self,
            r: &'a str,
            ns: Option<&'a str>,
            after: Option<peapod_core::store::PageKey>,
            limit: usize,
        ) -> peapod_core::store::StoreFuture<'a, peapod_core::store::Page> {
            self.inner.list_page(r, ns, after, limit)
        }
        fn create<'a>(&'a self, r: &'a str, o: Value) -> peapod_core::store::StoreFuture<'a, Value> {
            self.inner.create(r, o)
        }
        fn update<'a>(&'a self, r: &'a str, o: Value) -> peapod_core::store::StoreFuture<'a, Value> {
            self.inner.update(r, o)
        }
        fn delete<'a>(
            &'a self,
            r: &'a str,
            ns: &'a str,
            n: &'a str,
            p: peapod_core::store::Preconditions,
        ) -> peapod_core::store::StoreFuture<'a, Value> {
            self.inner.delete(r, ns, n, p)
        }
        fn watch(
            &self,
            scope: Scope,
            after: u64,
        ) -> peapod_core::store::StoreFuture<'_, peapod_core::store::WatchStream> {
            if self.watches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return Box::pin(async move {
                    Err(StoreError::Expired {
                        requested: after,
                        oldest: after + 1,
                    })
                });
            }
            self.inner.watch(scope, after)
        }
        fn revision(&self) -> peapod_core::store::StoreFuture<'_, u64> {
            self.inner.revision()
        }
    }

    #[actix::test]
    async fn an_expired_revision_is_healed_by_a_relist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CompactedOnce {
            inner: SqliteStore::open(dir.path().join("s.db")).unwrap(),
            watches: Default::default(),
        });
        store.create("namespaces", ns("a")).await.unwrap();
        let sink = Sink(Vec::new()).start();
        actix::spawn(run(store.clone(), "namespaces".into(), None, sink.clone().recipient()));
        // The first watch fails: the informer lists again, then watches on.
        assert_eq!(until(&sink, 2).await, ["synced a", "synced a"]);
        store.create("namespaces", ns("b")).await.unwrap();
        assert_eq!(until(&sink, 1).await, ["applied b"]);
        assert_eq!(store.watches.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
