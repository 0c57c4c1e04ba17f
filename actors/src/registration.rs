//! The node's own objects: its `v1/Node` (capacity, allocatable, conditions,
//! addresses, nodeInfo), posted at start and every heartbeat
//! (`NodeConfig::heartbeat`, kubelet's 10 s by default), and its heartbeat
//! `Lease` in `kube-node-lease`, renewed as often, as kubelet does.

use crate::config::NodeConfig;
use peapod_core::kinds;
use peapod_core::object;
use peapod_core::store::{Store, StoreError, StoreResult};
use serde_json::{json, Value};

/// How often the Node status and the Lease are renewed by default (kubelet: 10 s).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
/// The Lease's duration (kubelet's `nodeLeaseDurationSeconds`).
const LEASE_SECONDS: i64 = 40;
/// The namespace of node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the node says about itself; read once (files) at start.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub ip: String,
    pub hostname: String,
    pub capacity: Value,
    pub allocatable: Value,
    pub node_info: Value,
    /// The node's pod range as a network (`10.244.1.0/24`), its `spec.podCIDR`.
    pub pod_cidr: Option<String>,
    /// Where other nodes reach this one.
    pub daemon_endpoint: Option<crate::config::DaemonEndpoint>,
}

/// The network of `cidr` (`10.88.0.1/16` -> `10.88.0.0/16`); `None` when it does not parse.
fn network_of(cidr: &str) -> Option<String> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 32)?;
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    Some(format!("{}/{bits}", std::net::Ipv4Addr::from(u32::from(ip) & mask)))
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_default()
}

