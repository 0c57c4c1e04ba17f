//! ConfigMaps and Secrets as pods use them (env, envFrom, configMap,
//! secret, downwardAPI and projected volumes, updated in place), Secrets
//! sealed in the store file, and a missing ConfigMap that holds a
//! container in `CreateContainerConfigError` until it is created.

use std::time::Duration;

use peapod_tests::{wait_for, Node};
use serde_json::Value;

const SECRET_VALUE: &str = "s3cret-value-42";

fn running(node: &Node, pod: &str) -> Value {
    node.wait_pod(pod, "running", Duration::from_secs(90), |p| {
        p["status"]["phase"] == "Running"
    })
}

fn exec(node: &Node, pod: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(cmd);
    node.ok(&args)
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: app
  labels: {app: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command: [sleep, "3600"]
    resources: {limits: {memory: 64Mi}}
    envFrom:
    - configMapRef: {name: app-config}
      prefix: CFG_
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: app-config, key: mode}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: MISSING_OK
      valueFrom: {secretKeyRef: {name: creds, key: nope, optional: true}}
    - name: MEM_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: all, mountPath: /etc/all}
    - {name: info, mountPath: /etc/info}
  volumes:
  - name: cfg
    configMap: {name: app-config}
  - name: sec
    secret: {secretName: creds, defaultMode: 0400}
  - name: all
    projected:
      sources:
      - configMap: {name: app-config, items: [{key: mode, path: conf/mode}]}
      - secret: {name: creds, items: [{key: password, path: pw, mode: 0440}]}
      - downwardAPI:
          items:
          - {path: name, fieldRef: {fieldPath: metadata.name}}
          - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
"#;

#[test]
fn pods_read_config_maps_and_secrets_as_env_and_live_files() {
    let node = Node::start();
    node.ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=mode=fast",
        "--from-literal=level=3",
    ]);
    node.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        &format!("--from-literal=password={SECRET_VALUE}"),
    ]);
    node.apply(POD);
    running(&node, "app");

    // Environment: key references, envFrom with its prefix, an optional miss left out.
    let env = exec(&node, "app", &["env"]);
    for want in [
        "MODE=fast",
        &format!("PASSWORD={SECRET_VALUE}"),
        "CFG_level=3",
        "CFG_mode=fast",
        "MEM_MI=64",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }
    assert!(!env.contains("MISSING_OK"), "{env}");

    // Files, with the modes asked for; the secret and projected volumes on a tmpfs.
    assert_eq!(exec(&node, "app", &["cat", "/etc/cfg/mode"]), "fast");
    assert_eq!(exec(&node, "app", &["cat", "/etc/sec/password"]), SECRET_VALUE);
    assert_eq!(
        exec(&node, "app", &["stat", "-L", "-c", "%a", "/etc/sec/password"]).trim(),
        "400"
    );
    assert_eq!(
        exec(&node, "app", &["stat", "-L", "-c", "%a", "/etc/all/pw"]).trim(),
        "440"
    );
    assert_eq!(exec(&node, "app", &["cat", "/etc/all/conf/mode"]), "fast");
    assert_eq!(exec(&node, "app", &["cat", "/etc/all/name"]), "app");
    assert_eq!(exec(&node, "app", &["cat", "/etc/all/mem"]), "64");
    let mounts = exec(&node, "app", &["cat", "/proc/mounts"]);
    let fs_of = |dir: &str| {
        mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(dir))
            .and_then(|l| l.split(' ').nth(2))
            .map(str::to_string)
    };
    assert_eq!(fs_of("/etc/sec").as_deref(), Some("tmpfs"), "{mounts}");
    assert_eq!(fs_of("/etc/all").as_deref(), Some("tmpfs"), "{mounts}");
    assert_ne!(fs_of("/etc/cfg").as_deref(), Some("tmpfs"), "{mounts}");
    // Read-only for the container, as kubelet mounts them.
    assert!(!node
        .peapod(&["exec", "app", "--", "touch", "/etc/cfg/x"])
        .status
        .success());

    // A changed ConfigMap shows in the running container; it is not restarted.
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {mode: slow, level: \"4\"}\n");
    wait_for("the new mode in the volume", Duration::from_secs(30), || {
        (exec(&node, "app", &["cat", "/etc/cfg/mode"]) == "slow").then_some(())
    });
    wait_for("the new mode in the projected volume", Duration::from_secs(30), || {
        (exec(&node, "app", &["cat", "/etc/all/conf/mode"]) == "slow").then_some(())
    });
    // Labels through the downward API follow the pod.
    node.ok(&["label", "pod", "app", "tier=gold"]);
    wait_for(
        "the new label in the downward API volume",
        Duration::from_secs(30),
        || {
            let labels = exec(&node, "app", &["cat", "/etc/info/labels"]);
            (labels == "app=\"demo\"\ntier=\"gold\"").then_some(())
        },
    );
    let pod = node.pod("app").unwrap();
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "{pod}");
    // The environment is what it was at start, as in Kubernetes.
    assert!(exec(&node, "app", &["env"]).lines().any(|l| l == "MODE=fast"));

    // describe names the secret's keys and sizes, never a value.
    let d = node.ok(&["describe", "secret", "creds"]);
    assert!(d.contains("password:  15 bytes"), "{d}");
    assert!(!d.contains(SECRET_VALUE), "{d}");

    // The store file never holds the secret, in clear or base64.
    let mut bytes = Vec::new();
    for e in std::fs::read_dir(node.root()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("store.db") {
            bytes.extend(std::fs::read(e.path()).unwrap());
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("app-config"), "the store file was not read");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
    assert!(
        !text.contains(SECRET_VALUE) && !text.contains(&b64),
        "the secret is in the store file"
    );

    // Deleting the pod takes its tmpfs mounts with it.
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    node.ok(&["delete", "pod", "app"]);
    wait_for("the pod gone", Duration::from_secs(60), || {
        node.pod("app").is_none().then_some(())
    });
    let left = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!left.contains(&uid), "mounts of the pod are left:\n{left}");
}

