//! The DaemonSet controller, as Kubernetes' `DaemonSetsController`: one pod
//! on every node that should run it (the template's nodeSelector and required
//! node affinity, and taints it tolerates, with the tolerations every daemon
//! pod gets), none on the others. Each pod asks for its node through node
//! affinity (`matchFields metadata.name`), and the scheduler binds it, as in
//! Kubernetes. The template's history is kept in ControllerRevisions
//! (`history`); its revision's hash is the pods' `controller-revision-hash`
//! label. RollingUpdate replaces old pods within maxUnavailable (or, with
//! maxSurge, starts the new pod first and removes the old one once the new is
//! available); OnDelete replaces a pod only once it is deleted. Failed
//! daemon pods are deleted and made again.

use super::deployment::template_hash;
use super::history;
use super::replicaset::{available, delete_pod, is_active, pod_from_template, ready_since};
use super::{claim, Reconciler, SyncContext, SyncResult};
use crate::events::EventKind;
use k8s_openapi::api::core::v1::{Node, PodSpec};
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::scheduling;
use peapod_core::store::StoreError;
use peapod_core::validation::deployment::scaled;
use peapod_core::validation::workloads::label_selector;
use peapod_core::writes;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The label with the template's hash.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The DaemonSet controller.
pub struct DaemonSets;

impl Reconciler for DaemonSets {
    fn name(&self) -> &'static str {
        "daemonset-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::daemonset()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        vec![kinds::pod(), kinds::controllerrevision()]
    }

    fn triggers(&self) -> Vec<&'static Kind> {
        vec![kinds::node()]
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        Box::pin(async move { sync(&cx, &namespace, &name).await.map_err(|e| e.to_string()) })
    }
}

/// The tolerations every daemon pod gets (Kubernetes' `AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Value> {
    let mut out: Vec<Value> = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .iter()
    .map(|(k, e)| json!({"key": k, "operator": "Exists", "effect": e}))
    .collect();
    if host_network {
        out.push(
            json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}),
        );
    }
    out
}

