//! The `emptydir` volume plugin: a directory that lives as long as its pod.
//! On disk it is the target directory itself; with `medium: Memory` a tmpfs
//! is mounted there, sized by `sizeLimit`. Unpublishing removes the data.
//! Usage is reported (`get_volume_stats`) so the daemon can evict a pod whose
//! disk emptyDir outgrows its `sizeLimit`, as kubelet does.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use peapod_plugin_sdk::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The plugin.
#[derive(Default)]
pub struct EmptyDir;

/// Whether `p` is a mount point: a different device than its parent's.
fn is_mountpoint(p: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (std::fs::metadata(p), p.parent().map(std::fs::metadata)) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Bytes (allocated blocks) and inodes used under `p`, not crossing mounts.
pub fn usage(p: &Path) -> (i64, i64) {
    let Ok(root) = std::fs::symlink_metadata(p) else {
        return (0, 0);
    };
    let dev = root.dev();
    let (mut bytes, mut inodes) = (0i64, 0i64);
    let mut stack = vec![p.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            bytes += (m.blocks() * 512) as i64;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

impl VolumePlugin for EmptyDir {
    fn capabilities(&self) -> u64 {
        CAP_STATS
    }

    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
        let target = Path::new(&req.target_path);
        std::fs::create_dir_all(target)
            .map_err(|e| PluginError::internal(format!("create {}: {e}", target.display())))?;
        let medium = req.volume_context.get("medium").map(String::as_str).unwrap_or("");
        match medium {
            "" => {}
            "Memory" => {
                if !is_mountpoint(target) {
                    let mut opts = "mode=0777".to_string();
                    if let Some(limit) = req.volume_context.get("sizeLimit").filter(|l| l.as_str() != "0") {
                        opts.push_str(&format!(",size={limit}"));
                    }
                    mount(
                        Some("tmpfs"),
                        target,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                        Some(opts.as_str()),
                    )
                    .map_err(|e| PluginError::internal(format!("mount tmpfs on {}: {e}", target.display())))?;
                }
            }
            other => {
                return Err(PluginError::invalid(format!(
                    "emptyDir medium {other:?} is not supported (\"\" or \"Memory\")"
                )))
            }
        }
        // Every container user may write, as kubelet makes emptyDirs.
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| PluginError::internal(format!("chmod {}: {e}", target.display())))?;
        Ok(PublishResponse::default())
    }

    fn unpublish(&self, req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
        let target = Path::new(&req.target_path);
        if is_mountpoint(target) {
            umount2(target, MntFlags::MNT_DETACH)
                .map_err(|e| PluginError::internal(format!("unmount {}: {e}", target.display())))?;
        }
        match std::fs::remove_dir_all(target) {
            Ok(()) => Ok(UnpublishResponse::default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UnpublishResponse::default()),
            Err(e) => Err(PluginError::internal(format!("remove {}: {e}", target.display()))),
        }
    }

    fn get_volume_stats(&self, req: VolumeStatsRequest) -> Result<VolumeStats, PluginError> {
        let p = Path::new(&req.volume_path);
        if !p.exists() {
            return Err(PluginError::not_found(format!("{} is not published", p.display())));
        }
        let (used, inodes_used) = usage(p);
        let fs = nix::sys::statvfs::statvfs(p).map_err(|e| PluginError::internal(format!("statvfs: {e}")))?;
        let frag = fs.fragment_size() as i64;
        Ok(VolumeStats {
            capacity_bytes: fs.blocks() as i64 * frag,
            used_bytes: used,
            available_bytes: fs.blocks_available() as i64 * frag,
            inodes: fs.files() as i64,
            inodes_used,
            inodes_free: fs.files_free() as i64,
        })
    }
}

export_volume_plugin!(EmptyDir, name = "emptydir", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_req(target: &Path) -> PublishRequest {
        PublishRequest {
            volume_id: "u/v".into(),
            target_path: target.display().to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn disk_publish_is_idempotent_and_unpublish_removes_data() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("v");
        let p = EmptyDir;
        p.publish(publish_req(&target)).unwrap();
        std::fs::write(target.join("data"), vec![1u8; 10000]).unwrap();
        // Published again after a crash: the data stays.
        p.publish(publish_req(&target)).unwrap();
        assert!(target.join("data").exists());
        let stats = p
            .get_volume_stats(VolumeStatsRequest {
                volume_path: target.display().to_string(),
                ..Default::default()
            })
            .unwrap();
        assert!(stats.used_bytes >= 10000, "{stats:?}");
        assert_eq!(stats.inodes_used, 1);
        let un = UnpublishRequest {
            target_path: target.display().to_string(),
            ..Default::default()
        };
        p.unpublish(un.clone()).unwrap();
        assert!(!target.exists());
        p.unpublish(un).unwrap();
    }

    #[test]
    fn unknown_medium_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = publish_req(&dir.path().join("v"));
        req.volume_context.insert("medium".into(), "HugePages".into());
        assert_eq!(EmptyDir.publish(req).unwrap_err().code, STATUS_INVALID_ARGUMENT);
    }
}
