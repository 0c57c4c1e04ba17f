//! The ReplicaSet and ReplicationController controller, as Kubernetes'
//! `ReplicaSetController` (which serves both):
//!
//! - Pods matching the selector without a controller are adopted (a
//!   controller ownerReference); owned pods whose labels stop matching are
//!   released.
//! - Missing pods are created from the template (`<owner>-<5 chars>`), in
//!   slow-start batches of 1, 2, 4 … so a failing template fails once, not
//!   500 times; surplus pods are deleted in Kubernetes' order: unscheduled,
//!   then pending, not ready, crowded, ready for less time, restarted more,
//!   newer.
//! - Status: replicas, fullyLabeledReplicas, readyReplicas,
//!   availableReplicas (ready for `minReadySeconds`), observedGeneration, and
//!   the `ReplicaFailure` condition while pods cannot be created.

use super::{Reconciler, SyncContext, SyncResult};
use crate::events::EventKind;
use peapod_core::deletion::{self, OwnerRef};
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::store::{Store, StoreError};
use peapod_core::validation::workloads::workload_selector;
use peapod_core::writes;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// At most this many pods are created or deleted in one pass (Kubernetes' burstReplicas).
const BURST: usize = 500;

/// The controller of one of the two kinds.
pub struct ReplicaSets {
    kind: fn() -> &'static Kind,
    name: &'static str,
}

impl ReplicaSets {
    /// ReplicaSets (apps/v1).
    pub fn for_replicasets() -> Self {
        Self {
            kind: kinds::replicaset,
            name: "replicaset-controller",
        }
    }

    /// ReplicationControllers (v1).
    pub fn for_replication_controllers() -> Self {
        Self {
            kind: kinds::replicationcontroller,
            name: "replication-controller",
        }
    }
}

impl Reconciler for ReplicaSets {
    fn name(&self) -> &'static str {
        self.name
    }

    fn owner(&self) -> &'static Kind {
        (self.kind)()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        vec![kinds::pod()]
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        let kind = (self.kind)();
        Box::pin(async move { sync(&cx, kind, &namespace, &name).await.map_err(|e| e.to_string()) })
    }
}

/// Whether a pod counts toward replicas: not finished, not being deleted.
pub fn is_active(p: &Value) -> bool {
    object::deletion_timestamp(p).is_none() && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// The pod's Ready condition, if True: since when.
pub fn ready_since(p: &Value) -> Option<&str> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .map(|c| c["lastTransitionTime"].as_str().unwrap_or(""))
}

/// Ready for at least `min_ready` as of `now`; otherwise, how long until it is (if ready).
pub fn available(p: &Value, min_ready: i64, now: chrono::DateTime<chrono::Utc>) -> Result<(), Option<Duration>> {
    let Some(since) = ready_since(p) else {
        return Err(None);
    };
    if min_ready <= 0 {
        return Ok(());
    }
    let Ok(since) = chrono::DateTime::parse_from_rfc3339(since) else {
        return Ok(());
    };
    let due = since.to_utc() + chrono::TimeDelta::try_seconds(min_ready).unwrap_or(chrono::TimeDelta::MAX);
    if due <= now {
        Ok(())
    } else {
        Err(Some((due - now).to_std().unwrap_or_default()))
    }
}

/// The controller reference an owner puts on what it creates or adopts.
pub fn controller_ref(owner: &Value) -> Value {
    json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": object::name(owner),
        "uid": object::uid(owner), "controller": true, "blockOwnerDeletion": true})
}

pub fn controller_of(p: &Value) -> Option<OwnerRef> {
    deletion::owner_refs(p).into_iter().find(|r| r.controller)
}

