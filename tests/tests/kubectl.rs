//! Stock kubectl (1.33, installed by scripts/install-kubectl.sh) against the
//! daemon's HTTPS listener, with the kubeconfig `peapod kubeconfig` prints:
//! the node's CA, bearer tokens from the token file, 401 and 403 as
//! `Status` objects, and no plain HTTP.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use peapod_tests::{http_get, wait_for, Node};

fn kubectl_binary() -> PathBuf {
    let path = std::env::var_os("PEAPOD_KUBECTL").map_or_else(
        || PathBuf::from("/usr/local/lib/peapod/kubectl/kubectl-1.33"),
        PathBuf::from,
    );
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
        let cluster = Cluster { node, home, address };
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

    fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(kubectl_binary())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .args(args)
            .env("HOME", self.home.path())
            .stdin(Stdio::null())
            .output()
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
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
    (code.trim().parse().unwrap_or(0), body.trim().to_string())
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
    let deleted = c.ok(&["delete", "pod", "hello", "--grace-period=0", "--wait=false"]);
    assert!(deleted.contains("pod \"hello\" deleted"), "{deleted}");

    // The listener speaks TLS only.
    let (code, _) = http_get(&c.address, "/version");
    assert_ne!(code, 200, "plain HTTP must not be answered");
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
