//! Stock kubectl (1.33, installed by scripts/install-kubectl.sh) against the
//! daemon's HTTPS listener, with the kubeconfig `peapod kubeconfig` prints:
//! the node's CA, bearer tokens from the token file, 401 and 403 as
//! `Status` objects, and no plain HTTP.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use peapod_tests::{pki, wait_for, Node};

/// kubectl 1.33, or `PEAPOD_KUBECTL`.
fn kubectl_binary() -> PathBuf {
    kubectl_release("1.33")
}

/// The kubectl of a minor release scripts/install-kubectl.sh installs.
fn kubectl_release(minor: &str) -> PathBuf {
    let path = match std::env::var_os("PEAPOD_KUBECTL") {
        Some(p) if minor == "1.33" => PathBuf::from(p),
        _ => PathBuf::from(format!("/usr/local/lib/peapod/kubectl/kubectl-{minor}")),
    };
    assert!(
        path.is_file(),
        "{} is missing: scripts/install-kubectl.sh installs it",
        path.display()
    );
    path
}

/// A node serving HTTPS on a free loopback port, and a kubeconfig for it.
struct Cluster {
    node: Node,
    /// kubectl's home: its kubeconfig and caches, this test's own.
    home: tempfile::TempDir,
    address: String,
    kubectl: PathBuf,
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        let mut args = vec!["--listen-https", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let node = Node::start_with_args(&args, |_| {});
        let record = node.root().join("pki/listen-https");
        let address = wait_for("the HTTPS listener", Duration::from_secs(20), || {
            std::fs::read_to_string(&record).ok().filter(|a| !a.is_empty())
        });
        let home = tempfile::Builder::new().prefix("pp-kube-").tempdir_in("/tmp").unwrap();
        let cluster = Cluster {
            node,
            home,
            address,
            kubectl: kubectl_binary(),
        };
        let mut kc_args = vec!["kubeconfig", "--root-dir"];
        let root = cluster.node.root().display().to_string();
        kc_args.push(&root);
        let token_file = extra
            .iter()
            .position(|a| *a == "--token-auth-file")
            .map(|i| extra[i + 1]);
        if let Some(f) = token_file {
            kc_args.extend(["--token-auth-file", f]);
        }
        let kubeconfig = cluster.node.ok(&kc_args);
        std::fs::write(cluster.kubeconfig(), kubeconfig).unwrap();
        cluster
    }

    fn kubeconfig(&self) -> PathBuf {
        self.home.path().join("config")
    }

    /// kubectl with `args`, its own home and caches.
    fn command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .args(args)
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        cmd
    }

    fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        self.command(kubeconfig, args).output().expect("run kubectl")
    }

    /// kubectl left running (a watch, a follow), its stdout piped.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(&self.kubeconfig(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run kubectl")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig(), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kubeconfig like the one printed, with another token.
    fn with_token(&self, token: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.kubeconfig()).unwrap();
        let line = text.lines().find(|l| l.trim_start().starts_with("token:")).unwrap();
        let path = self
            .home
            .path()
            .join(format!("config-{}", &token[..token.len().min(8)]));
        std::fs::write(&path, text.replace(line, &format!("    token: \"{token}\""))).unwrap();
        path
    }
}

