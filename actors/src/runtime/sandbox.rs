//! A pod's sandbox: its pinned namespaces, `/dev/shm`, cgroup, `/etc` files
//! and CNI network. Built and torn down on the blocking pool under the pod's lock.

use super::{blocking, cgroups, cni, io_err, paths, Runtime};
use k8s_openapi::api::core::v1::Pod;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

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

/// Whether `path` is a namespace pinned by a bind mount (a file of nsfs).
fn is_pinned_namespace(path: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Whether `path` is a tmpfs mounted there (not its parent's file system).
fn is_own_tmpfs(path: &std::path::Path) -> bool {
    let tmpfs = nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    let dev = |p: &std::path::Path| nix::sys::stat::stat(p).map(|s| s.st_dev).ok();
    tmpfs
        && path
            .parent()
            .is_some_and(|parent| dev(path).is_some() && dev(path) != dev(parent))
}

impl Runtime {
    /// Creates the pod's namespaces, `/etc` files and network, unless they
    /// exist (after a daemon restart); returns the pod's addresses.
    pub async fn ensure_sandbox(self: &Arc<Self>, pod: &Pod) -> Result<SandboxInfo, String> {
        let uid = super::pod_uid(pod);
        let guard = self.locks.lock(format!("pod/{uid}")).await;
        let me = self.clone();
        let pod = pod.clone();
        let timer = peapod_metrics::Timer::start();
        let res = blocking(move || {
            let _guard = guard;
            me.ensure_sandbox_blocking(&pod)
        })
        .await
        .and_then(|r| r);
        super::record("run_podsandbox", timer, &res);
        res
    }

    fn ensure_sandbox_blocking(&self, pod: &Pod) -> Result<SandboxInfo, String> {
        let uid = super::pod_uid(pod);
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
        // Told by the file systems themselves, not by reading the mount
        // table (it grows with every pod and is read for every pod start).
        let fresh = !(namespaces.iter().all(|f| is_pinned_namespace(&dir.join(f))) && is_own_tmpfs(&dir.join("shm")));
        if fresh {
            // Counted as kubelet counts pod starts: each sandbox it sets out to create.
            peapod_metrics::metrics().started_pods.inc();
            let made = self.create_sandbox(&uid, &dir, &hostname, namespaces);
            if made.is_err() {
                peapod_metrics::metrics().started_pods_errors.inc();
            }
            made?;
        }
        let cg = cgroups::PodCgroup::for_pod(&pod.spec.clone().unwrap_or_default(), self.config.pod_pids_limit);
        cgroups::apply(&uid, &cg)?;
        let pod_ips = if host_network(pod) {
            vec![self.config.node_ip.clone()]
        } else {
            self.ensure_network(pod, fresh)?
        };
        self.write_etc_files(pod, &hostname, &pod_ips)?;
        Ok(SandboxInfo { pod_ips })
    }

    /// Pins new namespaces and mounts the pod's `/dev/shm`.
    fn create_sandbox(
        &self,
        uid: &str,
        dir: &std::path::Path,
        hostname: &str,
        namespaces: &[&str],
    ) -> Result<(), String> {
        self.teardown_sandbox(uid)?;
        let out = self
            .shim
            .command(["sandbox", "--dir"])
            .arg(dir)
            .args(["--hostname", hostname, "--namespaces", &namespaces.join(",")])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io_err("run sandbox helper", &self.shim.path, e))?;
        if !out.status.success() {
            let _ = self.teardown_sandbox(uid);
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
        .map_err(|e| io_err("mount tmpfs on", &shm, e))
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
        let uid = super::pod_uid(pod);
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
            self.cni
                .del(&at)
                .map_err(|e| format!("CNI DEL of the previous attachment: {e}"))?;
            let _ = std::fs::remove_file(&file);
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

    /// CNI DEL of the pod's attachment, if any; idempotent. The record is
    /// removed only once DEL succeeded, so a failed DEL is tried again
    /// rather than leaking the address and the port mappings.
    fn teardown_network(&self, uid: &str) -> Result<(), String> {
        let file = self.network_file(uid);
        let Some(at) = cni::read_attachment(&file) else {
            return Ok(());
        };
        let t = std::time::Instant::now();
        match self.cni.del(&at) {
            Ok(()) => {
                let _ = std::fs::remove_file(&file);
                tracing::info!("pod {uid}: CNI DEL in {} ms", t.elapsed().as_millis());
                Ok(())
            }
            Err(e) => {
                tracing::warn!("pod {uid}: CNI DEL: {e}");
                Err(format!("CNI DEL: {e}"))
            }
        }
    }

    /// Releases the network and namespaces of a pod whose containers are done.
    pub async fn teardown(self: &Arc<Self>, uid: &str) -> Result<(), String> {
        let guard = self.locks.lock(format!("pod/{uid}")).await;
        let me = self.clone();
        let uid = uid.to_string();
        let timer = peapod_metrics::Timer::start();
        let res = blocking(move || {
            let _guard = guard;
            me.teardown_sandbox(&uid)
        })
        .await
        .and_then(|r| r);
        super::record("stop_podsandbox", timer, &res);
        res
    }

    fn write_etc_files(&self, pod: &Pod, hostname: &str, pod_ips: &[String]) -> Result<(), String> {
        let uid = super::pod_uid(pod);
        let etc = self.paths.pod_dir(&uid).join("etc");
        paths::ensure_dir(&etc).map_err(|e| io_err("create", &etc, e))?;
        let own = pod_ips.first().map_or("127.0.1.1", String::as_str);
        let cluster = self.config.cluster_dns.as_ref();
        let hosts = super::etc::hosts_file(pod, own, hostname, cluster.map(|c| c.domain.as_str()));
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = super::etc::resolv_conf(pod, &host_resolv, cluster);
        for (name, text) in [
            ("hosts", hosts.as_str()),
            ("hostname", &format!("{hostname}\n")),
            ("resolv.conf", &resolv),
        ] {
            let p = etc.join(name);
            if std::fs::read_to_string(&p).ok().as_deref() != Some(text) {
                std::fs::write(&p, text).map_err(|e| io_err("write", &p, e))?;
            }
            // Bound into every container, whose user may not be root.
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).map_err(|e| io_err("chmod", &p, e))?;
        }
        Ok(())
    }

    /// Removes the pod's network and namespaces; idempotent. Blocks on the
    /// CNI plugins. A failed DEL leaves everything in place for the next try.
    pub(crate) fn teardown_sandbox(&self, uid: &str) -> Result<(), String> {
        self.teardown_network(uid)?;
        let dir = self.paths.sandbox_dir(uid);
        for ns in ["net", "ipc", "uts"] {
            let f = dir.join(ns);
            let _ = umount2(&f, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&f);
        }
        let _ = umount2(&dir.join("shm"), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(dir.join("shm"));
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}
