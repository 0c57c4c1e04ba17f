//! A pod's volumes on this node: resolved to plugins, published under the
//! pod's directory before its containers start, unpublished when it goes.

use crate::loader::{CallError, LoadRefusal, Operation, Plugin, Registry};
use crate::sources::{self, VolumeSource};
use k8s_openapi::api::core::v1::Pod;
use peapod_plugin_sdk::{
    InitRequest, InitResponse, PodRef, PublishRequest, PublishResponse, UnpublishRequest, UnpublishResponse,
    VolumeStats, VolumeStatsRequest,
};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
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
}

/// The node's volumes.
pub struct VolumeManager {
    registry: Registry,
    cfg: VolumeConfig,
}

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
        (Self { registry, cfg }, refused)
    }

    /// The loaded plugins.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Calls every plugin's `init`; returns the failures (those plugins stay
    /// loaded: a pod using one sees the failure of its own calls).
    pub async fn init_plugins(&self) -> Vec<CallError> {
        let mut failed = Vec::new();
        for p in self.registry.all() {
            let state = self.cfg.state_dir.join(&p.name);
            let _ = std::fs::create_dir_all(&state);
            let req = InitRequest {
                node_id: self.cfg.node_name.clone(),
                state_dir: state.display().to_string(),
                config: serde_json::Value::Null,
            };
            if let Err(e) = p
                .call::<_, InitResponse>(Operation::Init, &req, self.cfg.call_timeout)
                .await
            {
                failed.push(e);
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

    /// The pod's volumes, resolved.
    pub fn sources(pod: &Pod) -> Result<Vec<VolumeSource>, VolumeError> {
        pod.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .map(|v| {
                sources::resolve(pod, v).map_err(|message| VolumeError {
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

    /// Publishes every volume of `pod` (idempotent: already published ones
    /// are published again, which plugins accept).
    pub async fn publish(&self, pod: &Pod, pod_dir: &Path) -> Result<Vec<Published>, VolumeError> {
        let mut out = Vec::new();
        for src in Self::sources(pod)? {
            self.check_host_path(&src)?;
            let plugin = self.plugin(&src)?;
            let target = Self::target_dir(pod_dir, &src);
            std::fs::create_dir_all(&target).map_err(|e| VolumeError {
                volume: src.name.clone(),
                message: format!("volume {:?}: create {}: {e}", src.name, target.display()),
            })?;
            let req = PublishRequest {
                volume_id: src.volume_id.clone(),
                target_path: target.display().to_string(),
                staging_path: String::new(),
                read_only: src.read_only,
                volume_context: src.context.clone(),
                pod: pod_ref(pod),
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
            });
        }
        Ok(out)
    }

    /// Unpublishes every volume of `pod` and removes the (empty) target
    /// directories; every volume is tried, the first error is returned.
    pub async fn unpublish(&self, pod: &Pod, pod_dir: &Path) -> Result<(), VolumeError> {
        let mut first = None;
        for src in Self::sources(pod).unwrap_or_default() {
            let target = Self::target_dir(pod_dir, &src);
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
        });
        let src = |path: &str| VolumeSource {
            name: "h".into(),
            plugin: "hostpath".into(),
            volume_id: path.into(),
            context: [("path".to_string(), path.to_string())].into(),
            read_only: false,
        };
        assert!(m.check_host_path(&src("/srv/a")).is_ok());
        let e = m.check_host_path(&src("/etc")).unwrap_err().message;
        assert!(e.contains("not under an allowed prefix of this node (/srv)"), "{e}");
        let e = m.check_host_path(&src("/srv/../etc")).unwrap_err().message;
        assert!(e.contains("without '..'"), "{e}");
    }
}
