//! Cluster DNS: the node's DNS server behind `kube-system/kube-dns`, pods'
//! `resolv.conf` per `dnsPolicy`, headless names of StatefulSet pods,
//! ExternalName aliases, and forwarding of other names to real upstreams
//! (here, another node's DNS server).

use std::time::Duration;

use peapod_tests::{wait_for, Node};
use serde_json::Value;

fn running(node: &Node, pod: &str) -> Value {
    node.wait_pod(pod, "running", Duration::from_secs(90), |p| {
        p["status"]["phase"] == "Running"
    })
}

/// `nslookup NAME` in pod `from` (busybox's, against the pod's nameserver):
/// the addresses it prints after the name, or `None` if the lookup failed.
fn lookup(node: &Node, from: &str, name: &str) -> Option<Vec<String>> {
    let out = node.peapod(&["exec", from, "--", "nslookup", "-type=a", name]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("NXDOMAIN") || text.contains("can't find") {
        return None;
    }
    // The server's own address comes first ("Server:", "Address:"); the answers after "Name:".
    let answers = text.split_once("Name:").map_or("", |(_, a)| a);
    let mut ips: Vec<String> = answers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect();
    ips.sort();
    Some(ips)
}

const CLIENT: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n";

#[test]
fn pods_resolve_services_headless_pods_aliases_and_the_world() {
    // Node `upstream` plays the world's resolver for the node under test:
    // its own DNS server, on loopback, with its own zone.
    let upstream_port = 15300 + std::process::id() % 200;
    let upstream = Node::start_with_args(
        &[
            "--cluster-domain",
            "upstream.test",
            "--dns-listen",
            &format!("127.0.0.1:{upstream_port}"),
        ],
        |_| {},
    );
    let node = Node::start_with_args(&["--dns-upstream", &format!("127.0.0.1:{upstream_port}")], |_| {});

    // kube-dns has the range's tenth address and points at the node's DNS server.
    let dns: Value =
        serde_json::from_str(&node.ok(&["get", "service", "kube-dns", "-n", "kube-system", "-o", "json"])).unwrap();
    let dns_ip = dns["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert_eq!(dns_ip, node.service_cidr().replace(".0/24", ".10"));

    node.apply(CLIENT);
    node.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: nginx}\nspec:\n  clusterIP: None\n  selector: {app: nginx}\n  ports: [{name: web, port: 80}]\n---\n\
apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  serviceName: nginx\n  replicas: 2\n  selector: {matchLabels: {app: nginx}}\n  template:\n    metadata: {labels: {app: nginx}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: front}\nspec:\n  selector: {app: nginx}\n  ports: [{name: http, port: 80}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: alias}\nspec:\n  type: ExternalName\n  externalName: front.default.svc.cluster.local\n",
    );
    running(&node, "client");
    let web0 = running(&node, "web-0")["status"]["podIP"].as_str().unwrap().to_string();
    let web1 = running(&node, "web-1")["status"]["podIP"].as_str().unwrap().to_string();
    let front = node.get("service", "front").unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();

    // The pod's resolv.conf names kube-dns, the cluster's search list and ndots:5.
    let resolv = node.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(
        resolv.lines().next(),
        Some(format!("nameserver {dns_ip}").as_str()),
        "{resolv}"
    );
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("options ndots:5"),
        "{resolv}"
    );
    // A StatefulSet pod's own name, in its hosts file and in DNS.
    let hosts = node.ok(&["exec", "web-0", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{web0}\tweb-0.nginx.default.svc.cluster.local\tweb-0")),
        "{hosts}"
    );
    let mut both = [web0.clone(), web1.clone()];
    both.sort();
    let found = wait_for("web-0's name", Duration::from_secs(30), || {
        lookup(&node, "client", "web-0.nginx.default.svc.cluster.local").filter(|ips| !ips.is_empty())
    });
    assert_eq!(found, std::slice::from_ref(&web0));
    // The headless service: every ready pod; the ClusterIP service: its address.
    wait_for("both pods under the headless name", Duration::from_secs(30), || {
        (lookup(&node, "client", "nginx.default.svc.cluster.local").as_deref() == Some(&both[..])).then_some(())
    });
    assert_eq!(
        lookup(&node, "client", "front.default.svc.cluster.local"),
        Some(vec![front.clone()])
    );
    // The search list makes short names work for the C library too: wget
    // resolves `front` (nothing listens behind it, so it names the address it was refused at).
    let out = node.peapod(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        "timeout 5 wget -qO- http://front/ 2>&1; true",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&front), "short name: {text}");
    // An ExternalName is a CNAME, followed here because its target is in the zone.
    let alias = node.ok(&[
        "exec",
        "client",
        "--",
        "nslookup",
        "-type=cname",
        "alias.default.svc.cluster.local",
    ]);
    assert!(alias.contains("front.default.svc.cluster.local"), "{alias}");
    assert_eq!(
        lookup(&node, "client", "alias.default.svc.cluster.local"),
        Some(vec![front.clone()])
    );
    // A name in the zone that does not exist is NXDOMAIN, not forwarded.
    assert_eq!(lookup(&node, "client", "nothing.default.svc.cluster.local"), None);
    // Everything else goes to the upstream: here the other node's zone.
    let upstream_k8s = upstream.get("service", "kubernetes").unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        lookup(&node, "client", "kubernetes.default.svc.upstream.test"),
        Some(vec![upstream_k8s])
    );

    // dnsPolicy None with dnsConfig; Default takes the host's resolvers.
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: custom}\nspec:\n  dnsPolicy: None\n  dnsConfig: {nameservers: [1.2.3.4], searches: [example.test], options: [{name: ndots, value: '2'}]}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n",
    );
    running(&node, "custom");
    assert_eq!(
        node.ok(&["exec", "custom", "--", "cat", "/etc/resolv.conf"]),
        "nameserver 1.2.3.4\nsearch example.test\noptions ndots:2\n"
    );
}
