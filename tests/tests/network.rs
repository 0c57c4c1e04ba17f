//! End-to-end pod networking through the real CNI plugins: pod IPs, pod to
//! pod traffic, hostPort, and DEL leaving nothing behind (also after a
//! daemon kill -9).

use peapod_tests::{wait_for, Node};
use std::io::{Read, Write};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn pod_ip(p: &serde_json::Value) -> Option<String> {
    p["status"]["podIP"].as_str().map(str::to_string)
}

/// The veths attached to the node's bridge.
fn bridge_ports(node: &Node) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &node.bridge()])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// host-local's leases: one file per allocated address.
fn leases(node: &Node) -> Vec<String> {
    let mut found = Vec::new();
    for net in std::fs::read_dir(node.root().join("cni/ipam"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                found.push(name);
            }
        }
    }
    found
}

fn server_pod(name: &str, host_port: Option<u32>) -> String {
    let host_port = host_port.map(|p| format!(", hostPort: {p}")).unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:1.35
    command: ["sh", "-c", "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
    - {{containerPort: 8080{host_port}}}
"#
    )
}

fn http_get(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

#[test]
fn pods_reach_each_other_by_ip_and_dels_clean_up() {
    let node = Node::start();
    node.apply(&server_pod("web", None));
    let web = node.wait_pod("web", "web has an IP and runs", MIN, |p| {
        pod_ip(p).is_some() && p["status"]["phase"] == "Running"
    });
    let ip = pod_ip(&web).unwrap();
    assert!(ip.starts_with(&format!("10.99.{}.", node.net)), "pod IP {ip}");
    assert_eq!(web["status"]["podIPs"][0]["ip"], ip.as_str());
    assert!(web["status"]["hostIP"].as_str().is_some_and(|h| !h.is_empty()));
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "ip -4 -o addr show eth0; ping -c 1 -W 5 {ip} && until timeout 5 wget -q -O- http://{ip}:8080/index.html; do sleep 0.5; done"]
"#
    ));
    let client = node.wait_pod("client", "client finished", MIN, |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    let logs = node.ok(&["logs", "client"]);
    assert_eq!(client["status"]["phase"], "Succeeded", "client logs: {logs}");
    assert!(logs.contains("1 packets received"), "{logs}");
    assert!(logs.contains("served-by-web"), "{logs}");
    let client_ip = pod_ip(&client).unwrap();
    assert_ne!(client_ip, ip);
    assert!(logs.contains(&format!("inet {client_ip}/24")), "{logs}");
    // The finished client already gave its address back; the server holds one.
    wait_for("client's lease released", MIN, || {
        (leases(&node) == [ip.clone()]).then_some(())
    });
    assert_eq!(bridge_ports(&node).len(), 1, "{:?}", bridge_ports(&node));
    node.ok(&["delete", "pod", "web", "client"]);
    assert!(bridge_ports(&node).is_empty(), "{:?}", bridge_ports(&node));
    assert!(leases(&node).is_empty(), "{:?}", leases(&node));
}

#[test]
fn host_port_reaches_the_pod_from_localhost() {
    let node = Node::start();
    let port = 18000 + node.net;
    node.apply(&server_pod("hp", Some(port)));
    node.wait_pod("hp", "running", MIN, |p| p["status"]["phase"] == "Running");
    let body = wait_for("hostPort answers", MIN, || {
        let addr = format!("127.0.0.1:{port}");
        std::net::TcpStream::connect(&addr)
            .ok()
            .map(|_| http_get(&addr))
            .filter(|b| b.contains("served-by-hp"))
    });
    assert!(body.starts_with("HTTP/1."), "{body}");
    node.ok(&["delete", "pod", "hp"]);
    assert!(
        std::net::TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().unwrap(), Duration::from_secs(2))
            .map(|_| http_get(&format!("127.0.0.1:{port}")))
            .map_or(true, |b| !b.contains("served-by-hp")),
        "hostPort still forwarded after delete"
    );
}

