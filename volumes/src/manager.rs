//! A pod's volumes on this node: resolved to plugins, published under the
//! pod's directory before its containers start, unpublished when it goes.

use crate::loader::{CallError, LoadRefusal, Operation, Plugin, Registry};
use crate::sources::{self, Claims, VolumeSource};
use k8s_openapi::api::core::v1::Pod;
use peapod_plugin_sdk::{
    DeleteRequest, DeleteResponse, ExpandRequest, ExpandResponse, InitRequest, InitResponse, PodRef, ProvisionRequest,
    ProvisionResponse, PublishRequest, PublishResponse, StageRequest, StageResponse, UnpublishRequest,
    UnpublishResponse, UnstageRequest, UnstageResponse, VolumeStats, VolumeStatsRequest, CAP_STAGE,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an operator configures about storage.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Directories plugins are loaded from, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Host path prefixes hostPath volumes may use; empty allows every path.
    pub host_path_allow: Vec<PathBuf>,
    /// Deadline of every plugin call.
    pub call_timeout: Duration,
    /// The node's name (passed to `init`).
    pub node_name: String,
    /// Where each plugin gets a state directory (`<dir>/<plugin>`).
    pub state_dir: PathBuf,
    /// Operator configuration per plugin: `<dir>/<plugin>.yaml` (or `.yml`,
    /// `.json`), passed as `config` at `init`.
    pub config_dir: PathBuf,
}

/// A plugin that could not be initialised: its configuration file is
/// unreadable, or its `init` failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("volume plugin {plugin:?}: {message}")]
pub struct InitError {
    pub plugin: String,
    pub message: String,
}

/// A volume that could not be set up; `message` is for the pod's event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct VolumeError {
    /// The volume's name in the pod.
    pub volume: String,
    /// What went wrong, naming the plugin when one was called.
    pub message: String,
}

/// Calls for one volume of one pod are serialised under this key.
fn op_key(pod: &Pod, src: &VolumeSource) -> String {
    format!("{}/{}", pod.metadata.uid.as_deref().unwrap_or(""), src.volume_id)
}

/// A volume published for a pod: bind `host_path` into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub source: VolumeSource,
    /// The key its plugin calls are serialised under.
    pub key: String,
    /// What containers mount: the target directory, or the plugin's `hostPath`.
    pub host_path: PathBuf,
    /// Staged by this publish (not before): a filesystem grown while it was
    /// not staged has just been grown to its volume's size.
    pub staged_now: bool,
}

/// What an expansion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The volume's size now.
    pub capacity: i64,
    /// Why its filesystem is not grown yet (it grows when next staged), if it is not.
    pub filesystem_pending: Option<String>,
}

/// The node's volumes.
pub struct VolumeManager {
    registry: Registry,
    cfg: VolumeConfig,
    /// One lock per staged volume: its record is read and written under it.
    staging_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// A volume staged on this node, as recorded beside its staging path so a
/// restarted daemon knows it is staged and who uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedRecord {
    pub plugin: String,
    pub volume_id: String,
    pub staging_path: String,
    /// The uids of the pods it is published into.
    pub users: BTreeSet<String>,
}

