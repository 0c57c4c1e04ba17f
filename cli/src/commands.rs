//! The client verbs.

use crate::client::Client;
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use peapod_core::kinds::{self, Kind};
use peapod_core::manifest;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ApplyArgs {
    /// Manifest file(s), `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    validate: ValidateArg,
}

/// kubectl's `--validate`: what the server does with fields the kind's
/// schema does not declare.
#[derive(Args)]
pub struct ValidateArg {
    /// strict (or true): refuse unknown fields; warn: print a warning for
    /// each; ignore (or false): neither.
    #[arg(long, default_value = "strict", value_name = "MODE")]
    validate: String,
}

impl ValidateArg {
    /// The `fieldValidation=` query of a write.
    fn query(&self) -> Result<&'static str> {
        Ok(match self.validate.as_str() {
            "strict" | "true" => "fieldValidation=Strict",
            "warn" => "fieldValidation=Warn",
            "ignore" | "false" => "fieldValidation=Ignore",
            other => bail!(
                "error: invalid - validate option {other:?}; must be one of: strict (or true), warn, ignore (or false)"
            ),
        })
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// `namespace NAME`, `configmap NAME`, `secret generic|docker-registry|tls NAME`, or use -f.
    what: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    validate: ValidateArg,
    /// configmap, secret generic: `key=value` (repeatable).
    #[arg(long)]
    from_literal: Vec<String>,
    /// configmap, secret generic: `[key=]path`; a directory gives a key per file.
    #[arg(long)]
    from_file: Vec<String>,
    /// configmap, secret generic: a file of `KEY=value` lines.
    #[arg(long)]
    from_env_file: Vec<String>,
    /// secret generic: the Secret's type (default Opaque).
    #[arg(long = "type")]
    secret_type: Option<String>,
    /// secret docker-registry: the registry.
    #[arg(long, default_value = "https://index.docker.io/v1/")]
    docker_server: String,
    /// secret docker-registry: credentials.
    #[arg(long, default_value = "")]
    docker_username: String,
    #[arg(long, default_value = "")]
    docker_password: String,
    #[arg(long, default_value = "")]
    docker_email: String,
    /// secret tls: PEM certificate and key files.
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
}

#[derive(Args)]
pub struct GetArgs {
    /// Resource type, then optional names.
    resource: String,
    names: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Field selector, as kubectl's (`status.phase=Running,spec.nodeName=n1`).
    #[arg(long)]
    field_selector: Option<String>,
    /// wide | yaml | json | name | jsonpath=TEMPLATE | jsonpath-file=FILE |
    /// go-template=TEMPLATE | go-template-file=FILE | custom-columns=HEADER:PATH,…
    #[arg(short = 'o', long)]
    output: Option<String>,
    #[arg(long)]
    show_labels: bool,
    #[arg(short = 'w', long)]
    watch: bool,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// `TYPE [NAME…]` or `TYPE/NAME…`; a type alone describes them all.
    what: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    select: Selection,
}

/// Which objects a verb acts on besides those named: kubectl's `-l`,
/// `--field-selector`, `--all` and `-A`, taken with a resource type.
#[derive(Args, Default)]
pub struct Selection {
    /// The objects of the type whose labels match (`app=web`, `tier in (a,b)`, `!canary`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// The objects of the type whose fields match (`status.phase=Running`).
    #[arg(long)]
    field_selector: Option<String>,
    /// Every object of the type in the namespace.
    #[arg(long)]
    all: bool,
    /// With a type and -l, --field-selector or --all: in every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

impl Selection {
    fn any(&self) -> bool {
        self.selector.is_some() || self.field_selector.is_some() || self.all
    }
}

/// [`select`], where every word must name objects.
fn select_objects(
    c: &Client,
    words: &[String],
    sel: &Selection,
    namespace: &Option<String>,
    every_by_default: bool,
) -> Result<Vec<Target>> {
    let (targets, rest) = select(c, words, sel, namespace, every_by_default)?;
    match rest.first() {
        Some(w) => bail!("error: {w:?} is not a resource name"),
        None => Ok(targets),
    }
}

/// An object a verb acts on: its kind, namespace and name.
pub(crate) type Target = (&'static Kind, String, String);

/// The objects a verb acts on, as kubectl finds them: `TYPE NAME…` or
/// `TYPE/NAME…` in the namespace, or with a [`Selection`] every object of
/// one type that matches (in every namespace with -A; `every_by_default`
/// for describe, which takes a type alone as all of them). Returns them and
/// the words that are not objects (`k=v`, `k-`), in order.
pub(crate) fn select(
    c: &Client,
    words: &[String],
    sel: &Selection,
    namespace: &Option<String>,
    every_by_default: bool,
) -> Result<(Vec<Target>, Vec<String>)> {
    let (objects, rest): (Vec<&String>, Vec<&String>) = words
        .iter()
        .partition(|w| !(w.contains('=') || (w.ends_with('-') && !w.contains('/'))));
    let rest: Vec<String> = rest.into_iter().cloned().collect();
    let type_only = objects.len() == 1 && !objects[0].contains('/');
    if sel.any() || (every_by_default && type_only) {
        let [word] = objects.as_slice() else {
            bail!("error: name cannot be provided when a selector or --all is specified; give only a resource type");
        };
        if word.contains('/') {
            bail!("error: name cannot be provided when a selector or --all is specified; give only a resource type");
        }
        let kind = kind_named(word)?;
        let ns = ns_of(namespace);
        let path = if sel.all_namespaces || !kind.namespaced {
            kind.all_path()
        } else {
            kind.collection_path(&ns)
        };
        let list = c.call(
            "GET",
            &format!("{path}{}", selectors(&sel.selector, &sel.field_selector)),
            None,
        )?;
        let targets = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                let m = &item["metadata"];
                let ns = m["namespace"].as_str().map_or_else(|| ns.clone(), str::to_string);
                (kind, ns, m["name"].as_str().unwrap_or("").to_string())
            })
            .collect();
        return Ok((targets, rest));
    }
    if sel.all_namespaces {
        bail!("error: -A (--all-namespaces) needs a resource type with -l, --field-selector or --all, not names");
    }
    let words: Vec<String> = objects.into_iter().cloned().collect();
    let ns = ns_of(namespace);
    let named = names_only(&words)?;
    Ok((named.into_iter().map(|(k, n)| (k, ns.clone(), n)).collect(), rest))
}

#[derive(Args)]
pub struct DeleteArgs {
    /// `TYPE NAME…`, `TYPE/NAME…`, or a type with -l or --all (or use -f).
    what: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    select: Selection,
    #[arg(long)]
    grace_period: Option<i64>,
    /// A grace period of 1 second (kubectl's `--now`).
    #[arg(long, conflicts_with = "grace_period")]
    now: bool,
    /// With --grace-period=0: remove at once, without waiting for the
    /// containers' ends to be confirmed (kubectl's `--force`).
    #[arg(long)]
    force: bool,
    /// What becomes of the objects' dependents: `background` (deleted after
    /// the owner), `foreground` (deleted before it) or `orphan` (kept).
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan", "true", "false"])]
    cascade: String,
    /// Return at once instead of waiting for the objects to be gone.
    #[arg(long = "wait", default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
}

#[derive(Args)]
pub struct ScaleArgs {
    /// `TYPE NAME…` or `TYPE/NAME…`, or a type with -l or --all.
    what: Vec<String>,
    #[command(flatten)]
    select: Selection,
    /// The new number of replicas.
    #[arg(long)]
    replicas: i64,
    /// Scale only if the current number of replicas is this (a precondition).
    #[arg(long)]
    current_replicas: Option<i64>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct ExposeArgs {
    /// `TYPE NAME` or `TYPE/NAME`: a pod, deployment, replica set,
    /// replication controller or service whose selector the new service takes.
    what: Vec<String>,
    /// The service's port (default: the ports the pods declare).
    #[arg(long)]
    port: Option<u16>,
    /// The pods' port it forwards to, a number or a port name (default: --port).
    #[arg(long)]
    target_port: Option<String>,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// The service's name (default: the object's).
    #[arg(long)]
    name: Option<String>,
    /// ClusterIP, NodePort, LoadBalancer (or None for a headless service).
    #[arg(long = "type", default_value = "ClusterIP")]
    service_type: String,
    /// A cluster IP to ask for (`None`: headless).
    #[arg(long)]
    cluster_ip: Option<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `expose`: a Service selecting the pods an object selects, as kubectl makes it.
pub fn expose(c: &Client, a: ExposeArgs) -> Result<()> {
    let named = names_only(&a.what)?;
    let [(kind, name)] = named.as_slice() else {
        bail!("error: expose takes one object: TYPE NAME or TYPE/NAME");
    };
    let (kind, name) = (*kind, name.clone());
    let ns = ns_of(&a.namespace);
    let obj = c.call("GET", &kind.object_path(&ns, &name), None)?;
    let (selector, template): (Value, Value) = match kind.kind {
        "Pod" => (obj["metadata"]["labels"].clone(), obj.clone()),
        "Service" => (obj["spec"]["selector"].clone(), Value::Null),
        "ReplicationController" => (obj["spec"]["selector"].clone(), obj["spec"]["template"].clone()),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            if obj["spec"]["selector"]["matchExpressions"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                bail!(
                    "error: cannot expose a {} whose selector has matchExpressions",
                    kind.kind
                );
            }
            (
                obj["spec"]["selector"]["matchLabels"].clone(),
                obj["spec"]["template"].clone(),
            )
        }
        other => bail!("error: cannot expose a {other}"),
    };
    if selector.as_object().is_none_or(|m| m.is_empty()) {
        bail!(
            "error: couldn't retrieve selectors via --selector flag or introspection: the {} has no labels to select",
            kind.singular
        );
    }
    let ports: Vec<Value> = match a.port {
        Some(p) => vec![json!({
            "port": p,
            "protocol": a.protocol,
            "targetPort": a.target_port.as_deref().map_or_else(
                || json!(p),
                |t| t.parse::<u16>().map_or_else(|_| json!(t), |n| json!(n))
            ),
        })],
        None => {
            let declared: Vec<&Value> = template["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .collect();
            let from_service: Vec<Value> = obj["spec"]["ports"].as_array().cloned().unwrap_or_default();
            if kind.kind == "Service" {
                from_service
                    .iter()
                    .map(|p| json!({"name": p["name"], "port": p["port"], "protocol": p["protocol"], "targetPort": p["targetPort"]}))
                    .collect()
            } else {
                declared
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let mut port = json!({
                            "port": p["containerPort"],
                            "protocol": p["protocol"].as_str().unwrap_or("TCP"),
                            "targetPort": p["containerPort"],
                        });
                        if declared.len() > 1 {
                            port["name"] = json!(format!("port-{}", i + 1));
                        }
                        port
                    })
                    .collect()
            }
        }
    };
    if ports.is_empty() {
        bail!("error: couldn't find port via --port flag or introspection");
    }
    let svc_name = a.name.clone().unwrap_or_else(|| name.clone());
    let mut spec = json!({"selector": selector, "ports": ports});
    match a.service_type.as_str() {
        "None" => spec["clusterIP"] = json!("None"),
        t => spec["type"] = json!(t),
    }
    if let Some(ip) = &a.cluster_ip {
        spec["clusterIP"] = json!(ip);
    }
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc_name, "labels": obj["metadata"]["labels"]},
        "spec": spec,
    });
    c.call("POST", &kinds::service().collection_path(&ns), Some(&svc))?;
    println!("service/{svc_name} exposed");
    Ok(())
}

