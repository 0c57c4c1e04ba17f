//! What every [`Store`] backend promises, as one suite of checks that any
//! backend runs: the SQLite store in its unit tests, etcd against a real
//! cluster in `tests/`. Revisions are compared, never assumed to start at 1,
//! since a shared etcd has its own history.
//!
//! Each check panics with what broke; [`all`] runs every check on a fresh, empty store.

use super::{EventType, Preconditions, Scope, Store, StoreError};
use crate::object;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

fn pod(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}")}})
}

fn rv(v: &Value) -> u64 {
    object::resource_version(v)
}

/// Runs every check, each on a store `fresh` makes for it (empty, its revisions its own or shared).
pub async fn all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    create_get_update_conflict_delete(&*fresh().await).await;
    updates_and_deletes_check_their_preconditions(&*fresh().await).await;
    lists_and_pages_walk_every_object_once_in_key_order(&*fresh().await).await;
    watches_replay_then_stream_and_resume(&*fresh().await).await;
    watches_keep_to_their_scope(&*fresh().await).await;
    open_watches_are_counted_until_dropped(&*fresh().await).await;
    a_watcher_far_behind_catches_up_without_expiring(&*fresh().await, 1500).await;
}

/// Create, read, a versioned update, a stale update refused, a delete.
pub async fn create_get_update_conflict_delete(s: &dyn Store) {
    let base = s.revision().await.unwrap();
    let a = s.create("pods", pod("default", "a")).await.unwrap();
    assert!(rv(&a) > base, "create gives a new revision: {} after {base}", rv(&a));
    assert_eq!(
        s.get("pods", "default", "a").await.unwrap(),
        a,
        "get returns what create returned"
    );
    assert!(
        matches!(
            s.create("pods", pod("default", "a")).await,
            Err(StoreError::AlreadyExists { .. })
        ),
        "a second create of a key is refused"
    );
    let mut b = a.clone();
    b["spec"] = json!({"x": 1});
    let b = s.update("pods", b).await.unwrap();
    assert!(rv(&b) > rv(&a));
    assert_eq!(s.get("pods", "default", "a").await.unwrap(), b);
    // `a` still carries the old revision: a stale write must fail and change nothing.
    let mut stale = a.clone();
    stale["spec"] = json!({"x": 2});
    let err = s.update("pods", stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(s.get("pods", "default", "a").await.unwrap()["spec"]["x"], 1);
    // Without a resourceVersion, an update is unconditional.
    let mut free = a.clone();
    free["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    free["spec"] = json!({"x": 3});
    let c = s.update("pods", free).await.unwrap();
    assert!(rv(&c) > rv(&b));
    let gone = s
        .delete("pods", "default", "a", Preconditions::default())
        .await
        .unwrap();
    assert_eq!(gone["spec"]["x"], 3, "delete returns the last state");
    assert!(matches!(
        s.get("pods", "default", "a").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        s.revision().await.unwrap() > rv(&c),
        "the delete is a revision of its own"
    );
    let err = s.update("pods", pod("default", "a")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { .. }),
        "an update of nothing: {err}"
    );
    let err = s
        .delete("pods", "default", "a", Preconditions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = s
        .create("pods", json!({"metadata": {"namespace": "default"}}))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

/// uid and resourceVersion preconditions on update and delete.
pub async fn updates_and_deletes_check_their_preconditions(s: &dyn Store) {
    let a = s.create("pods", pod("default", "a")).await.unwrap();
    let mut other = a.clone();
    other["metadata"]["uid"] = json!("someone-else");
    let err = s.update("pods", other).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { reason, .. } if reason.contains("UID in precondition: someone-else")),
        "{err}"
    );
    let wrong_uid = Preconditions {
        uid: Some("other".into()),
        resource_version: None,
    };
    assert!(matches!(
        s.delete("pods", "default", "a", wrong_uid).await,
        Err(StoreError::Conflict { .. })
    ));
    let mut b = a.clone();
    b["spec"] = json!({"x": 1});
    let b = s.update("pods", b).await.unwrap();
    let stale = Preconditions {
        uid: Some(object::uid(&a).to_string()),
        resource_version: Some(rv(&a)),
    };
    assert!(matches!(
        s.delete("pods", "default", "a", stale).await,
        Err(StoreError::Conflict { .. })
    ));
    let current = Preconditions {
        uid: Some(object::uid(&a).to_string()),
        resource_version: Some(rv(&b)),
    };
    let gone = s.delete("pods", "default", "a", current).await.unwrap();
    assert_eq!(rv(&gone), rv(&b));
}

/// Lists hold every object of a kind (one namespace or all) at one revision;
/// pages walk them once, in (namespace, name) order.
pub async fn lists_and_pages_walk_every_object_once_in_key_order(s: &dyn Store) {
    let mut want = Vec::new();
    let mut last = 0;
    for ns in ["b", "a"] {
        for name in ["y", "x", "z"] {
            last = rv(&s.create("pods", pod(ns, name)).await.unwrap());
            want.push(format!("{ns}/{name}"));
        }
    }
    s.create("events", pod("a", "other-kind")).await.unwrap();
    want.sort();
    let key = |o: &Value| format!("{}/{}", object::namespace(o), object::name(o));
    let (items, at) = s.list("pods", None).await.unwrap();
    assert_eq!(items.iter().map(key).collect::<Vec<_>>(), want);
    assert!(at > last, "a list's revision is at least its last write's");
    let (items, _) = s.list("pods", Some("a")).await.unwrap();
    assert_eq!(items.iter().map(key).collect::<Vec<_>>(), ["a/x", "a/y", "a/z"]);
    let mut got = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = s.list_page("pods", None, after, 4).await.unwrap();
        assert!(page.items.len() <= 4);
        assert!(page.revision > last);
        pages += 1;
        got.extend(page.items.iter().map(key));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!((got, pages), (want, 2));
    // A namespace, and a page that ends exactly at the last object: the
    // next one is empty and says so.
    let page = s.list_page("pods", Some("a"), None, 3).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let end = s.list_page("pods", Some("a"), page.next, 3).await.unwrap();
    assert!(end.items.is_empty() && end.next.is_none());
}

async fn next(w: &mut super::WatchStream) -> super::WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.recv())
        .await
        .expect("a watch event within 20 s")
        .expect("the watch is open")
        .expect("no watch error")
}

