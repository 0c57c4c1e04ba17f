//! End-to-end metrics: a real scrape with pods running passes promtool and
//! counts them; a real Prometheus server scrapes the daemon; counters move
//! when things happen; series leave with their pods; readiness waits for
//! the plugins; and every defined metric is recorded somewhere.

use peapod_tests::{container, pod_with_claim, wait_for, Node, PrometheusServer, Scrape};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn running(p: &serde_json::Value) -> bool {
    p["status"]["phase"] == "Running"
}

/// A CPU-bound pod with CPU and memory limits (so every cAdvisor family has a series).
const BUSY: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: busy}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: busybox:1.35
    command: ["sh", "-c", "echo scratch > /scratch; while :; do :; done"]
    resources:
      limits: {cpu: 500m, memory: 64Mi}
"#;

const IDLE: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: idle}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleeper
    image: busybox:1.35
    command: ["sleep", "3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
  - {name: scratch, emptyDir: {}}
"#;

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (scripts/setup.sh installs prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn scrape_until(node: &Node, what: &str, f: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_for(what, MIN, || Some(node.scrape()).filter(|s| f(s)))
}

#[test]
fn a_scrape_with_pods_running_passes_promtool_and_follows_the_pods() {
    let node = Node::start();
    node.apply(BUSY);
    node.apply(IDLE);
    let busy = node.wait_pod("busy", "running", MIN, running);
    node.wait_pod("idle", "running", MIN, running);
    let s = scrape_until(&node, "both pods counted", |s| {
        s.sum("kubelet_running_pods", &[]) == 2.0
    });
    assert_eq!(s.types["kubelet_running_pods"], "gauge");
    assert_eq!(
        s.sum("kubelet_running_containers", &[("container_state", "running")]),
        2.0
    );
    assert!(s.sum("kubelet_started_pods_total", &[]) >= 2.0);
    assert!(s.sum("kubelet_started_containers_total", &[("container_type", "container")]) >= 2.0);
    assert!(s.sum("kubelet_pod_start_duration_seconds_count", &[]) >= 2.0);
    assert!(s.sum("kubelet_pod_start_sli_duration_seconds_count", &[]) >= 2.0);
    assert!(
        s.sum(
            "kubelet_pod_worker_duration_seconds_count",
            &[("operation_type", "create")]
        ) >= 2.0
    );
    for op in [
        "run_podsandbox",
        "create_container",
        "start_container",
        "container_status",
    ] {
        assert!(
            s.sum("kubelet_runtime_operations_total", &[("operation_type", op)]) >= 2.0,
            "{op}: {}",
            s.text
        );
    }
    assert!(s.sum("peapod_store_write_duration_seconds_count", &[("operation", "create")]) > 0.0);
    assert!(
        s.sum("peapod_store_watchers", &[]) > 0.0,
        "the node's informers watch the store"
    );

    // cAdvisor's families for the busy container, labelled as kubelet labels them.
    let cid = container(&busy, "spin")["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spin = [("namespace", "default"), ("pod", "busy"), ("container", "spin")];
    for name in peapod_metrics::cadvisor::names() {
        if name.starts_with("container_network_") {
            continue; // on the pod's series, below
        }
        let found = s.find(name, &spin);
        assert_eq!(found.len(), 1, "{name} for busy/spin: {}", s.text);
        let l = &found[0].labels;
        assert_eq!(l["image"], "busybox:1.35", "{l:?}");
        assert!(l["id"].starts_with("/peapod/pod"), "{l:?}");
        assert!(!l["name"].is_empty() && cid.ends_with(&l["name"]), "{l:?} vs {cid}");
    }
    assert_eq!(s.sum("container_spec_cpu_quota", &spin), 50000.0);
    assert_eq!(
        s.sum("container_spec_memory_limit_bytes", &spin),
        64.0 * 1024.0 * 1024.0
    );
    assert!(s.sum("container_memory_working_set_bytes", &spin) > 0.0);
    assert!(
        s.sum("container_fs_usage_bytes", &spin) > 0.0,
        "the write to /scratch is in the writable layer"
    );
    let started = s.sum("container_start_time_seconds", &spin);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 600.0..=now + 5.0).contains(&started),
        "started at {started}, now {now}"
    );
    // The pod's own series (container=""), where its network counters are.
    let pod = [("namespace", "default"), ("pod", "busy"), ("container", "")];
    assert_eq!(
        s.find("container_network_receive_bytes_total", &pod).len(),
        1,
        "{}",
        s.text
    );
    assert_eq!(
        s.find("container_network_transmit_bytes_total", &pod)[0].labels["interface"],
        "eth0"
    );
    assert!(
        s.sum(
            "container_cpu_usage_seconds_total",
            &[("pod", "busy"), ("container", ""), ("cpu", "total")]
        ) > 0.0
    );

    let (ok, said) = promtool(&s.text);
    assert!(ok, "promtool check metrics:\n{said}");
    let (code, cadvisor) = node.metrics_get("/metrics/cadvisor");
    assert_eq!(code, 200);
    assert!(cadvisor.contains("container_cpu_usage_seconds_total{") && !cadvisor.contains("kubelet_running_pods"));
    assert_eq!(node.metrics_get("/healthz"), (200, "ok".to_string()));
    assert_eq!(node.metrics_get("/readyz"), (200, "ok".to_string()));
    let (code, verbose) = node.metrics_get("/readyz?verbose");
    assert_eq!(code, 200);
    assert!(verbose.contains("[+]plugins ok"), "{verbose}");

    // Series of a deleted pod are gone at the next scrape.
    node.ok(&["delete", "pod", "idle"]);
    let s = node.scrape();
    assert!(
        s.find("container_memory_usage_bytes", &[("pod", "idle")]).is_empty(),
        "{}",
        s.text
    );
    assert!(!s.text.contains("pod=\"idle\""), "{}", s.text);
    assert_eq!(s.sum("kubelet_running_pods", &[]), 1.0);
}

#[test]
fn a_prometheus_server_scrapes_the_daemon() {
    let node = Node::start();
    node.apply(BUSY);
    node.apply(IDLE);
    node.wait_pod("busy", "running", MIN, running);
    node.wait_pod("idle", "running", MIN, running);
    let prom = PrometheusServer::start(&[node.metrics_address()]);
    wait_for("Prometheus to see 2 running pods", MIN, || {
        let r = prom.query("kubelet_running_pods");
        (r.len() == 1 && r[0].1 == 2.0).then_some(())
    });
    let cpu = || {
        let r = prom.query(r#"container_cpu_usage_seconds_total{pod="busy",container="spin"}"#);
        assert!(r.len() <= 1, "{r:?}");
        r.first().map(|(_, v)| *v)
    };
    let first = wait_for("busy's CPU in Prometheus", MIN, cpu);
    wait_for("busy's CPU usage rising in Prometheus", MIN, || {
        cpu().filter(|v| *v > first + 1.0)
    });
    let rate = prom.query(r#"rate(container_cpu_usage_seconds_total{pod="busy",container="spin"}[5s])"#);
    assert!(
        rate.first().is_some_and(|(_, r)| *r > 0.1),
        "a spinning container under a 500m limit: {rate:?}\n{}",
        prom.log()
    );
}

#[test]
fn counters_move_when_things_happen() {
    let node = Node::start();
    node.apply(IDLE);
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: sick}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command: ["sleep", "3600"]
    livenessProbe: {exec: {command: [cat, /nonexistent]}, periodSeconds: 1, failureThreshold: 1000}
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox:1.35
    command: ["sh", "-c", "head -c 300000000 /dev/zero | tail -c 200000000 > /dev/null"]
    resources:
      limits: {memory: 24Mi}
"#,
    );
    node.wait_pod("idle", "running", MIN, running);
    let liveness = |s: &Scrape, result: &str| {
        s.sum(
            "prober_probe_total",
            &[
                ("pod", "sick"),
                ("probe_type", "Liveness"),
                ("result", result),
                ("container", "c"),
            ],
        )
    };
    let first = scrape_until(&node, "a failed liveness probe counted", |s| {
        liveness(s, "failed") >= 1.0
    });
    scrape_until(&node, "more failed liveness probes", |s| {
        liveness(s, "failed") > liveness(&first, "failed")
    });
    let s = scrape_until(&node, "successful readiness probes with durations", |s| {
        s.sum(
            "prober_probe_duration_seconds_count",
            &[("pod", "sick"), ("probe_type", "Readiness")],
        ) >= 1.0
    });
    assert!(
        s.sum(
            "prober_probe_total",
            &[("pod", "sick"), ("probe_type", "Readiness"), ("result", "successful")]
        ) >= 1.0
    );
    let uid = node.pod("sick").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.find("prober_probe_total", &[("pod_uid", &uid)]).len(),
        2,
        "{}",
        s.text
    );

    // The crash loop: restarts counted as kube-state-metrics counts them.
    let s = scrape_until(&node, "crashy's restarts", |s| {
        s.sum(
            "kube_pod_container_status_restarts_total",
            &[("pod", "crashy"), ("container", "c")],
        ) >= 1.0
    });
    assert!(s.sum("kubelet_started_containers_total", &[("container_type", "container")]) >= 4.0);
    assert!(s.sum("kubelet_running_containers", &[("container_state", "exited")]) >= 1.0);

    // The OOM kill.
    node.wait_pod("hog", "OOM-killed", MIN, |p| {
        container(p, "hog")["state"]["terminated"]["reason"] == "OOMKilled"
    });
    scrape_until(&node, "hog's OOM event", |s| {
        s.sum("container_oom_events_total", &[("pod", "hog"), ("container", "hog")]) == 1.0
    });

    // The emptyDir publish went through the plugin: counted and timed.
    let s = node.scrape();
    let emptydir = [("plugin", "emptydir"), ("operation", "publish")];
    assert!(
        s.sum(
            "peapod_plugin_calls_total",
            &[("plugin", "emptydir"), ("operation", "publish"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(s.sum("peapod_plugin_call_duration_seconds_count", &emptydir) >= 1.0);
    assert!(
        s.sum(
            "storage_operation_duration_seconds_count",
            &[
                ("volume_plugin", "emptydir"),
                ("operation_name", "volume_mount"),
                ("status", "success")
            ]
        ) >= 1.0,
        "{}",
        s.text
    );
    assert!(
        s.sum(
            "volume_manager_total_volumes",
            &[("plugin_name", "emptydir"), ("state", "actual_state_of_world")]
        ) >= 1.0
    );

    // An actor crash (fault injection): the supervisor's restart is counted.
    let restarts = |s: &Scrape| s.sum("peapod_actor_restarts_total", &[("actor", "PodActor")]);
    let before = restarts(&s);
    node.arm("pod.reconcile@idle_default=panic*1");
    node.apply(&IDLE.replace("metadata: {name: idle}", "metadata: {name: idle, labels: {poke: '1'}}"));
    let s = scrape_until(&node, "the PodActor restart counted", |s| restarts(s) == before + 1.0);
    assert!(s.sum("kubelet_restarted_pods_total", &[("static", "")]) >= 1.0);
}

#[test]
fn an_eviction_is_counted_under_kubelets_signal() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: filler}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "dd if=/dev/zero of=/data/big bs=1024 count=4096; sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, emptyDir: {sizeLimit: 1Mi}}
"#,
    );
    node.wait_pod("filler", "evicted", MIN, |p| p["status"]["reason"] == "Evicted");
    let s = scrape_until(&node, "the eviction counted", |s| {
        s.sum("kubelet_evictions", &[("eviction_signal", "emptydirfs.limit")]) == 1.0
    });
    // kubelet's own name for this counter lacks `_total`; it is kept for the
    // dashboards and alerts that use it, and is all promtool objects to.
    let (ok, said) = promtool(&s.text);
    let problems: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        ok || problems == ["kubelet_evictions counter metrics should have \"_total\" suffix"],
        "{said}"
    );
}

