//! The EndpointSlice controller, as Kubernetes' `EndpointSliceController`
//! and its older `EndpointsController` in one: for every Service with a
//! selector, the pods it selects that have an address become endpoints,
//! grouped into slices by the ports they resolve the service's ports to (a
//! named `targetPort` may be a different number in each pod), at most
//! [`MAX_PER_SLICE`] per slice. Each endpoint carries Kubernetes'
//! conditions: `serving` when the pod is ready, `terminating` once it is
//! being deleted, `ready` when serving and not terminating (or always, with
//! `publishNotReadyAddresses`), so a terminating pod stops getting new
//! connections at once. The v1 `Endpoints` of the service is written beside
//! them for older clients. A service without a selector keeps the slices
//! written by hand; Endpoints written by hand for it are mirrored into slices
//! (Kubernetes' EndpointSliceMirroring), unless labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"`.

use super::replicaset::controller_ref;
use super::{Reconciler, SyncContext, SyncResult};
use peapod_core::kinds::{self, Kind};
use peapod_core::object;
use peapod_core::service::target_port;
use peapod_core::store::{Preconditions, StoreError};
use peapod_core::validation::service::service_selector;
use peapod_core::writes;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// The label naming a slice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who writes a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`], Kubernetes' own.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_PER_SLICE: usize = 100;

/// The endpoints of a service by the ports they resolve to: for each port
/// set (keyed by its JSON), the ports and each endpoint with whether its pod
/// is terminating.
type Groups = BTreeMap<String, (Vec<Value>, Vec<(Value, bool)>)>;

/// The EndpointSlice controller.
pub struct EndpointSlices;

impl Reconciler for EndpointSlices {
    fn name(&self) -> &'static str {
        "endpointslice-controller"
    }

    fn owner(&self) -> &'static Kind {
        kinds::service()
    }

    fn dependents(&self) -> Vec<&'static Kind> {
        vec![kinds::endpointslice()]
    }

    /// The pods a service selects, and the Endpoints of its name (its own,
    /// or hand-written ones to mirror).
    fn related(&self) -> Vec<&'static Kind> {
        vec![kinds::pod(), kinds::endpoints()]
    }

    fn relates(&self, service: &Value, object: &Value) -> bool {
        if object["kind"] == "Endpoints" {
            return object::name(object) == object::name(service);
        }
        service_selector(service).is_some_and(|s| s.matches(&object::labels(object)))
    }

    /// Slices and Endpoints are found through their labels, never adopted.
    fn selects(&self, _owner: &Value, _dependent: &Value) -> bool {
        false
    }

    fn sync(&self, cx: SyncContext, namespace: String, name: String) -> Pin<Box<dyn Future<Output = SyncResult>>> {
        Box::pin(async move {
            sync(&cx, &namespace, &name)
                .await
                .map(|()| None)
                .map_err(|e| e.to_string())
        })
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Kubernetes' `ShouldPodBeInEndpoints` (terminating pods included): an
/// address, and not finished for good.
fn has_endpoint(pod: &Value) -> bool {
    let ip = pod["status"]["podIP"].as_str().unwrap_or("");
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    !ip.is_empty() && phase != "Succeeded" && phase != "Failed"
}

/// One pod's endpoint in a slice of `svc`.
fn endpoint_of(svc: &Value, pod: &Value) -> Value {
    let terminating = object::deletion_timestamp(pod).is_some();
    let serving = pod_ready(pod);
    let ready = svc["spec"]["publishNotReadyAddresses"] == true || (serving && !terminating);
    let mut e = json!({
        "addresses": [pod["status"]["podIP"]],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {
            "kind": "Pod",
            "namespace": object::namespace(pod),
            "name": object::name(pod),
            "uid": object::uid(pod),
        },
    });
    if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        e["nodeName"] = json!(node);
    }
    // A pod's own DNS name under a headless service: `<hostname>.<subdomain>`.
    if let Some(h) = pod["spec"]["hostname"].as_str().filter(|h| !h.is_empty()) {
        if pod["spec"]["subdomain"] == svc["metadata"]["name"] {
            e["hostname"] = json!(h);
        }
    }
    e
}

