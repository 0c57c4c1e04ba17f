//! peapod patch (see PEAPOD-PATCH.md): a mount's destination found, and
//! made, under the container's rootfs with `openat2(2)` alone.
//!
//! `pathrs::Root::mkdir_all` checks every step through a verified procfs
//! handle (about 60 system calls per mount, 14 mounts per container); the
//! kernel's `RESOLVE_IN_ROOT` already keeps a lookup, `..` and symlinks
//! included, inside the root, and the new directories are opened with
//! symlinks refused, so a swap racing the creation fails instead of
//! escaping. libcontainer needs the new mount API (Linux 5.12), which is
//! younger than `openat2` (5.6), so there is no fallback to keep.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2(dir: BorrowedFd, path: &Path, flags: libc::c_int, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    // openat2 asks for a retry (EAGAIN) when a rename raced a `..` in the
    // lookup; a bounded number, as pathrs does, so a racer cannot spin us.
    let mut tries = 0;
    loop {
        tries += 1;
        // SAFETY: `name` is NUL-terminated and `how` lives across the call;
        // the kernel returns a new descriptor that nothing else owns.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor from openat2, owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        let again = matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR));
        if !again || tries >= 32 {
            return Err(err);
        }
    }
}

/// `path` (absolute or not, taken inside `root`) opened `O_PATH`,
/// following symlinks as the container would see them.
pub fn open(root: BorrowedFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = relative(path);
    openat2(
        root,
        &rel,
        libc::O_PATH | flags,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

fn relative(path: &Path) -> std::path::PathBuf {
    let rel: std::path::PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel
    }
}

/// The directory `path` under `root`, made with `mode` (less the umask)
/// where it is missing, like `mkdir -p`; returned opened `O_PATH`.
pub fn mkdir_all(root: BorrowedFd, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let parts: Vec<Component> = rel.components().collect();
    // The common case, a destination that exists: one lookup.
    let mut have = parts.len();
    let mut dir = loop {
        let prefix: std::path::PathBuf = parts[..have].iter().collect();
        match open(root, &prefix, libc::O_DIRECTORY) {
            Ok(fd) => break fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && have > 0 => have -= 1,
            Err(e) => return Err(e),
        }
    };
    for part in &parts[have..] {
        let Component::Normal(name) = part else {
            // `..` past a missing directory: nothing sensible to make.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot create {path:?}: `..` after a missing directory"),
            ));
        };
        let cname = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `cname` is NUL-terminated; `dir` is an open directory.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), mode as libc::mode_t) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(err);
            }
        }
        // Whatever now has that name must be a directory, not a symlink.
        dir = openat2(
            std::os::fd::AsFd::as_fd(&dir),
            Path::new(name),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        )?;
    }
    Ok(dir)
}

/// Makes the file `path` under `root` (its parents too) unless something
/// is there already; returns what is there, opened `O_PATH`.
pub fn create_file(root: BorrowedFd, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    if let Ok(fd) = open(root, path, 0) {
        return Ok(fd);
    }
    let rel = relative(path);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} names no file"),
        ));
    };
    let parent = mkdir_all(root, parent, 0o755)?;
    let pfd = std::os::fd::AsFd::as_fd(&parent);
    // EEXIST when a racer made it first; any other failure shows below.
    let _ = openat2(
        pfd,
        Path::new(name),
        libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY,
        mode,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    );
    // Made now or by a racer: look it up as the container will.
    open(root, path, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn makes_and_finds_under_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::File::open(tmp.path()).unwrap();
        mkdir_all(root.as_fd(), Path::new("/a/b/c"), 0o755).unwrap();
        assert!(tmp.path().join("a/b/c").is_dir());
        std::os::unix::fs::symlink("/a", tmp.path().join("link")).unwrap();
        mkdir_all(root.as_fd(), Path::new("/link/d"), 0o755).unwrap();
        assert!(tmp.path().join("a/d").is_dir());
        create_file(root.as_fd(), Path::new("/a/f"), 0o644).unwrap();
        assert!(tmp.path().join("a/f").is_file());
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        assert!(mkdir_all(root.as_fd(), Path::new("/file/x"), 0o755).is_err());
    }
}
