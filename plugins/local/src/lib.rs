//! The `local.peapod.io` volume plugin: the node's default provisioner.
//! Each volume is a directory under a base path holding one filesystem
//! image (`disk.img`, sparse, of the requested size rounded up to a MiB,
//! ext4 unless the class asks for another `fsType` its tools exist for).
//! Staging mounts the image through a loop device (released by the kernel
//! when the last mount goes); publishing bind-mounts the staged filesystem
//! into the pod. The size is enforced by the filesystem: writing past it
//! fails with ENOSPC inside the pod, which a plain directory (the usual
//! local-path provisioner) never does.
//!
//! Configuration (`<plugin-config-dir>/local.peapod.io.yaml`):
//! `basePath` (default: the plugin's state directory + `/volumes`).
#![forbid(unsafe_code)]

use peapod_plugin_sdk::host;
use peapod_plugin_sdk::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The plugin's name, which StorageClasses name as `provisioner`.
pub const NAME: &str = "local.peapod.io";
/// The smallest image made: ext4 needs room for its own metadata.
pub const MIN_BYTES: i64 = 4 << 20;
const IMAGE: &str = "disk.img";
/// Written once the image is complete, so a half-made one is made again.
const READY: &str = "ready";

/// Operator configuration.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub base_path: Option<PathBuf>,
}

/// The plugin.
#[derive(Default)]
pub struct Local {
    base: Mutex<Option<PathBuf>>,
}

fn valid_name(name: &str) -> Result<(), PluginError> {
    if name.is_empty() || name.len() > 253 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
        return Err(PluginError::invalid(format!("invalid volume name {name:?}")));
    }
    if name.starts_with('.') {
        return Err(PluginError::invalid(format!("invalid volume name {name:?}")));
    }
    Ok(())
}

/// The image size for a request: whole MiB, at least [`MIN_BYTES`].
pub fn image_size(requested: i64) -> Result<i64, PluginError> {
    if requested < 0 {
        return Err(PluginError::invalid(format!("capacity {requested} is negative")));
    }
    let mib = 1i64 << 20;
    let rounded = requested
        .checked_add(mib - 1)
        .map(|n| n / mib * mib)
        .ok_or_else(|| PluginError::invalid(format!("capacity {requested} is too large")))?;
    Ok(rounded.max(MIN_BYTES))
}

/// The `mkfs` invocation for `fs_type` on `image`.
fn mkfs(fs_type: &str, image: &Path) -> Result<Command, PluginError> {
    let mut cmd = match fs_type {
        "" | "ext4" | "ext3" | "ext2" => {
            let mut c = Command::new(format!("mkfs.{}", if fs_type.is_empty() { "ext4" } else { fs_type }));
            // No blocks reserved for root: the whole size is the pod's.
            c.args(["-q", "-F", "-m", "0", "-E", "nodiscard"]);
            c
        }
        "xfs" => {
            let mut c = Command::new("mkfs.xfs");
            c.args(["-q", "-f"]);
            c
        }
        other => {
            return Err(PluginError::invalid(format!(
                "fsType {other:?} is not supported (ext4, ext3, ext2, xfs)"
            )))
        }
    };
    cmd.arg(image);
    Ok(cmd)
}

impl Local {
    fn base(&self) -> Result<PathBuf, PluginError> {
        self.base
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PluginError::precondition("the plugin is not initialised"))
    }

    /// The volume's directory, from its context or its id.
    fn dir(&self, volume_id: &str, context: &Attributes) -> Result<PathBuf, PluginError> {
        valid_name(volume_id)?;
        let base = self.base()?;
        let dir = context
            .get("path")
            .map(PathBuf::from)
            .unwrap_or_else(|| base.join(volume_id));
        if dir != base.join(volume_id) {
            return Err(PluginError::invalid(format!(
                "volume {volume_id:?}: path {} is not this node's volume directory {}",
                dir.display(),
                base.join(volume_id).display()
            )));
        }
        Ok(dir)
    }
}

impl VolumePlugin for Local {
    fn capabilities(&self) -> u64 {
        CAP_PROVISION | CAP_STAGE | CAP_STATS | CAP_EXPAND
    }

    fn init(&self, req: InitRequest) -> Result<InitResponse, PluginError> {
        let cfg: Config = host::config(req.config)?;
        let base = cfg
            .base_path
            .unwrap_or_else(|| Path::new(&req.state_dir).join("volumes"));
        if !base.is_absolute() {
            return Err(PluginError::invalid(format!(
                "configuration: basePath {} must be absolute",
                base.display()
            )));
        }
        std::fs::create_dir_all(&base)
            .map_err(|e| PluginError::internal(format!("create basePath {}: {e}", base.display())))?;
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = Some(base);
        Ok(InitResponse::default())
    }

