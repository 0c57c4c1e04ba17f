//! The Deployment controller, as Kubernetes' `DeploymentController`:
//!
//! - One ReplicaSet per pod template, named `<deployment>-<hash>` and
//!   labelled `pod-template-hash: <hash>` (selector and template too), its
//!   revision in `deployment.kubernetes.io/revision`. A template equal to an
//!   old ReplicaSet's (a rollback) reuses that ReplicaSet, with the next revision.
//! - RollingUpdate: the new ReplicaSet grows while the total stays within
//!   replicas + maxSurge (rounded up); old ones shrink, unavailable pods
//!   first, while the available stay at least replicas − maxUnavailable
//!   (rounded down). Counts that are not settled yet (a ReplicaSet scaled
//!   down whose pods still run) count at their larger value, so neither
//!   bound is crossed in between. Recreate: the old ReplicaSets go to 0,
//!   and the new one grows once no old pod is left.
//! - A change of replicas in the middle of a rollout is shared among the
//!   ReplicaSets in proportion to their sizes (Kubernetes' proportional
//!   scaling, from their `max-replicas` annotations), before the rollout goes on.
//! - `paused` stops rollouts (scaling still applies); `revisionHistoryLimit`
//!   old ReplicaSets with no pods are kept.
//! - Status: replicas, updated, ready, available, unavailable, the
//!   Available and Progressing conditions (`progressDeadlineSeconds`,
//!   `ProgressDeadlineExceeded`), observedGeneration, collisionCount.

use super::replicaset::controller_ref;
use super::{claim, Reconciler, SyncContext, SyncResult};
use crate::events::EventKind;
use peapod_core::deletion::{self, Propagation};
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::store::StoreError;
use peapod_core::validation::deployment::fenceposts;
use peapod_core::validation::workloads::label_selector;
use peapod_core::writes;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The revision annotation, on Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Why a revision was made (`kubectl annotate` / `--record`), copied to its ReplicaSet.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The label that tells the ReplicaSets of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    DESIRED,
    MAX_REPLICAS,
    "deployment.kubernetes.io/revision-history",
];

/// The Deployment controller.
pub struct Deployments;

impl Reconciler for Deployments {
    fn name(&self) -> &'static str {
        "deployment-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::deployment()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        vec![kinds::replicaset()]
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        Box::pin(async move { sync(&cx, &namespace, &name).await.map_err(|e| e.to_string()) })
    }
}

/// The hash of a pod template (FNV-1a 32 of its canonical JSON, and the
/// collision count), in the alphabet of generated names, as Kubernetes'
/// `ComputeHash` encodes it.
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let template = &zero_values_dropped(template);
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// `v` without the fields that hold nothing (null, `{}`, `[]`), at any
/// depth: Kubernetes compares templates as Go structs, where those and an
/// absent field are the same zero value. A template written back by
/// `kubectl rollout undo` (Go's encoding of the ReplicaSet's: `creationTimestamp:
/// null`, `resources: {}`) is then the template it came from.
pub fn zero_values_dropped(v: &Value) -> Value {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), zero_values_dropped(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(zero_values_dropped).collect()),
        other => other.clone(),
    }
}

/// Whether a ReplicaSet runs `template` (its own without the hash label,
/// compared as [`zero_values_dropped`] makes them).
pub fn runs_template(rs: &Value, template: &Value) -> bool {
    zero_values_dropped(&template_without_hash(rs)) == zero_values_dropped(template)
}

/// A ReplicaSet's template without the hash label, to compare with the Deployment's.
pub fn template_without_hash(rs: &Value) -> Value {
    let mut t = rs["spec"]["template"].clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    t
}

/// A ReplicaSet's revision (0 if it has none).
pub fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

/// Pods of the ReplicaSet that may still exist: its spec, or its status while that lags behind.
fn may_exist(rs: &Value) -> i64 {
    spec_replicas(rs).max(rs["status"]["replicas"].as_i64().unwrap_or(0))
}

/// Available pods the ReplicaSet can be counted on for: never more than its spec.
fn counted_available(rs: &Value) -> i64 {
    spec_replicas(rs).min(rs["status"]["availableReplicas"].as_i64().unwrap_or(0))
}

