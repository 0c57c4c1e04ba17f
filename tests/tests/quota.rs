//! ResourceQuota and LimitRange as the API server admits with them: the
//! refusals' words, exact counts under parallel creates and across a
//! daemon kill -9, defaults written into the stored pod.

use std::time::Duration;

use peapod_tests::{wait_for, Node};

fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n    resources: {resources}\n"
    )
}

fn create(node: &Node, yaml: &str) -> std::process::Output {
    let f = node.root().join(format!("c-{}.yaml", rand_name()));
    std::fs::write(&f, yaml).unwrap();
    node.peapod(&["create", "-f", f.to_str().unwrap()])
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn quotas_refuse_with_the_api_servers_words_and_count_exactly() {
    let mut node = Node::start();
    node.apply(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: compute-resources}\nspec:\n  hard: {limits.memory: 2Gi, requests.cpu: '1'}\n---\n\
apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: counts}\nspec:\n  hard: {pods: '5', configmaps: '2', services.nodeports: '0'}\n",
    );
    let sized = |mem: &str| format!("{{limits: {{memory: {mem}, cpu: 100m}}}}");
    let out = create(&node, &pod("big", &sized("3Gi")));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "pods \"big\" is forbidden: exceeded quota: compute-resources, requested: limits.memory=3Gi, used: limits.memory=0, limited: limits.memory=2Gi"
        ),
        "{}",
        stderr(&out)
    );
    let out = create(&node, &pod("bare", "{}"));
    assert!(
        stderr(&out)
            .contains("pods \"bare\" is forbidden: failed quota: compute-resources: must specify limits.memory"),
        "{}",
        stderr(&out)
    );
    assert!(create(&node, &pod("one", &sized("1Gi"))).status.success());
    let out = create(&node, &pod("two", &sized("1536Mi")));
    assert!(
        stderr(&out).contains(
            "exceeded quota: compute-resources, requested: limits.memory=1536Mi, used: limits.memory=1Gi, limited: limits.memory=2Gi"
        ),
        "{}",
        stderr(&out)
    );

    // Object counts.
    node.ok(&["create", "configmap", "a"]);
    node.ok(&["create", "configmap", "b"]);
    let out = node.peapod(&["create", "configmap", "c"]);
    assert!(
        stderr(&out).contains(
            "configmaps \"c\" is forbidden: exceeded quota: counts, requested: configmaps=1, used: configmaps=2, limited: configmaps=2"
        ),
        "{}",
        stderr(&out)
    );

    // An update that adds to a count is checked too: a Service made a NodePort.
    node.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n");
    let f = node.root().join("np.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("services \"web\" is forbidden: exceeded quota: counts, requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.get("service", "web").unwrap()["spec"]["type"], "ClusterIP");

    // 20 creates at once against a quota of 5 pods: exactly 5 succeed.
    let small = sized("10Mi");
    node.ok(&["create", "namespace", "burst"]);
    let f = node.root().join("burst-quota.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: five}\nspec: {hard: {pods: '5'}}\n",
    )
    .unwrap();
    node.ok(&["apply", "-n", "burst", "-f", f.to_str().unwrap()]);
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let node = &node;
                s.spawn(move || {
                    let f = node.root().join(format!("burst-{i}.yaml"));
                    std::fs::write(&f, pod(&format!("p{i}"), "{}")).unwrap();
                    node.peapod(&["create", "-n", "burst", "-f", f.to_str().unwrap()])
                        .status
                        .success()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 5, "{results:?}");
    let listed: serde_json::Value =
        serde_json::from_str(&node.ok(&["get", "pods", "-n", "burst", "-o", "json"])).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 5);
    wait_for("status.used of the burst quota", Duration::from_secs(30), || {
        let q: serde_json::Value =
            serde_json::from_str(&node.ok(&["get", "quota", "five", "-n", "burst", "-o", "json"])).ok()?;
        (q["status"]["used"]["pods"] == "5").then_some(())
    });
    // Four more pods fill the default namespace's five.
    for i in 0..4 {
        assert!(create(&node, &pod(&format!("p{i}"), &small)).status.success());
    }

    // The quota's status says so (the controller's count).
    wait_for("status.used of the quota", Duration::from_secs(30), || {
        let q = node.get("resourcequota", "counts")?;
        (q["status"]["used"]["pods"] == "5" && q["status"]["used"]["configmaps"] == "2").then_some(())
    });
    let table = node.ok(&["get", "quota", "counts"]);
    assert!(table.contains("configmaps: 2/2, pods: 5/5"), "{table}");

    // After a kill -9 the count is still exact: nothing was charged to undo.
    node.kill_daemon();
    node.start_daemon();
    // Its API answering first (a CI run once found the socket before the API served).
    wait_for("the restarted daemon's API", Duration::from_secs(30), || {
        node.peapod(&["get", "namespaces", "-o", "name"])
            .status
            .success()
            .then_some(())
    });
    let out = create(&node, &pod("late", &small));
    assert!(
        stderr(&out).contains("exceeded quota: counts, requested: pods=1, used: pods=5, limited: pods=5"),
        "{}",
        stderr(&out)
    );
    // A pod that goes frees its slot.
    node.ok(&["delete", "pod", "one"]);
    wait_for("a free slot", Duration::from_secs(60), || {
        create(&node, &pod("late", &small)).status.success().then_some(())
    });
}

#[test]
fn limit_ranges_default_the_stored_pod_and_refuse_past_their_bounds() {
    let node = Node::start();
    node.apply(
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits}\nspec:\n  limits:\n  - type: Container\n    default: {memory: 128Mi, cpu: 200m}\n    defaultRequest: {memory: 64Mi, cpu: 100m}\n    max: {memory: 512Mi}\n",
    );
    assert!(create(&node, &pod("defaulted", "{}")).status.success());
    let p = node.pod("defaulted").unwrap();
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"]["memory"], "128Mi", "{p}");
    assert_eq!(r["limits"]["cpu"], "200m", "{p}");
    assert_eq!(r["requests"]["memory"], "64Mi", "{p}");
    assert_eq!(r["requests"]["cpu"], "100m", "{p}");
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    // The defaults are what the container runs with: its memory cgroup limit.
    node.wait_pod("defaulted", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    let limit = node.ok(&[
        "exec",
        "defaulted",
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(limit.trim(), (128u64 << 20).to_string());

    let out = create(&node, &pod("huge", "{limits: {memory: 1Gi}}"));
    assert!(
        stderr(&out)
            .contains("pods \"huge\" is forbidden: maximum memory usage per Container is 512Mi, but limit is 1Gi"),
        "{}",
        stderr(&out)
    );
    assert!(node.pod("huge").is_none());

    // A Deployment's pods are admitted the same way: the refusal is its ReplicaSet's event.
    node.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: c, image: busybox:1.35, command: [sleep, '3600'], resources: {limits: {memory: 1Gi}}}\n",
    );
    wait_for(
        "FailedCreate with the LimitRange's words",
        Duration::from_secs(60),
        || {
            let events = node.ok(&["get", "events", "-o", "json"]);
            events
                .contains("maximum memory usage per Container is 512Mi, but limit is 1Gi")
                .then_some(())
        },
    );
}
