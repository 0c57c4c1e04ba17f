//! Three nodes on one etcd cluster, each daemon in a network namespace of
//! its own: one scheduler and one controller set for the cluster, replicas
//! spread over the nodes, every node answering for the whole cluster (its
//! pods' logs and exec included), a dead node's pods replaced elsewhere, a
//! dead leader replaced, and pod ranges claimed from the cluster CIDR.

use peapod_tests::cluster::{secs, Cluster, LEASE, NODE_GRACE};
use peapod_tests::Node;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn deployment(name: &str, replicas: u32, extra_pod_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
{extra_pod_spec}
      containers:
      - name: web
        image: busybox:1.35
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && echo serving $(hostname) && exec httpd -f -p 8080 -h /www"]
"#
    )
}

fn running(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn per_node(pods: &[&Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        *m.entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    m
}

/// How many children of `kind` the node's tree has under its Node.
fn tree_children(node: &Node, kind: &str) -> usize {
    let tree = node.tree();
    tree["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|root| root["children"].as_array().into_iter().flatten())
        .filter(|c| c["kind"] == kind)
        .count()
}

fn wget(node: &Node, from: &str, url: &str) -> String {
    let out = node.peapod(&["exec", from, "--", "timeout", "5", "wget", "-qO-", url]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A GET over TLS to another node's daemon endpoint, its certificate checked
/// against the CA its Node publishes; with `token`, the node-to-node token
/// derived from the shared key file. The status code and the body.
fn endpoint_get(cl: &Cluster, node: &Value, path: &str, token: bool) -> (u16, String) {
    let ca = node["metadata"]["annotations"]["peapod.io/daemon-endpoint-ca"]
        .as_str()
        .expect("the node publishes its endpoint's CA");
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    let ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .as_str()
        .unwrap();
    let script = r##"
import base64, hashlib, hmac, ssl, sys, urllib.request, urllib.error
ca, url, keys, token = sys.argv[1:5]
req = urllib.request.Request(url)
if token == "yes":
    line = [l for l in open(keys).read().splitlines() if l.strip() and not l.startswith("#")][0]
    key = base64.b64decode(line.split(":", 1)[1].strip())
    req.add_header("Authorization", "Bearer " + hmac.new(key, b"peapod node-to-node v1", hashlib.sha256).hexdigest())
try:
    r = urllib.request.urlopen(req, context=ssl.create_default_context(cadata=ca), timeout=30)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"##;
    let out = std::process::Command::new("python3")
        .args(["-c", script, ca, &format!("https://{ip}:{port}{path}")])
        .arg(cl.key_file())
        .arg(if token { "yes" } else { "no" })
        .output()
        .expect("run python3");
    peapod_tests::status_and_body(&out)
}

/// kubectl 1.33 inside node `i`'s network namespace, through its HTTPS
/// listener on that namespace's loopback; `spdy` turns WebSockets off.
fn kubectl_on(cl: &Cluster, i: usize, home: &std::path::Path, spdy: bool, args: &[&str]) -> std::process::Output {
    let kubeconfig = home.join("config");
    if !kubeconfig.exists() {
        let root = cl.nodes[i].root().display().to_string();
        cl.wait("node's HTTPS listener", Duration::from_secs(20), || {
            std::fs::metadata(cl.nodes[i].root().join("pki/listen-https")).ok()
        });
        std::fs::write(&kubeconfig, cl.nodes[i].ok(&["kubeconfig", "--root-dir", &root])).unwrap();
    }
    let netns = &cl.lan.as_ref().unwrap().netns[i];
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "/usr/local/lib/peapod/kubectl/kubectl-1.33",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args)
        .env("HOME", home)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", if spdy { "false" } else { "true" })
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kubectl")
}

#[test]
fn replicas_spread_over_three_nodes_and_every_node_answers_for_the_cluster() {
    // Each node in a network namespace of its own, with an HTTPS listener on its loopback.
    let cl = Cluster::start_on_lan_with("spread", 3, &["--listen-https", "127.0.0.1:0"]);
    // One scheduler and one set of controllers in the cluster.
    let scheduler = cl.wait("a scheduler leader", LEASE * 3, || cl.leader("kube-scheduler"));
    let controllers = cl.wait("a controllers leader", LEASE * 3, || {
        cl.leader("kube-controller-manager")
    });
    let schedulers: Vec<usize> = cl.nodes.iter().map(|n| tree_children(n, "Scheduler")).collect();
    assert_eq!(
        schedulers.iter().sum::<usize>(),
        1,
        "one Scheduler in the cluster: {schedulers:?}"
    );
    assert_eq!(
        tree_children(&cl.nodes[cl.index_of(&scheduler).unwrap()], "Scheduler"),
        1
    );
    let sets: Vec<usize> = cl.nodes.iter().map(|n| tree_children(n, "Controller")).collect();
    assert_eq!(
        sets.iter().filter(|n| **n > 0).count(),
        1,
        "one controller set: {sets:?}"
    );
    assert!(tree_children(&cl.nodes[cl.index_of(&controllers).unwrap()], "Controller") > 0);

    cl.nodes[1].apply(&deployment("web", 6, ""));
    let pods = cl.wait("6 web pods running", Duration::from_secs(90), || {
        let pods = cl.pods(Some("app=web"));
        (running(&pods).len() == 6).then_some(pods)
    });
    let spread = per_node(&running(&pods));
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "2/2/2 over the nodes: {spread:?}"
    );
    // Every node lists the whole cluster's pods, with their nodes; each runs only its own.
    for (i, node) in cl.nodes.iter().enumerate() {
        let wide = node.ok(&["get", "pods", "-l", "app=web", "-o", "wide"]);
        assert_eq!(wide.lines().count(), 7, "node {i} lists every pod:\n{wide}");
        for n in 0..3 {
            assert!(wide.contains(&cl.name(n)), "node {i} shows node {n}'s pods:\n{wide}");
        }
        assert_eq!(tree_children(node, "PodActor"), 2, "node {i} runs its own two");
    }
    // A pod on one node reaches a pod on another by its IP, and through a ClusterIP.
    let on = |i: usize| {
        running(&pods)
            .into_iter()
            .find(|p| p["spec"]["nodeName"] == cl.name(i).as_str())
            .cloned()
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    let (a_name, b_name) = (
        a["metadata"]["name"].as_str().unwrap(),
        b["metadata"]["name"].as_str().unwrap(),
    );
    let b_ip = b["status"]["podIP"].as_str().unwrap();
    assert_eq!(
        wget(&cl.nodes[0], a_name, &format!("http://{b_ip}:8080/")),
        b_name,
        "pod on node 0 reaches the pod on node 1 by IP"
    );
    cl.nodes[2].apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    let svc = cl.wait("the service's cluster IP", Duration::from_secs(20), || {
        cl.nodes[0].get("service", "web")?["spec"]["clusterIP"]
            .as_str()
            .map(str::to_string)
    });
    // Requests through the cluster IP from node 0 land on pods of every node.
    let names: std::collections::HashSet<String> = running(&pods)
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut answered = std::collections::HashSet::new();
    cl.wait(
        "answers through the ClusterIP from pods of other nodes",
        Duration::from_secs(60),
        || {
            let who = wget(&cl.nodes[0], a_name, &format!("http://{svc}/"));
            if names.contains(&who) {
                answered.insert(who);
            }
            let nodes: std::collections::HashSet<&str> = running(&pods)
                .iter()
                .filter(|p| answered.contains(p["metadata"]["name"].as_str().unwrap()))
                .map(|p| p["spec"]["nodeName"].as_str().unwrap())
                .collect();
            (nodes.len() >= 2).then_some(())
        },
    );

    // Logs and exec of a pod on node 2, asked of node 0: node 0 passes them on.
    let c = on(2);
    let c_name = c["metadata"]["name"].as_str().unwrap();
    let logs = cl.nodes[0].ok(&["logs", c_name]);
    assert_eq!(
        logs.trim(),
        format!("serving {c_name}"),
        "node 2's pod's log through node 0"
    );
    let hostname = cl.nodes[0].ok(&["exec", c_name, "--", "hostname"]);
    assert_eq!(hostname.trim(), c_name, "exec through node 0 runs in node 2's pod");
    let out = cl.nodes[0].peapod(&["exec", c_name, "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "the exit code comes back through node 0");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "out");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "err");
    // kubectl through node 0's HTTPS listener, over SPDY and over WebSocket.
    let home = tempfile::Builder::new().prefix("pp-kube-").tempdir_in("/tmp").unwrap();
    for spdy in [true, false] {
        let out = kubectl_on(
            &cl,
            0,
            home.path(),
            spdy,
            &["exec", c_name, "--", "cat", "/www/index.html"],
        );
        assert!(
            out.status.success(),
            "kubectl exec (spdy {spdy}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            c_name,
            "kubectl exec (spdy {spdy})"
        );
    }
    let out = kubectl_on(&cl, 0, home.path(), false, &["logs", c_name]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("serving {c_name}"),
        "kubectl logs"
    );
    // A followed log streams through node 0 as the pod writes it.
    let mut follow = cl.nodes[0]
        .command(&["logs", "-f", c_name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let lines = lines.clone();
        let mut stdout = std::io::BufReader::new(follow.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut stdout, &mut line).unwrap_or(0) > 0 {
                lines.lock().unwrap().push_str(&std::mem::take(&mut line));
            }
        })
    };
    cl.nodes[2].ok(&["exec", c_name, "--", "sh", "-c", "echo later > /proc/1/fd/1"]);
    cl.wait("the followed log's new line", Duration::from_secs(20), || {
        lines.lock().unwrap().contains("later").then_some(())
    });
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = reader.join();
    // The endpoint nodes reach each other on: a node's token and only pod streams.
    let node2 = cl.nodes[0].get("node", &cl.name(2)).unwrap();
    let log_path = format!("/api/v1/namespaces/default/pods/{c_name}/log");
    assert_eq!(endpoint_get(&cl, &node2, &log_path, false).0, 401, "no token");
    let (code, body) = endpoint_get(&cl, &node2, &log_path, true);
    assert_eq!(
        (code, body.as_str()),
        (200, format!("serving {c_name}\nlater").as_str())
    );
    let (code, body) = endpoint_get(&cl, &node2, "/api/v1/namespaces/default/pods", true);
    assert_eq!(code, 403, "the endpoint serves no other API: {body}");
    // A node never passes on what another node passed to it.
    let a_log = format!("/api/v1/namespaces/default/pods/{a_name}/log");
    let (code, body) = endpoint_get(&cl, &node2, &a_log, true);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(&format!("bound to node {}", cl.name(0))), "{body}");

    // Inter-pod anti-affinity by hostname: one per node, the fourth waits.
    let apart = "      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - topologyKey: kubernetes.io/hostname\n            labelSelector: {matchLabels: {app: solo}}\n";
    cl.nodes[1].apply(&deployment("solo", 4, apart));
    let (solo, waiting) = cl.wait("3 solo pods running, one waiting", Duration::from_secs(90), || {
        let pods = cl.pods(Some("app=solo"));
        let waiting: Vec<Value> = pods
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            })
            .cloned()
            .collect();
        (pods.len() == 4 && running(&pods).len() == 3 && waiting.len() == 1).then_some((pods, waiting))
    });
    assert_eq!(
        per_node(&running(&solo)).values().copied().collect::<Vec<_>>(),
        [1, 1, 1]
    );
    let message = waiting[0]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        message,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // Inter-pod affinity: a pod that must be with the anchor goes to the anchor's node.
    let anchor = "apiVersion: v1\nkind: Pod\nmetadata: {name: anchor, labels: {role: anchor}}\nspec:\n  nodeName: NODE\n  containers: [{name: c, image: busybox:1.35, command: [sleep, '3600']}]\n";
    cl.nodes[0].apply(&anchor.replace("NODE", &cl.name(2)));
    let near = "apiVersion: v1\nkind: Pod\nmetadata: {name: near}\nspec:\n  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - topologyKey: kubernetes.io/hostname\n        labelSelector: {matchLabels: {role: anchor}}\n  containers: [{name: c, image: busybox:1.35, command: [sleep, '3600']}]\n";
    cl.nodes[0].apply(near);
    let near = cl.wait("the near pod bound", Duration::from_secs(30), || {
        cl.nodes[0]
            .get("pod", "near")
            .filter(|p| p["spec"]["nodeName"].is_string())
    });
    assert_eq!(near["spec"]["nodeName"], cl.name(2).as_str(), "with its anchor");
}

#[test]
fn a_dead_nodes_pods_move_elsewhere_and_nothing_doubles_when_it_returns() {
    let mut cl = Cluster::start_on_lan("evict", 3);
    let tolerate = "      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}";
    cl.nodes[0].apply(&deployment("app", 3, tolerate));
    let pods = cl.wait("3 app pods running", Duration::from_secs(90), || {
        let pods = cl.pods(Some("app=app"));
        (running(&pods).len() == 3).then_some(pods)
    });
    assert_eq!(per_node(&running(&pods)).len(), 3, "one per node");
    // The node that leads nothing dies, so the election is not what is tested here.
    let leaders = [cl.leader("kube-scheduler"), cl.leader("kube-controller-manager")];
    let victim = (0..3)
        .rev()
        .find(|i| !leaders.contains(&Some(cl.name(*i))))
        .expect("a node that leads nothing");
    let victim_name = cl.name(victim);
    let doomed: Vec<String> = running(&pods)
        .iter()
        .filter(|p| p["spec"]["nodeName"] == victim_name.as_str())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let killed = Instant::now();
    cl.nodes[victim].kill_daemon();
    let node = cl.wait_ready(victim, false);
    let unknown_after = killed.elapsed();
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown", "{ready}");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    let taints = cl.wait("the unreachable taints", NODE_GRACE, || {
        let n = cl.any_alive().get("node", &victim_name)?;
        let t = n["spec"]["taints"].as_array()?.clone();
        (t.iter()
            .filter(|t| t["key"] == "node.kubernetes.io/unreachable")
            .count()
            == 2)
            .then_some(t)
    });
    assert!(taints
        .iter()
        .any(|t| t["effect"] == "NoExecute" && t["timeAdded"].is_string()));
    // Replaced on the others after the pods' 2 s toleration.
    let moved = cl.wait("3 app pods running on the other nodes", Duration::from_secs(60), || {
        let pods = cl.pods(Some("app=app"));
        let live = running(&pods);
        (live.len() == 3 && live.iter().all(|p| p["spec"]["nodeName"] != victim_name.as_str())).then_some(pods)
    });
    let replaced_after = killed.elapsed();
    for name in &doomed {
        let p = moved.iter().find(|p| p["metadata"]["name"] == name.as_str()).unwrap();
        assert!(!p["metadata"]["deletionTimestamp"].is_null(), "{name} was evicted");
    }
    eprintln!(
        "node {victim_name} killed: Unknown after {}, its pods Running elsewhere after {}",
        secs(unknown_after),
        secs(replaced_after)
    );
    // It comes back: it ends its evicted pods, and nothing runs twice.
    cl.nodes[victim].start_daemon();
    cl.wait_ready(victim, true);
    cl.wait("the evicted pods gone", Duration::from_secs(60), || {
        let pods = cl.pods(Some("app=app"));
        pods.iter()
            .all(|p| !doomed.contains(&p["metadata"]["name"].as_str().unwrap_or("").to_string()))
            .then_some(())
    });
    let pods = cl.pods(Some("app=app"));
    assert_eq!(pods.len(), 3, "exactly the replicas: {pods:#?}");
    assert_eq!(running(&pods).len(), 3);
    let back = &cl.nodes[victim];
    cl.wait("no PodActor left on the returned node", Duration::from_secs(30), || {
        (tree_children(back, "PodActor") == 0).then_some(())
    });
    cl.wait("the taints lifted", NODE_GRACE * 2, || {
        let n = cl.any_alive().get("node", &victim_name)?;
        n["spec"]["taints"]
            .as_array()
            .is_none_or(|t| t.is_empty())
            .then_some(())
    });
}

