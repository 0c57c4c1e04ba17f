//! The node's container runtime: pod sandboxes, container rootfs, and the
//! shims that run containers. Everything that clones (libcontainer's build,
//! start and exec, namespace creation) happens in `peapod shim` processes;
//! this side only spawns them, mounts, and talks over sockets.
//!
//! Every public call is `async` and does its file, mount, cgroup, image and
//! process work on the blocking pool, so an actor awaiting it never stalls
//! its arbiter. Calls about one container (start, observe) and about one pod
//! (sandbox, teardown, removal) are serialised by keyed locks: an operation
//! that outlives the actor that began it (the actor crashed) finishes before
//! the rebuilt actor looks, so nothing is started twice.
//!
//! Whether a shim is alive is told by a lock, never by a timeout: the daemon
//! takes an exclusive `flock` on `<attempt>/shim.lock` before it spawns the
//! shim and hands the shim that descriptor, which holds it until it exits.
//! The shim writes `started.json` once the container runs and `exit.json`
//! when it ended. From these three a new daemon tells a container that runs,
//! one that is still being created, one that ended, one whose shim died
//! under it, and an attempt that never ran.

pub mod cgroups;
pub mod cni;
pub mod etc;
mod locks;
pub mod logfile;
mod observe;
pub mod paths;
pub mod projection;
pub mod protocol;
mod pull;
mod remove;
mod sandbox;
pub mod seccomp;
pub mod session;
pub mod shim;
pub mod spec;
mod start;
pub mod volpath;

use crate::config::NodeConfig;
use crate::image::ImageStore;
use k8s_openapi::api::core::v1::Pod;
use nix::mount::{mount, MsFlags};
pub use observe::{image_users, ImageUser, Observation, Observed};
pub use paths::{container_id, NodePaths};
use protocol::{ExitRecord, ShimReply, ShimRequest};
pub use pull::{go_duration, ImageReady};
pub use sandbox::SandboxInfo;
pub use start::{StartError, Started};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A container start that ended: what `lastState`/`state.terminated` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Which start.
    pub attempt: u32,
    /// libcontainer id.
    pub id: String,
    /// How it ended.
    pub exit: ExitRecord,
    /// The image it ran (digest reference).
    pub image_id: String,
    /// What it wrote to its termination-message file.
    pub message: Option<String>,
}

/// The runtime, shared by every actor.
pub struct Runtime {
    /// The node's directories.
    pub paths: NodePaths,
    /// The local image store.
    pub images: ImageStore,
    /// The program run as each container's shim.
    pub shim: shim::ShimProgram,
    /// The node's settings.
    pub config: NodeConfig,
    /// The pod network's plugins.
    pub cni: cni::Cni,
    /// Volume plugins and the volumes they publish.
    pub volumes: Arc<peapod_volumes::VolumeManager>,
    locks: locks::KeyedLocks,
    /// Pods whose removal began: nothing of theirs is started any more.
    removed: std::sync::Mutex<locks::RecentSet>,
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Runs `f` on the blocking pool; a panic there comes back as an error text.
/// Records one runtime operation as kubelet's instrumented runtime service
/// does: counted and timed by `operation_type`, failures counted apart.
fn record<T, E>(operation: &str, timer: peapod_metrics::Timer, res: &Result<T, E>) {
    peapod_metrics::metrics().runtime_operation(operation, timer.seconds(), res.is_err());
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())
}

