//! The service data path as one nftables transaction, after kube-proxy's
//! nftables mode: a table of our own holding a verdict map from
//! `cluster IP . protocol . port` (and `protocol . node port` for addresses
//! of the node) to a chain per service port, which picks an endpoint chain
//! at random (or the one a client used last, with ClientIP affinity), which
//! DNATs to the endpoint. Traffic from outside the pod network, hairpin
//! traffic and NodePort traffic (with `externalTrafficPolicy: Cluster`) is
//! marked and masqueraded on the way out. Service ports with no endpoint
//! are refused with an ICMP port-unreachable, as kube-proxy refuses them.
//!
//! The script is applied with `nft -f` as one transaction: the table, its
//! chains and maps are added if missing and flushed, then filled; chains
//! no longer wanted are deleted. Affinity sets are never flushed, so
//! clients keep their endpoint across syncs, and nothing touches
//! conntrack, so established connections survive any resync.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// The mark of packets to masquerade (kube-proxy's `0x4000`).
const MASQ_MARK: &str = "0x4000";

/// The node's view of one service port, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name/protocol/port-name`: what its chains are named after.
    pub id: String,
    pub cluster_ip: Option<String>,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub port: u16,
    pub node_port: Option<u16>,
    /// NodePort traffic keeps its source (`externalTrafficPolicy: Local`).
    pub external_local: bool,
    /// ClientIP affinity timeout, in seconds.
    pub affinity: Option<u32>,
    /// Where cluster IP traffic goes, as `(ip, port)` (this node's only, with
    /// `internalTrafficPolicy: Local`).
    pub endpoints: Vec<(String, u16)>,
    /// Where NodePort traffic goes (this node's only, with `externalTrafficPolicy: Local`).
    pub external_endpoints: Vec<(String, u16)>,
}

/// What the node is told to program.
#[derive(Debug, Clone)]
pub struct Config {
    /// The table's name (in family `ip`).
    pub table: String,
    /// The pod network: traffic from elsewhere to a cluster IP is masqueraded.
    pub cluster_cidr: String,
    /// This node's name: with the Local traffic policies, only its endpoints count.
    pub node_name: String,
}

