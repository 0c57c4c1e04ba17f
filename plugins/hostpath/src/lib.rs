//! The `hostpath` volume plugin: checks a host path against its hostPath
//! `type` exactly as kubelet does (creating it for the `...OrCreate` types)
//! and hands the path back for the daemon to bind, so nothing is mounted on
//! the host and unpublishing has nothing to undo.
#![forbid(unsafe_code)]

use peapod_plugin_sdk::*;
use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The plugin.
#[derive(Default)]
pub struct HostPath;

fn fail(msg: String) -> PluginError {
    PluginError::precondition(msg)
}

/// Opens an existing directory, following links in its path (a hostPath
/// may go through `/var/run`), to create entries inside what was opened.
fn open_dir(path: &Path) -> Result<fs::File, PluginError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| fail(format!("open {}: {e}", path.display())))
}

/// `name` inside the directory `dir` was opened as: no path is resolved
/// again, so nothing swapped in meanwhile redirects what is made.
fn inside(dir: &fs::File, name: &std::ffi::OsStr) -> std::path::PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// Creates a missing directory (and its parents) with mode 0755, as kubelet
/// does, without following links: the deepest part of the path that exists
/// is opened, and each missing directory is made inside the one before it
/// and opened with O_NOFOLLOW. A link left dangling where a directory is to
/// be made (`x -> /etc/evil`) is refused rather than followed.
/// The mode is set explicitly: the daemon runs with umask 077.
fn make_dir(path: &str) -> Result<(), PluginError> {
    let mut missing = Vec::new();
    let mut at = Path::new(path);
    while fs::symlink_metadata(at).is_err() {
        let (Some(name), Some(parent)) = (at.file_name(), at.parent()) else {
            return Err(fail(format!("create {path}: no existing parent")));
        };
        missing.push(name.to_os_string());
        at = parent;
    }
    let mut dir = open_dir(at).map_err(|e| fail(format!("create {path}: {}", e.message)))?;
    for name in missing.iter().rev() {
        let child = inside(&dir, name);
        match fs::DirBuilder::new().mode(0o755).create(&child) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(format!("create {path}: {e}"))),
        }
        let next = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&child)
            .map_err(|e| fail(format!("create {path}: {:?} is not a directory: {e}", name)))?;
        next.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(|e| fail(format!("chmod {path}: {e}")))?;
        dir = next;
    }
    Ok(())
}

/// Creates a missing file with mode 0644 in its (existing) directory; never
/// through a link at its own name, which O_CREAT|O_EXCL does not follow.
fn make_file(path: &str) -> Result<(), PluginError> {
    let p = Path::new(path);
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(fail(format!("create {path}: not a file path")));
    };
    let dir = open_dir(parent)?;
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(inside(&dir, name))
    {
        Ok(f) => f
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| fail(format!("chmod {path}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(fail(format!("create {path}: {e}"))),
    }
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
                make_file(path)?;
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

    #[test]
    fn or_create_never_makes_anything_through_a_dangling_link() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let elsewhere = d.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        // Links a container could plant in a directory it shares with the host.
        std::os::unix::fs::symlink(elsewhere.join("made-dir"), d.join("dir-link")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("made-file"), d.join("file-link")).unwrap();
        let at = |p: &str| d.join(p).display().to_string();
        assert!(check_type(&at("dir-link/sub"), "DirectoryOrCreate").is_err());
        assert!(check_type(&at("dir-link"), "DirectoryOrCreate").is_err());
        assert!(check_type(&at("file-link"), "FileOrCreate").is_err());
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "something was made through a link"
        );
        // A link to an existing directory is followed, as kubelet follows it.
        std::os::unix::fs::symlink(&elsewhere, d.join("real-link")).unwrap();
        assert!(check_type(&at("real-link/new"), "DirectoryOrCreate").is_ok());
        assert!(elsewhere.join("new").is_dir());
        let mode = fs::metadata(elsewhere.join("new")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }
}
