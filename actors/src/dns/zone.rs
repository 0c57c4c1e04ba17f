//! The cluster's DNS names, after the Kubernetes DNS specification (the
//! records CoreDNS's `kubernetes` plugin serves), built from Services and
//! their EndpointSlices:
//!
//! - `<svc>.<ns>.svc.<zone>`: A of the cluster IP; of a headless service,
//!   its ready endpoints (all of them with `publishNotReadyAddresses`); of
//!   an ExternalName, a CNAME to the external name.
//! - `<host>.<svc>.<ns>.svc.<zone>`: A of a headless service's endpoint, by
//!   its `hostname` (StatefulSet pods: `web-0`) or its dashed address.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV per named port (to the
//!   service name, or to each endpoint of a headless service).
//! - `<a-b-c-d>.<ns>.pod.<zone>`: A of that address.
//! - PTR of cluster IPs and of headless endpoints.
//!
//! A name in the zone that is none of these does not exist (NXDOMAIN, with
//! the zone's SOA); a name outside it is not ours (forwarded).

use hickory_server::proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// CoreDNS's default TTL for cluster names.
pub const TTL: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    /// `tcp`, `udp` or `sctp`.
    protocol: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    ip: Ipv4Addr,
    /// The label it is known by under its service.
    host: String,
    ready: bool,
    ports: Vec<Port>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Service {
    cluster_ip: Option<Ipv4Addr>,
    headless: bool,
    external: Option<String>,
    publish_not_ready: bool,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

/// What a name asked for is.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Records of the type asked for, and helpful ones (SRV targets' addresses).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// An alias (an ExternalName): the CNAME, and the name to resolve for
    /// the type asked (boxed: a record is large beside the other variants).
    Alias { cname: Box<Record>, target: Name },
    /// The name exists, without records of that type.
    NoData,
    /// The name is in the zone and does not exist.
    NxDomain,
    /// Not a name of the zone: ask the upstream resolvers.
    Elsewhere,
}

/// The cluster's names as of the last change.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// `cluster.local`, lower case, without a trailing dot.
    domain: String,
    services: BTreeMap<(String, String), Service>,
}

