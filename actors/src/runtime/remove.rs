//! Removing everything the node holds for a pod whose containers are done.

use super::protocol::{ShimReply, ShimRequest};
use super::{blocking, cgroups, container_id, unescape, Runtime};
use k8s_openapi::api::core::v1::Pod;
use nix::mount::{umount2, MntFlags};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

impl Runtime {
    /// Removes every trace of a pod: any shim still alive and what runs in
    /// its cgroups (a safety net: actors stop containers before this),
    /// rootfs mounts, libcontainer state, network, namespaces, cgroups, logs
    /// and its directory. Fails, leaving the pod directory (and its CNI
    /// record) in place for the next try, when CNI DEL fails: the address and
    /// port mappings are never leaked.
    pub async fn remove_pod(self: &Arc<Self>, pod: &Pod) -> Result<(), String> {
        let uid = super::pod_uid(pod);
        // Every start of the pod's containers finishes first, and none begins after.
        let spec = pod.spec.clone().unwrap_or_default();
        let mut guards = Vec::new();
        for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
            guards.push(self.locks.lock(format!("ctr/{uid}/{}", c.name)).await);
        }
        self.removed.lock().unwrap_or_else(|p| p.into_inner()).insert(&uid);
        drop(guards);
        let guard = self.locks.lock(format!("pod/{uid}")).await;
        let me = self.clone();
        let pod = pod.clone();
        let timer = peapod_metrics::Timer::start();
        let res = blocking(move || {
            let _guard = guard;
            me.remove_pod_blocking(&pod)
        })
        .await
        .and_then(|r| r);
        super::record("remove_podsandbox", timer, &res);
        res
    }

    /// Runs `f` on the blocking pool for the projected volumes of pod `uid`,
    /// under the pod's lock; `None` once its removal began, so no write
    /// lands in (or mounts a tmpfs on) a volume being taken apart.
    pub(crate) async fn with_projections<T: Send + 'static>(
        self: &Arc<Self>,
        uid: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let guard = self.locks.lock(format!("pod/{uid}")).await;
        if self.is_removed(uid) {
            return None;
        }
        blocking(move || {
            let _guard = guard;
            f()
        })
        .await
        .ok()
    }

    /// Closes the pod's projected volumes for good (no refresh writes after
    /// this) and detaches their tmpfs mounts, before they are removed.
    pub async fn close_projections(self: &Arc<Self>, pod: &Pod) {
        let uid = super::pod_uid(pod);
        self.removed.lock().unwrap_or_else(|p| p.into_inner()).insert(&uid);
        let guard = self.locks.lock(format!("pod/{uid}")).await;
        let dir = self.paths.pod_dir(&uid);
        let _ = blocking(move || {
            let _guard = guard;
            super::projection::unmount(&dir);
        })
        .await;
    }

    /// Whether the pod's removal began.
    pub(crate) fn is_removed(&self, uid: &str) -> bool {
        self.removed.lock().unwrap_or_else(|p| p.into_inner()).contains(uid)
    }

    fn remove_pod_blocking(&self, pod: &Pod) -> Result<(), String> {
        let uid = super::pod_uid(pod);
        let containers_dir = self.paths.pod_dir(&uid).join("containers");
        for c in std::fs::read_dir(&containers_dir).into_iter().flatten().flatten() {
            let name = c.file_name().to_string_lossy().into_owned();
            for a in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                let Ok(n) = a.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let id = container_id(&uid, &name, n);
                self.kill_shim_blocking(&id, &a.path());
                cgroups::kill_container(&uid, &id);
                let _ = std::fs::remove_dir_all(self.paths.container_state_root().join(&id));
                let _ = std::fs::remove_file(self.paths.shim_socket(&id));
                self.release_rootfs(&a.path());
            }
        }
        kill_exec_helpers(&uid);
        cgroups::kill_pod(&uid);
        self.teardown_sandbox(&uid)?;
        // A process that joined late (an exec helper) may hold a cgroup for a
        // moment: kill and try again before giving up for this round.
        let mut gone = cgroups::remove(&uid);
        for _ in 0..10 {
            if gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            cgroups::kill_pod(&uid);
            gone = cgroups::remove(&uid);
        }
        if !gone {
            return Err(format!("the cgroup {} is still in use", cgroups::pod_path(&uid)));
        }
        // Whatever is still mounted below the pod (a volume a plugin failed to
        // unpublish) is detached first, so removing the directory never
        // reaches into someone's mounted data.
        unmount_below(&self.paths.pod_dir(&uid));
        let _ = std::fs::remove_dir_all(self.paths.pod_dir(&uid));
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = std::fs::remove_dir_all(self.paths.pod_log_dir(&ns, &name, &uid));
        Ok(())
    }

    /// SIGKILLs the container of a shim that is still alive and waits (up to
    /// 10 s) for the shim to record the exit and go.
    fn kill_shim_blocking(&self, id: &str, dir: &Path) {
        let alive = || {
            std::fs::File::open(dir.join("shim.lock"))
                .ok()
                .is_some_and(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock).is_err())
        };
        if !alive() {
            return;
        }
        tracing::warn!("container {id}: still running at pod removal; killing it");
        let socket = self.paths.shim_socket(id);
        for _ in 0..100 {
            if !alive() {
                return;
            }
            let _ = request_blocking(&socket, &ShimRequest::Kill { signal: libc::SIGKILL });
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Kills any `peapod shim exec` helper (and the processes libcontainer
/// cloned from it, which share its command line) still aimed at one of the
/// pod's containers, e.g. left by a daemon that was killed: once joined to a
/// container's cgroup it would recreate it after the pod is gone.
fn kill_exec_helpers(uid: &str) {
    let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
    let prefix = format!("{short}-");
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let raw = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_exec = is_exec_helper(&args);
        let ours = args.windows(2).any(|w| w[0] == "--id" && w[1].starts_with(&prefix));
        if is_exec && ours {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// `peapod-shim exec …`, or `peapod shim exec …` where only peapod is installed.
fn is_exec_helper(args: &[String]) -> bool {
    let own = args
        .first()
        .is_some_and(|a| Path::new(a).file_name() == Some(std::ffi::OsStr::new(super::shim::SHIM_NAME)));
    (own && args.get(1).is_some_and(|a| a == "exec")) || args.windows(2).any(|w| w[0] == "shim" && w[1] == "exec")
}

fn request_blocking(socket: &PathBuf, req: &ShimRequest) -> Result<ShimReply, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    writeln!(s, "{}", serde_json::to_string(req).unwrap_or_default()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(|e| e.to_string())?;
    serde_json::from_str(line.trim()).map_err(|e| e.to_string())
}

/// Detaches every mount at or below `dir`, deepest first.
pub(crate) fn unmount_below(dir: &Path) {
    let Ok(base) = dir.canonicalize() else { return };
    let mut found: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(&base))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in found {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn exec_helpers_are_known_by_either_binary() {
        assert!(is_exec_helper(&argv(
            "/usr/bin/peapod-shim exec --state-root /run/x --id ab-c"
        )));
        assert!(is_exec_helper(&argv(
            "/usr/bin/peapod shim exec --state-root /run/x --id ab-c"
        )));
        assert!(!is_exec_helper(&argv("/usr/bin/peapod-shim run --config /x/shim.json")));
        assert!(!is_exec_helper(&argv("/usr/bin/peapod exec pod -- sh")));
        assert!(!is_exec_helper(&argv("/usr/bin/other-shim exec --id ab-c")));
    }
}
