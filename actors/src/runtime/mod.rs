//! The node's container runtime: pod sandboxes, container rootfs, and the
//! shims that run containers. Everything that clones (libcontainer's build,
//! start and exec, namespace creation) happens in `peapod shim` processes;
//! this side only spawns them, mounts, and talks over sockets.

pub mod cgroups;
pub mod cni;
pub mod paths;
pub mod protocol;
pub mod shim;
pub mod spec;

use crate::config::NodeConfig;
use crate::image::{ImageError, ImageStore, ResolvedImage};
use k8s_openapi::api::core::v1::{Container, Pod};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
pub use paths::{container_id, NodePaths};
use protocol::{ExitRecord, ShimConfig, ShimReply, ShimRequest, StartReport};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Why a container could not be started; `reason` is the Kubernetes waiting reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct StartError {
    /// `ErrImageNeverPull`, `ErrImagePull`, `CreateContainerConfigError`, `CreateContainerError`, `RunContainerError`.
    pub reason: &'static str,
    /// What went wrong, for the status and the event.
    pub message: String,
}

impl StartError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A container the runtime started.
#[derive(Debug, Clone)]
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

/// What the runtime finds on disk about one start of a container.
#[derive(Debug, Clone)]
pub enum Observed {
    /// Its shim still runs it.
    Running {
        id: String,
        pid: i32,
        stop_signal: Option<String>,
        image: Option<String>,
    },
    /// It ended; the record says how.
    Exited { id: String, exit: ExitRecord },
}

/// The runtime, shared by every pod actor.
pub struct Runtime {
    /// The node's directories.
    pub paths: NodePaths,
    /// The local image store.
    pub images: ImageStore,
    /// The `peapod` binary to run shims from.
    pub shim_binary: PathBuf,
    /// The node's settings.
    pub config: NodeConfig,
    /// The pod network's plugins.
    pub cni: cni::Cni,
    /// Volume plugins and the volumes they publish.
    pub volumes: Arc<peapod_volumes::VolumeManager>,
}