#[test]
fn when_the_leaders_node_dies_another_node_schedules_and_runs_the_controllers() {
    let mut cl = Cluster::start_on_lan("lead", 3);
    let scheduler = cl.wait("a scheduler leader", LEASE * 3, || cl.leader("kube-scheduler"));
    let controllers = cl.wait("a controllers leader", LEASE * 3, || {
        cl.leader("kube-controller-manager")
    });
    // Kill the scheduler's node (and the controllers' with it when they share one).
    let victim = cl.index_of(&scheduler).unwrap();
    let killed = Instant::now();
    cl.nodes[victim].kill_daemon();
    let new_scheduler = cl.wait("another scheduler leader", LEASE * 4, || {
        cl.leader("kube-scheduler").filter(|l| *l != scheduler)
    });
    let took_over = killed.elapsed();
    if controllers == scheduler {
        cl.wait("another controllers leader", LEASE * 4, || {
            cl.leader("kube-controller-manager").filter(|l| *l != controllers)
        });
    }
    let new = &cl.nodes[cl.index_of(&new_scheduler).unwrap()];
    cl.wait("the new leader runs the Scheduler", Duration::from_secs(10), || {
        (tree_children(new, "Scheduler") == 1).then_some(())
    });
    eprintln!(
        "scheduler leader {scheduler} killed; {new_scheduler} leads after {}",
        secs(took_over)
    );
    // A new Deployment still gets its pods, on the nodes alive (once the
    // dead one is tainted, the scheduler leaves it out).
    let dead = cl.name(victim);
    cl.wait_ready(victim, false);
    cl.wait("the dead node tainted", NODE_GRACE * 2, || {
        let n = cl.any_alive().get("node", &dead)?;
        n["spec"]["taints"].as_array().filter(|t| !t.is_empty()).map(drop)
    });
    let survivor = cl.any_alive();
    survivor.apply(&deployment("late", 2, ""));
    let pods = cl.wait("2 late pods running", Duration::from_secs(90), || {
        let pods = cl.pods(Some("app=late"));
        (running(&pods).len() == 2).then_some(pods)
    });
    assert!(running(&pods).iter().all(|p| p["spec"]["nodeName"] != dead.as_str()));
}