/// A GET without credentials, over TLS verified against `ca`: the status
/// code and the body (python3's ssl; kubectl never sends nothing).
fn https_get(ca: &Path, address: &str, path: &str) -> (u16, String) {
    let script = r#"
import ssl, sys, urllib.request, urllib.error
ctx = ssl.create_default_context(cafile=sys.argv[1])
try:
    r = urllib.request.urlopen("https://" + sys.argv[2] + sys.argv[3], context=ctx, timeout=30)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(ca)
        .arg(address)
        .arg(path)
        .output()
        .expect("run python3");
    peapod_tests::status_and_body(&out)
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kubectl_reaches_the_daemon_with_the_kubeconfig_peapod_prints() {
    let c = Cluster::start(&[]);
    // The certificate is for 127.0.0.1 and signed by the CA in the kubeconfig.
    let version: serde_json::Value = serde_json::from_str(&c.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(version["serverVersion"]["major"], "1", "{version}");
    assert_eq!(version["serverVersion"]["minor"], "33", "{version}");
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.33.") && v.contains("peapod")),
        "{version}"
    );

    c.node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'echo hello from peapod; sleep 3600']\n",
    );
    assert_eq!(c.ok(&["get", "pods", "-o", "name"]).trim(), "pod/hello");
    wait_for("hello running, seen by kubectl", Duration::from_secs(60), || {
        (c.ok(&["get", "pod", "hello", "-o", "jsonpath={.status.phase}"]) == "Running").then_some(())
    });
    wait_for("the pod's log through kubectl", Duration::from_secs(30), || {
        c.ok(&["logs", "hello"]).contains("hello from peapod").then_some(())
    });
    // logs' parameters: -c, --tail, --timestamps, --since, and -f following.
    let tail = c.ok(&["logs", "hello", "-c", "c", "--tail=1", "--timestamps", "--since=1h"]);
    let (stamp, line) = tail.trim_end().split_once(' ').unwrap_or(("", ""));
    assert!(
        stamp.contains('T') && stamp.ends_with('Z') && line == "hello from peapod",
        "{tail}"
    );
    let mut follow = c.spawn(&["logs", "-f", "hello"]);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(follow.stdout.take().unwrap()), &mut first).unwrap();
    let still_following = follow.try_wait().unwrap().is_none();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(first.trim(), "hello from peapod");
    assert!(still_following, "logs -f returned instead of following");
    // Field selectors, on lists and watches alike.
    let running = c.ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Running,metadata.name=hello",
        "-o",
        "name",
    ]);
    assert_eq!(running.trim(), "pod/hello");
    let none = c.kubectl(&["get", "pods", "--field-selector", "status.phase!=Running", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "");
    let err = failed(&c.kubectl(&["get", "pods", "--field-selector", "spec.bogus=1"]));
    assert!(err.contains("field label not supported: spec.bogus"), "{err}");
    // describe finds the pod's own events (by involvedObject).
    let described = c.ok(&["describe", "pod", "hello"]);
    assert!(described.contains("Started"), "{described}");

    // get NAME -w: the first event (the current state) is dropped by kubectl,
    // and a change shows as a new row.
    let mut watcher = c.spawn(&["get", "pod", "hello", "-w", "-L", "tier", "--no-headers"]);
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("kubectl prints the pod first");
    assert!(first.starts_with("hello"), "{first}");
    c.ok(&["label", "pod", "hello", "tier=watched"]);
    let seen = (0..10).find_map(|_| {
        rx.recv_timeout(Duration::from_secs(10))
            .ok()
            .filter(|l| l.contains("watched"))
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(seen.is_some(), "kubectl get -w did not show the label change");

    // delete waits (an informer on metadata.name) until the pod is gone.
    let deleted = c.ok(&["delete", "pod", "hello", "--grace-period=1", "--timeout=60s"]);
    assert!(deleted.contains("pod \"hello\" deleted"), "{deleted}");
    assert!(
        c.node.pod("hello").is_none(),
        "kubectl returned before the pod was gone"
    );

    // The listener speaks TLS only: plain HTTP gets no HTTP answer (the
    // server may close before the request is even written).
    let answer = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&c.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = write!(stream, "GET /version HTTP/1.0\r\nHost: {}\r\n\r\n", c.address);
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    };
    assert!(!answer.starts_with("HTTP/"), "plain HTTP was answered: {answer}");
}

#[test]
fn tokens_decide_who_gets_in_and_the_refusals_are_status_objects() {
    let dir = tempfile::Builder::new()
        .prefix("pp-tokens-")
        .tempdir_in("/tmp")
        .unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "# admin, and a user outside system:masters\nadmintoken0123456789,alice,1,\"system:masters\"\nbobtoken0123456789,bob,2,\"dev\"\n",
    )
    .unwrap();
    let tokens_arg = tokens.display().to_string();
    let c = Cluster::start(&["--token-auth-file", &tokens_arg]);
    let config = std::fs::read_to_string(c.kubeconfig()).unwrap();
    assert!(config.contains("admintoken0123456789"), "{config}");
    c.ok(&["get", "pods"]);

    let err = failed(&c.kubectl_with(&c.with_token("wrongtoken"), &["get", "pods"]));
    assert!(err.contains("Unauthorized"), "{err}");
    let err = failed(&c.kubectl_with(&c.with_token("bobtoken0123456789"), &["get", "pods"]));
    assert!(err.contains("Forbidden") && err.contains("bob"), "{err}");

    // kubectl quotes the 403's Status message: it was read as a Status.
    assert!(err.contains("no RBAC"), "{err}");

    // Without a token only /version answers, as kube-apiserver's public info
    // (kubectl would ask for a password rather than send nothing).
    let ca = c.node.root().join("pki/ca.crt");
    let (code, body) = https_get(&ca, &c.address, "/version");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"minor\":\"33\""), "{body}");
    let (code, body) = https_get(&ca, &c.address, "/api/v1/pods");
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["reason"], "Unauthorized", "{body}");

    // The file is read again when it changes: a new token works at once.
    let mut text = std::fs::read_to_string(&tokens).unwrap();
    text.push_str("newtoken0123456789,carol,3,\"system:masters\"\n");
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&tokens, text).unwrap();
    let out = c.kubectl_with(&c.with_token("newtoken0123456789"), &["get", "pods"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: busybox:1.35
        command: [sleep, '3600']
        env:
        - {name: KEEP, value: '1'}
        - {name: DROP, value: '2'}
        ports: [{containerPort: 8080, name: http}]
";

fn deployment(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["get", "deployment", "web", "-o", "json"])).unwrap()
}

