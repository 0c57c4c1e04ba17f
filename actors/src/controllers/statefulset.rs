//! The StatefulSet controller, as Kubernetes' `StatefulSetController`:
//!
//! - Pods `<set>-<ordinal>` with a stable identity: the
//!   `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`
//!   labels, hostname = pod name, subdomain = `serviceName`.
//! - Per ordinal, a claim `<template>-<set>-<ordinal>` for each of
//!   `volumeClaimTemplates`, made before the pod and kept across its
//!   replacements; `persistentVolumeClaimRetentionPolicy` decides whether the
//!   claims go with the set (`whenDeleted`) or with a scaled-down pod
//!   (`whenScaled`), through owner references the garbage collector follows.
//! - OrderedReady: pods are made in ordinal order, each once all lower ones
//!   are Running and Ready (available, with minReadySeconds), and removed from
//!   the highest ordinal, one at a time. Parallel: all at once.
//! - The template's history is kept in ControllerRevisions (`<set>-<hash>`,
//!   pods labelled `controller-revision-hash`); `currentRevision` and
//!   `updateRevision` in the status. RollingUpdate replaces pods from the
//!   highest ordinal down to `partition`, at most `maxUnavailable` (1) at a
//!   time; OnDelete gives a pod the new template only once it is deleted.

use super::history::{self, revision_template};
use super::replicaset::{available, controller_ref, pod_from, ready_since};
use super::{claim, Reconciler, SyncContext, SyncResult};
use crate::events::EventKind;
use peapod_core::deletion::{self, Propagation};
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::store::StoreError;
use peapod_core::validation::deployment::scaled;
use peapod_core::validation::workloads::label_selector;
use peapod_core::writes;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The label with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label with the name of the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The StatefulSet controller.
pub struct StatefulSets;

impl Reconciler for StatefulSets {
    fn name(&self) -> &'static str {
        "statefulset-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::statefulset()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        vec![kinds::pod(), kinds::controllerrevision(), kinds::claim()]
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        Box::pin(async move { sync(&cx, &namespace, &name).await.map_err(|e| e.to_string()) })
    }
}

/// The ordinal of a pod of `set` by its name (`web-2` of `web`: 2).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i64> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok()
}

/// The name of the claim of `template` for the pod `<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &str, ordinal: i64) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn pod_revision(p: &Value) -> &str {
    p["metadata"]["labels"][REVISION_LABEL].as_str().unwrap_or("")
}

fn terminating(p: &Value) -> bool {
    object::deletion_timestamp(p).is_some()
}

fn finished(p: &Value) -> bool {
    matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded"))
}

fn running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && ready_since(p).is_some()
}

/// Running, ready for minReadySeconds, not terminating (Kubernetes' `isHealthy`).
fn healthy(p: &Value, min_ready: i64, now: chrono::DateTime<chrono::Utc>) -> bool {
    running_and_ready(p) && !terminating(p) && available(p, min_ready, now).is_ok()
}

/// The pod `ordinal` of `set` made from `template` (a revision's), named
/// `revision` in its labels.
pub fn pod_for(set: &Value, template: &Value, revision: &str, ordinal: i64) -> Value {
    let set_name = object::name(set);
    let name = format!("{set_name}-{ordinal}");
    let mut pod = pod_from(set, template);
    let meta = &mut pod["metadata"];
    if let Some(m) = meta.as_object_mut() {
        m.remove("generateName");
    }
    meta["name"] = json!(name);
    meta["labels"][POD_NAME_LABEL] = json!(name);
    meta["labels"][POD_INDEX_LABEL] = json!(ordinal.to_string());
    meta["labels"][REVISION_LABEL] = json!(revision);
    let mut spec = template["spec"].clone();
    spec["hostname"] = json!(name);
    if let Some(service) = set["spec"]["serviceName"].as_str().filter(|s| !s.is_empty()) {
        spec["subdomain"] = json!(service);
    }
    let mut volumes: Vec<Value> = spec["volumes"].as_array().cloned().unwrap_or_default();
    for t in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
        let tname = t["metadata"]["name"].as_str().unwrap_or("");
        volumes.retain(|v| v["name"] != tname);
        volumes
            .push(json!({"name": tname, "persistentVolumeClaim": {"claimName": claim_name(tname, set_name, ordinal)}}));
    }
    if !volumes.is_empty() {
        spec["volumes"] = Value::Array(volumes);
    }
    pod["spec"] = spec;
    pod
}