fn protocol(p: &Value) -> String {
    p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase()
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

impl Zone {
    /// The zone `domain` from the services and slices as they are.
    pub fn build(domain: &str, services: &[Value], slices: &[Value]) -> Zone {
        let mut out = Zone {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            services: BTreeMap::new(),
        };
        for svc in services {
            let spec = &svc["spec"];
            let key = (
                svc["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
                svc["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            let ip = spec["clusterIP"].as_str().unwrap_or("");
            let external = (spec["type"] == "ExternalName")
                .then(|| {
                    spec["externalName"]
                        .as_str()
                        .map(|n| n.trim_end_matches('.').to_string())
                })
                .flatten();
            out.services.insert(
                key,
                Service {
                    cluster_ip: ip.parse().ok(),
                    headless: ip == "None",
                    external,
                    publish_not_ready: spec["publishNotReadyAddresses"] == true,
                    ports: spec["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| {
                            Some(Port {
                                name: p["name"].as_str().unwrap_or("").to_string(),
                                protocol: protocol(p),
                                port: u16::try_from(p["port"].as_u64()?).ok()?,
                            })
                        })
                        .collect(),
                    endpoints: Vec::new(),
                },
            );
        }
        for slice in slices {
            let ns = slice["metadata"]["namespace"].as_str().unwrap_or("");
            let Some(name) = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str() else {
                continue;
            };
            let Some(svc) = out.services.get_mut(&(ns.to_string(), name.to_string())) else {
                continue;
            };
            if slice["addressType"] != "IPv4" {
                continue;
            }
            let ports: Vec<Port> = slice["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p["name"].as_str().unwrap_or("").to_string(),
                        protocol: protocol(p),
                        port: u16::try_from(p["port"].as_u64()?).ok()?,
                    })
                })
                .collect();
            for e in slice["endpoints"].as_array().into_iter().flatten() {
                for a in e["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    let Ok(ip) = a.parse::<Ipv4Addr>() else { continue };
                    let host = e["hostname"]
                        .as_str()
                        .filter(|h| !h.is_empty())
                        .map_or_else(|| dashed(ip), str::to_string);
                    svc.endpoints.push(Endpoint {
                        ip,
                        host,
                        ready: e["conditions"]["ready"] != false,
                        ports: ports.clone(),
                    });
                }
            }
        }
        for svc in out.services.values_mut() {
            svc.endpoints.sort_by_key(|e| e.ip);
            svc.endpoints.dedup_by_key(|e| e.ip);
        }
        out
    }

    fn fqdn(&self, labels: &[&str]) -> Name {
        let text = format!("{}.{}.", labels.join("."), self.domain);
        Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
    }

    /// The zone's SOA, for negative answers.
    pub fn soa(&self) -> Record {
        let apex = Name::from_ascii(format!("{}.", self.domain)).unwrap_or_else(|_| Name::root());
        let ns = self.fqdn(&["ns", "dns"]);
        let mail = self.fqdn(&["hostmaster"]);
        Record::from_rdata(apex, TTL, RData::SOA(SOA::new(ns, mail, 1, 7200, 1800, 86400, TTL)))
    }

    /// The answer to `name` (any case, with or without its trailing dot) for `qtype`.
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let text = name.to_ascii().to_ascii_lowercase();
        let text = text.trim_end_matches('.');
        if let Some(reverse) = text.strip_suffix(".in-addr.arpa") {
            return self.reverse(name, reverse, qtype);
        }
        let rel = if text == self.domain {
            ""
        } else if let Some(r) = text.strip_suffix(&format!(".{}", self.domain)) {
            r
        } else {
            return Lookup::Elsewhere;
        };
        let mut labels: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('.').collect()
        };
        labels.reverse();
        let a = |ip: Ipv4Addr| Record::from_rdata(name.clone(), TTL, RData::A(A(ip)));
        match labels.as_slice() {
            [] | ["svc"] | ["pod"] => Lookup::NoData,
            ["svc", ns] | ["pod", ns] => {
                if self.services.keys().any(|(n, _)| n == ns) {
                    Lookup::NoData
                } else {
                    Lookup::NxDomain
                }
            }
            ["pod", _ns, ip] => match ip.replace('-', ".").parse::<Ipv4Addr>() {
                Ok(ip) if qtype == RecordType::A => Lookup::Records {
                    answers: vec![a(ip)],
                    additionals: Vec::new(),
                },
                Ok(_) => Lookup::NoData,
                Err(_) => Lookup::NxDomain,
            },
            ["svc", ns, svc] => {
                let Some(s) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Lookup::NxDomain;
                };
                if let Some(target) = &s.external {
                    let Ok(target) = Name::from_ascii(format!("{target}.")) else {
                        return Lookup::NoData;
                    };
                    let cname = Record::from_rdata(name.clone(), TTL, RData::CNAME(CNAME(target.clone())));
                    return Lookup::Alias {
                        cname: Box::new(cname),
                        target,
                    };
                }
                match qtype {
                    RecordType::A => {
                        let ips: Vec<Ipv4Addr> = match s.cluster_ip {
                            Some(ip) => vec![ip],
                            None => s.visible().map(|e| e.ip).collect(),
                        };
                        records(ips.into_iter().map(a).collect(), Vec::new())
                    }
                    RecordType::SRV => self.srv(name, ns, svc, s, None),
                    _ => Lookup::NoData,
                }
            }
            ["svc", ns, svc, host] => {
                let Some(s) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Lookup::NxDomain;
                };
                match s.visible().find(|e| e.host == *host).filter(|_| s.headless) {
                    Some(e) if qtype == RecordType::A => records(vec![a(e.ip)], Vec::new()),
                    Some(_) => Lookup::NoData,
                    None => Lookup::NxDomain,
                }
            }
            ["svc", ns, svc, proto, port] if proto.starts_with('_') && port.starts_with('_') => {
                let Some(s) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Lookup::NxDomain;
                };
                let wanted = (&port[1..], &proto[1..]);
                if !s.ports.iter().any(|p| p.name == wanted.0 && p.protocol == wanted.1) {
                    return Lookup::NxDomain;
                }
                if qtype == RecordType::SRV {
                    self.srv(name, ns, svc, s, Some(wanted))
                } else {
                    Lookup::NoData
                }
            }
            _ => Lookup::NxDomain,
        }
    }

    /// SRV records of a service's named ports (or of one): to the service
    /// name, or for a headless service to each endpoint's own name, with
    /// their addresses as additional records.
    fn srv(&self, name: &Name, ns: &str, svc: &str, s: &Service, only: Option<(&str, &str)>) -> Lookup {
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let ports = s
            .ports
            .iter()
            .filter(|p| !p.name.is_empty())
            .filter(|p| only.is_none_or(|(n, proto)| p.name == n && p.protocol == proto));
        for p in ports {
            if let Some(ip) = s.cluster_ip {
                let target = self.fqdn(&[svc, ns, "svc"]);
                answers.push(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, 100, p.port, target.clone())),
                ));
                additionals.push(Record::from_rdata(target, TTL, RData::A(A(ip))));
            } else {
                let visible: Vec<&Endpoint> = s.visible().collect();
                let weight = u16::try_from(100 / visible.len().max(1)).unwrap_or(100);
                for e in visible {
                    // The endpoint's own port for this name (a named targetPort may differ per pod).
                    let port = e
                        .ports
                        .iter()
                        .find(|ep| ep.name == p.name && ep.protocol == p.protocol)
                        .map_or(p.port, |ep| ep.port);
                    let target = self.fqdn(&[&e.host, svc, ns, "svc"]);
                    answers.push(Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, weight, port, target.clone())),
                    ));
                    additionals.push(Record::from_rdata(target, TTL, RData::A(A(e.ip))));
                }
            }
        }
        records(answers, additionals)
    }

    fn reverse(&self, name: &Name, reverse: &str, qtype: RecordType) -> Lookup {
        let mut octets: Vec<&str> = reverse.split('.').collect();
        octets.reverse();
        let Ok(ip) = octets.join(".").parse::<Ipv4Addr>() else {
            return Lookup::Elsewhere;
        };
        let ptr = |target: Name| Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(target)));
        for ((ns, svc), s) in &self.services {
            if s.cluster_ip == Some(ip) {
                return if qtype == RecordType::PTR {
                    records(vec![ptr(self.fqdn(&[svc, ns, "svc"]))], Vec::new())
                } else {
                    Lookup::NoData
                };
            }
            if s.headless {
                if let Some(e) = s.visible().find(|e| e.ip == ip) {
                    return if qtype == RecordType::PTR {
                        records(vec![ptr(self.fqdn(&[&e.host, svc, ns, "svc"]))], Vec::new())
                    } else {
                        Lookup::NoData
                    };
                }
            }
        }
        Lookup::Elsewhere
    }
}

