//! `peapod shim sandbox`: create a pod's shared network, IPC and UTS
//! namespaces and pin them as bind-mounted files, with the hostname set and
//! loopback up (libcontainer does neither for joined namespaces).

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::Path;

/// Creates `dir/<ns>` for each of `namespaces` (`net`, `ipc`, `uts`). Run in
/// a process of its own: it moves the caller into the new namespaces, and the
/// process should exit afterwards.
pub fn sandbox(dir: &Path, hostname: &str, namespaces: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut flags = CloneFlags::empty();
    for ns in namespaces {
        flags |= match ns.as_str() {
            "net" => CloneFlags::CLONE_NEWNET,
            "ipc" => CloneFlags::CLONE_NEWIPC,
            "uts" => CloneFlags::CLONE_NEWUTS,
            other => return Err(format!("unknown sandbox namespace {other:?}")),
        };
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    if flags.contains(CloneFlags::CLONE_NEWUTS) {
        nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname {hostname}: {e}"))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up()?;
    }
    for ns in namespaces {
        let target = dir.join(ns);
        std::fs::File::create(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        let source = format!("/proc/self/ns/{ns}");
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {source} on {}: {e}", target.display()))?;
    }
    Ok(())
}

fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain AF_INET datagram socket; the fd is closed below on every path.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; the kernel fills ifru_flags.
    let mut rc = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) };
    if rc == 0 {
        // SAFETY: SIOCGIFFLAGS succeeded, so the flags member of the union is the initialised one.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: same valid ifreq, now with IFF_UP set.
        rc = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the socket opened above, exactly once.
    unsafe { libc::close(sock) };
    if rc != 0 {
        return Err(format!("bring lo up: {err}"));
    }
    Ok(())
}
