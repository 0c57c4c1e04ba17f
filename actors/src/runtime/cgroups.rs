//! The pod-level cgroup: the parent of a pod's container cgroups, limited as
//! kubelet limits it (memory and cpu quota when every container is limited,
//! cpu shares from requests, the node's pids limit). cgroup v1 here; the
//! unified (v2) layout where the host has it.

use k8s_openapi::api::core::v1::PodSpec;
use peapod_core::resources;
use std::path::{Path, PathBuf};

/// CFS period used for every quota, as kubelet does.
pub const CPU_PERIOD_US: u64 = 100_000;

const ROOT: &str = "/sys/fs/cgroup";

/// What the pod cgroup is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    pub memory_limit: Option<i64>,
    pub cpu_shares: u64,
    pub cpu_quota: Option<i64>,
    pub pids_limit: Option<i64>,
}

impl PodCgroup {
    /// The settings for a pod spec under a node pids limit.
    pub fn for_pod(spec: &PodSpec, pids_limit: Option<i64>) -> Self {
        let (cpu_limit, memory_limit) = resources::pod_limits(spec);
        Self {
            memory_limit,
            cpu_shares: resources::cpu_shares(resources::pod_requests(spec).cpu_millis),
            cpu_quota: cpu_limit.map(|m| resources::cpu_quota(m, CPU_PERIOD_US)),
            pids_limit,
        }
    }
}

/// Whether the host mounts the unified hierarchy at /sys/fs/cgroup.
pub fn is_unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// The cgroup path (relative to each hierarchy) of a pod.
pub fn pod_path(uid: &str) -> String {
    format!("/peapod/pod{uid}")
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value).map_err(|e| format!("write {value:?} to {}: {e}", dir.join(file).display()))
}

fn mkdir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create cgroup {}: {e}", dir.display()))
}

/// Caps the memory of all pods together (the `/peapod` parent cgroup) at
/// `bytes`, the node's allocatable memory, as kubelet caps `kubepods`: a
/// BestEffort pod has no limit of its own but cannot take the memory kept
/// back for the system and the daemon.
pub fn limit_all_pods(bytes: i64) -> Result<(), String> {
    let bytes = bytes.max(0).to_string();
    if is_unified() {
        let root = PathBuf::from(ROOT);
        let _ = write(&root, "cgroup.subtree_control", "+memory");
        let peapod = root.join("peapod");
        mkdir(&peapod)?;
        return write(&peapod, "memory.max", &bytes);
    }
    let peapod = PathBuf::from(ROOT).join("memory").join("peapod");
    mkdir(&peapod)?;
    write(&peapod, "memory.limit_in_bytes", &bytes)
}

/// Creates (or updates) the pod cgroup before its containers start.
pub fn apply(uid: &str, cg: &PodCgroup) -> Result<(), String> {
    let rel = pod_path(uid);
    if is_unified() {
        let root = PathBuf::from(ROOT);
        let peapod = root.join("peapod");
        mkdir(&peapod)?;
        for parent in [&root, &peapod] {
            for ctrl in ["+cpu", "+memory", "+pids"] {
                let _ = write(parent, "cgroup.subtree_control", ctrl);
            }
        }
        let dir = root.join(rel.trim_start_matches('/'));
        mkdir(&dir)?;
        write(
            &dir,
            "memory.max",
            &cg.memory_limit.map_or("max".into(), |m| m.to_string()),
        )?;
        // kubelet's shares-to-weight conversion.
        let weight = 1 + (cg.cpu_shares.saturating_sub(2) * 9999) / 262_142;
        write(&dir, "cpu.weight", &weight.to_string())?;
        let quota = cg.cpu_quota.map_or("max".into(), |q| q.to_string());
        write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
        write(&dir, "pids.max", &cg.pids_limit.map_or("max".into(), |p| p.to_string()))?;
        return Ok(());
    }
    let dir = |ctrl: &str| PathBuf::from(ROOT).join(ctrl).join(rel.trim_start_matches('/'));
    let mem = dir("memory");
    mkdir(&mem)?;
    write(
        &mem,
        "memory.limit_in_bytes",
        &cg.memory_limit.unwrap_or(-1).to_string(),
    )?;
    let cpu = dir("cpu");
    mkdir(&cpu)?;
    write(&cpu, "cpu.shares", &cg.cpu_shares.to_string())?;
    write(&cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
    write(&cpu, "cpu.cfs_quota_us", &cg.cpu_quota.unwrap_or(-1).to_string())?;
    let pids = dir("pids");
    mkdir(&pids)?;
    write(
        &pids,
        "pids.max",
        &cg.pids_limit.map_or("max".into(), |p| p.to_string()),
    )?;
    Ok(())
}

/// Removes the pod cgroup in every hierarchy; children first (each is empty
/// once its container was deleted). True when none is left.
pub fn remove(uid: &str) -> bool {
    let rel = pod_path(uid);
    let mut dirs = vec![PathBuf::from(ROOT).join(rel.trim_start_matches('/'))];
    for e in std::fs::read_dir(ROOT).into_iter().flatten().flatten() {
        dirs.push(e.path().join(rel.trim_start_matches('/')));
    }
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if child.path().is_dir() {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    dirs.iter().all(|d| !d.exists())
}

/// The directories of cgroup `rel` in every hierarchy that has it.
fn dirs_of(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let mut dirs = vec![PathBuf::from(ROOT).join(rel)];
    for e in std::fs::read_dir(ROOT).into_iter().flatten().flatten() {
        dirs.push(e.path().join(rel));
    }
    dirs.retain(|d| d.join("cgroup.procs").exists());
    dirs
}

/// SIGKILLs every process in the cgroups `dirs` (and below), until none is
/// left or 5 s passed. Used for what a dead shim left behind: nothing may
/// run on the node without its shim.
fn kill_all(dirs: &[PathBuf]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut found = false;
        for dir in dirs {
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        found = true;
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                }
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        stack.push(e.path());
                    }
                }
            }
        }
        if !found || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Kills whatever runs in one container's cgroup (`<pod cgroup>/<id>`).
pub fn kill_container(uid: &str, id: &str) {
    kill_all(&dirs_of(&format!("{}/{id}", pod_path(uid))));
}

/// Kills whatever runs anywhere in a pod's cgroup.
pub fn kill_pod(uid: &str) {
    kill_all(&dirs_of(&pod_path(uid)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroup_from_spec() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}]}))
        .unwrap();
        let cg = PodCgroup::for_pod(&spec, Some(100));
        assert_eq!(
            cg,
            PodCgroup {
                memory_limit: Some(64 << 20),
                cpu_shares: 256,
                cpu_quota: Some(50_000),
                pids_limit: Some(100),
            }
        );
    }
}