/// The claims the pod `ordinal` of `set` uses, as they would be made.
pub fn claims_for(set: &Value, ordinal: i64) -> Vec<Value> {
    let set_name = object::name(set);
    let selector_labels = set["spec"]["selector"]["matchLabels"].clone();
    set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let tname = t["metadata"]["name"].as_str().unwrap_or("");
            let mut meta = json!({"name": claim_name(tname, set_name, ordinal), "namespace": object::namespace(set)});
            if !t["metadata"]["annotations"].is_null() {
                meta["annotations"] = t["metadata"]["annotations"].clone();
            }
            let mut labels = t["metadata"]["labels"].as_object().cloned().unwrap_or_default();
            for (k, v) in selector_labels.as_object().into_iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            if !labels.is_empty() {
                meta["labels"] = Value::Object(labels);
            }
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": t["spec"]})
        })
        .collect()
}

/// A plain (not controller) owner reference, as claims get under a retention policy.
fn plain_ref(owner: &Value) -> Value {
    let mut r = controller_ref(owner);
    if let Some(m) = r.as_object_mut() {
        m.remove("controller");
    }
    r
}

/// Sets or removes `owner`'s reference on a claim; whether it changed.
fn own_claim(claim: &mut Value, owner: &Value, want: bool) -> bool {
    let uid = object::uid(owner);
    let has = deletion::owner_refs(claim).iter().any(|r| r.uid == uid);
    if want && !has {
        let mut refs = claim["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        refs.push(plain_ref(owner));
        claim["metadata"]["ownerReferences"] = Value::Array(refs);
        true
    } else if !want && has {
        deletion::remove_owner_ref(claim, uid)
    } else {
        false
    }
}

struct Pass<'a> {
    cx: &'a SyncContext,
    set: Value,
    claims: BTreeMap<String, Value>,
}