#[derive(Args)]
pub struct LabelArgs {
    /// `TYPE NAME… KEY=VALUE… KEY-…` (or `TYPE/NAME`), or a type with -l or --all.
    what: Vec<String>,
    #[command(flatten)]
    select: Selection,
    /// Replace a label that already has a value.
    #[arg(long)]
    overwrite: bool,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct PatchArgs {
    /// `TYPE NAME` or `TYPE/NAME`.
    what: Vec<String>,
    /// The patch (JSON or YAML), as kubectl's -p.
    #[arg(short = 'p', long, required_unless_present = "patch_file")]
    patch: Option<String>,
    /// A file holding the patch.
    #[arg(long)]
    patch_file: Option<PathBuf>,
    /// strategic (default), merge (RFC 7386) or json (RFC 6902).
    #[arg(long = "type", default_value = "strategic", value_parser = ["strategic", "merge", "json"])]
    patch_type: String,
    /// Patch the status subresource.
    #[arg(long, value_parser = ["status"])]
    subresource: Option<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct EditArgs {
    /// `TYPE NAME` or `TYPE/NAME`.
    what: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct NodeArgs {
    /// The node's name.
    node: String,
}

#[derive(Args)]
pub struct TaintArgs {
    /// `nodes NAME KEY[=VALUE]:EFFECT…`; a trailing `-` removes (`KEY-`, `KEY:EFFECT-`).
    what: Vec<String>,
    /// Replace a taint with the same key and effect.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The pod: `NAME`, `pod/NAME`, or `TYPE/NAME` of a workload (`deploy/web`,
    /// `job/x`, `sts/db`…: one of its pods, a running one first).
    pod: Option<String>,
    /// The logs of every pod these labels select (`app=web`), one after another
    /// (followed together with -f, at most 5).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Start each line with `[pod/NAME/CONTAINER]` (the default with -l).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    prefix: Option<bool>,
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'f', long)]
    follow: bool,
    #[arg(short = 'p', long)]
    previous: bool,
    /// Lines from the end of the log (across its rotated files); -1: all.
    #[arg(long)]
    tail: Option<i64>,
    /// Start each line with the time it was written (RFC 3339).
    #[arg(long)]
    timestamps: bool,
    /// Only lines newer than this, as a duration (`30s`, `5m`, `1h30m`).
    #[arg(long, conflicts_with = "since_time")]
    since: Option<String>,
    /// Only lines written at or after this RFC 3339 time.
    #[arg(long)]
    since_time: Option<String>,
    /// Stop after this many bytes.
    #[arg(long)]
    limit_bytes: Option<i64>,
}

/// Seconds in a duration written as Go writes them (`1h30m`, `90s`,
/// `1.5h`, `250ms`), rounded up as kubectl rounds `--since`.
/// A Go duration (`1h30m`, `2m`, `0s`) in nanoseconds.
pub(crate) fn go_duration_nanos(text: &str) -> Result<f64> {
    let bad = || {
        anyhow::anyhow!("invalid duration {text:?}: use a number and a unit (ns, us, ms, s, m, h), e.g. 30s or 1h30m")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(nanos)
}

pub(crate) fn duration_seconds(text: &str) -> Result<i64> {
    let nanos = go_duration_nanos(text)?;
    let secs = (nanos / 1e9).ceil();
    if !(1.0..=i64::MAX as f64).contains(&secs) {
        anyhow::bail!(
            "invalid duration {text:?}: must be at least 1ns and at most {} s",
            i64::MAX
        );
    }
    Ok(secs as i64)
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout directory or oci-archive tar.
    Import {
        source: PathBuf,
        /// Name for images whose layout names only a tag.
        #[arg(long)]
        tag: Option<String>,
        /// The largest blob (compressed layer) accepted, as a quantity.
        #[arg(long, default_value = "32Gi")]
        max_blob_size: String,
        /// The most one layer may unpack to, as a quantity (sparse files count in full).
        #[arg(long, default_value = "64Gi")]
        max_layer_size: String,
    },
    /// Pull an image from its registry (registries on localhost and
    /// 127.0.0.0/8 over plain HTTP, unless --registry-certs-dir has
    /// certificates for them); progress bars per layer when stdout is a terminal.
    Pull {
        name: String,
        #[command(flatten)]
        registries: RegistryArgs,
    },
    /// List images.
    Ls,
    /// Remove an image; refused while a container of a pod on this node uses it.
    Rm {
        reference: String,
        /// Remove the name even if containers use the image; its data stays until they are gone.
        #[arg(long, short)]
        force: bool,
    },
    /// Remove every image no container of a pod on this node uses.
    Prune,
}

/// How pulls reach registries; the daemon and `image pull` take the same flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Registry credentials: a Docker-style config.json (`{"auths": {"HOST": {"auth": BASE64}}}`),
    /// read at each pull; keys match as kubelet matches them (host, port, path prefix, `*.` labels).
    #[arg(long, value_name = "PATH", default_value = "/etc/peapod/auth.json")]
    pub registry_auth_file: PathBuf,
    /// Per-registry CA certificates (`DIR/HOST[:PORT]/*.crt`) and client
    /// certificates (`NAME.cert` + `NAME.key`), as Docker's and containerd's certs.d.
    #[arg(long, value_name = "DIR", default_value = "/etc/peapod/certs.d")]
    pub registry_certs_dir: PathBuf,
    /// A registry (`HOST[:PORT]`) reached over plain HTTP; repeatable. Loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// A mirror tried before a registry, `REGISTRY=MIRROR` (`docker.io=mirror.local:5000`); repeatable, in order.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR")]
    pub registry_mirrors: Vec<String>,
}

impl RegistryArgs {
    /// The registry settings these flags give.
    pub fn config(&self) -> Result<peapod_actors::image::RegistryConfig> {
        Ok(peapod_actors::image::RegistryConfig {
            auth_file: Some(self.registry_auth_file.clone()),
            certs_dir: Some(self.registry_certs_dir.clone()),
            insecure: self.insecure_registries.clone(),
            mirrors: peapod_actors::image::RegistryConfig::parse_mirrors(&self.registry_mirrors)
                .map_err(|e| anyhow!("--registry-mirror: {e}"))?,
        })
    }
}

pub(crate) fn ns_of(n: &Option<String>) -> String {
    n.clone().unwrap_or_else(|| "default".into())
}

fn kind_named(word: &str) -> Result<&'static Kind> {
    kinds::by_name(word).ok_or_else(|| anyhow!("the server doesn't have a resource type \"{word}\""))
}

fn read_manifests(files: &[String]) -> Result<Vec<manifest::Document>> {
    let mut docs = Vec::new();
    for f in files {
        docs.extend(manifest::parse(f, &read_source(f)?)?);
    }
    Ok(docs)
}

/// A manifest file's text, or stdin's for `-`.
fn read_source(f: &str) -> Result<String> {
    if f == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(f).with_context(|| format!("error reading {f}"))
    }
}

fn target_ns(doc: &manifest::Document, flag: &Option<String>) -> Result<String> {
    let in_doc = doc.object["metadata"]["namespace"].as_str();
    match (in_doc, flag) {
        (Some(d), Some(f)) if d != f => bail!("the namespace from the provided object \"{d}\" does not match the namespace \"{f}\". You must pass '--namespace={d}' to perform this operation."),
        (Some(d), _) => Ok(d.to_string()),
        (None, f) => Ok(ns_of(f)),
    }
}