impl Service {
    /// The endpoints a name shows: the ready ones, or all with `publishNotReadyAddresses`.
    fn visible(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.ready || self.publish_not_ready)
    }
}

/// Records, or no data when there are none (a headless service without ready endpoints).
fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Lookup {
    if answers.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Records { answers, additionals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let services = [
            json!({"metadata": {"namespace": "default", "name": "web"},
                   "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20",
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
            json!({"metadata": {"namespace": "default", "name": "nginx"},
                   "spec": {"type": "ClusterIP", "clusterIP": "None",
                            "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}}),
            json!({"metadata": {"namespace": "default", "name": "db"},
                   "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
        ];
        let slices = [json!({
            "metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": "nginx"}},
            "addressType": "IPv4",
            "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.88.0.5"], "hostname": "web-0", "conditions": {"ready": true}},
                {"addresses": ["10.88.0.6"], "hostname": "web-1", "conditions": {"ready": true}},
                {"addresses": ["10.88.0.7"], "conditions": {"ready": false}},
            ],
        })];
        Zone::build("cluster.local", &services, &slices)
    }

    fn name(n: &str) -> Name {
        Name::from_ascii(n).unwrap()
    }

    fn addresses(l: Lookup) -> Vec<String> {
        match l {
            Lookup::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    #[test]
    fn services_headless_endpoints_and_pods() {
        let z = zone();
        assert_eq!(
            addresses(z.lookup(&name("web.default.svc.cluster.local."), RecordType::A)),
            ["10.96.0.20"]
        );
        assert_eq!(
            addresses(z.lookup(&name("WEB.Default.svc.cluster.local"), RecordType::A)),
            ["10.96.0.20"]
        );
        assert_eq!(
            addresses(z.lookup(&name("nginx.default.svc.cluster.local."), RecordType::A)),
            ["10.88.0.5", "10.88.0.6"],
            "a headless service: its ready endpoints"
        );
        assert_eq!(
            addresses(z.lookup(&name("web-0.nginx.default.svc.cluster.local."), RecordType::A)),
            ["10.88.0.5"]
        );
        assert_eq!(
            z.lookup(&name("10-88-0-7.nginx.default.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain,
            "not ready"
        );
        assert_eq!(
            z.lookup(&name("web.default.svc.cluster.local."), RecordType::AAAA),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup(&name("nope.default.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            z.lookup(&name("default.svc.cluster.local."), RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            addresses(z.lookup(&name("10-1-2-3.default.pod.cluster.local."), RecordType::A)),
            ["10.1.2.3"]
        );
        assert_eq!(z.lookup(&name("example.com."), RecordType::A), Lookup::Elsewhere);
    }

    #[test]
    fn srv_ptr_and_external_names() {
        let z = zone();
        let srv = addresses(z.lookup(&name("_http._tcp.web.default.svc.cluster.local."), RecordType::SRV));
        assert_eq!(srv, ["0 100 80 web.default.svc.cluster.local."]);
        let srv = addresses(z.lookup(&name("_web._tcp.nginx.default.svc.cluster.local."), RecordType::SRV));
        assert_eq!(
            srv,
            [
                "0 50 8080 web-0.nginx.default.svc.cluster.local.",
                "0 50 8080 web-1.nginx.default.svc.cluster.local."
            ]
        );
        assert_eq!(
            z.lookup(&name("_x._tcp.web.default.svc.cluster.local."), RecordType::SRV),
            Lookup::NxDomain
        );
        assert_eq!(
            addresses(z.lookup(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR)),
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(
            addresses(z.lookup(&name("5.0.88.10.in-addr.arpa."), RecordType::PTR)),
            ["web-0.nginx.default.svc.cluster.local."]
        );
        assert_eq!(
            z.lookup(&name("1.1.1.1.in-addr.arpa."), RecordType::PTR),
            Lookup::Elsewhere
        );
        match z.lookup(&name("db.default.svc.cluster.local."), RecordType::A) {
            Lookup::Alias { cname, target } => {
                assert_eq!(target.to_ascii(), "db.example.com.");
                assert_eq!(cname.data.to_string(), "db.example.com.");
            }
            other => panic!("{other:?}"),
        }
    }
}
