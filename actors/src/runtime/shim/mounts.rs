//! A shim's own mount table, without the other pods' mounts.
//!
//! Every pod adds mounts to the host's table: its rootfs overlays under
//! `<root>/pods` and its pinned namespaces and `/dev/shm` under `<run>/pods`.
//! libcontainer reads the whole of `/proc/self/mountinfo` several times per
//! container it creates (its cgroup v1 manager once per controller this host
//! does not mount, the rootfs set-up once more), in the shim and in both of
//! its clones. With 500 pods that is thousands of lines per read, and reading
//! it was the biggest single cost of starting a pod on a busy node.
//!
//! So before it creates the container, a shim moves into a mount namespace of
//! its own, takes a copy of its pod's part of each of the two trees, detaches
//! the trees, and puts the copies back where they were. The container is
//! cloned from that namespace and sees only its own pod's mounts.
//!
//! Propagation: the namespace is made a recursive slave first, so nothing the
//! shim does reaches the host, while mounts the host makes later still reach
//! the shim and the container (HostToContainer). A container whose mounts
//! must reach the host (Bidirectional) gets no scope (see `start.rs`).

use crate::runtime::protocol::KeptMounts;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Narrows this process's mount table to `scope`; a no-op when it is empty.
pub(super) fn narrow(scope: &[KeptMounts]) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare the mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("make / a recursive slave: {e}"))?;
    for s in scope {
        let copy = open_tree_clone(&s.keep).map_err(|e| format!("copy the mounts of {}: {e}", s.keep.display()))?;
        match umount2(&s.tree, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Not a mount point (a daemon that made none): nothing to leave out.
            Err(Errno::EINVAL) => continue,
            Err(e) => return Err(format!("detach {}: {e}", s.tree.display())),
        }
        move_mount_to(&copy, &s.keep).map_err(|e| format!("put back the mounts of {}: {e}", s.keep.display()))?;
    }
    Ok(())
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// A detached copy of the mount tree at `path` and every mount below it
/// (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`, Linux 5.2).
fn open_tree_clone(path: &Path) -> std::io::Result<OwnedFd> {
    let c = cpath(path)?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; the
    // kernel returns a new descriptor or -1 and keeps no pointer.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached tree `tree` at `target` (`move_mount`, Linux 5.2).
fn move_mount_to(tree: &OwnedFd, target: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let to = cpath(target)?;
    let empty = c"";
    // SAFETY: both strings are valid and NUL-terminated for the call's length;
    // the descriptor is open; the kernel keeps no pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
