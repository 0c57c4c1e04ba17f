//! Cluster IPs and NodePorts, claimed in the store so that no two services
//! ever hold one, whoever writes them. A cluster IP is an `IPAddress`
//! object named by the address, as Kubernetes' allocator keeps them since
//! 1.33 (`kubectl get ipaddresses` lists them); a node port is an internal
//! record named by its number. Creating the claim is the allocation: the
//! store refuses to create a name that exists, on one node or through etcd.
//! Claims a failed write leaves behind, and those of services deleted while
//! the daemon was down, are released by [`Allocator::repair`].

use super::{has_cluster_ip, needs_node_ports, IpRange, PortRange};
use crate::field::{FieldError, FieldErrors};
use crate::kinds;
use crate::object;
use crate::store::{Preconditions, Store, StoreError};
use crate::writes;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The store key of node port claims (not served by the API).
pub const NODE_PORTS: &str = "peapod.internal/nodeports";

/// Why a service could not get its addresses.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// What the service asks for cannot be had (Kubernetes' 422).
    #[error("{0}")]
    Invalid(FieldErrors),
    /// The range has no free address or port left (Kubernetes' 500).
    #[error("{0}")]
    Full(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one allocation claimed, to be released if the service's write fails.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Claims {
    pub ips: Vec<String>,
    pub node_ports: Vec<i64>,
}

/// The node's ranges for cluster IPs and node ports.
#[derive(Debug, Clone, Copy)]
pub struct Allocator {
    pub ips: IpRange,
    pub ports: PortRange,
}

fn random_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn parent_of(svc: &Value) -> Value {
    json!({
        "group": "",
        "resource": "services",
        "namespace": object::namespace(svc),
        "name": object::name(svc),
    })
}

/// The node ports a service holds.
pub fn node_ports_of(svc: &Value) -> Vec<i64> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect()
}

