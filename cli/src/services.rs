//! What the API server does for Services beyond admission: the node's own
//! services (`default/kubernetes` for its HTTPS listener, `kube-system/kube-dns`
//! for its DNS server), each with the endpoints the daemon writes, and the
//! periodic release of cluster IPs and node ports no service holds.

use peapod_actors::controllers::endpointslice::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL};
use peapod_core::kinds;
use peapod_core::service::alloc::Allocator;
use peapod_core::store::{Store, StoreError};
use peapod_core::writes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Who writes the endpoints of the node's own services (as the API server marks its own).
const MANAGED_BY_APISERVER: &str = "peapod-apiserver";

/// One of the node's own services: selector-less, its endpoints written by the daemon.
pub struct SystemService {
    pub namespace: &'static str,
    pub name: &'static str,
    pub labels: Value,
    pub cluster_ip: String,
    /// `(name, port, protocol, targetPort)`.
    pub ports: Vec<(&'static str, u16, &'static str, u16)>,
}

impl SystemService {
    /// `default/kubernetes`: the range's first address, port 443.
    pub fn kubernetes(allocator: &Allocator, target_port: Option<u16>) -> Self {
        Self {
            namespace: "default",
            name: "kubernetes",
            labels: json!({"component": "apiserver", "provider": "kubernetes"}),
            cluster_ip: allocator.ips.nth(0).to_string(),
            ports: vec![("https", 443, "TCP", target_port.unwrap_or(6443))],
        }
    }

    /// `kube-system/kube-dns` at `ip`, port 53 over UDP and TCP.
    pub fn kube_dns(ip: String, target_port: u16) -> Self {
        Self {
            namespace: "kube-system",
            name: "kube-dns",
            labels: json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}),
            cluster_ip: ip,
            ports: vec![("dns", 53, "UDP", target_port), ("dns-tcp", 53, "TCP", target_port)],
        }
    }

    /// Creates the service if it does not exist (an operator's changes to
    /// one that does are kept).
    pub async fn ensure(&self, store: &dyn Store, allocator: &Allocator) -> Result<(), String> {
        let kind = kinds::service();
        match store.get(&kind.resource(), self.namespace, self.name).await {
            Ok(svc) => {
                // Kept as the operator left it; an address other than the one
                // pods are told of is worth saying.
                if svc["spec"]["clusterIP"] != self.cluster_ip.as_str() {
                    return Err(format!(
                        "{}/{} has the cluster IP {}, not {}: delete it to have it made again with the flags' address",
                        self.namespace,
                        self.name,
                        svc["spec"]["clusterIP"].as_str().unwrap_or("none"),
                        self.cluster_ip
                    ));
                }
                return Ok(());
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(n, p, proto, t)| json!({"name": n, "port": p, "protocol": proto, "targetPort": t}))
            .collect();
        let mut svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {"type": "ClusterIP", "clusterIP": self.cluster_ip, "ports": ports},
        });
        writes::admit_new(kind, &mut svc).map_err(|e| format!("{}/{}: {e}", self.namespace, self.name))?;
        let claims = allocator
            .allocate(store, &mut svc, None)
            .await
            .map_err(|e| format!("{}/{}: {e}", self.namespace, self.name))?;
        if let Err(e) = store.create(&kind.resource(), svc).await {
            allocator.release(store, &claims).await;
            if !matches!(e, StoreError::AlreadyExists { .. }) {
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    /// Its EndpointSlice and Endpoints: the server at `address` (IP and
    /// port, every port of the service forwarding there), or none (the
    /// service's ports refuse connections).
    pub async fn set_endpoints(&self, store: &dyn Store, address: Option<(String, u16)>) -> Result<(), StoreError> {
        let port = address.as_ref().map(|(_, p)| *p);
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(n, _, proto, t)| json!({"name": n, "port": port.unwrap_or(*t), "protocol": proto}))
            .collect();
        let (endpoints, subsets) = match address.as_ref().map(|(ip, _)| ip) {
            Some(ip) => (
                json!([{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}]),
                json!([{"addresses": [{"ip": ip}], "ports": ports}]),
            ),
            None => (json!([]), json!([])),
        };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {SERVICE_NAME_LABEL: self.name, MANAGED_BY_LABEL: MANAGED_BY_APISERVER},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": if address.is_some() { json!(ports) } else { json!([]) },
        });
        // Its slice is written here: the Endpoints are not to be mirrored into another.
        let ep = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": {SKIP_MIRROR_LABEL: "true"}},
            "subsets": subsets,
        });
        for (kind, want, fields) in [
            (kinds::endpointslice(), slice, &["endpoints", "ports"][..]),
            (kinds::endpoints(), ep, &["subsets"][..]),
        ] {
            match store.get(&kind.resource(), self.namespace, self.name).await {
                Ok(cur) => {
                    let labels = &want["metadata"]["labels"];
                    if fields.iter().any(|f| cur[*f] != want[*f]) || cur["metadata"]["labels"] != *labels {
                        writes::modify(store, kind, &cur, |o| {
                            for f in fields {
                                o[*f] = want[*f].clone();
                            }
                            o["metadata"]["labels"] = labels.clone();
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
