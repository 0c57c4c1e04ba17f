//! Whether a pod fits a node, as kube-scheduler's default filters decide
//! (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit, in that order), and the `FailedScheduling` message in
//! kube-scheduler's words. Pure functions: the scheduler actor feeds them
//! the store's nodes and pods.

use crate::quantity::Quantity;
use crate::resources::pod_requests;
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Why a node cannot take a pod (one filter's verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// `spec.unschedulable` (cordoned), not tolerated.
    Unschedulable,
    /// The pod names another node.
    NodeName,
    /// A NoSchedule or NoExecute taint the pod does not tolerate: `{key: value}`.
    Taint(String, String),
    /// nodeSelector or required node affinity.
    Affinity,
    /// A hostPort taken by a pod already on the node.
    Ports,
    /// Not enough of a resource left (`cpu`, `memory`).
    Insufficient(&'static str),
    /// The node's `pods` allocatable is used up.
    TooManyPods,
    /// A bound PersistentVolume's node affinity excludes the node.
    VolumeNodeAffinity,
    /// A pod there (in the term's domain) has required anti-affinity to this one.
    ExistingAntiAffinity,
    /// The pod's required pod affinity finds no peer in the node's domain.
    PodAffinity,
    /// The pod's required pod anti-affinity finds a pod in the node's domain.
    PodAntiAffinity,
}

impl Unfit {
    /// kube-scheduler's wording of the reason.
    pub fn reason(&self) -> String {
        match self {
            Unfit::Unschedulable => "node(s) were unschedulable".into(),
            Unfit::NodeName => "node(s) didn't match the requested node name".into(),
            Unfit::Taint(k, v) => format!("node(s) had untolerated taint {{{k}: {v}}}"),
            Unfit::Affinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Unfit::Ports => "node(s) didn't have free ports for the requested pod ports".into(),
            Unfit::Insufficient(r) => format!("Insufficient {r}"),
            Unfit::TooManyPods => "Too many pods".into(),
            Unfit::VolumeNodeAffinity => "node(s) had volume node affinity conflict".into(),
            Unfit::ExistingAntiAffinity => "node(s) didn't satisfy existing pods anti-affinity rules".into(),
            Unfit::PodAffinity => "node(s) didn't match pod affinity rules".into(),
            Unfit::PodAntiAffinity => "node(s) didn't match pod anti-affinity rules".into(),
        }
    }

    /// Whether evicting lower-priority pods could make room (resources, ports, pods that repel).
    fn preemption_may_help(&self) -> bool {
        matches!(
            self,
            Unfit::Insufficient(_)
                | Unfit::TooManyPods
                | Unfit::Ports
                | Unfit::PodAntiAffinity
                | Unfit::ExistingAntiAffinity
        )
    }
}

/// Whether `toleration` tolerates `taint` (Kubernetes' `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty() && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first taint with effect NoSchedule or NoExecute that no toleration tolerates.
pub fn untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(int), values.first().and_then(|b| int(b))) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether one node selector term matches (all its requirements; an empty term matches nothing).
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

/// nodeSelector and `requiredDuringSchedulingIgnoredDuringExecution` node affinity.
pub fn node_matches(pod: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or("");
    if !pod
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, &labels, name)),
    }
}

/// `(protocol, hostIP, hostPort)` of every container port with a hostPort.
fn host_ports(spec: &PodSpec) -> Vec<(String, String, i32)> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port))
        })
        .collect()
}

/// What the pods bound to a node hold of it, summed as pods are bound.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub pods: i64,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    /// `(protocol, hostIP, hostPort)` taken.
    pub ports: HashSet<(String, String, i32)>,
}

