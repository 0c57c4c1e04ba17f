//! Volume paths resolved once, without races (the CVE-2021-25741 class).
//!
//! A container that can write to a volume can swap a directory in it for a
//! symlink. Checking a path and then handing the path string to the runtime
//! to bind-mount later lets that swap land in between: a subPath checked to
//! lie inside its volume becomes `/` by the time it is mounted. So every
//! volume mount of a container is resolved to a file descriptor here (a
//! subPath with `openat2(RESOLVE_BENEATH)` below its volume's root, never
//! leaving it), checked on what that descriptor is, and bind-mounted from
//! the descriptor itself (`/proc/self/fd/N`) onto a staging point in the
//! start's own directory, which no container can reach. The runtime is
//! given only the staging point.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// Opens `path` as an `O_PATH` descriptor, following symlinks in it (a
/// hostPath may be `/var/run/x`, where `/var/run` is a link), as kubelet does.
pub fn open_path(path: &Path) -> Result<OwnedFd, String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{}: a NUL in the path", path.display()))?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(dir, rel, O_PATH, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`:
/// symlinks are followed only while they stay below `dir`.
fn open_beneath(dir: &OwnedFd, rel: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zeroed is a valid value for it.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: valid descriptor, NUL-terminated path, and the size of `how`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `sub` below the volume whose root is `root`: opened beneath it, the
/// directories that are missing made (with `mode`, as kubelet gives them
/// its volume root's mode) one at a time, each in the directory just
/// opened, so no link can lead a `mkdir` out of the volume.
pub fn open_sub_path(root: &OwnedFd, sub: &str, mode: u32) -> Result<OwnedFd, String> {
    let parts: Vec<&str> = sub.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if sub.starts_with('/') || parts.contains(&"..") {
        return Err(format!("subPath {sub:?} must be a relative path without '..'"));
    }
    let mut done = PathBuf::new();
    for part in &parts {
        let next = done.join(part);
        match open_beneath(root, &next) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = if done.as_os_str().is_empty() {
                    open_beneath(root, Path::new("."))
                } else {
                    open_beneath(root, &done)
                }
                .map_err(|e| beneath_error(sub, &done, e))?;
                let name = CString::new(part.as_bytes()).map_err(|_| format!("subPath {sub:?}: a NUL in it"))?;
                // SAFETY: a directory descriptor (O_PATH works for *at calls) and a valid name.
                let r = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) };
                if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(format!(
                        "subPath {sub:?}: mkdir {}: {}",
                        next.display(),
                        std::io::Error::last_os_error()
                    ));
                }
                // mkdirat is subject to the daemon's umask (077): set the mode itself.
                let made = open_beneath(root, &next).map_err(|e| beneath_error(sub, &next, e))?;
                let proc = format!("/proc/self/fd/{}", made.as_raw_fd());
                let _ = std::fs::set_permissions(&proc, std::os::unix::fs::PermissionsExt::from_mode(mode));
            }
            Err(e) => return Err(beneath_error(sub, &next, e)),
        }
        done = next;
    }
    if parts.is_empty() {
        return open_beneath(root, Path::new(".")).map_err(|e| beneath_error(sub, Path::new("."), e));
    }
    open_beneath(root, &done).map_err(|e| beneath_error(sub, &done, e))
}

fn beneath_error(sub: &str, at: &Path, e: std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EXDEV) {
        format!("subPath {sub:?} resolves outside the volume (at {})", at.display())
    } else {
        format!("subPath {sub:?}: {}: {e}", at.display())
    }
}

/// Detaches every staging point in `stage` and removes the directory. Only
/// this start's own entries are touched, each a mount this module made (a
/// detached recursive bind takes its submounts with it), so removing what is
/// left never reaches into a volume.
pub fn unstage(stage: &Path) {
    let Ok(entries) = std::fs::read_dir(stage) else { return };
    for e in entries.flatten() {
        let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(stage);
}

/// Where `fd` is now, as the kernel names it.
pub fn fd_path(fd: &OwnedFd) -> Result<PathBuf, String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| format!("locate a volume path: {e}"))
}

/// Bind-mounts (recursively) what `fd` refers to onto `target`, which is
/// made first: a directory for a directory, an empty file for anything else.
pub fn bind_fd(fd: &OwnedFd, target: &Path) -> Result<(), String> {
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let is_dir = std::fs::metadata(&source)
        .map(|m| m.is_dir())
        .map_err(|e| format!("stat a volume path: {e}"))?;
    let made = if is_dir {
        std::fs::create_dir(target)
    } else {
        std::fs::File::create(target).map(drop)
    };
    made.map_err(|e| format!("create {}: {e}", target.display()))?;
    mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind a volume at {}: {e}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_path_never_leaves_its_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("data/inner")).unwrap();
        std::fs::write(tmp.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink("/", vol.join("root")).unwrap();
        std::os::unix::fs::symlink("../../secret", vol.join("data/up")).unwrap();
        std::os::unix::fs::symlink("inner", vol.join("data/in")).unwrap();
        let root = open_path(&vol).unwrap();
        for bad in ["root", "root/etc", "data/up", "root/made/here"] {
            let e = open_sub_path(&root, bad, 0o755).unwrap_err();
            assert!(e.contains("resolves outside the volume"), "{bad}: {e}");
        }
        assert!(!Path::new("/made").exists());
        // A link that stays inside is followed; missing directories are made with the mode.
        let fd = open_sub_path(&root, "data/in/new/deeper", 0o750).unwrap();
        let real = fd_path(&fd).unwrap();
        assert_eq!(real, vol.join("data/inner/new/deeper").canonicalize().unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(vol.join("data/inner/new"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o750);
        assert!(open_sub_path(&root, "../x", 0o755)
            .unwrap_err()
            .contains("without '..'"));
        assert_eq!(
            fd_path(&open_sub_path(&root, "", 0o755).unwrap()).unwrap(),
            vol.canonicalize().unwrap()
        );
    }

    #[test]
    fn what_was_opened_stays_what_is_mounted() {
        // The descriptor keeps naming the directory it opened, whatever is
        // put at its path afterwards.
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/mine"), "mine").unwrap();
        let root = open_path(&vol).unwrap();
        let fd = open_sub_path(&root, "sub", 0o755).unwrap();
        std::fs::rename(vol.join("sub"), vol.join("moved")).unwrap();
        std::os::unix::fs::symlink("/", vol.join("sub")).unwrap();
        let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(std::fs::read_to_string(Path::new(&proc).join("mine")).unwrap(), "mine");
        assert_eq!(fd_path(&fd).unwrap(), vol.join("moved").canonicalize().unwrap());
    }
}