/// The template's pod spec with the daemon tolerations added (those it lacks).
fn daemon_spec(ds: &Value) -> Value {
    let mut spec = ds["spec"]["template"]["spec"].clone();
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for t in daemon_tolerations(spec["hostNetwork"] == true) {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    spec["tolerations"] = Value::Array(tolerations);
    spec
}

/// Whether a pod of `spec` should run on `node` (Kubernetes' `NodeShouldRunDaemonPod`).
pub fn should_run(spec: &PodSpec, node: &Node) -> bool {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    scheduling::node_matches(spec, node)
        && scheduling::untolerated(&taints, spec.tolerations.as_deref().unwrap_or_default()).is_none()
}

/// The node a daemon pod is for: where it is bound, else the one its affinity names.
fn target_node(p: &Value) -> Option<String> {
    if let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    p.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?
        .iter()
        .flat_map(|t| t["matchFields"].as_array().into_iter().flatten())
        .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")
        .and_then(|f| f["values"][0].as_str().map(str::to_string))
}

/// A new pod of the DaemonSet for `node`.
fn pod_for(ds: &Value, spec: &Value, hash: &str, node: &str) -> Value {
    let mut pod = pod_from_template(ds);
    pod["spec"] = spec.clone();
    pod["metadata"]["labels"][HASH_LABEL] = json!(hash);
    pod["spec"]["affinity"]["nodeAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}});
    pod
}

fn is_new(p: &Value, hash: &str) -> bool {
    p["metadata"]["labels"][HASH_LABEL] == hash
}

async fn create(cx: &SyncContext, ds: &Value, pod: Value) -> Result<(), StoreError> {
    match writes::create(&*cx.store, kinds::pod(), pod).await {
        Ok(p) => {
            cx.events.object_event(
                ds,
                EventKind::Normal,
                "SuccessfulCreate",
                format!("Created pod: {}", object::name(&p)),
            );
            Ok(())
        }
        Err(e) => {
            cx.events
                .object_event(ds, EventKind::Warning, "FailedCreate", format!("Error creating: {e}"));
            Err(match e {
                writes::CreateError::Store(e) => e,
                other => StoreError::Invalid(other.to_string()),
            })
        }
    }
}

async fn sync(cx: &SyncContext, ns: &str, name: &str) -> Result<Option<Duration>, StoreError> {
    let store = &*cx.store;
    let ds = match store.get(&kinds::daemonset().resource(), ns, name).await {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(selector) = label_selector(&ds["spec"]["selector"]) else {
        return Ok(None);
    };
    if selector.is_empty() {
        return Ok(None);
    }
    let (nodes, _) = store.list(&kinds::node().resource(), None).await?;
    let nodes: Vec<Node> = nodes
        .into_iter()
        .filter_map(|n| serde_json::from_value(n).ok())
        .collect();
    let (pods, _) = store.list(&kinds::pod().resource(), Some(ns)).await?;
    let owned = claim(store, kinds::pod(), &ds, &selector, pods).await?;
    let spec = daemon_spec(&ds);
    let typed: PodSpec = serde_json::from_value(spec.clone()).unwrap_or_default();
    let min_ready = ds["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let now = chrono::Utc::now();
    let deleting = object::deletion_timestamp(&ds).is_some();
    // The template's ControllerRevision; its hash labels the pods.
    let (revs, _) = store.list(&kinds::controllerrevision().resource(), Some(ns)).await?;
    let owned_revs = claim(store, kinds::controllerrevision(), &ds, &selector, revs).await?;
    let (hash, revs) = if deleting {
        let collisions = ds["status"]["collisionCount"].as_i64().filter(|c| *c > 0);
        (template_hash(&history::revision_data(&ds), collisions), owned_revs)
    } else {
        let (update, revs) = history::update_revision(cx, kinds::daemonset(), &ds, owned_revs).await?;
        (history::revision_hash(&update).to_string(), revs)
    };
    // Each node's daemon pods (not being deleted), oldest first.
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in owned.into_iter().filter(|p| object::deletion_timestamp(p).is_none()) {
        by_node.entry(target_node(&p).unwrap_or_default()).or_default().push(p);
    }
    for v in by_node.values_mut() {
        v.sort_by_key(|p| p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string());
    }
    let wanted: HashMap<String, bool> = nodes
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), should_run(&typed, n)))
        .collect();
    let mut again: Option<Duration> = None;
    let mut soon = |d: Duration| again = Some(again.map_or(d, |a: Duration| a.min(d)));
    if !deleting {
        // Pods on nodes that are gone or should not run them, failed pods, doubles.
        for (node, pods) in by_node.iter_mut() {
            let run = wanted.get(node).copied().unwrap_or(false);
            let mut keep = Vec::new();
            for p in pods.drain(..) {
                let failed = p["status"]["phase"] == "Failed";
                if !run || failed {
                    delete_pod(cx, &ds, &p).await?;
                } else {
                    keep.push(p);
                }
            }
            // Two pods on one node (and not a surge in progress): the newest go.
            let surge_pair = keep.len() == 2 && is_new(&keep[0], &hash) != is_new(&keep[1], &hash);
            while keep.len() > 1 && !surge_pair {
                let p = keep.pop().unwrap_or_default();
                delete_pod(cx, &ds, &p).await?;
            }
            *pods = keep;
        }
        // Nodes that should run a pod and have none.
        for (node, run) in &wanted {
            if *run && by_node.get(node).is_none_or(Vec::is_empty) {
                create(cx, &ds, pod_for(&ds, &spec, &hash, node)).await?;
            }
        }
        if ds["spec"]["updateStrategy"]["type"] == "RollingUpdate" {
            let desired = wanted.values().filter(|r| **r).count() as i64;
            let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
            let max_unavailable = scaled(&ru["maxUnavailable"], desired, true).unwrap_or(1).max(0);
            let max_surge = scaled(&ru["maxSurge"], desired, true).unwrap_or(0).max(0);
            let is_available = |p: &Value| available(p, min_ready, now).is_ok();
            let unavailable = wanted
                .iter()
                .filter(|(n, run)| {
                    **run
                        && !by_node
                            .get(*n)
                            .into_iter()
                            .flatten()
                            .any(|p| is_active(p) && is_available(p))
                })
                .count() as i64;
            let mut budget = if max_surge > 0 {
                max_surge
            } else {
                max_unavailable - unavailable
            };
            for (node, pods) in &by_node {
                if !wanted.get(node).copied().unwrap_or(false) {
                    continue;
                }
                let old: Vec<&Value> = pods.iter().filter(|p| !is_new(p, &hash)).collect();
                let new: Vec<&Value> = pods.iter().filter(|p| is_new(p, &hash)).collect();
                let Some(old) = old.first() else { continue };
                if max_surge > 0 {
                    match new.first() {
                        Some(n) if is_available(n) => delete_pod(cx, &ds, old).await?,
                        Some(_) => {}
                        None if !is_available(old) => delete_pod(cx, &ds, old).await?,
                        None if budget > 0 => {
                            create(cx, &ds, pod_for(&ds, &spec, &hash, node)).await?;
                            budget -= 1;
                        }
                        None => {}
                    }
                } else if !is_available(old) {
                    // Not available anyway: replacing it costs nothing.
                    delete_pod(cx, &ds, old).await?;
                } else if budget > 0 {
                    delete_pod(cx, &ds, old).await?;
                    budget -= 1;
                }
            }
        }
    }
    // Status.
    let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut avail) = (0, 0, 0, 0, 0, 0);
    for (node, run) in &wanted {
        let pods: Vec<&Value> = by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(|p| is_active(p))
            .collect();
        if !*run {
            if !pods.is_empty() {
                misscheduled += 1;
            }
            continue;
        }
        desired += 1;
        if !pods.is_empty() {
            current += 1;
        }
        if pods.iter().any(|p| ready_since(p).is_some()) {
            ready += 1;
        }
        if pods.iter().any(|p| is_new(p, &hash)) {
            updated += 1;
        }
        let mut any = false;
        for p in &pods {
            match available(p, min_ready, now) {
                Ok(()) => any = true,
                Err(Some(wait)) => soon(wait + Duration::from_millis(100)),
                Err(None) => {}
            }
        }
        if any {
            avail += 1;
        }
    }
    let mut status = json!({"desiredNumberScheduled": desired, "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled, "numberReady": ready, "updatedNumberScheduled": updated,
        "numberAvailable": avail, "numberUnavailable": desired - avail,
        "observedGeneration": ds["metadata"]["generation"].as_i64().unwrap_or(1)});
    if let Some(m) = status.as_object_mut() {
        for f in ["updatedNumberScheduled", "numberAvailable", "numberUnavailable"] {
            if m.get(f).and_then(Value::as_i64) == Some(0) {
                m.remove(f);
            }
        }
    }
    if let Some(c) = ds["status"]["collisionCount"].as_i64() {
        status["collisionCount"] = json!(c);
    }
    if ds["status"] != status {
        writes::modify(store, kinds::daemonset(), &ds, |o| {
            let mut s = status.clone();
            // A collision counted by this pass's revision write is kept.
            if let Some(c) = o["status"]["collisionCount"].as_i64() {
                s["collisionCount"] = json!(c);
            }
            if o["status"] == s {
                return false;
            }
            o["status"] = s;
            true
        })
        .await?;
    }
    if !deleting {
        // Revisions in use: the current one and those of live pods.
        let in_use: Vec<&str> = by_node
            .values()
            .flatten()
            .filter_map(|p| p["metadata"]["labels"][HASH_LABEL].as_str())
            .chain([hash.as_str()])
            .collect();
        let live: Vec<&str> = revs
            .iter()
            .filter(|r| in_use.contains(&history::revision_hash(r)))
            .map(object::name)
            .collect();
        history::truncate(cx, &ds, &live, revs.clone()).await?;
    }
    Ok(again)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn daemon_pods_tolerate_node_conditions_and_honour_selectors() {
        let ds = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b"}],
            "nodeSelector": {"role": "edge"}}}}});
        let spec: PodSpec = serde_json::from_value(daemon_spec(&ds)).unwrap();
        let cordoned = node(json!({"metadata": {"name": "n1", "labels": {"role": "edge"}},
            "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}));
        assert!(should_run(&spec, &cordoned), "a cordoned node still runs its daemons");
        let other = node(json!({"metadata": {"name": "n2", "labels": {"role": "core"}}}));
        assert!(!should_run(&spec, &other));
        let tainted = node(json!({"metadata": {"name": "n3", "labels": {"role": "edge"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}));
        assert!(
            !should_run(&spec, &tainted),
            "other taints need the template's own tolerations"
        );
        let pod = pod_for(
            &json!({"metadata": {"name": "agent", "namespace": "default", "uid": "u"},
            "apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"template": {}}}),
            &daemon_spec(&ds),
            "h",
            "n1",
        );
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        assert_eq!(pod["metadata"]["labels"][HASH_LABEL], "h");
    }
}
