//! Inter-pod affinity and anti-affinity, as kube-scheduler's InterPodAffinity
//! plugin decides them: where a pod may go given the pods already placed
//! (its required terms, and the required anti-affinity terms of the pods
//! there), and how much it likes a node (its preferred terms). Pure
//! functions over the placed pods and the nodes' labels.

use crate::scheduling::Unfit;
use crate::selector::Selector;
use k8s_openapi::api::core::v1::{Node, PodAffinityTerm, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, HashMap};

type Labels = BTreeMap<String, String>;

/// A pod as inter-pod affinity sees it.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub namespace: String,
    pub labels: Labels,
    /// Its `requiredDuringScheduling…` pod affinity terms.
    pub affinity: Vec<PodAffinityTerm>,
    /// Its `requiredDuringScheduling…` pod anti-affinity terms.
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// Its preferred terms with their weights; anti-affinity's negative.
    pub preferred: Vec<(i32, PodAffinityTerm)>,
}

impl PodFacts {
    /// Reads a pod's namespace, labels and terms.
    pub fn of(namespace: &str, labels: Option<&Labels>, spec: &PodSpec) -> PodFacts {
        let affinity = spec.affinity.as_ref();
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let mut preferred: Vec<(i32, PodAffinityTerm)> = Vec::new();
        for w in pa
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
        {
            preferred.push((w.weight, w.pod_affinity_term.clone()));
        }
        for w in paa
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
        {
            preferred.push((w.weight.saturating_neg(), w.pod_affinity_term.clone()));
        }
        PodFacts {
            namespace: namespace.to_string(),
            labels: labels.cloned().unwrap_or_default(),
            affinity: pa
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
            anti_affinity: paa
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
            preferred,
        }
    }

    /// Whether it has any term at all (most pods have none: nothing to work out).
    pub fn has_terms(&self) -> bool {
        !(self.affinity.is_empty() && self.anti_affinity.is_empty() && self.preferred.is_empty())
    }
}

/// A pod bound to a node.
#[derive(Debug, Clone)]
pub struct Placed {
    pub pod: PodFacts,
    pub node: String,
}

/// What the terms are judged against: the placed pods, the nodes' labels
/// and the namespaces' labels (for `namespaceSelector`).
pub struct World<'a> {
    pub placed: &'a [Placed],
    pub node_labels: HashMap<&'a str, &'a Labels>,
    pub namespace_labels: &'a HashMap<String, Labels>,
}

impl<'a> World<'a> {
    pub fn new(placed: &'a [Placed], nodes: &'a [Node], namespace_labels: &'a HashMap<String, Labels>) -> Self {
        static NONE: Labels = BTreeMap::new();
        let node_labels = nodes
            .iter()
            .map(|n| {
                (
                    n.metadata.name.as_deref().unwrap_or(""),
                    n.metadata.labels.as_ref().unwrap_or(&NONE),
                )
            })
            .collect();
        World {
            placed,
            node_labels,
            namespace_labels,
        }
    }

    /// Whether node `a` and node `b` are in one domain of `key` (both have the label, with one value).
    fn same_domain(&self, key: &str, a: &str, b: &str) -> bool {
        let value = |n: &str| self.node_labels.get(n).and_then(|l| l.get(key));
        matches!((value(a), value(b)), (Some(x), Some(y)) if x == y)
    }

    fn has_key(&self, key: &str, node: &str) -> bool {
        self.node_labels.get(node).is_some_and(|l| l.contains_key(key))
    }
}

fn selector_of(s: &LabelSelector) -> Option<Selector> {
    let exprs: Vec<(String, String, Vec<String>)> = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| (e.key.clone(), e.operator.clone(), e.values.clone().unwrap_or_default()))
        .collect();
    Selector::from_match(&s.match_labels.clone().unwrap_or_default(), &exprs).ok()
}

/// Whether `term`, written in a pod of namespace `owner_ns`, selects `pod`:
/// its namespace is among the term's (its own when the term names none and
/// has no namespaceSelector; an empty namespaceSelector is every namespace)
/// and its labels match the labelSelector (none: matches nothing).
fn selects(term: &PodAffinityTerm, owner_ns: &str, pod: &PodFacts, world: &World) -> bool {
    let names = term.namespaces.as_deref().unwrap_or_default();
    let in_namespace = match &term.namespace_selector {
        None if names.is_empty() => pod.namespace == owner_ns,
        None => names.contains(&pod.namespace),
        Some(sel) => {
            names.contains(&pod.namespace)
                || selector_of(sel).is_some_and(|s| {
                    static NONE: Labels = BTreeMap::new();
                    s.matches(world.namespace_labels.get(&pod.namespace).unwrap_or(&NONE))
                })
        }
    };
    in_namespace
        && term
            .label_selector
            .as_ref()
            .and_then(selector_of)
            .is_some_and(|s| s.matches(&pod.labels))
}

