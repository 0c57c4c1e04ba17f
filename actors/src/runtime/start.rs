//! Starting one attempt of a container: image, rootfs, bundle, and a shim
//! that holds the attempt's lock for as long as it lives.

use super::observe::AttemptState;
use super::protocol::{KeptMounts, ShimConfig, StartReport};
use super::{blocking, cgroups, container_id, io_err, logfile, paths, seccomp, spec, Runtime};
use crate::image::{ImageError, ResolvedImage};
use k8s_openapi::api::core::v1::{Container, Pod};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a container could not be started; `reason` is the Kubernetes waiting reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct StartError {
    /// `ErrImageNeverPull`, `ErrImagePull`, `CreateContainerConfigError`, `CreateContainerError`, `RunContainerError`.
    pub reason: &'static str,
    /// What went wrong, for the status and the event.
    pub message: String,
    /// The image is not in the store and its pull policy lets it be pulled:
    /// the caller pulls it ([`Runtime::pull_image`]) and starts again.
    pub image_missing: bool,
}

impl StartError {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            image_missing: false,
        }
    }
}

/// A container the runtime started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// libcontainer id.
    pub id: String,
    /// The container init's pid (in the host pid namespace).
    pub pid: i32,
    /// RFC 3339 start time.
    pub started_at: String,
    /// The image's digest reference, for `imageID`.
    pub image_id: String,
    /// The image as the spec named it when this start was made.
    pub image: String,
    /// The image's StopSignal, if any.
    pub stop_signal: Option<String>,
}

/// An attempt whose shim was spawned.
struct Prepared {
    uid: String,
    container: String,
    attempt: u32,
    id: String,
    dir: PathBuf,
    rootfs: PathBuf,
    image_id: String,
    image_name: String,
    stop_signal: Option<String>,
    /// The seccomp profile the container was given, to explain a start it ended.
    seccomp: Option<String>,
}

