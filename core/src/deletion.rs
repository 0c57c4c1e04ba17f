//! Deletion as the API server does it: finalizers hold an object in the
//! store until whoever put them there removes them, and a propagation
//! policy says what becomes of the object's dependents (those whose
//! `metadata.ownerReferences` name it).
//!
//! An object is removed from the store only when it is marked deleted, its
//! grace period is over (`deletionGracePeriodSeconds: 0`, set by whoever
//! finished it: the pod actor for a pod, the API for a kind without graceful
//! deletion) and no finalizer is left. Whoever removes the last finalizer of
//! such an object removes the object ([`update_or_remove`]).

use crate::kinds::Kind;
use crate::object;
use crate::store::{Preconditions, Store, StoreError, StoreResult};
use serde_json::{json, Value};

/// The finalizer of an object deleted with `propagationPolicy: Orphan`: the
/// garbage collector clears its dependents' references to it, then removes it.
pub const ORPHAN: &str = "orphan";
/// The finalizer of an object deleted with `propagationPolicy: Foreground`:
/// the garbage collector deletes its dependents, and removes it once none
/// with `blockOwnerDeletion` is left.
pub const FOREGROUND: &str = "foregroundDeletion";

/// What deleting an object does to its dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The object goes now; the garbage collector deletes its dependents after.
    Background,
    /// The object stays (`foregroundDeletion`) until its blocking dependents are gone.
    Foreground,
    /// The dependents stay, their references to the object removed.
    Orphan,
}

impl Propagation {
    /// `propagationPolicy` of DeleteOptions (query or body); `orphanDependents` is its old form.
    pub fn parse(policy: Option<&str>, orphan_dependents: Option<bool>) -> Result<Propagation, String> {
        match (policy, orphan_dependents) {
            (Some(_), Some(_)) => Err("orphanDependents and propagationPolicy cannot both be set".into()),
            (None | Some(""), None) => Ok(Propagation::Background),
            (None, Some(true)) => Ok(Propagation::Orphan),
            (None, Some(false)) => Ok(Propagation::Background),
            (Some("Background"), None) => Ok(Propagation::Background),
            (Some("Foreground"), None) => Ok(Propagation::Foreground),
            (Some("Orphan"), None) => Ok(Propagation::Orphan),
            (Some(p), None) => Err(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )),
        }
    }

    /// The finalizer the policy puts on the deleted object.
    pub fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND),
            Propagation::Orphan => Some(ORPHAN),
        }
    }
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// Adds `finalizer` unless the object has it.
pub fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let mut f = finalizers(obj);
    if !f.iter().any(|x| x == finalizer) {
        f.push(finalizer.to_string());
        if let Some(m) = object::metadata_mut(obj) {
            m.insert("finalizers".into(), json!(f));
        }
    }
}

/// Removes `finalizer`; true if it was there.
pub fn remove_finalizer(obj: &mut Value, finalizer: &str) -> bool {
    let f = finalizers(obj);
    if !f.iter().any(|x| x == finalizer) {
        return false;
    }
    let rest: Vec<String> = f.into_iter().filter(|x| x != finalizer).collect();
    if let Some(m) = object::metadata_mut(obj) {
        if rest.is_empty() {
            m.remove("finalizers");
        } else {
            m.insert("finalizers".into(), json!(rest));
        }
    }
    true
}

/// Whether nothing more holds the object: marked deleted, its grace period
/// over, and no finalizer left.
pub fn finished(obj: &Value) -> bool {
    object::deletion_timestamp(obj).is_some()
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(0)
        && finalizers(obj).is_empty()
}

/// The grace period is over: `deletionGracePeriodSeconds: 0`, and a
/// deletionTimestamp of now if it had none.
pub fn end_grace(obj: &mut Value) {
    if object::deletion_timestamp(obj).is_none() {
        object::set_meta(obj, "deletionTimestamp", object::now_rfc3339());
    }
    if let Some(m) = object::metadata_mut(obj) {
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
    }
}

/// Writes `next`, or removes the object if `next` is [`finished`] and of a
/// kind without graceful deletion; the object's uid and resourceVersion are
/// the preconditions. Returns the stored object, or its last state when
/// removed. An object of a kind with graceful deletion (a pod) is removed
/// only by the actor that ends it ([`remove`]), which sees the update: the
/// grace period a client asked for says nothing of whether its containers
/// are gone.
pub async fn update_or_remove(store: &dyn Store, kind: &Kind, next: Value) -> StoreResult<Value> {
    let resource = kind.resource();
    let resource = resource.as_str();
    if kind.graceful_deletion || !finished(&next) {
        return store.update(resource, next).await;
    }
    let rv = object::resource_version(&next);
    let pre = Preconditions {
        uid: Some(object::uid(&next).to_string()),
        resource_version: (rv > 0).then_some(rv),
    };
    store
        .delete(resource, object::namespace(&next), object::name(&next), pre)
        .await
}

