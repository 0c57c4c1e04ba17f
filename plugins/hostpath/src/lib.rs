//! The `hostpath` volume plugin: checks a host path against its hostPath
//! `type` exactly as kubelet does (creating it for the `...OrCreate` types)
//! and hands the path back for the daemon to bind, so nothing is mounted on
//! the host and unpublishing has nothing to undo.
#![forbid(unsafe_code)]

use peapod_plugin_sdk::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The plugin.
#[derive(Default)]
pub struct HostPath;

fn fail(msg: String) -> PluginError {
    PluginError::precondition(msg)
}

/// Creates a missing directory (and its parents) with mode 0755, as kubelet does.
/// The mode is set explicitly: the daemon runs with umask 077.
fn make_dir(path: &str) -> Result<(), PluginError> {
    let mut made = Vec::new();
    let mut at = Some(Path::new(path));
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err()) {
        made.push(p.to_path_buf());
        at = p.parent();
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| fail(format!("create {path}: {e}")))?;
    for d in made {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
            .map_err(|e| fail(format!("chmod {}: {e}", d.display())))?;
    }
    Ok(())
}

/// Kubernetes' `checkType` for `path` and `kind`.
pub fn check_type(path: &str, kind: &str) -> Result<(), PluginError> {
    let p = Path::new(path);
    let meta = || fs::metadata(p).ok();
    let is = |f: fn(&fs::FileType) -> bool| meta().is_some_and(|m| f(&m.file_type()));
    match kind {
        "" => {
            // No checks; like container runtimes, make a missing directory.
            if meta().is_none() {
                make_dir(path)?;
            }
            Ok(())
        }
        "DirectoryOrCreate" | "Directory" => {
            if kind == "DirectoryOrCreate" && meta().is_none() {
                make_dir(path)?;
            }
            if !is(fs::FileType::is_dir) {
                return Err(fail(format!("hostPath type check failed: {path} is not a directory")));
            }
            Ok(())
        }
        "FileOrCreate" | "File" => {
            if kind == "FileOrCreate" && meta().is_none() {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(p)
                    .and_then(|f| f.set_permissions(fs::Permissions::from_mode(0o644)))
                    .map_err(|e| fail(format!("create {path}: {e}")))?;
            }
            if !is(fs::FileType::is_file) {
                return Err(fail(format!("hostPath type check failed: {path} is not a file")));
            }
            Ok(())
        }
        "Socket" if !is(FileTypeExt::is_socket) => {
            Err(fail(format!("hostPath type check failed: {path} is not a socket file")))
        }
        "CharDevice" if !is(FileTypeExt::is_char_device) => Err(fail(format!(
            "hostPath type check failed: {path} is not a character device"
        ))),
        "BlockDevice" if !is(FileTypeExt::is_block_device) => Err(fail(format!(
            "hostPath type check failed: {path} is not a block device"
        ))),
        "Socket" | "CharDevice" | "BlockDevice" => Ok(()),
        other => Err(PluginError::invalid(format!("{other} is an invalid volume type"))),
    }
}

impl VolumePlugin for HostPath {
    fn publish(&self, req: PublishRequest) -> Result<PublishResponse, PluginError> {
        let path = req
            .volume_context
            .get("path")
            .cloned()
            .ok_or_else(|| PluginError::invalid("volumeContext.path is required"))?;
        let kind = req.volume_context.get("type").cloned().unwrap_or_default();
        check_type(&path, &kind)?;
        Ok(PublishResponse { host_path: Some(path) })
    }

    fn unpublish(&self, _req: UnpublishRequest) -> Result<UnpublishResponse, PluginError> {
        Ok(UnpublishResponse::default())
    }
}

export_volume_plugin!(HostPath, name = "hostpath", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_checked_like_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let f = format!("{d}/file");
        fs::write(&f, "x").unwrap();
        assert!(check_type(&d, "Directory").is_ok());
        assert_eq!(
            check_type(&f, "Directory").unwrap_err().message,
            format!("hostPath type check failed: {f} is not a directory")
        );
        assert!(check_type(&f, "File").is_ok());
        assert_eq!(
            check_type(&d, "File").unwrap_err().message,
            format!("hostPath type check failed: {d} is not a file")
        );
        assert_eq!(
            check_type(&f, "Socket").unwrap_err().message,
            format!("hostPath type check failed: {f} is not a socket file")
        );
        assert!(check_type("/dev/null", "CharDevice").is_ok());
        assert_eq!(
            check_type("/dev/null", "BlockDevice").unwrap_err().message,
            "hostPath type check failed: /dev/null is not a block device"
        );
        let made = format!("{d}/new/dir");
        assert!(check_type(&made, "DirectoryOrCreate").is_ok());
        assert!(Path::new(&made).is_dir());
        let made_file = format!("{d}/new/file");
        assert!(check_type(&made_file, "FileOrCreate").is_ok());
        assert!(Path::new(&made_file).is_file());
        // Idempotent: the second call finds what the first made.
        assert!(check_type(&made_file, "FileOrCreate").is_ok());
        assert_eq!(check_type(&d, "Bogus").unwrap_err().code, STATUS_INVALID_ARGUMENT);
    }
}
