//! The store as the daemon uses it: every write timed for
//! `peapod_store_write_duration_seconds`, whatever backend is underneath.

use peapod_core::store::{Page, PageKey, Preconditions, Scope, Store, StoreFuture, WatchStream};
use serde_json::Value;

/// Wraps a store and times its writes.
pub struct MeteredStore<S> {
    inner: S,
}

impl<S: Store> MeteredStore<S> {
    /// `inner`, with its writes timed.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

fn timed<'a, T: Send + 'a>(operation: &'static str, write: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
    Box::pin(async move {
        let timer = peapod_metrics::Timer::start();
        let res = write.await;
        peapod_metrics::metrics()
            .store_write_duration
            .with_label_values(&[operation])
            .observe(timer.seconds());
        res
    })
}

impl<S: Store> Store for MeteredStore<S> {
    fn get<'a>(&'a self, resource: &'a str, namespace: &'a str, name: &'a str) -> StoreFuture<'a, Value> {
        self.inner.get(resource, namespace, name)
    }

    fn list<'a>(&'a self, resource: &'a str, namespace: Option<&'a str>) -> StoreFuture<'a, (Vec<Value>, u64)> {
        self.inner.list(resource, namespace)
    }

    fn list_page<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: Option<PageKey>,
        limit: usize,
    ) -> StoreFuture<'a, Page> {
        self.inner.list_page(resource, namespace, after, limit)
    }

    fn create<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        // Context `resource/namespace/name`: a test widens one write's window.
        #[cfg(feature = "fault-injection")]
        crate::faults::point(
            "store.create",
            &format!(
                "{resource}/{}/{}",
                peapod_core::object::namespace(&object),
                peapod_core::object::name(&object)
            ),
        );
        timed("create", self.inner.create(resource, object))
    }

    fn update<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        timed("update", self.inner.update(resource, object))
    }

    fn delete<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        preconditions: Preconditions,
    ) -> StoreFuture<'a, Value> {
        timed("delete", self.inner.delete(resource, namespace, name, preconditions))
    }

    fn watch(&self, scope: Scope, after_revision: u64) -> StoreFuture<'_, WatchStream> {
        self.inner.watch(scope, after_revision)
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
    use peapod_core::store::SqliteStore;

    #[tokio::test]
    async fn writes_are_timed_and_watchers_counted_through_the_wrapper() {
        let dir = tempfile::tempdir().unwrap();
        let store = MeteredStore::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
        let h = peapod_metrics::metrics()
            .store_write_duration
            .with_label_values(&["create"]);
        let before = h.get_sample_count();
        let ns = serde_json::json!({"metadata": {"name": "n1"}});
        store.create("namespaces", ns).await.unwrap();
        assert_eq!(h.get_sample_count(), before + 1);
        let _w = store.watch(Scope::default(), 0).await.unwrap();
        assert_eq!(store.watchers(), 1);
    }
}
