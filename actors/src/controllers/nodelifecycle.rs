//! The node lifecycle controller, as kube-controller-manager's: it watches
//! every node's heartbeats (its Lease in `kube-node-lease` and its `Ready`
//! condition) and acts when they stop.
//!
//! - A node whose heartbeat has not changed for the grace period
//!   (`--node-monitor-grace-period`, 40 s) has its conditions set to
//!   `Unknown` ("Kubelet stopped posting node status."), and its pods are
//!   marked not Ready, so Services stop sending to them.
//! - Taints follow `Ready`: `Unknown` gives `node.kubernetes.io/unreachable`,
//!   `False` gives `node.kubernetes.io/not-ready`, each as NoSchedule (the
//!   scheduler places nothing new there) and NoExecute; `True` removes them.
//! - NoExecute evicts: a pod on the node that does not tolerate a NoExecute
//!   taint is deleted at once; one that tolerates it for `tolerationSeconds`
//!   is deleted that long after the taint was added (every pod gets 300 s
//!   from admission unless it says otherwise); one that tolerates it without
//!   a limit stays. Its controller replaces a deleted pod elsewhere; the node,
//!   when it comes back, stops the containers of its deleted pods.
//!
//! Heartbeats are judged on this node's clock, from when it saw them change,
//! so nodes' clocks need not agree; a new leader starts watching afresh.

use super::{Reconciler, SyncContext, SyncResult};
use k8s_openapi::api::core::v1::{Taint, Toleration};
use peapod_core::deletion::Propagation;
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::scheduling::tolerates;
use peapod_core::store::{Store, StoreError};
use peapod_core::writes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often each node is looked at (kube-controller-manager's `--node-monitor-period`).
pub const MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// The taint of a node whose heartbeats stopped.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that says it is not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The node lifecycle controller.
pub struct NodeLifecycle {
    grace: Duration,
    /// Per node: its last heartbeat as seen, and when it was first seen so.
    seen: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    /// When the pod-range claims of nodes without a Node object were last looked for.
    swept: Arc<Mutex<Option<Instant>>>,
}

impl NodeLifecycle {
    /// A controller that calls a node unreachable after `grace` without a heartbeat.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            seen: Arc::default(),
            swept: Arc::default(),
        }
    }
}

impl Reconciler for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::node()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        Vec::new()
    }

    fn selects(&self, _owner: &Value, _dependent: &Value) -> bool {
        false
    }

    fn sync(&self, cx: SyncContext, _namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        let (grace, seen, swept) = (self.grace, self.seen.clone(), self.swept.clone());
        Box::pin(async move {
            if let Err(e) = sweep_orphans(&cx, grace, &seen, &swept).await {
                tracing::warn!("looking for pod ranges of deleted nodes: {e}");
            }
            monitor(&cx, &name, grace, &seen)
                .await
                .map(|next| Some(next.min(MONITOR_PERIOD)))
                .map_err(|e| e.to_string())
        })
    }
}

fn condition<'a>(node: &'a Value, type_: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Looks at one node: its heartbeat, its conditions and taints, the pods
/// to evict. Returns when to look again for an eviction due.
async fn monitor(
    cx: &SyncContext,
    name: &str,
    grace: Duration,
    seen: &Mutex<HashMap<String, (String, Instant)>>,
) -> Result<Duration, StoreError> {
    let store = &*cx.store;
    let nodes = kinds::node().resource();
    let node = match store.get(&nodes, "", name).await {
        Ok(n) => n,
        Err(StoreError::NotFound { .. }) => return gone(cx, name, grace, seen).await,
        Err(e) => return Err(e),
    };
    let lease = lease_renewed(store, name).await?;
    let ready = condition(&node, "Ready");
    let heartbeat = format!(
        "{lease}|{}",
        ready.and_then(|c| c["lastHeartbeatTime"].as_str()).unwrap_or("")
    );
    let now = Instant::now();
    let since = unchanged_since(seen, name, heartbeat, now);
    let mut status = ready
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown")
        .to_string();
    if now.saturating_duration_since(since) >= grace && status != "Unknown" {
        mark_unknown(cx, &node).await?;
        status = "Unknown".into();
        mark_pods_not_ready(cx, name).await;
        cx.events.object_event(
            &node,
            crate::events::EventKind::Normal,
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
        );
    }
    let node = set_taints(cx, name, &status).await?;
    evict(cx, &node).await
}

