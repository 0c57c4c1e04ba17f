//! Admission that reads other objects, as the API server's LimitRanger and
//! ResourceQuota plugins: a new object gets its namespace's LimitRange
//! defaults and is checked against their bounds, then against every
//! ResourceQuota of the namespace, with the API server's words.
//!
//! Quota usage is counted from the objects themselves, under a lock per
//! namespace held until the object is stored ([`locked`]), so two creates
//! never both take the last slot, and nothing is lost by a daemon that dies
//! between admission and write: there is no charge to undo. The quota's
//! `status.used` is the quota controller's report of the same count.
//!
//! Nodes sharing a store (etcd) admit into one namespace too: where the
//! namespace has a ResourceQuota the lock is also an object in the store
//! ([`ADMISSION_LOCKS`], created to take it, deleted to give it back), so
//! one admission at a time runs across the cluster. A holder that died
//! leaves it for [`STORE_LOCK_TTL`], after which it is taken over.

use crate::kinds::{self, Kind};
use crate::object;
use crate::quantity::{format_bytes, Quantity};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// Why admission refused an object.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A 403, with the API server's message (`pods "p" is forbidden: …`).
    #[error("{0}")]
    Forbidden(String),
    /// Reading the namespace's policies failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store keys of the kinds.
pub const LIMIT_RANGES: &str = "limitranges";
pub const RESOURCE_QUOTAS: &str = "resourcequotas";

/// The store resource of the cluster-wide admission locks, one per namespace.
pub const ADMISSION_LOCKS: &str = "peapod.internal/admissionlocks";

/// How old a store lock may be before another admission takes it over (its
/// holder died between taking and giving it back; an admission holds it for
/// milliseconds).
pub const STORE_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an admission waits for a namespace's store lock before it gives up.
const STORE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `work` (an admission and the write it admits) holding the
/// namespace's admission lock: this process's, and, where the namespace has
/// a ResourceQuota, the store's, so nodes sharing the store take turns too.
/// `work` is given the namespace's ResourceQuotas, read under the lock (for
/// [`admit_with`] and [`admit_update_with`]: read once per admission).
pub async fn locked<T, Fut>(
    store: &dyn Store,
    namespace: &str,
    work: impl FnOnce(Vec<Value>) -> Fut,
) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = T>,
{
    let _local = namespace_lock(namespace).await;
    let (quotas, _) = store.list(RESOURCE_QUOTAS, Some(namespace)).await?;
    if quotas.is_empty() {
        return Ok(work(quotas).await);
    }
    let held = take_store_lock(store, namespace).await?;
    // Read again under the store's lock: another node may have changed them.
    let out = match store.list(RESOURCE_QUOTAS, Some(namespace)).await {
        Ok((quotas, _)) => Ok(work(quotas).await),
        Err(e) => Err(e),
    };
    let pre = crate::store::Preconditions {
        uid: Some(held),
        ..Default::default()
    };
    // A lock that cannot be given back now expires.
    if let Err(e) = store.delete(ADMISSION_LOCKS, "", namespace, pre).await {
        if !matches!(e, StoreError::NotFound { .. }) {
            tracing::warn!("giving back the admission lock of namespace {namespace}: {e}");
        }
    }
    out
}