#[test]
fn claim_usage_comes_from_the_plugins_stats_and_leaves_with_the_pod() {
    let node = Node::start_with_local_storage();
    node.apply(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 64Mi}}\n",
    );
    node.apply(&pod_with_claim(
        "user",
        "data",
        "dd if=/dev/zero of=/data/f bs=1024 count=2048; sleep 3600",
    ));
    node.wait_pod("user", "running", MIN, running);
    let claim = [("namespace", "default"), ("persistentvolumeclaim", "data")];
    let s = scrape_until(&node, "the claim's usage", |s| {
        s.sum("kubelet_volume_stats_used_bytes", &claim) >= 2.0 * 1024.0 * 1024.0
    });
    let capacity = s.sum("kubelet_volume_stats_capacity_bytes", &claim);
    assert!(
        (50.0 * 1024.0 * 1024.0..=64.0 * 1024.0 * 1024.0).contains(&capacity),
        "{capacity}"
    );
    assert!(s.sum("kubelet_volume_stats_available_bytes", &claim) < capacity);
    assert!(s.sum("kubelet_volume_stats_inodes", &claim) > 0.0);
    assert!(s.sum("kubelet_volume_stats_inodes_used", &claim) > 0.0);
    assert!(s.sum("kubelet_volume_stats_inodes_free", &claim) > 0.0);
    assert_eq!(
        s.sum(
            "volume_manager_total_volumes",
            &[("plugin_name", "local.peapod.io"), ("state", "actual_state_of_world")]
        ),
        1.0,
        "{}",
        s.text
    );
    assert!(
        s.sum(
            "storage_operation_duration_seconds_count",
            &[("volume_plugin", "local.peapod.io"), ("operation_name", "mount_device")]
        ) >= 1.0,
        "{}",
        s.text
    );
    node.ok(&["delete", "pod", "user"]);
    let s = node.scrape();
    assert!(
        s.find("kubelet_volume_stats_used_bytes", &claim).is_empty(),
        "{}",
        s.text
    );
}