fn pinned(name: &str, node: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "{script}"]
"#
    )
}

#[test]
fn pods_on_separate_hosts_reach_each_other_by_ip_without_nat() {
    // No --pod-cidr: each node claims a /25 of the cluster CIDR (10.99.0.0/16).
    let mut cl = Cluster::start_on_lan_with("lan", 2, &["--node-cidr-mask-size", "25"]);
    // Each node publishes the range it claimed as its Node's spec.podCIDR: the lowest free ones.
    let range = |cl: &Cluster, i: usize| {
        let n = cl.nodes[0].get("node", &cl.name(i)).expect("the node");
        n["spec"]["podCIDR"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!([range(&cl, 0), range(&cl, 1)], ["10.99.0.0/25", "10.99.0.128/25"]);
    // A restarted node keeps its range.
    cl.nodes[1].kill_daemon();
    cl.nodes[1].start_daemon();
    cl.wait_ready(1, true);
    assert_eq!(range(&cl, 1), "10.99.0.128/25", "node 1 after a restart");
    let server = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\\\necho Content-Type: text/plain\\\\necho\\\\necho $REMOTE_ADDR\\\\n' > /www/cgi-bin/addr && chmod +x /www/cgi-bin/addr && exec httpd -f -p 8080 -h /www";
    cl.nodes[0].apply(&pinned("server", &cl.name(1), server));
    cl.nodes[0].apply(&pinned("client", &cl.name(0), "exec sleep 3600"));
    let ip = |name: &str| {
        cl.wait(&format!("{name} running with an IP"), Duration::from_secs(60), || {
            let p = cl.nodes[0].get("pod", name)?;
            (p["status"]["phase"] == "Running")
                .then(|| p["status"]["podIP"].as_str().map(str::to_string))
                .flatten()
        })
    };
    let (server_ip, client_ip) = (ip("server"), ip("client"));
    // Node 0 routes node 1's range through node 1's address, and only that.
    let lan = cl.lan.as_ref().unwrap();
    let routes = std::process::Command::new("ip")
        .args(["-n", &lan.netns[0], "route", "show", "proto", "77"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    assert_eq!(
        routes.trim(),
        format!("10.99.0.128/25 via 10.201.{}.3 dev eth0", lan.subnet),
        "node 0's routes"
    );
    assert!(
        client_ip.starts_with("10.99.0.") && client_ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() < 128,
        "{client_ip} in node 0's range"
    );
    assert!(
        server_ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() > 128,
        "{server_ip} in node 1's range"
    );
    // The server sees the client pod's own address: no NAT between pods.
    let seen = cl.wait("the server answering across the link", Duration::from_secs(30), || {
        let out = cl.nodes[0].peapod(&[
            "exec",
            "client",
            "--",
            "timeout",
            "5",
            "wget",
            "-qO-",
            &format!("http://{server_ip}:8080/cgi-bin/addr"),
        ]);
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!body.is_empty()).then_some(body)
    });
    let seen = seen.trim_start_matches("[::ffff:").trim_end_matches(']');
    assert_eq!(seen, client_ip, "the server saw the client pod's address");

    // A quota holds across nodes: creates through both nodes at once never pass it.
    cl.nodes[0].apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: quota}\n---\napiVersion: v1\nkind: ResourceQuota\nmetadata: {name: three, namespace: quota}\nspec:\n  hard: {pods: \"3\"}\n",
    );
    // Each pod's write waits 300 ms after its admission counted the pods:
    // without one lock for the cluster, the other node would count in that window.
    for node in &cl.nodes {
        node.arm("store.create@pods/quota/=sleep:300");
    }
    let files = tempfile::Builder::new().prefix("pp-quota-").tempdir_in("/tmp").unwrap();
    let outcomes: Vec<std::process::Output> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..12)
            .map(|i| {
                let file = files.path().join(format!("p{i}.yaml"));
                std::fs::write(
                    &file,
                    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: quota}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: busybox:1.35, command: [sleep, '3600']}}]\n"),
                )
                .unwrap();
                let node = &cl.nodes[i % 2];
                scope.spawn(move || node.peapod(&["create", "-f", file.to_str().unwrap()]))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let created = outcomes.iter().filter(|o| o.status.success()).count();
    let refusals: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
        .collect();
    assert_eq!(created, 3, "3 of 12 creates pass a quota of 3 pods: {refusals:?}");
    assert!(
        refusals.iter().all(|r| r.contains("exceeded quota: three")),
        "{refusals:?}"
    );
    let stored = cl.nodes[1].ok(&["get", "pods", "-n", "quota", "-o", "name"]);
    assert_eq!(stored.lines().count(), 3, "{stored}");
    for node in &cl.nodes {
        node.arm("");
    }

    // A Node deleted for good gives its range back once its lease has run out.
    let claim = "podcidrs/";
    assert_eq!(cl.etcd.keys_with(claim).len(), 2, "{:?}", cl.etcd.keys_with(claim));
    cl.nodes[1].kill_daemon();
    cl.nodes[0].ok(&["delete", "node", &cl.name(1)]);
    let left = cl.wait("node 1's range given back", Duration::from_secs(60), || {
        let keys = cl.etcd.keys_with(claim);
        (keys.len() == 1).then_some(keys)
    });
    assert!(left[0].ends_with("10.99.0.0-25"), "node 0 keeps its own: {left:?}");

    // A claim whose Node no running controller saw deleted (here: one that
    // never existed, written behind the daemons' backs) is found by the
    // leader's periodic look and given back as well.
    let ghost_key = left[0].replace("10.99.0.0-25", "10.99.0.128-25");
    cl.etcd.put(
        &ghost_key,
        r#"{"apiVersion":"peapod.internal/v1","kind":"PodCIDRClaim","metadata":{"name":"10.99.0.128-25","uid":"ghost-uid","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"nodeName":"ghost","podCIDR":"10.99.0.128/25"}}"#,
    );
    assert_eq!(cl.etcd.keys_with(claim).len(), 2);
    cl.wait("the ghost's range given back", Duration::from_secs(60), || {
        (cl.etcd.keys_with(claim) == left).then_some(())
    });
}
