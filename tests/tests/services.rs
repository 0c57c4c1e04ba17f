//! Services on a real data path: cluster IPs and node ports allocated by
//! the API, EndpointSlices from pod readiness, nftables rules from the
//! service proxy, and the variables kubelet gives containers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use peapod_tests::{wait_for, Node};
use serde_json::Value;

/// A pod serving its own name at `/` and the client's address at
/// `/cgi-bin/addr` on its port `http` (8080); ready while `/tmp/ready` exists.
fn backend(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command:
    - sh
    - -c
    - |
      mkdir -p /www/cgi-bin
      hostname > /www/index.html
      printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /www/cgi-bin/addr
      chmod +x /www/cgi-bin/addr
      touch /tmp/ready
      exec httpd -f -p 8080 -h /www
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      exec: {{command: [cat, /tmp/ready]}}
      periodSeconds: 1
"#
    )
}

fn client(name: &str, links: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  enableServiceLinks: {links}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600']}}\n"
    )
}

/// `GET path` from the host, or `None` if nothing answers.
fn host_get(addr: &str, path: &str) -> Option<String> {
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string())
}

/// busybox httpd's `REMOTE_ADDR` (`[::ffff:10.0.0.1]`) as an IPv4 address.
fn v4(remote: &str) -> String {
    remote.trim_start_matches("[::ffff:").trim_end_matches(']').to_string()
}

