//! The embedded store: one SQLite file (WAL, `synchronous=FULL`, so every
//! acknowledged write survives a crash), an objects table, and an events table
//! that watches replay from.

use super::{
    conflict, key_of, uid_conflict, EventType, Page, PageKey, Preconditions, Scope, Store, StoreError, StoreFuture,
    StoreResult, WatchEvent, WatchStream, MODIFIED,
};
use crate::object;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// How many past events watches can resume from; older revisions get `Expired`.
const EVENTS_RETAINED: u64 = 50_000;

/// How many events the live feed holds for watchers between their reads.
const LIVE_EVENTS: usize = 256;

/// The recorded events in `scope` after revision `after` (Expired when compacted).
fn history(inner: &Inner, scope: &Scope, after: u64) -> StoreResult<Vec<WatchEvent>> {
    let conn = inner.lock();
    let oldest: u64 = conn
        .query_row("SELECT value FROM meta WHERE key='compacted'", [], |r| r.get(0))
        .map_err(|e| inner.be(e))?;
    if after < oldest {
        return Err(StoreError::Expired {
            requested: after,
            oldest,
        });
    }
    let mut stmt = conn
        .prepare(
            "SELECT revision, resource, namespace, type, value FROM events WHERE revision > ?1
             AND (?2 IS NULL OR resource=?2) AND (?3 IS NULL OR namespace=?3) ORDER BY revision",
        )
        .map_err(|e| inner.be(e))?;
    let rows = stmt
        .query_map(params![after, scope.resource, scope.namespace], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(|e| inner.be(e))?;
    let mut out = Vec::new();
    for row in rows {
        let (revision, resource, t, value) = row.map_err(|e| inner.be(e))?;
        let event_type = serde_json::from_value(Value::String(t)).map_err(|e| inner.be(e))?;
        out.push(WatchEvent {
            event_type,
            revision,
            resource,
            object: parse(&inner.path, &value)?,
        });
    }
    Ok(out)
}

/// SQLite's page cache, negative as the pragma takes KiB.
const CACHE_KIB: i64 = -512;

/// The SQLite-backed [`Store`].
///
/// One connection, used by one worker thread: operations queue for it in
/// order instead of each taking a thread of the blocking pool to wait on the
/// connection's lock (a burst of pod starts had 60 threads parked there).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    jobs: std::sync::mpsc::Sender<Job>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Shared, not copied, per watcher: each watcher deep-copies only the
    /// events in its scope (a copy per watcher per write was most of the
    /// daemon's allocations).
    live: broadcast::Sender<Arc<WatchEvent>>,
}

/// An operation for the worker thread.
type Job = Box<dyn FnOnce(&Inner) + Send>;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let be = |e: rusqlite::Error| backend(&path, e);
        let conn = Connection::open(&path).map_err(be)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(be)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(be)?;
        // SQLite's page cache (2 MiB by default) fills as the database grows
        // and never empties; the kernel's page cache holds the file anyway.
        conn.pragma_update(None, "cache_size", CACHE_KIB).map_err(be)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(be)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                revision INTEGER NOT NULL, value TEXT NOT NULL,
                PRIMARY KEY (resource, namespace, name));
             CREATE TABLE IF NOT EXISTS events (
                revision INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL,
                type TEXT NOT NULL, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);",
        )
        .map_err(be)?;
        // Live events hold whole objects: the feed keeps few, and a watcher
        // that falls behind catches up from the events table.
        let (live, _) = broadcast::channel(LIVE_EVENTS);
        let inner = Arc::new(Inner {
            path,
            conn: Mutex::new(conn),
            live,
        });
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let worker = inner.clone();
        // The thread ends when the last handle (store or watch feed) is gone.
        std::thread::Builder::new()
            .name("peapod-store".into())
            .spawn(move || {
                for job in queue {
                    job(&worker);
                }
            })
            .map_err(|e| backend(&inner.path, format!("starting the store's thread: {e}")))?;
        Ok(Self { inner, jobs })
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        on_worker(self.jobs.clone(), self.inner.path.display().to_string(), f)
    }
}