/// The InterPodAffinity filter for `pod` on `node`, in kube-scheduler's
/// order: the pod's required affinity, its required anti-affinity, then
/// the placed pods' required anti-affinity (symmetry).
pub fn filter(pod: &PodFacts, node: &str, world: &World) -> Option<Unfit> {
    if !pod.affinity.is_empty() {
        let satisfied = pod.affinity.iter().all(|t| {
            world.has_key(&t.topology_key, node)
                && world.placed.iter().any(|p| {
                    world.same_domain(&t.topology_key, &p.node, node) && selects(t, &pod.namespace, &p.pod, world)
                })
        });
        // The first pod of a group that must be together goes anywhere its
        // terms could hold: none is placed yet that any term selects, and it
        // matches all its terms itself.
        let first = || {
            !world
                .placed
                .iter()
                .any(|p| pod.affinity.iter().any(|t| selects(t, &pod.namespace, &p.pod, world)))
                && pod.affinity.iter().all(|t| selects(t, &pod.namespace, pod, world))
        };
        if !satisfied && !first() {
            return Some(Unfit::PodAffinity);
        }
    }
    let crowded = pod.anti_affinity.iter().any(|t| {
        world
            .placed
            .iter()
            .any(|p| world.same_domain(&t.topology_key, &p.node, node) && selects(t, &pod.namespace, &p.pod, world))
    });
    if crowded {
        return Some(Unfit::PodAntiAffinity);
    }
    // A placed pod in the node's domain whose anti-affinity term selects this pod keeps it away.
    let repelled = world.placed.iter().any(|p| {
        p.pod
            .anti_affinity
            .iter()
            .any(|t| world.same_domain(&t.topology_key, &p.node, node) && selects(t, &p.pod.namespace, pod, world))
    });
    if repelled {
        return Some(Unfit::ExistingAntiAffinity);
    }
    None
}