impl Runtime {
    /// Prepares the node's directories; the sandbox parent becomes a private
    /// bind mount so pinned namespace files never propagate elsewhere.
    pub fn new(
        paths: NodePaths,
        shim: shim::ShimProgram,
        config: NodeConfig,
        volumes: Arc<peapod_volumes::VolumeManager>,
    ) -> Result<Arc<Self>, String> {
        for d in [
            &paths.root,
            &paths.run,
            &paths.sandboxes(),
            &paths.pods(),
            &paths.container_state_root(),
            &paths.run.join("shims"),
        ] {
            paths::ensure_dir(d).map_err(|e| io_err("create", d, e))?;
        }
        let sandboxes = paths.sandboxes();
        if !is_mountpoint(&sandboxes) {
            mount(
                Some(&sandboxes),
                &sandboxes,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| io_err("bind mount", &sandboxes, e))?;
        }
        mount(
            None::<&str>,
            &sandboxes,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| io_err("make private", &sandboxes, e))?;
        // Its own mount (propagation unchanged), so that each shim can leave
        // the other pods' rootfs and volume mounts out of its mount table
        // (see `shim::mounts`).
        let pods = paths.pods();
        if !is_mountpoint(&pods) {
            mount(
                Some(&pods),
                &pods,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| io_err("bind mount", &pods, e))?;
        }
        let images = ImageStore::open(paths.images())
            .map_err(|e| e.to_string())?
            .with_registries(config.registries.clone());
        let cni = cni::Cni::new(config.network.clone());
        cni.ensure_default_config().map_err(|e| e.to_string())?;
        cni.ensure_masquerade().map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            paths,
            images,
            shim,
            config,
            cni,
            volumes,
            locks: locks::KeyedLocks::default(),
            removed: Default::default(),
        }))
    }

    /// Sends `signal` to the container's init through its shim.
    pub async fn kill(&self, uid: &str, container: &str, attempt: u32, signal: i32) -> Result<(), String> {
        let id = container_id(uid, container, attempt);
        let timer = peapod_metrics::Timer::start();
        let res = match self
            .request(&id, &ShimRequest::Kill { signal }, Some(Duration::from_secs(5)))
            .await
        {
            Ok(ShimReply::Error { message }) | Err(message) => Err(message),
            Ok(_) => Ok(()),
        };
        record("stop_container", timer, &res);
        res
    }

    /// Runs `args` in the running container and returns its exit code and output.
    pub async fn exec(
        &self,
        uid: &str,
        container: &str,
        attempt: u32,
        args: &[String],
        timeout: Duration,
    ) -> Result<(i32, String), String> {
        let id = container_id(uid, container, attempt);
        let mut cmd = self.shim.command(["exec", "--state-root"]);
        cmd.arg(self.paths.container_state_root())
            .args(["--id", &id, "--timeout-ms", &timeout.as_millis().to_string(), "--"])
            .args(args);
        let timer = peapod_metrics::Timer::start();
        let out = shim::helper::run(cmd)
            .await
            .map_err(|e| io_err("run exec helper", &self.shim.path, e));
        record("exec_sync", timer, &out);
        let out = out?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code().unwrap_or(126), text))
    }

    async fn request(&self, id: &str, req: &ShimRequest, timeout: Option<Duration>) -> Result<ShimReply, String> {
        let socket = self.paths.shim_socket(id);
        let talk = async {
            let mut stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| io_err("connect", &socket, e))?;
            let mut line = serde_json::to_string(req).unwrap_or_default();
            line.push('\n');
            stream
                .write_all(line.as_bytes())
                .await
                .map_err(|e| io_err("write", &socket, e))?;
            let mut reader = BufReader::new(stream);
            let mut reply = String::new();
            reader
                .read_line(&mut reply)
                .await
                .map_err(|e| io_err("read", &socket, e))?;
            serde_json::from_str(reply.trim()).map_err(|e| format!("shim {id} replied {reply:?}: {e}"))
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, talk)
                .await
                .map_err(|_| format!("shim {id}: no reply in {t:?}"))?,
            None => talk.await,
        }
    }

    /// After a start ended: its termination message (at most 4 KiB, as kubelet
    /// reads), and its rootfs unmounted and removed (the exit record and logs stay).
    pub async fn finish_attempt(self: &Arc<Self>, uid: &str, container: &str, attempt: u32) -> Option<String> {
        let message = self.read_termination_message(uid, container, attempt).await;
        self.release_attempt(uid, container, attempt).await;
        message
    }

    /// The termination message start `attempt` left (at most its last 4 KiB).
    pub async fn read_termination_message(&self, uid: &str, container: &str, attempt: u32) -> Option<String> {
        let dir = self.paths.attempt_dir(uid, container, attempt);
        blocking(move || termination_message(&dir)).await.ok().flatten()
    }

    /// Unmounts and removes an ended start's rootfs (its exit record and logs stay).
    pub async fn release_attempt(self: &Arc<Self>, uid: &str, container: &str, attempt: u32) {
        let me = self.clone();
        let dir = self.paths.attempt_dir(uid, container, attempt);
        let timer = peapod_metrics::Timer::start();
        let res = blocking(move || me.release_rootfs(&dir)).await;
        record("remove_container", timer, &res);
    }

    /// Records in start `attempt`'s directory that it is being stopped because
    /// the container's image changed, so a rebuilt actor still restarts it at once.
    pub async fn mark_definition_changed(&self, uid: &str, container: &str, attempt: u32) {
        let marker = self
            .paths
            .attempt_dir(uid, container, attempt)
            .join("definition-changed");
        let _ = blocking(move || std::fs::write(marker, b"")).await;
    }

    /// Marks start `attempt` as being stopped (a file in its directory, so it
    /// survives a daemon restart); true only the first time, when its preStop hook is due.
    pub async fn begin_stop(&self, uid: &str, container: &str, attempt: u32) -> bool {
        let marker = self.paths.attempt_dir(uid, container, attempt).join("stopping");
        blocking(
            move || match std::fs::OpenOptions::new().write(true).create_new(true).open(&marker) {
                Ok(_) => true,
                Err(e) => e.kind() != std::io::ErrorKind::AlreadyExists,
            },
        )
        .await
        .unwrap_or(true)
    }

    /// Unmounts and removes one attempt's rootfs (the exit record and logs stay).
    fn release_rootfs(&self, dir: &Path) {
        let _ = nix::mount::umount2(&dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        // Staged volume sources are unmounted first: removing the directory
        // must never reach into a volume's data.
        volpath::unstage(&dir.join("mounts"));
        for d in ["upper", "work", "rootfs"] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
    }
}