/// Runs `f` on the store's thread (when the future is first polled, as a
/// spawned task would) and hands back its result.
fn on_worker<T: Send + 'static>(
    jobs: std::sync::mpsc::Sender<Job>,
    path: String,
    f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
) -> StoreFuture<'static, T> {
    Box::pin(async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |inner: &Inner| {
            // A panic drops `tx`, which the caller sees; the thread lives on.
            if let Ok(out) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(inner))) {
                let _ = tx.send(out);
            }
        });
        if jobs.send(job).is_err() {
            return Err(StoreError::Backend {
                path,
                message: "the store's thread has stopped".into(),
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Backend {
                path,
                message: "a store operation panicked".into(),
            })
        })
    })
}

fn backend(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn parse(path: &Path, text: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| backend(path, format!("corrupt object: {e}")))
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn be(&self, e: impl std::fmt::Display) -> StoreError {
        backend(&self.path, e)
    }

    fn current(&self, conn: &Connection, resource: &str, ns: &str, name: &str) -> StoreResult<Option<Value>> {
        let text: Option<String> = conn
            .query_row(
                "SELECT value FROM objects WHERE resource=?1 AND namespace=?2 AND name=?3",
                params![resource, ns, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.be(e))?;
        text.map(|t| parse(&self.path, &t)).transpose()
    }

    /// Applies one write in a transaction and publishes its event; `obj: None` deletes.
    fn write(
        &self,
        conn: &mut Connection,
        resource: &str,
        ns: &str,
        name: &str,
        event_type: EventType,
        mut obj: Value,
    ) -> StoreResult<Value> {
        let tx = conn.transaction().map_err(|e| self.be(e))?;
        let rev: u64 = tx
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key='revision' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.be(e))?;
        if event_type != EventType::Deleted {
            object::set_meta(&mut obj, "resourceVersion", rev.to_string());
            tx.execute(
                "INSERT OR REPLACE INTO objects VALUES (?1, ?2, ?3, ?4, ?5)",
                params![resource, ns, name, rev, obj.to_string()],
            )
            .map_err(|e| self.be(e))?;
        } else {
            tx.execute(
                "DELETE FROM objects WHERE resource=?1 AND namespace=?2 AND name=?3",
                params![resource, ns, name],
            )
            .map_err(|e| self.be(e))?;
        }
        let type_text = serde_json::to_value(event_type).map_err(|e| self.be(e))?;
        tx.execute(
            "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                rev,
                resource,
                ns,
                type_text.as_str().unwrap_or_default(),
                obj.to_string()
            ],
        )
        .map_err(|e| self.be(e))?;
        if rev.is_multiple_of(1000) && rev > EVENTS_RETAINED {
            let floor = rev - EVENTS_RETAINED;
            tx.execute("DELETE FROM events WHERE revision <= ?1", params![floor])
                .map_err(|e| self.be(e))?;
            tx.execute("UPDATE meta SET value=?1 WHERE key='compacted'", params![floor])
                .map_err(|e| self.be(e))?;
        }
        tx.commit().map_err(|e| self.be(e))?;
        // Sent under the connection lock, so live events leave in revision order.
        let _ = self.live.send(Arc::new(WatchEvent {
            event_type,
            revision: rev,
            resource: resource.to_string(),
            object: obj.clone(),
        }));
        Ok(obj)
    }
}

fn in_scope(scope: &Scope, resource: &str, ns: &str) -> bool {
    scope.resource.as_deref().is_none_or(|r| r == resource) && scope.namespace.as_deref().is_none_or(|n| n == ns)
}

impl Store for SqliteStore {
    fn get<'a>(&'a self, resource: &'a str, namespace: &'a str, name: &'a str) -> StoreFuture<'a, Value> {
        let (r, ns, n) = (resource.to_string(), namespace.to_string(), name.to_string());
        self.run(move |inner| {
            let conn = inner.lock();
            inner
                .current(&conn, &r, &ns, &n)?
                .ok_or(StoreError::NotFound { resource: r, name: n })
        })
    }