/// Where apply keeps the manifest it last applied, as kubectl does.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// RFC 7386 merge patch taking `from` to `to` (`null` removes a field).
fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in b {
                match a.get(k) {
                    Some(old) if old == v => {}
                    Some(old) if old.is_object() && v.is_object() => {
                        patch.insert(k.clone(), merge_diff(old, v));
                    }
                    _ => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

/// Applies an RFC 7386 merge patch to `target`.
fn merge_apply(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_apply(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// kubectl's client-side apply for a live object: what changed between the
/// manifest applied last (its annotation) and this one is merged into the
/// live object, so fields others set (a claim's `volumeName`, a scaled
/// `replicas` the manifest never named) are kept and fields dropped from the
/// manifest are removed. Lists are replaced whole (a JSON merge patch, not
/// Kubernetes' strategic merge).
fn three_way(live: &Value, applied: &Value) -> Value {
    let last: Value = live["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| json!({}));
    let mut out = live.clone();
    merge_apply(&mut out, &merge_diff(&last, applied));
    out["metadata"]["annotations"][LAST_APPLIED] = json!(serde_json::to_string(applied).unwrap_or_default());
    out
}

/// Creates or updates one object. An update merges with the object as it is
/// now and is made again from a fresh read when something else wrote it
/// meanwhile (409; a pod's status changes under an apply), as kubectl's
/// apply retries its patch.
fn apply_one(
    c: &Client,
    d: &manifest::Document,
    ns: &str,
    name: &str,
    manifest: &Value,
    validation: &str,
) -> Result<&'static str> {
    for _ in 0..10 {
        let (code, existing) = c.request("GET", &d.kind.object_path(ns, name), None)?;
        if code == 404 || name.is_empty() {
            return c
                .call(
                    "POST",
                    &format!("{}?{validation}", d.kind.collection_path(ns)),
                    Some(manifest),
                )
                .map(|_| "created");
        }
        if code >= 400 {
            bail!("Error from server: {}", existing["message"].as_str().unwrap_or(""));
        }
        let mut obj = three_way(&existing, &d.object);
        obj["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
        let (code, after) = c.request(
            "PUT",
            &format!("{}?{validation}", d.kind.object_path(ns, name)),
            Some(&obj),
        )?;
        if code == 409 && after["reason"] == "Conflict" {
            continue;
        }
        if code >= 400 {
            bail!(
                "Error from server ({}): {}",
                after["reason"].as_str().unwrap_or("Unknown"),
                after["message"].as_str().unwrap_or(&after.to_string())
            );
        }
        return Ok(
            if after["metadata"]["resourceVersion"] == existing["metadata"]["resourceVersion"] {
                "unchanged"
            } else {
                "configured"
            },
        );
    }
    bail!(
        "Error from server (Conflict): {}/{name} kept changing under the apply",
        d.kind.singular
    )
}

pub fn apply(c: &Client, a: ApplyArgs) -> Result<()> {
    // As kubectl: every document that can be read is applied, and each one
    // that cannot is reported in its place; any failure fails the command.
    let validation = a.validate.query()?;
    let mut failed = false;
    let mut docs = Vec::new();
    for f in &a.files {
        let text = read_source(f)?;
        for d in manifest::parse_each(f, &text) {
            match d {
                Ok(d) => docs.push((f, d)),
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
        }
    }
    for (file, d) in docs {
        let ns = target_ns(&d, &a.namespace)?;
        let name = d.object["metadata"]["name"].as_str().unwrap_or("").to_string();
        let label = format!("{}/{}", d.kind.singular, name);
        let mut manifest = d.object.clone();
        manifest["metadata"]["annotations"][LAST_APPLIED] = json!(serde_json::to_string(&d.object)?);
        let manifest = manifest;
        let res = apply_one(c, &d, &ns, &name, &manifest, validation);
        match res {
            Ok(verb) => println!("{label} {verb}"),
            Err(e) => {
                // As kubectl: the server's answer, then which document.
                let e = format!("{e:#}");
                let where_ = format!("error when applying {label} from {file}:{}: ", d.line);
                match e.split_once("): ") {
                    Some((head, rest)) if head.starts_with("Error from server") => {
                        eprintln!("{head}): {where_}{rest}")
                    }
                    _ => eprintln!("{where_}{e}"),
                }
                failed = true;
            }
        }
    }
    if failed {
        bail!("some objects could not be applied");
    }
    Ok(())
}

pub fn create(c: &Client, a: CreateArgs) -> Result<()> {
    let validation = a.validate.query()?;
    if let Some(obj) = config_object(&a)? {
        let k = kind_named(obj["kind"].as_str().unwrap_or_default())?;
        let ns = ns_of(&a.namespace);
        c.call("POST", &format!("{}?{validation}", k.collection_path(&ns)), Some(&obj))?;
        println!(
            "{}/{} created",
            k.singular,
            obj["metadata"]["name"].as_str().unwrap_or("")
        );
        return Ok(());
    }
    if let [kind, name] = a.what.as_slice() {
        let k = kind_named(kind)?;
        let obj = json!({"apiVersion": k.api_version(), "kind": k.kind, "metadata": {"name": name}});
        c.call("POST", &k.collection_path(&ns_of(&a.namespace)), Some(&obj))?;
        println!("{}/{} created", k.singular, name);
        return Ok(());
    }
    if a.files.is_empty() {
        bail!("error: must specify one of -f or a resource type and name");
    }
    for d in read_manifests(&a.files)? {
        let ns = target_ns(&d, &a.namespace)?;
        let v = c.call(
            "POST",
            &format!("{}?{validation}", d.kind.collection_path(&ns)),
            Some(&d.object),
        )?;
        println!(
            "{}/{} created",
            d.kind.singular,
            v["metadata"]["name"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// The ConfigMap or Secret `create configmap|secret …` asks for, if that is what it asks.
fn config_object(a: &CreateArgs) -> Result<Option<Value>> {
    use crate::configdata as cd;
    let ns = ns_of(&a.namespace);
    let sources = cd::Sources {
        literals: a.from_literal.clone(),
        files: a.from_file.clone(),
        env_files: a.from_env_file.clone(),
    };
    let words: Vec<&str> = a.what.iter().map(String::as_str).collect();
    Ok(Some(match words.as_slice() {
        ["configmap" | "cm", name] => cd::config_map(name, &ns, &sources)?,
        ["secret", "generic", name] => cd::generic_secret(name, &ns, a.secret_type.as_deref(), &sources)?,
        ["secret", "docker-registry", name] => cd::docker_registry_secret(
            name,
            &ns,
            &cd::Registry {
                server: a.docker_server.clone(),
                username: a.docker_username.clone(),
                password: a.docker_password.clone(),
                email: a.docker_email.clone(),
            },
        )?,
        ["secret", "tls", name] => match (&a.cert, &a.key) {
            (Some(cert), Some(key)) => cd::tls_secret(name, &ns, cert, key)?,
            _ => bail!("error: create secret tls needs --cert and --key"),
        },
        ["secret", ..] => bail!("error: create secret takes generic, docker-registry or tls, then a NAME"),
        _ => return Ok(None),
    }))
}

/// The query string of a list: label and field selectors, if any.
fn selectors(labels: &Option<String>, fields: &Option<String>) -> String {
    let mut parts = Vec::new();
    if let Some(l) = labels {
        parts.push(format!("labelSelector={}", urlencode(l)));
    }
    if let Some(f) = fields {
        parts.push(format!("fieldSelector={}", urlencode(f)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_objects(kind: &Kind, items: &[Value], a: &GetArgs) -> Result<()> {
    let whole = || {
        if items.len() == 1 && !a.names.is_empty() {
            items[0].clone()
        } else {
            json!({"apiVersion": "v1", "kind": "List", "items": items})
        }
    };
    match a.output.as_deref() {
        Some("json") => println!("{}", serde_json::to_string_pretty(&whole())?),
        Some("yaml") => print!(
            "{}",
            serde_saphyr::to_string(&whole()).map_err(|e| anyhow!("yaml: {e}"))?
        ),
        Some("name") => items
            .iter()
            .for_each(|i| println!("{}/{}", kind.singular, i["metadata"]["name"].as_str().unwrap_or(""))),
        Some(o) if o.starts_with("jsonpath") => {
            let template = crate::jsonpath::Template::parse(&template_text(o)?)
                .map_err(|e| anyhow!("error: error parsing jsonpath: {e}"))?;
            print!("{}", template.render(&whole()));
        }
        Some(o) if o.starts_with("go-template") || o.starts_with("template") => {
            let template = crate::gotemplate::GoTemplate::parse(&template_text(o)?)?;
            print!("{}", template.render(&whole())?);
        }
        Some(o) if o.starts_with("custom-columns=") => {
            let rows = crate::jsonpath::custom_columns(&o["custom-columns=".len()..], items)?;
            output::table(&rows);
        }
        _ => unreachable!("tables are printed by print_table"),
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// Whether `-o` asks for a table (the server's columns), and whether wide.
fn table_output(a: &GetArgs) -> Result<Option<bool>> {
    match a.output.as_deref() {
        None => Ok(Some(false)),
        Some("wide") => Ok(Some(true)),
        Some("json" | "yaml" | "name") => Ok(None),
        Some(o)
            if TEMPLATE_FORMATS
                .iter()
                .any(|f| o.strip_prefix(f).is_some_and(|r| r.starts_with('='))) =>
        {
            Ok(None)
        }
        Some(o) => bail!(
            "unable to match a printer suitable for the output format \"{o}\", allowed formats are: {}",
            ["json", "name", "wide", "yaml"]
                .iter()
                .chain(TEMPLATE_FORMATS)
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The `-o FORMAT=…` printers, as kubectl names them.
const TEMPLATE_FORMATS: &[&str] = &[
    "custom-columns",
    "go-template",
    "go-template-file",
    "jsonpath",
    "jsonpath-as-json",
    "jsonpath-file",
    "template",
    "templatefile",
];

/// The template of `-o FORMAT=TEXT`, read from the file for the `*file`
/// formats.
fn template_text(output: &str) -> Result<String> {
    let (format, text) = output.split_once('=').unwrap_or((output, ""));
    if format.ends_with("file") {
        std::fs::read_to_string(text).map_err(|e| anyhow!("error reading --template {text}: {e}"))
    } else {
        Ok(text.to_string())
    }
}

/// Prints the rows of a server `Table` as kubectl does: the columns of
/// priority 0 (all with `-o wide`), NAMESPACE first with `-A`, LABELS last
/// with `--show-labels`; the header only when asked.
fn print_table(table: &Value, a: &GetArgs, kind: &Kind, wide: bool, header: bool) -> usize {
    print_table_of(table, a, kind, wide, header, None)
}

/// [`print_table`], with names written `<prefix>/<name>` (as kubectl does
/// when it prints several kinds).
fn print_table_of(table: &Value, a: &GetArgs, kind: &Kind, wide: bool, header: bool, prefix: Option<&str>) -> usize {
    let with_ns = a.all_namespaces && kind.namespaced;
    let columns: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_u64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_uppercase()))
        .collect();
    let rows: Vec<&Value> = table["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| a.names.is_empty() || a.names.iter().any(|n| r["object"]["metadata"]["name"] == n.as_str()))
        .collect();
    let mut out = Vec::new();
    if header {
        let mut h: Vec<String> = Vec::new();
        if with_ns {
            h.push("NAMESPACE".into());
        }
        h.extend(columns.iter().map(|(_, n)| n.clone()));
        if a.show_labels {
            h.push("LABELS".into());
        }
        out.push(h);
    }
    for r in &rows {
        let mut line = Vec::new();
        if with_ns {
            line.push(r["object"]["metadata"]["namespace"].as_str().unwrap_or("").to_string());
        }
        for (i, name) in &columns {
            let cell = match &r["cells"][*i] {
                Value::String(s) => s.clone(),
                Value::Null => "<none>".into(),
                v => v.to_string(),
            };
            line.push(match prefix {
                Some(p) if name == "NAME" => format!("{p}/{cell}"),
                _ => cell,
            });
        }
        if a.show_labels {
            line.push(output::label_string(&r["object"]));
        }
        out.push(line);
    }
    if !rows.is_empty() || !header {
        output::table(&out);
    }
    let _ = std::io::stdout().flush();
    rows.len()
}

/// The kinds a `get` names: `pods`, `pods,ns`, or a category (`all`).
fn kinds_named(words: &str) -> Result<Vec<&'static Kind>> {
    let mut out: Vec<&'static Kind> = Vec::new();
    for w in words.split(',').filter(|w| !w.is_empty()) {
        let found: Vec<&'static Kind> = match kinds::by_name(w) {
            Some(k) => vec![k],
            None => {
                let in_category: Vec<&'static Kind> =
                    kinds::KINDS.iter().filter(|k| k.categories.contains(&w)).collect();
                if in_category.is_empty() {
                    return Err(anyhow!("the server doesn't have a resource type \"{w}\""));
                }
                in_category
            }
        };
        for k in found {
            if !out.iter().any(|o| std::ptr::eq(*o, k)) {
                out.push(k);
            }
        }
    }
    if out.is_empty() {
        bail!("you must specify the type of resource to get");
    }
    Ok(out)
}

pub fn get(c: &Client, mut a: GetArgs) -> Result<()> {
    (a.resource, a.names) = slash_names(&a.resource, &a.names)?;
    let kinds = kinds_named(&a.resource)?;
    // One kind named by itself prints as kubectl prints one kind; a list or
    // a category prints names as `kind/name`.
    if let (Some(kind), false) = (kinds::by_name(&a.resource), a.resource.contains(',')) {
        return get_kind(c, a, kind);
    }
    if !a.names.is_empty() {
        bail!(
            "error: names can be given for one resource type only, not \"{}\"",
            a.resource
        );
    }
    if a.watch {
        bail!("error: watch is only supported on individual resources and resource collections, but {} resources were found", kinds.len());
    }
    let ns = ns_of(&a.namespace);
    let collection = |kind: &Kind| {
        format!(
            "{}{}",
            get_collection(kind, &a),
            selectors(&a.selector, &a.field_selector)
        )
    };
    match table_output(&a)? {
        Some(wide) => {
            let mut printed = 0;
            for kind in &kinds {
                let table = c.tables().call("GET", &collection(kind), None)?;
                if table["rows"].as_array().is_none_or(Vec::is_empty) {
                    continue;
                }
                if printed > 0 {
                    println!();
                }
                printed += print_table_of(&table, &a, kind, wide, true, Some(kind.singular));
            }
            if printed == 0 {
                eprintln!(
                    "No resources found{}.",
                    if a.all_namespaces {
                        String::new()
                    } else {
                        format!(" in {ns} namespace")
                    }
                );
            }
        }
        None => {
            let mut items = Vec::new();
            for kind in &kinds {
                let list = c.call("GET", &collection(kind), None)?;
                for mut i in list["items"].as_array().cloned().unwrap_or_default() {
                    i["apiVersion"] = json!(kind.api_version());
                    i["kind"] = json!(kind.kind);
                    items.push((*kind, i));
                }
            }
            if a.output.as_deref() == Some("name") {
                items
                    .iter()
                    .for_each(|(k, i)| println!("{}/{}", k.singular, i["metadata"]["name"].as_str().unwrap_or("")));
            } else {
                let objects: Vec<Value> = items.into_iter().map(|(_, i)| i).collect();
                print_objects(kinds[0], &objects, &a)?;
            }
        }
    }
    Ok(())
}

/// The collection a `get` lists: one namespace's, or every namespace's with `-A`.
fn get_collection(kind: &Kind, a: &GetArgs) -> String {
    if a.all_namespaces && kind.namespaced {
        kind.all_path()
    } else {
        kind.collection_path(&ns_of(&a.namespace))
    }
}

fn get_kind(c: &Client, a: GetArgs, kind: &'static Kind) -> Result<()> {
    let ns = ns_of(&a.namespace);
    let collection = get_collection(kind, &a);
    let table = table_output(&a)?;
    let tables;
    let client = match table {
        Some(_) => {
            tables = c.tables();
            &tables
        }
        None => c,
    };
    let list = client.call(
        "GET",
        &format!("{collection}{}", selectors(&a.selector, &a.field_selector)),
        None,
    )?;
    let present = |name: &str| match table {
        Some(_) => list["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["object"]["metadata"]["name"] == name),
        None => list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["metadata"]["name"] == name),
    };
    for n in &a.names {
        if !present(n) {
            bail!("Error from server (NotFound): {} \"{n}\" not found", kind.plural);
        }
    }
    match table {
        Some(wide) => {
            if print_table(&list, &a, kind, wide, true) == 0 && !a.watch {
                eprintln!(
                    "No resources found{}.",
                    if kind.namespaced && !a.all_namespaces {
                        format!(" in {ns} namespace")
                    } else {
                        String::new()
                    }
                );
            }
        }
        None => {
            let mut items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
            if !a.names.is_empty() {
                // In the order the names were given, as kubectl prints them.
                items = a
                    .names
                    .iter()
                    .filter_map(|n| items.iter().find(|i| i["metadata"]["name"] == n.as_str()).cloned())
                    .collect();
            }
            print_objects(kind, &items, &a)?;
        }
    }
    if !a.watch {
        return Ok(());
    }
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let filters = selectors(&a.selector, &a.field_selector);
    let sep = if filters.is_empty() { "?" } else { "&" };
    let path = format!("{collection}{filters}{sep}watch=true&resourceVersion={rv}");
    let mut buf = Vec::new();
    client.stream("GET", &path, None, |chunk| {
        buf.extend_from_slice(chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Ok(ev) = serde_json::from_slice::<Value>(&line) {
                let obj = &ev["object"];
                match table {
                    Some(wide) => {
                        print_table(obj, &a, kind, wide, false);
                    }
                    None if a.names.is_empty() || a.names.iter().any(|n| obj["metadata"]["name"] == n.as_str()) => {
                        let _ = print_objects(kind, std::slice::from_ref(obj), &a);
                    }
                    None => {}
                }
                // Each event out at once, also into a pipe (`get -w | ...`).
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
        }
        true
    })?;
    Ok(())
}

pub fn describe(c: &Client, a: DescribeArgs) -> Result<()> {
    if a.what.is_empty() {
        bail!("error: You must specify the type of resource to describe");
    }
    let targets = select_objects(c, &a.what, &a.select, &a.namespace, true)?;
    if targets.is_empty() {
        println!("No resources found");
        return Ok(());
    }
    let mut events: std::collections::HashMap<String, Option<Value>> = Default::default();
    for (kind, ns, name) in &targets {
        let o = c.call("GET", &kind.object_path(ns, name), None)?;
        describe_one(c, kind, ns, &o, &mut events);
    }
    Ok(())
}

/// One object as `describe` prints it, with its events (read once per namespace).
fn describe_one(
    c: &Client,
    kind: &Kind,
    ns: &str,
    o: &Value,
    events: &mut std::collections::HashMap<String, Option<Value>>,
) {
    let events = events
        .entry(ns.to_string())
        .or_insert_with(|| c.call("GET", &kinds::event().collection_path(ns), None).ok());
    {
        let m = &o["metadata"];
        println!("Name:         {}", m["name"].as_str().unwrap_or(""));
        if kind.namespaced {
            println!("Namespace:    {}", m["namespace"].as_str().unwrap_or(""));
        }
        println!("Labels:       {}", output::label_string(o));
        println!("Created:      {}", m["creationTimestamp"].as_str().unwrap_or(""));
        describer(kind)(o);
        if kind.kind == "Service" {
            // kubectl's "Endpoints": the ready addresses, per port.
            let ep = c
                .call("GET", &kinds::endpoints().object_path(ns, object_name(o)), None)
                .ok();
            let mut items = Vec::new();
            for subset in ep.iter().flat_map(|e| e["subsets"].as_array()).flatten() {
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    for p in subset["ports"].as_array().into_iter().flatten() {
                        items.push(format!("{}:{}", a["ip"].as_str().unwrap_or(""), p["port"]));
                    }
                }
            }
            println!("Endpoints:                {}", joined_or_none(&items, ","));
        }
        if kind.kind == "PersistentVolumeClaim" {
            // kubectl's "Used By": the pods naming the claim.
            let pods = c.call("GET", &kinds::pod().collection_path(ns), None).ok();
            let claim = m["name"].as_str().unwrap_or("");
            let users: Vec<String> = pods
                .iter()
                .flat_map(|p| p["items"].as_array())
                .flatten()
                .filter(|p| {
                    p["spec"]["volumes"]
                        .as_array()
                        .is_some_and(|vs| vs.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == claim))
                })
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect();
            println!("Used By:       {}", joined_or_none(&users, ", "));
        }
        let uid = m["uid"].as_str().unwrap_or("");
        let mut evs: Vec<&Value> = events
            .iter()
            .flat_map(|e| e["items"].as_array())
            .flatten()
            .filter(|e| e["involvedObject"]["uid"] == uid)
            .collect();
        evs.sort_by_key(|e| e["lastTimestamp"].as_str().unwrap_or("").to_string());
        if evs.is_empty() {
            println!("Events:       <none>");
        } else {
            println!("Events:");
            let mut rows = vec![vec![
                "  Type".to_string(),
                "Reason".into(),
                "Age".into(),
                "From".into(),
                "Message".into(),
            ]];
            for e in evs {
                let count = e["count"].as_u64().unwrap_or(1);
                let age = output::age(e["lastTimestamp"].as_str().unwrap_or(""));
                rows.push(vec![
                    format!("  {}", e["type"].as_str().unwrap_or("")),
                    e["reason"].as_str().unwrap_or("").into(),
                    if count > 1 { format!("{age} (x{count})") } else { age },
                    e["source"]["component"].as_str().unwrap_or("").into(),
                    e["message"].as_str().unwrap_or("").into(),
                ]);
            }
            output::table(&rows);
        }
        println!();
    }
}

/// What `describe` prints of an object beyond its metadata and events,
/// per kind (as kubectl's describer map), keyed by group and kind.
static DESCRIBERS: &[Describer] = &[
    ("", "Pod", describe_pod),
    ("apps", "ReplicaSet", describe_replicas),
    ("", "ReplicationController", describe_replicas),
    ("apps", "Deployment", describe_deployment),
    ("apps", "DaemonSet", describe_daemonset),
    ("batch", "Job", describe_job),
    ("apps", "StatefulSet", describe_statefulset),
    ("", "PersistentVolumeClaim", describe_claim),
    ("", "PersistentVolume", describe_volume),
    ("storage.k8s.io", "StorageClass", describe_class),
    ("", "Service", describe_service),
    ("", "ConfigMap", describe_config_map),
    ("", "Secret", describe_secret),
];

/// A ConfigMap's data as kubectl shows it: each key, a rule, its value.
fn describe_config_map(o: &Value) {
    println!("\nData\n====");
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        println!("{k}:\n----\n{}\n", v.as_str().unwrap_or(""));
    }
    println!("\nBinaryData\n====");
    for (k, v) in o["binaryData"].as_object().into_iter().flatten() {
        println!("{k}: {} bytes", decoded_len(v));
    }
    println!();
}

/// A Secret as kubectl shows it: its type and each key's size, never a value.
fn describe_secret(o: &Value) {
    println!("\nType:  {}", o["type"].as_str().unwrap_or(""));
    println!("\nData\n====");
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        println!("{k}:  {} bytes", decoded_len(v));
    }
    println!();
}

/// The size of a base64 value (0 if it is not one).
fn decoded_len(v: &Value) -> usize {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v.as_str().unwrap_or("")).map_or(0, |b| b.len())
}

fn object_name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

/// A Service's spec as kubectl shows it (its endpoints come from `describe_one`).
fn describe_service(o: &Value) {
    let spec = &o["spec"];
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let selector = spec["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    println!(
        "Selector:                 {}",
        if selector.is_empty() { "<none>" } else { &selector }
    );
    println!("Type:                     {}", text(&spec["type"]));
    if spec["type"] == "ExternalName" {
        println!("External Name:            {}", text(&spec["externalName"]));
    } else {
        println!("IP Family Policy:         {}", text(&spec["ipFamilyPolicy"]));
        println!("IP Families:              {}", strings(&spec["ipFamilies"]).join(","));
        println!("IP:                       {}", text(&spec["clusterIP"]));
        println!("IPs:                      {}", strings(&spec["clusterIPs"]).join(","));
    }
    for p in spec["ports"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("<unset>");
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        println!("Port:                     {name}  {}/{proto}", p["port"]);
        println!("TargetPort:               {}/{proto}", text(&p["targetPort"]));
        if let Some(np) = p["nodePort"].as_i64() {
            println!("NodePort:                 {name}  {np}/{proto}");
        }
    }
    println!("Session Affinity:         {}", text(&spec["sessionAffinity"]));
    if let Some(p) = spec["externalTrafficPolicy"].as_str() {
        println!("External Traffic Policy:  {p}");
    }
    if let Some(p) = spec["internalTrafficPolicy"].as_str() {
        println!("Internal Traffic Policy:  {p}");
    }
}

/// A StatefulSet's counts, strategy, template and claim templates, as kubectl shows them.
fn describe_statefulset(o: &Value) {
    let selector = peapod_core::validation::workloads::workload_selector(o)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let (spec, st) = (&o["spec"], &o["status"]);
    println!("Selector:           {selector}");
    println!(
        "Replicas:           {} desired | {} total",
        n(&spec["replicas"]),
        n(&st["replicas"])
    );
    println!(
        "Update Strategy:    {}",
        spec["updateStrategy"]["type"].as_str().unwrap_or("")
    );
    let ru = &spec["updateStrategy"]["rollingUpdate"];
    if !ru["partition"].is_null() {
        println!("  Partition:        {}", n(&ru["partition"]));
    }
    if !ru["maxUnavailable"].is_null() {
        println!(
            "  Max Unavailable:  {}",
            ru["maxUnavailable"]
                .as_str()
                .map_or_else(|| ru["maxUnavailable"].to_string(), str::to_string)
        );
    }
    println!(
        "Pods Status:        {} Ready / {} Current / {} Updated",
        n(&st["readyReplicas"]),
        n(&st["currentReplicas"]),
        n(&st["updatedReplicas"])
    );
    describe_template(&spec["template"]);
    let claims = spec["volumeClaimTemplates"].as_array().cloned().unwrap_or_default();
    if claims.is_empty() {
        println!("Volume Claims:  <none>");
    } else {
        println!("Volume Claims:");
    }
    for c in &claims {
        println!("  Name:          {}", c["metadata"]["name"].as_str().unwrap_or(""));
        println!(
            "  StorageClass:  {}",
            c["spec"]["storageClassName"].as_str().unwrap_or("")
        );
        println!(
            "  Capacity:      {}",
            c["spec"]["resources"]["requests"]["storage"].as_str().unwrap_or("")
        );
        let modes: Vec<&str> = c["spec"]["accessModes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("  Access Modes:  [{}]", modes.join(" "));
    }
}

/// A claim's class, phase, volume and size, as kubectl shows them.
fn describe_claim(o: &Value) {
    let (spec, st) = (&o["spec"], &o["status"]);
    println!("StorageClass:  {}", spec["storageClassName"].as_str().unwrap_or(""));
    println!("Status:        {}", st["phase"].as_str().unwrap_or(""));
    println!("Volume:        {}", spec["volumeName"].as_str().unwrap_or(""));
    println!("Capacity:      {}", st["capacity"]["storage"].as_str().unwrap_or(""));
    println!(
        "Access Modes:  {}",
        peapod_core::printers::access_modes(&st["accessModes"])
    );
    println!("VolumeMode:    {}", spec["volumeMode"].as_str().unwrap_or(""));
    println!("Finalizers:    [{}]", strings(&o["metadata"]["finalizers"]).join(" "));
    let conditions = st["conditions"].as_array().cloned().unwrap_or_default();
    if !conditions.is_empty() {
        println!("Conditions:");
        for c in conditions {
            println!(
                "  {:<24} {:<6} {}",
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            );
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
        .collect()
}

/// A PersistentVolume as kubectl shows it: binding, policy, size, node
/// affinity and its source's fields.
fn describe_volume(o: &Value) {
    let (spec, st) = (&o["spec"], &o["status"]);
    println!("Finalizers:      [{}]", strings(&o["metadata"]["finalizers"]).join(" "));
    println!("StorageClass:    {}", spec["storageClassName"].as_str().unwrap_or(""));
    let phase = if o["metadata"]["deletionTimestamp"].is_null() {
        st["phase"].as_str().unwrap_or("")
    } else {
        "Terminating"
    };
    println!("Status:          {phase}");
    let claim = match (
        spec["claimRef"]["namespace"].as_str(),
        spec["claimRef"]["name"].as_str(),
    ) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        _ => String::new(),
    };
    println!("Claim:           {claim}");
    println!(
        "Reclaim Policy:  {}",
        spec["persistentVolumeReclaimPolicy"].as_str().unwrap_or("")
    );
    println!(
        "Access Modes:    {}",
        peapod_core::printers::access_modes(&spec["accessModes"])
    );
    println!(
        "VolumeMode:      {}",
        spec["volumeMode"].as_str().unwrap_or("Filesystem")
    );
    println!(
        "Capacity:        {}",
        spec["capacity"]["storage"].as_str().unwrap_or("")
    );
    let terms = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if terms.is_empty() {
        println!("Node Affinity:   <none>");
    } else {
        println!("Node Affinity:");
        println!("  Required Terms:");
        for t in terms {
            for e in t["matchExpressions"].as_array().into_iter().flatten() {
                println!(
                    "    Term 0:        {} {} [{}]",
                    e["key"].as_str().unwrap_or(""),
                    e["operator"].as_str().unwrap_or("").to_lowercase(),
                    strings(&e["values"]).join(", ")
                );
            }
        }
    }
    println!("Message:         {}", st["message"].as_str().unwrap_or(""));
    println!("Source:");
    for kind in peapod_core::validation::storage::VOLUME_SOURCES {
        let Some(fields) = spec[*kind].as_object() else {
            continue;
        };
        let title = match *kind {
            "hostPath" => "HostPath (bare host directory volume)",
            "local" => "LocalVolume (a persistent volume backed by local storage on a node)",
            "nfs" => "NFS (an NFS mount that lasts the lifetime of a pod)",
            "rbd" => "RBD (a Rados Block Device mount on the host that shares a pod's lifetime)",
            _ => "CSI (a Container Storage Interface (CSI) volume source)",
        };
        println!("    Type:          {title}");
        for (k, v) in fields {
            let shown = match v {
                Value::String(t) => t.clone(),
                Value::Array(_) => strings(v).join(","),
                other => other.to_string(),
            };
            println!("    {:<14} {shown}", format!("{}:", capitalised(k)));
        }
    }
}

fn capitalised(k: &str) -> String {
    let mut c = k.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `items` joined by `sep`, or `<none>` as kubectl prints an empty list.
fn joined_or_none<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(sep)
}

/// A StorageClass as kubectl shows it.
fn describe_class(o: &Value) {
    let default = o["metadata"]["annotations"][peapod_core::validation::storage::DEFAULT_CLASS] == "true";
    println!("IsDefaultClass:        {}", if default { "Yes" } else { "No" });
    println!("Provisioner:           {}", o["provisioner"].as_str().unwrap_or(""));
    let params: Vec<String> = o["parameters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    println!("Parameters:            {}", joined_or_none(&params, ","));
    println!(
        "AllowVolumeExpansion:  {}",
        if o["allowVolumeExpansion"] == true {
            "True"
        } else {
            "<unset>"
        }
    );
    let opts = strings(&o["mountOptions"]);
    println!("MountOptions:          {}", joined_or_none(&opts, ","));
    println!(
        "ReclaimPolicy:         {}",
        o["reclaimPolicy"].as_str().unwrap_or("Delete")
    );
    println!(
        "VolumeBindingMode:     {}",
        o["volumeBindingMode"].as_str().unwrap_or("Immediate")
    );
}

/// A Job's counts, times, template and conditions, as kubectl shows them.
fn describe_job(o: &Value) {
    let spec = &o["spec"];
    let st = &o["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    println!("Parallelism:     {}", n(&spec["parallelism"]));
    match spec["completions"].as_i64() {
        Some(c) => println!("Completions:     {c}"),
        None => println!("Completions:     <unset>"),
    }
    println!("Completion Mode: {}", spec["completionMode"].as_str().unwrap_or(""));
    println!("Suspend:         {}", spec["suspend"] == true);
    println!("Backoff Limit:   {}", n(&spec["backoffLimit"]));
    if let Some(t) = st["startTime"].as_str() {
        println!("Start Time:      {t}");
    }
    if let Some(t) = st["completionTime"].as_str() {
        println!("Completed At:    {t}");
    }
    println!(
        "Pods Statuses:   {} Active ({} Ready) / {} Succeeded / {} Failed",
        n(&st["active"]),
        n(&st["ready"]),
        n(&st["succeeded"]),
        n(&st["failed"])
    );
    if let Some(ix) = st["completedIndexes"].as_str() {
        println!("Completed Indexes: {}", if ix.is_empty() { "<none>" } else { ix });
    }
    describe_template(&spec["template"]);
    println!("Conditions:");
    for cnd in st["conditions"].as_array().into_iter().flatten() {
        println!(
            "  {:<19} {:<6} {}",
            cnd["type"].as_str().unwrap_or(""),
            cnd["status"].as_str().unwrap_or(""),
            cnd["reason"].as_str().unwrap_or("")
        );
    }
}

/// A DaemonSet's counts, strategy and template, as kubectl shows them.
fn describe_daemonset(o: &Value) {
    let selector = peapod_core::validation::workloads::workload_selector(o)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let n = |f: &str| o["status"][f].as_i64().unwrap_or(0);
    println!("Selector:       {selector}");
    println!("Desired Number of Nodes Scheduled: {}", n("desiredNumberScheduled"));
    println!("Current Number of Nodes Scheduled: {}", n("currentNumberScheduled"));
    println!(
        "Number of Nodes Scheduled with Up-to-date Pods: {}",
        n("updatedNumberScheduled")
    );
    println!(
        "Number of Nodes Scheduled with Available Pods: {}",
        n("numberAvailable")
    );
    println!("Number of Nodes Misscheduled: {}", n("numberMisscheduled"));
    println!(
        "Update Strategy: {}",
        o["spec"]["updateStrategy"]["type"].as_str().unwrap_or("")
    );
    describe_template(&o["spec"]["template"]);
}

/// A Deployment's counts, strategy, template and conditions, as kubectl shows them.
fn describe_deployment(o: &Value) {
    let selector = peapod_core::validation::workloads::workload_selector(o)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let st = &o["status"];
    println!("Selector:               {selector}");
    println!(
        "Replicas:               {} desired | {} updated | {} total | {} available | {} unavailable",
        n(&o["spec"]["replicas"]),
        n(&st["updatedReplicas"]),
        n(&st["replicas"]),
        n(&st["availableReplicas"]),
        n(&st["unavailableReplicas"])
    );
    let strategy = &o["spec"]["strategy"];
    println!("StrategyType:           {}", strategy["type"].as_str().unwrap_or(""));
    println!("MinReadySeconds:        {}", n(&o["spec"]["minReadySeconds"]));
    if strategy["type"] == "RollingUpdate" {
        let show = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        println!(
            "RollingUpdateStrategy:  {} max unavailable, {} max surge",
            show(&strategy["rollingUpdate"]["maxUnavailable"]),
            show(&strategy["rollingUpdate"]["maxSurge"])
        );
    }
    if o["spec"]["paused"] == true {
        println!("Paused:                 true");
    }
    describe_template(&o["spec"]["template"]);
    println!("Conditions:");
    println!("  Type           Status  Reason");
    println!("  ----           ------  ------");
    for cnd in st["conditions"].as_array().into_iter().flatten() {
        println!(
            "  {:<14} {:<7} {}",
            cnd["type"].as_str().unwrap_or(""),
            cnd["status"].as_str().unwrap_or(""),
            cnd["reason"].as_str().unwrap_or("")
        );
    }
}

/// A ReplicaSet's or ReplicationController's selector, counts and template.
fn describe_replicas(o: &Value) {
    let selector = peapod_core::validation::workloads::workload_selector(o)
        .map(|s| s.to_string())
        .unwrap_or_default();
    println!("Selector:     {selector}");
    println!(
        "Replicas:     {} current / {} desired",
        o["status"]["replicas"].as_i64().unwrap_or(0),
        o["spec"]["replicas"].as_i64().unwrap_or(0)
    );
    println!(
        "Pods Status:  {} Ready / {} Available",
        o["status"]["readyReplicas"].as_i64().unwrap_or(0),
        o["status"]["availableReplicas"].as_i64().unwrap_or(0)
    );
    describe_template(&o["spec"]["template"]);
    println!("Conditions:");
    for cnd in o["status"]["conditions"].as_array().into_iter().flatten() {
        println!(
            "  {:<27} {}  {}",
            cnd["type"].as_str().unwrap_or(""),
            cnd["status"].as_str().unwrap_or(""),
            cnd["message"].as_str().unwrap_or("")
        );
    }
}

/// A pod template as kubectl's describers print it.
pub(crate) fn describe_template(t: &Value) {
    println!("Pod Template:");
    let labels = t["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "<none>".into());
    println!("  Labels:  {labels}");
    println!("  Containers:");
    for c in t["spec"]["containers"].as_array().into_iter().flatten() {
        println!("   {}:", c["name"].as_str().unwrap_or(""));
        println!("    Image:      {}", c["image"].as_str().unwrap_or(""));
        if let Some(cmd) = c["command"].as_array() {
            let words: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
            println!("    Command:    {}", words.join(" "));
        }
    }
}

/// API group, kind, and what is printed.
type Describer = (&'static str, &'static str, fn(&Value));

fn describer(kind: &Kind) -> fn(&Value) {
    DESCRIBERS
        .iter()
        .find(|(g, k, _)| *g == kind.group && *k == kind.kind)
        .map_or(describe_phase, |(_, _, f)| *f)
}

fn describe_phase(o: &Value) {
    if let Some(p) = o["status"]["phase"].as_str() {
        println!("Status:       {p}");
    }
}

fn describe_pod(o: &Value) {
    println!("Status:       {}", output::pod_status(o));
    if let Some(r) = o["status"]["reason"].as_str() {
        println!("Reason:       {r}");
        println!("Message:      {}", o["status"]["message"].as_str().unwrap_or(""));
    }
    println!(
        "Start Time:   {}",
        o["status"]["startTime"].as_str().unwrap_or("<none>")
    );
    println!("IP:           {}", o["status"]["podIP"].as_str().unwrap_or("<none>"));
    println!("QoS Class:    {}", o["status"]["qosClass"].as_str().unwrap_or("<none>"));
    for (title, specs, statuses) in [
        ("Init Containers:", "initContainers", "initContainerStatuses"),
        ("Containers:", "containers", "containerStatuses"),
    ] {
        let Some(list) = o["spec"][specs].as_array().filter(|l| !l.is_empty()) else {
            continue;
        };
        println!("{title}");
        for spec in list {
            let name = spec["name"].as_str().unwrap_or("");
            let st = o["status"][statuses]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == name)
                .cloned()
                .unwrap_or(Value::Null);
            println!("  {name}:");
            println!("    Container ID:   {}", st["containerID"].as_str().unwrap_or(""));
            println!("    Image:          {}", spec["image"].as_str().unwrap_or(""));
            println!("    Image ID:       {}", st["imageID"].as_str().unwrap_or(""));
            print_state("    State:          ", &st["state"]);
            print_state("    Last State:     ", &st["lastState"]);
            println!("    Ready:          {}", st["ready"].as_bool().unwrap_or(false));
            println!("    Restart Count:  {}", st["restartCount"].as_u64().unwrap_or(0));
        }
    }
    println!("Conditions:");
    for cnd in o["status"]["conditions"].as_array().into_iter().flatten() {
        println!(
            "  {:<27} {}",
            cnd["type"].as_str().unwrap_or(""),
            cnd["status"].as_str().unwrap_or("")
        );
    }
}

fn print_state(label: &str, s: &Value) {
    if let Some(r) = s["running"].as_object() {
        println!(
            "{label}Running (started {})",
            r.get("startedAt").and_then(Value::as_str).unwrap_or("")
        );
    } else if let Some(w) = s["waiting"].as_object() {
        println!(
            "{label}Waiting ({}) {}",
            w.get("reason").and_then(Value::as_str).unwrap_or(""),
            w.get("message").and_then(Value::as_str).unwrap_or("")
        );
    } else if let Some(t) = s["terminated"].as_object() {
        println!(
            "{label}Terminated ({}) exit code {}, finished {}",
            t.get("reason").and_then(Value::as_str).unwrap_or(""),
            t.get("exitCode").unwrap_or(&Value::Null),
            t.get("finishedAt").and_then(Value::as_str).unwrap_or("")
        );
    } else {
        println!("{label}<none>");
    }
}

pub fn delete(c: &Client, a: DeleteArgs) -> Result<()> {
    let mut targets: Vec<(&'static Kind, String, String)> = Vec::new();
    if !a.files.is_empty() {
        for d in read_manifests(&a.files)? {
            let ns = target_ns(&d, &a.namespace)?;
            targets.push((d.kind, ns, d.object["metadata"]["name"].as_str().unwrap_or("").into()));
        }
    } else {
        if a.what.is_empty() {
            bail!("error: must specify a resource type and name, or -f, -l or --all");
        }
        let found = select_objects(c, &a.what, &a.select, &a.namespace, false)?;
        if found.is_empty() {
            println!("No resources found");
            return Ok(());
        }
        targets = found;
    }
    if a.force && a.grace_period.unwrap_or(0) != 0 {
        bail!("error: --force needs --grace-period=0 (or none)");
    }
    // kubectl's old boolean form: true is background, false is orphan.
    let policy = match a.cascade.as_str() {
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        _ => "Background",
    };
    let mut q = format!("?propagationPolicy={policy}");
    let grace = match (a.now, a.force, a.grace_period) {
        (true, _, _) => Some(1),
        (_, true, _) => Some(0),
        (_, _, g) => g,
    };
    if let Some(g) = grace {
        q.push_str(&format!("&gracePeriodSeconds={g}"));
    }
    let mut failed = false;
    // The uid of each object deleted: a controller may make a new one of the same name at once.
    let mut deleted = Vec::new();
    for (kind, ns, name) in &targets {
        match c.call("DELETE", &format!("{}{q}", kind.object_path(ns, name)), None) {
            Ok(v) => {
                if a.force {
                    eprintln!("Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely.");
                }
                println!("{} \"{name}\" deleted", kind.singular);
                let uid = v["metadata"]["uid"]
                    .as_str()
                    .or(v["details"]["uid"].as_str())
                    .unwrap_or("");
                deleted.push((*kind, ns.clone(), name.clone(), uid.to_string()));
            }
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    if a.wait {
        for (kind, ns, name, uid) in &deleted {
            loop {
                let (code, body) = c.request("GET", &kind.object_path(ns, name), None)?;
                if code == 404 || (!uid.is_empty() && body["metadata"]["uid"] != uid.as_str()) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
    if failed {
        bail!("some objects could not be deleted");
    }
    Ok(())
}

/// `TYPE/NAME…` as `TYPE NAME…` (all of one type); `TYPE NAME…` as given.
fn slash_names(resource: &str, names: &[String]) -> Result<(String, Vec<String>)> {
    let Some((kind, first)) = resource.split_once('/') else {
        return Ok((resource.to_string(), names.to_vec()));
    };
    let mut out = vec![first.to_string()];
    for n in names {
        match n.split_once('/') {
            Some((k, name)) if kind_named(k)?.kind == kind_named(kind)?.kind => out.push(name.to_string()),
            _ => bail!("error: there is no need to specify a resource type as a separate argument when passing arguments in resource/name form; give every object as {kind}/NAME"),
        }
    }
    Ok((kind.to_string(), out))
}

/// Objects named on the command line, with their kinds.
type Named = Vec<(&'static Kind, String)>;

/// Objects named as [`named_objects`] takes them, and nothing else.
fn names_only(words: &[String]) -> Result<Named> {
    let (named, rest) = named_objects(words)?;
    match rest.first() {
        Some(w) => bail!("error: {w:?} is not a resource name"),
        None => Ok(named),
    }
}

/// Objects named as kubectl takes them: `TYPE NAME…` or `TYPE/NAME…`;
/// returns them and the words after the names that are not names (`k=v`).
fn named_objects(words: &[String]) -> Result<(Named, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = Vec::new();
    let mut kind: Option<&'static Kind> = None;
    for w in words {
        if w.contains('=') || (w.ends_with('-') && !w.contains('/')) {
            rest.push(w.clone());
        } else if let Some((k, n)) = w.split_once('/') {
            out.push((kind_named(k)?, n.to_string()));
        } else if let Some(k) = kind {
            out.push((k, w.clone()));
        } else {
            kind = Some(kind_named(w)?);
        }
    }
    if out.is_empty() {
        bail!("error: resource(s) were provided, but no name was specified");
    }
    Ok((out, rest))
}

/// How kubectl names an object in what it prints (`replicaset.apps/web`).
pub(crate) fn kind_slash_name(kind: &Kind, name: &str) -> String {
    if kind.group.is_empty() {
        format!("{}/{name}", kind.singular)
    } else {
        format!("{}.{}/{name}", kind.singular, kind.group)
    }
}

pub fn scale(c: &Client, a: ScaleArgs) -> Result<()> {
    let (targets, _) = select(c, &a.what, &a.select, &a.namespace, false)?;
    if targets.is_empty() {
        bail!("error: no objects passed to scale");
    }
    for (kind, ns, name) in targets {
        if !kind.subresources.contains(&kinds::Subresource::Scale) {
            bail!("error: no objects passed to scale: {} cannot be scaled", kind.plural);
        }
        let path = format!("{}/scale", kind.object_path(&ns, &name));
        c.modify(&path, |scale| {
            if let Some(want) = a.current_replicas {
                let cur = scale["spec"]["replicas"].as_i64().unwrap_or(0);
                if cur != want {
                    bail!("error: Expected replicas to be {want}, was {cur}");
                }
            }
            scale["spec"]["replicas"] = json!(a.replicas);
            Ok(())
        })?;
        println!("{} scaled", kind_slash_name(kind, &name));
    }
    Ok(())
}

pub fn label(c: &Client, a: LabelArgs) -> Result<()> {
    metadata_map(c, a, "labels", "label", "labeled")
}

/// `annotate`: as `label`, on `metadata.annotations`.
pub fn annotate(c: &Client, a: LabelArgs) -> Result<()> {
    metadata_map(c, a, "annotations", "annotation", "annotated")
}

fn metadata_map(c: &Client, a: LabelArgs, field: &str, what: &str, done: &str) -> Result<()> {
    let (targets, changes) = select(c, &a.what, &a.select, &a.namespace, false)?;
    if changes.is_empty() {
        bail!("error: at least one {what} update is required");
    }
    if targets.is_empty() {
        bail!("error: no objects passed to {what}");
    }
    for (kind, ns, name) in targets {
        let path = kind.object_path(&ns, &name);
        c.modify(&path, |obj| {
            if !obj["metadata"][field].is_object() {
                obj["metadata"][field] = json!({});
            }
            let labels = &mut obj["metadata"][field];
            for ch in &changes {
                if let Some((k, v)) = ch.split_once('=') {
                    let cur = labels[k].as_str();
                    if cur.is_some_and(|cur| cur != v) && !a.overwrite {
                        bail!(
                            "error: '{k}' already has a value ({}), and --overwrite is false",
                            cur.unwrap_or("")
                        );
                    }
                    labels[k] = json!(v);
                } else if let (Some(k), Some(m)) = (ch.strip_suffix('-'), labels.as_object_mut()) {
                    m.remove(k);
                }
            }
            Ok(())
        })?;
        println!("{} {done}", kind_slash_name(kind, &name));
    }
    Ok(())
}

/// `patch`: one object, with a strategic, merge or JSON patch (the server
/// applies it).
pub fn patch(c: &Client, a: PatchArgs) -> Result<()> {
    let targets = names_only(&a.what)?;
    let text = match (&a.patch, &a.patch_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("error reading {}", f.display()))?,
        (None, None) => bail!("error: must specify -p or --patch-file"),
    };
    let body: Value = serde_json::from_str(&text)
        .or_else(|_| {
            serde_saphyr::from_str_with_options::<Value>(&text, peapod_core::manifest::yaml_options())
                .map_err(|e| anyhow!("{e}"))
        })
        .map_err(|e| anyhow!("error: unable to parse the patch: {e}"))?;
    let content_type = match a.patch_type.as_str() {
        "merge" => "application/merge-patch+json",
        "json" => "application/json-patch+json",
        _ => "application/strategic-merge-patch+json",
    };
    let ns = ns_of(&a.namespace);
    for (kind, name) in targets {
        let mut path = kind.object_path(&ns, &name);
        if let Some(sub) = &a.subresource {
            path = format!("{path}/{sub}");
        }
        let before = c.call("GET", &path, None)?;
        let after = c.sending(content_type).call("PATCH", &path, Some(&body))?;
        let word = if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"] {
            "patched (no change)"
        } else {
            "patched"
        };
        println!("{} {word}", kind_slash_name(kind, &name));
    }
    Ok(())
}

/// `edit`: the object as YAML in `$KUBE_EDITOR`, `$EDITOR` or `vi`; what
/// comes back replaces it (refused if it changed meanwhile).
pub fn edit(c: &Client, a: EditArgs) -> Result<()> {
    let targets = names_only(&a.what)?;
    let ns = ns_of(&a.namespace);
    for (kind, name) in targets {
        let path = kind.object_path(&ns, &name);
        let current = c.call("GET", &path, None)?;
        let text = serde_saphyr::to_string(&current).map_err(|e| anyhow!("yaml: {e}"))?;
        let file = std::env::temp_dir().join(format!("peapod-edit-{}-{name}.yaml", std::process::id()));
        std::fs::write(&file, &text).with_context(|| format!("write {}", file.display()))?;
        let editor = std::env::var("KUBE_EDITOR")
            .or_else(|_| std::env::var("EDITOR"))
            .unwrap_or_else(|_| "vi".into());
        let mut words = editor.split_whitespace();
        let program = words.next().unwrap_or("vi");
        let status = std::process::Command::new(program)
            .args(words)
            .arg(&file)
            .status()
            .with_context(|| format!("run the editor {editor:?}"));
        let edited = std::fs::read_to_string(&file);
        let _ = std::fs::remove_file(&file);
        if !status?.success() {
            bail!("error: the editor {editor:?} failed; nothing was changed");
        }
        let edited = edited.with_context(|| format!("read {}", file.display()))?;
        if edited == text {
            println!("Edit cancelled, no changes made.");
            continue;
        }
        let object = manifest::parse_config(&file.display().to_string(), &edited)?;
        c.call("PUT", &path, Some(&object))?;
        println!("{} edited", kind_slash_name(kind, &name));
    }
    Ok(())
}

/// `cordon` (true) or `uncordon` (false): the node's `spec.unschedulable`.
pub fn cordon(c: &Client, a: NodeArgs, on: bool) -> Result<()> {
    let path = kinds::node().object_path("", &a.node);
    let word = if on { "cordoned" } else { "uncordoned" };
    let cur = c.call("GET", &path, None)?;
    if cur["spec"]["unschedulable"].as_bool().unwrap_or(false) == on {
        println!("node/{} already {word}", a.node);
        return Ok(());
    }
    c.modify(&path, |n| {
        if on {
            n["spec"]["unschedulable"] = json!(true);
        } else if let Some(s) = n["spec"].as_object_mut() {
            s.remove("unschedulable");
        }
        Ok(())
    })?;
    println!("node/{} {word}", a.node);
    Ok(())
}

/// One `taint` argument: key, value, effect (None: any), and whether it removes.
fn parse_taint(arg: &str) -> Result<(String, String, Option<String>, bool)> {
    let (spec, remove) = match arg.strip_suffix('-') {
        Some(s) => (s, true),
        None => (arg, false),
    };
    let (kv, effect) = match spec.rsplit_once(':') {
        Some((kv, e)) => (kv, Some(e.to_string())),
        None => (spec, None),
    };
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if let Some(e) = &effect {
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e.as_str()) {
            bail!("error: invalid taint effect: {e}, unsupported taint effect");
        }
    }
    if effect.is_none() && !remove {
        bail!("error: invalid taint spec: {arg}: an effect is required (NoSchedule, PreferNoSchedule, NoExecute)");
    }
    if key.is_empty() || !names_ok(key) {
        bail!("error: invalid taint spec: {arg}: invalid key {key:?}");
    }
    Ok((key.to_string(), value.to_string(), effect, remove))
}

fn names_ok(key: &str) -> bool {
    peapod_core::names::is_qualified_name(key).is_empty()
}

pub fn taint(c: &Client, a: TaintArgs) -> Result<()> {
    let (kind, rest) = a
        .what
        .split_first()
        .ok_or_else(|| anyhow!("error: at least one taint update is required"))?;
    if kind_named(kind)?.kind != "Node" {
        bail!("error: taints apply to nodes only");
    }
    let (name, changes) = rest
        .split_first()
        .ok_or_else(|| anyhow!("error: a node name is required"))?;
    if changes.is_empty() {
        bail!("error: at least one taint update is required");
    }
    let taints: Vec<(String, String, Option<String>, bool)> =
        changes.iter().map(|t| parse_taint(t)).collect::<Result<_>>()?;
    let path = kinds::node().object_path("", name);
    let mut removed_any = false;
    c.modify(&path, |n| {
        let mut list: Vec<Value> = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
        for (key, value, effect, remove) in &taints {
            let same = |t: &Value| t["key"] == key.as_str() && effect.as_deref().is_none_or(|e| t["effect"] == e);
            if *remove {
                let before = list.len();
                list.retain(|t| !same(t));
                if list.len() == before {
                    bail!("error: taint {key:?} not found");
                }
                removed_any = true;
            } else {
                if list.iter().any(&same) && !a.overwrite {
                    bail!("error: node {name} already has {key} taint(s) with same effect(s) and --overwrite is false");
                }
                list.retain(|t| !same(t));
                let mut t = json!({"key": key, "effect": effect});
                if !value.is_empty() {
                    t["value"] = json!(value);
                }
                list.push(t);
            }
        }
        if list.is_empty() {
            if let Some(s) = n["spec"].as_object_mut() {
                s.remove("taints");
            }
        } else {
            n["spec"]["taints"] = Value::Array(list);
        }
        Ok(())
    })?;
    let word = if removed_any && taints.iter().all(|t| t.3) {
        "untainted"
    } else {
        "tainted"
    };
    println!("node/{name} {word}");
    Ok(())
}

pub fn logs(c: &Client, a: LogsArgs) -> Result<()> {
    let mut q = vec![];
    if let Some(cn) = &a.container {
        q.push(format!("container={}", urlencode(cn)));
    }
    if a.follow {
        q.push("follow=true".into());
    }
    if a.previous {
        q.push("previous=true".into());
    }
    if let Some(t) = a.tail.filter(|t| *t >= 0) {
        q.push(format!("tailLines={t}"));
    }
    if a.timestamps {
        q.push("timestamps=true".into());
    }
    if let Some(d) = &a.since {
        q.push(format!(
            "sinceSeconds={}",
            duration_seconds(d).with_context(|| "--since")?
        ));
    }
    if let Some(t) = &a.since_time {
        chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| anyhow::anyhow!("--since-time {t:?}: not an RFC 3339 time: {e}"))?;
        q.push(format!("sinceTime={}", urlencode(t)));
    }
    if let Some(n) = a.limit_bytes {
        q.push(format!("limitBytes={n}"));
    }
    let ns = ns_of(&a.namespace);
    let pods = match (&a.pod, &a.selector) {
        (Some(p), None) => vec![pod_of(c, &ns, p)?],
        (None, Some(sel)) => {
            let path = format!("{}?labelSelector={}", kinds::pod().collection_path(&ns), urlencode(sel));
            let list = c.call("GET", &path, None)?;
            let mut names: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            names.sort();
            if names.is_empty() {
                eprintln!("No resources found in {ns} namespace.");
                return Ok(());
            }
            names
        }
        (Some(_), Some(_)) => bail!("a pod and -l (--selector) cannot both be given"),
        (None, None) => bail!("a pod (NAME, pod/NAME or TYPE/NAME) or -l (--selector) is required"),
    };
    if a.follow && pods.len() > 5 {
        bail!(
            "you are attempting to follow {} log streams, but maximum allowed concurrency is 5",
            pods.len()
        );
    }
    let prefix = a.prefix.unwrap_or(a.selector.is_some());
    let query = q.join("&");
    let stream_one = |pod: &str| -> Result<()> {
        let path = format!("{}/log?{query}", kinds::pod().object_path(&ns, pod));
        let label = format!("[pod/{pod}/{}] ", a.container.as_deref().unwrap_or("*"));
        let mut pending = Vec::new();
        c.stream("GET", &path, None, |chunk| {
            let mut out = std::io::stdout().lock();
            if !prefix {
                return out.write_all(chunk).and_then(|_| out.flush()).is_ok();
            }
            // Whole lines only, so lines of pods followed together never interleave.
            pending.extend_from_slice(chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if out
                    .write_all(label.as_bytes())
                    .and_then(|_| out.write_all(&line))
                    .is_err()
                {
                    return false;
                }
            }
            out.flush().is_ok()
        })
        .map(drop)
    };
    if a.follow && pods.len() > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| stream_one(p))).collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow!("a log stream panicked"))?)
        })
    } else {
        pods.iter().try_for_each(|p| stream_one(p))
    }
}

/// The pod a `logs` argument names: `NAME`, `pod/NAME`, or `TYPE/NAME` of
/// something with a pod selector (the first of its pods: running, ready,
/// newest first; kubectl says which when there are several).
pub(crate) fn pod_of(c: &Client, ns: &str, arg: &str) -> Result<String> {
    let Some((ty, name)) = arg.split_once('/') else {
        return Ok(arg.to_string());
    };
    let kind = kind_named(ty)?;
    if kind.kind == "Pod" {
        return Ok(name.to_string());
    }
    let object = c.call("GET", &kind.object_path(ns, name), None)?;
    let selector = &object["spec"]["selector"];
    // Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs: a LabelSelector; RCs: a map.
    let labels = selector["matchLabels"].as_object().or(selector
        .as_object()
        .filter(|m| !m.contains_key("matchLabels") && !m.contains_key("matchExpressions")));
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        bail!("{}/{name} selects no pods", kind.plural);
    };
    let sel: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let path = format!(
        "{}?labelSelector={}",
        kinds::pod().collection_path(ns),
        urlencode(&sel.join(","))
    );
    let list = c.call("GET", &path, None)?;
    let mut pods: Vec<&serde_json::Value> = list["items"].as_array().into_iter().flatten().collect();
    let ready = |p: &serde_json::Value| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    pods.sort_by_key(|p| {
        (
            p["status"]["phase"] != "Running",
            !ready(p),
            std::cmp::Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string()),
        )
    });
    let Some(first) = pods.first() else {
        bail!("no pods found for {}/{name}", kind.plural);
    };
    let pod = first["metadata"]["name"].as_str().unwrap_or("").to_string();
    if pods.len() > 1 {
        eprintln!("Found {} pods, using pod/{pod}", pods.len());
    }
    Ok(pod)
}

/// `peapod plugins [-o json]`: the volume plugins the daemon loaded.
#[derive(clap::Args)]
pub struct PluginsArgs {
    /// Output format: table (default) or json.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
}

pub fn plugins(c: &Client, a: PluginsArgs) -> Result<()> {
    let list = c.call("GET", "/peapod/v1/plugins", None)?;
    if a.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let mut rows = vec![["NAME", "VERSION", "ABI", "CAPABILITIES", "FILE"]
        .map(String::from)
        .to_vec()];
    for p in list["items"].as_array().into_iter().flatten() {
        let caps: Vec<&str> = p["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push(vec![
            p["name"].as_str().unwrap_or("").into(),
            p["version"].as_str().unwrap_or("").into(),
            p["abi"].as_str().unwrap_or("").into(),
            joined_or_none(&caps, ","),
            p["path"].as_str().unwrap_or("").into(),
        ]);
    }
    output::table(&rows);
    Ok(())
}

/// `peapod tree [-o json]`: the daemon's live supervision tree.
#[derive(clap::Args)]
pub struct TreeArgs {
    /// Output format: table (default) or json.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
}

pub fn tree(c: &Client, a: TreeArgs) -> Result<()> {
    let list = c.call("GET", "/peapod/v1/tree", None)?;
    if a.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let mut rows = vec![["ACTOR", "RESTART", "STATE", "RESTARTS", "AGE"]
        .map(String::from)
        .to_vec()];
    fn walk(v: &Value, lead: &str, last: bool, top: bool, rows: &mut Vec<Vec<String>>) {
        let branch = if top {
            String::new()
        } else if last {
            format!("{lead}└─ ")
        } else {
            format!("{lead}├─ ")
        };
        let kind = v["kind"].as_str().unwrap_or("");
        let name = v["name"].as_str().unwrap_or("");
        rows.push(vec![
            format!("{branch}{kind} {name}"),
            v["restart"].as_str().unwrap_or("").into(),
            v["state"].as_str().unwrap_or("").into(),
            v["restarts"].as_u64().unwrap_or(0).to_string(),
            crate::output::age(v["since"].as_str().unwrap_or("")),
        ]);
        let kids = v["children"].as_array().cloned().unwrap_or_default();
        let next = if top {
            String::new()
        } else if last {
            format!("{lead}   ")
        } else {
            format!("{lead}│  ")
        };
        for (i, k) in kids.iter().enumerate() {
            walk(k, &next, i + 1 == kids.len(), false, rows);
        }
    }
    for root in list["items"].as_array().into_iter().flatten() {
        walk(root, "", true, true, &mut rows);
    }
    output::table(&rows);
    Ok(())
}

pub fn image(cmd: ImageCommand, root: &Path) -> Result<()> {
    let store = peapod_actors::image::ImageStore::open(root.join("images"))?;
    match cmd {
        ImageCommand::Import {
            source,
            tag,
            max_blob_size,
            max_layer_size,
        } => {
            let bytes = |flag: &str, v: &str| -> Result<u64> {
                let q =
                    peapod_core::quantity::Quantity::parse(v).map_err(|e| anyhow::anyhow!("--{flag} {v:?}: {e}"))?;
                u64::try_from(q.value()).map_err(|_| anyhow::anyhow!("--{flag} {v:?}: must not be negative"))
            };
            let store = store.with_limits(peapod_actors::image::ImportLimits {
                max_blob_bytes: bytes("max-blob-size", &max_blob_size)?,
                max_layer_bytes: bytes("max-layer-size", &max_layer_size)?,
            });
            for r in store.import(&source, tag.as_deref())? {
                println!("imported {r}");
            }
        }
        ImageCommand::Pull { name, registries } => {
            let mut store = store.with_registries(registries.config()?);
            let bars = crate::progress::PullBars::for_terminal(&name);
            if let Some(b) = &bars {
                store = store.with_progress(b.clone());
            }
            let pulled = store.pull(&name);
            if let Some(b) = &bars {
                b.finish();
            }
            let pulled = pulled?;
            println!(
                "pulled {} ({}, {} bytes fetched)",
                pulled.reference, pulled.digest, pulled.fetched_bytes
            );
        }
        ImageCommand::Ls => {
            let mut rows = vec![vec![
                "IMAGE".to_string(),
                "DIGEST".into(),
                "SIZE".into(),
                "CREATED".into(),
                "AGE".into(),
            ]];
            for i in store.list()? {
                let since =
                    |t: Option<String>| t.map_or_else(|| "<unknown>".into(), |t| peapod_core::printers::age(&t));
                let stored = i.stored.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
                rows.push(vec![
                    i.reference,
                    i.digest.chars().take(19).collect(),
                    format!("{:.1}MB", i.size as f64 / 1e6),
                    since(i.created),
                    since(stored),
                ]);
            }
            output::table(&rows);
        }
        ImageCommand::Rm { reference, force } => {
            let users = peapod_actors::runtime::image_users(&peapod_actors::runtime::NodePaths::new(root, root));
            let digests = store.digests_of(&reference)?;
            let using: Vec<String> = users
                .iter()
                .filter(|u| digests.contains(&u.digest))
                .map(|u| format!("{} (container {})", u.pod, u.container))
                .collect();
            if !using.is_empty() && !force {
                bail!(
                    "image {reference:?} is in use by pod {}: delete the pods first, or pass --force to remove the name (the image's data stays until no container uses it)",
                    using.join(", pod ")
                );
            }
            let in_use = users.into_iter().map(|u| u.digest).collect();
            store.remove_keeping(&reference, &in_use)?;
            println!("deleted {reference}");
        }
        ImageCommand::Prune => {
            let users = peapod_actors::runtime::image_users(&peapod_actors::runtime::NodePaths::new(root, root));
            let in_use = users.into_iter().map(|u| u.digest).collect();
            for removed in store.prune(&in_use)? {
                println!("deleted {removed}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{duration_seconds, kinds_named, parse_taint};

    #[test]
    fn taints_parse_as_kubectl_writes_them() {
        let t = |s: &str| parse_taint(s).map_err(|e| e.to_string());
        assert_eq!(
            t("a=b:NoSchedule").unwrap(),
            ("a".into(), "b".into(), Some("NoSchedule".into()), false)
        );
        assert_eq!(
            t("a:NoExecute-").unwrap(),
            ("a".into(), "".into(), Some("NoExecute".into()), true)
        );
        assert_eq!(t("a-").unwrap(), ("a".into(), "".into(), None, true));
        assert!(t("a=b:Sometimes")
            .unwrap_err()
            .contains("invalid taint effect: Sometimes"));
        assert!(t("a=b").unwrap_err().contains("an effect is required"));
        assert!(t("bad key=b:NoSchedule").unwrap_err().contains("invalid key"));
    }

    #[test]
    fn get_takes_lists_of_kinds_and_categories() {
        let plurals = |w: &str| kinds_named(w).unwrap().iter().map(|k| k.plural).collect::<Vec<_>>();
        assert_eq!(plurals("po,ns"), ["pods", "namespaces"]);
        let all = [
            "pods",
            "replicasets",
            "replicationcontrollers",
            "deployments",
            "daemonsets",
            "jobs",
            "cronjobs",
            "statefulsets",
            "services",
        ];
        assert_eq!(plurals("all"), all, "the kinds in category all");
        assert_eq!(plurals("pods,all"), all, "each kind once");
        assert!(kinds_named("pods,widgets")
            .unwrap_err()
            .to_string()
            .contains("\"widgets\""));
        assert!(kinds_named(",").is_err());
    }

    #[test]
    fn since_takes_go_durations_rounded_up_to_seconds() {
        assert_eq!(duration_seconds("30s").unwrap(), 30);
        assert_eq!(duration_seconds("1h30m").unwrap(), 5400);
        assert_eq!(duration_seconds("1.5h").unwrap(), 5400);
        assert_eq!(duration_seconds("250ms").unwrap(), 1);
        assert_eq!(duration_seconds("2m0.5s").unwrap(), 121);
        for bad in ["", "5", "s", "5 days", "-5s", "0s", "1e400h"] {
            let e = duration_seconds(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;

    #[test]
    fn apply_keeps_what_others_set_and_drops_what_the_manifest_dropped() {
        let first = json!({"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let mut live = first.clone();
        live["metadata"]["annotations"] = json!({LAST_APPLIED: serde_json::to_string(&first).unwrap(), "bound": "yes"});
        live["spec"]["volumeName"] = json!("pv-1");
        live["status"] = json!({"phase": "Bound"});
        let second = json!({"metadata": {"name": "c", "labels": {"a": "1"}},
            "spec": {"resources": {"requests": {"storage": "2Gi"}}}});
        let out = three_way(&live, &second);
        assert_eq!(out["spec"]["volumeName"], "pv-1", "set by the binder, kept");
        assert_eq!(out["spec"]["resources"]["requests"]["storage"], "2Gi");
        assert_eq!(
            out["metadata"]["labels"],
            json!({"a": "1"}),
            "b was dropped from the manifest"
        );
        assert_eq!(out["metadata"]["annotations"]["bound"], "yes");
        assert_eq!(out["status"]["phase"], "Bound");
        let last: Value = serde_json::from_str(out["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap()).unwrap();
        assert_eq!(last, second);
        // An object never applied: the manifest is merged in, nothing removed.
        let mut created = live.clone();
        created["metadata"]["annotations"] = json!({});
        let out = three_way(&created, &second);
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    }
}
