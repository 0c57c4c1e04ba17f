//! What a pod reads from the API besides itself: ConfigMaps and Secrets as
//! environment (`env[].valueFrom`, `envFrom`) and as files (`configMap`,
//! `secret`, `downwardAPI` and `projected` volumes), with kubelet's rules
//! and words. Lookups are async store reads; turning what was read into
//! variables or files is pure, so it is tested without a store.
//!
//! These volume kinds are kubelet's own (they need the API, which a
//! storage plugin never sees), so they are built in here, not loaded.

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret, Volume};
use peapod_core::quantity::Quantity;
use peapod_core::store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};

/// A pod's view of one kind of referenced object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    /// The store key (`configmaps`).
    pub fn resource(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmaps",
            Source::Secret => "secrets",
        }
    }
    fn word(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Source::ConfigMap => "ConfigMap",
            Source::Secret => "Secret",
        }
    }
}

/// An object's keys and values.
pub type Data = BTreeMap<String, Vec<u8>>;

/// The ConfigMaps and Secrets one use needs, as read; `None`: not found.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    namespace: String,
    found: BTreeMap<(Source, String), Option<Data>>,
}

impl Objects {
    /// Reads `refs` of `namespace` from the store; a missing object is
    /// recorded as such, any other failure is the error.
    pub async fn read(store: &dyn Store, namespace: &str, refs: &BTreeSet<(Source, String)>) -> Result<Self, String> {
        let mut found = BTreeMap::new();
        for (source, name) in refs {
            let data = match store.get(source.resource(), namespace, name).await {
                Ok(v) => Some(data_of(*source, v)?),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(format!("get {} {namespace}/{name}: {e}", source.word())),
            };
            found.insert((*source, name.clone()), data);
        }
        Ok(Self {
            namespace: namespace.to_string(),
            found,
        })
    }

    /// Objects given directly, for tests.
    #[cfg(test)]
    pub fn from_parts(namespace: &str, parts: Vec<(Source, &str, Option<Data>)>) -> Self {
        Self {
            namespace: namespace.to_string(),
            found: parts.into_iter().map(|(s, n, d)| ((s, n.to_string()), d)).collect(),
        }
    }

    fn get(&self, source: Source, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.found.get(&(source, name.to_string())).and_then(Option::as_ref)
    }

    fn not_found(source: Source, name: &str) -> String {
        format!("{} \"{name}\" not found", source.word())
    }
}

/// The keys and values of a ConfigMap (`data` and `binaryData`) or Secret (`data`).
fn data_of(source: Source, v: serde_json::Value) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let name = peapod_core::object::name(&v).to_string();
    match source {
        Source::ConfigMap => {
            let cm: ConfigMap = serde_json::from_value(v).map_err(|e| format!("configmap {name}: {e}"))?;
            let mut out: BTreeMap<String, Vec<u8>> = cm
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, b)| (k, b.0))
                .collect();
            out.extend(
                cm.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, s)| (k, s.into_bytes())),
            );
            Ok(out)
        }
        Source::Secret => {
            let s: Secret = serde_json::from_value(v).map_err(|e| format!("secret {name}: {e}"))?;
            Ok(s.data.unwrap_or_default().into_iter().map(|(k, b)| (k, b.0)).collect())
        }
    }
}

