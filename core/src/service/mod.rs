//! Services as the node needs them beyond validation: the ranges cluster
//! IPs and NodePorts come from, the environment variables kubelet gives
//! every container, and how a service port finds a pod's port.

pub mod alloc;

use serde_json::Value;
use std::net::Ipv4Addr;

/// kube-apiserver's default `--service-cluster-ip-range`.
pub const DEFAULT_CLUSTER_IP_RANGE: &str = "10.96.0.0/12";
/// kube-apiserver's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

/// A range of IPv4 addresses written as a CIDR (`10.96.0.0/12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: u32,
    prefix: u8,
}

impl IpRange {
    /// Parses `a.b.c.d/n`; the address must be the network's first (no host bits set).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (e.g. 10.96.0.0/12)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 CIDR (e.g. 10.96.0.0/12)"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| format!("{text:?}: the prefix length must be between 1 and 30"))?;
        let network = u32::from(addr);
        let mask = u32::MAX << (32 - prefix);
        if network & !mask != 0 {
            return Err(format!(
                "{text:?} has host bits set: the network is {}/{prefix}",
                Ipv4Addr::from(network & mask)
            ));
        }
        Ok(Self { network, prefix })
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// Whether `ip` is a usable address of the range (not its network or broadcast address).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip & self.mask() == self.network && ip != self.network && ip != self.network | !self.mask()
    }

    /// How many usable addresses the range has.
    pub fn size(&self) -> u32 {
        (!self.mask()).saturating_sub(1)
    }

    /// The `n`-th usable address (0 is the first, the `kubernetes` service's), wrapping.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1 + n % self.size())
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// A range of ports written `first-last` (`30000-32767`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Parses `first-last` (or one port).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, b) = text.split_once('-').unwrap_or((text, text));
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{text:?} is not a port range (e.g. 30000-32767)"))
        };
        let (first, last) = (port(a)?, port(b)?);
        if first > last {
            return Err(format!("{text:?}: the first port is after the last"));
        }
        Ok(Self { first, last })
    }

    pub fn contains(&self, port: i64) -> bool {
        (i64::from(self.first)..=i64::from(self.last)).contains(&port)
    }

    pub fn size(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    /// The `n`-th port of the range, wrapping.
    pub fn nth(&self, n: u32) -> u16 {
        // The range's size fits a u16 offset from `first`.
        self.first + (n % self.size()) as u16
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Whether a service has a cluster IP (not headless, not ExternalName).
pub fn has_cluster_ip(svc: &Value) -> bool {
    matches!(svc["spec"]["clusterIP"].as_str(), Some(ip) if !ip.is_empty() && ip != "None")
}

/// Whether a service of this type has node ports.
pub fn needs_node_ports(svc: &Value) -> bool {
    matches!(svc["spec"]["type"].as_str(), Some("NodePort" | "LoadBalancer"))
}

/// `my-svc` as kubelet writes it in variable names: `MY_SVC`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// The variables kubelet gives a container of a pod in `namespace` for the
/// services that exist as it starts (`envvars.FromServices`): for each
/// service with a cluster IP, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`
/// (and `_<PORTNAME>` per named port) and Docker's link variables
/// (`<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`). The
/// services of the pod's namespace count only with `enableServiceLinks`
/// (the default); `kubernetes` in `default` always does. Sorted by name.
pub fn environment(services: &[Value], namespace: &str, service_links: bool) -> Vec<(String, String)> {
    let mut chosen: std::collections::BTreeMap<&str, &Value> = Default::default();
    for svc in services.iter().filter(|s| has_cluster_ip(s)) {
        let (ns, name) = (
            svc["metadata"]["namespace"].as_str().unwrap_or(""),
            svc["metadata"]["name"].as_str().unwrap_or(""),
        );
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if ns == namespace && service_links {
            chosen.insert(name, svc);
        }
    }
    let mut out = Vec::new();
    for (name, svc) in chosen {
        let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
        let prefix = env_name(name);
        let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        if let Some(first) = ports.first() {
            out.push((format!("{prefix}_SERVICE_PORT"), first["port"].to_string()));
        }
        for p in &ports {
            if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
                out.push((format!("{prefix}_SERVICE_PORT_{}", env_name(n)), p["port"].to_string()));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let port = p["port"].to_string();
            let url = format!("{lower}://{ip}:{port}");
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{port}_{}", proto.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), port));
            out.push((format!("{pp}_ADDR"), ip.to_string()));
        }
    }
    out.sort();
    out
}

/// The pod port a service port reaches (`targetPort`, a number or the name
/// of one of the pod's container ports with the same protocol), or `None`
/// when the pod has no port of that name.
pub fn target_port(service_port: &Value, pod: &Value) -> Option<i64> {
    let protocol = service_port["protocol"].as_str().unwrap_or("TCP");
    match &service_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) if !name.is_empty() => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            // Kubernetes' FindPort: the app containers, then sidecars (init
            // containers that keep running).
            let app = pod["spec"]["containers"].as_array().into_iter().flatten();
            let sidecars = pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["restartPolicy"] == "Always");
            app.chain(sidecars)
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == name.as_str() && p["protocol"].as_str().unwrap_or("TCP") == protocol)
                .and_then(|p| p["containerPort"].as_i64())
        }
        _ => service_port["port"].as_i64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_parse_and_count() {
        let r = IpRange::parse("10.96.0.0/12").unwrap();
        assert_eq!(r.nth(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(r.size(), (1 << 20) - 2);
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 111, 255, 255)), "broadcast");
        assert!(!r.contains(Ipv4Addr::new(10, 96, 0, 0)), "network");
        assert!(!r.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(IpRange::parse("10.96.0.1/12").unwrap_err().contains("host bits"));
        assert!(IpRange::parse("10.96.0.0").is_err());
        let small = IpRange::parse("192.168.5.0/30").unwrap();
        assert_eq!((small.size(), small.nth(2)), (2, Ipv4Addr::new(192, 168, 5, 1)));
        let ports = PortRange::parse("30000-32767").unwrap();
        assert_eq!((ports.size(), ports.nth(2768)), (2768, 30000));
        assert!(ports.contains(32767) && !ports.contains(29999));
        assert!(PortRange::parse("5-2").is_err());
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, "ports": ports}})
    }

    #[test]
    fn environment_is_kubelets() {
        let services = [
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc(
                "team",
                "redis-primary",
                "10.96.0.11",
                json!([{"port": 6379, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
            ),
            svc("team", "headless", "None", json!([{"port": 80}])),
            svc("other", "elsewhere", "10.96.0.12", json!([{"port": 80}])),
        ];
        let env: std::collections::BTreeMap<String, String> =
            environment(&services, "team", true).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_DNS"], "53");
        assert_eq!(env["REDIS_PRIMARY_PORT_53_UDP"], "udp://10.96.0.11:53");
        assert_eq!(env["REDIS_PRIMARY_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "10.96.0.11");
        assert!(!env
            .keys()
            .any(|k| k.starts_with("HEADLESS") || k.starts_with("ELSEWHERE")));
        let env = environment(&services, "team", false);
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")), "{env:?}");
    }

    #[test]
    fn target_ports_by_number_and_name() {
        let pod = json!({"spec": {"containers": [{"ports": [
            {"name": "web", "containerPort": 8080},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
        ]}]}});
        assert_eq!(target_port(&json!({"port": 80, "targetPort": 9000}), &pod), Some(9000));
        assert_eq!(target_port(&json!({"port": 80, "targetPort": "web"}), &pod), Some(8080));
        assert_eq!(target_port(&json!({"port": 80}), &pod), Some(80));
        assert_eq!(
            target_port(&json!({"port": 53, "targetPort": "dns"}), &pod),
            None,
            "TCP has no dns port"
        );
        assert_eq!(
            target_port(&json!({"port": 53, "protocol": "UDP", "targetPort": "dns"}), &pod),
            Some(5353)
        );
    }
}