impl Allocator {
    /// Gives the service (defaulted and validated) its cluster IP and node
    /// ports, claiming those it names and drawing those it leaves empty.
    /// With `old`, what `old` already holds is kept, not claimed again.
    pub async fn allocate(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<Claims, AllocError> {
        let mut claims = Claims::default();
        let res = self.allocate_into(store, svc, old, &mut claims).await;
        if res.is_err() {
            self.release(store, &claims).await;
        }
        res.map(|()| claims)
    }

    async fn allocate_into(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        old: Option<&Value>,
        claims: &mut Claims,
    ) -> Result<(), AllocError> {
        let external = svc["spec"]["type"] == "ExternalName";
        if !external {
            let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
            let held = old
                .filter(|o| has_cluster_ip(o))
                .and_then(|o| o["spec"]["clusterIP"].as_str());
            if ip == "None" {
                svc["spec"]["clusterIPs"] = json!(["None"]);
            } else if held.is_some_and(|h| h == ip) {
                svc["spec"]["clusterIPs"] = json!([ip]);
            } else {
                let ip = self.claim_ip(store, svc, &ip).await?;
                claims.ips.push(ip.clone());
                svc["spec"]["clusterIP"] = json!(ip);
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
            svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
        if needs_node_ports(svc) {
            let held: HashSet<i64> = old
                .filter(|o| needs_node_ports(o))
                .map(node_ports_of)
                .unwrap_or_default()
                .into_iter()
                .collect();
            let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
            for i in 0..count {
                let port = &svc["spec"]["ports"][i];
                let wanted = port["nodePort"].as_i64().filter(|p| *p != 0);
                match wanted {
                    Some(p) if held.contains(&p) || claims.node_ports.contains(&p) => {}
                    Some(p) => {
                        self.claim_port(store, svc, p, i).await?;
                        claims.node_ports.push(p);
                    }
                    None => {
                        let p = self.draw_port(store, svc).await?;
                        claims.node_ports.push(p);
                        svc["spec"]["ports"][i]["nodePort"] = json!(p);
                    }
                }
            }
        }
        Ok(())
    }

    /// Claims `wanted` (when set) or a free address of the range.
    async fn claim_ip(&self, store: &dyn Store, svc: &Value, wanted: &str) -> Result<String, AllocError> {
        if !wanted.is_empty() {
            let invalid = |detail: String| {
                AllocError::Invalid(FieldErrors(vec![FieldError::invalid(
                    "spec.clusterIPs",
                    format!("[]string{{\"{wanted}\"}}"),
                    format!("failed to allocate IP {wanted}: {detail}"),
                )]))
            };
            let ip: Ipv4Addr = wanted.parse().map_err(|_| invalid("not an IPv4 address".into()))?;
            if !self.ips.contains(ip) {
                return Err(invalid(format!(
                    "the provided IP ({wanted}) is not in the valid range. The range of valid IPs is {}",
                    self.ips
                )));
            }
            return match self.create_ip(store, svc, wanted).await {
                Err(StoreError::AlreadyExists { .. }) => Err(invalid("provided IP is already allocated".into())),
                res => res.map(|()| wanted.to_string()).map_err(AllocError::from),
            };
        }
        let (taken, _) = store.list(&kinds::ipaddress().resource(), None).await?;
        let taken: HashSet<String> = taken.iter().map(|o| object::name(o).to_string()).collect();
        // The low addresses are left to services that name theirs (the
        // first is `kubernetes`'), as Kubernetes draws from the upper band first.
        let size = self.ips.size();
        let reserved = if size > 64 {
            (size / 16).clamp(16, 256)
        } else {
            1.min(size - 1)
        };
        let start = random_u32();
        for band in [(reserved, size), (0, reserved)] {
            let span = band.1 - band.0;
            for k in 0..span {
                let ip = self.ips.nth(band.0 + (start.wrapping_add(k)) % span).to_string();
                if taken.contains(&ip) {
                    continue;
                }
                match self.create_ip(store, svc, &ip).await {
                    Ok(()) => return Ok(ip),
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(AllocError::Full(format!(
            "failed to allocate a serviceIP: range is full ({})",
            self.ips
        )))
    }

    async fn create_ip(&self, store: &dyn Store, svc: &Value, ip: &str) -> Result<(), StoreError> {
        let kind = kinds::ipaddress();
        let mut obj = json!({
            "metadata": {
                "name": ip,
                "labels": {
                    "ipaddress.kubernetes.io/ip-family": "IPv4",
                    "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
                },
            },
            "spec": {"parentRef": parent_of(svc)},
        });
        writes::admit_new(kind, &mut obj).map_err(|e| StoreError::Invalid(e.to_string()))?;
        store.create(&kind.resource(), obj).await.map(|_| ())
    }

    async fn claim_port(&self, store: &dyn Store, svc: &Value, port: i64, index: usize) -> Result<(), AllocError> {
        let invalid = |detail: String| {
            AllocError::Invalid(FieldErrors(vec![FieldError::invalid(
                format!("spec.ports[{index}].nodePort"),
                port,
                detail,
            )]))
        };
        if !self.ports.contains(port) {
            return Err(invalid(format!(
                "provided port is not in the valid range. The range of valid ports is {}",
                self.ports
            )));
        }
        match self.create_port(store, svc, port).await {
            Err(StoreError::AlreadyExists { .. }) => Err(invalid("provided port is already allocated".into())),
            res => res.map_err(AllocError::from),
        }
    }

    async fn draw_port(&self, store: &dyn Store, svc: &Value) -> Result<i64, AllocError> {
        let (taken, _) = store.list(NODE_PORTS, None).await?;
        let taken: HashSet<String> = taken.iter().map(|o| object::name(o).to_string()).collect();
        let start = random_u32();
        for k in 0..self.ports.size() {
            let port = i64::from(self.ports.nth(start.wrapping_add(k)));
            if taken.contains(&port.to_string()) {
                continue;
            }
            match self.create_port(store, svc, port).await {
                Ok(()) => return Ok(port),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AllocError::Full(format!(
            "failed to allocate a nodePort: range is full ({})",
            self.ports
        )))
    }

    async fn create_port(&self, store: &dyn Store, svc: &Value, port: i64) -> Result<(), StoreError> {
        let obj = json!({
            "apiVersion": "peapod.internal/v1",
            "kind": "NodePortClaim",
            "metadata": {
                "name": port.to_string(),
                "uid": object::new_uid(),
                "creationTimestamp": object::now_rfc3339(),
            },
            "spec": {"parentRef": parent_of(svc)},
        });
        store.create(NODE_PORTS, obj).await.map(|_| ())
    }

    /// Gives back what an allocation claimed (its service was not written).
    pub async fn release(&self, store: &dyn Store, claims: &Claims) {
        for ip in &claims.ips {
            self.delete_claim(store, &kinds::ipaddress().resource(), ip).await;
        }
        for port in &claims.node_ports {
            self.delete_claim(store, NODE_PORTS, &port.to_string()).await;
        }
    }

    /// Gives back what `old` held and `new` (the service as now written, or
    /// none once deleted) no longer does.
    pub async fn release_unused(&self, store: &dyn Store, old: &Value, new: Option<&Value>) {
        let mut gone = Claims::default();
        let keeps_ip = |ip: &str| {
            new.is_some_and(|n| has_cluster_ip(n) && n["spec"]["clusterIP"] == ip && object::uid(n) == object::uid(old))
        };
        if let Some(ip) = old["spec"]["clusterIP"].as_str().filter(|_| has_cluster_ip(old)) {
            if !keeps_ip(ip) {
                gone.ips.push(ip.to_string());
            }
        }
        if needs_node_ports(old) {
            let kept: HashSet<i64> = new
                .filter(|n| needs_node_ports(n))
                .map(node_ports_of)
                .unwrap_or_default()
                .into_iter()
                .collect();
            gone.node_ports = node_ports_of(old).into_iter().filter(|p| !kept.contains(p)).collect();
        }
        // Only claims made for this service: a claim is never taken from
        // another (the delete is conditional on the claim read being the one removed).
        let ip_resource = kinds::ipaddress().resource();
        for ip in &gone.ips {
            if let Some(uid) = self.held_by(store, &ip_resource, ip, old).await {
                self.delete_claim_of(store, &ip_resource, ip, Some(uid)).await;
            }
        }
        for p in &gone.node_ports {
            let name = p.to_string();
            if let Some(uid) = self.held_by(store, NODE_PORTS, &name, old).await {
                self.delete_claim_of(store, NODE_PORTS, &name, Some(uid)).await;
            }
        }
    }

    /// The uid of the claim `name` when `svc` holds it.
    async fn held_by(&self, store: &dyn Store, resource: &str, name: &str, svc: &Value) -> Option<String> {
        match store.get(resource, "", name).await {
            Ok(claim) if claim["spec"]["parentRef"] == parent_of(svc) => Some(object::uid(&claim).to_string()),
            _ => None,
        }
    }

    async fn delete_claim(&self, store: &dyn Store, resource: &str, name: &str) {
        self.delete_claim_of(store, resource, name, None).await
    }

    async fn delete_claim_of(&self, store: &dyn Store, resource: &str, name: &str, uid: Option<String>) {
        let pre = Preconditions {
            uid,
            resource_version: None,
        };
        match store.delete(resource, "", name, pre).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!("releasing {resource} {name}: {e}"),
        }
    }

    /// Releases every claim whose service does not hold it (a service
    /// deleted while the daemon was down, a write that failed after its
    /// claim). Claims younger than `grace` are left: their service may be
    /// being written right now.
    pub async fn repair(&self, store: &dyn Store, grace: chrono::Duration) -> Result<usize, StoreError> {
        let (services, _) = store.list(&kinds::service().resource(), None).await?;
        let mut ips: HashSet<(String, String, String)> = HashSet::new();
        let mut ports: HashSet<(String, String, String)> = HashSet::new();
        for s in &services {
            let key = |v: String| (object::namespace(s).to_string(), object::name(s).to_string(), v);
            if has_cluster_ip(s) {
                ips.insert(key(s["spec"]["clusterIP"].as_str().unwrap_or("").to_string()));
            }
            if needs_node_ports(s) {
                for p in node_ports_of(s) {
                    ports.insert(key(p.to_string()));
                }
            }
        }
        // A claim gone while its service holds it (deleted by hand) is made
        // again, so the address is never handed out twice.
        for s in &services {
            if has_cluster_ip(s) {
                let ip = s["spec"]["clusterIP"].as_str().unwrap_or("");
                match self.create_ip(store, s, ip).await {
                    Ok(()) => tracing::warn!(
                        "{ip}: its IPAddress was missing; made again for {}/{}",
                        object::namespace(s),
                        object::name(s)
                    ),
                    Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => tracing::warn!("{ip}: {e}"),
                }
            }
            if needs_node_ports(s) {
                for p in node_ports_of(s) {
                    match self.create_port(store, s, p).await {
                        Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
                        Err(e) => tracing::warn!("node port {p}: {e}"),
                    }
                }
            }
        }
        let now = chrono::Utc::now();
        let mut released = 0;
        for (resource, held) in [(kinds::ipaddress().resource(), &ips), (NODE_PORTS.to_string(), &ports)] {
            let (claims, _) = store.list(&resource, None).await?;
            for c in claims {
                let parent = &c["spec"]["parentRef"];
                if parent["resource"] != "services" {
                    continue;
                }
                let key = (
                    parent["namespace"].as_str().unwrap_or("").to_string(),
                    parent["name"].as_str().unwrap_or("").to_string(),
                    object::name(&c).to_string(),
                );
                let young = c["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| now.signed_duration_since(t) < grace);
                if !held.contains(&key) && !young {
                    self.delete_claim(store, &resource, object::name(&c)).await;
                    released += 1;
                }
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn allocator(ips: &str, ports: &str) -> Allocator {
        Allocator {
            ips: IpRange::parse(ips).unwrap(),
            ports: PortRange::parse(ports).unwrap(),
        }
    }

    fn service(name: &str, ty: &str, ip: &str, node_ports: &[i64]) -> Value {
        let ports: Vec<Value> = node_ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut port = json!({"name": format!("p{i}"), "port": 80 + i, "protocol": "TCP"});
                if *p != 0 {
                    port["nodePort"] = json!(p);
                }
                port
            })
            .collect();
        json!({"metadata": {"namespace": "default", "name": name, "uid": name},
               "spec": {"type": ty, "clusterIP": ip, "ports": ports}})
    }

    #[tokio::test]
    async fn ips_and_ports_are_claimed_once_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db")).unwrap();
        let a = allocator("10.0.0.0/29", "30000-30002");
        // Named, then drawn: a /29 has 6 usable addresses.
        let mut web = service("web", "NodePort", "10.0.0.1", &[30001, 0]);
        let claims = a.allocate(&store, &mut web, None).await.unwrap();
        assert_eq!(claims.ips, ["10.0.0.1"]);
        assert_eq!(web["spec"]["clusterIPs"], json!(["10.0.0.1"]));
        let drawn = web["spec"]["ports"][1]["nodePort"].as_i64().unwrap();
        assert!(drawn == 30000 || drawn == 30002, "{drawn}");
        // Taken ones are refused with the field and Kubernetes' words.
        let mut other = service("other", "NodePort", "10.0.0.1", &[0]);
        let err = a.allocate(&store, &mut other, None).await.unwrap_err().to_string();
        assert!(
            err.contains("spec.clusterIPs") && err.contains("provided IP is already allocated"),
            "{err}"
        );
        let mut other = service("other", "NodePort", "", &[30001]);
        let err = a.allocate(&store, &mut other, None).await.unwrap_err().to_string();
        assert!(
            err.contains("spec.ports[0].nodePort") && err.contains("already allocated"),
            "{err}"
        );
        // The failed allocation claimed nothing that stays.
        let (ips, _) = store.list(&kinds::ipaddress().resource(), None).await.unwrap();
        assert_eq!(ips.len(), 1, "{ips:?}");
        let mut outside = service("outside", "ClusterIP", "10.0.1.1", &[]);
        let err = a.allocate(&store, &mut outside, None).await.unwrap_err().to_string();
        assert!(
            err.contains("not in the valid range. The range of valid IPs is 10.0.0.0/29"),
            "{err}"
        );
        let mut low = service("low", "NodePort", "", &[20000]);
        let err = a.allocate(&store, &mut low, None).await.unwrap_err().to_string();
        assert!(err.contains("The range of valid ports is 30000-30002"), "{err}");
        // Ports run out.
        let mut more = service("more", "NodePort", "", &[0, 0]);
        let err = a.allocate(&store, &mut more, None).await.unwrap_err();
        assert!(matches!(err, AllocError::Full(_)), "{err}");
        // An update keeps what the service holds; a change to ClusterIP gives the ports back.
        let mut same = web.clone();
        assert_eq!(
            a.allocate(&store, &mut same, Some(&web)).await.unwrap(),
            Claims::default()
        );
        let mut cluster_ip = web.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        a.release_unused(&store, &web, Some(&cluster_ip)).await;
        let (ports, _) = store.list(NODE_PORTS, None).await.unwrap();
        assert!(ports.is_empty(), "{ports:?}");
        // Deleted: the IP is free for another service.
        a.release_unused(&store, &cluster_ip, None).await;
        let mut next = service("next", "ClusterIP", "10.0.0.1", &[]);
        a.allocate(&store, &mut next, None).await.unwrap();
    }

    #[tokio::test]
    async fn every_address_is_drawn_before_the_range_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db")).unwrap();
        let a = allocator("10.0.0.0/29", "30000-30000");
        let mut seen = HashSet::new();
        for i in 0..6 {
            let mut s = service(&format!("s{i}"), "ClusterIP", "", &[]);
            a.allocate(&store, &mut s, None).await.unwrap();
            seen.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string());
        }
        assert_eq!(seen.len(), 6);
        let mut s = service("full", "ClusterIP", "", &[]);
        assert!(matches!(
            a.allocate(&store, &mut s, None).await,
            Err(AllocError::Full(_))
        ));
        // Headless services and ExternalNames take nothing.
        let mut headless = service("h", "ClusterIP", "None", &[]);
        assert_eq!(
            a.allocate(&store, &mut headless, None).await.unwrap(),
            Claims::default()
        );
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }

    #[tokio::test]
    async fn repair_releases_what_no_service_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db")).unwrap();
        let a = allocator("10.0.0.0/24", "30000-30100");
        let mut kept = service("kept", "NodePort", "", &[0]);
        a.allocate(&store, &mut kept, None).await.unwrap();
        writes::admit_new(kinds::service(), &mut kept).unwrap();
        store.create(&kinds::service().resource(), kept.clone()).await.unwrap();
        let mut lost = service("lost", "NodePort", "", &[0]);
        a.allocate(&store, &mut lost, None).await.unwrap();
        assert_eq!(
            a.repair(&store, chrono::Duration::minutes(1)).await.unwrap(),
            0,
            "too young"
        );
        assert_eq!(a.repair(&store, chrono::Duration::zero()).await.unwrap(), 2);
        let (ips, _) = store.list(&kinds::ipaddress().resource(), None).await.unwrap();
        assert_eq!(ips.len(), 1);
        assert_eq!(object::name(&ips[0]), kept["spec"]["clusterIP"].as_str().unwrap());
        // A held address whose claim was deleted by hand is claimed again.
        store
            .delete(
                &kinds::ipaddress().resource(),
                "",
                object::name(&ips[0]),
                Preconditions::default(),
            )
            .await
            .unwrap();
        a.repair(&store, chrono::Duration::zero()).await.unwrap();
        let (ips, _) = store.list(&kinds::ipaddress().resource(), None).await.unwrap();
        assert_eq!(ips.len(), 1, "made again");
    }
}