impl Usage {
    /// Counts one more pod bound to the node.
    pub fn add(&mut self, spec: &PodSpec) {
        let r = pod_requests(spec);
        self.pods = self.pods.saturating_add(1);
        self.cpu_millis = self.cpu_millis.saturating_add(r.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(r.memory_bytes);
        self.ports.extend(host_ports(spec));
    }

    /// The usage of these pods.
    pub fn of(specs: &[&PodSpec]) -> Usage {
        let mut u = Usage::default();
        for s in specs {
            u.add(s);
        }
        u
    }
}

fn ports_conflict(want: &[(String, String, i32)], used: &HashSet<(String, String, i32)>) -> bool {
    want.iter().any(|(proto, ip, port)| {
        used.iter()
            .any(|(p, i, n)| p == proto && n == port && (i == ip || i == "0.0.0.0" || ip == "0.0.0.0"))
    })
}

fn allocatable(node: &Node, name: &str) -> Option<Quantity> {
    let q = node.status.as_ref()?.allocatable.as_ref()?.get(name)?;
    Quantity::parse(&q.0).ok()
}

/// Runs the filters in kube-scheduler's order; the first that fails gives
/// the reasons (empty: the pod fits). `used` is what the pods already on
/// the node that still count (not Succeeded or Failed) hold.
pub fn filter(pod: &PodSpec, node: &Node, used: &Usage) -> Vec<Unfit> {
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or("");
    let node_spec = node.spec.clone().unwrap_or_default();
    if node_spec.unschedulable == Some(true) {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &cordon)) {
            return vec![Unfit::Unschedulable];
        }
    }
    if pod.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != name) {
        return vec![Unfit::NodeName];
    }
    if let Some(t) = untolerated(node_spec.taints.as_deref().unwrap_or_default(), tolerations) {
        return vec![Unfit::Taint(t.key.clone(), t.value.clone().unwrap_or_default())];
    }
    if !node_matches(pod, node) {
        return vec![Unfit::Affinity];
    }
    if ports_conflict(&host_ports(pod), &used.ports) {
        return vec![Unfit::Ports];
    }
    let mut out = Vec::new();
    let max_pods = allocatable(node, "pods").map_or(i64::MAX, |q| q.value());
    if used.pods.saturating_add(1) > max_pods {
        out.push(Unfit::TooManyPods);
    }
    let want = pod_requests(pod);
    let have = (used.cpu_millis, used.memory_bytes);
    let cpu = allocatable(node, "cpu").map_or(0, |q| q.milli_value());
    let memory = allocatable(node, "memory").map_or(0, |q| q.value());
    if want.cpu_millis > 0 && want.cpu_millis > cpu.saturating_sub(have.0) {
        out.push(Unfit::Insufficient("cpu"));
    }
    if want.memory_bytes > 0 && want.memory_bytes > memory.saturating_sub(have.1) {
        out.push(Unfit::Insufficient("memory"));
    }
    out
}

fn histogram(reasons: impl Iterator<Item = String>) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

/// The `FailedScheduling` message for `nodes` nodes that all refused the
/// pod, one list of reasons per node, as kube-scheduler's `FitError` words it.
pub fn failure_message(per_node: &[Vec<Unfit>]) -> String {
    let n = per_node.len();
    if n == 0 {
        return "no nodes available to schedule pods".into();
    }
    let filters = histogram(per_node.iter().flatten().map(Unfit::reason));
    let preemption = histogram(per_node.iter().map(|reasons| {
        if reasons.iter().any(Unfit::preemption_may_help) {
            "No preemption victims found for incoming pod".to_string()
        } else {
            "Preemption is not helpful for scheduling".to_string()
        }
    }));
    format!("0/{n} nodes are available: {filters}. preemption: 0/{n} nodes are available: {preemption}.")
}

/// Whether every volume in `volumes` (the PersistentVolumes of the pod's
/// bound claims) may be used on `node`: its `nodeAffinity.required` terms,
/// if any, must match the node (VolumeBinding's Filter).
pub fn volumes_fit(node: &Node, volumes: &[&serde_json::Value]) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or("");
    volumes.iter().all(|v| {
        let terms = &v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
        let Some(terms) = terms.as_array() else { return true };
        terms
            .iter()
            .filter_map(|t| serde_json::from_value::<NodeSelectorTerm>(t.clone()).ok())
            .any(|t| term_matches(&t, &labels, name))
    })
}

