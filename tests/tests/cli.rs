//! peapod's own CLI with kubectl's habits: `-n` before the verb,
//! `-o jsonpath=`, `go-template=` and `custom-columns=`, `TYPE/NAME`, `delete -l`, `--all`
//! and `--now`, a multi-document apply that applies what it can, and shell
//! completion.

use std::time::Duration;

use peapod_tests::{wait_for, Node};

fn pods_named(node: &Node, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = node
        .ok(&["get", "pods", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[test]
fn the_cli_takes_kubectls_habits() {
    let node = Node::start();
    let dir = tempfile::Builder::new().prefix("pp-cli-").tempdir_in("/tmp").unwrap();

    // A multi-document apply applies every document it can and names the
    // one it cannot, by file and line; the command fails.
    let manifest = dir.path().join("all.yaml");
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n");
    text.push_str("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n---\n");
    for (name, app) in [("a", "front"), ("b", "front"), ("c", "back")] {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: team, labels: {{app: {app}}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: busybox:1.35, command: [sleep, '3600']}}\n---\n"
        ));
    }
    std::fs::write(&manifest, &text).unwrap();
    let m = manifest.display().to_string();
    let out = node.peapod(&["apply", "-f", &m]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "one document failed: {stdout}");
    assert!(
        stderr.contains(&format!("{m}:5")) && stderr.contains("Widget"),
        "{stderr}"
    );
    assert!(
        stdout.contains("namespace/team created") && stdout.contains("pod/c created"),
        "{stdout} / {stderr}"
    );

    // -n before the verb; jsonpath and custom-columns.
    assert_eq!(
        node.ok(&["-n", "team", "get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]),
        "a b c"
    );
    wait_for("the pods running", Duration::from_secs(60), || {
        let phases = node.ok(&[
            "get",
            "pods",
            "-n",
            "team",
            "-o",
            "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
        ]);
        (phases.lines().filter(|p| *p == "Running").count() == 3).then_some(())
    });
    let columns = node.ok(&[
        "get",
        "pods",
        "-n",
        "team",
        "-l",
        "app=back",
        "-o",
        "custom-columns=NAME:.metadata.name,APP:.metadata.labels.app,NODE:.spec.nodeName,GONE:.status.nothing",
    ]);
    let lines: Vec<Vec<&str>> = columns.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "APP", "NODE", "GONE"], "{columns}");
    assert_eq!(lines[1][..2], ["c", "back"], "{columns}");
    assert_eq!(lines[1][3], "<none>", "{columns}");
    let err = node.peapod(&["get", "pods", "-o", "jsonpath={.items[*]"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("jsonpath"));

    // go-template, inline and from a file: a List for a type, the object
    // for one name, kubectl's functions, <no value> for a missing key.
    assert_eq!(
        node.ok(&[
            "get",
            "pods",
            "-n",
            "team",
            "-o",
            r#"go-template={{range .items}}{{if eq .metadata.labels.app "front"}}{{.metadata.name}} {{end}}{{end}}"#,
        ]),
        "a b "
    );
    let template = dir.path().join("t.tmpl");
    std::fs::write(
        &template,
        "{{.metadata.name}}/{{.metadata.labels.missing}}/{{exists . \"spec\" \"containers\" 0}}/{{len .spec.containers}}",
    )
    .unwrap();
    assert_eq!(
        node.ok(&[
            "get",
            "pod",
            "c",
            "-n",
            "team",
            "-o",
            &format!("go-template-file={}", template.display())
        ]),
        "c/<no value>/true/1"
    );
    let err = node.peapod(&["get", "pods", "-n", "team", "-o", "go-template={{.items"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("error parsing template"));

    // TYPE/NAME for get and describe; field selectors.
    assert_eq!(
        node.ok(&["get", "pod/c", "pod/a", "-n", "team", "-o", "name"]).trim(),
        "pod/c\npod/a"
    );
    assert!(node
        .ok(&["describe", "pod/c", "-n", "team"])
        .contains("Name:         c"));
    let running = node.ok(&[
        "get",
        "pods",
        "-n",
        "team",
        "--field-selector",
        "status.phase=Running,metadata.name!=a",
        "-o",
        "name",
    ]);
    assert_eq!(running.trim(), "pod/b\npod/c");
    let bad = node.peapod(&["get", "pods", "--field-selector", "spec.nope=1"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("field label not supported: spec.nope"));

    // -l, --field-selector, --all and -A on the verbs that change or
    // describe objects, as kubectl takes them.
    assert_eq!(
        node.ok(&["label", "pods", "-l", "app=front", "-n", "team", "tier=web"])
            .trim(),
        "pod/a labeled\npod/b labeled"
    );
    assert_eq!(
        node.ok(&["get", "pods", "-n", "team", "-l", "tier=web", "-o", "name"])
            .trim(),
        "pod/a\npod/b"
    );
    assert_eq!(
        node.ok(&["annotate", "pods", "--all", "-n", "team", "note=x"])
            .lines()
            .count(),
        3
    );
    assert_eq!(
        node.ok(&[
            "annotate",
            "pods",
            "-A",
            "--field-selector",
            "metadata.name=c",
            "note=y",
            "--overwrite"
        ])
        .trim(),
        "pod/c annotated"
    );
    assert_eq!(
        node.ok(&[
            "get",
            "pod",
            "c",
            "-n",
            "team",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "y"
    );
    let described = node.ok(&["describe", "pods", "-A", "-l", "app=back"]);
    assert!(
        described.contains("Name:         c") && !described.contains("Name:         a"),
        "{described}"
    );
    let described = node.ok(&["describe", "pods", "-n", "team"]);
    assert_eq!(described.matches("Name:         ").count(), 3, "{described}");
    let err = node.peapod(&["label", "pod", "a", "-A", "x=1"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("-A (--all-namespaces) needs a resource type"));
    let err = node.peapod(&["label", "pods", "-l", "app=nobody", "-n", "team", "x=1"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no objects passed to label"));

    // delete TYPE/NAME, -l, --all.
    assert!(node
        .ok(&["delete", "pod/a", "-n", "team", "--now"])
        .contains("pod \"a\" deleted"));
    assert_eq!(pods_named(&node, "team"), ["b", "c"]);
    assert!(node
        .ok(&["delete", "pods", "-l", "app=front", "-n", "team"])
        .contains("pod \"b\" deleted"));
    assert_eq!(pods_named(&node, "team"), ["c"]);
    let err = node.peapod(&["delete", "pods", "c", "--all", "-n", "team"]);
    assert!(!err.status.success(), "a name with --all is refused");
    // exec, attach, logs and port-forward take TYPE/NAME of a workload; a
    // type alone selects nothing.
    let err = node.peapod(&["exec", "deploy/none", "-n", "team", "--", "true"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("not found"), "{err:?}");
    node.ok(&[
        "delete",
        "pods",
        "-A",
        "--field-selector",
        "metadata.namespace=team",
        "--now",
    ]);
    assert!(pods_named(&node, "team").is_empty());

    // Shell completion from clap.
    let bash = node.ok(&["completion", "bash"]);
    assert!(
        bash.contains("_peapod()") && bash.contains("delete"),
        "a bash completion function"
    );
    assert!(node.ok(&["completion", "zsh"]).starts_with("#compdef peapod"));
}

#[test]
fn annotate_patch_and_edit() {
    let node = Node::start();
    node.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1.35\n        env: [{name: KEEP, value: '1'}, {name: DROP, value: '2'}]\n",
    );
    let get = || -> serde_json::Value {
        serde_json::from_str(&node.ok(&["get", "deployment", "web", "-o", "json"])).unwrap()
    };
    assert!(node
        .ok(&["annotate", "deployment", "web", "note=first"])
        .contains("annotated"));
    assert_eq!(get()["metadata"]["annotations"]["note"], "first");

    // The default is a strategic merge patch: env merges by name.
    node.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","env":[{"name":"DROP","$patch":"delete"}]}]}}}}"#,
    ]);
    assert_eq!(
        get()["spec"]["template"]["spec"]["containers"][0]["env"],
        serde_json::json!([{"name": "KEEP", "value": "1"}])
    );
    node.ok(&[
        "patch",
        "deploy/web",
        "--type",
        "merge",
        "-p",
        "metadata: {labels: {m: '1'}}",
    ]);
    assert_eq!(get()["metadata"]["labels"]["m"], "1");
    let same = node.ok(&[
        "patch",
        "deploy/web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":0}]"#,
    ]);
    assert!(same.contains("patched (no change)"), "{same}");
    let bad = node.peapod(&[
        "patch",
        "deploy/web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/nope"}]"#,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nope"));

    // edit: what the editor leaves is written back.
    let dir = tempfile::Builder::new().prefix("pp-edit-").tempdir_in("/tmp").unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/note: first/note: edited/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(peapod_tests::binary())
        .args(["edit", "deployment", "web"])
        .env("PEAPOD_SOCKET", node.run_dir().join("peapod.sock"))
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("edited"));
    assert_eq!(get()["metadata"]["annotations"]["note"], "edited");
}

#[test]
fn logs_of_a_workload_and_of_a_selector() {
    let node = Node::start();
    node.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - {name: c, image: busybox:1.35, command: [sh, -c, 'echo hi from $HOSTNAME; sleep 3600']}\n",
    );
    let pods = wait_for("two web pods logging", Duration::from_secs(60), || {
        let names = pods_named(&node, "default");
        (names.len() == 2 && names.iter().all(|n| node.logs(n, "c").contains("hi from"))).then_some(names)
    });
    // TYPE/NAME of a workload: one of its pods, and which one is said.
    let out = node.peapod(&["logs", "deploy/web"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let chosen = stderr
        .trim()
        .strip_prefix("Found 2 pods, using pod/")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(pods.iter().any(|p| p == chosen), "{chosen} not in {pods:?}");
    assert_eq!(stdout, format!("hi from {chosen}\n"));
    assert_eq!(
        node.ok(&["logs", &format!("pod/{chosen}")]),
        format!("hi from {chosen}\n")
    );
    // -l: every selected pod, each line with its pod and container.
    let all = node.ok(&["logs", "-l", "app=web"]);
    let mut lines: Vec<&str> = all.lines().collect();
    lines.sort();
    let mut want: Vec<String> = pods.iter().map(|p| format!("[pod/{p}/*] hi from {p}")).collect();
    want.sort();
    assert_eq!(lines, want);
    let none = node.peapod(&["logs", "-l", "app=nothing"]);
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No resources found"),
        "{none:?}"
    );
    let both = node.peapod(&["logs", "web", "-l", "app=web"]);
    assert!(!both.status.success());
    node.ok(&["delete", "deploy/web"]);
}

#[test]
fn unknown_fields_are_refused_or_warned_about_as_validate_asks() {
    let node = Node::start();
    let dir = tempfile::Builder::new().prefix("pp-cli-").tempdir_in("/tmp").unwrap();
    let manifest = dir.path().join("typo.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: typo}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox:1.35, imagee: x, command: [sleep, '3600']}\n",
    )
    .unwrap();
    let m = manifest.display().to_string();
    // As kubectl: strict by default, the unknown field named with where it
    // is; nothing is created.
    let out = node.peapod(&["apply", "-f", &m]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Error from server (BadRequest)")
            && stderr.contains(&format!("pod/typo from {m}:1"))
            && stderr.contains(r#"strict decoding error: unknown field "spec.containers[0].imagee""#),
        "{stderr}"
    );
    assert!(!node.peapod(&["get", "pod", "typo"]).status.success());
    let out = node.peapod(&["create", "-f", &m]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("strict decoding error"));
    // --validate=warn creates it with a warning; an update with
    // --validate=false is silent.
    let out = node.peapod(&["apply", "--validate=warn", "-f", &m]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"Warning: unknown field "spec.containers[0].imagee""#),
        "{stderr}"
    );
    let second = dir.path().join("typo2.yaml");
    std::fs::write(
        &second,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("{name: typo}", "{name: typo2}"),
    )
    .unwrap();
    let out = node.peapod(&["create", "--validate=false", "-f", &second.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Warning"), "{out:?}");
    let out = node.peapod(&["apply", "--validate=sometimes", "-f", &m]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be one of: strict (or true), warn, ignore (or false)"));
    node.ok(&["delete", "pod", "typo", "typo2", "--now"]);
}