/// A watch replays what happened after its revision, then streams; another resumes in the middle.
pub async fn watches_replay_then_stream_and_resume(s: &dyn Store) {
    let base = s.revision().await.unwrap();
    let a = s.create("pods", pod("default", "a")).await.unwrap();
    s.create("namespaces", json!({"metadata": {"name": "n", "uid": "n"}}))
        .await
        .unwrap();
    let b = s.create("pods", pod("default", "b")).await.unwrap();
    let scope = Scope {
        resource: Some("pods".into()),
        namespace: None,
    };
    let mut w = s.watch(scope.clone(), base).await.unwrap();
    let e1 = next(&mut w).await;
    let e2 = next(&mut w).await;
    assert_eq!(
        (e1.event_type, e1.revision, object::name(&e1.object)),
        (EventType::Added, rv(&a), "a")
    );
    assert_eq!((e2.revision, object::name(&e2.object)), (rv(&b), "b"));
    assert_eq!(e1.resource, "pods");
    assert_eq!(rv(&e1.object), rv(&a), "an event's object carries its resourceVersion");
    let mut b2 = b.clone();
    b2["spec"] = json!({"x": 1});
    let b2 = s.update("pods", b2).await.unwrap();
    let e3 = next(&mut w).await;
    assert_eq!((e3.event_type, e3.revision), (EventType::Modified, rv(&b2)));
    s.delete("pods", "default", "a", Preconditions::default())
        .await
        .unwrap();
    let e4 = next(&mut w).await;
    assert_eq!(e4.event_type, EventType::Deleted);
    assert!(e4.revision > rv(&b2));
    assert_eq!(object::uid(&e4.object), "default-a", "a delete carries the last state");
    drop(w);
    // From a revision in the middle: what came after it, then live events.
    let mut w = s.watch(scope, rv(&a)).await.unwrap();
    assert_eq!(next(&mut w).await.revision, rv(&b));
    assert_eq!(next(&mut w).await.revision, rv(&b2));
    assert_eq!(next(&mut w).await.revision, e4.revision);
    let c = s.create("pods", pod("default", "c")).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.event_type, e.revision), (EventType::Added, rv(&c)));
}

/// A watch of one namespace, across all kinds or of one, sees nothing else.
pub async fn watches_keep_to_their_scope(s: &dyn Store) {
    let base = s.revision().await.unwrap();
    let mut all_kinds = s
        .watch(
            Scope {
                resource: None,
                namespace: Some("a".into()),
            },
            base,
        )
        .await
        .unwrap();
    let mut pods_a = s
        .watch(
            Scope {
                resource: Some("pods".into()),
                namespace: Some("a".into()),
            },
            base,
        )
        .await
        .unwrap();
    s.create("pods", pod("b", "x")).await.unwrap();
    s.create("pods", pod("ab", "x")).await.unwrap();
    s.create("services", pod("a", "svc")).await.unwrap();
    // Kinds of a group have a slash in their store key.
    s.create("apps/deployments", pod("a", "web")).await.unwrap();
    let p = s.create("pods", pod("a", "x")).await.unwrap();
    let e = next(&mut all_kinds).await;
    assert_eq!((e.resource.as_str(), object::name(&e.object)), ("services", "svc"));
    let e = next(&mut all_kinds).await;
    assert_eq!(
        (
            e.resource.as_str(),
            object::namespace(&e.object),
            object::name(&e.object)
        ),
        ("apps/deployments", "a", "web")
    );
    assert_eq!(next(&mut all_kinds).await.revision, rv(&p));
    let (deployments, _) = s.list("apps/deployments", Some("a")).await.unwrap();
    assert_eq!(deployments.len(), 1);
    let e = next(&mut pods_a).await;
    assert_eq!((e.revision, object::namespace(&e.object)), (rv(&p), "a"));
}

/// Every open watch is counted, and a dropped one stops being counted without any event.
pub async fn open_watches_are_counted_until_dropped(s: &dyn Store) {
    let before = s.watchers();
    let base = s.revision().await.unwrap();
    let w1 = s.watch(Scope::default(), base).await.unwrap();
    let w2 = s.watch(Scope::default(), base).await.unwrap();
    assert_eq!(s.watchers(), before + 2);
    drop(w1);
    drop(w2);
    for _ in 0..200 {
        if s.watchers() == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} watches still counted after their receivers were dropped",
        s.watchers() - before
    );
}

/// A watcher that reads nothing while `n` writes happen gets all of them, in order, without Expired.
pub async fn a_watcher_far_behind_catches_up_without_expiring(s: &dyn Store, n: usize) {
    let base = s.revision().await.unwrap();
    let scope = Scope {
        resource: Some("pods".into()),
        namespace: None,
    };
    let mut w = s.watch(scope, base).await.unwrap();
    let mut revisions = Vec::new();
    for i in 0..n {
        revisions.push(rv(&s.create("pods", pod("default", &format!("p{i}"))).await.unwrap()));
    }
    for want in revisions {
        assert_eq!(next(&mut w).await.revision, want);
    }
}