/// Since when `name`'s `mark` (its heartbeat, its lease) has been what it
/// is now, judged on this node's clock: `now` when it has just changed.
fn unchanged_since(
    seen: &Mutex<HashMap<String, (String, Instant)>>,
    name: &str,
    mark: String,
    now: Instant,
) -> Instant {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    match seen.get(name) {
        Some((m, at)) if *m == mark => *at,
        _ => {
            seen.insert(name.to_string(), (mark, now));
            now
        }
    }
}

async fn lease_renewed(store: &dyn Store, name: &str) -> Result<String, StoreError> {
    match store.get(&kinds::lease().resource(), "kube-node-lease", name).await {
        Ok(l) => Ok(l["spec"]["renewTime"].as_str().unwrap_or("").to_string()),
        Err(StoreError::NotFound { .. }) => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// A deleted Node: once its Lease has not been renewed for the grace
/// period (its daemon is not about to register it again), the pod range
/// it claimed is given back. Returns when to look again.
async fn gone(
    cx: &SyncContext,
    name: &str,
    grace: Duration,
    seen: &Mutex<HashMap<String, (String, Instant)>>,
) -> Result<Duration, StoreError> {
    let store = &*cx.store;
    if !crate::nodeipam::claims(store)
        .await?
        .iter()
        .any(|c| c["spec"]["nodeName"] == name)
    {
        seen.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        return Ok(MONITOR_PERIOD);
    }
    let renewed = format!("gone|{}", lease_renewed(store, name).await?);
    let now = Instant::now();
    let since = unchanged_since(seen, name, renewed, now);
    if now.saturating_duration_since(since) < grace {
        return Ok(grace.saturating_sub(now.saturating_duration_since(since)));
    }
    let n = crate::nodeipam::release(store, name).await?;
    tracing::info!("node {name} is gone: gave back its pod range ({n} claim)");
    seen.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    Ok(MONITOR_PERIOD)
}

/// Once per grace period, from any node's sync: the claims of nodes that
/// have no Node object, whose deletion no leader saw (it happened while no
/// controller ran, or before this leader's start), go the way of [`gone`]:
/// first seen now, given back when their Lease stayed as it was for the
/// grace period, so at the latest two periods after this leader started.
async fn sweep_orphans(
    cx: &SyncContext,
    grace: Duration,
    seen: &Mutex<HashMap<String, (String, Instant)>>,
    swept: &Mutex<Option<Instant>>,
) -> Result<(), StoreError> {
    let now = Instant::now();
    {
        let mut last = swept.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < grace) {
            return Ok(());
        }
        *last = Some(now);
    }
    for node in crate::nodeipam::orphans(&*cx.store).await? {
        gone(cx, &node, grace, seen).await?;
    }
    Ok(())
}

/// Every condition of the node `Unknown`, as the controller writes them when its agent is silent.
async fn mark_unknown(cx: &SyncContext, node: &Value) -> Result<(), StoreError> {
    let now = object::now_rfc3339();
    writes::modify(&*cx.store, kinds::node(), node, |n| {
        let Some(conds) = n["status"]["conditions"].as_array_mut() else {
            return false;
        };
        for c in conds.iter_mut() {
            if c["status"] != "Unknown" {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now);
            }
        }
        true
    })
    .await
    .map(drop)
}

