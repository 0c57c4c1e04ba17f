//! What the API server does for Services beyond admission: the `kubernetes`
//! service in `default`, pointing at this node's HTTPS listener, and the
//! periodic release of cluster IPs and node ports no service holds.

use peapod_actors::controllers::endpointslice::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use peapod_core::kinds;
use peapod_core::service::alloc::Allocator;
use peapod_core::store::{Store, StoreError};
use peapod_core::writes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Who writes the `kubernetes` service's endpoints (as the API server marks them).
const MANAGED_BY_APISERVER: &str = "peapod-apiserver";

/// Makes sure `default/kubernetes` exists, with the first address of the
/// range and port 443 (its endpoints are written once the HTTPS listener is
/// bound: [`set_kubernetes_endpoints`]).
pub async fn ensure_kubernetes_service(
    store: &dyn Store,
    allocator: &Allocator,
    target_port: Option<u16>,
) -> Result<(), String> {
    let kind = kinds::service();
    let target = target_port.unwrap_or(6443);
    match store.get(&kind.resource(), "default", "kubernetes").await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            let mut svc = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": allocator.ips.nth(0).to_string(),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": target}],
                },
            });
            writes::admit_new(kind, &mut svc).map_err(|e| e.to_string())?;
            let claims = allocator
                .allocate(store, &mut svc, None)
                .await
                .map_err(|e| format!("the kubernetes service: {e}"))?;
            if let Err(e) = store.create(&kind.resource(), svc).await {
                allocator.release(store, &claims).await;
                if !matches!(e, StoreError::AlreadyExists { .. }) {
                    return Err(e.to_string());
                }
            }
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(())
}

/// The `kubernetes` service's EndpointSlice and Endpoints: `api` (this
/// node's address and HTTPS port), or none while HTTPS is off.
pub async fn set_kubernetes_endpoints(store: &dyn Store, api: Option<(String, u16)>) -> Result<(), StoreError> {
    let api: Vec<(String, u16)> = api.into_iter().collect();
    let slice_kind = kinds::endpointslice();
    let ports = match api.first() {
        Some((_, port)) => json!([{"name": "https", "port": port, "protocol": "TCP"}]),
        None => json!([]),
    };
    let endpoints: Vec<Value> = api
        .iter()
        .map(|(ip, _)| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {SERVICE_NAME_LABEL: "kubernetes", MANAGED_BY_LABEL: MANAGED_BY_APISERVER},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    });
    let subsets = match api.first() {
        Some((ip, port)) => {
            json!([{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
        }
        None => json!([]),
    };
    let ep = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "subsets": subsets,
    });
    for (kind, want, fields) in [
        (slice_kind, slice, &["endpoints", "ports"][..]),
        (kinds::endpoints(), ep, &["subsets"][..]),
    ] {
        match store.get(&kind.resource(), "default", "kubernetes").await {
            Ok(cur) => {
                if fields.iter().any(|f| cur[*f] != want[*f]) {
                    writes::modify(store, kind, &cur, |o| {
                        for f in fields {
                            o[*f] = want[*f].clone();
                        }
                        true
                    })
                    .await?;
                }
            }
            Err(StoreError::NotFound { .. }) => {
                writes::create(store, kind, want)
                    .await
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every minute, releases the claims no service holds (a service deleted
/// while its finalizers held it, a write that failed after its claim).
pub fn repair_periodically(store: Arc<dyn Store>, allocator: Allocator) {
    actix_rt::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            match allocator.repair(&*store, chrono::Duration::seconds(30)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("released {n} cluster IPs and node ports no service holds"),
                Err(e) => tracing::warn!("releasing unheld cluster IPs and node ports: {e}"),
            }
        }
    });
}