fn protocol_of(p: &str) -> Option<&'static str> {
    match p {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The endpoints a service port sends to, from its slices: the ready ones;
/// when none is, those still serving while they terminate (kube-proxy's
/// fallback); only this node's when `local_only`.
fn endpoints_for(
    slices: &[&Value],
    port_name: &str,
    protocol: &str,
    local_only: bool,
    node_name: &str,
) -> Vec<(String, u16)> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for s in slices {
        if s["addressType"] != "IPv4" {
            continue;
        }
        let Some(port) = s["ports"].as_array().into_iter().flatten().find(|p| {
            p["name"].as_str().unwrap_or("") == port_name && p["protocol"].as_str().unwrap_or("TCP") == protocol
        }) else {
            continue;
        };
        let Some(port) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if local_only && e["nodeName"].as_str() != Some(node_name) {
                continue;
            }
            let c = &e["conditions"];
            // An absent condition counts as true, as the API documents it.
            let ready_now = c["ready"] != false;
            let serving = c["serving"] != false;
            let leaving = c["terminating"] == true;
            for a in e["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if ready_now {
                    ready.insert((a.to_string(), port));
                } else if serving && leaving {
                    terminating.insert((a.to_string(), port));
                }
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

/// The service ports to program, from the services and their slices.
pub fn service_ports(cfg: &Config, services: &[Value], slices: &[Value]) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&Value>> = BTreeMap::new();
    for s in slices {
        let ns = s["metadata"]["namespace"].as_str().unwrap_or("");
        if let Some(svc) = s["metadata"]["labels"]["kubernetes.io/service-name"].as_str() {
            by_service.entry((ns, svc)).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let spec = &svc["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
        let name = svc["metadata"]["name"].as_str().unwrap_or("");
        let cluster_ip = spec["clusterIP"]
            .as_str()
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(str::to_string);
        let node_ports = matches!(ty, "NodePort" | "LoadBalancer");
        if cluster_ip.is_none() {
            continue;
        }
        let slices = by_service.get(&(ns, name)).cloned().unwrap_or_default();
        let affinity = (spec["sessionAffinity"] == "ClientIP").then(|| {
            spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_u64)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        });
        let internal_local = spec["internalTrafficPolicy"] == "Local";
        let external_local = spec["externalTrafficPolicy"] == "Local";
        for p in spec["ports"].as_array().into_iter().flatten() {
            let proto_k8s = p["protocol"].as_str().unwrap_or("TCP");
            let (Some(protocol), Some(port)) = (
                protocol_of(proto_k8s),
                p["port"].as_u64().and_then(|n| u16::try_from(n).ok()),
            ) else {
                continue;
            };
            let port_name = p["name"].as_str().unwrap_or("");
            let node_port = node_ports
                .then(|| p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()))
                .flatten()
                .filter(|n| *n != 0);
            out.push(ServicePort {
                id: format!(
                    "{ns}/{name}/{protocol}/{}",
                    if port_name.is_empty() {
                        format!("p{port}")
                    } else {
                        port_name.to_string()
                    }
                ),
                cluster_ip: cluster_ip.clone(),
                protocol: protocol.to_string(),
                port,
                node_port,
                external_local,
                affinity,
                endpoints: endpoints_for(&slices, port_name, proto_k8s, internal_local, &cfg.node_name),
                external_endpoints: endpoints_for(&slices, port_name, proto_k8s, external_local, &cfg.node_name),
            });
        }
    }
    out
}

/// A short stable hash, so chain names stay unique whatever their readable part.
fn hash8(text: &str) -> String {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", h as u32)
}

fn service_chain(sp: &ServicePort) -> String {
    format!("service-{}-{}", hash8(&sp.id), sp.id)
}

fn external_chain(sp: &ServicePort) -> String {
    format!("external-{}-{}", hash8(&sp.id), sp.id)
}

fn endpoint_chain(sp: &ServicePort, ep: &(String, u16)) -> String {
    let key = format!("{}__{}/{}", sp.id, ep.0, ep.1);
    format!("endpoint-{}-{key}", hash8(&key))
}

fn affinity_set(sp: &ServicePort, ep: &(String, u16), timeout: u32) -> String {
    let key = format!("{}__{}/{}/{timeout}", sp.id, ep.0, ep.1);
    format!("affinity-{}", hash8(&key))
}

/// The chains (and sets) of a table as `nft -j list table` shows them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

impl Existing {
    /// From `nft -j list table ip T` output.
    pub fn parse(json: &str) -> Existing {
        let mut out = Existing::default();
        let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        for item in v["nftables"].as_array().into_iter().flatten() {
            if let Some(n) = item["chain"]["name"].as_str() {
                out.chains.insert(n.to_string());
            }
            for k in ["set", "map"] {
                if let Some(n) = item[k]["name"].as_str() {
                    out.sets.insert(n.to_string());
                }
            }
        }
        out
    }
}

/// The fixed chains: base chains with their hooks, then the helpers.
const BASE_CHAINS: &[(&str, &str)] = &[
    (
        "nat-prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
    ),
    ("nat-output", "type nat hook output priority -100; policy accept;"),
    (
        "nat-postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
    ),
    ("filter-input", "type filter hook input priority -110; policy accept;"),
    (
        "filter-forward",
        "type filter hook forward priority -110; policy accept;",
    ),
    ("filter-output", "type filter hook output priority -110; policy accept;"),
];
const HELPER_CHAINS: &[&str] = &["services", "masquerading", "mark-for-masquerade"];
const MAPS: &[(&str, &str)] = &[
    ("service-ips", "type ipv4_addr . inet_proto . inet_service : verdict;"),
    ("service-nodeports", "type inet_proto . inet_service : verdict;"),
];
const SETS: &[(&str, &str)] = &[
    ("no-endpoint-services", "type ipv4_addr . inet_proto . inet_service;"),
    ("no-endpoint-nodeports", "type inet_proto . inet_service;"),
];

/// What the table should hold: every chain of ours with its rules, the
/// maps' and sets' elements, the affinity sets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    pub chains: BTreeMap<String, Vec<String>>,
    /// `service-ips` elements: key (`ip . proto . port`) to verdict.
    pub ip_elements: BTreeMap<String, String>,
    /// `service-nodeports` elements: key (`proto . port`) to verdict.
    pub nodeport_elements: BTreeMap<String, String>,
    pub no_endpoint_ips: BTreeSet<String>,
    pub no_endpoint_nodeports: BTreeSet<String>,
    /// Affinity set name to its timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// UDP service ports (a cluster IP and port, or a node port on any
    /// address: `None`) and the endpoint addresses they send to, for the
    /// conntrack flows a change leaves stale ([`stale_udp_flows`]).
    pub udp: BTreeMap<(Option<String>, u16), BTreeSet<String>>,
}

