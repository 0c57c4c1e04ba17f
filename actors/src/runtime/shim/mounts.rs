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

/// Makes a created (not yet started) container's `/dev` nodev, except for
/// the device nodes libcontainer made there (null, zero, full, random,
/// urandom, tty): each of those is first bind-mounted onto itself, and a
/// bind mount keeps the flags it was made with. A node the container makes
/// later with CAP_MKNOD, there or anywhere else (the rootfs and volumes are
/// nodev too), opens nothing, whatever the device cgroup would allow.
///
/// Joining the container's mount namespace is done by a child: the shim's
/// own namespace must stay as it is.
pub(super) fn seal_dev(init: nix::unistd::Pid) -> Result<(), String> {
    use std::io::{Read, Write};
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the shim is single-threaded; the child only makes syscalls and exits.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(read_end);
            let code = match seal_dev_in(init) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::File::from(write_end).write_all(e.as_bytes());
                    1
                }
            };
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(write_end);
            let mut said = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut said);
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                other => Err(format!("making the container's /dev nodev: {said} ({other:?})")),
            }
        }
    }
}

fn seal_dev_in(init: nix::unistd::Pid) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let ns_path = format!("/proc/{init}/ns/mnt");
    let ns = std::fs::File::open(&ns_path).map_err(|e| format!("open {ns_path}: {e}"))?;
    // Root and working directory become the namespace's root: the container's `/`.
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS).map_err(|e| format!("setns {ns_path}: {e}"))?;
    let dev = Path::new("/dev");
    let entries = std::fs::read_dir(dev).map_err(|e| format!("read /dev: {e}"))?;
    for entry in entries.flatten() {
        let is_device = entry
            .file_type()
            .is_ok_and(|t| t.is_char_device() || t.is_block_device());
        if is_device {
            let p = entry.path();
            mount(Some(&p), &p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| format!("bind {}: {e}", p.display()))?;
        }
    }
    mount(
        None::<&str>,
        dev,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| format!("remount /dev nodev: {e}"))
}