/// What kube-scheduler's VolumeBinding PreFilter says of a pod's claims, if
/// they keep it from every node: a claim that does not exist, is being
/// deleted or is not bound to a volume yet, unless its binding waits for its
/// first consumer (`delayed`: its class is `WaitForFirstConsumer`). `claim`
/// looks a claim up by name in the pod's namespace.
pub fn claims_unready<'a>(
    pod: &PodSpec,
    claim: impl Fn(&str) -> Option<&'a serde_json::Value>,
    delayed: impl Fn(&serde_json::Value) -> bool,
) -> Option<String> {
    let mut unbound = false;
    for v in pod.volumes.iter().flatten() {
        let Some(source) = &v.persistent_volume_claim else {
            continue;
        };
        let name = &source.claim_name;
        match claim(name) {
            None => return Some(format!("persistentvolumeclaim \"{name}\" not found")),
            Some(c) if !c["metadata"]["deletionTimestamp"].is_null() => {
                return Some(format!("persistentvolumeclaim \"{name}\" is being deleted"))
            }
            Some(c) if c["spec"]["volumeName"].as_str().is_none_or(str::is_empty) && !delayed(c) => unbound = true,
            Some(_) => {}
        }
    }
    unbound.then(|| "pod has unbound immediate PersistentVolumeClaims".to_string())
}

/// The pod's claims that wait for it to be scheduled (unbound, `delayed`):
/// the scheduler names the chosen node on them and binds the pod once they
/// are bound.
pub fn claims_waiting<'a>(
    pod: &PodSpec,
    claim: impl Fn(&str) -> Option<&'a serde_json::Value>,
    delayed: impl Fn(&serde_json::Value) -> bool,
) -> Vec<&'a serde_json::Value> {
    pod.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .filter_map(|s| claim(&s.claim_name))
        .filter(|c| c["spec"]["volumeName"].as_str().is_none_or(str::is_empty) && delayed(c))
        .collect()
}