#[test]
fn readyz_waits_for_the_plugins() {
    let (tx, rx) = std::sync::mpsc::channel();
    let node = Node::start_with(|n| {
        n.add_plugin(
            "libpeapod_test_plugin.so",
            Some(("misbehave", "initDelaySeconds: 2\n".into())),
        );
        let file = n.run_dir().join("metrics-address");
        // The daemon's API socket comes up after the plugins are initialised,
        // which is what Node::start waits for; readiness is asked before.
        std::thread::spawn(move || {
            let addr = wait_for("metrics address", MIN, || {
                std::fs::read_to_string(&file)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            });
            let _ = tx.send(wait_for("an answer", MIN, || {
                std::net::TcpStream::connect(&addr)
                    .is_ok()
                    .then(|| peapod_tests::http_get(&addr, "/readyz"))
            }));
        });
    });
    let (code, body) = rx.recv_timeout(MIN).expect("readyz asked during start-up");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("[-]plugins not ready") && body.contains("readyz check failed"),
        "{body}"
    );
    wait_for("ready", MIN, || (node.metrics_get("/readyz").0 == 200).then_some(()));
    assert_eq!(node.metrics_get("/healthz").0, 200);
}

#[test]
fn a_node_with_metrics_off_opens_no_listener() {
    let node = Node::start_with_args(&["--no-metrics"], |_| {});
    assert!(!node.run_dir().join("metrics-address").exists());
    assert!(
        node.daemon_log().contains("peapod daemon serving on"),
        "{}",
        node.daemon_log()
    );
}