/// The pods of a silent node are not Ready: Services stop sending to them.
async fn mark_pods_not_ready(cx: &SyncContext, node: &str) {
    let Ok((pods, _)) = cx.store.list(&kinds::pod().resource(), None).await else {
        return;
    };
    let now = object::now_rfc3339();
    for pod in pods.iter().filter(|p| p["spec"]["nodeName"] == node) {
        let res = writes::modify(&*cx.store, kinds::pod(), pod, |p| {
            let Some(conds) = p["status"]["conditions"].as_array_mut() else {
                return false;
            };
            let mut changed = false;
            for c in conds
                .iter_mut()
                .filter(|c| c["type"] == "Ready" && c["status"] != "False")
            {
                c["status"] = json!("False");
                c["reason"] = json!("NodeLost");
                c["lastTransitionTime"] = json!(now);
                changed = true;
            }
            changed
        })
        .await;
        if let Err(e) = res {
            tracing::warn!("marking pod {} not ready: {e}", object::name(pod));
        }
    }
}

/// The lifecycle taints `status` calls for; others are the operator's and stay.
fn wanted_taints(status: &str) -> Vec<(&'static str, &'static str)> {
    let key = match status {
        "True" => return Vec::new(),
        "False" => NOT_READY,
        _ => UNREACHABLE,
    };
    vec![(key, "NoSchedule"), (key, "NoExecute")]
}

/// Brings the node's lifecycle taints in line with its Ready status; returns the node as stored.
async fn set_taints(cx: &SyncContext, name: &str, status: &str) -> Result<Value, StoreError> {
    let wanted = wanted_taints(status);
    let now = object::now_rfc3339();
    let node = cx.store.get(&kinds::node().resource(), "", name).await?;
    let written = writes::modify(&*cx.store, kinds::node(), &node, |n| {
        let taints: Vec<Value> = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
        let ours = |t: &Value| t["key"] == UNREACHABLE || t["key"] == NOT_READY;
        let mut next: Vec<Value> = taints
            .iter()
            .filter(|t| !ours(t) || wanted.iter().any(|(k, e)| t["key"] == *k && t["effect"] == *e))
            .cloned()
            .collect();
        for (k, e) in &wanted {
            if !next.iter().any(|t| t["key"] == *k && t["effect"] == *e) {
                let mut t = json!({"key": k, "effect": e});
                if *e == "NoExecute" {
                    t["timeAdded"] = json!(now);
                }
                next.push(t);
            }
        }
        if next == taints {
            return false;
        }
        if next.is_empty() {
            if let Some(spec) = n["spec"].as_object_mut() {
                spec.remove("taints");
            }
        } else {
            n["spec"]["taints"] = json!(next);
        }
        true
    })
    .await?;
    Ok(written.unwrap_or(node))
}

/// How long after its NoExecute taints were added a pod may stay: `None`
/// forever, `Some(ZERO)` not at all.
pub fn allowed_to_stay(
    taints: &[(Taint, chrono::DateTime<chrono::Utc>)],
    tolerations: &[Toleration],
) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut until: Option<chrono::DateTime<chrono::Utc>> = None;
    for (taint, added) in taints {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        // Admission gives every pod the default tolerations of the two
        // taints this controller sets; a pod stored before it did (an
        // upgraded cluster's) has none and gets the default here.
        let defaulted = matches!(taint.key.as_str(), NOT_READY | UNREACHABLE)
            .then_some(peapod_core::validation::pod::DEFAULT_TOLERATION_SECONDS);
        if matching.is_empty() && defaulted.is_none() {
            return Some(*added);
        }
        // The shortest of the matching tolerations; none with a limit: forever.
        let limit = if matching.is_empty() {
            defaulted
        } else {
            matching.iter().filter_map(|t| t.toleration_seconds).min()
        };
        let Some(secs) = limit else {
            continue;
        };
        let at = *added + chrono::Duration::seconds(secs.clamp(0, 1 << 40));
        until = Some(until.map_or(at, |u| u.min(at)));
    }
    until
}