fn by_age(a: &Value, b: &Value) -> std::cmp::Ordering {
    let ts = |o: &Value| o["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
    ts(a).cmp(&ts(b)).then_with(|| object::name(a).cmp(object::name(b)))
}

async fn sync(cx: &SyncContext, ns: &str, name: &str) -> Result<Option<Duration>, StoreError> {
    let store = &*cx.store;
    let kind = kinds::deployment();
    let d = match store.get(&kind.resource(), ns, name).await {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(selector) = label_selector(&d["spec"]["selector"]) else {
        return Ok(None);
    };
    if selector.is_empty() {
        return Ok(None);
    }
    let (all, _) = store.list(&kinds::replicaset().resource(), Some(ns)).await?;
    let owned = claim(store, kinds::replicaset(), &d, &selector, all).await?;
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let template = &d["spec"]["template"];
    let (mut new, mut olds): (Vec<Value>, Vec<Value>) = owned
        .into_iter()
        .filter(|rs| object::deletion_timestamp(rs).is_none())
        .partition(|rs| runs_template(rs, template));
    new.sort_by(by_age);
    // Two ReplicaSets of one template (one adopted): the oldest is the new one.
    let mut new = if new.is_empty() { None } else { Some(new.remove(0)) };
    olds.extend(new.iter().skip(1).cloned());
    olds.sort_by(by_age);
    let deleting = object::deletion_timestamp(&d).is_some();
    let paused = d["spec"]["paused"].as_bool().unwrap_or(false);
    let mut created = false;
    if !deleting {
        let max_old = olds.iter().map(revision).max().unwrap_or(0);
        new = match new {
            Some(rs) if revision(&rs) <= max_old && !paused => Some(promote(cx, &d, &rs, max_old + 1).await?),
            Some(rs) => Some(rs),
            None if paused => None,
            None => match create_new(cx, &d, max_old + 1).await? {
                Created::Made(rs) => {
                    created = true;
                    Some(rs)
                }
                Created::Collision => return Ok(Some(Duration::from_millis(100))),
            },
        };
    }
    let mut again = None;
    if !deleting {
        if paused || scaling_event(&olds, new.as_ref(), want) {
            // A paused Deployment only scales; so does any pass where the
            // replicas changed, before the rollout goes on.
            resize(cx, &d, new.as_mut(), &mut olds, want).await?;
        } else if let Some(rs) = new.as_mut() {
            if d["spec"]["strategy"]["type"] == "Recreate" {
                again = recreate(cx, &d, rs, &mut olds, want).await?;
            } else {
                rolling(cx, &d, rs, &mut olds, want).await?;
            }
        }
        cleanup(cx, &d, &olds).await?;
    }
    let status_again = update_status(cx, &d, new.as_ref(), &olds, created).await?;
    Ok(match (again, status_again) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

enum Created {
    Made(Value),
    /// A ReplicaSet of that name with another template: collisionCount went up.
    Collision,
}

/// The ReplicaSet of the Deployment's current template, with revision `rev`.
async fn create_new(cx: &SyncContext, d: &Value, rev: i64) -> Result<Created, StoreError> {
    let collisions = d["status"]["collisionCount"].as_i64();
    let mut template = d["spec"]["template"].clone();
    let hash = template_hash(&template, collisions);
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut annotations = d["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    annotations.retain(|k, _| !NOT_COPIED.contains(&k.as_str()));
    annotations.insert(REVISION.into(), json!(rev.to_string()));
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    annotations.insert(DESIRED.into(), json!(want.to_string()));
    annotations.insert(MAX_REPLICAS.into(), json!((want + fenceposts(d).0).to_string()));
    let name = format!("{}-{hash}", object::name(d));
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": object::namespace(d), "labels": template["metadata"]["labels"],
            "annotations": annotations, "ownerReferences": [controller_ref(d)]},
        "spec": {"replicas": 0, "minReadySeconds": d["spec"]["minReadySeconds"], "selector": selector,
            "template": template}});
    match writes::create(&*cx.store, kinds::replicaset(), rs).await {
        Ok(made) => {
            cx.events.object_event(
                d,
                EventKind::Normal,
                "ScalingReplicaSet",
                format!("Created new replica set \"{name}\""),
            );
            Ok(Created::Made(made))
        }
        Err(writes::CreateError::Store(StoreError::AlreadyExists { .. })) => {
            writes::modify(&*cx.store, kinds::deployment(), d, |o| {
                o["status"]["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
                true
            })
            .await?;
            Ok(Created::Collision)
        }
        Err(writes::CreateError::Store(e)) => Err(e),
        Err(e @ (writes::CreateError::Invalid { .. } | writes::CreateError::Forbidden(_))) => {
            Err(StoreError::Invalid(e.to_string()))
        }
    }
}

/// An old ReplicaSet whose template is current again (a rollback): it gets the next revision.
async fn promote(cx: &SyncContext, d: &Value, rs: &Value, rev: i64) -> Result<Value, StoreError> {
    let cause = d["metadata"]["annotations"][CHANGE_CAUSE].clone();
    let out = writes::modify(&*cx.store, kinds::replicaset(), rs, |o| {
        o["metadata"]["annotations"][REVISION] = json!(rev.to_string());
        if !cause.is_null() {
            o["metadata"]["annotations"][CHANGE_CAUSE] = cause.clone();
        }
        true
    })
    .await?;
    Ok(out.unwrap_or_else(|| rs.clone()))
}

fn desired_annotation(rs: &Value) -> Option<i64> {
    rs["metadata"]["annotations"][DESIRED].as_str()?.parse().ok()
}

/// Whether the Deployment's replicas changed since its active ReplicaSets
/// were last sized (their `desired-replicas` annotation), as Kubernetes'
/// `isScalingEvent`.
fn scaling_event(olds: &[Value], new: Option<&Value>, want: i64) -> bool {
    olds.iter()
        .chain(new)
        .filter(|rs| spec_replicas(rs) > 0)
        .any(|rs| desired_annotation(rs).is_some_and(|n| n != want))
}

/// How Kubernetes shares a change of the Deployment's size among its active
/// ReplicaSets (`sizes`: each one's replicas and its `max-replicas`
/// annotation, in the order the change goes: larger first, then newer first
/// when growing and older first when shrinking). `allowed` is replicas plus
/// maxSurge (0 when scaling to zero), `fallback` the Deployment's status
/// replicas for a ReplicaSet without the annotation. Returns the new sizes;
/// what rounding leaves over goes to the first.
pub fn proportions(sizes: &[(i64, Option<i64>)], allowed: i64, fallback: i64) -> Vec<i64> {
    let total: i64 = sizes.iter().map(|(n, _)| n).sum();
    let to_add = allowed - total;
    let mut added = 0;
    let mut out: Vec<i64> = sizes
        .iter()
        .map(|&(n, max_before)| {
            if n == 0 || to_add == 0 || to_add == added {
                return n;
            }
            let fraction = if allowed == 0 {
                -n
            } else {
                let before = max_before.filter(|m| *m > 0).unwrap_or(fallback).max(1);
                // Rounded half away from zero, as Go's math.Round.
                (n.saturating_mul(allowed) as f64 / before as f64).round() as i64 - n
            };
            let room = to_add - added;
            let p = if to_add > 0 {
                fraction.min(room)
            } else {
                fraction.max(room)
            };
            added += p;
            n + p
        })
        .collect();
    if let Some(first) = out.first_mut() {
        if to_add != 0 {
            *first = (*first + to_add - added).max(0);
        }
    }
    out
}

/// Kubernetes' `scale`: the one active ReplicaSet (or the newest) takes the
/// replicas; a saturated new one leaves the old ones none; otherwise, in a
/// rolling update, the change is shared in proportion to their sizes.
async fn resize(
    cx: &SyncContext,
    d: &Value,
    new: Option<&mut Value>,
    olds: &mut [Value],
    want: i64,
) -> Result<(), StoreError> {
    let has_new = new.is_some();
    let mut every: Vec<&mut Value> = olds.iter_mut().chain(new).collect();
    let new_index = has_new.then(|| every.len() - 1);
    let active: Vec<usize> = (0..every.len()).filter(|i| spec_replicas(every[*i]) > 0).collect();
    let only = match active.as_slice() {
        [one] => Some(*one),
        [] => new_index.or_else(|| (0..every.len()).max_by_key(|i| revision(every[*i]))),
        _ => None,
    };
    if let Some(i) = only {
        if spec_replicas(every[i]) != want || desired_annotation(every[i]) != Some(want) {
            *every[i] = scale(cx, d, every[i], want).await?;
        }
        return Ok(());
    }
    if let Some(n) = new_index {
        let rs = &every[n];
        let saturated = spec_replicas(rs) == want
            && desired_annotation(rs) == Some(want)
            && rs["status"]["availableReplicas"].as_i64().unwrap_or(0) == want;
        if saturated {
            for i in active.into_iter().filter(|i| *i != n) {
                *every[i] = scale(cx, d, every[i], 0).await?;
            }
            return Ok(());
        }
    }
    if d["spec"]["strategy"]["type"] != "RollingUpdate" {
        return Ok(());
    }
    let allowed = if want > 0 { want + fenceposts(d).0 } else { 0 };
    let total: i64 = active.iter().map(|i| spec_replicas(every[*i])).sum();
    let growing = allowed > total;
    let created = |rs: &Value| rs["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
    let mut order = active;
    order.sort_by(|a, b| {
        let (a, b) = (&*every[*a], &*every[*b]);
        let by_age = if growing {
            created(b).cmp(&created(a))
        } else {
            created(a).cmp(&created(b))
        };
        spec_replicas(b).cmp(&spec_replicas(a)).then(by_age)
    });
    let sizes: Vec<(i64, Option<i64>)> = order
        .iter()
        .map(|i| {
            let rs = &*every[*i];
            let max = rs["metadata"]["annotations"][MAX_REPLICAS]
                .as_str()
                .and_then(|m| m.parse().ok());
            (spec_replicas(rs), max)
        })
        .collect();
    let fallback = d["status"]["replicas"].as_i64().unwrap_or(0);
    for (i, to) in order.into_iter().zip(proportions(&sizes, allowed, fallback)) {
        if spec_replicas(every[i]) != to || desired_annotation(every[i]) != Some(want) {
            *every[i] = scale(cx, d, every[i], to).await?;
        }
    }
    Ok(())
}

/// Sets a ReplicaSet's replicas, with the event Kubernetes records.
async fn scale(cx: &SyncContext, d: &Value, rs: &Value, to: i64) -> Result<Value, StoreError> {
    let from = spec_replicas(rs);
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let max = want + fenceposts(d).0;
    let out = writes::modify(&*cx.store, kinds::replicaset(), rs, |o| {
        o["spec"]["replicas"] = json!(to);
        o["metadata"]["annotations"][DESIRED] = json!(want.to_string());
        o["metadata"]["annotations"][MAX_REPLICAS] = json!(max.to_string());
        true
    })
    .await?;
    let Some(out) = out else {
        return Ok(rs.clone());
    };
    if to == from {
        return Ok(out);
    }
    let way = if to > from { "up" } else { "down" };
    cx.events.object_event(
        d,
        EventKind::Normal,
        "ScalingReplicaSet",
        format!("Scaled {way} replica set {} from {from} to {to}", object::name(rs)),
    );
    Ok(out)
}

/// One step of a rolling update: grow the new ReplicaSet within the surge,
/// then shrink the old ones within the availability.
async fn rolling(
    cx: &SyncContext,
    d: &Value,
    new: &mut Value,
    olds: &mut [Value],
    want: i64,
) -> Result<(), StoreError> {
    let (surge, unavailable) = fenceposts(d);
    // The new ReplicaSet.
    let n = spec_replicas(new);
    if n > want {
        *new = scale(cx, d, new, want).await?;
    } else if n < want {
        let total: i64 = olds.iter().map(may_exist).sum::<i64>() + may_exist(new);
        let room = (want + surge - total).min(want - n);
        if room > 0 {
            *new = scale(cx, d, new, n + room).await?;
        }
    }
    // The old ones.
    if olds.iter().all(|o| spec_replicas(o) == 0) {
        return Ok(());
    }
    let min_available = want - unavailable;
    let all: i64 = olds.iter().map(spec_replicas).sum::<i64>() + spec_replicas(new);
    let new_unavailable = spec_replicas(new) - counted_available(new);
    let max_down = all - min_available - new_unavailable;
    if max_down <= 0 {
        return Ok(());
    }
    // First the old pods that are not available anyway.
    let mut cleaned = 0;
    for rs in olds.iter_mut() {
        if cleaned >= max_down {
            break;
        }
        let unhealthy = spec_replicas(rs) - counted_available(rs);
        if unhealthy <= 0 {
            continue;
        }
        let down = (max_down - cleaned).min(unhealthy);
        *rs = scale(cx, d, rs, spec_replicas(rs) - down).await?;
        cleaned += down;
    }
    // Then available ones, while enough stay available.
    let available: i64 = olds.iter().map(counted_available).sum::<i64>() + counted_available(new);
    if available <= min_available {
        return Ok(());
    }
    let mut left = available - min_available;
    for rs in olds.iter_mut() {
        if left <= 0 {
            break;
        }
        let r = spec_replicas(rs);
        if r == 0 {
            continue;
        }
        let down = r.min(left);
        *rs = scale(cx, d, rs, r - down).await?;
        left -= down;
    }
    Ok(())
}

/// Recreate: every old pod goes before any new one starts.
async fn recreate(
    cx: &SyncContext,
    d: &Value,
    new: &mut Value,
    olds: &mut [Value],
    want: i64,
) -> Result<Option<Duration>, StoreError> {
    for rs in olds.iter_mut() {
        if spec_replicas(rs) > 0 {
            *rs = scale(cx, d, rs, 0).await?;
        }
    }
    let old_uids: Vec<&str> = olds.iter().map(object::uid).collect();
    let (pods, _) = cx
        .store
        .list(&kinds::pod().resource(), Some(object::namespace(d)))
        .await?;
    let old_pods = pods.iter().any(|p| {
        deletion::owner_refs(p)
            .iter()
            .any(|r| r.controller && old_uids.contains(&r.uid.as_str()))
            && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    if old_pods {
        // Their removal does not change a ReplicaSet: look again soon.
        return Ok(Some(Duration::from_millis(500)));
    }
    if spec_replicas(new) != want {
        *new = scale(cx, d, new, want).await?;
    }
    Ok(None)
}

/// Deletes the oldest old ReplicaSets with no pods beyond `revisionHistoryLimit`.
async fn cleanup(cx: &SyncContext, d: &Value, olds: &[Value]) -> Result<(), StoreError> {
    let limit = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10).max(0) as usize;
    let mut idle: Vec<&Value> = olds
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && rs["status"]["replicas"].as_i64().unwrap_or(0) == 0)
        .collect();
    if idle.len() <= limit {
        return Ok(());
    }
    idle.sort_by_key(|rs| revision(rs));
    let surplus = idle.len() - limit;
    for rs in idle.into_iter().take(surplus) {
        writes::delete(&*cx.store, kinds::replicaset(), rs, Propagation::Background).await?;
    }
    Ok(())
}

fn condition(d: &Value, type_: &str) -> Option<Value> {
    d["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// A condition, keeping its transition time if its status did not change
/// and its update time if nothing about it did.
fn next_condition(old: Option<&Value>, type_: &str, status: &str, reason: &str, message: String, now: &str) -> Value {
    let same_status = old.is_some_and(|c| c["status"] == status);
    let same = same_status && old.is_some_and(|c| c["reason"] == reason && c["message"] == message.as_str());
    let since = |f: &str, keep: bool| {
        old.filter(|_| keep)
            .and_then(|c| c[f].as_str())
            .unwrap_or(now)
            .to_string()
    };
    json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": since("lastUpdateTime", same), "lastTransitionTime": since("lastTransitionTime", same_status)})
}

/// Writes the Deployment's status and revision; returns when to look again
/// (to find a rollout past its progress deadline).
async fn update_status(
    cx: &SyncContext,
    d: &Value,
    new: Option<&Value>,
    olds: &[Value],
    created: bool,
) -> Result<Option<Duration>, StoreError> {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let every = || olds.iter().chain(new);
    let sum = |f: &str| every().map(|rs| rs["status"][f].as_i64().unwrap_or(0)).sum::<i64>();
    let replicas = sum("replicas");
    let ready = sum("readyReplicas");
    let available = sum("availableReplicas");
    let updated = new.map_or(0, |rs| rs["status"]["replicas"].as_i64().unwrap_or(0));
    let total_spec: i64 = every().map(spec_replicas).sum();
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
    let mut status = json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": available,
        "unavailableReplicas": (total_spec - available).max(0)});
    if let Some(c) = d["status"]["collisionCount"].as_i64() {
        status["collisionCount"] = json!(c);
    }
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| k == "observedGeneration" || k == "collisionCount" || v.as_i64() != Some(0));
    }
    let now = object::now_rfc3339();
    let (_, max_unavailable) = fenceposts(d);
    let old_available = condition(d, "Available");
    let available_cond = if available >= want - max_unavailable {
        next_condition(
            old_available.as_ref(),
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            &now,
        )
    } else {
        next_condition(
            old_available.as_ref(),
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            &now,
        )
    };
    let old_progress = condition(d, "Progressing");
    let rs_name = new.map(object::name).unwrap_or("");
    let paused = d["spec"]["paused"].as_bool().unwrap_or(false);
    let complete = updated == want && replicas == want && available == want && new.is_some();
    let was = |f: &str| d["status"][f].as_i64().unwrap_or(0);
    let old_pods = every()
        .map(|rs| rs["status"]["replicas"].as_i64().unwrap_or(0))
        .sum::<i64>()
        - updated;
    let old_old_pods = was("replicas") - was("updatedReplicas");
    let progressed = updated > was("updatedReplicas")
        || old_pods < old_old_pods
        || ready > was("readyReplicas")
        || available > was("availableReplicas");
    let deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
    let mut again = None;
    let progress = if paused {
        Some(next_condition(
            old_progress.as_ref(),
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            &now,
        ))
    } else if new.is_none() {
        old_progress.clone()
    } else if created {
        Some(next_condition(
            None,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{rs_name}\""),
            &now,
        ))
    } else if complete {
        Some(next_condition(
            old_progress.as_ref(),
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            &now,
        ))
    } else if progressed
        || old_progress.is_none()
        || old_progress.as_ref().is_some_and(|c| c["reason"] == "DeploymentPaused")
    {
        let mut c = next_condition(
            old_progress.as_ref(),
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            &now,
        );
        c["lastUpdateTime"] = json!(now);
        again = Some(Duration::from_secs(deadline.max(0) as u64));
        Some(c)
    } else {
        let c = old_progress.clone().unwrap_or_default();
        let since = c["lastUpdateTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc());
        let due = since.and_then(|t| t.checked_add_signed(chrono::TimeDelta::try_seconds(deadline)?));
        let timed_out = c["reason"] == "ProgressDeadlineExceeded";
        match due {
            Some(due) if !timed_out && due <= chrono::Utc::now() => Some(next_condition(
                old_progress.as_ref(),
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                &now,
            )),
            Some(due) if !timed_out => {
                again = (due - chrono::Utc::now())
                    .to_std()
                    .ok()
                    .map(|w| w + Duration::from_millis(100));
                Some(c)
            }
            _ => Some(c),
        }
    };
    let mut conditions = vec![available_cond];
    conditions.extend(progress);
    status["conditions"] = json!(conditions);
    let rev = new.map(revision).filter(|r| *r > 0);
    let same_rev = rev.is_none_or(|r| revision(d) == r);
    if d["status"] != status || !same_rev {
        writes::modify(&*cx.store, kinds::deployment(), d, |o| {
            let mut changed = false;
            if let Some(r) = rev {
                if revision(o) != r {
                    o["metadata"]["annotations"][REVISION] = json!(r.to_string());
                    changed = true;
                }
            }
            if o["status"] != status {
                o["status"] = status.clone();
                changed = true;
            }
            changed
        })
        .await?;
    }
    Ok(again)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_size_is_shared_in_proportion() {
        // Kubernetes' documented example: 10 replicas, maxSurge 3, a stuck
        // rollout at 8 old and 5 new, scaled to 15: 3 more old, 2 more new.
        assert_eq!(proportions(&[(8, Some(13)), (5, Some(13))], 18, 13), [11, 7]);
        // Down to 5 (+3 surge): 8 gone, larger first.
        assert_eq!(proportions(&[(8, Some(13)), (5, Some(13))], 8, 13), [5, 3]);
        // To zero: everything goes.
        assert_eq!(proportions(&[(8, Some(13)), (5, Some(13))], 0, 13), [0, 0]);
        // Without the annotation, the Deployment's replicas are the base;
        // what rounding leaves over goes to the first.
        assert_eq!(proportions(&[(2, None), (1, None), (1, None)], 6, 4), [3, 2, 1]);
        assert_eq!(proportions(&[(4, Some(7)), (3, Some(7))], 12, 7), [7, 5]);
    }

    #[test]
    fn template_hashes_are_stable_and_tell_templates_apart() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let b = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "b"}]}});
        assert_eq!(template_hash(&a, None), template_hash(&a.clone(), None));
        assert_ne!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let mut rs = json!({"spec": {"template": a.clone()}});
        rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL] = json!("x");
        assert_eq!(template_without_hash(&rs), a);
        // Go's encoding of the same template (rollout undo writes it back) is the same template.
        let mut go = a.clone();
        go["metadata"]["creationTimestamp"] = Value::Null;
        go["spec"]["containers"][0]["resources"] = json!({});
        assert!(runs_template(&rs, &go));
        assert_eq!(template_hash(&a, None), template_hash(&go, None));
        assert!(!runs_template(&rs, &b));
    }
}