/// The source files of the workspace outside the metrics crate.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() && !["target", "metrics", ".git", "tests"].contains(&name.as_str()) {
            sources(&p, out);
        } else if name.ends_with(".rs") {
            out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
        }
    }
}

fn uses(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(i, _)| {
        !text[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn every_defined_metric_is_recorded_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let defs = std::fs::read_to_string(root.join("metrics/src/defs.rs")).unwrap();
    // The methods of `Metrics` in defs.rs, by name, with their bodies: a
    // metric recorded by one (`observe_probe`) is recorded where it is called.
    let methods: Vec<(&str, &str)> = defs
        .split("fn ")
        .skip(1)
        .map(|chunk| (chunk.split(['(', '<']).next().unwrap_or_default(), chunk))
        .collect();
    let mut never = Vec::new();
    for (field, metric) in peapod_metrics::metrics().fields() {
        let needle = format!(".{field}");
        let recorded = files.iter().any(|(_, text)| uses(text, &needle))
            || methods.iter().any(|(name, body)| {
                uses(body, &format!("self{needle}"))
                    && (
                        // Gauges computed from the inventory are set when scraped.
                        *name == "refresh_from_inventory"
                            || files.iter().any(|(_, text)| uses(text, &format!(".{name}")))
                    )
            });
        if !recorded {
            never.push(format!("{metric} (field {field})"));
        }
    }
    for feeder in peapod_metrics::FEEDERS {
        if !files.iter().any(|(_, text)| uses(text, feeder)) {
            never.push(format!(
                "{feeder}: nothing outside the metrics crate feeds the inventory"
            ));
        }
    }
    assert!(never.is_empty(), "defined but never recorded: {never:#?}");
}

#[test]
fn the_dashboard_queries_only_series_peapod_serves() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../metrics/dashboards/peapod-node.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut known: Vec<String> = peapod_metrics::metrics().names();
    known.extend(peapod_metrics::cadvisor::names().into_iter().map(str::to_string));
    let prefixes = [
        "kubelet_",
        "prober_",
        "storage_",
        "volume_manager_",
        "container_",
        "peapod_",
        "kube_",
    ];
    // Label names that share a metric prefix.
    let labels = ["container_state", "container_type"];
    let mut used = std::collections::BTreeSet::new();
    let mut unknown = Vec::new();
    let panels = dash["panels"].as_array().unwrap();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| prefixes.iter().any(|p| w.starts_with(p)) && !labels.contains(w))
                .collect();
            assert!(!names.is_empty(), "{} queries no peapod series: {expr}", p["title"]);
            for n in names {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s).filter(|b| known.iter().any(|k| k == b)))
                    .unwrap_or(n);
                if known.iter().any(|k| k == base) {
                    used.insert(base.to_string());
                } else {
                    unknown.push(format!("{}: {n}", p["title"]));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard names series peapod does not serve: {unknown:#?}"
    );
    // Every family the issue names is on a panel.
    for must in [
        "kubelet_running_pods",
        "kubelet_pod_start_duration_seconds",
        "prober_probe_total",
        "kubelet_volume_stats_used_bytes",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
    ] {
        assert!(used.contains(must), "no panel shows {must}");
    }
}