/// The slice ports a pod resolves the service's ports to (those it has).
fn ports_for(svc: &Value, pod: &Value) -> Vec<Value> {
    let mut ports: Vec<Value> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let port = target_port(sp, pod)?;
            Some(json!({
                "name": sp["name"].as_str().unwrap_or(""),
                "port": port,
                "protocol": sp["protocol"].as_str().unwrap_or("TCP"),
            }))
        })
        .collect();
    ports.sort_by_key(|p| p.to_string());
    ports
}

fn address_key(e: &Value) -> String {
    e["addresses"][0].as_str().unwrap_or("").to_string()
}

/// Brings the service's slices and Endpoints to its pods.
async fn sync(cx: &SyncContext, namespace: &str, name: &str) -> Result<(), StoreError> {
    let store = &*cx.store;
    let svc = match store.get(&kinds::service().resource(), namespace, name).await {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if object::deletion_timestamp(&svc).is_some() || svc["spec"]["type"] == "ExternalName" {
        return Ok(());
    }
    let Some(selector) = service_selector(&svc) else {
        return mirror(cx, &svc).await;
    };
    let (pods, _) = store.list(&kinds::pod().resource(), Some(namespace)).await?;
    let mut groups = Groups::new();
    let mut pods: Vec<&Value> = pods
        .iter()
        .filter(|p| selector.matches(&object::labels(p)) && has_endpoint(p))
        .collect();
    pods.sort_by_key(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string());
    for pod in pods {
        let ports = ports_for(&svc, pod);
        let key = Value::Array(ports.clone()).to_string();
        let entry = groups.entry(key).or_insert_with(|| (ports, Vec::new()));
        entry
            .1
            .push((endpoint_of(&svc, pod), object::deletion_timestamp(pod).is_some()));
    }
    write_slices(cx, &svc, &groups, MANAGED_BY).await?;
    // Mirrored slices from when it had no selector are no longer its endpoints.
    delete_slices(cx, namespace, name, MIRRORED_BY, Vec::new()).await?;
    write_endpoints(cx, &svc, &groups).await
}

/// Who writes the slices mirrored from hand-written Endpoints (Kubernetes' name).
pub const MIRRORED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// The label on Endpoints that must not be mirrored (the API server's own).
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

/// A service without a selector whose Endpoints were written by hand (the
/// older way to point a service at addresses outside the cluster): its
/// slices mirror them, as Kubernetes' EndpointSliceMirroring controller
/// keeps them, so the proxy and the DNS server, which read slices, see them.
async fn mirror(cx: &SyncContext, svc: &Value) -> Result<(), StoreError> {
    let store = &*cx.store;
    let (ns, name) = (object::namespace(svc), object::name(svc));
    // What this controller wrote while the service had a selector goes with it.
    delete_slices(cx, ns, name, MANAGED_BY, Vec::new()).await?;
    let endpoints = match store.get(&kinds::endpoints().resource(), ns, name).await {
        Ok(e) if super::replicaset::controller_of(&e).is_some_and(|c| c.uid == object::uid(svc)) => {
            let pre = Preconditions {
                uid: Some(object::uid(&e).to_string()),
                resource_version: None,
            };
            match store.delete(&kinds::endpoints().resource(), ns, name, pre).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            }
        }
        Ok(e) if e["metadata"]["labels"][SKIP_MIRROR_LABEL] != "true" => Some(e),
        // Not to be mirrored: a slice mirrored before it said so goes.
        Ok(_) => None,
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let mut groups = Groups::new();
    for subset in endpoints.iter().flat_map(|e| e["subsets"].as_array()).flatten() {
        let mut ports: Vec<Value> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                json!({
                    "name": p["name"].as_str().unwrap_or(""),
                    "port": p["port"],
                    "protocol": p["protocol"].as_str().unwrap_or("TCP"),
                })
            })
            .collect();
        ports.sort_by_key(|p| p.to_string());
        let key = Value::Array(ports.clone()).to_string();
        let entry = groups.entry(key).or_insert_with(|| (ports, Vec::new()));
        for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            // The mirrored slices are IPv4 (the node's family); other addresses are left out.
            let v4 = |a: &&Value| {
                a["ip"]
                    .as_str()
                    .is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
            };
            for a in subset[field].as_array().into_iter().flatten().filter(v4) {
                let mut e = json!({
                    "addresses": [a["ip"]],
                    "conditions": {"ready": ready, "serving": ready, "terminating": false},
                });
                for (from, to) in [
                    ("hostname", "hostname"),
                    ("nodeName", "nodeName"),
                    ("targetRef", "targetRef"),
                ] {
                    if !a[from].is_null() {
                        e[to] = a[from].clone();
                    }
                }
                entry.1.push((e, false));
            }
        }
    }
    // No Endpoints, no mirrored slices (a placeholder only stands for a selector's pods).
    if groups.is_empty() {
        return delete_slices(cx, ns, name, MIRRORED_BY, Vec::new()).await;
    }
    write_slices(cx, svc, &groups, MIRRORED_BY).await
}