/// The ConfigMaps and Secrets container `c` reads as environment.
pub fn env_references(c: &Container) -> BTreeSet<(Source, String)> {
    let mut out = BTreeSet::new();
    for e in c.env_from.iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            out.insert((Source::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &e.secret_ref {
            out.insert((Source::Secret, r.name.clone()));
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            out.insert((Source::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &from.secret_key_ref {
            out.insert((Source::Secret, r.name.clone()));
        }
    }
    out
}

/// The ConfigMaps and Secrets the pod's volumes project.
pub fn volume_references(pod: &Pod) -> BTreeSet<(Source, String)> {
    let mut out = BTreeSet::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(c) = &v.config_map {
            out.insert((Source::ConfigMap, c.name.clone()));
        }
        if let Some(s) = &v.secret {
            out.insert((Source::Secret, s.secret_name.clone().unwrap_or_default()));
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                out.insert((Source::ConfigMap, c.name.clone()));
            }
            if let Some(s) = &p.secret {
                out.insert((Source::Secret, s.name.clone()));
            }
        }
    }
    out
}

/// A container's variables from ConfigMaps and Secrets, as kubelet makes
/// them: `envFrom` in order (prefixed; keys that are not variable names
/// are left out), and the `env` entries that read a key, by index (`None`:
/// an optional reference to something absent, the variable is left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEnv {
    pub from: Vec<(String, String)>,
    pub values: BTreeMap<usize, Option<String>>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Resolves `c`'s references against `objs`; the error is kubelet's
/// (`configmap "app-config" not found`), shown as `CreateContainerConfigError`.
pub fn container_env(c: &Container, objs: &Objects) -> Result<ConfigEnv, String> {
    let mut out = ConfigEnv::default();
    for e in c.env_from.iter().flatten() {
        let prefix = e.prefix.clone().unwrap_or_default();
        let (source, name, optional) = match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), _) => (Source::ConfigMap, r.name.as_str(), r.optional == Some(true)),
            (None, Some(r)) => (Source::Secret, r.name.as_str(), r.optional == Some(true)),
            (None, None) => continue,
        };
        match objs.get(source, name) {
            None if optional => {}
            None => return Err(Objects::not_found(source, name)),
            Some(data) => {
                for (k, v) in data {
                    let var = format!("{prefix}{k}");
                    if peapod_core::names::is_env_var_name(&var).is_empty() {
                        out.from.push((var, text(v)));
                    }
                }
            }
        }
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        if let Some(v) = key_ref(e, objs)? {
            out.values.insert(i, v);
        }
    }
    Ok(out)
}

/// `Some(value)` for an entry that reads a ConfigMap or Secret key.
fn key_ref(e: &EnvVar, objs: &Objects) -> Result<Option<Option<String>>, String> {
    let Some(from) = &e.value_from else { return Ok(None) };
    let (source, name, key, optional) = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(r), _) => (Source::ConfigMap, &r.name, &r.key, r.optional == Some(true)),
        (None, Some(r)) => (Source::Secret, &r.name, &r.key, r.optional == Some(true)),
        (None, None) => return Ok(None),
    };
    let Some(data) = objs.get(source, name) else {
        return if optional {
            Ok(Some(None))
        } else {
            Err(Objects::not_found(source, name))
        };
    };
    match data.get(key) {
        Some(v) => Ok(Some(Some(text(v)))),
        None if optional => Ok(Some(None)),
        None => Err(format!(
            "couldn't find key {key} in {} {}/{name}",
            source.kind(),
            objs.namespace
        )),
    }
}

/// A pod field the downward API reads, by path; `None`: not one it allows
/// there. Env may read more than volumes (`volume` false).
pub fn pod_field(pod: &Pod, path: &str, volume: bool) -> Option<String> {
    let m = &pod.metadata;
    let labels = || m.labels.clone().unwrap_or_default();
    let annotations = || m.annotations.clone().unwrap_or_default();
    if let Some(k) = path
        .strip_prefix("metadata.labels['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return Some(labels().get(k).cloned().unwrap_or_default());
    }
    if let Some(k) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return Some(annotations().get(k).cloned().unwrap_or_default());
    }
    let status = pod.status.as_ref();
    let ips = |list: Option<Vec<String>>| list.unwrap_or_default().join(",");
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" if volume => format_map(&labels()),
        "metadata.annotations" if volume => format_map(&annotations()),
        _ if volume => return None,
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone().unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIPs" => ips(status
            .and_then(|s| s.pod_ips.clone())
            .map(|l| l.into_iter().map(|i| i.ip).collect())),
        "status.hostIPs" => ips(status
            .and_then(|s| s.host_ips.clone())
            .map(|l| l.into_iter().map(|i| i.ip).collect())),
        _ => return None,
    })
}