/// Ends an object whose grace period is over (a pod whose containers are
/// gone, an object of a kind deleted at once): removes it, or, while
/// finalizers hold it, marks it so that removing the last one removes it.
/// Returns the last state when it was removed, `None` while it waits.
pub async fn remove(
    store: &dyn Store,
    resource: &str,
    namespace: &str,
    name: &str,
    pre: Preconditions,
) -> StoreResult<Option<Value>> {
    for _ in 0..10 {
        let cur = store.get(resource, namespace, name).await?;
        if pre.uid.as_deref().is_some_and(|u| u != object::uid(&cur)) {
            return Err(StoreError::Conflict {
                resource: resource.into(),
                name: name.into(),
                reason: "the object has been replaced".into(),
            });
        }
        let mut next = cur.clone();
        end_grace(&mut next);
        if !finished(&next) {
            if next == cur {
                return Ok(None);
            }
            match store.update(resource, next).await {
                Ok(_) => return Ok(None),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let pre = Preconditions {
            uid: Some(object::uid(&cur).to_string()),
            resource_version: pre.resource_version.or(Some(object::resource_version(&cur))),
        };
        match store.delete(resource, namespace, name, pre).await {
            Ok(v) => return Ok(Some(v)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        resource: resource.into(),
        name: name.into(),
        reason: "it kept changing".into(),
    })
}

/// An owner named in `metadata.ownerReferences`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub controller: bool,
    pub block_owner_deletion: bool,
}

/// `metadata.ownerReferences`.
pub fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| OwnerRef {
            api_version: r["apiVersion"].as_str().unwrap_or("").into(),
            kind: r["kind"].as_str().unwrap_or("").into(),
            name: r["name"].as_str().unwrap_or("").into(),
            uid: r["uid"].as_str().unwrap_or("").into(),
            controller: r["controller"].as_bool().unwrap_or(false),
            block_owner_deletion: r["blockOwnerDeletion"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// Removes the references to owner `uid`; true if there were any.
pub fn remove_owner_ref(obj: &mut Value, uid: &str) -> bool {
    let Some(m) = object::metadata_mut(obj) else {
        return false;
    };
    let Some(refs) = m.get("ownerReferences").and_then(Value::as_array) else {
        return false;
    };
    let rest: Vec<Value> = refs.iter().filter(|r| r["uid"] != uid).cloned().collect();
    if rest.len() == refs.len() {
        return false;
    }
    if rest.is_empty() {
        m.remove("ownerReferences");
    } else {
        m.insert("ownerReferences".into(), Value::Array(rest));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn propagation_policies_parse_as_the_api_server_takes_them() {
        assert_eq!(Propagation::parse(None, None), Ok(Propagation::Background));
        assert_eq!(
            Propagation::parse(Some("Foreground"), None),
            Ok(Propagation::Foreground)
        );
        assert_eq!(Propagation::parse(None, Some(true)), Ok(Propagation::Orphan));
        assert!(Propagation::parse(Some("Orphan"), Some(true)).is_err());
        assert!(Propagation::parse(Some("orphan"), None)
            .unwrap_err()
            .starts_with("propagationPolicy: Unsupported value: \"orphan\""));
    }

    #[test]
    fn finalizers_and_owner_refs_are_added_and_removed() {
        let mut o = json!({"metadata": {"name": "a", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1", "controller": true, "blockOwnerDeletion": true},
            {"apiVersion": "v1", "kind": "Pod", "name": "q", "uid": "u2"}]}});
        add_finalizer(&mut o, ORPHAN);
        add_finalizer(&mut o, ORPHAN);
        assert_eq!(finalizers(&o), [ORPHAN]);
        let refs = owner_refs(&o);
        assert!(refs[0].controller && refs[0].block_owner_deletion && !refs[1].controller);
        assert!(remove_owner_ref(&mut o, "u1"));
        assert!(!remove_owner_ref(&mut o, "u1"));
        assert!(remove_owner_ref(&mut o, "u2"));
        assert!(o["metadata"].get("ownerReferences").is_none());
        assert!(!finished(&o));
        end_grace(&mut o);
        assert!(!finished(&o), "a finalizer still holds it");
        assert!(remove_finalizer(&mut o, ORPHAN));
        assert!(finished(&o));
    }

    #[tokio::test]
    async fn remove_waits_for_finalizers_and_the_last_one_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        let obj =
            json!({"metadata": {"name": "a", "namespace": "default", "uid": "u", "finalizers": ["example.com/x"]}});
        store.create("events", obj).await.unwrap();
        let waited = remove(&store, "events", "default", "a", Preconditions::default())
            .await
            .unwrap();
        assert!(waited.is_none());
        let mut cur = store.get("events", "default", "a").await.unwrap();
        assert!(object::deletion_timestamp(&cur).is_some());
        assert_eq!(cur["metadata"]["deletionGracePeriodSeconds"], 0);
        remove_finalizer(&mut cur, "example.com/x");
        update_or_remove(&store, crate::kinds::event(), cur).await.unwrap();
        assert!(matches!(
            store.get("events", "default", "a").await,
            Err(StoreError::NotFound { .. })
        ));
        // Without finalizers it goes at once; a replaced object is not touched.
        let obj = json!({"metadata": {"name": "b", "namespace": "default", "uid": "v"}});
        store.create("events", obj).await.unwrap();
        let other = Preconditions {
            uid: Some("someone-else".into()),
            resource_version: None,
        };
        assert!(remove(&store, "events", "default", "b", other).await.is_err());
        assert!(remove(&store, "events", "default", "b", Preconditions::default())
            .await
            .unwrap()
            .is_some());
    }
}