impl Pass<'_> {
    fn event(&self, kind: EventKind, reason: &str, message: String) {
        self.cx.events.object_event(&self.set, kind, reason, message);
    }

    /// Makes the claims of `ordinal` that do not exist; Err(wait) when one is being deleted.
    async fn ensure_claims(&mut self, ordinal: i64, pod: &str) -> Result<bool, StoreError> {
        let delete_with_set = self.set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete";
        for mut c in claims_for(&self.set, ordinal) {
            let name = object::name(&c).to_string();
            match self.claims.get(&name) {
                Some(existing) if terminating(existing) => {
                    tracing::info!("{pod}: claim {name} is being deleted; waiting");
                    return Ok(false);
                }
                Some(_) => {}
                None => {
                    if delete_with_set {
                        own_claim(&mut c, &self.set, true);
                    }
                    match writes::create(&*self.cx.store, kinds::claim(), c).await {
                        Ok(made) => {
                            self.event(
                                EventKind::Normal,
                                "SuccessfulCreate",
                                format!(
                                    "create Claim {name} Pod {pod} in StatefulSet {} success",
                                    object::name(&self.set)
                                ),
                            );
                            self.claims.insert(name, made);
                        }
                        Err(writes::CreateError::Store(StoreError::AlreadyExists { .. })) => {}
                        Err(e) => {
                            self.event(
                                EventKind::Warning,
                                "FailedCreate",
                                format!(
                                    "create Claim {name} for Pod {pod} in StatefulSet {} failed error: {e}",
                                    object::name(&self.set)
                                ),
                            );
                            return Err(StoreError::Invalid(e.to_string()));
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Brings the claims' owner references in line with the retention policy:
    /// the set owns them when `whenDeleted: Delete`; a condemned pod owns
    /// its claims when `whenScaled: Delete`.
    async fn claim_owners(&self, ordinal: i64, condemned: Option<&Value>) -> Result<(), StoreError> {
        let policy = &self.set["spec"]["persistentVolumeClaimRetentionPolicy"];
        let by_set = policy["whenDeleted"] == "Delete";
        let by_pod = policy["whenScaled"] == "Delete";
        for c in claims_for(&self.set, ordinal) {
            let Some(existing) = self.claims.get(object::name(&c)) else {
                continue;
            };
            let set = &self.set;
            let change = |o: &mut Value| {
                let mut changed = own_claim(o, set, by_set);
                if let Some(pod) = condemned {
                    changed |= own_claim(o, pod, by_pod);
                }
                changed
            };
            // Most passes change nothing: no store read for those.
            if change(&mut existing.clone()) {
                writes::modify(&*self.cx.store, kinds::claim(), existing, change).await?;
            }
        }
        Ok(())
    }

    async fn create_pod(&mut self, ordinal: i64, template: &Value, revision: &str) -> Result<bool, StoreError> {
        let set_name = object::name(&self.set).to_string();
        let pod = pod_for(&self.set, template, revision, ordinal);
        let pod_name = object::name(&pod).to_string();
        if !self.ensure_claims(ordinal, &pod_name).await? {
            return Ok(false);
        }
        match writes::create(&*self.cx.store, kinds::pod(), pod).await {
            Ok(_) => {
                self.event(
                    EventKind::Normal,
                    "SuccessfulCreate",
                    format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                );
                Ok(true)
            }
            Err(e) => {
                self.event(
                    EventKind::Warning,
                    "FailedCreate",
                    format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                );
                Err(match e {
                    writes::CreateError::Store(e) => e,
                    other => StoreError::Invalid(other.to_string()),
                })
            }
        }
    }

    async fn delete_pod(&self, pod: &Value) -> Result<(), StoreError> {
        if terminating(pod) {
            return Ok(());
        }
        if writes::delete(&*self.cx.store, kinds::pod(), pod, Propagation::Background)
            .await?
            .is_some()
        {
            self.event(
                EventKind::Normal,
                "SuccessfulDelete",
                format!(
                    "delete Pod {} in StatefulSet {} successful",
                    object::name(pod),
                    object::name(&self.set)
                ),
            );
        }
        Ok(())
    }
}

async fn sync(cx: &SyncContext, ns: &str, name: &str) -> Result<Option<Duration>, StoreError> {
    let store = &*cx.store;
    let set = match store.get(&kinds::statefulset().resource(), ns, name).await {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(selector) = label_selector(&set["spec"]["selector"]) else {
        return Ok(None);
    };
    if selector.is_empty() {
        return Ok(None);
    }
    let (pods, _) = store.list(&kinds::pod().resource(), Some(ns)).await?;
    let pods: Vec<Value> = pods
        .into_iter()
        .filter(|p| ordinal_of(name, object::name(p)).is_some())
        .collect();
    let owned_pods = claim(store, kinds::pod(), &set, &selector, pods).await?;
    let (revs, _) = store.list(&kinds::controllerrevision().resource(), Some(ns)).await?;
    let owned_revs = claim(store, kinds::controllerrevision(), &set, &selector, revs).await?;
    let (claims, _) = store.list(&kinds::claim().resource(), Some(ns)).await?;
    let claims: BTreeMap<String, Value> = claims.into_iter().map(|c| (object::name(&c).to_string(), c)).collect();
    let deleting = terminating(&set);
    let (current, update, revs) = if deleting {
        // Nothing is made for a set being deleted; the status is still kept.
        let cur = set["status"]["currentRevision"].as_str().unwrap_or("").to_string();
        let upd = set["status"]["updateRevision"].as_str().unwrap_or("").to_string();
        (
            json!({"metadata": {"name": cur}}),
            json!({"metadata": {"name": upd}}),
            owned_revs,
        )
    } else {
        let (update, revs) = history::update_revision(cx, kinds::statefulset(), &set, owned_revs).await?;
        let current_name = set["status"]["currentRevision"].as_str().unwrap_or("");
        let current = revs
            .iter()
            .find(|r| object::name(r) == current_name)
            .cloned()
            .unwrap_or_else(|| update.clone());
        (current, update, revs)
    };
    let current_name = object::name(&current).to_string();
    let update_name = object::name(&update).to_string();

    let start = set["spec"]["ordinals"]["start"].as_i64().unwrap_or(0);
    let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let end = start.saturating_add(replicas);
    let min_ready = set["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let now = chrono::Utc::now();
    let mut by_ordinal: BTreeMap<i64, Value> = BTreeMap::new();
    for p in owned_pods {
        if let Some(o) = ordinal_of(name, object::name(&p)) {
            by_ordinal.insert(o, p);
        }
    }

    let mut pass = Pass {
        cx,
        set: set.clone(),
        claims,
    };
    let mut again: Option<Duration> = None;
    if !deleting {
        again = reconcile(&mut pass, &by_ordinal, (start, end), &current, &update, min_ready, now).await?;
    }

    // Status, from the pods as the store has them now.
    let (pods, _) = store.list(&kinds::pod().resource(), Some(ns)).await?;
    let uid = object::uid(&set);
    let mine: Vec<Value> = pods
        .into_iter()
        .filter(|p| ordinal_of(name, object::name(p)).is_some())
        .filter(|p| super::replicaset::controller_of(p).is_some_and(|c| c.uid == uid))
        .collect();
    let (mut count, mut ready, mut avail, mut cur, mut upd) = (0, 0, 0, 0, 0);
    for p in &mine {
        count += 1;
        if running_and_ready(p) {
            ready += 1;
            match available(p, min_ready, now) {
                Ok(()) => avail += 1,
                Err(Some(wait)) => {
                    let d = wait + Duration::from_millis(100);
                    again = Some(again.map_or(d, |a| a.min(d)));
                }
                Err(None) => {}
            }
        }
        if !terminating(p) && pod_revision(p) == current_name {
            cur += 1;
        }
        if !terminating(p) && pod_revision(p) == update_name {
            upd += 1;
        }
    }
    let mut status = json!({"replicas": count, "readyReplicas": ready, "availableReplicas": avail,
        "currentReplicas": cur, "updatedReplicas": upd, "currentRevision": current_name,
        "updateRevision": update_name, "collisionCount": set["status"]["collisionCount"].as_i64().unwrap_or(0),
        "observedGeneration": set["metadata"]["generation"].as_i64().unwrap_or(1)});
    if set["spec"]["updateStrategy"]["type"] == "RollingUpdate" && upd == count && ready == count {
        status["currentRevision"] = json!(update_name);
        status["currentReplicas"] = json!(upd);
    }
    if let Some(m) = status.as_object_mut() {
        for f in ["readyReplicas", "currentReplicas", "updatedReplicas"] {
            if m.get(f).and_then(Value::as_i64) == Some(0) {
                m.remove(f);
            }
        }
    }
    let written = if set["status"] != status {
        writes::modify(store, kinds::statefulset(), &set, |o| {
            let mut s = status.clone();
            // A collision counted by this pass's revision write is kept.
            s["collisionCount"] = json!(o["status"]["collisionCount"]
                .as_i64()
                .unwrap_or(0)
                .max(s["collisionCount"].as_i64().unwrap_or(0)));
            if o["status"] == s {
                return false;
            }
            o["status"] = s;
            true
        })
        .await?
    } else {
        None
    };
    let final_set = written.unwrap_or(set);
    if !deleting {
        let st = &final_set["status"];
        let live: Vec<&str> = mine
            .iter()
            .map(pod_revision)
            .chain([
                st["currentRevision"].as_str().unwrap_or(""),
                st["updateRevision"].as_str().unwrap_or(""),
            ])
            .collect();
        history::truncate(cx, &final_set, &live, revs).await?;
    }
    Ok(again)
}

/// The pod work of one pass: make, replace and remove pods in the order the
/// policy asks; returns when to look again.
async fn reconcile(
    pass: &mut Pass<'_>,
    pods: &BTreeMap<i64, Value>,
    (start, end): (i64, i64),
    current: &Value,
    update: &Value,
    min_ready: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Duration>, StoreError> {
    let set = pass.set.clone();
    let monotonic = set["spec"]["podManagementPolicy"] != "Parallel";
    let strategy = &set["spec"]["updateStrategy"];
    let rolling = strategy["type"] == "RollingUpdate";
    let partition = strategy["rollingUpdate"]["partition"].as_i64().unwrap_or(0);
    let current_replicas = set["status"]["currentReplicas"].as_i64().unwrap_or(0);
    let update_name = object::name(update);
    // The revision a new pod of `ordinal` gets (Kubernetes' `newVersionedStatefulSetPod`).
    let revision_for = |ordinal: i64| -> &Value {
        let index = ordinal - start;
        let keep_current = rolling
            && if strategy["rollingUpdate"].is_null() {
                index < current_replicas
            } else {
                index < partition
            };
        if keep_current && object::name(current) != update_name {
            current
        } else {
            update
        }
    };
    let healthy = |p: &Value| healthy(p, min_ready, now);
    let mut again = None;
    let first_unhealthy = pods
        .iter()
        .filter(|(_, p)| !healthy(p))
        .map(|(o, _)| *o)
        .find(|o| (start..end).contains(o))
        .or_else(|| {
            pods.iter()
                .rev()
                .filter(|(o, p)| !(start..end).contains(*o) && !healthy(p))
                .map(|(o, _)| *o)
                .next()
        });

    for ordinal in start..end {
        match pods.get(&ordinal) {
            None => {
                let rev = revision_for(ordinal);
                let made = pass
                    .create_pod(ordinal, &revision_template(rev), object::name(rev))
                    .await?;
                if monotonic || !made {
                    return Ok(again);
                }
                continue;
            }
            Some(p) if finished(p) && !terminating(p) => {
                pass.event(
                    EventKind::Warning,
                    "RecreatingFailedPod",
                    format!(
                        "StatefulSet {}/{} is recreating failed Pod {}",
                        object::namespace(&set),
                        object::name(&set),
                        object::name(p)
                    ),
                );
                pass.delete_pod(p).await?;
                if monotonic {
                    return Ok(again);
                }
                continue;
            }
            Some(p) => {
                pass.claim_owners(ordinal, None).await?;
                // A pod whose claims were deleted under it gets them again.
                if !terminating(p) && !pass.ensure_claims(ordinal, object::name(p)).await? && monotonic {
                    return Ok(again);
                }
                if monotonic && terminating(p) {
                    return Ok(again);
                }
                if monotonic && !running_and_ready(p) {
                    return Ok(again);
                }
                if monotonic {
                    if let Err(wait) = available(p, min_ready, now) {
                        again = wait.map(|d| d + Duration::from_millis(100));
                        return Ok(again);
                    }
                }
            }
        }
    }
    // Condemned pods, from the highest ordinal.
    for (ordinal, p) in pods.iter().rev().filter(|(o, _)| !(start..end).contains(*o)) {
        if terminating(p) {
            if monotonic {
                return Ok(again);
            }
            continue;
        }
        if monotonic && !healthy(p) && first_unhealthy != Some(*ordinal) {
            return Ok(again);
        }
        pass.claim_owners(*ordinal, Some(p)).await?;
        pass.delete_pod(p).await?;
        if monotonic {
            return Ok(again);
        }
    }
    if !rolling {
        return Ok(again);
    }
    // RollingUpdate: from the highest ordinal down to the partition.
    let replicas = end - start;
    let max_unavailable = scaled(&strategy["rollingUpdate"]["maxUnavailable"], replicas, true)
        .unwrap_or(1)
        .max(1);
    let mut unavailable = (start..end).filter(|o| pods.get(o).is_none_or(|p| !healthy(p))).count() as i64;
    if unavailable >= max_unavailable {
        return Ok(again);
    }
    let floor = start.saturating_add(partition.max(0));
    for ordinal in (floor..end).rev() {
        let Some(p) = pods.get(&ordinal) else { continue };
        if pod_revision(p) != update_name && !terminating(p) {
            pass.delete_pod(p).await?;
            if healthy(p) {
                unavailable += 1;
            }
            if unavailable >= max_unavailable {
                break;
            }
        }
    }
    Ok(again)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}],
                        "volumes": [{"name": "www", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"tier": "data"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    }

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web-a", "web-a-3"), Some(3));
    }

    #[test]
    fn pods_carry_their_identity_and_claims() {
        let s = set();
        let data = history::revision_data(&s);
        let p = pod_for(&s, &revision_template(&json!({"data": data})), "web-abc", 2);
        assert_eq!(p["metadata"]["name"], "web-2");
        assert_eq!(p["metadata"]["labels"][POD_NAME_LABEL], "web-2");
        assert_eq!(p["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(p["metadata"]["labels"][REVISION_LABEL], "web-abc");
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(p["spec"]["hostname"], "web-2");
        assert_eq!(p["spec"]["subdomain"], "nginx");
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-2"}}]),
            "the claim replaces the template's volume of the same name"
        );
        let claims = claims_for(&s, 2);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0]["metadata"]["name"], "www-web-2");
        assert_eq!(claims[0]["metadata"]["labels"], json!({"tier": "data", "app": "web"}));
        assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "1Gi");
    }

    #[test]
    fn claim_owners_follow_the_policy() {
        let s = set();
        let mut c = claims_for(&s, 0).remove(0);
        assert!(own_claim(&mut c, &s, true));
        assert!(!own_claim(&mut c, &s, true), "set once");
        assert_eq!(c["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert!(c["metadata"]["ownerReferences"][0]["controller"].is_null());
        assert!(own_claim(&mut c, &s, false));
        assert!(deletion::owner_refs(&c).is_empty());
    }

    mod passes {
        use super::super::*;
        use crate::events::EventRecorder;
        use peapod_core::store::{Preconditions, SqliteStore, Store};
        use std::sync::Arc;

        struct Fixture {
            _dir: tempfile::TempDir,
            cx: SyncContext,
        }

        async fn fixture(spec: Value) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
            let mut set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox", "env": [{"name": "V", "value": "1"}]}]}}}});
            for (k, v) in spec.as_object().unwrap() {
                set["spec"][k] = v.clone();
            }
            writes::create(&*store, kinds::statefulset(), set).await.unwrap();
            let events = EventRecorder::new(store.clone(), "test".into());
            Fixture {
                _dir: dir,
                cx: SyncContext { store, events },
            }
        }

        impl Fixture {
            async fn sync(&self) -> Option<Duration> {
                sync(&self.cx, "default", "web").await.unwrap()
            }

            async fn pods(&self) -> BTreeMap<String, Value> {
                let (pods, _) = self.cx.store.list("pods", Some("default")).await.unwrap();
                pods.into_iter().map(|p| (object::name(&p).to_string(), p)).collect()
            }

            async fn set(&self) -> Value {
                self.cx.store.get("apps/statefulsets", "default", "web").await.unwrap()
            }

            /// Every pod Running, Ready since `since`, or in `phase`.
            async fn all(&self, phase: &str, since: &str) {
                for p in self.pods().await.values() {
                    writes::modify(&*self.cx.store, kinds::pod(), p, |o| {
                        o["status"]["phase"] = json!(phase);
                        o["status"]["conditions"] = json!([{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" },
                            "lastTransitionTime": since}]);
                        true
                    })
                    .await
                    .unwrap();
                }
            }

            async fn change_template(&self) {
                let set = self.set().await;
                writes::modify(&*self.cx.store, kinds::statefulset(), &set, |o| {
                    o["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("2");
                    true
                })
                .await
                .unwrap();
            }

            async fn remove(&self, name: &str) {
                self.cx
                    .store
                    .delete("pods", "default", name, Preconditions::default())
                    .await
                    .unwrap();
            }
        }

        fn deleting(p: &Value) -> bool {
            !p["metadata"]["deletionTimestamp"].is_null()
        }

        const LONG_AGO: &str = "2026-01-01T00:00:00Z";

        #[tokio::test]
        async fn ordered_ready_waits_for_min_ready_seconds() {
            let f = fixture(json!({"minReadySeconds": 30})).await;
            f.sync().await;
            assert_eq!(f.pods().await.keys().collect::<Vec<_>>(), ["web-0"]);
            f.all("Running", &object::now_rfc3339()).await;
            let again = f.sync().await.expect("a pass when web-0 becomes available");
            assert!(
                again > Duration::from_secs(25) && again <= Duration::from_secs(31),
                "{again:?}"
            );
            assert_eq!(f.pods().await.len(), 1, "web-1 waits for web-0 to be available");
            f.all("Running", LONG_AGO).await;
            f.sync().await;
            assert_eq!(f.pods().await.keys().collect::<Vec<_>>(), ["web-0", "web-1"]);
        }

        #[tokio::test]
        async fn rolling_update_takes_max_unavailable_from_the_top() {
            let f = fixture(json!({"podManagementPolicy": "Parallel",
                "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}))
            .await;
            f.sync().await;
            assert_eq!(f.pods().await.len(), 3, "Parallel: all at once");
            f.all("Running", LONG_AGO).await;
            f.sync().await;
            let set = f.set().await;
            assert_eq!(set["status"]["currentRevision"], set["status"]["updateRevision"]);
            f.change_template().await;
            f.sync().await;
            let pods = f.pods().await;
            let gone: Vec<&str> = pods.values().filter(|p| deleting(p)).map(object::name).collect();
            assert_eq!(gone, ["web-1", "web-2"], "the two highest, at once");
            let set = f.set().await;
            assert_ne!(set["status"]["currentRevision"], set["status"]["updateRevision"]);
            f.remove("web-1").await;
            f.remove("web-2").await;
            f.sync().await;
            let pods = f.pods().await;
            let update = set["status"]["updateRevision"].as_str().unwrap();
            assert_eq!(pod_revision(&pods["web-2"]), update);
            assert_eq!(pod_revision(&pods["web-1"]), update);
            assert!(!deleting(&pods["web-0"]), "two are already unavailable");
        }

        #[tokio::test]
        async fn on_delete_waits_for_the_pod_to_be_deleted() {
            let f = fixture(json!({"replicas": 2, "updateStrategy": {"type": "OnDelete"}})).await;
            for _ in 0..2 {
                f.sync().await;
                f.all("Running", LONG_AGO).await;
            }
            f.sync().await;
            let first = f.set().await["status"]["currentRevision"].as_str().unwrap().to_string();
            f.change_template().await;
            f.sync().await;
            assert!(
                f.pods().await.values().all(|p| !deleting(p)),
                "nothing replaced by itself"
            );
            let set = f.set().await;
            let update = set["status"]["updateRevision"].as_str().unwrap().to_string();
            assert_ne!(update, first);
            assert_eq!(set["status"]["currentRevision"], first.as_str());
            f.remove("web-1").await;
            f.sync().await;
            let pods = f.pods().await;
            assert_eq!(pod_revision(&pods["web-1"]), update, "a deleted pod comes back new");
            assert_eq!(pod_revision(&pods["web-0"]), first);
        }

        #[tokio::test]
        async fn a_failed_pod_is_replaced() {
            let f = fixture(json!({"replicas": 1})).await;
            f.sync().await;
            f.all("Failed", LONG_AGO).await;
            f.sync().await;
            assert!(deleting(&f.pods().await["web-0"]));
        }
    }
}