/// kubelet's `FormatMap`: `key="value"` lines, sorted, values quoted as Go's `%q`.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A container's resource for `resourceFieldRef` (`limits.cpu` …) divided
/// by `divisor` and rounded up, as kubelet computes it; an unset limit is
/// the node's allocatable amount.
pub fn resource_field(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    allocatable: peapod_core::resources::Amounts,
) -> Result<String, String> {
    let divisor = match divisor {
        None | Some("") => Quantity::parse("1"),
        Some(d) => Quantity::parse(d),
    }
    .map_err(|e| format!("resourceFieldRef {resource}: divisor: {e}"))?;
    let get = |limits: bool, name: &str| {
        let r = c.resources.as_ref()?;
        let map = if limits { r.limits.as_ref() } else { r.requests.as_ref() }?;
        Quantity::parse(&map.get(name)?.0).ok()
    };
    let ceil_div = |n: i64, d: i64| -> Result<String, String> {
        if d <= 0 {
            return Err(format!("resourceFieldRef {resource}: divisor must be positive"));
        }
        Ok((n / d + i64::from(n % d != 0)).to_string())
    };
    match resource {
        "limits.cpu" => ceil_div(
            get(true, "cpu").map_or(allocatable.cpu_millis, |q| q.milli_value()),
            divisor.milli_value(),
        ),
        "requests.cpu" => ceil_div(get(false, "cpu").map_or(0, |q| q.milli_value()), divisor.milli_value()),
        "limits.memory" => ceil_div(
            get(true, "memory").map_or(allocatable.memory_bytes, |q| q.value()),
            divisor.value(),
        ),
        "requests.memory" => ceil_div(get(false, "memory").map_or(0, |q| q.value()), divisor.value()),
        "limits.ephemeral-storage" | "requests.ephemeral-storage" => {
            let limits = resource.starts_with("limits");
            ceil_div(
                get(limits, "ephemeral-storage").map_or(0, |q| q.value()),
                divisor.value(),
            )
        }
        other => Err(format!("unsupported container resource: {other}")),
    }
}

/// One file of a projected volume: its bytes and mode.
pub use peapod_volumes::atomic::FileProjection as File;

/// The files of one volume, by path relative to the volume's root.
pub type Payload = BTreeMap<String, File>;

const DEFAULT_MODE: i32 = 0o644;

fn mode_of(item: Option<i32>, default: Option<i32>) -> u32 {
    u32::try_from(item.or(default).unwrap_or(DEFAULT_MODE) & 0o777).unwrap_or(0o644)
}

/// The files of object data: every key, or the `items` named.
fn keyed(
    source: Source,
    name: &str,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    optional: bool,
    default_mode: Option<i32>,
    objs: &Objects,
    out: &mut Payload,
) -> Result<(), String> {
    let Some(data) = objs.get(source, name) else {
        return if optional {
            Ok(())
        } else {
            Err(Objects::not_found(source, name))
        };
    };
    match items {
        None => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    File {
                        data: v.clone(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            File {
                                data: v.clone(),
                                mode: mode_of(it.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(match source {
                            Source::ConfigMap => format!("configmap references non-existent config key: {}", it.key),
                            Source::Secret => format!("references non-existent secret key: {}", it.key),
                        })
                    }
                }
            }
        }
    }
    Ok(())
}

fn downward(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    allocatable: peapod_core::resources::Amounts,
    out: &mut Payload,
) -> Result<(), String> {
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            pod_field(pod, &f.field_path, true)
                .ok_or_else(|| format!("downwardAPI {}: unsupported fieldPath {:?}", it.path, f.field_path))?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
                .find(|c| c.name == name)
                .ok_or_else(|| format!("downwardAPI {}: no container {name:?} in the pod", it.path))?;
            resource_field(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()), allocatable)?
        } else {
            continue;
        };
        out.insert(
            it.path.clone(),
            File {
                data: value.into_bytes(),
                mode: mode_of(it.mode, default_mode),
            },
        );
    }
    Ok(())
}

/// The files of volume `v` of `pod` (`Ok(None)`: not a projected kind).
pub fn payload(
    pod: &Pod,
    v: &Volume,
    objs: &Objects,
    allocatable: peapod_core::resources::Amounts,
) -> Result<Option<Payload>, String> {
    let mut out = Payload::new();
    if let Some(c) = &v.config_map {
        keyed(
            Source::ConfigMap,
            &c.name,
            c.items.as_ref(),
            c.optional == Some(true),
            c.default_mode,
            objs,
            &mut out,
        )?;
    } else if let Some(s) = &v.secret {
        keyed(
            Source::Secret,
            s.secret_name.as_deref().unwrap_or_default(),
            s.items.as_ref(),
            s.optional == Some(true),
            s.default_mode,
            objs,
            &mut out,
        )?;
    } else if let Some(d) = &v.downward_api {
        downward(
            pod,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode,
            allocatable,
            &mut out,
        )?;
    } else if let Some(p) = &v.projected {
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                keyed(
                    Source::ConfigMap,
                    &c.name,
                    c.items.as_ref(),
                    c.optional == Some(true),
                    p.default_mode,
                    objs,
                    &mut out,
                )?;
            }
            if let Some(sec) = &s.secret {
                keyed(
                    Source::Secret,
                    &sec.name,
                    sec.items.as_ref(),
                    sec.optional == Some(true),
                    p.default_mode,
                    objs,
                    &mut out,
                )?;
            }
            if let Some(d) = &s.downward_api {
                downward(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    p.default_mode,
                    allocatable,
                    &mut out,
                )?;
            }
            if s.service_account_token.is_some() {
                return Err("projected serviceAccountToken: this node issues no service account tokens".into());
            }
            if s.cluster_trust_bundle.is_some() {
                return Err("projected clusterTrustBundle: not supported on this node".into());
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}

/// A projected volume that could not be written: kubelet's `FailedMount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectError {
    pub volume: String,
    pub message: String,
}