/// `conntrack` arguments that delete the UDP flows a change from `old` to
/// `new` leaves pointing the wrong way, as kube-proxy deletes them: flows
/// to an endpoint that is gone (UDP has no connection to break, so a client
/// would keep sending into the void until the flow times out), and flows
/// to a port that had no endpoint and now has one (they bypass the new DNAT).
pub fn stale_udp_flows(old: &Desired, new: &Desired) -> Vec<Vec<String>> {
    let dest = |(ip, port): &(Option<String>, u16)| {
        let mut args = vec!["-D".to_string(), "-p".into(), "udp".into()];
        if let Some(ip) = ip {
            args.extend(["--orig-dst".into(), ip.clone()]);
        }
        args.extend(["--orig-port-dst".into(), port.to_string()]);
        args
    };
    let mut out = Vec::new();
    let none = BTreeSet::new();
    for (key, before) in &old.udp {
        let after = new.udp.get(key).unwrap_or(&none);
        for gone in before.difference(after) {
            let mut args = dest(key);
            args.extend(["--dst-nat".into(), gone.clone()]);
            out.push(args);
        }
    }
    for (key, after) in &new.udp {
        if !after.is_empty() && old.udp.get(key).is_none_or(BTreeSet::is_empty) {
            out.push(dest(key));
        }
    }
    out
}

/// The chains, elements and sets that program exactly `ports`.
pub fn desired(cfg: &Config, ports: &[ServicePort]) -> Desired {
    let mut d = Desired::default();
    for sp in ports {
        let proto = &sp.protocol;
        if proto == "udp" {
            let ips = |eps: &[(String, u16)]| eps.iter().map(|(ip, _)| ip.clone()).collect::<BTreeSet<_>>();
            if let Some(ip) = &sp.cluster_ip {
                d.udp.insert((Some(ip.clone()), sp.port), ips(&sp.endpoints));
            }
            if let Some(np) = sp.node_port {
                d.udp.insert((None, np), ips(&sp.external_endpoints));
            }
        }
        for ep in sp.endpoints.iter().chain(&sp.external_endpoints) {
            let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.0)];
            if let Some(timeout) = sp.affinity {
                let set = affinity_set(sp, ep, timeout);
                rules.push(format!("update @{set} {{ ip saddr }}"));
                d.affinity_sets.insert(set, timeout);
            }
            rules.push(format!("meta l4proto {proto} dnat to {}:{}", ep.0, ep.1));
            d.chains.insert(endpoint_chain(sp, ep), rules);
        }
        // Picks an endpoint: the client's last one (affinity), else at random.
        let pick = |eps: &[(String, u16)]| {
            let mut rules = Vec::new();
            if let Some(timeout) = sp.affinity {
                for ep in eps {
                    rules.push(format!(
                        "ip saddr @{} goto {}",
                        affinity_set(sp, ep, timeout),
                        endpoint_chain(sp, ep)
                    ));
                }
            }
            let arms: Vec<String> = eps
                .iter()
                .enumerate()
                .map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(sp, ep)))
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                eps.len(),
                arms.join(", ")
            ));
            rules
        };
        if let Some(ip) = &sp.cluster_ip {
            let key = format!("{ip} . {proto} . {}", sp.port);
            if sp.endpoints.is_empty() {
                d.no_endpoint_ips.insert(key);
            } else {
                let chain = service_chain(sp);
                d.ip_elements.insert(key, format!("goto {chain}"));
                let mut rules = vec![format!("ip saddr != {} jump mark-for-masquerade", cfg.cluster_cidr)];
                rules.extend(pick(&sp.endpoints));
                d.chains.insert(chain, rules);
            }
        }
        if let Some(np) = sp.node_port {
            let key = format!("{proto} . {np}");
            if sp.external_endpoints.is_empty() {
                d.no_endpoint_nodeports.insert(key);
            } else {
                let chain = external_chain(sp);
                d.nodeport_elements.insert(key, format!("goto {chain}"));
                let mut rules = Vec::new();
                if !sp.external_local {
                    rules.push("jump mark-for-masquerade".to_string());
                }
                rules.extend(pick(&sp.external_endpoints));
                d.chains.insert(chain, rules);
            }
        }
    }
    d
}

