//! Which PersistentVolume a claim binds to, by Kubernetes' rules
//! (`findByClaim` and `FindMatchingVolume`): pure functions over the stored
//! objects, which the binder actor applies.
//!
//! - Volumes are looked at in groups of equal access modes, the groups that
//!   hold every requested mode, fewest modes first; the first group with a
//!   match decides.
//! - A volume pre-bound to the claim (`claimRef` naming it, with its uid or
//!   none) is taken whatever its phase, as long as it is large enough, of the
//!   claim's volumeMode and not being deleted.
//! - Otherwise a candidate is `Available`, not bound to another claim, at
//!   least the requested size, of the same volumeMode and class (`""` only
//!   matches `""`), not being deleted, and taken by the claim's selector; the
//!   smallest wins.
//! - With `WaitForFirstConsumer` binding only a pre-bound volume is taken here.

use peapod_core::quantity::Quantity;
use peapod_core::validation::storage::class_of;
use peapod_core::validation::workloads::label_selector;
use serde_json::Value;
use std::collections::BTreeSet;

fn size(v: &Value) -> Option<i64> {
    v.as_str().and_then(|s| Quantity::parse(s).ok()).map(|q| q.value())
}

fn requested(claim: &Value) -> i64 {
    size(&claim["spec"]["resources"]["requests"]["storage"]).unwrap_or(0)
}

fn capacity(pv: &Value) -> i64 {
    size(&pv["spec"]["capacity"]["storage"]).unwrap_or(0)
}

fn volume_mode(obj: &Value) -> &str {
    obj["spec"]["volumeMode"].as_str().unwrap_or("Filesystem")
}

fn modes(obj: &Value) -> BTreeSet<&str> {
    obj["spec"]["accessModes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether `pv`'s `claimRef` names `claim` (and its uid, when the ref has one).
pub fn is_bound_to(pv: &Value, claim: &Value) -> bool {
    let r = &pv["spec"]["claimRef"];
    let uid = r["uid"].as_str().unwrap_or("");
    r["name"] == claim["metadata"]["name"]
        && r["namespace"] == claim["metadata"]["namespace"]
        && (uid.is_empty() || claim["metadata"]["uid"] == uid)
}

/// Why `pv` cannot serve `claim`, in Kubernetes' words, as checked when a
/// claim names its volume (`checkVolumeSatisfyClaim`).
pub fn unsatisfied(claim: &Value, pv: &Value) -> Option<&'static str> {
    if capacity(pv) < requested(claim) {
        return Some("requested PV is too small");
    }
    if class_of(pv) != class_of(claim) {
        return Some("storageClassName does not match");
    }
    if volume_mode(pv) != volume_mode(claim) {
        return Some("incompatible volumeMode");
    }
    if !modes(claim).is_subset(&modes(pv)) {
        return Some("incompatible accessMode");
    }
    None
}

/// The volume `claim` binds to among `volumes`, if one fits. `delay_binding`:
/// the claim's class binds at first use (`WaitForFirstConsumer`).
pub fn best_match<'a>(claim: &Value, volumes: &'a [Value], delay_binding: bool) -> Option<&'a Value> {
    let wanted = modes(claim);
    // The access-mode groups holding every requested mode, fewest modes first.
    let mut groups: Vec<BTreeSet<&str>> = Vec::new();
    for v in volumes {
        let m = modes(v);
        if wanted.is_subset(&m) && !groups.contains(&m) {
            groups.push(m);
        }
    }
    groups.sort_by_key(BTreeSet::len);
    groups
        .iter()
        .find_map(|g| in_group(claim, volumes.iter().filter(|v| modes(v) == *g), delay_binding))
}