/// Creates the namespace's lock object (its uid is returned), waiting while
/// another holds it, and taking over one older than [`STORE_LOCK_TTL`].
async fn take_store_lock(store: &dyn Store, namespace: &str) -> Result<String, StoreError> {
    let deadline = tokio::time::Instant::now() + STORE_LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        let uid = object::new_uid();
        let lock = json!({"apiVersion": "peapod.internal/v1", "kind": "AdmissionLock",
            "metadata": {"name": namespace, "uid": uid, "creationTimestamp": object::now_rfc3339()}});
        match store.create(ADMISSION_LOCKS, lock).await {
            Ok(_) => return Ok(uid),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        match store.get(ADMISSION_LOCKS, "", namespace).await {
            Ok(held) => {
                let age = held["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| chrono::Utc::now().signed_duration_since(t));
                let stale = age.is_some_and(|a| a.to_std().is_ok_and(|a| a > STORE_LOCK_TTL));
                if stale {
                    tracing::warn!("taking over the admission lock of namespace {namespace}: its holder left it");
                    let pre = crate::store::Preconditions {
                        uid: Some(object::uid(&held).to_string()),
                        ..Default::default()
                    };
                    let _ = store.delete(ADMISSION_LOCKS, "", namespace, pre).await;
                    continue;
                }
            }
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Backend {
                path: format!("{ADMISSION_LOCKS}/{namespace}"),
                message: format!("the namespace's admission lock stayed taken for {STORE_LOCK_WAIT:?}"),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// The lock that orders admissions and writes in one namespace within this process.
async fn namespace_lock(namespace: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(namespace.to_string())
        .or_default()
        .clone();
    lock.lock_owned().await
}

/// Whether creates of `kind` go through quota admission (Events and
/// Leases are written too often, and counted by no quota anyone sets).
pub fn applies_to(kind: &Kind) -> bool {
    kind.namespaced && !matches!(kind.plural, "events" | "leases")
}

fn forbidden(kind: &Kind, obj: &Value, why: String) -> Refusal {
    Refusal::Forbidden(format!("{} \"{}\" is forbidden: {why}", kind.plural, object::name(obj)))
}

/// Runs LimitRanger (which may change `obj`) and ResourceQuota for a new
/// object of `kind`. Hold [`namespace_lock`] from before this until the
/// object is stored.
pub async fn admit(store: &dyn Store, kind: &'static Kind, obj: &mut Value) -> Result<(), Refusal> {
    let (quotas, _) = store.list(RESOURCE_QUOTAS, Some(object::namespace(obj))).await?;
    admit_with(store, kind, obj, &quotas).await
}

/// [`admit`] against the namespace's `quotas` as [`locked`] read them.
pub async fn admit_with(
    store: &dyn Store,
    kind: &'static Kind,
    obj: &mut Value,
    quotas: &[Value],
) -> Result<(), Refusal> {
    if !applies_to(kind) {
        return Ok(());
    }
    let ns = object::namespace(obj).to_string();
    if matches!(kind.plural, "pods" | "persistentvolumeclaims") {
        let (ranges, _) = store.list(LIMIT_RANGES, Some(&ns)).await?;
        if !ranges.is_empty() {
            limit_ranger(kind, obj, &ranges).map_err(|e| forbidden(kind, obj, e))?;
        }
    }
    for q in quotas {
        let hard = hard_of(q);
        if hard.is_empty() || !quota_matches(q, kind, obj) {
            continue;
        }
        if kind.plural == "pods" {
            let missing = missing_resources(&hard, obj);
            if !missing.is_empty() {
                return Err(forbidden(
                    kind,
                    obj,
                    format!("failed quota: {}: must specify {}", object::name(q), missing.join(",")),
                ));
            }
        }
        let delta = usage_of(kind, obj, &hard);
        check_quota(store, &ns, q, &hard, &delta)
            .await?
            .map_or(Ok(()), |why| Err(forbidden(kind, obj, why)))?;
    }
    Ok(())
}

/// Checks an update against the namespace's quotas: what it adds (a
/// Service made a NodePort, a claim grown) must fit, as the API server's
/// ResourceQuota plugin checks updates. Hold [`namespace_lock`] until it is written.
pub async fn admit_update(store: &dyn Store, kind: &'static Kind, old: &Value, new: &Value) -> Result<(), Refusal> {
    let (quotas, _) = store.list(RESOURCE_QUOTAS, Some(object::namespace(new))).await?;
    admit_update_with(store, kind, old, new, &quotas).await
}

/// [`admit_update`] against the namespace's `quotas` as [`locked`] read them.
pub async fn admit_update_with(
    store: &dyn Store,
    kind: &'static Kind,
    old: &Value,
    new: &Value,
    quotas: &[Value],
) -> Result<(), Refusal> {
    if !applies_to(kind) {
        return Ok(());
    }
    let ns = object::namespace(new).to_string();
    for q in quotas {
        let hard = hard_of(q);
        if hard.is_empty() || !quota_matches(q, kind, new) {
            continue;
        }
        let before = if quota_matches(q, kind, old) {
            usage_of(kind, old, &hard)
        } else {
            BTreeMap::new()
        };
        let delta: BTreeMap<String, i64> = usage_of(kind, new, &hard)
            .into_iter()
            .map(|(r, n)| {
                let was = before.get(&r).copied().unwrap_or(0);
                (r, n.saturating_sub(was).max(0))
            })
            .collect();
        check_quota(store, &ns, q, &hard, &delta)
            .await?
            .map_or(Ok(()), |why| Err(forbidden(kind, new, why)))?;
    }
    Ok(())
}

/// Whether `delta` fits in quota `q` beside what its namespace uses now:
/// `Some(why)` in the API server's words when it does not.
async fn check_quota(
    store: &dyn Store,
    ns: &str,
    q: &Value,
    hard: &Resources,
    delta: &BTreeMap<String, i64>,
) -> Result<Option<String>, StoreError> {
    if delta.values().all(|v| *v <= 0) {
        return Ok(None);
    }
    let used = usage(store, ns, q, hard).await?;
    let mut requested = BTreeMap::new();
    let mut now = BTreeMap::new();
    let mut limited = BTreeMap::new();
    for (r, d) in delta {
        let (Some(h), u) = (hard.get(r), used.get(r).copied().unwrap_or(0)) else {
            continue;
        };
        if *d > 0 && u.saturating_add(*d) > h.milli_value() {
            requested.insert(r.clone(), show(r, *d));
            now.insert(r.clone(), show(r, u));
            limited.insert(r.clone(), h.to_string());
        }
    }
    if requested.is_empty() {
        return Ok(None);
    }
    let pretty = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    Ok(Some(format!(
        "exceeded quota: {}, requested: {}, used: {}, limited: {}",
        object::name(q),
        pretty(&requested),
        pretty(&now),
        pretty(&limited)
    )))
}

// ---- LimitRanger --------------------------------------------------------------------------

type Resources = BTreeMap<String, Quantity>;

fn resources(v: &Value) -> Resources {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), Quantity::parse(q.as_str()?).ok()?)))
        .collect()
}

fn min_constraint(limit_type: &str, r: &str, enforced: &Quantity, req: &Resources, lim: &Resources) -> Option<String> {
    let Some(q) = req.get(r) else {
        return Some(format!(
            "minimum {r} usage per {limit_type} is {enforced}.  No request is specified"
        ));
    };
    if q.milli_value() < enforced.milli_value() {
        return Some(format!(
            "minimum {r} usage per {limit_type} is {enforced}, but request is {q}"
        ));
    }
    match lim.get(r) {
        Some(l) if l.milli_value() < enforced.milli_value() => Some(format!(
            "minimum {r} usage per {limit_type} is {enforced}, but limit is {l}"
        )),
        _ => None,
    }
}

fn max_constraint(limit_type: &str, r: &str, enforced: &Quantity, req: &Resources, lim: &Resources) -> Option<String> {
    let Some(l) = lim.get(r) else {
        return Some(format!(
            "maximum {r} usage per {limit_type} is {enforced}.  No limit is specified"
        ));
    };
    if l.milli_value() > enforced.milli_value() {
        return Some(format!(
            "maximum {r} usage per {limit_type} is {enforced}, but limit is {l}"
        ));
    }
    match req.get(r) {
        Some(q) if q.milli_value() > enforced.milli_value() => Some(format!(
            "maximum {r} usage per {limit_type} is {enforced}, but request is {q}"
        )),
        _ => None,
    }
}

fn ratio_constraint(
    limit_type: &str,
    r: &str,
    enforced: &Quantity,
    req: &Resources,
    lim: &Resources,
) -> Option<String> {
    let q = req.get(r).map_or(0, Quantity::milli_value);
    if q == 0 {
        return Some(format!(
            "{r} max limit to request ratio per {limit_type} is {enforced}, but no request is specified or request is 0"
        ));
    }
    let l = lim.get(r).map_or(0, Quantity::milli_value);
    if l == 0 {
        return Some(format!(
            "{r} max limit to request ratio per {limit_type} is {enforced}, but no limit is specified or limit is 0"
        ));
    }
    let ratio = l as f64 / q as f64;
    (ratio * 1000.0 > enforced.milli_value() as f64).then(|| {
        format!("{r} max limit to request ratio per {limit_type} is {enforced}, but provided ratio is {ratio:.6}")
    })
}

fn check(limit_type: &str, item: &Value, req: &Resources, lim: &Resources, errs: &mut Vec<String>) {
    for (r, q) in resources(&item["min"]) {
        errs.extend(min_constraint(limit_type, &r, &q, req, lim));
    }
    for (r, q) in resources(&item["max"]) {
        errs.extend(max_constraint(limit_type, &r, &q, req, lim));
    }
    for (r, q) in resources(&item["maxLimitRequestRatio"]) {
        errs.extend(ratio_constraint(limit_type, &r, &q, req, lim));
    }
}

fn add(into: &mut Resources, from: &Resources, max: bool) {
    for (k, q) in from {
        let cur = into.get(k).map_or(0, Quantity::milli_value);
        let next = if max {
            cur.max(q.milli_value())
        } else {
            cur.saturating_add(q.milli_value())
        };
        if let Ok(n) = Quantity::parse(&format!("{next}m")) {
            into.insert(k.clone(), n);
        }
    }
}

/// LimitRanger: defaults for containers, then every item's bounds; the
/// errors joined as the API server's aggregate (`[a, b]` for several).
fn limit_ranger(kind: &Kind, obj: &mut Value, ranges: &[Value]) -> Result<(), String> {
    let items: Vec<&Value> = ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .collect();
    let mut errs = Vec::new();
    if kind.plural == "persistentvolumeclaims" {
        let req = resources(&obj["spec"]["resources"]["requests"]);
        let lim = resources(&obj["spec"]["resources"]["limits"]);
        for item in items.iter().filter(|i| i["type"] == "PersistentVolumeClaim") {
            for (r, q) in resources(&item["min"]) {
                errs.extend(min_constraint("PersistentVolumeClaim", &r, &q, &req, &lim));
            }
            for (r, q) in resources(&item["max"]) {
                // A claim states no limit: its request is held to the maximum.
                if let Some(have) = req.get(&r).or(lim.get(&r)) {
                    if have.milli_value() > q.milli_value() {
                        errs.push(format!(
                            "maximum {r} usage per PersistentVolumeClaim is {q}, but request is {have}"
                        ));
                    }
                }
            }
        }
    } else {
        let mut notes = Vec::new();
        for list in ["initContainers", "containers"] {
            let Some(cs) = obj["spec"][list].as_array_mut() else {
                continue;
            };
            for c in cs {
                let mut set_req = BTreeSet::new();
                let mut set_lim = BTreeSet::new();
                for item in items.iter().filter(|i| i["type"] == "Container") {
                    for (field, set, default) in [
                        ("limits", &mut set_lim, &item["default"]),
                        ("requests", &mut set_req, &item["defaultRequest"]),
                    ] {
                        for (r, q) in default.as_object().into_iter().flatten() {
                            let have = &mut c["resources"][field];
                            if have.get(r).is_none() {
                                have[r] = q.clone();
                                set.insert(r.clone());
                            }
                        }
                    }
                    // A default limit without a request requests the limit, as the API defaults it.
                    for r in set_lim.clone() {
                        if c["resources"]["requests"].get(&r).is_none() {
                            c["resources"]["requests"][&r] = c["resources"]["limits"][&r].clone();
                            set_req.insert(r);
                        }
                    }
                }
                let name = c["name"].as_str().unwrap_or("").to_string();
                let what = if list == "initContainers" {
                    "init container"
                } else {
                    "container"
                };
                if !set_req.is_empty() {
                    notes.push(format!(
                        "{} request for {what} {name}",
                        set_req.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
                if !set_lim.is_empty() {
                    notes.push(format!(
                        "{} limit for {what} {name}",
                        set_lim.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        if !notes.is_empty() {
            obj["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
                json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
        }
        let mut pod_req = Resources::new();
        let mut pod_lim = Resources::new();
        let mut init_req = Resources::new();
        let mut init_lim = Resources::new();
        for list in ["initContainers", "containers"] {
            for c in obj["spec"][list].as_array().into_iter().flatten() {
                let req = resources(&c["resources"]["requests"]);
                let lim = resources(&c["resources"]["limits"]);
                for item in items.iter().filter(|i| i["type"] == "Container") {
                    check("Container", item, &req, &lim, &mut errs);
                }
                if list == "initContainers" {
                    add(&mut init_req, &req, true);
                    add(&mut init_lim, &lim, true);
                } else {
                    add(&mut pod_req, &req, false);
                    add(&mut pod_lim, &lim, false);
                }
            }
        }
        add(&mut pod_req, &init_req, true);
        add(&mut pod_lim, &init_lim, true);
        for item in items.iter().filter(|i| i["type"] == "Pod") {
            check("Pod", item, &pod_req, &pod_lim, &mut errs);
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

// ---- ResourceQuota ------------------------------------------------------------------------

/// A quota's `spec.hard`.
pub fn hard_of(quota: &Value) -> Resources {
    resources(&quota["spec"]["hard"])
}

/// The compute resources a quota may track per pod, with where the pod states each.
const COMPUTE: &[(&str, &str, &str)] = &[
    ("requests.cpu", "requests", "cpu"),
    ("cpu", "requests", "cpu"),
    ("requests.memory", "requests", "memory"),
    ("memory", "requests", "memory"),
    ("requests.ephemeral-storage", "requests", "ephemeral-storage"),
    ("ephemeral-storage", "requests", "ephemeral-storage"),
    ("limits.cpu", "limits", "cpu"),
    ("limits.memory", "limits", "memory"),
    ("limits.ephemeral-storage", "limits", "ephemeral-storage"),
];

fn terminal(pod: &Value) -> bool {
    matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// The resources of `hard` a pod's containers do not all state.
fn missing_resources(hard: &Resources, pod: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (quota_name, field, res) in COMPUTE {
        if !hard.contains_key(*quota_name) || !["cpu", "memory"].contains(res) {
            continue;
        }
        for list in ["initContainers", "containers"] {
            for c in pod["spec"][list].as_array().into_iter().flatten() {
                if c["resources"][field].get(*res).is_none() {
                    out.insert(quota_name.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

fn pod_amount(pod: &Value, field: &str, res: &str) -> i64 {
    let of = |c: &Value| {
        c["resources"][field][res]
            .as_str()
            .and_then(|q| Quantity::parse(q).ok())
            .map_or(0, |q| q.milli_value())
    };
    let apps = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(of)
        .fold(0i64, i64::saturating_add);
    let init = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(of)
        .max()
        .unwrap_or(0);
    apps.max(init)
}

/// What one object counts for each resource of `hard`, in thousandths.
pub fn usage_of(kind: &Kind, obj: &Value, hard: &Resources) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let count_key = if kind.group.is_empty() {
        format!("count/{}", kind.plural)
    } else {
        format!("count/{}.{}", kind.plural, kind.group)
    };
    for r in hard.keys() {
        let n: i64 = match (kind.plural, r.as_str()) {
            ("pods", _) if terminal(obj) => 0,
            (_, k) if k == count_key => 1000,
            ("pods", "pods") => 1000,
            ("pods", k) => match COMPUTE.iter().find(|(name, _, _)| *name == k) {
                Some((_, field, res)) => pod_amount(obj, field, res),
                None => 0,
            },
            ("configmaps", "configmaps")
            | ("secrets", "secrets")
            | ("services", "services")
            | ("persistentvolumeclaims", "persistentvolumeclaims")
            | ("replicationcontrollers", "replicationcontrollers")
            | ("resourcequotas", "resourcequotas") => 1000,
            ("services", "services.nodeports") => {
                let t = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
                if t == "NodePort" || t == "LoadBalancer" {
                    obj["spec"]["ports"].as_array().map_or(0, |p| p.len() as i64 * 1000)
                } else {
                    0
                }
            }
            ("services", "services.loadbalancers") => i64::from(obj["spec"]["type"] == "LoadBalancer") * 1000,
            ("persistentvolumeclaims", k) => {
                let class = obj["spec"]["storageClassName"].as_str().unwrap_or("");
                let storage = || {
                    obj["spec"]["resources"]["requests"]["storage"]
                        .as_str()
                        .and_then(|q| Quantity::parse(q).ok())
                        .map_or(0, |q| q.milli_value())
                };
                match k.split_once(".storageclass.storage.k8s.io/") {
                    Some((c, what)) if c == class && what == "requests.storage" => storage(),
                    Some((c, what)) if c == class && what == "persistentvolumeclaims" => 1000,
                    Some(_) => 0,
                    None if k == "requests.storage" => storage(),
                    None => 0,
                }
            }
            _ => 0,
        };
        out.insert(r.clone(), n);
    }
    out
}

/// Whether a quota's scopes take `obj`: a scoped quota takes only pods.
pub fn quota_matches(quota: &Value, kind: &Kind, obj: &Value) -> bool {
    let mut scopes: Vec<(String, String, Vec<String>)> = quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s.as_str()?.to_string(), "Exists".to_string(), Vec::new())))
        .collect();
    for e in quota["spec"]["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        scopes.push((
            e["scopeName"].as_str().unwrap_or("").to_string(),
            e["operator"].as_str().unwrap_or("").to_string(),
            e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ));
    }
    if scopes.is_empty() {
        return true;
    }
    if kind.plural != "pods" {
        return false;
    }
    let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(obj["spec"].clone()).unwrap_or_default();
    let best_effort = crate::resources::qos_class(&spec) == "BestEffort";
    let terminating = obj["spec"]["activeDeadlineSeconds"].as_i64().is_some();
    scopes.iter().all(|(scope, op, values)| match scope.as_str() {
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "PriorityClass" => {
            let class = obj["spec"]["priorityClassName"].as_str().unwrap_or("");
            match op.as_str() {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            }
        }
        _ => false,
    })
}

/// The kinds a quota's resources count.
fn counted_kinds(hard: &Resources) -> Vec<&'static Kind> {
    let mut out: Vec<&'static Kind> = Vec::new();
    let by = |plural: &str| kinds::KINDS.iter().find(|k| k.plural == plural);
    for r in hard.keys() {
        let plural = if let Some(c) = r.strip_prefix("count/") {
            c.split('.').next().unwrap_or(c)
        } else if r.contains(".storageclass.storage.k8s.io/") || r == "requests.storage" {
            "persistentvolumeclaims"
        } else if r.starts_with("services") {
            "services"
        } else if r == "pods" || COMPUTE.iter().any(|(n, _, _)| n == r) {
            "pods"
        } else {
            r.as_str()
        };
        if let Some(k) = by(plural) {
            if !out.iter().any(|o| std::ptr::eq(*o, k)) {
                out.push(k);
            }
        }
    }
    out
}

/// A quota's usage in `namespace`, counted from the objects, in thousandths.
pub async fn usage(
    store: &dyn Store,
    namespace: &str,
    quota: &Value,
    hard: &Resources,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut total: BTreeMap<String, i64> = hard.keys().map(|k| (k.clone(), 0)).collect();
    for kind in counted_kinds(hard) {
        let (objs, _) = store.list(&kind.resource(), Some(namespace)).await?;
        for o in objs.iter().filter(|o| quota_matches(quota, kind, o)) {
            for (r, n) in usage_of(kind, o, hard) {
                let t = total.entry(r).or_default();
                *t = t.saturating_add(n);
            }
        }
    }
    Ok(total)
}

/// A usage in thousandths as the API server prints the resource's amounts.
pub fn show(resource: &str, milli: i64) -> String {
    let bytes = ["memory", "storage", "ephemeral-storage"]
        .iter()
        .any(|s| resource.ends_with(s));
    if bytes && milli % 1000 == 0 {
        format_bytes(milli / 1000)
    } else if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn pod(name: &str, limits_mem: Option<&str>) -> Value {
        let mut c = json!({"name": "c", "image": "busybox"});
        if let Some(m) = limits_mem {
            c["resources"] = json!({"limits": {"memory": m, "cpu": "100m"}, "requests": {"memory": m, "cpu": "100m"}});
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}, "spec": {"containers": [c]}})
    }

    #[tokio::test]
    async fn the_store_lock_is_taken_in_turn_and_a_dead_holders_is_taken_over() {
        let (_d, store) = store_with(&[]).await;
        let held = take_store_lock(&store, "ns").await.unwrap();
        // Another node waits while it is held.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(300), take_store_lock(&store, "ns")).await;
        assert!(waiting.is_err(), "a held lock was taken again");
        // Other namespaces do not wait.
        take_store_lock(&store, "other").await.unwrap();
        let pre = crate::store::Preconditions {
            uid: Some(held),
            ..Default::default()
        };
        store.delete(ADMISSION_LOCKS, "", "ns", pre).await.unwrap();
        let again = take_store_lock(&store, "ns").await.unwrap();
        // A lock older than the TTL (its holder died) is taken over.
        let mut old = store.get(ADMISSION_LOCKS, "", "ns").await.unwrap();
        assert_eq!(object::uid(&old), again);
        let then = chrono::Utc::now() - chrono::Duration::seconds(60);
        old["metadata"]["creationTimestamp"] = json!(then.to_rfc3339());
        store.update(ADMISSION_LOCKS, old).await.unwrap();
        let taken = tokio::time::timeout(std::time::Duration::from_secs(5), take_store_lock(&store, "ns"))
            .await
            .expect("a stale lock is taken over")
            .unwrap();
        assert_ne!(taken, again);
    }

    #[tokio::test]
    async fn only_namespaces_with_quotas_take_the_store_lock_and_it_is_given_back() {
        let (_d, store) = store_with(&[(RESOURCE_QUOTAS, quota(json!({"pods": "1"})))]).await;
        let (seen, quotas) = locked(&store, "ns", |q| async {
            (store.get(ADMISSION_LOCKS, "", "ns").await.is_ok(), q)
        })
        .await
        .unwrap();
        assert!(seen, "held while the work runs");
        assert_eq!(quotas.len(), 1, "the work is given the quotas");
        assert!(store.get(ADMISSION_LOCKS, "", "ns").await.is_err(), "given back");
        let seen = locked(&store, "free", |_| async {
            store.get(ADMISSION_LOCKS, "", "free").await.is_ok()
        })
        .await
        .unwrap();
        assert!(!seen, "a namespace without quotas takes none");
    }

    async fn store_with(objs: &[(&str, Value)]) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        for (r, o) in objs {
            store.create(r, o.clone()).await.unwrap();
        }
        (dir, store)
    }

    fn quota(hard: Value) -> Value {
        json!({"metadata": {"name": "compute-resources", "namespace": "ns"}, "spec": {"hard": hard}})
    }

    #[tokio::test]
    async fn quotas_refuse_with_the_api_servers_words() {
        let q = quota(json!({"limits.memory": "2Gi", "pods": "2"}));
        let (_d, store) = store_with(&[(RESOURCE_QUOTAS, q), ("pods", pod("a", Some("1Gi")))]).await;
        let mut p = pod("b", Some("2Gi"));
        let e = admit(&store, kinds::pod(), &mut p).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "pods \"b\" is forbidden: exceeded quota: compute-resources, requested: limits.memory=2Gi, used: limits.memory=1Gi, limited: limits.memory=2Gi"
        );
        let mut p = pod("c", None);
        let e = admit(&store, kinds::pod(), &mut p).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "pods \"c\" is forbidden: failed quota: compute-resources: must specify limits.memory"
        );
        let mut fits = pod("d", Some("1Gi"));
        admit(&store, kinds::pod(), &mut fits).await.unwrap();
        store.create("pods", fits).await.unwrap();
        let mut third = pod("e", Some("1m"));
        let e = admit(&store, kinds::pod(), &mut third).await.unwrap_err().to_string();
        assert!(
            e.contains(
                "requested: limits.memory=1m,pods=1, used: limits.memory=2Gi,pods=2, limited: limits.memory=2Gi,pods=2"
            ),
            "{e}"
        );
        // A finished pod counts for nothing.
        let mut done = store.get("pods", "ns", "a").await.unwrap();
        done["status"] = json!({"phase": "Succeeded"});
        store.update("pods", done).await.unwrap();
        admit(&store, kinds::pod(), &mut pod("f", Some("1Gi"))).await.unwrap();
    }

    #[tokio::test]
    async fn object_counts_and_scopes() {
        let counts = json!({"metadata": {"name": "counts", "namespace": "ns"},
            "spec": {"hard": {"configmaps": "1", "count/secrets": "0", "services.nodeports": "1"}}});
        let best = json!({"metadata": {"name": "best-effort", "namespace": "ns"},
            "spec": {"hard": {"pods": "0"}, "scopes": ["BestEffort"]}});
        let (_d, store) = store_with(&[(RESOURCE_QUOTAS, counts), (RESOURCE_QUOTAS, best)]).await;
        let cm = |n: &str| json!({"metadata": {"name": n, "namespace": "ns"}, "data": {}});
        admit(&store, kinds::by_store_key("configmaps").unwrap(), &mut cm("one"))
            .await
            .unwrap();
        store.create("configmaps", cm("one")).await.unwrap();
        let e = admit(&store, kinds::by_store_key("configmaps").unwrap(), &mut cm("two"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("exceeded quota: counts, requested: configmaps=1, used: configmaps=1, limited: configmaps=1"),
            "{e}"
        );
        let e = admit(&store, kinds::by_store_key("secrets").unwrap(), &mut cm("s"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("requested: count/secrets=1"), "{e}");
        let svc = json!({"metadata": {"name": "np", "namespace": "ns"}, "spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        let e = admit(&store, kinds::service(), &mut svc.clone()).await.unwrap_err();
        assert!(e.to_string().contains("services.nodeports=2"), "{e}");
        // Only BestEffort pods are held by the scoped quota.
        let e = admit(&store, kinds::pod(), &mut pod("be", None)).await.unwrap_err();
        assert!(e.to_string().contains("exceeded quota: best-effort"), "{e}");
        admit(&store, kinds::pod(), &mut pod("burst", Some("1Gi")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn limit_ranges_default_and_bound_containers_pods_and_claims() {
        let lr = json!({"metadata": {"name": "limits", "namespace": "ns"}, "spec": {"limits": [
            {"type": "Container", "default": {"memory": "256Mi"}, "defaultRequest": {"cpu": "100m"},
             "max": {"memory": "1Gi"}, "min": {"cpu": "50m"}, "maxLimitRequestRatio": {"memory": "2"}},
            {"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}}
        ]}});
        let (_d, store) = store_with(&[(LIMIT_RANGES, lr)]).await;
        let mut p = pod("p", None);
        admit(&store, kinds::pod(), &mut p).await.unwrap();
        let r = &p["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"]["memory"], "256Mi");
        assert_eq!(r["requests"]["memory"], "256Mi");
        assert_eq!(r["requests"]["cpu"], "100m");
        assert_eq!(
            p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu, memory request for container c; memory limit for container c"
        );
        let mut big = pod("big", Some("2Gi"));
        let e = admit(&store, kinds::pod(), &mut big).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "pods \"big\" is forbidden: maximum memory usage per Container is 1Gi, but limit is 2Gi"
        );
        let mut ratio = pod("ratio", None);
        ratio["spec"]["containers"][0]["resources"] =
            json!({"limits": {"memory": "1Gi"}, "requests": {"memory": "256Mi", "cpu": "10m"}});
        let e = admit(&store, kinds::pod(), &mut ratio).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "pods \"ratio\" is forbidden: [minimum cpu usage per Container is 50m, but request is 10m, memory max limit to request ratio per Container is 2, but provided ratio is 4.000000]"
        );
        let mut claim = json!({"metadata": {"name": "c", "namespace": "ns"}, "spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        let e = admit(&store, kinds::claim(), &mut claim).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "persistentvolumeclaims \"c\" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"
        );
    }

    #[tokio::test]
    async fn updates_that_add_usage_are_checked() {
        let q = json!({"metadata": {"name": "np", "namespace": "ns"}, "spec": {"hard": {"services.nodeports": "0"}}});
        let svc = json!({"metadata": {"name": "s", "namespace": "ns"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        let (_d, store) = store_with(&[(RESOURCE_QUOTAS, q), ("services", svc.clone())]).await;
        let mut np = svc.clone();
        np["spec"]["type"] = json!("NodePort");
        let e = admit_update(&store, kinds::service(), &svc, &np)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exceeded quota: np, requested: services.nodeports=1, used: services.nodeports=0"),
            "{e}"
        );
        // A change that adds nothing passes.
        let mut labelled = svc.clone();
        labelled["metadata"]["labels"] = json!({"a": "b"});
        admit_update(&store, kinds::service(), &svc, &labelled).await.unwrap();
    }

    #[tokio::test]
    async fn defaults_are_validated_as_if_written_by_the_client() {
        let lr = json!({"metadata": {"name": "limits", "namespace": "ns"}, "spec": {"limits": [
            {"type": "Container", "default": {"memory": "256Mi"}}]}});
        let (_d, store) = store_with(&[(LIMIT_RANGES, lr)]).await;
        let mut p = pod("asks-more", None);
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "512Mi"}});
        crate::writes::admit_new(kinds::pod(), &mut p).unwrap();
        let e = crate::writes::store_admitted(&store, kinds::pod(), p)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.containers[0].resources.requests: Invalid value: \"512Mi\": must be less than or equal to memory limit of 256Mi"), "{e}");
    }

    #[test]
    fn amounts_print_as_the_api_server_prints_them() {
        assert_eq!(show("limits.memory", 2 * 1024 * 1024 * 1024 * 1000), "2Gi");
        assert_eq!(show("requests.cpu", 1500), "1500m");
        assert_eq!(show("requests.cpu", 2000), "2");
        assert_eq!(show("pods", 5000), "5");
    }
}
