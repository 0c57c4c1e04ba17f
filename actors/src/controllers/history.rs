//! A workload's template history in ControllerRevisions (apps/v1), as
//! Kubernetes' `controller/history` keeps it for StatefulSets and DaemonSets:
//! one revision per distinct template, named `<owner>-<hash>`, its data the
//! template as a patch that replaces it, numbered in `revision`. A template
//! equal to an older revision's (a rollback) renumbers that revision as the
//! newest rather than copying it; revisions nothing uses are deleted beyond
//! `revisionHistoryLimit`.

use super::replicaset::{controller_of, controller_ref};
use super::SyncContext;
use peapod_core::deletion::Propagation;
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::store::StoreError;
use peapod_core::writes;
use serde_json::{json, Value};

/// The label with a ControllerRevision's hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// What a ControllerRevision stores: the owner's template, as a patch that replaces it.
pub fn revision_data(owner: &Value) -> Value {
    let mut template = owner["spec"]["template"].clone();
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// The template a ControllerRevision stores.
pub fn revision_template(rev: &Value) -> Value {
    let mut t = rev["data"]["spec"]["template"].clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// A revision's number.
pub fn revision_number(rev: &Value) -> i64 {
    rev["revision"].as_i64().unwrap_or(0)
}

/// A revision's hash (its `controller.kubernetes.io/hash` label).
pub fn revision_hash(rev: &Value) -> &str {
    rev["metadata"]["labels"][HASH_LABEL].as_str().unwrap_or("")
}

/// Finds or makes the revision of the owner's current template among the
/// ones it owns (`owned`); returns it and all of them, oldest first. A name
/// taken by another template raises the owner's `status.collisionCount`.
pub async fn update_revision(
    cx: &SyncContext,
    kind: &'static Kind,
    owner: &Value,
    owned: Vec<Value>,
) -> Result<(Value, Vec<Value>), StoreError> {
    let store = &*cx.store;
    let data = revision_data(owner);
    let mut revs = owned;
    revs.sort_by_key(revision_number);
    let next = revs.last().map_or(0, revision_number) + 1;
    if let Some(i) = revs.iter().rposition(|r| r["data"] == data) {
        if i + 1 < revs.len() {
            let written = writes::modify(store, kinds::controllerrevision(), &revs[i], |r| {
                r["revision"] = json!(next);
                true
            })
            .await?
            .unwrap_or_else(|| revs[i].clone());
            revs.remove(i);
            revs.push(written);
        }
        let update = revs.last().cloned().unwrap_or_default();
        return Ok((update, revs));
    }
    let start = owner["status"]["collisionCount"].as_i64().unwrap_or(0);
    let mut collisions = start;
    loop {
        let hash = super::deployment::template_hash(&data, (collisions > 0).then_some(collisions));
        let name = format!("{}-{hash}", object::name(owner));
        let mut labels = owner["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.insert(HASH_LABEL.into(), json!(hash));
        let mut rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": object::namespace(owner),
                "labels": labels, "ownerReferences": [controller_ref(owner)]},
            "data": data, "revision": next});
        // The owner's annotations (a change-cause) go with the revision, as in Kubernetes.
        if owner["metadata"]["annotations"].is_object() {
            rev["metadata"]["annotations"] = owner["metadata"]["annotations"].clone();
        }
        match writes::create(store, kinds::controllerrevision(), rev).await {
            Ok(r) => {
                if collisions != start {
                    writes::modify(store, kind, owner, |o| {
                        o["status"]["collisionCount"] = json!(collisions);
                        true
                    })
                    .await?;
                }
                revs.push(r.clone());
                return Ok((r, revs));
            }
            Err(writes::CreateError::Store(StoreError::AlreadyExists { .. })) => {
                let existing = store
                    .get(&kinds::controllerrevision().resource(), object::namespace(owner), &name)
                    .await?;
                if existing["data"] == data && controller_of(&existing).is_none() {
                    // An orphan of this template: the next pass adopts it.
                    return Err(StoreError::Invalid(format!(
                        "controllerrevision {name} exists without an owner; it will be adopted"
                    )));
                }
                collisions += 1;
            }
            Err(writes::CreateError::Store(e)) => return Err(e),
            Err(e) => return Err(StoreError::Invalid(e.to_string())),
        }
    }
}

/// Deletes the oldest revisions not `live` (by name) beyond the owner's
/// `revisionHistoryLimit` (10).
pub async fn truncate(cx: &SyncContext, owner: &Value, live: &[&str], mut revs: Vec<Value>) -> Result<(), StoreError> {
    let limit = owner["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10).max(0) as usize;
    revs.retain(|r| !live.contains(&object::name(r)));
    revs.sort_by_key(revision_number);
    let surplus = revs.len().saturating_sub(limit);
    for r in revs.into_iter().take(surplus) {
        writes::delete(&*cx.store, kinds::controllerrevision(), &r, Propagation::Background).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_holds_the_template_as_a_replacing_patch() {
        let owner = json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": []}}}});
        let data = revision_data(&owner);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(revision_template(&json!({"data": data})), owner["spec"]["template"]);
    }
}