/// How much `pod` likes `node` by its preferred terms: each placed pod a
/// term selects in the node's domain adds the term's weight (affinity) or
/// takes it away (anti-affinity). Higher is better.
pub fn score(pod: &PodFacts, node: &str, world: &World) -> i64 {
    let mut total: i64 = 0;
    for (weight, term) in &pod.preferred {
        let n = world
            .placed
            .iter()
            .filter(|p| {
                world.same_domain(&term.topology_key, &p.node, node) && selects(term, &pod.namespace, &p.pod, world)
            })
            .count();
        total = total.saturating_add(i64::from(*weight).saturating_mul(n as i64));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodes() -> Vec<Node> {
        [("a", "z1"), ("b", "z1"), ("c", "z2")]
            .iter()
            .map(|(n, z)| {
                serde_json::from_value(json!({"metadata": {"name": n, "labels": {
                "kubernetes.io/hostname": n, "topology.kubernetes.io/zone": z}}}))
                .unwrap()
            })
            .collect()
    }

    fn facts(ns: &str, labels: serde_json::Value, affinity: serde_json::Value) -> PodFacts {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [], "affinity": affinity})).unwrap();
        let labels: Labels = serde_json::from_value(labels).unwrap();
        PodFacts::of(ns, Some(&labels), &spec)
    }

    fn term(key: &str, app: &str) -> serde_json::Value {
        json!({"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}})
    }

    fn placed(node: &str, pod: PodFacts) -> Placed {
        Placed { pod, node: node.into() }
    }

    const HOST: &str = "kubernetes.io/hostname";
    const ZONE: &str = "topology.kubernetes.io/zone";

    #[test]
    fn required_anti_affinity_keeps_one_per_domain() {
        let nodes = nodes();
        let ns = HashMap::new();
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(HOST, "web")]}});
        let web = facts("default", json!({"app": "web"}), anti.clone());
        let on = vec![placed("a", web.clone())];
        let world = World::new(&on, &nodes, &ns);
        assert_eq!(filter(&web, "a", &world), Some(Unfit::PodAntiAffinity));
        assert_eq!(filter(&web, "b", &world), None);
        // Symmetry: a placed pod's term keeps away a pod that has none.
        let plain_web = facts("default", json!({"app": "web"}), json!({}));
        assert_eq!(filter(&plain_web, "a", &world), Some(Unfit::ExistingAntiAffinity));
        assert_eq!(filter(&plain_web, "b", &world), None);
        // The incoming pod's own term, with no term on the placed pod.
        let plain = vec![placed("a", facts("default", json!({"app": "web"}), json!({})))];
        let world = World::new(&plain, &nodes, &ns);
        assert_eq!(filter(&web, "a", &world), Some(Unfit::PodAntiAffinity));
        // Per zone: a and b share one.
        let zonal = facts(
            "default",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, "web")]}}),
        );
        assert_eq!(filter(&zonal, "b", &world), Some(Unfit::PodAntiAffinity));
        assert_eq!(filter(&zonal, "c", &world), None);
        // Another namespace's pods are not selected unless the term says so.
        let other = vec![placed("a", facts("other", json!({"app": "web"}), json!({})))];
        let world = World::new(&other, &nodes, &ns);
        assert_eq!(filter(&web, "a", &world), None);
        let everywhere = facts(
            "default",
            json!({}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": HOST, "labelSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {}}]}}),
        );
        assert_eq!(filter(&everywhere, "a", &world), Some(Unfit::PodAntiAffinity));
    }

    #[test]
    fn required_affinity_follows_its_peers_and_lets_the_first_one_in() {
        let nodes = nodes();
        let ns = HashMap::new();
        let near_cache = facts(
            "default",
            json!({"app": "web"}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, "cache")]}}),
        );
        let on = vec![placed("c", facts("default", json!({"app": "cache"}), json!({})))];
        let world = World::new(&on, &nodes, &ns);
        assert_eq!(filter(&near_cache, "a", &world), Some(Unfit::PodAffinity));
        assert_eq!(filter(&near_cache, "c", &world), None);
        // No cache anywhere: a pod that is not a cache itself waits.
        let world = World::new(&[], &nodes, &ns);
        assert_eq!(filter(&near_cache, "a", &world), Some(Unfit::PodAffinity));
        // Pods that must be together: the first goes anywhere, the next follows it.
        let together = facts(
            "default",
            json!({"app": "db"}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(HOST, "db")]}}),
        );
        assert_eq!(filter(&together, "b", &world), None);
        let on = vec![placed("b", together.clone())];
        let world = World::new(&on, &nodes, &ns);
        assert_eq!(filter(&together, "a", &world), Some(Unfit::PodAffinity));
        assert_eq!(filter(&together, "b", &world), None);
    }

    #[test]
    fn namespace_selectors_read_the_namespaces_labels() {
        let nodes = nodes();
        let mut ns = HashMap::new();
        ns.insert(
            "team-a".to_string(),
            Labels::from([("team".to_string(), "a".to_string())]),
        );
        let pod = facts(
            "default",
            json!({}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": HOST, "labelSelector": {"matchLabels": {"app": "x"}},
                 "namespaceSelector": {"matchLabels": {"team": "a"}}}]}}),
        );
        let on = vec![
            placed("a", facts("team-a", json!({"app": "x"}), json!({}))),
            placed("b", facts("team-b", json!({"app": "x"}), json!({}))),
        ];
        let world = World::new(&on, &nodes, &ns);
        assert_eq!(filter(&pod, "a", &world), Some(Unfit::PodAntiAffinity));
        assert_eq!(filter(&pod, "b", &world), None);
    }

    #[test]
    fn preferred_terms_score_by_weight_and_count() {
        let nodes = nodes();
        let ns = HashMap::new();
        let pod = facts(
            "default",
            json!({"app": "web"}),
            json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": term(ZONE, "cache")}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": term(HOST, "web")}]}}),
        );
        let on = vec![
            placed("a", facts("default", json!({"app": "cache"}), json!({}))),
            placed("a", facts("default", json!({"app": "web"}), json!({}))),
        ];
        let world = World::new(&on, &nodes, &ns);
        assert_eq!(score(&pod, "a", &world), 10 - 100);
        assert_eq!(score(&pod, "b", &world), 10, "b shares a's zone, not its host");
        assert_eq!(score(&pod, "c", &world), 0);
    }
}
