//! Writes as the API server makes them, for everyone who writes objects:
//! the API's handlers and the controllers (which create pods and
//! ReplicaSets without going through HTTP, but through the same admission).

use crate::admission;
use crate::deletion;
use crate::field::FieldErrors;
use crate::kinds::Kind;
use crate::object;
use crate::store::{Store, StoreError, StoreResult};
use serde_json::{json, Value};

/// Why a create was refused.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Admission refused the object.
    #[error("{kind} \"{name}\" is invalid: {errors}")]
    Invalid {
        kind: &'static str,
        name: String,
        errors: FieldErrors,
    },
    /// A LimitRange or ResourceQuota of its namespace refused it.
    #[error("{0}")]
    Forbidden(String),
    /// The store refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes `obj` a new object of `kind`: a name from `generateName` if it has
/// none, `apiVersion`/`kind`, defaults and validation, then uid,
/// creationTimestamp and generation 1 (and none of the fields only the
/// server sets). The namespace must already be in `metadata.namespace`.
pub fn admit_new(kind: &'static Kind, obj: &mut Value) -> Result<(), FieldErrors> {
    if object::name(obj).is_empty() {
        if let Some(prefix) = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            object::set_meta(obj, "name", format!("{prefix}{}", object::random_suffix(5)));
        }
    }
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind);
    // The uid first: a Job's admission builds its selector from it.
    object::set_meta(obj, "uid", object::new_uid());
    object::set_meta(obj, "creationTimestamp", object::now_rfc3339());
    (kind.admit_create)(obj)?;
    if let Some(m) = object::metadata_mut(obj) {
        m.insert("generation".into(), json!(1));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
    }
    Ok(())
}

/// Admits and stores a new object; a name taken by chance (from
/// `generateName`) is drawn again, as the API server's clients retry.
pub async fn create(store: &dyn Store, kind: &'static Kind, obj: Value) -> Result<Value, CreateError> {
    let generated = object::name(&obj).is_empty();
    for _ in 0..5 {
        let mut next = obj.clone();
        admit_new(kind, &mut next).map_err(|errors| CreateError::Invalid {
            kind: kind.kind,
            name: object::name(&next).to_string(),
            errors,
        })?;
        match store_admitted(store, kind, next).await {
            Err(CreateError::Store(StoreError::AlreadyExists { .. })) if generated => continue,
            r => return r,
        }
    }
    Err(CreateError::Store(StoreError::AlreadyExists {
        resource: kind.plural.into(),
        name: object::name(&obj).into(),
    }))
}

/// Stores an object that passed [`admit_new`], after the admission that
/// reads the namespace's LimitRanges and ResourceQuotas, under the
/// namespace's admission lock (so quota counts stay exact).
pub async fn store_admitted(store: &dyn Store, kind: &'static Kind, mut obj: Value) -> Result<Value, CreateError> {
    if !admission::applies_to(kind) {
        return Ok(store.create(&kind.resource(), obj).await?);
    }
    let ns = object::namespace(&obj).to_string();
    admission::locked(store, &ns, |quotas| async move {
        let before = obj.clone();
        admission::admit_with(store, kind, &mut obj, &quotas)
            .await
            .map_err(|e| match e {
                admission::Refusal::Forbidden(m) => CreateError::Forbidden(m),
                admission::Refusal::Store(e) => CreateError::Store(e),
            })?;
        if obj != before {
            // LimitRange defaults are validated as if the client had written
            // them (a default limit below the request is refused).
            (kind.admit_create)(&mut obj).map_err(|errors| CreateError::Invalid {
                kind: kind.kind,
                name: object::name(&obj).to_string(),
                errors,
            })?;
        }
        Ok(store.create(&kind.resource(), obj).await?)
    })
    .await?
}

/// Applies `change` to the stored object with `obj`'s uid, retrying on
/// conflicts (get, change, update, as every controller does); `change`
/// returns whether it changed anything. Returns the object as written,
/// or `None` when it is gone (or replaced) or nothing changed. An object
/// whose last finalizer the change removes is removed
/// ([`deletion::update_or_remove`]).
pub async fn modify(
    store: &dyn Store,
    kind: &'static Kind,
    obj: &Value,
    mut change: impl FnMut(&mut Value) -> bool,
) -> StoreResult<Option<Value>> {
    let resource = kind.resource();
    for _ in 0..10 {
        let cur = match store.get(&resource, object::namespace(obj), object::name(obj)).await {
            Ok(c) if object::uid(&c) == object::uid(obj) => c,
            Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut next = cur.clone();
        if !change(&mut next) {
            return Ok(None);
        }
        match deletion::update_or_remove(store, kind, next).await {
            Ok(v) => return Ok(Some(v)),
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        resource: kind.plural.into(),
        name: object::name(obj).into(),
        reason: "it kept changing".into(),
    })
}

/// Deletes an object as the API does for `propagation`: a kind with
/// graceful deletion is marked (its actor ends it), any other has its grace
/// period over at once, and the propagation's finalizer is added. Returns
/// the object as written, or `None` when it is gone or was deleted so already.
pub async fn delete(
    store: &dyn Store,
    kind: &'static Kind,
    obj: &Value,
    propagation: deletion::Propagation,
) -> StoreResult<Option<Value>> {
    modify(store, kind, obj, |o| {
        let before = o.clone();
        if kind.graceful_deletion {
            object::mark_deleted(o, None);
        } else {
            deletion::end_grace(o);
        }
        if let Some(f) = propagation.finalizer() {
            deletion::add_finalizer(o, f);
        }
        *o != before
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn create_admits_and_modify_retries_against_the_stored_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        let pod = json!({"metadata": {"generateName": "web-", "namespace": "default"},
            "spec": {"containers": [{"name": "a", "image": "busybox"}]}});
        let made = create(&store, kinds::pod(), pod).await.unwrap();
        let name = object::name(&made).to_string();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(made["metadata"]["generation"], 1);
        assert_eq!(made["spec"]["restartPolicy"], "Always", "defaults are filled");
        assert!(!object::uid(&made).is_empty());

        let bad = json!({"metadata": {"name": "x", "namespace": "default"}, "spec": {"containers": []}});
        let err = create(&store, kinds::pod(), bad).await.unwrap_err().to_string();
        assert!(err.contains("spec.containers: Required value"), "{err}");

        // A stale copy is enough: the change is applied to the stored one.
        let stale = made.clone();
        let mut other = made.clone();
        other["metadata"]["labels"] = json!({"a": "1"});
        store.update("pods", other).await.unwrap();
        let out = modify(&store, kinds::pod(), &stale, |p| {
            p["metadata"]["labels"]["b"] = json!("2");
            true
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert!(modify(&store, kinds::pod(), &stale, |_| false).await.unwrap().is_none());
    }
}