    fn list<'a>(&'a self, resource: &'a str, namespace: Option<&'a str>) -> StoreFuture<'a, (Vec<Value>, u64)> {
        let (r, ns) = (resource.to_string(), namespace.map(str::to_string));
        self.run(move |inner| {
            let conn = inner.lock();
            let rev: u64 =
                conn.query_row("SELECT value FROM meta WHERE key='revision'", [], |r| r.get(0)).map_err(|e| inner.be(e))?;
            let mut stmt = conn
                .prepare(
                    "SELECT value FROM objects WHERE resource=?1 AND (?2 IS NULL OR namespace=?2) ORDER BY namespace, name",
                )
                .map_err(|e| inner.be(e))?;
            let rows = stmt.query_map(params![r, ns], |row| row.get::<_, String>(0)).map_err(|e| inner.be(e))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(parse(&inner.path, &row.map_err(|e| inner.be(e))?)?);
            }
            Ok((out, rev))
        })
    }

    fn list_page<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: Option<PageKey>,
        limit: usize,
    ) -> StoreFuture<'a, Page> {
        let (r, ns) = (resource.to_string(), namespace.map(str::to_string));
        let (after_ns, after_name) = after.unzip();
        self.run(move |inner| {
            let conn = inner.lock();
            let revision: u64 = conn
                .query_row("SELECT value FROM meta WHERE key='revision'", [], |r| r.get(0))
                .map_err(|e| inner.be(e))?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT namespace, name, value FROM objects WHERE resource=?1 AND (?2 IS NULL OR namespace=?2)
                     AND (?3 IS NULL OR (namespace, name) > (?3, ?4)) ORDER BY namespace, name LIMIT ?5",
                )
                .map_err(|e| inner.be(e))?;
            let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![r, ns, after_ns, after_name, limit], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .map_err(|e| inner.be(e))?;
            let mut page = Page {
                revision,
                ..Page::default()
            };
            let mut last = None;
            for row in rows {
                let (ns, name, text) = row.map_err(|e| inner.be(e))?;
                page.items.push(parse(&inner.path, &text)?);
                last = Some((ns, name));
            }
            if i64::try_from(page.items.len()).is_ok_and(|n| n == limit) {
                page.next = last;
            }
            Ok(page)
        })
    }

    fn create<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        let r = resource.to_string();
        self.run(move |inner| {
            let (ns, name) = key_of(&r, &object)?;
            let mut conn = inner.lock();
            if inner.current(&conn, &r, &ns, &name)?.is_some() {
                return Err(StoreError::AlreadyExists { resource: r, name });
            }
            inner.write(&mut conn, &r, &ns, &name, EventType::Added, object)
        })
    }

    fn update<'a>(&'a self, resource: &'a str, object: Value) -> StoreFuture<'a, Value> {
        let r = resource.to_string();
        self.run(move |inner| {
            let (ns, name) = key_of(&r, &object)?;
            let mut conn = inner.lock();
            let cur = inner
                .current(&conn, &r, &ns, &name)?
                .ok_or_else(|| StoreError::NotFound {
                    resource: r.clone(),
                    name: name.clone(),
                })?;
            let want = object::resource_version(&object);
            if want != 0 && want != object::resource_version(&cur) {
                return Err(conflict(&r, &name, MODIFIED));
            }
            let uid = object::uid(&object);
            if !uid.is_empty() && uid != object::uid(&cur) {
                return Err(uid_conflict(&r, &name, uid, object::uid(&cur)));
            }
            inner.write(&mut conn, &r, &ns, &name, EventType::Modified, object)
        })
    }

    fn delete<'a>(
        &'a self,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
        pre: Preconditions,
    ) -> StoreFuture<'a, Value> {
        let (r, ns, n) = (resource.to_string(), namespace.to_string(), name.to_string());
        self.run(move |inner| {
            let mut conn = inner.lock();
            let cur = inner.current(&conn, &r, &ns, &n)?.ok_or_else(|| StoreError::NotFound {
                resource: r.clone(),
                name: n.clone(),
            })?;
            if let Some(uid) = pre.uid.as_deref() {
                if uid != object::uid(&cur) {
                    return Err(uid_conflict(&r, &n, uid, object::uid(&cur)));
                }
            }
            if let Some(rv) = pre.resource_version {
                if rv != object::resource_version(&cur) {
                    return Err(conflict(&r, &n, MODIFIED));
                }
            }
            inner.write(&mut conn, &r, &ns, &n, EventType::Deleted, cur)
        })
    }

    fn watchers(&self) -> usize {
        // Every open watch holds one receiver of the live feed.
        self.inner.live.receiver_count()
    }

    fn watch(&self, scope: Scope, after: u64) -> StoreFuture<'_, WatchStream> {
        let inner = self.inner.clone();
        let jobs = self.jobs.clone();
        let path = inner.path.display().to_string();
        Box::pin(async move {
            // Subscribe before reading history: every event is then either in the
            // history read below or in the live feed (or both; the overlap is skipped).
            let mut live = inner.live.subscribe();
            let scope2 = scope.clone();
            let recorded = on_worker(jobs.clone(), path.clone(), move |i| history(i, &scope2, after)).await?;
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                let mut last = after;
                for ev in recorded {
                    last = ev.revision;
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                loop {
                    // A watcher that went away ends its feed now, not at the next event.
                    let next = tokio::select! {
                        r = live.recv() => r,
                        _ = tx.closed() => return,
                    };
                    match next {
                        Ok(ev) => {
                            if ev.revision <= last || !in_scope(&scope, &ev.resource, object::namespace(&ev.object)) {
                                continue;
                            }
                            last = ev.revision;
                            if tx.send(Ok(Arc::unwrap_or_clone(ev))).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // The live feed keeps few events (they are large): a
                            // watcher that fell behind catches up from the
                            // recorded ones instead, and only a compacted
                            // revision ends the watch with Expired.
                            let sc = scope.clone();
                            let caught_up = on_worker(jobs.clone(), path.clone(), move |i| history(i, &sc, last)).await;
                            match caught_up {
                                Ok(events) => {
                                    for ev in events {
                                        last = ev.revision;
                                        if tx.send(Ok(ev)).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                Err(e) => {
                                    let _ = tx.send(Err(e)).await;
                                    return;
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            Ok(rx)
        })
    }

    fn revision(&self) -> StoreFuture<'_, u64> {
        self.run(|inner| {
            let conn = inner.lock();
            conn.query_row("SELECT value FROM meta WHERE key='revision'", [], |r| r.get(0))
                .map_err(|e| inner.be(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": name}})
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("db")).unwrap();
        let err = s.run(|_| -> StoreResult<()> { panic!("boom") }).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        // The store's thread lives on, and so does the connection.
        s.create("pods", pod("a")).await.unwrap();
        assert_eq!(object::name(&s.get("pods", "default", "a").await.unwrap()), "a");
    }

    #[tokio::test]
    async fn watch_replays_then_streams_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = SqliteStore::open(&path).unwrap();
        s.create("pods", pod("a")).await.unwrap();
        s.create("namespaces", json!({"metadata": {"name": "n"}}))
            .await
            .unwrap();
        s.create("pods", pod("b")).await.unwrap();
        let scope = Scope {
            resource: Some("pods".into()),
            namespace: None,
        };
        let mut w = s.watch(scope.clone(), 0).await.unwrap();
        let e1 = w.recv().await.unwrap().unwrap();
        let e2 = w.recv().await.unwrap().unwrap();
        assert_eq!((e1.revision, object::name(&e1.object)), (1, "a"));
        assert_eq!((e2.revision, object::name(&e2.object)), (3, "b"));
        s.delete("pods", "default", "a", Preconditions::default())
            .await
            .unwrap();
        let e3 = w.recv().await.unwrap().unwrap();
        assert_eq!((e3.event_type, e3.revision), (EventType::Deleted, 4));
        drop(s);
        drop(w);
        // A reopened store resumes a watch from a revision in the middle.
        let s = SqliteStore::open(&path).unwrap();
        let mut w = s.watch(scope, 1).await.unwrap();
        assert_eq!(w.recv().await.unwrap().unwrap().revision, 3);
        assert_eq!(w.recv().await.unwrap().unwrap().revision, 4);
        s.create("pods", pod("c")).await.unwrap();
        let e = w.recv().await.unwrap().unwrap();
        assert_eq!((e.event_type, e.revision), (EventType::Added, 5));
    }

    #[tokio::test]
    async fn the_store_suite_passes() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        crate::store::suite::all(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.path().join(format!("db{i}"));
            async move { Arc::new(SqliteStore::open(path).unwrap()) as Arc<dyn Store> }
        })
        .await;
    }
}