/// Kubernetes' deletion order (`ActivePodsWithRanks`): the first to go first.
pub fn deletion_order(pods: &mut [Value]) {
    let mut on_node: HashMap<String, i64> = HashMap::new();
    for p in pods.iter() {
        *on_node
            .entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let phase_rank = |p: &Value| match p["status"]["phase"].as_str() {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let restarts = |p: &Value| {
        p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    pods.sort_by_cached_key(|p| {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("");
        (
            !node.is_empty(),
            phase_rank(p),
            ready_since(p).is_some(),
            Reverse(if node.is_empty() { 0 } else { on_node[node] }),
            Reverse(ready_since(p).unwrap_or("").to_string()),
            Reverse(restarts(p)),
            Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string()),
        )
    });
}

/// A new pod of `owner`'s template.
pub fn pod_from_template(owner: &Value) -> Value {
    pod_from(owner, &owner["spec"]["template"])
}

/// A new pod of `template` (the owner's, or a revision's) that `owner`
/// controls, named `<owner>-<5 chars>` unless the caller names it.
pub fn pod_from(owner: &Value, t: &Value) -> Value {
    let mut meta = json!({"generateName": format!("{}-", object::name(owner)),
        "namespace": object::namespace(owner), "ownerReferences": [controller_ref(owner)]});
    for f in ["labels", "annotations", "finalizers"] {
        if !t["metadata"][f].is_null() {
            meta[f] = t["metadata"][f].clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]})
}

fn desc(owner: &Value) -> String {
    format!("{}/{}", object::namespace(owner), object::name(owner))
}

/// One pass over the owner `ns/name` of `kind`.
async fn sync(cx: &SyncContext, kind: &'static Kind, ns: &str, name: &str) -> Result<Option<Duration>, StoreError> {
    let store = &*cx.store;
    let owner = match store.get(&kind.resource(), ns, name).await {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let selector = match workload_selector(&owner) {
        Ok(s) if !s.is_empty() => s,
        // Admission refuses these; one written past it is left alone.
        _ => return Ok(None),
    };
    let (pods, _) = store.list(&kinds::pod().resource(), Some(ns)).await?;
    let owned = super::claim(store, kinds::pod(), &owner, &selector, pods).await?;
    let mut active: Vec<Value> = owned.into_iter().filter(is_active).collect();
    let mut failure = None;
    if object::deletion_timestamp(&owner).is_none() {
        let want = owner["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        if active.len() < want {
            let (made, err) = create_pods(cx, &owner, (want - active.len()).min(BURST)).await;
            active.extend(made);
            failure = err;
        } else if active.len() > want {
            let surplus = (active.len() - want).min(BURST);
            deletion_order(&mut active);
            for p in active.drain(..surplus) {
                delete_pod(cx, &owner, &p).await?;
            }
        }
    }
    update_status(store, kind, &owner, &active, failure).await
}

/// Creates up to `n` pods in slow-start batches; stops at the first failure.
async fn create_pods(cx: &SyncContext, owner: &Value, n: usize) -> (Vec<Value>, Option<String>) {
    let mut made = Vec::new();
    let mut batch = 1;
    while made.len() < n {
        for _ in 0..batch.min(n - made.len()) {
            match writes::create(&*cx.store, kinds::pod(), pod_from_template(owner)).await {
                Ok(p) => {
                    cx.events.object_event(
                        owner,
                        EventKind::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", object::name(&p)),
                    );
                    made.push(p);
                }
                Err(e) => {
                    let message = format!("Error creating: {e}");
                    tracing::warn!("{}: {message}", desc(owner));
                    cx.events
                        .object_event(owner, EventKind::Warning, "FailedCreate", message.clone());
                    return (made, Some(e.to_string()));
                }
            }
        }
        batch *= 2;
    }
    (made, None)
}

pub async fn delete_pod(cx: &SyncContext, owner: &Value, pod: &Value) -> Result<(), StoreError> {
    if object::deletion_timestamp(pod).is_some() {
        return Ok(());
    }
    let done = writes::delete(&*cx.store, kinds::pod(), pod, deletion::Propagation::Background).await?;
    if done.is_some() {
        cx.events.object_event(
            owner,
            EventKind::Normal,
            "SuccessfulDelete",
            format!("Deleted pod: {}", object::name(pod)),
        );
    }
    Ok(())
}

/// Writes the status the active pods give; returns when to look again
/// (a ready pod becoming available after minReadySeconds).
async fn update_status(
    store: &dyn Store,
    kind: &'static Kind,
    owner: &Value,
    active: &[Value],
    failure: Option<String>,
) -> Result<Option<Duration>, StoreError> {
    let template_labels: BTreeMap<String, String> = owner["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    let min_ready = owner["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let now = chrono::Utc::now();
    let mut again: Option<Duration> = None;
    let (mut labeled, mut ready, mut avail) = (0, 0, 0);
    for p in active {
        let labels = object::labels(p);
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            labeled += 1;
        }
        if ready_since(p).is_some() {
            ready += 1;
        }
        match available(p, min_ready, now) {
            Ok(()) => avail += 1,
            Err(Some(wait)) => again = Some(again.map_or(wait, |a| a.min(wait))),
            Err(None) => {}
        }
    }
    let mut status = json!({"replicas": active.len()});
    for (field, n) in [
        ("fullyLabeledReplicas", labeled),
        ("readyReplicas", ready),
        ("availableReplicas", avail),
    ] {
        if n > 0 {
            status[field] = json!(n);
        }
    }
    if let Some(g) = owner["metadata"]["generation"].as_i64() {
        status["observedGeneration"] = json!(g);
    }
    let old_failure = owner["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "ReplicaFailure")
        .cloned();
    if let Some(message) = failure {
        let since = old_failure
            .as_ref()
            .filter(|c| c["message"] == message.as_str())
            .map_or_else(|| json!(object::now_rfc3339()), |c| c["lastTransitionTime"].clone());
        status["conditions"] = json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": message, "lastTransitionTime": since}]);
    }
    if owner["status"] != status {
        writes::modify(store, kind, owner, |o| {
            if o["status"] == status {
                return false;
            }
            o["status"] = status.clone();
            true
        })
        .await?;
    }
    // A little after the pod's due time, so the next pass finds it available.
    Ok(again.map(|d| d + Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: Option<&str>, restarts: i64, created: &str) -> Value {
        let mut p = json!({"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node}, "status": {"phase": phase,
            "containerStatuses": [{"restartCount": restarts}]}});
        if let Some(t) = ready {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
        }
        p
    }

    #[test]
    fn surplus_pods_go_in_kubernetes_order() {
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:01:00Z";
        let mut pods = vec![
            pod("ready-long", "n", "Running", Some(t0), 0, t0),
            pod("ready-recent", "n", "Running", Some(t1), 0, t0),
            pod("not-ready", "n", "Running", None, 0, t0),
            pod("pending", "n", "Pending", None, 0, t0),
            pod("unscheduled", "", "Pending", None, 0, t0),
            pod("restarted", "n", "Running", Some(t0), 3, t0),
            pod("newer", "n", "Running", Some(t0), 0, t1),
        ];
        deletion_order(&mut pods);
        let names: Vec<&str> = pods.iter().map(object::name).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "ready-recent",
                "restarted",
                "newer",
                "ready-long"
            ]
        );
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:10Z".parse().unwrap();
        let p = pod("a", "n", "Running", Some("2026-01-01T00:00:00Z"), 0, "");
        assert_eq!(available(&p, 0, now), Ok(()));
        assert_eq!(available(&p, 10, now), Ok(()));
        assert_eq!(available(&p, 15, now), Err(Some(Duration::from_secs(5))));
        assert_eq!(available(&pod("b", "n", "Running", None, 0, ""), 0, now), Err(None));
    }

    #[test]
    fn pods_are_made_from_the_template_with_a_controller_reference() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        let p = pod_from_template(&rs);
        assert_eq!(p["metadata"]["generateName"], "web-");
        assert_eq!(p["metadata"]["namespace"], "team");
        assert_eq!(p["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            p["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u1",
                "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(p["spec"]["containers"][0]["image"], "busybox");
    }
}