fn is_fixed_chain(name: &str) -> bool {
    BASE_CHAINS.iter().any(|(n, _)| *n == name) || HELPER_CHAINS.contains(&name)
}

/// The `nft -f` script that makes the table program exactly `ports`,
/// whatever it holds now (`existing`, as listed): every chain and map of
/// ours is emptied and filled again, what is no longer wanted deleted.
pub fn render(cfg: &Config, ports: &[ServicePort], existing: &Existing) -> String {
    full_script(cfg, &desired(cfg, ports), existing)
}

/// [`render`] of a [`Desired`] state.
pub fn full_script(cfg: &Config, d: &Desired, existing: &Existing) -> String {
    let t = &cfg.table;
    let mut out = String::new();
    let _ = writeln!(out, "add table ip {t}");
    for (name, spec) in BASE_CHAINS {
        let _ = writeln!(out, "add chain ip {t} {name} {{ {spec} }}");
    }
    for name in HELPER_CHAINS.iter().copied().chain(d.chains.keys().map(String::as_str)) {
        let _ = writeln!(out, "add chain ip {t} {name}");
    }
    for (name, spec) in MAPS {
        let _ = writeln!(out, "add map ip {t} {name} {{ {spec} }}");
    }
    for (name, spec) in SETS {
        let _ = writeln!(out, "add set ip {t} {name} {{ {spec} }}");
    }
    for (name, timeout) in &d.affinity_sets {
        let _ = writeln!(
            out,
            "add set ip {t} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
        );
    }
    // Every chain of ours is emptied, so the chains to delete are referenced by nothing.
    for name in BASE_CHAINS
        .iter()
        .map(|(n, _)| *n)
        .chain(HELPER_CHAINS.iter().copied())
        .chain(d.chains.keys().map(String::as_str))
    {
        let _ = writeln!(out, "flush chain ip {t} {name}");
    }
    for (name, _) in MAPS {
        let _ = writeln!(out, "flush map ip {t} {name}");
    }
    for (name, _) in SETS {
        let _ = writeln!(out, "flush set ip {t} {name}");
    }
    let stale: Vec<&String> = existing
        .chains
        .iter()
        .filter(|c| !d.chains.contains_key(*c) && !is_fixed_chain(c))
        .collect();
    for chain in &stale {
        let _ = writeln!(out, "flush chain ip {t} {chain}");
    }
    let rule = |out: &mut String, chain: &str, r: &str| {
        let _ = writeln!(out, "add rule ip {t} {chain} {r}");
    };
    rule(&mut out, "nat-prerouting", "jump services");
    rule(&mut out, "nat-output", "jump services");
    rule(&mut out, "nat-postrouting", "jump masquerading");
    rule(
        &mut out,
        "masquerading",
        &format!("meta mark & {MASQ_MARK} == 0 return"),
    );
    rule(
        &mut out,
        "masquerading",
        &format!("meta mark set meta mark ^ {MASQ_MARK}"),
    );
    rule(&mut out, "masquerading", "masquerade fully-random");
    rule(
        &mut out,
        "mark-for-masquerade",
        &format!("meta mark set meta mark | {MASQ_MARK}"),
    );
    rule(
        &mut out,
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    rule(
        &mut out,
        "services",
        "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports",
    );
    for chain in ["filter-output", "filter-forward"] {
        rule(
            &mut out,
            chain,
            "ip daddr . meta l4proto . th dport @no-endpoint-services reject",
        );
    }
    rule(
        &mut out,
        "filter-input",
        "fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject",
    );
    for (chain, rules) in &d.chains {
        for r in rules {
            rule(&mut out, chain, r);
        }
    }
    let map_elements = |out: &mut String, map: &str, elements: &BTreeMap<String, String>| {
        if !elements.is_empty() {
            let list: Vec<String> = elements.iter().map(|(k, v)| format!("{k} : {v}")).collect();
            let _ = writeln!(out, "add element ip {t} {map} {{ {} }}", list.join(", "));
        }
    };
    map_elements(&mut out, "service-ips", &d.ip_elements);
    map_elements(&mut out, "service-nodeports", &d.nodeport_elements);
    for (set, elements) in [
        ("no-endpoint-services", &d.no_endpoint_ips),
        ("no-endpoint-nodeports", &d.no_endpoint_nodeports),
    ] {
        if !elements.is_empty() {
            let list: Vec<&str> = elements.iter().map(String::as_str).collect();
            let _ = writeln!(out, "add element ip {t} {set} {{ {} }}", list.join(", "));
        }
    }
    for chain in &stale {
        let _ = writeln!(out, "delete chain ip {t} {chain}");
    }
    for set in existing
        .sets
        .iter()
        .filter(|s| s.starts_with("affinity-") && !d.affinity_sets.contains_key(*s))
    {
        let _ = writeln!(out, "delete set ip {t} {set}");
    }
    out
}

/// The script that takes a table holding exactly `old` (as this proxy last
/// applied it) to `new`, touching only what changed, as kube-proxy's partial
/// syncs do: one endpoint more or less rewrites its service's chain and its
/// own, not a thousand others. Empty when nothing changed.
pub fn diff_script(cfg: &Config, old: &Desired, new: &Desired) -> String {
    let t = &cfg.table;
    let mut out = String::new();
    // New things first (sets and chains before the rules that name them),
    // then rules, then elements, then removals once nothing refers to them.
    for (name, timeout) in new
        .affinity_sets
        .iter()
        .filter(|(n, _)| !old.affinity_sets.contains_key(*n))
    {
        let _ = writeln!(
            out,
            "add set ip {t} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
        );
    }
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(out, "add chain ip {t} {name}");
    }
    let gone: Vec<&String> = old.chains.keys().filter(|n| !new.chains.contains_key(*n)).collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain ip {t} {name}");
    }
    for (name, rules) in &new.chains {
        if old.chains.get(name) == Some(rules) {
            continue;
        }
        if old.chains.contains_key(name) {
            let _ = writeln!(out, "flush chain ip {t} {name}");
        }
        for r in rules {
            let _ = writeln!(out, "add rule ip {t} {name} {r}");
        }
    }
    for (map, before, after) in [
        ("service-ips", &old.ip_elements, &new.ip_elements),
        ("service-nodeports", &old.nodeport_elements, &new.nodeport_elements),
    ] {
        for (k, v) in before {
            if after.get(k) != Some(v) {
                let _ = writeln!(out, "delete element ip {t} {map} {{ {k} }}");
            }
        }
        for (k, v) in after {
            if before.get(k) != Some(v) {
                let _ = writeln!(out, "add element ip {t} {map} {{ {k} : {v} }}");
            }
        }
    }
    for (set, before, after) in [
        ("no-endpoint-services", &old.no_endpoint_ips, &new.no_endpoint_ips),
        (
            "no-endpoint-nodeports",
            &old.no_endpoint_nodeports,
            &new.no_endpoint_nodeports,
        ),
    ] {
        for k in before.difference(after) {
            let _ = writeln!(out, "delete element ip {t} {set} {{ {k} }}");
        }
        for k in after.difference(before) {
            let _ = writeln!(out, "add element ip {t} {set} {{ {k} }}");
        }
    }
    for name in gone {
        let _ = writeln!(out, "delete chain ip {t} {name}");
    }
    for name in old.affinity_sets.keys().filter(|n| !new.affinity_sets.contains_key(*n)) {
        let _ = writeln!(out, "delete set ip {t} {name}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> Config {
        Config {
            table: "peapod".into(),
            cluster_cidr: "10.88.0.0/16".into(),
            node_name: "n1".into(),
        }
    }

    fn slice(svc: &str, eps: &[(&str, bool, bool, &str)]) -> Value {
        json!({"metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": eps.iter().map(|(ip, ready, terminating, node)| json!({
                   "addresses": [ip], "nodeName": node,
                   "conditions": {"ready": ready, "serving": true, "terminating": terminating}})).collect::<Vec<_>>()})
    }

    fn service(name: &str, extra: Value) -> Value {
        let mut s = json!({"metadata": {"namespace": "default", "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}});
        for (k, v) in extra.as_object().unwrap() {
            s["spec"][k] = v.clone();
        }
        s
    }

    #[test]
    fn ready_endpoints_first_then_terminating_ones() {
        let svc = service("web", json!({}));
        let ports = service_ports(
            &cfg(),
            std::slice::from_ref(&svc),
            &[slice(
                "web",
                &[("10.88.0.5", true, false, "n1"), ("10.88.0.6", false, true, "n1")],
            )],
        );
        assert_eq!(ports[0].endpoints, [("10.88.0.5".to_string(), 8080)]);
        let ports = service_ports(&cfg(), &[svc], &[slice("web", &[("10.88.0.6", false, true, "n1")])]);
        assert_eq!(
            ports[0].endpoints,
            [("10.88.0.6".to_string(), 8080)],
            "serving while terminating"
        );
        let local = service(
            "web",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        );
        let ports = service_ports(
            &cfg(),
            &[local],
            &[slice(
                "web",
                &[("10.88.0.5", true, false, "n1"), ("10.88.0.7", true, false, "n2")],
            )],
        );
        assert_eq!(ports[0].endpoints.len(), 2);
        assert_eq!(ports[0].external_endpoints, [("10.88.0.5".to_string(), 8080)]);
        assert_eq!(ports[0].node_port, Some(30080));
    }

    #[test]
    fn the_script_programs_dnat_masquerade_and_rejects() {
        let services = [
            service(
                "web",
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
            ),
            {
                let mut s = service("empty", json!({"type": "NodePort"}));
                s["spec"]["clusterIP"] = json!("10.96.0.11");
                s["spec"]["ports"][0]["nodePort"] = json!(30081);
                s
            },
        ];
        let slices = [slice(
            "web",
            &[("10.88.0.5", true, false, "n1"), ("10.88.0.6", true, false, "n1")],
        )];
        let ports = service_ports(&cfg(), &services, &slices);
        let stale = Existing {
            chains: [
                "services".to_string(),
                "service-deadbeef-default/gone/tcp/p80".to_string(),
            ]
            .into(),
            sets: ["affinity-00000000".to_string(), "service-ips".to_string()].into(),
        };
        let script = render(&cfg(), &ports, &stale);
        let chain = service_chain(&ports[0]);
        assert!(
            script.contains(&format!(
                "add element ip peapod service-ips {{ 10.96.0.10 . tcp . 80 : goto {chain} }}"
            )),
            "{script}"
        );
        assert!(script.contains(&format!(
            "add rule ip peapod {chain} ip saddr != 10.88.0.0/16 jump mark-for-masquerade"
        )));
        assert!(
            script.contains("numgen random mod 2 vmap { 0 : goto endpoint-"),
            "{script}"
        );
        assert!(script.contains("meta l4proto tcp dnat to 10.88.0.6:8080"));
        assert!(script.contains("flags dynamic,timeout; timeout 60s;"));
        assert!(script.contains("update @affinity-"));
        assert!(script.contains("add element ip peapod no-endpoint-services { 10.96.0.11 . tcp . 80 }"));
        assert!(script.contains("add element ip peapod no-endpoint-nodeports { tcp . 30081 }"));
        // What is gone is emptied, then deleted, after the new rules.
        let flush = script
            .find("flush chain ip peapod service-deadbeef-default/gone/tcp/p80")
            .unwrap();
        let delete = script
            .find("delete chain ip peapod service-deadbeef-default/gone/tcp/p80")
            .unwrap();
        assert!(flush < delete);
        assert!(script.contains("delete set ip peapod affinity-00000000"));
        assert!(!script.contains("delete chain ip peapod services"));
        // Rendering is stable: the same input, the same script.
        assert_eq!(script, render(&cfg(), &ports, &stale));
    }

    #[test]
    fn a_change_touches_only_what_changed() {
        let services = [service("web", json!({})), {
            let mut s = service("other", json!({}));
            s["spec"]["clusterIP"] = json!("10.96.0.12");
            s
        }];
        let two = [
            slice(
                "web",
                &[("10.88.0.5", true, false, "n1"), ("10.88.0.6", true, false, "n1")],
            ),
            slice("other", &[("10.88.0.9", true, false, "n1")]),
        ];
        let one = [
            slice("web", &[("10.88.0.5", true, false, "n1")]),
            slice("other", &[("10.88.0.9", true, false, "n1")]),
        ];
        let before = desired(&cfg(), &service_ports(&cfg(), &services, &two));
        let after = desired(&cfg(), &service_ports(&cfg(), &services, &one));
        assert_eq!(
            diff_script(&cfg(), &before, &before),
            "",
            "nothing changed, nothing to do"
        );
        let script = diff_script(&cfg(), &before, &after);
        let web = service_chain(&service_ports(&cfg(), &services, &one)[0]);
        assert!(script.contains(&format!("flush chain ip peapod {web}")), "{script}");
        assert!(script.contains("numgen random mod 1"), "{script}");
        assert!(script.contains("delete chain ip peapod endpoint-"), "{script}");
        assert!(!script.contains("other"), "the other service is not touched: {script}");
        assert!(!script.contains("element"), "no map element changed: {script}");
        // The gone endpoint chain is emptied before, and deleted after, the rules that named it change.
        let gone = script
            .lines()
            .find(|l| l.starts_with("delete chain"))
            .unwrap()
            .replace("delete", "flush");
        assert!(script.find(&gone).unwrap() < script.find("numgen").unwrap());
        // All endpoints gone: the element leaves the map and the port refuses.
        let none = [slice("other", &[("10.88.0.9", true, false, "n1")])];
        let empty = desired(&cfg(), &service_ports(&cfg(), &services, &none));
        let script = diff_script(&cfg(), &after, &empty);
        assert!(
            script.contains("delete element ip peapod service-ips { 10.96.0.10 . tcp . 80 }"),
            "{script}"
        );
        assert!(
            script.contains("add element ip peapod no-endpoint-services { 10.96.0.10 . tcp . 80 }"),
            "{script}"
        );
    }

    #[test]
    fn udp_flows_to_gone_endpoints_and_to_ports_that_got_one_are_deleted() {
        let dns = |eps: &[(&str, bool, bool, &str)]| {
            let mut svc = service("dns", json!({}));
            svc["spec"]["ports"] = json!([{"name": "http", "port": 53, "protocol": "UDP", "targetPort": 5353}]);
            let mut slice = slice("dns", eps);
            slice["ports"][0]["protocol"] = json!("UDP");
            desired(&cfg(), &service_ports(&cfg(), &[svc], &[slice]))
        };
        let empty = dns(&[]);
        let two = dns(&[("10.88.0.5", true, false, "n1"), ("10.88.0.6", true, false, "n1")]);
        let one = dns(&[("10.88.0.6", true, false, "n1")]);
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            stale_udp_flows(&empty, &two),
            [args(&[
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                "10.96.0.10",
                "--orig-port-dst",
                "53"
            ])]
        );
        assert_eq!(
            stale_udp_flows(&two, &one),
            [args(&[
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                "10.96.0.10",
                "--orig-port-dst",
                "53",
                "--dst-nat",
                "10.88.0.5"
            ])]
        );
        assert!(stale_udp_flows(&one, &one).is_empty());
        // TCP flows end with their connections: none are deleted.
        let tcp = desired(
            &cfg(),
            &service_ports(
                &cfg(),
                &[service("web", json!({}))],
                &[slice("web", &[("10.88.0.5", true, false, "n1")])],
            ),
        );
        assert!(stale_udp_flows(&Desired::default(), &tcp).is_empty());
    }

    #[test]
    fn existing_objects_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "peapod"}},
            {"chain": {"family": "ip", "table": "peapod", "name": "services"}},
            {"map": {"family": "ip", "name": "service-ips"}}, {"set": {"family": "ip", "name": "affinity-1"}}]}"#;
        let e = Existing::parse(json);
        assert!(e.chains.contains("services"));
        assert!(e.sets.contains("service-ips") && e.sets.contains("affinity-1"));
    }
}