    fn provision(&self, req: ProvisionRequest) -> Result<ProvisionResponse, PluginError> {
        valid_name(&req.name)?;
        if req.access_modes.iter().any(|m| m == "ReadWriteMany") {
            return Err(PluginError::invalid(
                "ReadWriteMany is not supported: a local volume lives on one node",
            ));
        }
        let size = image_size(req.capacity_bytes)?;
        let fs_type = ["csi.storage.k8s.io/fstype", "fsType", "fstype"]
            .iter()
            .find_map(|k| req.parameters.get(*k).cloned())
            .unwrap_or_default();
        let dir = self.base()?.join(&req.name);
        let image = dir.join(IMAGE);
        let reply = |capacity: i64| ProvisionResponse {
            volume_id: req.name.clone(),
            capacity_bytes: capacity,
            volume_context: [("path".to_string(), dir.display().to_string())].into(),
            local_to_node: true,
        };
        if dir.join(READY).exists() {
            let have = std::fs::metadata(&image).map(|m| m.len() as i64).unwrap_or(0);
            return Ok(reply(have));
        }
        std::fs::create_dir_all(&dir).map_err(|e| PluginError::internal(format!("create {}: {e}", dir.display())))?;
        let file = std::fs::File::create(&image)
            .map_err(|e| PluginError::internal(format!("create {}: {e}", image.display())))?;
        file.set_len(size as u64)
            .map_err(|e| PluginError::internal(format!("size {} to {size}: {e}", image.display())))?;
        drop(file);
        host::run(&mut mkfs(&fs_type, &image)?)?;
        std::fs::write(dir.join(READY), size.to_string())
            .map_err(|e| PluginError::internal(format!("mark {} ready: {e}", dir.display())))?;
        Ok(reply(size))
    }

    fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, PluginError> {
        let dir = self.dir(&req.volume_id, &req.volume_context)?;
        // Attached to a loop device: a mount of it is alive somewhere,
        // perhaps in a namespace this process cannot see.
        if host::loop_device_of(&dir.join(IMAGE)).is_some() {
            return Err(PluginError::precondition(format!(
                "volume {:?} is still mounted on this node",
                req.volume_id
            )));
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(DeleteResponse::default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeleteResponse::default()),
            Err(e) => Err(PluginError::internal(format!("remove {}: {e}", dir.display()))),
        }
    }

    fn stage(&self, req: StageRequest) -> Result<StageResponse, PluginError> {
        let dir = self.dir(&req.volume_id, &req.volume_context)?;
        let staging = Path::new(&req.staging_path);
        if host::is_mounted(staging) {
            return Ok(StageResponse::default());
        }
        if !dir.join(READY).exists() {
            return Err(PluginError::not_found(format!(
                "volume {:?} does not exist on this node ({} has no complete image)",
                req.volume_id,
                dir.display()
            )));
        }
        let mut opts = vec!["loop".to_string()];
        if req.read_only {
            opts.push("ro".into());
        }
        opts.extend(req.mount_options.iter().cloned());
        let mut cmd = Command::new("mount");
        if !req.fs_type.is_empty() {
            cmd.args(["-t", &req.fs_type]);
        }
        // An image grown while it was in use: its filesystem grows now, unmounted.
        if !req.read_only {
            host::grow_unmounted(&dir.join(IMAGE))?;
        }
        cmd.args(["-o", &opts.join(",")]).arg(dir.join(IMAGE)).arg(staging);
        host::run(&mut cmd)?;
        Ok(StageResponse::default())
    }