/// What a pod's sandbox provides to its status.
#[derive(Debug, Clone, Default)]
pub struct SandboxInfo {
    /// Pod IPs, IPv4 first; the node's IP for hostNetwork pods.
    pub pod_ips: Vec<String>,
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

/// The namespaces a pod's sandbox pins: hostNetwork pods share the node's network and UTS.
fn sandbox_namespaces(pod: &Pod) -> &'static [&'static str] {
    if host_network(pod) {
        &["ipc"]
    } else {
        &["net", "ipc", "uts"]
    }
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Runtime {
    /// Prepares the node's directories; the sandbox parent becomes a private
    /// bind mount so pinned namespace files never propagate elsewhere.
    pub fn new(
        paths: NodePaths,
        shim_binary: PathBuf,
        config: NodeConfig,
        volumes: Arc<peapod_volumes::VolumeManager>,
    ) -> Result<Arc<Self>, String> {
        for d in [
            &paths.root,
            &paths.run,
            &paths.sandboxes(),
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
        let images = ImageStore::open(paths.images()).map_err(|e| e.to_string())?;
        let cni = cni::Cni::new(config.network.clone());
        cni.ensure_default_config().map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            paths,
            images,
            shim_binary,
            config,
            cni,
            volumes,
        }))
    }

    /// Creates the pod's namespaces, `/etc` files and network, unless they
    /// exist (after a daemon restart); returns the pod's addresses.
    pub async fn ensure_sandbox(self: &Arc<Self>, pod: &Pod) -> Result<SandboxInfo, String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = self.paths.sandbox_dir(&uid);
        let hostname = if host_network(pod) {
            self.config.node_name.clone()
        } else {
            pod.spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .or(pod.metadata.name.clone())
                .unwrap_or_default()
        };
        let namespaces = sandbox_namespaces(pod);
        let fresh = !namespaces.iter().chain(&["shm"]).all(|f| is_mountpoint(&dir.join(f)));
        if fresh {
            self.clone().teardown_blocking(uid.clone()).await;
            let out = std::process::Command::new(&self.shim_binary)
                .args(["shim", "sandbox", "--dir"])
                .arg(&dir)
                .args(["--hostname", &hostname, "--namespaces", &namespaces.join(",")])
                .stdin(Stdio::null())
                .output_blocking()
                .await
                .map_err(|e| io_err("run sandbox helper", &self.shim_binary, e))?;
            if !out.status.success() {
                self.clone().teardown_blocking(uid.clone()).await;
                return Err(format!(
                    "create pod sandbox: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            // The pod's /dev/shm, shared by its containers and kept across their restarts.
            let shm = dir.join("shm");
            paths::ensure_dir(&shm).map_err(|e| io_err("create", &shm, e))?;
            mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=1777,size=65536k"),
            )
            .map_err(|e| io_err("mount tmpfs on", &shm, e))?;
        }
        let cg = cgroups::PodCgroup::for_pod(&pod.spec.clone().unwrap_or_default(), self.config.pod_pids_limit);
        cgroups::apply(&uid, &cg)?;
        let pod_ips = if host_network(pod) {
            vec![self.config.node_ip.clone()]
        } else {
            let me = self.clone();
            let p = pod.clone();
            tokio::task::spawn_blocking(move || me.ensure_network(&p, fresh))
                .await
                .map_err(|e| e.to_string())??
        };
        self.write_etc_files(pod, &hostname, &pod_ips)?;
        Ok(SandboxInfo { pod_ips })
    }

    /// The cached CNI attachment of a pod.
    pub fn network_file(&self, uid: &str) -> PathBuf {
        self.paths.pod_dir(uid).join("network.json")
    }

    /// CNI ADD for the pod unless its attachment is complete; a half-done ADD
    /// from a crash is deleted first so leases are not leaked.
    /// `fresh`: the network namespace was just created, so a cached
    /// attachment describes an interface that is gone and is redone.
    fn ensure_network(&self, pod: &Pod, fresh: bool) -> Result<Vec<String>, String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let file = self.network_file(&uid);
        if let Some(at) = cni::read_attachment(&file) {
            if at.result.is_some() && !fresh {
                // Re-adopted after a restart: the plugins confirm the attachment is intact.
                match self.cni.check(&at) {
                    Ok(()) => tracing::info!("pod {uid}: CNI CHECK passed for {:?}", at.ips()),
                    Err(e) => tracing::warn!("pod {uid}: CNI CHECK failed: {e}"),
                }
                return Ok(at.ips());
            }
            let _ = self.cni.del(&at);
        }
        let loaded = self.cni.load().map_err(|e| e.to_string())?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let port_mappings = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|h| h > 0))
            .map(|p| cni::PortMapping {
                host_port: p.host_port.unwrap_or_default(),
                container_port: p.container_port,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
            .collect();
        let mut at = cni::Attachment {
            list: loaded.list,
            source: loaded.source,
            container_id: uid.clone(),
            netns: self.paths.sandbox_dir(&uid).join("net"),
            ifname: "eth0".into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}"
            ),
            port_mappings,
            result: None,
        };
        paths::ensure_dir(&self.paths.pod_dir(&uid)).map_err(|e| io_err("create", &self.paths.pod_dir(&uid), e))?;
        cni::write_attachment(&file, &at).map_err(|e| e.to_string())?;
        let t = std::time::Instant::now();
        if let Err(e) = self.cni.add(&mut at) {
            // The record stays until a DEL succeeds, so a lease is never forgotten.
            if self.cni.del(&at).is_ok() {
                let _ = std::fs::remove_file(&file);
            }
            return Err(format!(
                "plugin network {:?} ({}): {e}",
                at.list["name"].as_str().unwrap_or(""),
                at.source.display()
            ));
        }
        cni::write_attachment(&file, &at).map_err(|e| e.to_string())?;
        tracing::info!(
            "pod {ns}/{name}: CNI ADD gave {:?} in {} ms",
            at.ips(),
            t.elapsed().as_millis()
        );
        Ok(at.ips())
    }

    /// CNI DEL of the pod's attachment, if any; idempotent.
    fn teardown_network(&self, uid: &str) {
        let file = self.network_file(uid);
        let Some(at) = cni::read_attachment(&file) else {
            return;
        };
        let t = std::time::Instant::now();
        match self.cni.del(&at) {
            Ok(()) => {
                let _ = std::fs::remove_file(&file);
                tracing::info!("pod {uid}: CNI DEL in {} ms", t.elapsed().as_millis());
            }
            Err(e) => tracing::warn!("pod {uid}: CNI DEL: {e}"),
        }
    }

    /// [`Runtime::teardown_sandbox`] on the blocking pool.
    pub async fn teardown_blocking(self: Arc<Self>, uid: String) {
        let _ = tokio::task::spawn_blocking(move || self.teardown_sandbox(&uid)).await;
    }

    fn write_etc_files(&self, pod: &Pod, hostname: &str, pod_ips: &[String]) -> Result<(), String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let etc = self.paths.pod_dir(&uid).join("etc");
        paths::ensure_dir(&etc).map_err(|e| io_err("create", &etc, e))?;
        let own = pod_ips.first().map_or("127.0.1.1", String::as_str);
        let hosts = format!(
            "# Kubernetes-managed hosts file (peapod).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n"
        );
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for (name, text) in [
            ("hosts", hosts.as_str()),
            ("hostname", &format!("{hostname}\n")),
            ("resolv.conf", &resolv),
        ] {
            let p = etc.join(name);
            if std::fs::read_to_string(&p).ok().as_deref() != Some(text) {
                std::fs::write(&p, text).map_err(|e| io_err("write", &p, e))?;
            }
        }
        Ok(())
    }

    /// Removes the pod's network and namespaces; idempotent. Blocks on the CNI plugins.
    pub fn teardown_sandbox(&self, uid: &str) {
        self.teardown_network(uid);
        let dir = self.paths.sandbox_dir(uid);
        for ns in ["net", "ipc", "uts"] {
            let f = dir.join(ns);
            let _ = umount2(&f, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&f);
        }
        let _ = umount2(&dir.join("shm"), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(dir.join("shm"));
        let _ = std::fs::remove_dir(&dir);
    }

    /// Starts attempt `attempt` of container `c` of `pod`: resolves the image,
    /// mounts the rootfs, writes the bundle and hands it to a new shim.
    pub async fn start(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        volumes: &[peapod_volumes::Published],
    ) -> Result<Started, StartError> {
        let res = self.start_attempt(pod, c, attempt, volumes).await;
        if let Err(e) = &res {
            if e.reason != "RunContainerError" {
                // Nothing ran: the attempt number is not used up.
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                self.remove_attempt(&uid, &c.name, attempt);
            }
        }
        res
    }

    async fn start_attempt(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        volumes: &[peapod_volumes::Published],
    ) -> Result<Started, StartError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image_name = c.image.clone().unwrap_or_default();
        let image = self.resolve_image(c)?;
        let id = container_id(&uid, &c.name, attempt);
        let dir = self.paths.attempt_dir(&uid, &c.name, attempt);
        if dir.exists() {
            // A half-made attempt from a crash: start it over.
            self.remove_attempt(&uid, &c.name, attempt);
        }
        let rootfs = dir.join("rootfs");
        for d in [dir.join("upper"), dir.join("work"), rootfs.clone()] {
            paths::ensure_dir(&d).map_err(|e| StartError::new("CreateContainerError", io_err("create", &d, e)))?;
        }
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
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| StartError::new("CreateContainerError", io_err("mount overlay on", &rootfs, e)))?;
        let term = dir.join("termination-log");
        std::fs::write(&term, b"").map_err(|e| StartError::new("CreateContainerError", io_err("write", &term, e)))?;
        let cgroups_path = format!("{}/{id}", cgroups::pod_path(&uid));
        let sandbox = self.paths.sandbox_dir(&uid);
        let etc = self.paths.pod_dir(&uid).join("etc");
        let spec_paths = spec::SpecPaths {
            rootfs: &rootfs,
            sandbox: &sandbox,
            etc_dir: &etc,
            termination_log: &term,
            cgroups_path: &cgroups_path,
            volumes,
        };
        let config = spec::build(pod, c, &image.config, &spec_paths)
            .map_err(|e| StartError::new("CreateContainerConfigError", e.0))?;
        let write_json = |path: PathBuf, v: &serde_json::Value| {
            let bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
            std::fs::write(&path, bytes).map_err(|e| StartError::new("CreateContainerError", io_err("write", &path, e)))
        };
        write_json(dir.join("config.json"), &config)?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let log_path = self.paths.log_file(&ns, &name, &uid, &c.name, attempt);
        if let Some(parent) = log_path.parent() {
            paths::ensure_dir(parent)
                .map_err(|e| StartError::new("CreateContainerError", io_err("create", parent, e)))?;
        }
        let shim = ShimConfig {
            id: id.clone(),
            bundle: dir.clone(),
            state_root: self.paths.container_state_root(),
            log_path,
            socket: self.paths.shim_socket(&id),
            exit_file: dir.join("exit.json"),
            memory_cgroup: Some(PathBuf::from(if cgroups::is_unified() {
                format!("/sys/fs/cgroup{cgroups_path}")
            } else {
                format!("/sys/fs/cgroup/memory{cgroups_path}")
            })),
            stop_signal: image.config.stop_signal.clone(),
            image: Some(image_name.clone()),
        };
        let shim_json = serde_json::to_value(&shim).unwrap_or_default();
        write_json(dir.join("shim.json"), &shim_json)?;
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("shim.log"))
            .map_err(|e| StartError::new("CreateContainerError", io_err("open", &dir.join("shim.log"), e)))?;
        let out = std::process::Command::new(&self.shim_binary)
            .args(["shim", "run", "--config"])
            .arg(dir.join("shim.json"))
            .stdin(Stdio::null())
            .stderr(shim_log)
            .output_blocking()
            .await
            .map_err(|e| StartError::new("RunContainerError", io_err("run shim", &self.shim_binary, e)))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<StartReport>(text.trim()) {
            Ok(StartReport::Started { pid, started_at }) => Ok(Started {
                id,
                pid,
                started_at,
                image_id: format!("{}@{}", image.reference, image.manifest_digest),
                image: image_name.clone(),
                stop_signal: image.config.stop_signal.clone(),
            }),
            Ok(StartReport::Failed { message }) => {
                let _ = umount2(&rootfs, MntFlags::MNT_DETACH);
                Err(StartError::new(
                    "RunContainerError",
                    format!("failed to create containerd task: {message}"),
                ))
            }
            Err(_) => {
                let _ = umount2(&rootfs, MntFlags::MNT_DETACH);
                Err(StartError::new(
                    "RunContainerError",
                    format!("shim for {image_name} said {text:?}"),
                ))
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
                    Err(StartError::new(
                        "ErrImagePull",
                        format!("image \"{name}\" is not in the local store and this node does not pull from registries yet; import it with `peapod image import`"),
                    ))
                }
            }
            Err(e) => Err(StartError::new("InvalidImageName", e.to_string())),
        }
    }

    /// The exit of a started container: waits on its shim, or reads the record
    /// it left. Never fails: a container nobody can account for ends as `ContainerStatusUnknown`.
    pub async fn wait(&self, uid: &str, container: &str, attempt: u32) -> ExitRecord {
        let id = container_id(uid, container, attempt);
        let dir = self.paths.attempt_dir(uid, container, attempt);
        loop {
            match self.request(&id, &ShimRequest::Wait, None).await {
                Ok(ShimReply::Exited { exit }) => return exit,
                Ok(_) | Err(_) => {
                    if let Some(exit) = read_exit(&dir) {
                        return exit;
                    }
                    // No shim and no record: either the shim is mid-exit (the record
                    // appears within moments) or it is gone for good.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Some(exit) = read_exit(&dir) {
                        return exit;
                    }
                    if self
                        .request(&id, &ShimRequest::State, Some(Duration::from_secs(2)))
                        .await
                        .is_err()
                    {
                        return read_exit(&dir).unwrap_or_else(|| ExitRecord::unknown(None));
                    }
                }
            }
        }
    }

    /// Sends `signal` to the container's init through its shim.
    pub async fn kill(&self, uid: &str, container: &str, attempt: u32, signal: i32) -> Result<(), String> {
        let id = container_id(uid, container, attempt);
        match self
            .request(&id, &ShimRequest::Kill { signal }, Some(Duration::from_secs(5)))
            .await?
        {
            ShimReply::Error { message } => Err(message),
            _ => Ok(()),
        }
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
        let out = std::process::Command::new(&self.shim_binary)
            .args(["shim", "exec", "--state-root"])
            .arg(self.paths.container_state_root())
            .args(["--id", &id, "--timeout-ms", &timeout.as_millis().to_string(), "--"])
            .args(args)
            .stdin(Stdio::null())
            .output_blocking()
            .await
            .map_err(|e| io_err("run exec helper", &self.shim_binary, e))?;
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

    /// What is on disk for the latest start of a container, if any: (attempt, state).
    pub async fn observe(&self, uid: &str, container: &str) -> Option<(u32, Observed)> {
        let attempt = latest_attempt(&self.paths.container_dir(uid, container))?;
        let id = container_id(uid, container, attempt);
        let dir = self.paths.attempt_dir(uid, container, attempt);
        if let Some(exit) = read_exit(&dir) {
            return Some((attempt, Observed::Exited { id, exit }));
        }
        match self
            .request(&id, &ShimRequest::State, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ShimReply::Ok { pid }) => {
                let cfg = std::fs::read(dir.join("shim.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ShimConfig>(&b).ok());
                let (stop_signal, image) = cfg.map_or((None, None), |c| (c.stop_signal, c.image));
                Some((
                    attempt,
                    Observed::Running {
                        id,
                        pid,
                        stop_signal,
                        image,
                    },
                ))
            }
            _ => {
                let exit = read_exit(&dir).unwrap_or_else(|| ExitRecord::unknown(None));
                Some((attempt, Observed::Exited { id, exit }))
            }
        }
    }

    /// The termination message a container wrote (at most 4 KiB, as kubelet reads).
    pub fn termination_message(&self, uid: &str, container: &str, attempt: u32) -> Option<String> {
        let p = self.paths.attempt_dir(uid, container, attempt).join("termination-log");
        let bytes = std::fs::read(p).ok()?;
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)])
            .trim_end()
            .to_string();
        (!text.is_empty()).then_some(text)
    }

    /// Unmounts and removes one attempt's rootfs (the exit record and logs stay).
    pub fn release_rootfs(&self, uid: &str, container: &str, attempt: u32) {
        let dir = self.paths.attempt_dir(uid, container, attempt);
        let _ = umount2(&dir.join("rootfs"), MntFlags::MNT_DETACH);
        for d in ["upper", "work", "rootfs"] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
    }

    fn remove_attempt(&self, uid: &str, container: &str, attempt: u32) {
        self.release_rootfs(uid, container, attempt);
        let _ = std::fs::remove_dir_all(self.paths.attempt_dir(uid, container, attempt));
    }

    /// Removes everything the node holds for a pod whose containers have all
    /// exited: rootfs mounts, namespaces, cgroups, logs, its directory.
    pub fn remove_pod(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let containers_dir = self.paths.pod_dir(&uid).join("containers");
        for c in std::fs::read_dir(&containers_dir).into_iter().flatten().flatten() {
            let name = c.file_name().to_string_lossy().into_owned();
            for a in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                if let Ok(n) = a.file_name().to_string_lossy().parse::<u32>() {
                    self.release_rootfs(&uid, &name, n);
                }
            }
        }
        self.teardown_sandbox(&uid);
        cgroups::remove(&uid);
        // Whatever is still mounted below the pod (a volume a plugin failed to
        // unpublish) is detached first, so removing the directory never
        // reaches into someone's mounted data.
        unmount_below(&self.paths.pod_dir(&uid));
        let _ = std::fs::remove_dir_all(self.paths.pod_dir(&uid));
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = std::fs::remove_dir_all(self.paths.pod_log_dir(&ns, &name, &uid));
    }
}

/// Detaches every mount at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
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

fn read_exit(dir: &Path) -> Option<ExitRecord> {
    let text = std::fs::read_to_string(dir.join("exit.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn latest_attempt(dir: &Path) -> Option<u32> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|n| dir.join(n.to_string()).join("shim.json").exists())
        .max()
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

/// Runs a helper process to completion on the blocking pool: helpers are short
/// and their output is small, and std's spawn is safe from a threaded process.
trait OutputBlocking {
    async fn output_blocking(self) -> std::io::Result<std::process::Output>;
}

impl OutputBlocking for &mut std::process::Command {
    async fn output_blocking(self) -> std::io::Result<std::process::Output> {
        let mut cmd = std::mem::replace(self, std::process::Command::new("true"));
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }
}