impl std::fmt::Display for ProjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MountVolume.SetUp failed for volume {:?} : {}",
            self.volume, self.message
        )
    }
}

/// Reads what the pod's projected volumes show and makes their files so
/// (in-memory ones on a tmpfs mounted first); returns whether any file
/// changed. Repeated on every change and sync: unchanged volumes are not touched.
pub async fn project(
    rt: &std::sync::Arc<super::Runtime>,
    store: &dyn Store,
    pod: &Pod,
    published: &[peapod_volumes::Published],
    allocatable: peapod_core::resources::Amounts,
) -> Result<bool, ProjectError> {
    let vols: Vec<(Volume, std::path::PathBuf, bool)> = published
        .iter()
        .filter(|p| peapod_volumes::sources::is_projection(&p.source.plugin))
        .filter_map(|p| {
            let v = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .find(|v| v.name == p.source.name)?;
            // In memory as the volume's source was resolved (`sources::resolve` decides).
            let memory = p.source.context.get("medium").is_some_and(|m| m == "Memory");
            Some((v.clone(), p.host_path.clone(), memory))
        })
        .collect();
    if vols.is_empty() {
        return Ok(false);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let objs = Objects::read(store, ns, &volume_references(pod))
        .await
        .map_err(|message| ProjectError {
            volume: vols[0].0.name.clone(),
            message,
        })?;
    let mut work = Vec::new();
    for (v, dir, memory) in vols {
        let files = payload(pod, &v, &objs, allocatable)
            .map_err(|message| ProjectError {
                volume: v.name.clone(),
                message,
            })?
            .unwrap_or_default();
        work.push((v.name, dir, memory, files));
    }
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let written = rt
        .with_projections(&uid, move || {
            let mut changed = false;
            for (name, dir, memory, files) in work {
                let fail = |message: String| ProjectError {
                    volume: name.clone(),
                    message,
                };
                if memory && !super::is_mountpoint(&dir) {
                    nix::mount::mount(
                        Some("tmpfs"),
                        &dir,
                        Some("tmpfs"),
                        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                        Some("mode=0755"),
                    )
                    .map_err(|e| fail(format!("mount tmpfs on {}: {e}", dir.display())))?;
                }
                changed |= peapod_volumes::atomic::write(&dir, &files, fs_group)
                    .map_err(|e| fail(format!("write {}: {e}", dir.display())))?;
            }
            Ok(changed)
        })
        .await;
    // None: the pod is being removed; nothing more is written.
    written.unwrap_or(Ok(false))
}

/// Detaches the tmpfs of the pod's in-memory projected volumes, before
/// their directories are removed.
pub fn unmount(pod_dir: &std::path::Path) {
    use peapod_volumes::sources::{DOWNWARD_API, PROJECTED, SECRET};
    for kind in [SECRET, DOWNWARD_API, PROJECTED] {
        super::remove::unmount_below(&pod_dir.join("volumes").join(kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
            "labels": {"b": "two \"q\"", "a": "one"}}, "spec": spec}))
        .unwrap()
    }

    fn data(kv: &[(&str, &str)]) -> Option<BTreeMap<String, Vec<u8>>> {
        Some(kv.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect())
    }

    const ALLOC: peapod_core::resources::Amounts = peapod_core::resources::Amounts {
        cpu_millis: 2000,
        memory_bytes: 1 << 30,
    };

    #[test]
    fn env_reads_keys_and_whole_objects_with_kubelets_errors() {
        let c: Container = serde_json::from_value(json!({"name": "c",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "gone", "optional": true}}],
            "env": [
                {"name": "PLAIN", "value": "x"},
                {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "P", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "O", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": true}}}
            ]}))
        .unwrap();
        let objs = Objects::from_parts(
            "ns",
            vec![
                (Source::ConfigMap, "cfg", data(&[("mode", "fast"), ("bad key", "x")])),
                (Source::Secret, "sec", data(&[("password", "s3cret")])),
                (Source::Secret, "gone", None),
            ],
        );
        assert_eq!(
            env_references(&c).into_iter().collect::<Vec<_>>(),
            [
                (Source::ConfigMap, "cfg".to_string()),
                (Source::Secret, "gone".to_string()),
                (Source::Secret, "sec".to_string())
            ]
        );
        let env = container_env(&c, &objs).unwrap();
        assert_eq!(env.from, [("CFG_mode".to_string(), "fast".to_string())]);
        assert_eq!(
            env.values,
            BTreeMap::from([
                (1, Some("fast".to_string())),
                (2, Some("s3cret".to_string())),
                (3, None)
            ])
        );
        let missing = Objects::from_parts("ns", vec![(Source::ConfigMap, "cfg", None)]);
        assert_eq!(container_env(&c, &missing).unwrap_err(), "configmap \"cfg\" not found");
        let no_key = Objects::from_parts(
            "ns",
            vec![
                (Source::ConfigMap, "cfg", data(&[("mode", "m")])),
                (Source::Secret, "sec", data(&[])),
            ],
        );
        assert_eq!(
            container_env(&c, &no_key).unwrap_err(),
            "couldn't find key password in Secret ns/sec"
        );
    }

    #[test]
    fn volumes_project_items_modes_and_the_downward_api() {
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}],
            "volumes": [
                {"name": "cm", "configMap": {"name": "cfg", "defaultMode": 0o600, "items": [{"key": "mode", "path": "conf/mode", "mode": 0o400}]}},
                {"name": "all", "projected": {"defaultMode": 0o640, "sources": [
                    {"configMap": {"name": "cfg"}},
                    {"secret": {"name": "sec", "items": [{"key": "password", "path": "pw"}]}},
                    {"downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
                        {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "1m"}}
                    ]}}
                ]}},
                {"name": "missing", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "x"}]}}
            ]}),
        );
        let objs = Objects::from_parts(
            "ns",
            vec![
                (Source::ConfigMap, "cfg", data(&[("mode", "fast")])),
                (Source::Secret, "sec", data(&[("password", "s3cret")])),
            ],
        );
        let vols = p.spec.as_ref().unwrap().volumes.clone().unwrap();
        let cm = payload(&p, &vols[0], &objs, ALLOC).unwrap().unwrap();
        assert_eq!(
            cm["conf/mode"],
            File {
                data: b"fast".to_vec(),
                mode: 0o400
            }
        );
        let all = payload(&p, &vols[1], &objs, ALLOC).unwrap().unwrap();
        let files: BTreeMap<&str, (String, u32)> = all
            .iter()
            .map(|(k, f)| (k.as_str(), (String::from_utf8(f.data.clone()).unwrap(), f.mode)))
            .collect();
        assert_eq!(
            files,
            BTreeMap::from([
                ("cpu", ("2000".to_string(), 0o640)),
                ("labels", ("a=\"one\"\nb=\"two \\\"q\\\"\"".to_string(), 0o640)),
                ("mem", ("64".to_string(), 0o640)),
                ("mode", ("fast".to_string(), 0o640)),
                ("pw", ("s3cret".to_string(), 0o640)),
            ])
        );
        assert_eq!(
            payload(&p, &vols[2], &objs, ALLOC).unwrap_err(),
            "configmap references non-existent config key: nope"
        );
        let none = Objects::from_parts("ns", vec![(Source::ConfigMap, "cfg", None)]);
        assert_eq!(
            payload(&p, &vols[0], &none, ALLOC).unwrap_err(),
            "configmap \"cfg\" not found"
        );
    }

    #[test]
    fn resource_fields_round_up_as_kubelet_does() {
        let c: Container = serde_json::from_value(json!({"name": "c",
            "resources": {"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"cpu": "1500m"}}}))
        .unwrap();
        assert_eq!(resource_field(&c, "limits.cpu", None, ALLOC).unwrap(), "2");
        assert_eq!(resource_field(&c, "requests.cpu", Some("1m"), ALLOC).unwrap(), "250");
        assert_eq!(
            resource_field(&c, "requests.memory", Some("1Mi"), ALLOC).unwrap(),
            "100"
        );
        // No memory limit: the node's allocatable.
        assert_eq!(
            resource_field(&c, "limits.memory", None, ALLOC).unwrap(),
            (1i64 << 30).to_string()
        );
        assert!(resource_field(&c, "limits.gpu", None, ALLOC).is_err());
    }
}