/// The `FailedScheduling` message when a PreFilter turned the pod away
/// before any node was looked at (`n` nodes in all).
pub fn prefilter_message(n: usize, reason: &str) -> String {
    format!(
        "0/{n} nodes are available: {reason}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        let mut base = json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "zone": "3"}},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "3"}}});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            for (k, v) in o {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn pod(v: serde_json::Value) -> PodSpec {
        let mut base = json!({"containers": [{"name": "a", "image": "busybox"}]});
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn selectors_and_affinity_choose_nodes() {
        let n = node(json!({}));
        assert!(filter(&pod(json!({"nodeSelector": {"disk": "ssd"}})), &n, &Usage::default()).is_empty());
        assert_eq!(
            filter(&pod(json!({"nodeSelector": {"disk": "hdd"}})), &n, &Usage::default()),
            [Unfit::Affinity]
        );
        let aff = |op: &str, values: serde_json::Value| {
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": op, "values": values}]}]}}}}),
            )
        };
        assert!(filter(&aff("In", json!(["1", "3"])), &n, &Usage::default()).is_empty());
        assert_eq!(
            filter(&aff("NotIn", json!(["3"])), &n, &Usage::default()),
            [Unfit::Affinity]
        );
        assert!(filter(&aff("Gt", json!(["2"])), &n, &Usage::default()).is_empty());
        assert_eq!(
            filter(&aff("Lt", json!(["2"])), &n, &Usage::default()),
            [Unfit::Affinity]
        );
        assert!(filter(&aff("Exists", json!(null)), &n, &Usage::default()).is_empty());
        // Terms are ORed; an empty term matches nothing.
        let terms = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{}, {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
        );
        assert!(filter(&terms, &n, &Usage::default()).is_empty());
        assert_eq!(
            filter(&pod(json!({"nodeName": "n2"})), &n, &Usage::default()),
            [Unfit::NodeName]
        );
    }

    #[test]
    fn taints_need_tolerations() {
        let n = node(json!({"spec": {"taints": [
            {"key": "soft", "effect": "PreferNoSchedule"},
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}));
        assert_eq!(
            filter(&pod(json!({})), &n, &Usage::default()),
            [Unfit::Taint("dedicated".into(), "db".into())]
        );
        for tol in [
            json!({"key": "dedicated", "value": "db"}),
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}),
            json!({"operator": "Exists"}),
        ] {
            assert!(
                filter(&pod(json!({"tolerations": [tol]})), &n, &Usage::default()).is_empty(),
                "{tol}"
            );
        }
        for tol in [
            json!({"key": "dedicated", "value": "web"}),
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
        ] {
            assert!(
                !filter(&pod(json!({"tolerations": [tol]})), &n, &Usage::default()).is_empty(),
                "{tol}"
            );
        }
        let cordoned = node(json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            filter(&pod(json!({})), &cordoned, &Usage::default()),
            [Unfit::Unschedulable]
        );
    }

    #[test]
    fn resources_ports_and_pod_count_are_counted_against_bound_pods() {
        let n = node(json!({}));
        let big = pod(json!({"containers": [{"name": "a", "image": "b",
            "resources": {"requests": {"cpu": "1500m", "memory": "800Mi"}},
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
        assert!(filter(&big, &n, &Usage::default()).is_empty());
        // A second one finds its port taken first (NodePorts runs before NodeResourcesFit).
        assert_eq!(filter(&big, &n, &Usage::of(&[&big])), [Unfit::Ports]);
        let no_port = pod(json!({"containers": [{"name": "a", "image": "b",
            "resources": {"requests": {"cpu": "1500m", "memory": "800Mi"}}}]}));
        assert_eq!(
            filter(&no_port, &n, &Usage::of(&[&big])),
            [Unfit::Insufficient("cpu"), Unfit::Insufficient("memory")]
        );
        let tiny = pod(json!({}));
        assert!(filter(&tiny, &n, &Usage::of(&[&tiny, &tiny])).is_empty());
        assert_eq!(
            filter(&tiny, &n, &Usage::of(&[&tiny, &tiny, &tiny])),
            [Unfit::TooManyPods]
        );
    }

    #[test]
    fn messages_read_as_kube_scheduler_writes_them() {
        assert_eq!(
            failure_message(&[vec![Unfit::Affinity]]),
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            failure_message(&[vec![Unfit::Insufficient("cpu"), Unfit::Insufficient("memory")], vec![Unfit::Taint("a".into(), "".into())]]),
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) had untolerated taint {a: }. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
        assert_eq!(failure_message(&[]), "no nodes available to schedule pods");
    }

    #[test]
    fn a_bound_volume_keeps_its_pod_on_the_nodes_it_may_be_used_on() {
        let n = node(json!({}));
        let pv = |values: serde_json::Value| {
            json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": values}]}]}}}})
        };
        assert!(volumes_fit(&n, &[&pv(json!(["ssd"]))]));
        assert!(!volumes_fit(&n, &[&pv(json!(["hdd"]))]));
        assert!(volumes_fit(&n, &[&json!({"spec": {}})]), "no affinity: anywhere");
        assert!(!volumes_fit(&n, &[&json!({"spec": {}}), &pv(json!(["hdd"]))]));
        assert_eq!(
            Unfit::VolumeNodeAffinity.reason(),
            "node(s) had volume node affinity conflict"
        );
    }

    #[test]
    fn claims_must_exist_and_be_bound() {
        let spec = pod(json!({"volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "data"}}]}));
        let bound = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv-1"}});
        let pending = json!({"metadata": {"name": "data"}, "spec": {}});
        let going = json!({"metadata": {"name": "data", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}});
        assert_eq!(claims_unready(&spec, |_| Some(&bound), |_| false), None);
        assert_eq!(
            claims_unready(&spec, |_| Some(&pending), |_| false).as_deref(),
            Some("pod has unbound immediate PersistentVolumeClaims")
        );
        assert_eq!(
            claims_unready(&spec, |_| None, |_| false).as_deref(),
            Some("persistentvolumeclaim \"data\" not found")
        );
        assert_eq!(
            claims_unready(&spec, |_| Some(&going), |_| true).as_deref(),
            Some("persistentvolumeclaim \"data\" is being deleted")
        );
        assert_eq!(claims_unready(&pod(json!({})), |_| None, |_| false), None);
        // A claim that waits for its first consumer does not hold the pod back.
        assert_eq!(claims_unready(&spec, |_| Some(&pending), |_| true), None);
        assert_eq!(claims_waiting(&spec, |_| Some(&pending), |_| true).len(), 1);
        assert!(claims_waiting(&spec, |_| Some(&bound), |_| true).is_empty());
        assert!(claims_waiting(&spec, |_| Some(&pending), |_| false).is_empty());
        assert_eq!(
            prefilter_message(1, "pod has unbound immediate PersistentVolumeClaims"),
            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }
}
