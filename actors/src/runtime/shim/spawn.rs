//! The daemon's side of starting a shim: the attempt's lock is taken here,
//! handed to the shim as a descriptor it keeps until it exits, and never
//! released in between, so at every moment from before the spawn until the
//! shim is gone someone alive holds it.

use crate::runtime::protocol::LOCK_FD;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// A failure to spawn, with the Kubernetes waiting reason it maps to.
pub struct SpawnError {
    pub reason: &'static str,
    pub message: String,
}

fn err(reason: &'static str, what: &str, path: &Path, e: impl std::fmt::Display) -> SpawnError {
    SpawnError {
        reason,
        message: format!("{what} {}: {e}", path.display()),
    }
}

/// Starts `peapod-shim run --config <dir>/shim.json --lock-fd 3` holding
/// `<dir>/shim.lock`; [`report`] then waits for what it says.
pub fn spawn(shim: &super::ShimProgram, dir: &Path) -> Result<Child, SpawnError> {
    let lock_path = dir.join("shim.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err("CreateContainerError", "open", &lock_path, e))?;
    let fd = lock.as_raw_fd();
    // SAFETY: flock takes a descriptor we own (`lock`, open for this whole
    // function) and an operation flag; no memory is passed.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(err(
            "CreateContainerError",
            "lock (another shim holds it)",
            &lock_path,
            e,
        ));
    }
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))
        .map_err(|e| err("CreateContainerError", "open", &dir.join("shim.log"), e))?;
    let mut cmd = shim.command(["run", "--config"]);
    cmd.arg(dir.join("shim.json"))
        .args(["--lock-fd", &LOCK_FD.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(shim_log);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls dup2/fcntl, which are async-signal-safe; `fd` stays open in this
    // process until after spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == LOCK_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, LOCK_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| err("RunContainerError", "run shim", &shim.path, e))?;
    // The shim shares our open file, and the lock with it: closing our
    // descriptor (not unlocking) leaves the lock to the shim alone.
    drop(lock);
    crate::faults::point("runtime.shim-spawned", &dir.display().to_string());
    Ok(child)
}

/// What the shim of the attempt in `dir` reported once the container runs
/// (or failed to). A shim that hangs creating it is killed after
/// [`super::stuck::START_LIMIT`].
pub async fn report(child: Child, dir: &Path) -> Result<Vec<u8>, SpawnError> {
    let binary = PathBuf::from("peapod-shim run");
    let out = super::child::output(child);
    tokio::pin!(out);
    let res = match tokio::time::timeout(super::stuck::START_LIMIT, &mut out).await {
        Ok(res) => res,
        Err(_) => {
            let d = dir.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || super::stuck::kill(&d)).await;
            out.await
        }
    };
    res.map(|o| o.stdout)
        .map_err(|e| err("RunContainerError", "wait for shim", &binary, e))
}