/// `GET url` from inside pod `from`, or `None` if it failed.
fn pod_get(node: &Node, from: &str, url: &str) -> Option<String> {
    // Debian's busybox 1.35 `wget -T` dies of SIGSEGV (on the host too); timeout(1) bounds it instead.
    let out = node.peapod(&["exec", from, "--", "timeout", "5", "wget", "-qO-", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cluster_ip(node: &Node, svc: &str) -> String {
    node.get("service", svc).expect("the service")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_running(node: &Node, pod: &str) -> Value {
    node.wait_pod(pod, "ready", Duration::from_secs(90), |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The ready addresses of the service's slices.
fn ready_endpoints(node: &Node, svc: &str) -> Vec<String> {
    let mut out: Vec<String> = node
        .list("endpointslices", Some(&format!("kubernetes.io/service-name={svc}")))
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[test]
fn a_cluster_ip_balances_over_ready_pods_and_follows_readiness() {
    let node = Node::start();
    node.apply(&backend("web-a"));
    node.apply(&backend("web-b"));
    node.apply(&client("client", true));
    node.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n",
    );
    let ip = cluster_ip(&node, "web");
    let range = node.service_cidr();
    assert!(ip.starts_with(range.trim_end_matches("0/24")), "{ip} from {range}");
    let a_ip = wait_running(&node, "web-a")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let b_ip = wait_running(&node, "web-b")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    wait_running(&node, "client");
    let mut both = vec![a_ip.clone(), b_ip.clone()];
    both.sort();
    wait_for("both pods in the slice", Duration::from_secs(30), || {
        (ready_endpoints(&node, "web") == both).then_some(())
    });
    let endpoints = node.ok(&["get", "endpoints", "web"]);
    assert!(endpoints.contains(&format!("{a_ip}:8080")), "{endpoints}");
    let described = node.ok(&["describe", "svc", "web"]);
    assert!(
        described.contains("Selector:                 app=web")
            && described.contains(&format!("IP:                       {ip}"))
            && described.contains("TargetPort:               http/TCP")
            && described.contains(&format!("{a_ip}:8080"))
            && described.contains(&format!("{b_ip}:8080")),
        "{described}"
    );
    // expose: a service with the pod's labels as its selector.
    assert_eq!(
        node.ok(&[
            "expose",
            "pod",
            "web-a",
            "--port",
            "81",
            "--target-port",
            "http",
            "--name",
            "only-a"
        ])
        .trim(),
        "service/only-a exposed"
    );
    wait_for("the exposed pod in its slice", Duration::from_secs(30), || {
        (ready_endpoints(&node, "only-a") == both).then_some(())
    });
    let svc_line = node.ok(&["get", "svc", "web"]);
    assert!(
        svc_line.contains("ClusterIP") && svc_line.contains(&ip) && svc_line.contains("80/TCP"),
        "{svc_line}"
    );

    // From a pod and from the host, many requests reach both pods.
    let url = format!("http://{ip}/");
    wait_for("the service answering", Duration::from_secs(30), || {
        pod_get(&node, "client", &url)
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(pod_get(&node, "client", &url).expect("a pod reaches the service"));
        seen.insert(host_get(&format!("{ip}:80"), "/").expect("the host reaches the service"));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["web-a", "web-b"]);
    // A pod reaches itself through its service (hairpin).
    let mut own = std::collections::BTreeSet::new();
    for _ in 0..20 {
        own.insert(pod_get(&node, "web-a", &url).expect("a pod reaches its own service"));
    }
    assert!(own.contains("web-a"), "web-a never reached itself: {own:?}");

    // A UDP service: a flow from the host (one source port) that went to
    // web-a; once web-a leaves, the flow is deleted rather than left to
    // carry datagrams into the void until it times out.
    node.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: udp}\nspec:\n  selector: {app: web}\n  ports: [{port: 9999, protocol: UDP}]\n",
    );
    let udp_ip = cluster_ip(&node, "udp");
    wait_for("the UDP service programmed", Duration::from_secs(20), || {
        let rules = std::process::Command::new("nft")
            .args(["list", "map", "ip", &node.proxy_table(), "service-ips"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&rules.stdout)
            .contains(&format!("{udp_ip} . udp . 9999"))
            .then_some(())
    });
    let flow_to = |port: u16| -> Option<String> {
        let out = std::process::Command::new("conntrack")
            .args([
                "-L",
                "-p",
                "udp",
                "--orig-dst",
                &udp_ip,
                "--orig-port-src",
                &port.to_string(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The reply direction's source is the endpoint the flow was sent to.
        text.lines()
            .next()?
            .split_whitespace()
            .filter(|w| w.starts_with("src="))
            .nth(1)
            .map(|w| w[4..].to_string())
    };
    let base = 41000 + (node.net as u16 % 50) * 20;
    let port = (base..base + 20)
        .find(|p| {
            let sock = std::net::UdpSocket::bind(("0.0.0.0", *p)).unwrap();
            sock.send_to(b"x", (udp_ip.as_str(), 9999)).unwrap();
            flow_to(*p).as_deref() == Some(a_ip.as_str())
        })
        .expect("a flow to web-a among 20 source ports");

    // web-a turns unready: it leaves the slice and gets no new connections.
    node.ok(&["exec", "web-a", "--", "rm", "/tmp/ready"]);
    wait_for("the UDP flow to web-a deleted", Duration::from_secs(15), || {
        flow_to(port).is_none().then_some(())
    });
    wait_for("web-a out of the slice", Duration::from_secs(30), || {
        (ready_endpoints(&node, "web") == [b_ip.clone()]).then_some(())
    });
    let ep = node.get("endpoints", "web").unwrap();
    assert_eq!(ep["subsets"][0]["notReadyAddresses"][0]["ip"], a_ip.as_str(), "{ep}");
    wait_for("only web-b answering", Duration::from_secs(20), || {
        (0..10)
            .all(|_| pod_get(&node, "client", &url).as_deref() == Some("web-b"))
            .then_some(())
    });

    // Ready again, then ClientIP affinity: one client keeps one pod.
    node.ok(&["exec", "web-a", "--", "touch", "/tmp/ready"]);
    wait_for("web-a back", Duration::from_secs(30), || {
        (ready_endpoints(&node, "web") == both).then_some(())
    });
    node.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ]);
    let svc = node.get("service", "web").unwrap();
    assert_eq!(
        svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
    assert_eq!(svc["spec"]["clusterIP"], ip.as_str(), "a patch keeps the cluster IP");
    std::thread::sleep(Duration::from_secs(1));
    let first = pod_get(&node, "client", &url).unwrap();
    for _ in 0..15 {
        assert_eq!(pod_get(&node, "client", &url).as_deref(), Some(first.as_str()));
    }

    // The service's variables in containers started after it.
    node.apply(&client("env", true));
    node.apply(&client("nolinks", false));
    wait_running(&node, "env");
    wait_running(&node, "nolinks");
    let env = node.ok(&["exec", "env", "--", "env"]);
    assert!(env.contains(&format!("WEB_SERVICE_HOST={ip}\n")), "{env}");
    assert!(env.contains("WEB_SERVICE_PORT=80\n"), "{env}");
    assert!(env.contains(&format!("WEB_PORT_80_TCP=tcp://{ip}:80\n")), "{env}");
    let kubernetes = cluster_ip(&node, "kubernetes");
    assert!(
        env.contains(&format!("KUBERNETES_PORT=tcp://{kubernetes}:443\n")),
        "{env}"
    );
    let env = node.ok(&["exec", "nolinks", "--", "env"]);
    assert!(!env.contains("WEB_SERVICE_HOST"), "{env}");
    assert!(
        env.contains(&format!("KUBERNETES_SERVICE_HOST={kubernetes}\n")),
        "{env}"
    );

    // A pod relabelled out of the selector leaves the slice.
    node.ok(&["label", "pod", "web-b", "app=elsewhere", "--overwrite"]);
    wait_for("web-b out of the slice", Duration::from_secs(30), || {
        (ready_endpoints(&node, "web") == [a_ip.clone()]).then_some(())
    });

    // Deleted: its slice and rules go, and its address can be had again.
    node.ok(&["delete", "svc", "web"]);
    wait_for("the slices gone", Duration::from_secs(30), || {
        node.list("endpointslices", Some("kubernetes.io/service-name=web"))
            .is_empty()
            .then_some(())
    });
    // (Off the service range's rules, the address is just routed on: no pod answers.)
    wait_for("the service's rules gone", Duration::from_secs(20), || {
        let rules = std::process::Command::new("nft")
            .args(["list", "table", "ip", &node.proxy_table()])
            .output()
            .unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        (!rules.contains(&ip) && !host_get(&format!("{ip}:80"), "/").is_some_and(|b| b.starts_with("web-")))
            .then_some(())
    });
    node.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: again}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: http}}]\n"
    ));
}

#[test]
fn node_ports_traffic_policies_and_allocation_errors() {
    let node = Node::start();
    node.apply(&backend("web-a"));
    node.apply(&client("client", true));
    let port: u16 = node.node_port_range().split('-').next().unwrap().parse().unwrap();
    node.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: np}}\nspec:\n  type: NodePort\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080, nodePort: {port}}}]\n"
    ));
    let pod = wait_running(&node, "web-a");
    let host_ip = pod["status"]["hostIP"].as_str().unwrap().to_string();
    let client_ip = wait_running(&node, "client")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let gateway = {
        let cidr = node.pod_cidr();
        let base = cidr.split('/').next().unwrap();
        format!("{}.1", base.rsplit_once('.').unwrap().0)
    };
    let addr = format!("{host_ip}:{port}");
    let url = format!("http://{addr}/cgi-bin/addr");
    // Reachable on the node's address, from the host and from a pod; with
    // the Cluster policy the source is masqueraded to the node's.
    assert_eq!(
        wait_for("the node port answering", Duration::from_secs(30), || host_get(
            &addr, "/"
        )),
        "web-a"
    );
    let seen = wait_for("a pod reaching the node port", Duration::from_secs(20), || {
        pod_get(&node, "client", &url)
    });
    assert_eq!(v4(&seen), gateway, "masqueraded to the node's bridge address");
    // externalTrafficPolicy: Local keeps the client's address.
    node.ok(&[
        "patch",
        "svc",
        "np",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let svc = node.get("service", "np").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], port, "a patch keeps the node port");
    wait_for("the client's own address", Duration::from_secs(20), || {
        (pod_get(&node, "client", &url).map(|a| v4(&a)).as_deref() == Some(client_ip.as_str())).then_some(())
    });
    let line = node.ok(&["get", "svc", "np"]);
    assert!(line.contains(&format!("80:{port}/TCP")), "{line}");

    // Allocation errors, with the field and Kubernetes' words.
    let dir = tempfile::Builder::new().prefix("pp-svc-").tempdir_in("/tmp").unwrap();
    let refused = |yaml: String| {
        let file = dir.path().join("svc.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = node.peapod(&["apply", "-f", &file.display().to_string()]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let service =
        |name: &str, spec: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}");
    let err = refused(service(
        "taken",
        &format!("  type: NodePort\n  ports: [{{port: 80, nodePort: {port}}}]\n"),
    ));
    assert!(
        err.contains(&format!(
            "spec.ports[0].nodePort: Invalid value: \"{port}\": provided port is already allocated"
        )),
        "{err}"
    );
    let err = refused(service("outside", "  clusterIP: 10.1.2.3\n  ports: [{port: 80}]\n"));
    assert!(
        err.contains(&format!(
            "the provided IP (10.1.2.3) is not in the valid range. The range of valid IPs is {}",
            node.service_cidr()
        )),
        "{err}"
    );
    let err = refused(service(
        "low",
        "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n",
    ));
    assert!(err.contains("provided port is not in the valid range"), "{err}");
    assert!(node.get("service", "low").is_none() && node.get("service", "outside").is_none());

    // Back to ClusterIP: the node port is free for another service.
    node.ok(&[
        "patch",
        "svc",
        "np",
        "-p",
        r#"{"spec":{"type":"ClusterIP","externalTrafficPolicy":null}}"#,
    ]);
    wait_for("the node port closed", Duration::from_secs(20), || {
        host_get(&addr, "/").is_none().then_some(())
    });
    assert!(node.get("service", "np").unwrap()["spec"]["ports"][0]["nodePort"].is_null());
    node.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: next}}\nspec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {port}}}]\n"
    ));
}