#[test]
fn apply_create_patch_label_annotate_and_edit_through_kubectl() {
    let c = Cluster::start(&[]);
    let manifest = c.home.path().join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    let m = manifest.display().to_string();
    // Validation finds an (empty) OpenAPI document, so nothing needs --validate=false.
    let said = c.ok(&["apply", "-f", &m]);
    assert!(said.contains("deployment.apps/web created"), "{said}");
    let first = deployment(&c);
    assert!(first["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    // The second apply is a strategic merge patch computed against the last
    // applied configuration: a new image, one env var gone, the other kept.
    std::fs::write(
        &manifest,
        DEPLOYMENT
            .replace("image: busybox:1.35", "image: busybox:1.36")
            .replace("        - {name: DROP, value: '2'}\n", ""),
    )
    .unwrap();
    let said = c.ok(&["apply", "-f", &m]);
    assert!(said.contains("deployment.apps/web configured"), "{said}");
    let d = deployment(&c);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox:1.36", "{container}");
    assert_eq!(
        container["env"],
        serde_json::json!([{"name": "KEEP", "value": "1"}]),
        "{container}"
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080, "{container}");
    assert!(
        d["metadata"]["generation"].as_i64() > first["metadata"]["generation"].as_i64(),
        "a spec change moves generation: {d}"
    );
    let said = c.ok(&["apply", "-f", &m]);
    assert!(said.contains("deployment.apps/web unchanged"), "{said}");

    // label and annotate (strategic merge patches of metadata).
    c.ok(&["label", "deployment", "web", "tier=front"]);
    c.ok(&["annotate", "deployment", "web", "note=first"]);
    let d = deployment(&c);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["note"], "first");
    c.ok(&["label", "deployment", "web", "tier-"]);
    assert!(deployment(&c)["metadata"]["labels"].get("tier").is_none());

    // patch in all three formats.
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"merge":"yes"}}}"#,
    ]);
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"},{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"busybox:1.37"}]"#,
    ]);
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","env":[{"name":"ADDED","value":"3"}]}]}}}}"#,
    ]);
    let d = deployment(&c);
    assert_eq!(d["metadata"]["labels"]["merge"], "yes");
    assert_eq!(d["metadata"]["labels"]["json"], "yes");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox:1.37");
    assert_eq!(
        container["env"],
        serde_json::json!([{"name": "KEEP", "value": "1"}, {"name": "ADDED", "value": "3"}]),
        "a strategic patch merges env by name: {container}"
    );
    // A JSON patch whose test fails changes nothing and says why.
    let out = c.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/metadata/labels/json","value":"no"},{"op":"remove","path":"/metadata/labels/json"}]"#,
    ]);
    let err = failed(&out);
    assert!(err.contains("test"), "{err}");
    assert_eq!(deployment(&c)["metadata"]["labels"]["json"], "yes");

    // edit with a scripted editor.
    let editor = c.home.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/note: first/note: edited/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(kubectl_binary())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .arg("--cache-dir")
        .arg(c.home.path().join("cache"))
        .args(["edit", "deployment", "web"])
        .env("HOME", c.home.path())
        .env("KUBE_EDITOR", &editor)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "edit: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(deployment(&c)["metadata"]["annotations"]["note"], "edited");

    // create -f validates too, and refuses what exists.
    let pod = c.home.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: made}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n",
    )
    .unwrap();
    let p = pod.display().to_string();
    assert!(c.ok(&["create", "-f", &p]).contains("pod/made created"));
    let err = failed(&c.kubectl(&["create", "-f", &p]));
    assert!(err.contains("AlreadyExists") || err.contains("already exists"), "{err}");
    c.ok(&["delete", "pod", "made", "--grace-period=0", "--wait=false"]);

    // Server-side apply, as an upsert: it creates, then merges.
    let ssa = c.home.path().join("ssa.yaml");
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {a: '1'}}\n",
    )
    .unwrap();
    let s = ssa.display().to_string();
    let said = c.ok(&["apply", "--server-side", "-f", &s]);
    assert!(said.contains("namespace/team serverside-applied"), "{said}");
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {a: '2', b: '3'}}\n",
    )
    .unwrap();
    c.ok(&["apply", "--server-side", "-f", &s]);
    let ns: serde_json::Value = serde_json::from_str(&c.ok(&["get", "namespace", "team", "-o", "json"])).unwrap();
    assert_eq!(ns["metadata"]["labels"]["a"], "2", "{ns}");
    assert_eq!(ns["metadata"]["labels"]["b"], "3", "{ns}");
    c.ok(&["delete", "deployment", "web", "--wait=false"]);
}

#[test]
fn kubectl_1_20_gets_applies_and_patches_too() {
    let mut c = Cluster::start(&[]);
    c.kubectl = kubectl_release("1.20");
    let version = c.ok(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["clientVersion"]["minor"], "20", "{version}");
    assert_eq!(version["serverVersion"]["minor"], "33", "{version}");
    let manifest = c.home.path().join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    let m = manifest.display().to_string();
    // 1.20 validates against the OpenAPI v2 document (empty here) by default.
    assert!(c.ok(&["apply", "-f", &m]).contains("deployment.apps/web created"));
    std::fs::write(
        &manifest,
        DEPLOYMENT.replace("image: busybox:1.35", "image: busybox:1.36"),
    )
    .unwrap();
    assert!(c.ok(&["apply", "-f", &m]).contains("deployment.apps/web configured"));
    c.ok(&["label", "deployment", "web", "tier=front"]);
    let d = deployment(&c);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        c.ok(&["get", "deployments", "-o", "name"]).trim(),
        "deployment.apps/web"
    );
}

