//! A pod's `/etc/resolv.conf` and `/etc/hosts`, as kubelet writes them
//! (`GetPodDNS`, `ensureHostsFile`): the DNS policy decides between the
//! cluster's DNS and the host's resolvers, `dnsConfig` adds to either, and
//! `hostAliases` and the pod's own FQDN go into `hosts`.

use k8s_openapi::api::core::v1::Pod;

/// The cluster's DNS as pods see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The `kube-dns` service's address.
    pub nameserver: String,
    /// The cluster's zone (`cluster.local`).
    pub domain: String,
}

/// kubelet's limits: resolvers read at most three nameservers; the search
/// list is capped (glibc ≥ 2.26 reads 32 domains).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

#[derive(Debug, Default)]
struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

fn parse(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.nameservers.extend(words.next().map(str::to_string)),
            // The last search (or domain) line wins, as in resolv.conf(5).
            Some("search") | Some("domain") => r.searches = words.map(str::to_string).collect(),
            Some("options") => {
                for o in words {
                    set_option(&mut r.options, o);
                }
            }
            _ => {}
        }
    }
    r
}

fn set_option(options: &mut Vec<(String, Option<String>)>, text: &str) {
    let (name, value) = match text.split_once(':') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (text.to_string(), None),
    };
    match options.iter_mut().find(|(n, _)| *n == name) {
        Some(o) => o.1 = value,
        None => options.push((name, value)),
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|i| i == item) {
        list.push(item.to_string());
    }
}

/// The pod's `resolv.conf`, from its `dnsPolicy` and `dnsConfig`, the host's
/// `resolv.conf` and the cluster's DNS (none: `ClusterFirst` falls back to
/// the host's, as kubelet without `--cluster-dns`).
pub fn resolv_conf(pod: &Pod, host: &str, cluster: Option<&ClusterDns>) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let use_cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut r = match (policy, cluster) {
        ("None", _) => Resolv::default(),
        (_, Some(c)) if use_cluster => {
            let host = parse(host);
            let mut searches = vec![
                format!("{ns}.svc.{}", c.domain),
                format!("svc.{}", c.domain),
                c.domain.clone(),
            ];
            for s in &host.searches {
                push_unique(&mut searches, s);
            }
            Resolv {
                nameservers: vec![c.nameserver.clone()],
                searches,
                options: vec![("ndots".into(), Some("5".into()))],
            }
        }
        _ => parse(host),
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        for n in cfg.nameservers.iter().flatten() {
            push_unique(&mut r.nameservers, n);
        }
        for s in cfg.searches.iter().flatten() {
            push_unique(&mut r.searches, s);
        }
        for o in cfg.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            match &o.value {
                Some(v) => set_option(&mut r.options, &format!("{name}:{v}")),
                None => set_option(&mut r.options, &name),
            }
        }
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    for n in &r.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    if !r.options.is_empty() {
        let opts: Vec<String> = r
            .options
            .iter()
            .map(|(n, v)| v.as_ref().map_or_else(|| n.clone(), |v| format!("{n}:{v}")))
            .collect();
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// The pod's `hosts`: localhost, its own address under its hostname (and
/// `<hostname>.<subdomain>.<ns>.svc.<zone>` with a subdomain), then its
/// `hostAliases`.
pub fn hosts_file(pod: &Pod, own_ip: &str, hostname: &str, domain: Option<&str>) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file (peapod).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    let spec = pod.spec.as_ref();
    let subdomain = spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty());
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    match (subdomain, domain) {
        (Some(sub), Some(d)) => out.push_str(&format!("{own_ip}\t{hostname}.{sub}.{ns}.svc.{d}\t{hostname}\n")),
        _ => out.push_str(&format!("{own_ip}\t{hostname}\n")),
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref()).filter(|a| !a.is_empty());
    if let Some(aliases) = aliases {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.clone().unwrap_or_default();
            if !names.is_empty() {
                out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec})).unwrap()
    }

    const HOST: &str = "nameserver 10.255.255.53\nsearch corp.example\noptions edns0\n";

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameserver: "10.96.0.10".into(),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn policies_pick_the_resolvers() {
        let c = cluster();
        assert_eq!(
            resolv_conf(&pod(json!({"containers": []})), HOST, Some(&c)),
            "nameserver 10.96.0.10\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&pod(json!({"dnsPolicy": "Default"})), HOST, Some(&c)), HOST);
        assert!(resolv_conf(&pod(json!({"hostNetwork": true})), HOST, Some(&c)).starts_with("nameserver 10.255.255.53"));
        assert!(resolv_conf(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            HOST,
            Some(&c)
        )
        .starts_with("nameserver 10.96.0.10"));
        assert!(
            resolv_conf(&pod(json!({})), HOST, None).starts_with("nameserver 10.255.255.53"),
            "no cluster DNS"
        );
        let none = pod(json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.2.3.4"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]}}));
        assert_eq!(
            resolv_conf(&none, HOST, Some(&c)),
            "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 single-request\n"
        );
        let merged =
            pod(json!({"dnsConfig": {"nameservers": ["1.2.3.4"], "options": [{"name": "ndots", "value": "1"}]}}));
        assert_eq!(
            resolv_conf(&merged, HOST, Some(&c)),
            "nameserver 10.96.0.10\nnameserver 1.2.3.4\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:1\n"
        );
    }

    #[test]
    fn hosts_carry_the_fqdn_and_aliases() {
        let p = pod(json!({"hostname": "web-0", "subdomain": "nginx",
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}));
        let hosts = hosts_file(&p, "10.88.0.5", "web-0", Some("cluster.local"));
        assert!(
            hosts.contains("10.88.0.5\tweb-0.nginx.team.svc.cluster.local\tweb-0\n"),
            "{hosts}"
        );
        assert!(
            hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"),
            "{hosts}"
        );
        let plain = hosts_file(&pod(json!({})), "10.88.0.6", "p", Some("cluster.local"));
        assert!(plain.ends_with("10.88.0.6\tp\n"), "{plain}");
    }
}
