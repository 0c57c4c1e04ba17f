//! Pod ranges handed out from the cluster CIDR, as kube-controller-manager's
//! node IPAM (`--allocate-node-cidrs`, `--cluster-cidr`,
//! `--node-cidr-mask-size`) hands them out: each node gets the lowest free
//! range of the mask size, and keeps it across restarts.
//!
//! A node needs its range before it can write its CNI configuration, so it
//! claims one itself at start, before its NodeActor runs, rather than
//! waiting for a controller that may be its own. A claim is an object per
//! range (`peapod.internal/podcidrs`, named by the range), created, so two
//! nodes starting together never get one range; the node lifecycle
//! controller gives back the range of a Node deleted for good.

use peapod_core::object;
use peapod_core::store::{Store, StoreError};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// The store resource of the range claims.
pub const POD_CIDRS: &str = "peapod.internal/podcidrs";

/// An IPv4 network, `a.b.c.d/len` with the host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub base: u32,
    pub len: u8,
}

impl Net {
    /// Parses `a.b.c.d/len` (host bits are cleared).
    pub fn parse(s: &str) -> Result<Net, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected a.b.c.d/len"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0..32"))?;
        Ok(Net {
            base: u32::from(ip) & Self::mask(len),
            len,
        })
    }

    fn mask(len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }

    /// Whether `other` lies within this network.
    pub fn contains(&self, other: &Net) -> bool {
        other.len >= self.len && other.base & Self::mask(self.len) == self.base
    }

    /// The `i`th subnet of prefix length `len`.
    fn subnet(&self, len: u8, i: u32) -> Net {
        Net {
            base: self.base + (i << (32 - u32::from(len))),
            len,
        }
    }

    /// A claim's object name: the range with `-` for `/` (`10.99.3.0-24`).
    fn claim_name(&self) -> String {
        format!("{}-{}", Ipv4Addr::from(self.base), self.len)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

/// How many ranges of `mask` the cluster CIDR holds; an error names the flag at fault.
pub fn ranges(cluster: &Net, mask: u8) -> Result<u32, String> {
    if mask < cluster.len || mask > 30 {
        return Err(format!(
            "--node-cidr-mask-size {mask}: must be between the cluster CIDR's prefix length ({}) and 30",
            cluster.len
        ));
    }
    let bits = u32::from(mask - cluster.len);
    if bits > 16 {
        return Err(format!(
            "--node-cidr-mask-size {mask}: {cluster} would hold 2^{bits} ranges; at most 2^16"
        ));
    }
    Ok(1 << bits)
}

/// The range claimed by `node`, claiming the lowest free one of `mask` in
/// `cluster` when it has none. Ranges named by nodes' own `--pod-cidr`
/// (their Nodes' `spec.podCIDR`) are passed over.
pub async fn claim(store: &dyn Store, node: &str, cluster: &str, mask: u8) -> Result<String, String> {
    let cluster_net = Net::parse(cluster).map_err(|e| format!("--cluster-cidr {e}"))?;
    let count = ranges(&cluster_net, mask)?;
    let failed = |e: StoreError| format!("claiming a pod range from {cluster}: {e}");
    let (claims, _) = store.list(POD_CIDRS, None).await.map_err(failed)?;
    let mine = claims
        .iter()
        .filter(|c| c["spec"]["nodeName"] == node)
        .filter_map(|c| Net::parse(c["spec"]["podCIDR"].as_str()?).ok())
        .find(|n| cluster_net.contains(n) && n.len == mask);
    if let Some(net) = mine {
        return Ok(net.to_string());
    }
    let (nodes, _) = store
        .list(&peapod_core::kinds::node().resource(), None)
        .await
        .map_err(failed)?;
    let named: Vec<Net> = nodes
        .iter()
        .filter(|n| object::name(n) != node)
        .filter_map(|n| Net::parse(n["spec"]["podCIDR"].as_str()?).ok())
        .collect();
    let taken: std::collections::HashSet<String> = claims.iter().map(|c| object::name(c).to_string()).collect();
    for i in 0..count {
        let net = cluster_net.subnet(mask, i);
        let overlaps = named.iter().any(|n| n.contains(&net) || net.contains(n));
        if overlaps || taken.contains(&net.claim_name()) {
            continue;
        }
        let obj = json!({
            "apiVersion": "peapod.internal/v1",
            "kind": "PodCIDRClaim",
            "metadata": {"name": net.claim_name(), "uid": object::new_uid(),
                "creationTimestamp": object::now_rfc3339()},
            "spec": {"nodeName": node, "podCIDR": net.to_string()},
        });
        match store.create(POD_CIDRS, obj).await {
            Ok(_) => return Ok(net.to_string()),
            // Another node took it between the list and now.
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(format!(
        "--cluster-cidr {cluster}: all {count} ranges of /{mask} are taken; a deleted Node's range comes back \
         once its lease has expired"
    ))
}

/// Gives back the ranges `node` claimed (its Node is gone for good).
pub async fn release(store: &dyn Store, node: &str) -> Result<usize, StoreError> {
    let (claims, _) = store.list(POD_CIDRS, None).await?;
    let mut released = 0;
    for c in claims.iter().filter(|c| c["spec"]["nodeName"] == node) {
        let pre = peapod_core::store::Preconditions {
            uid: Some(object::uid(c).to_string()),
            ..Default::default()
        };
        match store.delete(POD_CIDRS, "", object::name(c), pre).await {
            Ok(_) => released += 1,
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(released)
}

/// Every claim (`spec.nodeName`, `spec.podCIDR`), for the lifecycle controller.
pub async fn claims(store: &dyn Store) -> Result<Vec<Value>, StoreError> {
    Ok(store.list(POD_CIDRS, None).await?.0)
}

/// The nodes that hold a claim but have no Node object: deleted while no
/// lifecycle controller was watching (or before its leader restarted), so
/// no `gone` looked at them. Each once, in claim order.
pub async fn orphans(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let (nodes, _) = store.list(&peapod_core::kinds::node().resource(), None).await?;
    let known: std::collections::HashSet<&str> = nodes.iter().map(object::name).collect();
    let mut out: Vec<String> = Vec::new();
    for c in claims(store).await? {
        let Some(node) = c["spec"]["nodeName"].as_str() else {
            continue;
        };
        if !known.contains(node) && !out.iter().any(|o| o == node) {
            out.push(node.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peapod_core::store::SqliteStore;

    #[test]
    fn networks_parse_contain_and_split() {
        let c = Net::parse("10.99.7.9/16").unwrap();
        assert_eq!(c.to_string(), "10.99.0.0/16");
        assert_eq!(c.subnet(24, 3).to_string(), "10.99.3.0/24");
        assert_eq!(c.subnet(24, 3).claim_name(), "10.99.3.0-24");
        assert!(c.contains(&Net::parse("10.99.200.0/24").unwrap()));
        assert!(!c.contains(&Net::parse("10.98.0.0/24").unwrap()));
        assert!(!c.contains(&Net::parse("10.0.0.0/8").unwrap()));
        assert_eq!(ranges(&c, 24), Ok(256));
        assert!(ranges(&c, 8).unwrap_err().contains("--node-cidr-mask-size 8"));
        assert!(ranges(&c, 31).is_err());
        assert!(Net::parse("10.99.0.0").unwrap_err().contains("a.b.c.d/len"));
    }

    #[tokio::test]
    async fn each_node_gets_its_own_range_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        // A node that named its own range with --pod-cidr: its range is passed over.
        store
            .create(
                "nodes",
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "manual", "uid": "u0"},
                    "spec": {"podCIDR": "10.99.0.0/24"}}),
            )
            .await
            .unwrap();
        let a = claim(&store, "a", "10.99.0.0/22", 24).await.unwrap();
        let b = claim(&store, "b", "10.99.0.0/22", 24).await.unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("10.99.1.0/24", "10.99.2.0/24"));
        assert_eq!(
            claim(&store, "a", "10.99.0.0/22", 24).await.unwrap(),
            a,
            "a restart keeps it"
        );
        let c = claim(&store, "c", "10.99.0.0/22", 24).await.unwrap();
        assert_eq!(c, "10.99.3.0/24");
        let full = claim(&store, "d", "10.99.0.0/22", 24).await.unwrap_err();
        assert!(full.contains("all 4 ranges of /24 are taken"), "{full}");
        // A deleted node's range is given back, and the next node gets it.
        assert_eq!(release(&store, "b").await.unwrap(), 1);
        assert_eq!(claim(&store, "d", "10.99.0.0/22", 24).await.unwrap(), "10.99.2.0/24");
        assert_eq!(claims(&store).await.unwrap().len(), 3);
        // a, c and d have no Node object here; "manual" claimed nothing.
        assert_eq!(orphans(&store).await.unwrap(), ["a", "d", "c"]);
        store
            .create(
                "nodes",
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "c", "uid": "u1"}}),
            )
            .await
            .unwrap();
        assert_eq!(orphans(&store).await.unwrap(), ["a", "d"]);
    }
}