/// The slices the service should have: per port set, its endpoints in
/// chunks; a service with no endpoints keeps one empty slice, as
/// Kubernetes keeps a placeholder.
fn desired_slices(groups: &Groups) -> Vec<(Vec<Value>, Vec<Value>)> {
    let mut out = Vec::new();
    for (ports, endpoints) in groups.values() {
        let eps: Vec<Value> = endpoints.iter().map(|(e, _)| e.clone()).collect();
        for chunk in eps.chunks(MAX_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    if out.is_empty() {
        out.push((Vec::new(), Vec::new()));
    }
    out
}

fn slice_ports(slice: &Value) -> Vec<Value> {
    let mut ports = slice["ports"].as_array().cloned().unwrap_or_default();
    ports.sort_by_key(|p| p.to_string());
    ports
}

/// The service's slices written by `manager`, by name.
async fn slices_of(cx: &SyncContext, ns: &str, name: &str, manager: &str) -> Result<Vec<Value>, StoreError> {
    let (all, _) = cx.store.list(&kinds::endpointslice().resource(), Some(ns)).await?;
    let mut existing: Vec<Value> = all
        .into_iter()
        .filter(|s| {
            let l = &s["metadata"]["labels"];
            l[SERVICE_NAME_LABEL] == name && l[MANAGED_BY_LABEL] == manager
        })
        .collect();
    existing.sort_by_key(|s| object::name(s).to_string());
    Ok(existing)
}

/// Deletes the service's slices written by `manager`, but those in `keep`.
async fn delete_slices(
    cx: &SyncContext,
    ns: &str,
    name: &str,
    manager: &str,
    keep: Vec<String>,
) -> Result<(), StoreError> {
    for stale in slices_of(cx, ns, name, manager).await? {
        if keep.iter().any(|k| k == object::name(&stale)) {
            continue;
        }
        let pre = Preconditions {
            uid: Some(object::uid(&stale).to_string()),
            resource_version: None,
        };
        match cx
            .store
            .delete(&kinds::endpointslice().resource(), ns, object::name(&stale), pre)
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_slices(cx: &SyncContext, svc: &Value, groups: &Groups, manager: &str) -> Result<(), StoreError> {
    let store = &*cx.store;
    let kind = kinds::endpointslice();
    let (ns, name) = (object::namespace(svc), object::name(svc));
    let mut existing = slices_of(cx, ns, name, manager).await?;
    let mut labels = svc["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), json!(name));
    labels.insert(MANAGED_BY_LABEL.into(), json!(manager));
    if svc["spec"]["clusterIP"] == "None" {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    let mut kept = Vec::new();
    for (ports, mut endpoints) in desired_slices(groups) {
        endpoints.sort_by_key(address_key);
        // A slice of the same ports is reused, so a slice keeps its name while its pods change.
        let reuse = existing.iter().position(|s| slice_ports(s) == ports);
        match reuse.map(|i| existing.remove(i)) {
            Some(current) => {
                kept.push(object::name(&current).to_string());
                let mut current_eps = current["endpoints"].as_array().cloned().unwrap_or_default();
                current_eps.sort_by_key(address_key);
                let same = current_eps == endpoints && current["metadata"]["labels"] == Value::Object(labels.clone());
                if !same {
                    writes::modify(store, kind, &current, |s| {
                        s["endpoints"] = json!(endpoints);
                        s["ports"] = json!(ports);
                        s["metadata"]["labels"] = Value::Object(labels.clone());
                        true
                    })
                    .await?;
                }
            }
            None => {
                let slice = json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "generateName": format!("{}-", truncate(name, 57)),
                        "namespace": ns,
                        "labels": labels,
                        "ownerReferences": [controller_ref(svc)],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": ports,
                });
                let created = writes::create(store, kind, slice)
                    .await
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                kept.push(object::name(&created).to_string());
            }
        }
    }
    delete_slices(cx, ns, name, manager, kept).await
}

fn truncate(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

/// The v1 Endpoints: per port set, the ready addresses and the not-ready
/// ones (terminating pods left out, unless `publishNotReadyAddresses`).
async fn write_endpoints(cx: &SyncContext, svc: &Value, groups: &Groups) -> Result<(), StoreError> {
    let store = &*cx.store;
    let kind = kinds::endpoints();
    let (ns, name) = (object::namespace(svc), object::name(svc));
    let publish = svc["spec"]["publishNotReadyAddresses"] == true;
    let mut subsets = Vec::new();
    for (ports, endpoints) in groups.values() {
        let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
        for (e, terminating) in endpoints {
            let mut address = json!({"ip": e["addresses"][0], "targetRef": e["targetRef"]});
            for f in ["nodeName", "hostname"] {
                if !e[f].is_null() {
                    address[f] = e[f].clone();
                }
            }
            if e["conditions"]["ready"] == true {
                ready.push(address);
            } else if !terminating || publish {
                not_ready.push(address);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let mut subset = json!({"ports": ports});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        subsets.push(subset);
    }
    let mut labels = svc["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    if svc["spec"]["clusterIP"] == "None" {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    match store.get(&kind.resource(), ns, name).await {
        Ok(current) => {
            if current["subsets"].as_array().cloned().unwrap_or_default() != subsets
                || current["metadata"]["labels"].as_object().cloned().unwrap_or_default() != labels
            {
                writes::modify(store, kind, &current, |e| {
                    e["subsets"] = json!(subsets);
                    e["metadata"]["labels"] = Value::Object(labels.clone());
                    true
                })
                .await?;
            }
            Ok(())
        }
        Err(StoreError::NotFound { .. }) => {
            let endpoints = json!({
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": labels,
                    "ownerReferences": [controller_ref(svc)],
                },
                "subsets": subsets,
            });
            match writes::create(store, kind, endpoints).await {
                Ok(_) => Ok(()),
                Err(e) => Err(StoreError::Invalid(e.to_string())),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, deleting: bool) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "hostname": name, "subdomain": "web",
                     "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        p
    }

    #[test]
    fn conditions_follow_readiness_and_deletion() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        let e = endpoint_of(&svc, &pod("a", "10.0.0.1", true, false));
        assert_eq!(
            e["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(e["hostname"], "a");
        let e = endpoint_of(&svc, &pod("a", "10.0.0.1", true, true));
        assert_eq!(
            e["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
        let e = endpoint_of(&svc, &pod("a", "10.0.0.1", false, false));
        assert_eq!(e["conditions"]["ready"], false);
        let publish = json!({"metadata": {"name": "other"}, "spec": {"publishNotReadyAddresses": true}});
        let e = endpoint_of(&publish, &pod("a", "10.0.0.1", false, false));
        assert_eq!(e["conditions"]["ready"], true);
        assert!(e["hostname"].is_null(), "the subdomain names another service");
        assert_eq!(
            ports_for(&svc, &pod("a", "10.0.0.1", true, false)),
            [json!({"name": "", "port": 8080, "protocol": "TCP"})]
        );
    }

    #[test]
    fn endpoints_are_chunked_and_an_empty_service_keeps_a_placeholder() {
        assert_eq!(desired_slices(&BTreeMap::new()), [(Vec::new(), Vec::new())]);
        let eps: Vec<(Value, bool)> = (0..250)
            .map(|i| (json!({"addresses": [format!("10.0.{}.{}", i / 200, i % 200)]}), false))
            .collect();
        let mut groups = BTreeMap::new();
        groups.insert("p".to_string(), (vec![json!({"port": 80})], eps));
        let slices = desired_slices(&groups);
        assert_eq!(slices.iter().map(|(_, e)| e.len()).collect::<Vec<_>>(), [100, 100, 50]);
    }
}
