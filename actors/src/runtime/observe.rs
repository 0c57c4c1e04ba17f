//! What the runtime knows about a container's starts, from disk and the
//! shims' locks, never from a timeout: `observe` for an actor (re)building
//! its picture, `wait` for the exit of a start.

use super::protocol::{ExitRecord, ShimConfig, ShimReply, ShimRequest, StartedRecord};
use super::{blocking, cgroups, container_id, termination_message, Finished, Runtime};
use nix::fcntl::{Flock, FlockArg};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The latest start of a container, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Its shim runs it.
    Running(super::Started),
    /// It ended; the record says how.
    Exited(Finished),
}

/// A container's starts, as found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The latest start that ran, with its number.
    pub latest: Option<(u32, Observed)>,
    /// The start before it that ended, for `lastState`.
    pub previous: Option<Finished>,
    /// The latest start was being stopped because the container's image
    /// changed: it starts again at once, whatever the restart policy.
    pub definition_changed: bool,
}

/// Whether a shim holds an attempt's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shim {
    /// It runs (creating the container, or looking after it).
    Alive,
    /// It exited, or never ran.
    Gone,
    /// No lock file: a shim of an older build; ask its socket instead.
    Unknown,
}

fn shim_state(dir: &Path) -> Shim {
    let Ok(f) = std::fs::File::open(dir.join("shim.lock")) else {
        return Shim::Unknown;
    };
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        Ok(_held_by_us_for_a_moment) => Shim::Gone,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Shim::Alive,
        Err(_) => Shim::Unknown,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn read_exit(dir: &Path) -> Option<ExitRecord> {
    read_json(&dir.join("exit.json"))
}

/// Writes `exit.json` the way the shim does (atomically), for an end the
/// daemon had to establish itself.
fn record_exit(dir: &Path, exit: &ExitRecord) {
    let tmp = dir.join("exit.json.tmp");
    if std::fs::write(&tmp, serde_json::to_vec(exit).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(tmp, dir.join("exit.json"));
    }
}

/// The attempt numbers in a container's directory, highest first.
fn attempts(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// What one attempt's directory says, once no shim is creating it.
pub(super) enum AttemptState {
    Running(super::Started),
    Exited(Finished),
    /// Never ran: no shim was spawned, or it died before the container ran.
    NeverRan,
    /// A shim is still creating the container.
    Starting,
}

impl Runtime {
    fn finished(&self, uid: &str, container: &str, attempt: u32, exit: ExitRecord) -> Finished {
        let dir = self.paths.attempt_dir(uid, container, attempt);
        let cfg: Option<ShimConfig> = read_json(&dir.join("shim.json"));
        Finished {
            attempt,
            id: container_id(uid, container, attempt),
            exit,
            image_id: cfg.and_then(|c| c.image_id).unwrap_or_default(),
            message: termination_message(&dir),
        }
    }

    /// One attempt's state. A start whose shim died under it (no exit
    /// record) is ended here: whatever still runs in its cgroup is killed,
    /// so no container is left without a shim, and the end is recorded as
    /// kubelet reports a container nobody can account for.
    pub(super) fn attempt_state(&self, uid: &str, container: &str, attempt: u32, shim_answers: bool) -> AttemptState {
        let dir = self.paths.attempt_dir(uid, container, attempt);
        let id = container_id(uid, container, attempt);
        if !dir.join("shim.json").exists() {
            return AttemptState::NeverRan;
        }
        let started: Option<StartedRecord> = read_json(&dir.join("started.json"));
        let alive = match shim_state(&dir) {
            Shim::Alive => true,
            Shim::Gone => false,
            Shim::Unknown => shim_answers,
        };
        if alive {
            if let Some(exit) = read_exit(&dir) {
                // Exited; the shim is finishing up.
                return AttemptState::Exited(self.finished(uid, container, attempt, exit));
            }
            let Some(started) = started else {
                return AttemptState::Starting;
            };
            let cfg: Option<ShimConfig> = read_json(&dir.join("shim.json"));
            let cfg = cfg.unwrap_or_else(|| ShimConfig {
                id: id.clone(),
                bundle: dir.clone(),
                state_root: self.paths.container_state_root(),
                log_path: Default::default(),
                log_max_size: 0,
                log_max_files: 0,
                socket: self.paths.shim_socket(&id),
                exit_file: dir.join("exit.json"),
                memory_cgroup: None,
                stop_signal: None,
                image: None,
                image_id: None,
                mount_scope: Vec::new(),
                seal_dev: false,
                stdin: false,
                stdin_once: false,
                tty: false,
            });
            return AttemptState::Running(super::Started {
                id,
                pid: started.pid,
                started_at: started.started_at,
                image_id: cfg.image_id.unwrap_or_default(),
                image: cfg.image.unwrap_or_default(),
                stop_signal: cfg.stop_signal,
            });
        }
        if let Some(exit) = read_exit(&dir) {
            return AttemptState::Exited(self.finished(uid, container, attempt, exit));
        }
        match started {
            Some(s) => {
                tracing::warn!("container {id}: its shim is gone without an exit record; killing what is left of it");
                cgroups::kill_container(uid, &id);
                let _ = std::fs::remove_dir_all(self.paths.container_state_root().join(&id));
                let exit = ExitRecord::unknown(Some(s.started_at));
                record_exit(&dir, &exit);
                AttemptState::Exited(self.finished(uid, container, attempt, exit))
            }
            None => AttemptState::NeverRan,
        }
    }

    /// What is on disk for a container: its latest start that ran (running
    /// or ended) and the one before it. Attempts that never ran are removed,
    /// so their numbers are used again. Waits while a shim is still creating
    /// the latest start (however long that takes): a start is never mistaken
    /// for a missing one.
    pub async fn observe(self: &Arc<Self>, uid: &str, container: &str) -> Observation {
        let timer = peapod_metrics::Timer::start();
        let found = self.observe_now(uid, container).await;
        super::record::<_, ()>("container_status", timer, &Ok(()));
        found
    }

    async fn observe_now(self: &Arc<Self>, uid: &str, container: &str) -> Observation {
        let began = tokio::time::Instant::now();
        loop {
            let guard = self.locks.lock(format!("ctr/{uid}/{container}")).await;
            // Shims of older builds (no lock file) are asked over their socket.
            let legacy = attempts(&self.paths.container_dir(uid, container))
                .first()
                .filter(|a| !self.paths.attempt_dir(uid, container, **a).join("shim.lock").exists())
                .copied();
            let answers = match legacy {
                Some(a) => {
                    let id = container_id(uid, container, a);
                    matches!(
                        self.request(&id, &ShimRequest::State, Some(Duration::from_secs(5)))
                            .await,
                        Ok(ShimReply::Ok { .. })
                    )
                }
                None => false,
            };
            let me = self.clone();
            let (uid2, name2) = (uid.to_string(), container.to_string());
            let found = blocking(move || {
                let _guard = guard;
                let mut out = Observation::default();
                for a in attempts(&me.paths.container_dir(&uid2, &name2)) {
                    match me.attempt_state(&uid2, &name2, a, answers && Some(a) == legacy) {
                        AttemptState::Starting => return None,
                        AttemptState::NeverRan => {
                            if out.latest.is_none() {
                                me.discard_attempt(&uid2, &name2, a);
                            }
                        }
                        AttemptState::Running(s) => {
                            if out.latest.is_none() {
                                out.latest = Some((a, Observed::Running(s)));
                            } else {
                                // Never two starts at once: an older one still running is ended.
                                tracing::error!(
                                    "container {}: start {a} still runs beside a later one; killing it",
                                    s.id
                                );
                                cgroups::kill_container(&uid2, &s.id);
                            }
                        }
                        AttemptState::Exited(f) => {
                            if out.latest.is_none() {
                                out.latest = Some((a, Observed::Exited(f)));
                            } else {
                                out.previous = Some(f);
                                break;
                            }
                        }
                    }
                }
                if let Some((a, _)) = &out.latest {
                    out.definition_changed = me
                        .paths
                        .attempt_dir(&uid2, &name2, *a)
                        .join("definition-changed")
                        .exists();
                }
                Some(out)
            })
            .await;
            match found {
                Ok(Some(o)) => return o,
                Ok(None) => {
                    if began.elapsed() > super::shim::stuck::START_LIMIT {
                        // A shim that hangs creating its container is ended: the attempt never ran.
                        if let Some(a) = attempts(&self.paths.container_dir(uid, container)).first() {
                            let dir = self.paths.attempt_dir(uid, container, *a);
                            let (u, id) = (uid.to_string(), container_id(uid, container, *a));
                            let _ = blocking(move || {
                                if super::shim::stuck::kill(&dir) {
                                    cgroups::kill_container(&u, &id);
                                }
                            })
                            .await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!("observing container {container} of pod {uid}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The exit of a started container: waits on its shim, or reads the
    /// record it left. While the shim holds the attempt's lock it is alive
    /// and the wait goes on, however slowly it answers; only a shim that is
    /// gone without a record ends as `ContainerStatusUnknown` (after whatever
    /// was left of its container is killed).
    pub async fn wait(self: &Arc<Self>, uid: &str, container: &str, attempt: u32) -> ExitRecord {
        let id = container_id(uid, container, attempt);
        let dir = self.paths.attempt_dir(uid, container, attempt);
        let mut pause = Duration::from_millis(100);
        loop {
            if let Ok(ShimReply::Exited { exit }) = self.request(&id, &ShimRequest::Wait, None).await {
                return exit;
            }
            let d = dir.clone();
            let (me, u, c) = (self.clone(), uid.to_string(), container.to_string());
            let legacy_alive = !dir.join("shim.lock").exists()
                && matches!(
                    self.request(&id, &ShimRequest::State, Some(Duration::from_secs(5)))
                        .await,
                    Ok(ShimReply::Ok { .. })
                );
            let state = blocking(move || match me.attempt_state(&u, &c, attempt, legacy_alive) {
                AttemptState::Exited(f) => Some(f.exit),
                AttemptState::NeverRan => Some(read_exit(&d).unwrap_or_else(|| ExitRecord::unknown(None))),
                AttemptState::Running(_) | AttemptState::Starting => None,
            })
            .await;
            match state {
                Ok(Some(exit)) => return exit,
                Ok(None) | Err(_) => {
                    // Alive but not answering (busy, or the daemon out of descriptors): ask again.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// A container the node has (running or exited, until its pod is removed)
/// and the image manifest it runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// `namespace/name` of the pod, from its log directory's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// The manifest digest (`sha256:…`).
    pub digest: String,
}

/// Every container of every pod this node still keeps, with its image: what
/// `image rm` must refuse to remove and image garbage collection must keep,
/// as kubelet keeps the images of all containers the runtime knows.
/// Reads only files, so the CLI can ask it of a node whose daemon is down.
pub fn image_users(paths: &super::NodePaths) -> Vec<ImageUser> {
    let mut users = Vec::new();
    let Ok(pods) = std::fs::read_dir(paths.pods()) else {
        return users;
    };
    for pod in pods.flatten() {
        let Ok(containers) = std::fs::read_dir(pod.path().join("containers")) else {
            continue;
        };
        for container in containers.flatten() {
            let Ok(attempts) = std::fs::read_dir(container.path()) else {
                continue;
            };
            for attempt in attempts.flatten() {
                let Some(cfg) = read_json::<ShimConfig>(&attempt.path().join("shim.json")) else {
                    continue;
                };
                let Some(digest) = cfg.image_id.as_deref().and_then(|i| i.rsplit_once('@')).map(|(_, d)| d) else {
                    continue;
                };
                // logs/<namespace>_<name>_<uid>/<container>/<attempt>.log
                let pod_name = cfg
                    .log_path
                    .parent()
                    .and_then(Path::parent)
                    .and_then(Path::file_name)
                    .and_then(|n| n.to_str())
                    .and_then(|n| {
                        let mut parts = n.splitn(3, '_');
                        Some(format!("{}/{}", parts.next()?, parts.next()?))
                    })
                    .unwrap_or_else(|| pod.file_name().to_string_lossy().into_owned());
                users.push(ImageUser {
                    pod: pod_name,
                    container: container.file_name().to_string_lossy().into_owned(),
                    digest: digest.to_string(),
                });
            }
        }
    }
    users.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
    users.dedup();
    users
}