/// Deletes the pods the node's NoExecute taints no longer let stay; returns when the next is due.
async fn evict(cx: &SyncContext, node: &Value) -> Result<Duration, StoreError> {
    let taints: Vec<(Taint, chrono::DateTime<chrono::Utc>)> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "NoExecute")
        .filter_map(|t| {
            let taint: Taint = serde_json::from_value(t.clone()).ok()?;
            let added = t["timeAdded"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map_or_else(chrono::Utc::now, |d| d.with_timezone(&chrono::Utc));
            Some((taint, added))
        })
        .collect();
    if taints.is_empty() {
        return Ok(MONITOR_PERIOD);
    }
    let name = object::name(node);
    let (pods, _) = cx.store.list(&kinds::pod().resource(), None).await?;
    let now = chrono::Utc::now();
    let mut next = MONITOR_PERIOD;
    for pod in pods
        .iter()
        .filter(|p| p["spec"]["nodeName"] == name && object::deletion_timestamp(p).is_none())
    {
        let tolerations: Vec<Toleration> =
            serde_json::from_value(pod["spec"]["tolerations"].clone()).unwrap_or_default();
        let Some(until) = allowed_to_stay(&taints, &tolerations) else {
            continue;
        };
        if until > now {
            let wait = (until - now).to_std().unwrap_or_default();
            next = next.min(wait);
            continue;
        }
        tracing::info!(
            "evicting pod {}/{} from node {name}: NoExecute taint",
            object::namespace(pod),
            object::name(pod)
        );
        cx.events.object_event(
            pod,
            crate::events::EventKind::Normal,
            "TaintManagerEviction",
            format!(
                "Marking for deletion Pod {}/{}",
                object::namespace(pod),
                object::name(pod)
            ),
        );
        match writes::delete(&*cx.store, kinds::pod(), pod, Propagation::Background).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            ..Default::default()
        }
    }

    #[test]
    fn tolerations_decide_how_long_a_pod_stays() {
        let t0 = chrono::Utc::now();
        let taints = [(taint(UNREACHABLE), t0)];
        let default = Some(t0 + chrono::Duration::seconds(300));
        assert_eq!(
            allowed_to_stay(&taints, &[]),
            default,
            "a pod from before the default tolerations: the default's 300 s"
        );
        let other = [(taint("example.com/drain"), t0)];
        assert_eq!(
            allowed_to_stay(&other, &[]),
            Some(t0),
            "another taint untolerated: at once"
        );
        assert_eq!(
            allowed_to_stay(&taints, &[tol(UNREACHABLE, Some(300))]),
            Some(t0 + chrono::Duration::seconds(300))
        );
        assert_eq!(
            allowed_to_stay(&taints, &[tol(UNREACHABLE, Some(300)), tol(UNREACHABLE, Some(5))]),
            Some(t0 + chrono::Duration::seconds(5)),
            "the shortest matching toleration"
        );
        assert_eq!(allowed_to_stay(&taints, &[tol(UNREACHABLE, None)]), None, "forever");
        assert_eq!(
            allowed_to_stay(&other, &[tol(NOT_READY, None)]),
            Some(t0),
            "a toleration of another taint does not count"
        );
        // Two taints: the pod must tolerate both, and leaves at the earlier end.
        let both = [
            (taint(UNREACHABLE), t0),
            (taint("other"), t0 + chrono::Duration::seconds(10)),
        ];
        assert_eq!(allowed_to_stay(&both, &[tol(UNREACHABLE, None)]), Some(both[1].1));
        assert_eq!(
            allowed_to_stay(&both, &[tol(UNREACHABLE, Some(60)), tol("other", Some(1))]),
            Some(t0 + chrono::Duration::seconds(11))
        );
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        assert!(wanted_taints("True").is_empty());
        assert_eq!(
            wanted_taints("False"),
            [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
        );
        assert_eq!(
            wanted_taints("Unknown"),
            [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
        );
    }
}