impl Runtime {
    /// Starts attempt `attempt` of container `c` of `pod`: resolves the image,
    /// mounts the rootfs, writes the bundle and hands it to a new shim. Runs
    /// on the blocking pool under the container's lock, which it keeps until
    /// the shim reported, even if the caller is dropped meanwhile.
    pub async fn start(
        self: &Arc<Self>,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        volumes: &[peapod_volumes::Published],
        env: &spec::OuterEnv,
    ) -> Result<Started, StartError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = c.name.clone();
        let guard = self.locks.lock(format!("ctr/{uid}/{name}")).await;
        let me = self.clone();
        let (pod, c, volumes, env) = (pod.clone(), c.clone(), volumes.to_vec(), env.clone());
        let timer = peapod_metrics::Timer::start();
        // Files, mounts and the spawn on the blocking pool; the wait for the
        // shim's report on this event loop (no thread parked meanwhile); the
        // verdict on the blocking pool again, all under the container's lock.
        let prepared = blocking(move || {
            if me.is_removed(&uid) {
                return Err(StartError::new("CreateContainerError", "the pod is being removed"));
            }
            let res = me.prepare_attempt(&pod, &c, attempt, &volumes, &env);
            if let Err(e) = &res {
                if e.reason != "RunContainerError" {
                    // Nothing ran: the attempt number is not used up.
                    me.discard_attempt(&uid, &c.name, attempt);
                }
            }
            res
        })
        .await
        .map_err(|e| StartError::new("CreateContainerError", e))
        .and_then(|r| r);
        // kubelet's CreateContainer: everything up to a created container
        // (here, its shim spawned). A missing image is kubelet's pull, not this.
        if !matches!(&prepared, Err(e) if e.image_missing) {
            super::record("create_container", timer, &prepared);
        }
        let (prepared, child) = prepared?;
        let timer = peapod_metrics::Timer::start();
        let report = super::shim::report(child, &prepared.dir)
            .await
            .map_err(|e| StartError::new(e.reason, e.message));
        let me = self.clone();
        let started = blocking(move || {
            let _guard = guard;
            let uid = prepared.uid.clone();
            let res = me.judge_start(prepared, report);
            if let Err(e) = &res {
                if e.reason != "RunContainerError" {
                    me.discard_attempt(&uid, &name, attempt);
                }
            }
            res
        })
        .await
        .map_err(|e| StartError::new("CreateContainerError", e))
        .and_then(|r| r);
        super::record("start_container", timer, &started);
        started
    }

    /// Everything up to the spawned shim: image, rootfs, bundle, `shim.json`.
    fn prepare_attempt(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        volumes: &[peapod_volumes::Published],
        env: &spec::OuterEnv,
    ) -> Result<(Prepared, std::process::Child), StartError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image_name = c.image.clone().unwrap_or_default();
        let image = self.resolve_image(c)?;
        let id = container_id(&uid, &c.name, attempt);
        let dir = self.paths.attempt_dir(&uid, &c.name, attempt);
        if dir.exists() {
            // A half-made attempt that never ran (the observer made sure): start it over.
            self.discard_attempt(&uid, &c.name, attempt);
        }
        let rootfs = dir.join("rootfs");
        for d in [dir.join("upper"), dir.join("work"), rootfs.clone()] {
            paths::ensure_dir(&d).map_err(|e| StartError::new("CreateContainerError", io_err("create", &d, e)))?;
        }
        // The upper dir gives the container's `/` its mode: 0755 as containerd
        // makes it, not the daemon's 0700 (its parents keep host users out).
        let upper = dir.join("upper");
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| StartError::new("CreateContainerError", io_err("chmod", &upper, e)))?;
        let lower = image
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            dir.join("upper").display(),
            dir.join("work").display()
        );
        // nodev: a device node the image or the container makes in its
        // root opens nothing (privileged containers may use theirs).
        let privileged = c.security_context.as_ref().and_then(|s| s.privileged) == Some(true);
        let flags = if privileged {
            MsFlags::empty()
        } else {
            MsFlags::MS_NODEV
        };
        mount(Some("overlay"), &rootfs, Some("overlay"), flags, Some(opts.as_str()))
            .map_err(|e| StartError::new("CreateContainerError", io_err("mount overlay on", &rootfs, e)))?;
        let term = dir.join("termination-log");
        std::fs::write(&term, b"").map_err(|e| StartError::new("CreateContainerError", io_err("write", &term, e)))?;
        // Writable by whatever user the container runs as, as kubelet makes it.
        std::fs::set_permissions(&term, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| StartError::new("CreateContainerError", io_err("chmod", &term, e)))?;
        let cgroups_path = format!("{}/{id}", cgroups::pod_path(&uid));
        let sandbox = self.paths.sandbox_dir(&uid);
        let etc = self.paths.pod_dir(&uid).join("etc");
        let stage = dir.join("mounts");
        // Left by a start of this number that never ran.
        super::volpath::unstage(&stage);
        std::fs::create_dir_all(&stage)
            .map_err(|e| StartError::new("CreateContainerError", io_err("create", &stage, e)))?;
        let pod_dir = self.paths.pod_dir(&uid);
        let volume_check = |v: &peapod_volumes::Published, real: &std::path::Path| {
            self.volumes.check_opened(v, real, &pod_dir).map_err(|e| e.message)
        };
        let spec_paths = spec::SpecPaths {
            volume_stage: &stage,
            volume_check: &volume_check,
            rootfs: &rootfs,
            sandbox: &sandbox,
            etc_dir: &etc,
            termination_log: &term,
            cgroups_path: &cgroups_path,
            volumes,
        };
        let mut config = spec::build(pod, c, &image.config, env, &spec_paths)
            .map_err(|e| StartError::new("CreateContainerConfigError", e.0))?;
        // A profile that cannot be applied fails the start; it is never skipped.
        let choice = seccomp::choose(pod, c, self.config.seccomp_default);
        let caps: Vec<String> = config
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .map(spec::capability_names)
            .unwrap_or_default();
        static HOST: std::sync::OnceLock<seccomp::Host> = std::sync::OnceLock::new();
        let host = HOST.get_or_init(seccomp::Host::current);
        if let Some(profile) = seccomp::for_container(&choice, &self.paths.seccomp(), &caps, host)
            .map_err(|e| StartError::new("CreateContainerError", e))?
        {
            // Typed as libcontainer reads it: a profile it would refuse fails here, by name.
            let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(profile)
                .map_err(|e| StartError::new("CreateContainerError", format!("seccomp profile: {e}")))?;
            if let Some(linux) = config.linux_mut() {
                linux.set_seccomp(Some(profile));
            }
        }
        fn write_json(path: PathBuf, v: &impl serde::Serialize) -> Result<(), StartError> {
            let bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
            std::fs::write(&path, bytes).map_err(|e| StartError::new("CreateContainerError", io_err("write", &path, e)))
        }
        write_json(dir.join("config.json"), &config)?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let log_path = self.paths.log_file(&ns, &name, &uid, &c.name, attempt);
        if let Some(parent) = log_path.parent() {
            paths::ensure_dir(parent)
                .map_err(|e| StartError::new("CreateContainerError", io_err("create", parent, e)))?;
            // Only this start's log and the previous one's (`logs --previous`) are kept.
            if let Err(e) = logfile::prune_attempts(parent, attempt) {
                tracing::warn!("removing old logs in {}: {e}", parent.display());
            }
        }
        let image_id = format!("{}@{}", image.reference, image.manifest_digest);
        let shim = ShimConfig {
            id: id.clone(),
            bundle: dir.clone(),
            state_root: self.paths.container_state_root(),
            log_path,
            log_max_size: self.config.container_log_max_size,
            log_max_files: self.config.container_log_max_files,
            socket: self.paths.shim_socket(&id),
            exit_file: dir.join("exit.json"),
            memory_cgroup: Some(PathBuf::from(if cgroups::is_unified() {
                format!("/sys/fs/cgroup{cgroups_path}")
            } else {
                format!("/sys/fs/cgroup/memory{cgroups_path}")
            })),
            stop_signal: image.config.stop_signal.clone(),
            image: Some(image_name.clone()),
            image_id: Some(image_id.clone()),
            // A shared rootfs (a Bidirectional volume) must reach the host's
            // mount table, which a shim with its own table would stop.
            seal_dev: !privileged,
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            mount_scope: if config.linux().as_ref().and_then(|l| l.rootfs_propagation().as_deref()) == Some("shared") {
                Vec::new()
            } else {
                vec![
                    KeptMounts {
                        tree: self.paths.pods(),
                        keep: self.paths.pod_dir(&uid),
                    },
                    KeptMounts {
                        tree: self.paths.sandboxes(),
                        keep: self.paths.sandbox_dir(&uid),
                    },
                ]
            },
        };
        write_json(dir.join("shim.json"), &shim)?;
        crate::faults::point("runtime.before-spawn", &id);
        let child = super::shim::spawn(&self.shim, &dir).map_err(|e| StartError::new(e.reason, e.message))?;
        Ok((
            Prepared {
                uid,
                container: c.name.clone(),
                attempt,
                id,
                dir,
                rootfs,
                image_id,
                image_name,
                stop_signal: image.config.stop_signal.clone(),
                seccomp: match &choice {
                    seccomp::Choice::Unconfined => None,
                    seccomp::Choice::RuntimeDefault => Some("RuntimeDefault".into()),
                    seccomp::Choice::Localhost(p) => Some(format!("Localhost {:?}", self.paths.seccomp().join(p))),
                },
            },
            child,
        ))
    }

    /// Whether the start worked, from the shim's report and, where that is
    /// not the whole truth, the attempt's records.
    fn judge_start(&self, p: Prepared, report: Result<Vec<u8>, StartError>) -> Result<Started, StartError> {
        let out = report?;
        let text = String::from_utf8_lossy(&out);
        let said = match serde_json::from_str::<StartReport>(text.trim()) {
            Ok(StartReport::Started { pid, started_at }) => {
                return Ok(Started {
                    id: p.id,
                    pid,
                    started_at,
                    image_id: p.image_id,
                    image: p.image_name,
                    stop_signal: p.stop_signal,
                })
            }
            // An init that dies once its filter is loaded leaves libcontainer
            // only a broken channel to report; say what most likely did it.
            Ok(StartReport::Failed { message }) => match &p.seccomp {
                Some(profile) if message.contains("BrokenChannel") => format!(
                    "failed to create containerd task: {message}: the container's init ended before it was \
                     ready, after loading seccomp profile {profile}; a profile that denies a syscall the \
                     runtime needs to start a process (write, capset, prctl, execve, ...) ends it this way"
                ),
                _ => format!("failed to create containerd task: {message}"),
            },
            Err(_) => format!("shim for {} said {text:?}", p.image_name),
        };
        // The report is not the whole truth (a shim may have started the
        // container and died before reporting): the attempt's records decide.
        let started = std::time::Instant::now();
        loop {
            match self.attempt_state(&p.uid, &p.container, p.attempt, false) {
                AttemptState::Running(s) => return Ok(s),
                AttemptState::Exited(_) => {
                    let _ = umount2(&p.rootfs, MntFlags::MNT_DETACH);
                    return Err(StartError::new("RunContainerError", said));
                }
                AttemptState::NeverRan => return Err(StartError::new("CreateContainerError", said)),
                AttemptState::Starting => {
                    if started.elapsed() > super::shim::stuck::START_LIMIT && super::shim::stuck::kill(&p.dir) {
                        cgroups::kill_container(&p.uid, &p.id);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    fn resolve_image(&self, c: &Container) -> Result<ResolvedImage, StartError> {
        let name = c.image.clone().unwrap_or_default();
        match self.images.resolve(&name) {
            Ok(img) => Ok(img),
            Err(ImageError::NotFound { .. }) => {
                if c.image_pull_policy.as_deref() == Some("Never") {
                    Err(StartError::new(
                        "ErrImageNeverPull",
                        format!("Container image \"{name}\" is not present with pull policy of Never"),
                    ))
                } else {
                    Err(StartError {
                        image_missing: true,
                        ..StartError::new("ErrImagePull", format!("image \"{name}\" is not in the local store"))
                    })
                }
            }
            Err(e) => Err(StartError::new("InvalidImageName", e.to_string())),
        }
    }

    /// Removes every trace of an attempt that never ran, so its number can be
    /// used again: whatever a dying shim left in its cgroup, libcontainer's
    /// state, the rootfs, the directory.
    pub(crate) fn discard_attempt(&self, uid: &str, container: &str, attempt: u32) {
        let id = container_id(uid, container, attempt);
        cgroups::kill_container(uid, &id);
        let _ = std::fs::remove_dir_all(self.paths.container_state_root().join(&id));
        let dir = self.paths.attempt_dir(uid, container, attempt);
        self.release_rootfs(&dir);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_file(self.paths.shim_socket(&id));
    }
}