#[test]
fn client_certificates_from_the_client_ca_are_users_too() {
    use base64::Engine;
    let dir = tempfile::Builder::new()
        .prefix("pp-clientca-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    pki::ca(d, "clients");
    pki::ca(d, "stranger");
    pki::client_certificate(d, "clients", "carol", "/O=system:masters/CN=carol");
    pki::client_certificate(d, "clients", "dave", "/O=dev/CN=dave");
    pki::client_certificate(d, "stranger", "eve", "/O=system:masters/CN=eve");
    let ca = d.join("clients.crt").display().to_string();
    let c = Cluster::start(&["--client-ca-file", &ca]);
    let with_certificate = |name: &str| {
        let b64 = |f: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join(f)).unwrap());
        let text = std::fs::read_to_string(c.kubeconfig()).unwrap();
        let line = text.lines().find(|l| l.trim_start().starts_with("token:")).unwrap();
        let path = c.home.path().join(format!("config-{name}"));
        let user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(&format!("{name}.crt")),
            b64(&format!("{name}.key"))
        );
        std::fs::write(&path, text.replace(line, &user)).unwrap();
        path
    };
    // The token still works beside certificates.
    c.ok(&["get", "pods"]);
    let out = c.kubectl_with(&with_certificate("carol"), &["get", "namespaces", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));
    let err = failed(&c.kubectl_with(&with_certificate("dave"), &["get", "pods"]));
    assert!(err.contains("Forbidden") && err.contains("\"dave\""), "{err}");
    // A certificate from another CA does not get past the handshake.
    let err = failed(&c.kubectl_with(&with_certificate("eve"), &["get", "pods"]));
    assert!(err.contains("unknown certificate authority"), "{err}");
}

/// Runs `program args` with `input` on its stdin; returns its output.
fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// `command` (a shell line) run by `script`, which gives it a pseudo-terminal
/// of 33 rows and 77 columns, as a user's terminal would be.
fn in_a_terminal(command: &str) -> Output {
    typed_in_a_terminal(command, b"")
}

/// The same, with `input` typed at the terminal.
fn typed_in_a_terminal(command: &str, input: &[u8]) -> Output {
    let line = format!("stty rows 33 cols 77; {command}");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
    run_with_input(cmd, input)
}

impl Cluster {
    /// kubectl as a shell line (for `script`).
    fn kubectl_line(&self, args: &str) -> String {
        format!(
            "HOME={home} {kubectl} --kubeconfig {home}/config --cache-dir {home}/cache {args}",
            home = self.home.path().display(),
            kubectl = self.kubectl.display()
        )
    }

    fn kubectl_input(&self, args: &[&str], input: &[u8]) -> Output {
        run_with_input(self.command(&self.kubeconfig(), args), input)
    }
}

const SHELL_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: shell}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600'], workingDir: /tmp}\n";