#[test]
fn services_without_selector_use_hand_written_slices_or_endpoints_and_survive_a_daemon_kill() {
    let mut node = Node::start();
    node.apply(&backend("web-a"));
    let pod_ip = wait_running(&node, "web-a")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    node.apply("apiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec:\n  ports: [{name: web, port: 8000}]\n");
    let ip = cluster_ip(&node, "manual");
    let addr = format!("{ip}:8000");
    // No endpoints: refused at once, not left to time out.
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let refused = wait_for(
        "a refusal",
        Duration::from_secs(20),
        || match TcpStream::connect_timeout(&sock, Duration::from_secs(2)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(e),
            _ => None,
        },
    );
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    node.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: manual-1\n  labels: {{kubernetes.io/service-name: manual}}\naddressType: IPv4\nports: [{{name: web, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [{pod_ip}]\n"
    ));
    assert_eq!(
        wait_for("the hand-written endpoint", Duration::from_secs(30), || host_get(
            &addr, "/"
        )),
        "web-a"
    );
    assert_eq!(
        node.list("endpointslices", Some("kubernetes.io/service-name=manual"))
            .len(),
        1
    );

    // The older way: Endpoints written by hand, mirrored into a slice.
    node.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: legacy}}\nspec:\n  ports: [{{port: 8001, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: legacy}}\nsubsets:\n- addresses: [{{ip: {pod_ip}}}]\n  ports: [{{port: 8080}}]\n"
    ));
    let legacy = format!("{}:8001", cluster_ip(&node, "legacy"));
    assert_eq!(
        wait_for("the mirrored endpoint", Duration::from_secs(30), || host_get(
            &legacy, "/"
        )),
        "web-a"
    );
    let mirrored = node.list("endpointslices", Some("kubernetes.io/service-name=legacy"));
    assert_eq!(mirrored.len(), 1, "{mirrored:?}");
    assert_eq!(
        mirrored[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io"
    );
    node.ok(&["delete", "endpoints", "legacy"]);
    wait_for("the mirrored slice gone", Duration::from_secs(30), || {
        node.list("endpointslices", Some("kubernetes.io/service-name=legacy"))
            .is_empty()
            .then_some(())
    });
    // The node's own services are not mirrored twice.
    assert_eq!(
        node.list("endpointslices", Some("kubernetes.io/service-name=kubernetes"))
            .len(),
        1
    );

    // A connection open through a cluster IP across the daemon's death and return.
    node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: echo, labels: {app: echo}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox:1.35, command: [nc, -ll, -p, '7000', -e, cat]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  selector: {app: echo}\n  ports: [{port: 7000}]\n",
    );
    let echo_addr = format!("{}:7000", cluster_ip(&node, "echo"));
    let mut conn = wait_for("the echo service", Duration::from_secs(60), || {
        let mut c = TcpStream::connect_timeout(&echo_addr.parse().unwrap(), Duration::from_secs(2)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = [0u8; 2];
        c.write_all(b"a\n").ok()?;
        c.read_exact(&mut buf).ok()?;
        (&buf == b"a\n").then_some(c)
    });
    let mut echo = |line: &[u8; 2]| {
        let mut buf = [0u8; 2];
        conn.write_all(line).unwrap();
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, line);
    };

    // The daemon killed: traffic keeps flowing; back, it programs the same rules, once.
    let table = node.proxy_table();
    let rules = || {
        let out = std::process::Command::new("nft")
            .args(["list", "table", "ip", &table])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = rules();
    assert!(before.contains(&format!("dnat to {pod_ip}:8080")), "{before}");
    node.kill_daemon();
    for _ in 0..5 {
        assert_eq!(
            host_get(&addr, "/").as_deref(),
            Some("web-a"),
            "served while the daemon is down"
        );
    }
    echo(b"b\n");
    node.start_daemon();
    wait_for("the proxy synced", Duration::from_secs(30), || {
        let tree = node.tree().to_string();
        tree.contains("ServiceProxy")
            .then_some(())
            .filter(|_| tree.contains("Synced"))
    });
    // (Pods are re-adopted meanwhile; the rules settle back to what they were.)
    wait_for("the same rules, not duplicated", Duration::from_secs(30), || {
        (rules() == before).then_some(())
    });
    assert_eq!(host_get(&addr, "/").as_deref(), Some("web-a"));
    echo(b"c\n");

    // `peapod daemon --cleanup` takes the rules away (the daemon stopped first).
    node.kill_daemon();
    let out = node.peapod(&["daemon", "--cleanup", "--service-proxy-table", &table]);
    assert!(out.status.success(), "{out:?}");
    assert!(rules().is_empty(), "the table is gone");
    node.start_daemon();
}