/// Kubernetes' `FindMatchingVolume` over one group.
fn in_group<'a>(claim: &Value, volumes: impl Iterator<Item = &'a Value>, delay_binding: bool) -> Option<&'a Value> {
    let want = requested(claim);
    let selector = match &claim["spec"]["selector"] {
        Value::Null => None,
        s => Some(label_selector(s).ok()?),
    };
    let mut smallest: Option<(&Value, i64)> = None;
    for v in volumes {
        if !v["spec"]["claimRef"].is_null() && !is_bound_to(v, claim) {
            continue;
        }
        let cap = capacity(v);
        if cap < want || volume_mode(v) != volume_mode(claim) || !v["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        if is_bound_to(v, claim) {
            return Some(v);
        }
        if delay_binding || v["status"]["phase"] != "Available" {
            continue;
        }
        if selector
            .as_ref()
            .is_some_and(|s| !s.matches(&peapod_core::object::labels(v)))
        {
            continue;
        }
        if class_of(v) != class_of(claim) {
            continue;
        }
        if smallest.is_none_or(|(_, c)| cap < c) {
            smallest = Some((v, cap));
        }
    }
    smallest.map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(size: &str, modes: &[&str], extra: Value) -> Value {
        let mut c = json!({"metadata": {"name": "data", "namespace": "default", "uid": "c1"},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}}});
        for (k, v) in extra.as_object().unwrap() {
            c["spec"][k] = v.clone();
        }
        c
    }

    fn pv(name: &str, size: &str, modes: &[&str], extra: Value) -> Value {
        let mut v = json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": size},
            "accessModes": modes, "hostPath": {"path": "/x"}}, "status": {"phase": "Available"}});
        for (k, val) in extra.as_object().unwrap() {
            if k == "labels" || k == "deletionTimestamp" {
                v["metadata"][k] = val.clone();
            } else if k == "phase" {
                v["status"]["phase"] = val.clone();
            } else {
                v["spec"][k] = val.clone();
            }
        }
        v
    }

    const RWO: &[&str] = &["ReadWriteOnce"];

    fn pick(c: &Value, pvs: &[Value]) -> Option<String> {
        best_match(c, pvs, false).map(|v| v["metadata"]["name"].as_str().unwrap().to_string())
    }

    /// One row per rule: the claim, the volumes, the one chosen.
    #[test]
    fn kubernetes_binding_rules() {
        let none = json!({});
        let rows: Vec<(&str, Value, Vec<Value>, Option<&str>)> = vec![
            (
                "the smallest that fits wins",
                claim("1Gi", RWO, none.clone()),
                vec![
                    pv("big", "10Gi", RWO, json!({})),
                    pv("small", "2Gi", RWO, json!({})),
                    pv("tiny", "500Mi", RWO, json!({})),
                ],
                Some("small"),
            ),
            (
                "too small never fits",
                claim("5Gi", RWO, none.clone()),
                vec![pv("a", "4Gi", RWO, json!({}))],
                None,
            ),
            (
                "access modes: every requested one, the group with fewest modes first",
                claim("1Gi", RWO, none.clone()),
                vec![
                    pv(
                        "more-modes-smaller",
                        "1Gi",
                        &["ReadWriteOnce", "ReadOnlyMany"],
                        json!({}),
                    ),
                    pv("exact-modes-larger", "5Gi", RWO, json!({})),
                    pv("other-modes", "1Gi", &["ReadOnlyMany"], json!({})),
                ],
                Some("exact-modes-larger"),
            ),
            (
                "a volume bound to another claim is not a candidate",
                claim("1Gi", RWO, none.clone()),
                vec![
                    pv(
                        "taken",
                        "1Gi",
                        RWO,
                        json!({"claimRef": {"name": "other", "namespace": "default"}}),
                    ),
                    pv("free", "3Gi", RWO, json!({})),
                ],
                Some("free"),
            ),
            (
                "a volume pre-bound to the claim wins over a smaller one, whatever its phase",
                claim("1Gi", RWO, none.clone()),
                vec![
                    pv("small", "1Gi", RWO, json!({})),
                    pv(
                        "mine",
                        "8Gi",
                        RWO,
                        json!({"claimRef": {"name": "data", "namespace": "default"}, "phase": "Pending"}),
                    ),
                ],
                Some("mine"),
            ),
            (
                "a claimRef with another uid is another claim",
                claim("1Gi", RWO, none.clone()),
                vec![pv(
                    "old",
                    "1Gi",
                    RWO,
                    json!({"claimRef": {"name": "data", "namespace": "default", "uid": "c0"}}),
                )],
                None,
            ),
            (
                "volumeMode must match (unset is Filesystem)",
                claim("1Gi", RWO, json!({"volumeMode": "Block"})),
                vec![
                    pv("fs", "1Gi", RWO, json!({})),
                    pv("block", "2Gi", RWO, json!({"volumeMode": "Block"})),
                ],
                Some("block"),
            ),
            (
                "a volume being deleted is not a candidate",
                claim("1Gi", RWO, none.clone()),
                vec![pv(
                    "going",
                    "1Gi",
                    RWO,
                    json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
                )],
                None,
            ),
            (
                "the claim's selector must take the volume's labels",
                claim("1Gi", RWO, json!({"selector": {"matchLabels": {"tier": "fast"}}})),
                vec![
                    pv("slow", "1Gi", RWO, json!({"labels": {"tier": "slow"}})),
                    pv("fast", "2Gi", RWO, json!({"labels": {"tier": "fast"}})),
                ],
                Some("fast"),
            ),
            (
                "the class must match; \"\" matches only \"\"",
                claim("1Gi", RWO, none.clone()),
                vec![
                    pv("classed", "1Gi", RWO, json!({"storageClassName": "local"})),
                    pv("plain", "2Gi", RWO, json!({})),
                ],
                Some("plain"),
            ),
            (
                "a claim of a class takes only that class",
                claim("1Gi", RWO, json!({"storageClassName": "local"})),
                vec![
                    pv("plain", "1Gi", RWO, json!({})),
                    pv("classed", "2Gi", RWO, json!({"storageClassName": "local"})),
                ],
                Some("classed"),
            ),
            (
                "only Available volumes are candidates",
                claim("1Gi", RWO, none.clone()),
                vec![
                    pv("released", "1Gi", RWO, json!({"phase": "Released"})),
                    pv("failed", "1Gi", RWO, json!({"phase": "Failed"})),
                ],
                None,
            ),
        ];
        for (rule, c, pvs, want) in rows {
            assert_eq!(pick(&c, &pvs).as_deref(), want, "{rule}");
        }
    }

    #[test]
    fn first_consumer_binding_takes_only_a_pre_bound_volume() {
        let c = claim("1Gi", RWO, json!({}));
        let free = vec![pv("free", "1Gi", RWO, json!({}))];
        assert!(best_match(&c, &free, true).is_none());
        let pre = vec![pv(
            "mine",
            "1Gi",
            RWO,
            json!({"claimRef": {"name": "data", "namespace": "default"}}),
        )];
        assert!(best_match(&c, &pre, true).is_some());
    }

    #[test]
    fn a_named_volume_says_why_it_does_not_fit() {
        let c = claim("2Gi", RWO, json!({"storageClassName": "local"}));
        let v = |extra: Value| pv("v", "2Gi", RWO, extra);
        assert_eq!(unsatisfied(&c, &v(json!({"storageClassName": "local"}))), None);
        assert_eq!(
            unsatisfied(&c, &pv("v", "1Gi", RWO, json!({"storageClassName": "local"}))),
            Some("requested PV is too small")
        );
        assert_eq!(unsatisfied(&c, &v(json!({}))), Some("storageClassName does not match"));
        assert_eq!(
            unsatisfied(&c, &v(json!({"storageClassName": "local", "volumeMode": "Block"}))),
            Some("incompatible volumeMode")
        );
        assert_eq!(
            unsatisfied(
                &c,
                &pv("v", "2Gi", &["ReadOnlyMany"], json!({"storageClassName": "local"}))
            ),
            Some("incompatible accessMode")
        );
    }
}