#[test]
fn exec_and_cp_through_kubectl_over_websocket_and_spdy() {
    let mut c = Cluster::start(&[]);
    c.node.apply(SHELL_POD);
    c.node.wait_pod("shell", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    // 1.33 speaks WebSocket v5 first; 1.20 speaks SPDY/3.1 only.
    for minor in ["1.33", "1.20"] {
        c.kubectl = kubectl_release(minor);
        let out = c.kubectl(&["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; pwd; exit 3"]);
        assert_eq!(out.status.code(), Some(3), "{minor}: {}", failed(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n/tmp\n", "{minor}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("err"),
            "{minor}: {}",
            failed(&out)
        );

        let out = c.kubectl_input(
            &["exec", "-i", "shell", "-c", "c", "--", "tr", "a-z", "A-Z"],
            b"hello\nworld\n",
        );
        assert!(out.status.success(), "{minor}: {}", failed(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nWORLD\n", "{minor}");

        // A terminal: the command's stdio is a pty of the caller's size.
        let out = in_a_terminal(&c.kubectl_line("exec -it shell -- sh -c 'tty; stty size; echo TERM=$TERM'"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{minor}: {text}");
        assert!(text.contains("/dev/pts/"), "{minor}: {text}");
        assert!(
            text.contains("33 77"),
            "{minor}: the terminal's size did not arrive: {text}"
        );
        assert!(text.contains("TERM=xterm"), "{minor}: {text}");

        // cp is tar over exec, both ways; more than one flow-control window of data.
        let local = c.home.path().join(format!("data-{minor}"));
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(&local, &data).unwrap();
        let remote = format!("shell:/tmp/data-{minor}");
        let out = c.kubectl(&["cp", &local.display().to_string(), &remote]);
        assert!(out.status.success(), "{minor} cp in: {}", failed(&out));
        let back = c.home.path().join(format!("back-{minor}"));
        let out = c.kubectl(&["cp", &remote, &back.display().to_string()]);
        assert!(out.status.success(), "{minor} cp out: {}", failed(&out));
        assert!(std::fs::read(&back).unwrap() == data, "{minor}: cp changed the file");

        // Refusals are Status errors kubectl prints.
        let out = c.kubectl(&["exec", "shell", "-c", "nope", "--", "true"]);
        assert!(!out.status.success());
        assert!(
            failed(&out).contains("container nope is not valid"),
            "{minor}: {}",
            failed(&out)
        );
    }

    // peapod's own exec: exit codes, stdin, a terminal.
    let out = c
        .node
        .peapod(&["exec", "shell", "--", "sh", "-c", "echo via peapod; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", failed(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via peapod\n");
    let mut cmd = Command::new(peapod_tests::binary());
    cmd.args(["exec", "-i", "pod/shell", "--", "wc", "-c"])
        .env("PEAPOD_SOCKET", c.node.run_dir().join("peapod.sock"));
    let out = run_with_input(cmd, &[7u8; 100_000]);
    assert!(out.status.success(), "{}", failed(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
    let out = in_a_terminal(&format!(
        "PEAPOD_SOCKET={} {} exec -it shell -- sh -c 'tty; stty size'",
        c.node.run_dir().join("peapod.sock").display(),
        peapod_tests::binary().display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("/dev/pts/") && text.contains("33 77"),
        "{text}"
    );
    // Terminal execs leave no console sockets or links behind.
    let containers = c.node.run_dir().join("containers");
    for dir in std::fs::read_dir(&containers).unwrap().flatten() {
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with("tenant-tty-"),
                "{name} left in {}",
                dir.path().display()
            );
        }
    }
    let shims = std::fs::read_dir(c.node.run_dir().join("shims")).unwrap().flatten();
    let sockets: Vec<_> = shims
        .filter(|e| e.file_name().to_string_lossy().starts_with("tty-"))
        .collect();
    assert!(sockets.is_empty(), "{sockets:?}");
    // peapod cp, both ways, a directory included.
    let tree = c.home.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(tree.join("sub/b.bin"), vec![9u8; 200_000]).unwrap();
    c.node.ok(&["cp", &tree.display().to_string(), "shell:/tmp"]);
    let listing = c.node.ok(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "cat /tmp/tree/a.txt; wc -c < /tmp/tree/sub/b.bin",
    ]);
    assert_eq!(listing.split_whitespace().collect::<Vec<_>>(), ["alpha", "200000"]);
    let back = c.home.path().join("tree-back");
    c.node.ok(&["cp", "shell:/tmp/tree", &back.display().to_string()]);
    assert_eq!(std::fs::read_to_string(back.join("a.txt")).unwrap(), "alpha\n");
    assert_eq!(std::fs::read(back.join("sub/b.bin")).unwrap(), vec![9u8; 200_000]);
    c.node.ok(&[
        "cp",
        &tree.join("a.txt").display().to_string(),
        "shell:/tmp/renamed.txt",
    ]);
    let file_back = c.home.path().join("renamed-back.txt");
    c.node
        .ok(&["cp", "default/shell:/tmp/renamed.txt", &file_back.display().to_string()]);
    assert_eq!(std::fs::read_to_string(&file_back).unwrap(), "alpha\n");

    let out = c.node.peapod(&["exec", "gone", "--", "true"]);
    assert!(!out.status.success());
    assert!(failed(&out).contains("pods \"gone\" not found"), "{}", failed(&out));
}

/// An HTTP GET of `path` from `127.0.0.1:port`; the whole answer.
fn http_get_local(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read the answer: {e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The local port `port-forward` reports forwarding from.
fn forwarded_port(child: &mut std::process::Child) -> u16 {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok());
    // Keep reading so kubectl never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    port.unwrap_or_else(|| panic!("no port in {line:?}"))
}

const WEB_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'mkdir -p /tmp/www && echo hello through the tunnel > /tmp/www/index.html && head -c 1000000 /dev/zero | tr \"\\0\" x > /tmp/www/big && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www']\n";

#[test]
fn port_forward_reaches_the_pods_loopback_through_kubectl() {
    let mut c = Cluster::start(&[]);
    c.node.apply(WEB_POD);
    c.node.wait_pod("web", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    // 1.33 tunnels SPDY in a WebSocket; 1.20 speaks SPDY.
    for minor in ["1.33", "1.20"] {
        c.kubectl = kubectl_release(minor);
        let mut child = c.spawn(&["port-forward", "pod/web", ":8080"]);
        let port = forwarded_port(&mut child);
        // httpd listens on the pod's own 127.0.0.1: only reachable inside its namespace.
        let answer = http_get_local(port, "/index.html")
            .unwrap_or_else(|e| panic!("{minor}: {e}; the daemon's log:\n{}", c.node.daemon_log()));
        assert!(answer.ends_with("hello through the tunnel\n"), "{minor}: {answer}");
        // Several connections at once, and more than a window of data each.
        let big: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || http_get_local(port, "/big")))
            .collect();
        for b in big {
            let a = b.join().unwrap().unwrap_or_else(|e| panic!("{minor}: {e}"));
            let body = a.split("\r\n\r\n").nth(1).unwrap_or("");
            assert_eq!(body.len(), 1_000_000, "{minor}: {}", &a[..a.len().min(300)]);
            assert!(body.bytes().all(|b| b == b'x'));
        }
        let _ = child.kill();
        let _ = child.wait();
        // A port nothing listens on in the pod: the connection is closed with nothing on it.
        let mut child = c.spawn(&["port-forward", "pod/web", ":9999"]);
        let port = forwarded_port(&mut child);
        let answer = http_get_local(port, "/");
        let _ = child.kill();
        let _ = child.wait();
        assert!(matches!(answer.as_deref(), Ok("") | Err(_)), "{minor}: {answer:?}");
    }
    // peapod's own port-forward, over the daemon's socket.
    let mut child = Command::new(peapod_tests::binary())
        .args(["port-forward", "pod/web", ":8080", "0:9999"])
        .env("PEAPOD_SOCKET", c.node.run_dir().join("peapod.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = forwarded_port(&mut child);
    let answers: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || http_get_local(port, "/big")))
        .collect();
    for a in answers {
        let a = a.join().unwrap().unwrap_or_else(|e| panic!("peapod port-forward: {e}"));
        assert!(
            a.contains("200 OK") && a.ends_with(&"x".repeat(1000)),
            "{}",
            &a[..a.len().min(300)]
        );
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.node.peapod(&["port-forward", "missing", "8080"]);
    assert!(failed(&out).contains("not found"), "{}", failed(&out));

    let out = c.kubectl(&["port-forward", "pod/missing", ":8080"]);
    assert!(!out.status.success());
    assert!(failed(&out).contains("not found"), "{}", failed(&out));
}

/// A pod whose container reads its stdin (`stdin: true`, `stdinOnce`) and
/// answers each line on stdout and stderr.
fn echo_pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1.35\n    stdin: true\n    stdinOnce: true\n    command: [sh, -c, 'echo ready; while read l; do echo \"got $l\"; echo \"err $l\" >&2; done; echo bye']\n"
    )
}

#[test]
fn attach_and_run_interactively_through_kubectl_and_peapod() {
    let mut c = Cluster::start(&[]);
    for minor in ["1.33", "1.20"] {
        c.kubectl = kubectl_release(minor);
        let pod = format!("echo-{}", minor.replace('.', ""));
        c.node.apply(&echo_pod(&pod));
        c.node.wait_pod(&pod, "running", Duration::from_secs(60), |p| {
            p["status"]["phase"] == "Running"
        });
        // Output from now on, stdin to the process; its end (stdinOnce) ends the loop.
        let out = c.kubectl_input(&["attach", "-i", &pod], b"one\ntwo\n");
        assert!(out.status.success(), "{minor}: {}", failed(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.ends_with("got one\ngot two\nbye\n"), "{minor}: {stdout:?}");
        assert!(
            !stdout.contains("ready"),
            "{minor}: output from before the attach: {stdout:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("err two"),
            "{minor}: {}",
            failed(&out)
        );
        c.node.wait_pod(&pod, "succeeded", Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Succeeded"
        });

        // kubectl run -i --rm: create, wait, attach, delete.
        let name = format!("run-{}", minor.replace('.', ""));
        let args = [
            "run",
            &name,
            "-i",
            "--rm",
            "--restart=Never",
            "--image=busybox:1.35",
            "--",
            "sh",
            "-c",
            "read x; echo got $x",
        ];
        let out = c.kubectl_input(&args, b"hello\n");
        assert!(out.status.success(), "{minor}: {}", failed(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("got hello"),
            "{minor}: {}",
            failed(&out)
        );
        wait_for("the run pod deleted", Duration::from_secs(30), || {
            c.node.pod(&name).is_none().then_some(())
        });

        // kubectl run -it: the container's terminal, the caller's size on it.
        let name = format!("tty-{}", minor.replace('.', ""));
        let line = c.kubectl_line(&format!(
            "run {name} -it --rm --restart=Never --image=busybox:1.35 -- sh -c 'read x; tty; stty size; echo typed $x'"
        ));
        let out = typed_in_a_terminal(&line, b"go\n");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{minor}: {text}");
        assert!(
            text.contains("/dev/pts/") && text.contains("33 77") && text.contains("typed go"),
            "{minor}: {text}"
        );
    }

    // peapod attach.
    c.node.apply(&echo_pod("echo-peapod"));
    c.node.wait_pod("echo-peapod", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    let mut cmd = Command::new(peapod_tests::binary());
    cmd.args(["attach", "-i", "echo-peapod"])
        .env("PEAPOD_SOCKET", c.node.run_dir().join("peapod.sock"));
    let out = run_with_input(cmd, b"three\n");
    assert!(out.status.success(), "{}", failed(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("got three\nbye\n"),
        "{}",
        failed(&out)
    );
    // Once the pod has ended, attach is refused as the API server refuses it.
    c.node
        .wait_pod("echo-peapod", "succeeded", Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Succeeded"
        });
    let out = c.node.peapod(&["attach", "echo-peapod"]);
    assert!(
        failed(&out).contains("cannot attach to a container in a completed pod"),
        "{}",
        failed(&out)
    );
}

/// The ReplicaSets of deployment `web`, as (name, replicas, image).
fn replica_sets(c: &Cluster) -> Vec<(String, u64, String)> {
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["get", "rs", "-l", "app=web", "-o", "json"])).unwrap();
    let mut out: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["name"].as_str().unwrap_or("").to_string(),
                rs["spec"]["replicas"].as_u64().unwrap_or(0),
                rs["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn scale_set_image_rollout_and_cascade_through_kubectl() {
    for minor in ["1.33", "1.20"] {
        let mut c = Cluster::start(&[]);
        c.kubectl = kubectl_release(minor);
        // The second image of the rollout (the test image under another tag).
        c.node.import_image("busybox:1.36");
        let manifest = c.home.path().join("web.yaml");
        std::fs::write(&manifest, DEPLOYMENT.replace("replicas: 0", "replicas: 1")).unwrap();
        c.ok(&["apply", "-f", &manifest.display().to_string()]);
        // scale goes through deployments/scale (autoscaling/v1 Scale).
        assert!(
            c.ok(&["scale", "deployment/web", "--replicas=3"]).contains("scaled"),
            "{minor}"
        );
        let status = c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
        assert!(status.contains("successfully rolled out"), "{minor}: {status}");
        assert_eq!(deployment(&c)["status"]["readyReplicas"], 3, "{minor}");
        // set image rolls out a second ReplicaSet; the first is scaled to 0 and kept.
        c.ok(&["set", "image", "deployment/web", "c=busybox:1.36"]);
        let status = c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
        assert!(status.contains("successfully rolled out"), "{minor}: {status}");
        let sets = replica_sets(&c);
        assert_eq!(sets.len(), 2, "{minor}: {sets:?}");
        assert!(
            sets.iter().any(|(_, n, image)| *n == 3 && image == "busybox:1.36"),
            "{minor}: {sets:?}"
        );
        assert!(
            sets.iter().any(|(_, n, image)| *n == 0 && image == "busybox:1.35"),
            "{minor}: {sets:?}"
        );
        let history = c.ok(&["rollout", "history", "deployment/web"]);
        assert!(history.contains('1') && history.contains('2'), "{minor}: {history}");
        c.ok(&["rollout", "undo", "deployment/web"]);
        c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
        assert_eq!(
            deployment(&c)["spec"]["template"]["spec"]["containers"][0]["image"],
            "busybox:1.35",
            "{minor}"
        );
        // --cascade=orphan leaves the ReplicaSets (and their pods) behind, without their owner.
        let cascade = if minor == "1.20" {
            "--cascade=false"
        } else {
            "--cascade=orphan"
        };
        c.ok(&["delete", "deployment", "web", cascade, "--wait=true", "--timeout=60s"]);
        let left = replica_sets(&c);
        assert_eq!(left.len(), 2, "{minor}: {left:?}");
        let v: serde_json::Value = serde_json::from_str(&c.ok(&["get", "rs", "-l", "app=web", "-o", "json"])).unwrap();
        for rs in v["items"].as_array().unwrap() {
            let owners = rs["metadata"]["ownerReferences"].as_array().map_or(0, Vec::len);
            assert_eq!(owners, 0, "{minor}: orphaned ReplicaSets lose their owner: {rs}");
        }
    }
}

#[test]
fn explain_reads_the_openapi_v3_documents() {
    let c = Cluster::start(&[]);
    let image = c.ok(&["explain", "pods.spec.containers.image"]);
    assert!(
        image.contains("KIND:       Pod") && image.contains("VERSION:    v1"),
        "{image}"
    );
    assert!(image.contains("FIELD: image <string>"), "{image}");
    assert!(image.contains("Container image name"), "{image}");
    let strategy = c.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        strategy.contains("GROUP:      apps") && strategy.contains("rollingUpdate"),
        "{strategy}"
    );
    let out = c.kubectl(&["explain", "pods.spec.nothing"]);
    assert!(!out.status.success());
    assert!(failed(&out).contains("nothing"), "{}", failed(&out));
    // The discovery names a document per served group/version; others have none.
    let paths: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", "/openapi/v3"])).unwrap();
    assert!(
        paths["paths"]["apis/batch/v1"]["serverRelativeURL"].is_string(),
        "{paths}"
    );
    let out = c.kubectl(&["get", "--raw", "/openapi/v3/apis/policy/v1"]);
    assert!(
        failed(&out).contains("NotFound") || failed(&out).contains("not found"),
        "{}",
        failed(&out)
    );
}

#[test]
fn unknown_fields_are_refused_warned_or_ignored_as_kubectl_asks() {
    let c = Cluster::start(&[]);
    let manifest = c.home.path().join("typo.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: typo}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35, imagee: x, command: [sleep, '3600']}\n",
    )
    .unwrap();
    let m = manifest.display().to_string();
    // kubectl's default (--validate=strict): the server refuses, naming the field.
    let out = c.kubectl(&["apply", "-f", &m]);
    let refused = failed(&out);
    assert!(
        refused.contains(r#"strict decoding error: unknown field "spec.containers[0].imagee""#),
        "{refused}"
    );
    assert!(c.node.pod("typo").is_none(), "nothing was written");
    // --validate=warn: written, with the API server's warning.
    let out = c.kubectl(&["apply", "--validate=warn", "-f", &m]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains(r#"Warning: unknown field "spec.containers[0].imagee""#),
        "{warned}"
    );
    // kubectl patch asks for no validation: the API server's default, a warning.
    let out = c.kubectl(&["patch", "pod", "typo", "-p", r#"{"spec":{"activeDeadlineSecondz":5}}"#]);
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{warned}");
    assert!(
        warned.contains(r#"Warning: unknown field "spec.activeDeadlineSecondz""#),
        "{warned}"
    );
    c.ok(&["label", "pod", "typo", "checked=yes-it-is"]);
    c.ok(&["delete", "pod", "typo", "--wait=false"]);
}

#[test]
fn services_endpoints_and_ip_addresses_through_kubectl() {
    let c = Cluster::start(&[]);
    // `kubernetes` has the range's first address; this listener is on
    // loopback, out of the pods' reach, so it has no endpoint.
    let first = c.node.service_cidr().replace(".0/24", ".1");
    assert_eq!(
        c.ok(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]),
        first
    );
    assert_eq!(
        c.ok(&["get", "endpointslice", "kubernetes", "-o", "jsonpath={.endpoints}"]),
        "[]"
    );
    assert!(c.ok(&["get", "endpoints", "kubernetes"]).contains("<none>"));
    let table = c.ok(&["get", "svc"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        "{table}"
    );
    assert!(table.contains("443/TCP"), "{table}");

    c.node.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox:1.35, command: [sleep, '3600']}\n",
    );
    let pod = c.node.wait_pod("web", "running", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running"
    });
    let pod_ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        c.ok(&[
            "expose",
            "pod",
            "web",
            "--port",
            "80",
            "--target-port",
            "8080",
            "--type",
            "NodePort"
        ])
        .trim(),
        "service/web exposed"
    );
    let svc: serde_json::Value = serde_json::from_str(&c.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let range: Vec<u64> = c
        .node
        .node_port_range()
        .split('-')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        (range[0]..=range[1]).contains(&node_port),
        "{node_port} outside {range:?}"
    );
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    wait_for("the pod in the service's endpoints", Duration::from_secs(30), || {
        c.ok(&["get", "endpoints", "web"])
            .contains(&format!("{pod_ip}:8080"))
            .then_some(())
    });
    let described = c.ok(&["describe", "svc", "web"]);
    assert!(
        described.contains(&format!("{pod_ip}:8080")) && described.contains("NodePort:"),
        "{described}"
    );
    let slices = c.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
    assert!(slices.contains("IPv4") && slices.contains(&pod_ip), "{slices}");
    let addresses = c.ok(&["get", "ipaddresses"]);
    assert!(
        addresses.contains(&cluster_ip) && addresses.contains("services/default/web"),
        "{addresses}"
    );
    c.ok(&["delete", "svc", "web"]);
    assert!(
        !c.ok(&["get", "ipaddresses"]).contains(&cluster_ip),
        "the address is released"
    );
}

#[test]
fn config_maps_secrets_and_quotas_through_kubectl() {
    let c = Cluster::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("app.env");
    std::fs::write(&env, "MODE=fast\nLEVEL=3\n").unwrap();
    assert_eq!(
        c.ok(&["create", "configmap", "app", "--from-env-file", env.to_str().unwrap()])
            .trim(),
        "configmap/app created"
    );
    assert_eq!(
        c.ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=kubectl-s3cret"
        ])
        .trim(),
        "secret/creds created"
    );
    assert_eq!(c.ok(&["get", "cm", "app", "-o", "jsonpath={.data.MODE}"]), "fast");
    assert_eq!(
        c.ok(&["get", "secret", "creds", "-o", "jsonpath={.data.password}"]),
        "a3ViZWN0bC1zM2NyZXQ="
    );
    let table = c.ok(&["get", "secrets"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"], "{table}");
    assert!(table.contains("creds") && table.contains("Opaque"), "{table}");
    // kubectl's own describer: sizes, never values.
    let described = c.ok(&["describe", "secret", "creds"]);
    assert!(described.contains("password:  14 bytes"), "{described}");
    assert!(!described.contains("kubectl-s3cret"), "{described}");

    // kubectl sends these as protobuf (1.31+): a namespace too.
    assert_eq!(
        c.ok(&["create", "namespace", "from-kubectl"]).trim(),
        "namespace/from-kubectl created"
    );
    assert_eq!(
        c.ok(&[
            "create",
            "deployment",
            "made",
            "--image=busybox:1.35",
            "--replicas=0",
            "--",
            "sleep",
            "3600"
        ])
        .trim(),
        "deployment.apps/made created"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "made",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].command}"
        ]),
        "0 [\"sleep\",\"3600\"]"
    );
    // A quota refuses through kubectl with the API server's words.
    c.ok(&["create", "quota", "few", "--hard=configmaps=1"]);
    let out = c.kubectl(&["create", "configmap", "second"]);
    assert!(
        failed(&out).contains(
            "configmaps \"second\" is forbidden: exceeded quota: few, requested: configmaps=1, used: configmaps=1, limited: configmaps=1"
        ),
        "{}",
        failed(&out)
    );
    wait_for("the quota's usage", Duration::from_secs(30), || {
        c.ok(&["get", "quota", "few", "-o", "jsonpath={.status.used.configmaps}"])
            .eq("1")
            .then_some(())
    });
    let described = c.ok(&["describe", "quota", "few"]);
    assert!(described.contains("configmaps  1     1"), "{described}");
}