/// The record of what was published for a pod, in its directory.
const PUBLISHED_RECORD: &str = "published.json";

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Whether `path` lies under `prefix`, component by component (`/srv` allows
/// `/srv/a` but not `/srvx`).
fn under(path: &Path, prefix: &Path) -> bool {
    path.starts_with(prefix)
}

impl VolumeManager {
    /// Loads the plugins; returns what was refused too.
    pub fn new(cfg: VolumeConfig) -> (Self, Vec<LoadRefusal>) {
        let (registry, refused) = Registry::load(&cfg.plugin_dirs);
        (
            Self {
                registry,
                cfg,
                staging_locks: Mutex::default(),
            },
            refused,
        )
    }

    /// The loaded plugins.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The operator's configuration of `plugin`, if it has a file.
    pub fn plugin_config(&self, plugin: &str) -> Result<serde_json::Value, String> {
        for ext in ["yaml", "yml", "json"] {
            let path = self.cfg.config_dir.join(format!("{plugin}.{ext}"));
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    return peapod_core::manifest::parse_config(&path.display().to_string(), &text)
                        .map_err(|e| e.to_string())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(serde_json::Value::Null)
    }

    /// Calls every plugin's `init` with its configuration; returns the
    /// failures (those plugins stay loaded: a pod using one sees the failure
    /// of its own calls).
    pub async fn init_plugins(&self) -> Vec<InitError> {
        let mut failed = Vec::new();
        for p in self.registry.all() {
            let state = self.cfg.state_dir.join(&p.name);
            let _ = std::fs::create_dir_all(&state);
            let config = match self.plugin_config(&p.name) {
                Ok(c) => c,
                Err(message) => {
                    failed.push(InitError {
                        plugin: p.name.clone(),
                        message: format!("configuration not loaded, plugin not initialised: {message}"),
                    });
                    continue;
                }
            };
            let req = InitRequest {
                node_id: self.cfg.node_name.clone(),
                state_dir: state.display().to_string(),
                config,
            };
            if let Err(e) = p
                .call::<_, InitResponse>(Operation::Init, &req, self.cfg.call_timeout)
                .await
            {
                failed.push(InitError {
                    plugin: p.name.clone(),
                    message: format!("init failed: {}", e.message),
                });
            }
        }
        failed
    }

    fn plugin(&self, src: &VolumeSource) -> Result<&Arc<Plugin>, VolumeError> {
        self.registry.get(&src.plugin).ok_or_else(|| VolumeError {
            volume: src.name.clone(),
            message: format!(
                "volume {:?}: volume plugin {:?} is not loaded on this node (loaded: {})",
                src.name,
                src.plugin,
                self.registry
                    .all()
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The directory a volume is published at, as kubelet lays out
    /// `pods/<uid>/volumes/<plugin>/<name>`.
    pub fn target_dir(pod_dir: &Path, src: &VolumeSource) -> PathBuf {
        pod_dir.join("volumes").join(&src.plugin).join(&src.name)
    }

    /// The pod's volumes, resolved; claims through `claims`.
    pub fn sources(pod: &Pod, claims: &Claims) -> Result<Vec<VolumeSource>, VolumeError> {
        pod.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| {
                sources::resolve(pod, v, claims).map_err(|message| VolumeError {
                    volume: v.name.clone(),
                    message,
                })
            })
            .collect()
    }

    fn check_host_path(&self, src: &VolumeSource) -> Result<(), VolumeError> {
        if src.plugin != sources::HOST_PATH {
            return Ok(());
        }
        let path = PathBuf::from(src.context.get("path").cloned().unwrap_or_default());
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(VolumeError {
                volume: src.name.clone(),
                message: format!(
                    "volume {:?}: hostPath {}: must be an absolute path without '..'",
                    src.name,
                    path.display()
                ),
            });
        }
        self.check_allowed(src, &path)
    }

    /// The operator's allow-list; checked on the path as written and again on
    /// the path it resolves to, so a symlink cannot lead elsewhere.
    fn check_allowed(&self, src: &VolumeSource, path: &Path) -> Result<(), VolumeError> {
        let allow = &self.cfg.host_path_allow;
        if allow.is_empty() || allow.iter().any(|p| under(path, p)) {
            return Ok(());
        }
        Err(VolumeError {
            volume: src.name.clone(),
            message: format!(
                "volume {:?}: hostPath {}: not under an allowed prefix of this node ({})",
                src.name,
                path.display(),
                allow
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Checks a published volume on what its path was opened as, at each
    /// container start: a hostPath must still be what was published (a
    /// container that can write above it may have swapped it for a link)
    /// and within the allow-list; a subPath below it is the runtime's to keep
    /// inside the volume. Any other
    /// plugin's path must lie in the pod's directory or the plugins' state
    /// directory, so no plugin hands a container the host's `/`.
    pub fn check_opened(&self, v: &Published, real: &Path, pod_dir: &Path) -> Result<(), VolumeError> {
        if v.source.plugin == sources::HOST_PATH {
            if !under(real, &v.host_path) {
                return Err(VolumeError {
                    volume: v.source.name.clone(),
                    message: format!(
                        "volume {:?}: hostPath {} now resolves to {}, outside what was published ({}); recreate the pod to use the new path",
                        v.source.name,
                        v.source.context.get("path").map(String::as_str).unwrap_or_default(),
                        real.display(),
                        v.host_path.display()
                    ),
                });
            }
            return self.check_allowed(&v.source, real);
        }
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let (pods, plugins) = (canon(pod_dir), canon(&self.cfg.state_dir));
        if under(real, &pods) || under(real, &plugins) {
            return Ok(());
        }
        Err(VolumeError {
            volume: v.source.name.clone(),
            message: format!(
                "volume {:?}: plugin {:?} published {}, which is outside the pod's directory ({}) and the plugins' state directory ({})",
                v.source.name,
                v.source.plugin,
                real.display(),
                pods.display(),
                plugins.display()
            ),
        })
    }

    /// Where a volume from a PersistentVolume is staged on this node, when
    /// its plugin stages: `<state>/.staging/<plugin>/<volume>`.
    fn staging_dir(&self, src: &VolumeSource) -> Option<PathBuf> {
        let p = src.persistent.as_ref()?;
        let plugin = self.registry.get(&src.plugin)?;
        (plugin.capabilities & CAP_STAGE != 0)
            .then(|| self.cfg.state_dir.join(".staging").join(&src.plugin).join(&p.volume))
    }

    fn staging_lock(&self, dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.staging_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(dir.to_path_buf())
            .or_default()
            .clone()
    }

    /// The record of a staged volume, if it is staged.
    pub fn staged_record(dir: &Path) -> Option<StagedRecord> {
        let bytes = std::fs::read(dir.join("staged.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
        std::fs::rename(&tmp, path)
    }

    /// Stages the volume once per node and records `uid` as a user; a
    /// volume staged before (by this daemon or the one before a restart) is
    /// not staged again.
    async fn stage(&self, src: &VolumeSource, dir: &Path, uid: &str) -> Result<(PathBuf, bool), VolumeError> {
        let fail = |message: String| VolumeError {
            volume: src.name.clone(),
            message,
        };
        let lock = self.staging_lock(dir);
        let _held = lock.lock().await;
        let staging = dir.join("mount");
        let mut fresh = false;
        let mut record = match Self::staged_record(dir) {
            Some(r) => r,
            None => {
                fresh = true;
                let plugin = self.plugin(src)?;
                let p = src
                    .persistent
                    .clone()
                    .unwrap_or_else(|| unreachable!("staged volumes are persistent"));
                std::fs::create_dir_all(&staging)
                    .map_err(|e| fail(format!("volume {:?}: create {}: {e}", src.name, staging.display())))?;
                let read_only = p.access_modes.iter().all(|m| m == "ReadOnlyMany") && !p.access_modes.is_empty();
                let req = StageRequest {
                    volume_id: src.volume_id.clone(),
                    staging_path: staging.display().to_string(),
                    access_modes: p.access_modes.clone(),
                    fs_type: p.fs_type.clone(),
                    read_only,
                    volume_context: src.context.clone(),
                    mount_options: p.mount_options.clone(),
                };
                plugin
                    .call_for::<_, StageResponse>(
                        Some(&format!("stage/{}", dir.display())),
                        Operation::Stage,
                        &req,
                        self.cfg.call_timeout,
                    )
                    .await
                    .map_err(|e| fail(format!("MountVolume.MountDevice failed for volume {:?}: {e}", p.volume)))?;
                StagedRecord {
                    plugin: src.plugin.clone(),
                    volume_id: src.volume_id.clone(),
                    staging_path: staging.display().to_string(),
                    users: BTreeSet::new(),
                }
            }
        };
        if record.users.insert(uid.to_string()) || !dir.join("staged.json").exists() {
            Self::write_json(&dir.join("staged.json"), &record).map_err(|e| {
                fail(format!(
                    "volume {:?}: record staging in {}: {e}",
                    src.name,
                    dir.display()
                ))
            })?;
        }
        Ok((staging, fresh))
    }

    /// Drops `uid` from the users of a staged volume and unstages it when
    /// it was the last.
    async fn release(&self, plugin_name: &str, dir: &Path, uid: &str) -> Result<(), String> {
        let lock = self.staging_lock(dir);
        let _held = lock.lock().await;
        let Some(mut record) = Self::staged_record(dir) else {
            return Ok(());
        };
        if record.users.remove(uid) {
            Self::write_json(&dir.join("staged.json"), &record).map_err(|e| e.to_string())?;
        }
        if !record.users.is_empty() {
            return Ok(());
        }
        let plugin = self
            .registry
            .get(plugin_name)
            .ok_or_else(|| format!("volume plugin {plugin_name:?} is not loaded on this node"))?;
        let req = UnstageRequest {
            volume_id: record.volume_id.clone(),
            staging_path: record.staging_path.clone(),
        };
        plugin
            .call_for::<_, UnstageResponse>(
                Some(&format!("stage/{}", dir.display())),
                Operation::Unstage,
                &req,
                self.cfg.call_timeout,
            )
            .await
            .map_err(|e| format!("UnmountDevice failed for volume {:?}: {e}", record.volume_id))?;
        let _ = std::fs::remove_dir(dir.join("mount"));
        let _ = std::fs::remove_file(dir.join("staged.json"));
        let _ = std::fs::remove_dir(dir);
        Ok(())
    }

    /// Every volume staged on this node: (its directory, its record).
    pub fn staged(&self) -> Vec<(PathBuf, StagedRecord)> {
        let root = self.cfg.state_dir.join(".staging");
        let mut out = Vec::new();
        for plugin in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for vol in std::fs::read_dir(plugin.path()).into_iter().flatten().flatten() {
                if let Some(r) = Self::staged_record(&vol.path()) {
                    out.push((vol.path(), r));
                }
            }
        }
        out
    }

    /// Unstages what no live pod uses any more (pods removed while the
    /// daemon was down, an unstage that failed before); `live` are the uids
    /// of the pods this node still runs or tears down.
    pub async fn sweep_staged(&self, live: &std::collections::HashSet<String>) -> Vec<String> {
        let mut failed = Vec::new();
        for (dir, record) in self.staged() {
            let gone: Vec<String> = record.users.iter().filter(|u| !live.contains(*u)).cloned().collect();
            let result = if gone.is_empty() && !record.users.is_empty() {
                Ok(())
            } else if gone.is_empty() {
                self.release(&record.plugin, &dir, "").await
            } else {
                let mut r = Ok(());
                for uid in gone {
                    r = r.and(self.release(&record.plugin, &dir, &uid).await);
                }
                r
            };
            if let Err(e) = result {
                failed.push(e);
            }
        }
        failed
    }

    /// Publishes every volume of `pod` (idempotent: already published ones
    /// are published again, which plugins accept). A volume from a
    /// PersistentVolume is staged first, once per node, by plugins that stage.
    pub async fn publish(&self, pod: &Pod, pod_dir: &Path, claims: &Claims) -> Result<Vec<Published>, VolumeError> {
        let mut out = Vec::new();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let sources = Self::sources(pod, claims)?;
        // Recorded before any call, so a teardown after a crash finds every
        // volume that may be staged or published.
        self.record_published(pod_dir, &sources)?;
        for src in sources {
            self.check_host_path(&src)?;
            let target = Self::target_dir(pod_dir, &src);
            std::fs::create_dir_all(&target).map_err(|e| VolumeError {
                volume: src.name.clone(),
                message: format!("volume {:?}: create {}: {e}", src.name, target.display()),
            })?;
            if sources::is_projection(&src.plugin) {
                // Searchable by any user the containers run as (the daemon's umask is 077).
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(|e| VolumeError {
                    volume: src.name.clone(),
                    message: format!("volume {:?}: chmod {}: {e}", src.name, target.display()),
                })?;
                let key = op_key(pod, &src);
                out.push(Published {
                    source: src,
                    host_path: target,
                    key,
                    staged_now: false,
                });
                continue;
            }
            let plugin = self.plugin(&src)?;
            let (staging_path, staged_now) = match self.staging_dir(&src) {
                Some(dir) => {
                    let (path, fresh) = self.stage(&src, &dir, &uid).await?;
                    (path.display().to_string(), fresh)
                }
                None => (String::new(), false),
            };
            let req = PublishRequest {
                volume_id: src.volume_id.clone(),
                target_path: target.display().to_string(),
                staging_path,
                read_only: src.read_only,
                volume_context: src.context.clone(),
                pod: pod_ref(pod),
                mount_options: src
                    .persistent
                    .as_ref()
                    .map(|p| p.mount_options.clone())
                    .unwrap_or_default(),
            };
            let resp: PublishResponse = plugin
                .call_for(
                    Some(&op_key(pod, &src)),
                    Operation::Publish,
                    &req,
                    self.cfg.call_timeout,
                )
                .await
                .map_err(|e| VolumeError {
                    volume: src.name.clone(),
                    message: format!("MountVolume.SetUp failed for volume {:?}: {e}", src.name),
                })?;
            let mut host_path = resp.host_path.map(PathBuf::from).unwrap_or(target);
            if src.plugin == sources::HOST_PATH {
                // Bind what the path resolves to, after checking that too.
                let real = host_path.canonicalize().map_err(|e| VolumeError {
                    volume: src.name.clone(),
                    message: format!("volume {:?}: resolve {}: {e}", src.name, host_path.display()),
                })?;
                self.check_allowed(&src, &real)?;
                host_path = real;
            }
            let key = op_key(pod, &src);
            out.push(Published {
                source: src,
                host_path,
                key,
                staged_now,
            });
        }
        Ok(out)
    }

    /// Adds `sources` to the pod's record of published volumes when one
    /// comes from a claim.
    fn record_published(&self, pod_dir: &Path, sources: &[VolumeSource]) -> Result<(), VolumeError> {
        // Only a claim's volume needs the record (the others resolve from the
        // pod's spec at teardown): most pods start without this write.
        if !sources.iter().any(|s| s.persistent.is_some()) {
            return Ok(());
        }
        let mut all = Self::recorded(pod_dir);
        for s in sources {
            if !all.contains(s) {
                all.retain(|x| x.name != s.name || x.persistent.is_none());
                all.push(s.clone());
            }
        }
        let dir = pod_dir.join("volumes");
        std::fs::create_dir_all(&dir)
            .and_then(|_| Self::write_json(&dir.join(PUBLISHED_RECORD), &all))
            .map_err(|e| VolumeError {
                volume: String::new(),
                message: format!("record published volumes in {}: {e}", dir.display()),
            })
    }

    fn recorded(pod_dir: &Path) -> Vec<VolumeSource> {
        std::fs::read(pod_dir.join("volumes").join(PUBLISHED_RECORD))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// What to tear down for `pod`: what was recorded as published, and the
    /// volumes its spec names that need no lookup.
    fn teardown_sources(pod: &Pod, pod_dir: &Path) -> Vec<VolumeSource> {
        let mut all = Self::recorded(pod_dir);
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if all.iter().any(|s| s.name == v.name) {
                continue;
            }
            if let Ok(s) = sources::resolve(pod, v, &Claims::new()) {
                all.push(s);
            }
        }
        all
    }

    /// Unpublishes every volume of `pod`, unstages the ones no other pod
    /// uses, and removes the (empty) target directories; every volume is
    /// tried, the first error is returned.
    pub async fn unpublish(&self, pod: &Pod, pod_dir: &Path) -> Result<(), VolumeError> {
        let mut first = None;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for src in Self::teardown_sources(pod, pod_dir) {
            let target = Self::target_dir(pod_dir, &src);
            if sources::is_projection(&src.plugin) {
                // Our own files (the node unmounted a tmpfs first); links are not followed.
                if let Err(e) = std::fs::remove_dir_all(&target) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        first.get_or_insert(VolumeError {
                            volume: src.name.clone(),
                            message: format!("UnmountVolume.TearDown failed for volume {:?}: {e}", src.name),
                        });
                    }
                }
                continue;
            }
            let Ok(plugin) = self.plugin(&src) else { continue };
            let req = UnpublishRequest {
                volume_id: src.volume_id.clone(),
                target_path: target.display().to_string(),
                volume_context: src.context.clone(),
                pod: pod_ref(pod),
            };
            match plugin
                .call_for::<_, UnpublishResponse>(
                    Some(&op_key(pod, &src)),
                    Operation::Unpublish,
                    &req,
                    self.cfg.call_timeout,
                )
                .await
            {
                // Never recursive: a target may be a mount of someone's data.
                Ok(_) => {
                    let _ = std::fs::remove_dir(&target);
                    if let Some(dir) = self.staging_dir(&src) {
                        if let Err(message) = self.release(&src.plugin, &dir, &uid).await {
                            first.get_or_insert(VolumeError {
                                volume: src.name.clone(),
                                message,
                            });
                        }
                    }
                }
                Err(e) => {
                    first.get_or_insert(VolumeError {
                        volume: src.name.clone(),
                        message: format!("UnmountVolume.TearDown failed for volume {:?}: {e}", src.name),
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The loaded plugin named `name` if it provisions volumes.
    pub fn provisioner(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.registry
            .get(name)
            .filter(|p| p.capabilities & peapod_plugin_sdk::CAP_PROVISION != 0)
    }

    /// Creates a volume through `plugin` (which must provision).
    pub async fn provision(&self, plugin: &str, req: &ProvisionRequest) -> Result<ProvisionResponse, String> {
        let p = self
            .provisioner(plugin)
            .ok_or_else(|| format!("volume plugin {plugin:?} is not loaded on this node or does not provision"))?;
        p.call_for(
            Some(&format!("provision/{}", req.name)),
            Operation::Provision,
            req,
            self.cfg.call_timeout,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Deletes a provisioned volume through `plugin`.
    pub async fn delete_volume(&self, plugin: &str, req: &DeleteRequest) -> Result<(), String> {
        let p = self
            .provisioner(plugin)
            .ok_or_else(|| format!("volume plugin {plugin:?} is not loaded on this node or does not delete volumes"))?;
        p.call_for::<_, DeleteResponse>(
            Some(&format!("delete/{}", req.volume_id)),
            Operation::Delete,
            req,
            self.cfg.call_timeout,
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }

    /// The loaded plugin named `name` if it expands volumes.
    pub fn expander(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.registry
            .get(name)
            .filter(|p| p.capabilities & peapod_plugin_sdk::CAP_EXPAND != 0)
    }

    /// Grows a volume through `plugin`: the volume itself, then (when it is
    /// staged on this node) the filesystem on its staging path. A
    /// filesystem that cannot grow while mounted (the kernel refuses, or the
    /// plugin cannot) is left for the next staging, which grows it.
    pub async fn expand(&self, plugin: &str, volume: &str, mut req: ExpandRequest) -> Result<Expanded, String> {
        let p = self
            .expander(plugin)
            .ok_or_else(|| format!("volume plugin {plugin:?} is not loaded on this node or does not expand volumes"))?;
        let key = format!("expand/{plugin}/{volume}");
        req.volume_path = String::new();
        let grown: ExpandResponse = p
            .call_for(Some(&key), Operation::Expand, &req, self.cfg.call_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let capacity = grown.capacity_bytes.max(req.capacity_bytes);
        let dir = self.cfg.state_dir.join(".staging").join(plugin).join(volume);
        let lock = self.staging_lock(&dir);
        let _held = lock.lock().await;
        let mut filesystem_pending = None;
        if let Some(record) = Self::staged_record(&dir) {
            req.volume_path = record.staging_path;
            req.capacity_bytes = capacity;
            if let Err(e) = p
                .call_for::<_, ExpandResponse>(Some(&key), Operation::Expand, &req, self.cfg.call_timeout)
                .await
            {
                filesystem_pending = Some(e.message);
            }
        }
        Ok(Expanded {
            capacity,
            filesystem_pending,
        })
    }

    /// Usage of a published volume.
    pub async fn stats(&self, p: &Published) -> Result<VolumeStats, CallError> {
        let plugin = self.registry.get(&p.source.plugin).ok_or_else(|| CallError {
            plugin: p.source.plugin.clone(),
            operation: "get_volume_stats",
            code: peapod_plugin_sdk::STATUS_NOT_FOUND,
            message: "not loaded".into(),
        })?;
        let req = VolumeStatsRequest {
            volume_id: p.source.volume_id.clone(),
            volume_path: p.host_path.display().to_string(),
            volume_context: p.source.context.clone(),
        };
        plugin
            .call_for(Some(&p.key), Operation::GetVolumeStats, &req, self.cfg.call_timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_by_component() {
        assert!(under(Path::new("/srv/data"), Path::new("/srv")));
        assert!(under(Path::new("/srv"), Path::new("/srv")));
        assert!(!under(Path::new("/srvx"), Path::new("/srv")));
    }

    #[test]
    fn host_path_allow_list_and_dotdot() {
        let (m, _) = VolumeManager::new(VolumeConfig {
            plugin_dirs: vec![],
            host_path_allow: vec!["/srv".into()],
            call_timeout: Duration::from_secs(1),
            node_name: "n".into(),
            state_dir: "/tmp".into(),
            config_dir: "/nonexistent".into(),
        });
        let src = |path: &str| VolumeSource {
            name: "h".into(),
            plugin: "hostpath".into(),
            volume_id: path.into(),
            context: [("path".to_string(), path.to_string())].into(),
            read_only: false,
            persistent: None,
        };
        assert!(m.check_host_path(&src("/srv/a")).is_ok());
        let e = m.check_host_path(&src("/etc")).unwrap_err().message;
        assert!(e.contains("not under an allowed prefix of this node (/srv)"), "{e}");
        let e = m.check_host_path(&src("/srv/../etc")).unwrap_err().message;
        assert!(e.contains("without '..'"), "{e}");
    }
}