    fn unstage(&self, req: UnstageRequest) -> Result<UnstageResponse, PluginError> {
        // The loop device goes with the last mount (mount -o loop sets autoclear).
        host::unmount(Path::new(&req.staging_path))?;
        Ok(UnstageResponse::default())
    }

    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
        host::publish_staged(&req)
    }

    fn unpublish(&self, req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
        host::unpublish_staged(&req)
    }

    fn expand(&self, req: ExpandRequest) -> Result<ExpandResponse, PluginError> {
        let dir = self.dir(&req.volume_id, &req.volume_context)?;
        let image = dir.join(IMAGE);
        let size = image_size(req.capacity_bytes)?;
        let have = std::fs::metadata(&image)
            .map_err(|e| PluginError::not_found(format!("volume {:?}: {}: {e}", req.volume_id, image.display())))?
            .len() as i64;
        if req.volume_path.is_empty() {
            if size > have {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&image)
                    .and_then(|f| f.set_len(size as u64))
                    .map_err(|e| PluginError::internal(format!("grow {} to {size}: {e}", image.display())))?;
            }
            return Ok(ExpandResponse {
                capacity_bytes: size.max(have),
            });
        }
        // Staged: the loop device learns the new size, then the filesystem grows.
        let dev = host::loop_device_of(&image).ok_or_else(|| {
            PluginError::precondition(format!("volume {:?} is not attached on this node", req.volume_id))
        })?;
        host::run(Command::new("losetup").args(["-c", &dev]))?;
        host::grow_filesystem(&dev, Path::new(&req.volume_path))?;
        Ok(ExpandResponse { capacity_bytes: have })
    }

    fn get_volume_stats(&self, req: VolumeStatsRequest) -> Result<VolumeStats, PluginError> {
        host::stats(Path::new(&req.volume_path))
    }
}

export_volume_plugin!(Local, name = "local.peapod.io", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_whole_mebibytes_with_a_floor() {
        assert_eq!(image_size(0).unwrap(), MIN_BYTES);
        assert_eq!(image_size(10 << 20).unwrap(), 10 << 20);
        assert_eq!(image_size((10 << 20) + 1).unwrap(), 11 << 20);
        assert!(image_size(-1).is_err());
        assert!(image_size(i64::MAX).is_err());
    }

    /// A plugin initialised with a fresh state directory.
    fn initialised() -> (Local, tempfile::TempDir) {
        let p = Local::default();
        let d = tempfile::tempdir().unwrap();
        p.init(InitRequest {
            state_dir: d.path().display().to_string(),
            ..Default::default()
        })
        .unwrap();
        (p, d)
    }

    #[test]
    fn names_and_paths_stay_under_the_base() {
        let (p, d) = initialised();
        assert!(p.dir("../etc", &Attributes::new()).is_err());
        assert!(p.dir(".x", &Attributes::new()).is_err());
        let outside: Attributes = [("path".to_string(), "/etc".to_string())].into();
        let e = p.dir("pvc-1", &outside).unwrap_err();
        assert!(
            e.message.contains("is not this node's volume directory"),
            "{}",
            e.message
        );
        assert_eq!(
            p.dir("pvc-1", &Attributes::new()).unwrap(),
            d.path().join("volumes/pvc-1")
        );
    }

    #[test]
    fn configuration_is_checked() {
        let p = Local::default();
        let e = p
            .init(InitRequest {
                config: serde_json::json!({"basePth": "/x"}),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("unknown field `basePth`"), "{}", e.message);
        let e = p
            .init(InitRequest {
                config: serde_json::json!({"basePath": "rel"}),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message.contains("must be absolute"), "{}", e.message);
    }

    #[test]
    fn provisioning_makes_a_sized_filesystem_once() {
        let (p, d) = initialised();
        let req = ProvisionRequest {
            name: "pvc-1".into(),
            capacity_bytes: 5 << 20,
            access_modes: vec!["ReadWriteOnce".into()],
            parameters: Attributes::new(),
        };
        let r = p.provision(req.clone()).unwrap();
        assert_eq!(
            (r.volume_id.as_str(), r.capacity_bytes, r.local_to_node),
            ("pvc-1", 5 << 20, true)
        );
        let image = d.path().join("volumes/pvc-1/disk.img");
        let out = Command::new("dumpe2fs").arg("-h").arg(&image).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("Filesystem magic number:  0xEF53"));
        // Again: the same volume, not a new filesystem.
        std::fs::write(d.path().join("volumes/pvc-1/marker"), "x").unwrap();
        assert_eq!(p.provision(req).unwrap(), r);
        assert!(d.path().join("volumes/pvc-1/marker").exists());
        let rwx = ProvisionRequest {
            name: "pvc-2".into(),
            access_modes: vec!["ReadWriteMany".into()],
            ..Default::default()
        };
        assert!(p
            .provision(rwx)
            .unwrap_err()
            .message
            .contains("ReadWriteMany is not supported"));
        p.delete(DeleteRequest {
            volume_id: "pvc-1".into(),
            volume_context: r.volume_context.clone(),
        })
        .unwrap();
        assert!(!d.path().join("volumes/pvc-1").exists());
    }
}