#[test]
fn a_missing_config_map_holds_the_pod_until_it_is_created() {
    let node = Node::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: env-waits}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command: [sleep, "3600"]
    env:
    - name: LATE
      valueFrom: {configMapKeyRef: {name: late-config, key: k}}
---
apiVersion: v1
kind: Pod
metadata: {name: volume-waits}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:1.35
    command: [sleep, "3600"]
    volumeMounts: [{name: cfg, mountPath: /cfg}]
  volumes:
  - name: cfg
    configMap: {name: late-config}
"#,
    );
    let waiting = node.wait_pod(
        "env-waits",
        "CreateContainerConfigError",
        Duration::from_secs(60),
        |p| p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError",
    );
    assert_eq!(
        waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "configmap \"late-config\" not found"
    );
    wait_for("FailedMount for the volume", Duration::from_secs(60), || {
        let d = node.ok(&["describe", "pod", "volume-waits"]);
        d.contains("MountVolume.SetUp failed for volume \"cfg\" : configmap \"late-config\" not found")
            .then_some(())
    });
    assert_ne!(node.pod("volume-waits").unwrap()["status"]["phase"], "Running");

    node.ok(&["create", "configmap", "late-config", "--from-literal=k=finally"]);
    running(&node, "env-waits");
    running(&node, "volume-waits");
    assert!(exec(&node, "env-waits", &["env"]).lines().any(|l| l == "LATE=finally"));
    assert_eq!(exec(&node, "volume-waits", &["cat", "/cfg/k"]), "finally");
}

#[test]
fn bad_config_objects_are_refused_with_the_api_servers_words() {
    let node = Node::start();
    let f = node.root().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: cert}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n",
    )
    .unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("data[tls.key]: Required value"), "{err}");
    node.ok(&["create", "configmap", "frozen", "--from-literal=a=1"]);
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\ndata: {a: \"1\"}\nimmutable: true\n");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\ndata: {a: \"2\"}\nimmutable: true\n",
    )
    .unwrap();
    let out = node.peapod(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data: Forbidden: field is immutable when `immutable` is set"),
        "{err}"
    );
    let got = node.get("configmap", "frozen").unwrap();
    assert_eq!(got["data"]["a"], "1");
    let list = node.ok(&["get", "configmaps"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("frozen") && l.split_whitespace().nth(1) == Some("1")),
        "{list}"
    );
}

#[test]
fn a_non_root_pod_reads_its_secret_through_its_fs_group() {
    let node = Node::start();
    node.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "--from-literal=t=only-for-group",
    ]);
    node.ok(&["create", "configmap", "settings", "--from-literal=mode=fast"]);
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 3000}
  containers:
  - name: c
    image: busybox:1.35
    command: [sleep, "3600"]
    volumeMounts: [{name: s, mountPath: /s}]
  volumes:
  - name: s
    secret: {secretName: token, defaultMode: 0400}
---
apiVersion: v1
kind: Pod
metadata: {name: plain-user}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
  - name: c
    image: busybox:1.35
    command: [sleep, "3600"]
    volumeMounts: [{name: cfg, mountPath: /cfg}]
  volumes:
  - name: cfg
    configMap: {name: settings, items: [{key: mode, path: nested/dir/mode}]}
"#,
    );
    running(&node, "nonroot");
    assert_eq!(exec(&node, "nonroot", &["cat", "/s/t"]), "only-for-group");
    let st = exec(&node, "nonroot", &["stat", "-L", "-c", "%g %a", "/s/t"]);
    assert_eq!(st.trim(), "3000 440");
    // Without an fsGroup a configMap's files (0644) and its directories are for anyone.
    running(&node, "plain-user");
    assert_eq!(exec(&node, "plain-user", &["cat", "/cfg/nested/dir/mode"]), "fast");
}