/// Kubernetes' `MaxContainerTerminationMessageLength`.
const MAX_TERMINATION_MESSAGE: u64 = 4096;

/// The termination message in an attempt's directory: its last 4 KiB, as
/// kubelet's `tail.ReadAtMost` reads it. The container controls the file, so
/// only those bytes are read, however large it grew, and anything but a
/// regular file (a FIFO would block the read forever) gives no message.
fn termination_message(dir: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("termination-log"))
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    f.seek(SeekFrom::Start(meta.len().saturating_sub(MAX_TERMINATION_MESSAGE)))
        .ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_TERMINATION_MESSAGE).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).trim_end().to_string();
    (!text.is_empty()).then_some(text)
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else { return false };
    let target = canon.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == target))
        })
        .unwrap_or(false)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The pod whose uid this is, for messages.
fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

#[cfg(test)]
mod termination_tests {
    use super::termination_message;

    #[test]
    fn only_the_last_4_kib_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = vec![b'a'; 1 << 20];
        big.extend_from_slice(b"the end\n");
        std::fs::write(dir.path().join("termination-log"), &big).unwrap();
        let m = termination_message(dir.path()).unwrap();
        assert!(m.ends_with("the end"), "{}", &m[m.len().saturating_sub(20)..]);
        assert_eq!(m.len(), 4096 - 1, "4096 bytes less the trailing newline");
    }

    #[test]
    fn a_fifo_or_a_symlink_gives_no_message_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("termination-log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(termination_message(dir.path()), None);
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(dir.path().join("secret"), "host secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), &fifo).unwrap();
        assert_eq!(termination_message(dir.path()), None);
    }
}