#[test]
fn network_survives_daemon_kill_and_is_released_after() {
    let mut node = Node::start();
    node.apply(&server_pod("keep", None));
    let before = node.wait_pod("keep", "running with an IP", MIN, |p| {
        pod_ip(p).is_some() && p["status"]["phase"] == "Running"
    });
    let ip = pod_ip(&before).unwrap();
    node.kill_daemon();
    node.start_daemon();
    // Same address, reachable from the host through the bridge, nothing added.
    let body = wait_for("pod still serves", MIN, || {
        Some(http_get(&format!("{ip}:8080"))).filter(|b| b.contains("served-by-keep"))
    });
    assert!(body.contains("served-by-keep"));
    let after = node.wait_pod("keep", "status rewritten", MIN, |p| pod_ip(p).is_some());
    assert_eq!(pod_ip(&after), Some(ip.clone()));
    let uid = after["metadata"]["uid"].as_str().unwrap().to_string();
    let log = std::fs::read_to_string(node.dir.path().join("daemon.log")).unwrap();
    assert!(log.contains(&format!("pod {uid}: CNI CHECK passed")), "{log}");
    assert_eq!(leases(&node), [ip]);
    assert_eq!(bridge_ports(&node).len(), 1);
    node.ok(&["delete", "pod", "keep"]);
    assert!(bridge_ports(&node).is_empty(), "{:?}", bridge_ports(&node));
    assert!(leases(&node).is_empty(), "{:?}", leases(&node));
}

/// Pods reach what is outside the node through one masquerade rule for the
/// pod CIDR (no per-pod iptables chains): a peer in another network sees
/// the node's address, never the pod's.
#[test]
fn traffic_leaving_the_node_is_masqueraded() {
    let node = Node::start();
    let ns = format!("ppout{}", node.net);
    let (host_if, peer_if) = (format!("ppo{}a", node.net), format!("ppo{}b", node.net));
    let (host_ip, peer_ip) = (
        format!("192.168.{}.1", 100 + node.net % 100),
        format!("192.168.{}.2", 100 + node.net % 100),
    );
    struct Outside(String, String);
    impl Drop for Outside {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["link", "del", &self.1]).status();
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _outside = Outside(ns.clone(), host_if.clone());
    let sh = |cmd: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd}");
    };
    sh(&format!("ip netns add {ns}"));
    sh(&format!("ip link add {host_if} type veth peer name {peer_if}"));
    sh(&format!("ip link set {peer_if} netns {ns}"));
    sh(&format!(
        "ip addr add {host_ip}/24 dev {host_if} && ip link set {host_if} up"
    ));
    sh(&format!(
        "ip netns exec {ns} sh -c 'ip addr add {peer_ip}/24 dev {peer_if} && ip link set {peer_if} up && ip link set lo up && ip route add default via {host_ip}'"
    ));
    let rules = String::from_utf8_lossy(
        &std::process::Command::new("iptables")
            .args(["-t", "nat", "-S", "POSTROUTING"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        rules.contains(&format!("peapod {} masquerade", node.bridge())),
        "{rules}"
    );
    // The peer prints the source address it sees.
    let mut listener = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{peer_ip}', 9000)); s.listen(1); c, a = s.accept(); print(a[0], flush=True)"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: egress}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sh, -c, 'until echo hi | nc -w 2 {peer_ip} 9000; do sleep 0.5; done']}}\n"
    ));
    let p = node.wait_pod("egress", "done", MIN, |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    let mut seen = String::new();
    use std::io::Read;
    listener.stdout.take().unwrap().read_to_string(&mut seen).unwrap();
    let _ = listener.wait();
    let pod_ip = p["status"]["podIP"].as_str().unwrap_or("").to_string();
    assert_eq!(seen.trim(), host_ip, "masqueraded to the node's address, not {pod_ip}");
    assert!(
        !String::from_utf8_lossy(
            &std::process::Command::new("iptables")
                .args(["-t", "nat", "-S"])
                .output()
                .unwrap()
                .stdout
        )
        .contains(&format!("{pod_ip}/32")),
        "no per-pod rule"
    );
}
