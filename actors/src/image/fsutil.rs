//! File-system helpers: crash-safe writes, self-cleaning temporaries, xattrs.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ImageError;

/// Prefix of every temporary the store creates, so that a restart after a
/// crash can recognise and delete them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Builds a closure that wraps an `io::Error` with what was being done and to
/// which path, for use with `map_err`.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { op, path, source }
}

/// A name no other temporary of this or any other process will use: pid plus
/// time plus a process-wide counter.
pub(crate) fn unique_temp_name(stem: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{stem}-{}-{nanos}-{n}", std::process::id())
}

/// fsyncs a directory so that renames into it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Replaces `path` with `contents` so that readers (and a crash) see either
/// the old or the new file, never a partial one: write a sibling temporary,
/// fsync it, rename it over `path`, fsync the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = TempFile::create(dir.join(unique_temp_name(&stem)))?;
    {
        let mut file = temp.file()?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", temp.path()))?;
    }
    temp.persist(path)?;
    sync_dir(dir)
}

/// A temporary file that is deleted on drop unless [`TempFile::persist`]ed.
pub(crate) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates the file (it must not exist yet).
    pub(crate) fn create(path: PathBuf) -> Result<Self, ImageError> {
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok(Self { path, armed: true })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file for writing.
    pub(crate) fn file(&self) -> Result<File, ImageError> {
        File::options()
            .write(true)
            .open(&self.path)
            .map_err(io_err("open", &self.path))
    }

    /// Renames the file to `dest`, replacing it, and disarms the cleanup.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), ImageError> {
        fs::rename(&self.path, dest).map_err(io_err("rename into place", dest))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A temporary directory that is removed recursively on drop unless
/// [`TempDir::persist`]ed.
pub(crate) struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl TempDir {
    /// Creates the directory (it must not exist yet).
    pub(crate) fn create(path: PathBuf) -> Result<Self, ImageError> {
        fs::create_dir(&path).map_err(io_err("create directory", &path))?;
        Ok(Self { path, armed: true })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `dest` and disarms the cleanup. Fails if
    /// `dest` already exists (a non-empty directory cannot be replaced).
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), ImageError> {
        fs::rename(&self.path, dest).map_err(io_err("rename into place", dest))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes a file or a whole directory tree; a missing path is not an error.
pub(crate) fn remove_any(path: &Path) -> Result<(), ImageError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Sets an extended attribute without following a final symlink.
///
/// Neither std nor nix 0.29 wraps setxattr(2), and calling libc directly
/// would need `unsafe`, so this runs `setfattr` from the `attr` package. The
/// value is passed hex-encoded so arbitrary bytes survive the command line.
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), ImageError> {
    let fail = |reason: String| ImageError::Xattr {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason,
    };
    let output = Command::new("setfattr")
        .arg("-h")
        .arg("-n")
        .arg(name)
        .arg("-v")
        .arg(format!("0x{}", hex::encode(value)))
        .arg("--")
        .arg(path)
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                fail("setfattr not found; install the `attr` package".into())
            } else {
                fail(format!("cannot run setfattr: {e}"))
            }
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "setfattr exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