/// Gathers the node's facts (reads /etc/os-release, /proc; run it on the blocking pool).
pub fn gather(config: &NodeConfig) -> NodeFacts {
    let cap = crate::config::capacity();
    let alloc = config.allocatable();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let hostname = uname
        .as_ref()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_else(|| config.node_name.clone());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let pods = config.max_pods.to_string();
    let quantity = |cpu_millis: i64, memory: i64| {
        let cpu = if cpu_millis % 1000 == 0 {
            (cpu_millis / 1000).to_string()
        } else {
            format!("{cpu_millis}m")
        };
        json!({"cpu": cpu,
            "memory": format!("{}Ki", memory / 1024), "pods": pods})
    };
    NodeFacts {
        name: config.node_name.clone(),
        ip: config.node_ip.clone(),
        hostname,
        pod_cidr: network_of(&config.network.pod_cidr),
        daemon_endpoint: config.daemon_endpoint.clone(),
        capacity: quantity(cap.cpu_millis, cap.memory_bytes),
        allocatable: quantity(alloc.cpu_millis, alloc.memory_bytes),
        node_info: json!({
            "machineID": first_line("/etc/machine-id"),
            "systemUUID": first_line("/sys/class/dmi/id/product_uuid"),
            "bootID": first_line("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": kernel,
            "osImage": os_image,
            "containerRuntimeVersion": format!("peapod://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": format!("v1.33.0-peapod.{}", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": arch,
        }),
    }
}

fn condition(old: &Value, type_: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    let prev = old["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_);
    let since = prev
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": since})
}

/// The Node's status as of now, keeping transition times from `old`.
fn status(facts: &NodeFacts, old: &Value) -> Value {
    let now = object::now_rfc3339();
    json!({
        "capacity": facts.capacity,
        "allocatable": facts.allocatable,
        "conditions": [
            condition(old, "MemoryPressure", "False", "KubeletHasSufficientMemory", "peapod has sufficient memory available", &now),
            condition(old, "DiskPressure", "False", "KubeletHasNoDiskPressure", "peapod has no disk pressure", &now),
            condition(old, "PIDPressure", "False", "KubeletHasSufficientPID", "peapod has sufficient PID available", &now),
            condition(old, "Ready", "True", "KubeletReady", "peapod is posting ready status", &now),
        ],
        "addresses": [{"type": "InternalIP", "address": facts.ip}, {"type": "Hostname", "address": facts.hostname}],
        "nodeInfo": facts.node_info,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.daemon_endpoint.as_ref().map_or(0, |e| e.port)}},
    })
}

/// Registers the Node (or refreshes its status and labels) and renews its Lease.
pub async fn post(store: &dyn Store, facts: &NodeFacts) -> StoreResult<()> {
    let nodes = kinds::node().resource();
    // The node's name, as kubelet labels a node registered under --hostname-override:
    // nodes sharing a host name (network namespaces of one machine) are still apart.
    let labels = json!({"kubernetes.io/hostname": facts.name, "kubernetes.io/os": "linux",
        "kubernetes.io/arch": facts.node_info["architecture"]});
    for _ in 0..5 {
        let res = match store.get(&nodes, "", &facts.name).await {
            Ok(mut cur) => {
                for (k, v) in labels.as_object().into_iter().flatten() {
                    cur["metadata"]["labels"][k] = v.clone();
                }
                publish_endpoint_ca(&mut cur, facts);
                if let Some(c) = &facts.pod_cidr {
                    cur["spec"]["podCIDR"] = json!(c);
                    cur["spec"]["podCIDRs"] = json!([c]);
                }
                cur["status"] = status(facts, &cur);
                store.update(&nodes, cur).await.map(drop)
            }
            Err(StoreError::NotFound { .. }) => {
                let mut node = json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": facts.name, "labels": labels, "uid": object::new_uid(),
                        "creationTimestamp": object::now_rfc3339(), "generation": 1},
                    "spec": {}});
                if let Some(c) = &facts.pod_cidr {
                    node["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
                }
                publish_endpoint_ca(&mut node, facts);
                node["status"] = status(facts, &Value::Null);
                store.create(&nodes, node).await.map(drop)
            }
            Err(e) => return Err(e),
        };
        match res {
            Ok(()) => break,
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    renew_lease(store, facts).await
}

/// Puts (or takes away) the CA of the node's daemon endpoint in its annotation.
fn publish_endpoint_ca(node: &mut Value, facts: &NodeFacts) {
    let key = crate::config::DAEMON_CA_ANNOTATION;
    match &facts.daemon_endpoint {
        Some(e) => node["metadata"]["annotations"][key] = json!(e.ca_pem),
        None => {
            if let Some(a) = node["metadata"]["annotations"].as_object_mut() {
                a.remove(key);
            }
        }
    }
}

async fn renew_lease(store: &dyn Store, facts: &NodeFacts) -> StoreResult<()> {
    let leases = kinds::lease().resource();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for _ in 0..5 {
        let res = match store.get(&leases, LEASE_NAMESPACE, &facts.name).await {
            Ok(mut cur) => {
                cur["spec"]["holderIdentity"] = json!(facts.name);
                cur["spec"]["leaseDurationSeconds"] = json!(LEASE_SECONDS);
                cur["spec"]["renewTime"] = json!(now);
                store.update(&leases, cur).await.map(drop)
            }
            Err(StoreError::NotFound { .. }) => {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": facts.name, "namespace": LEASE_NAMESPACE, "uid": object::new_uid(),
                        "creationTimestamp": object::now_rfc3339()},
                    "spec": {"holderIdentity": facts.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}});
                store.create(&leases, lease).await.map(drop)
            }
            Err(e) => return Err(e),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::network_of;

    #[test]
    fn a_pod_range_is_published_as_its_network() {
        assert_eq!(network_of("10.88.0.0/16").as_deref(), Some("10.88.0.0/16"));
        assert_eq!(network_of("10.77.3.9/24").as_deref(), Some("10.77.3.0/24"));
        assert_eq!(network_of("10.0.0.1/0").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(network_of("10.0.0.1/33"), None);
        assert_eq!(network_of("nonsense"), None);
    }
}
