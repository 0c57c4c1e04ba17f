//! The node's live pods and containers, as the actors last reported them:
//! what the scrape-time gauges and the cAdvisor series are computed from.
//! Actors update their own entries (a few field writes under a short lock,
//! never a file read); an entry leaves with its actor, and a pod's series
//! (probes, volume stats) with the pod.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// Where a container is, in kubelet's `container_state` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainerState {
    /// A shim is creating it.
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// It ended (and is not running again yet).
    Exited,
}

impl ContainerState {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
        }
    }
}

/// Usage of one claim's volume, from its plugin's stats call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeUsage {
    pub capacity: i64,
    pub available: i64,
    pub used: i64,
    pub inodes: i64,
    pub inodes_free: i64,
    pub inodes_used: i64,
}

/// One pod on the node.
#[derive(Debug, Clone, Default)]
pub struct PodEntry {
    /// The actor that keeps this entry ([`owner`]); only it removes it.
    pub owner: u64,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Its sandbox is up (`kubelet_running_pods` counts these).
    pub sandbox_running: bool,
    /// The pod shares the node's network: no network series of its own.
    pub host_network: bool,
    /// The pod cgroup, relative to each hierarchy (`/peapod/pod<uid>`).
    pub cgroup: String,
    /// The plugin of every volume the pod asks for.
    pub volumes_desired: Vec<String>,
    /// The plugin of every volume published for it.
    pub volumes_actual: Vec<String>,
    /// Usage of the claims it mounts, by claim name.
    pub claims: BTreeMap<String, VolumeUsage>,
    /// (probe_type, container) of its prober series (pod and namespace are
    /// this entry's); a handful per pod, scanned without allocating.
    probed: Vec<(String, String)>,
}

/// One container of a pod on the node.
#[derive(Debug, Clone, Default)]
pub struct ContainerEntry {
    /// The actor that keeps this entry ([`owner`]); only it removes it.
    pub owner: u64,
    pub pod_uid: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub image: String,
    /// The runtime's id of the current start.
    pub id: String,
    /// Its cgroup, relative to each hierarchy.
    pub cgroup: String,
    /// Its init process (host pid namespace), 0 when not running.
    pub pid: i32,
    /// Seconds since the epoch when the current start began.
    pub started_at: f64,
    pub state: ContainerState,
    /// restartCount.
    pub restarts: u32,
    /// OOM kills seen since the entry was made.
    pub oom_events: u64,
    /// The writable layer of the current start.
    pub upper_dir: Option<PathBuf>,
}

#[derive(Default)]
struct Inventory {
    pods: HashMap<String, PodEntry>,
    /// By (pod uid, container name).
    containers: HashMap<(String, String), ContainerEntry>,
}

static INVENTORY: LazyLock<Mutex<Inventory>> = LazyLock::new(Mutex::default);

fn lock() -> std::sync::MutexGuard<'static, Inventory> {
    INVENTORY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A copy of the inventory at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: Vec<PodEntry>,
    pub containers: Vec<ContainerEntry>,
}

/// Copies the inventory (sorted, so scrapes are stable).
pub fn snapshot() -> Snapshot {
    let inv = lock();
    let mut pods: Vec<PodEntry> = inv.pods.values().cloned().collect();
    let mut containers: Vec<ContainerEntry> = inv.containers.values().cloned().collect();
    drop(inv);
    pods.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
    containers.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.pod_uid, &a.container).cmp(&(&b.namespace, &b.pod, &b.pod_uid, &b.container))
    });
    Snapshot { pods, containers }
}

/// Changes pod `uid`'s entry (made on first use).
pub fn update_pod(uid: &str, f: impl FnOnce(&mut PodEntry)) {
    let mut inv = lock();
    let e = inv.pods.entry(uid.to_string()).or_insert_with(|| PodEntry {
        uid: uid.to_string(),
        ..PodEntry::default()
    });
    f(e);
}

/// Changes the entry of container `name` of pod `uid` (made on first use).
pub fn update_container(uid: &str, name: &str, f: impl FnOnce(&mut ContainerEntry)) {
    let mut inv = lock();
    let e = inv
        .containers
        .entry((uid.to_string(), name.to_string()))
        .or_insert_with(|| ContainerEntry {
            pod_uid: uid.to_string(),
            container: name.to_string(),
            ..ContainerEntry::default()
        });
    f(e);
}

/// Counts an OOM kill of container `name` of pod `uid`.
pub fn container_oom(uid: &str, name: &str) {
    update_container(uid, name, |c| c.oom_events = c.oom_events.saturating_add(1));
}

/// A token for an actor that keeps entries: an actor rebuilt after a crash
/// gets a new one, so the late end of the old incarnation cannot remove
/// what the new one reported.
pub fn owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Forgets container `name` of pod `uid` if `owner` keeps it (its actor ended).
pub fn remove_container(uid: &str, name: &str, owner: u64) {
    let mut inv = lock();
    let key = (uid.to_string(), name.to_string());
    if inv.containers.get(&key).is_some_and(|c| c.owner == owner) {
        inv.containers.remove(&key);
    }
}

/// Forgets pod `uid` and every series that names it, if `owner` keeps it.
pub fn remove_pod(uid: &str, owner: u64) {
    let mut inv = lock();
    if inv.pods.get(uid).is_none_or(|p| p.owner != owner) {
        return;
    }
    let pod = inv.pods.remove(uid);
    drop(inv);
    if let Some(p) = pod {
        for (probe_type, container) in &p.probed {
            crate::metrics().forget_probe(probe_type, container, &p.name, &p.namespace, uid);
        }
    }
}

/// Notes the labels of a prober series of pod `uid`, to drop it with the
/// pod; false when the pod is not (or no longer) in the inventory, whose
/// series must then not outlive the call.
pub(crate) fn probed(uid: &str, probe_type: &str, container: &str) -> bool {
    let mut inv = lock();
    let Some(p) = inv.pods.get_mut(uid) else {
        return false;
    };
    if !p.probed.iter().any(|(t, c)| t == probe_type && c == container) {
        p.probed.push((probe_type.to_string(), container.to_string()));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_probe_of_a_pod_gone_leaves_no_series() {
        crate::metrics().observe_probe("Readiness", "successful", "c", "gone", "ns", "u-gone", Some(0.01));
        let text = String::from_utf8(crate::render()).unwrap();
        assert!(!text.contains("u-gone"), "{text}");
        assert!(!snapshot().pods.iter().any(|p| p.uid == "u-gone"));
    }

    #[test]
    fn a_removed_pod_takes_its_probe_series_along() {
        let (pod_owner, container_owner) = (owner(), owner());
        update_pod("u-inv", |p| {
            p.owner = pod_owner;
            p.namespace = "ns".into();
            p.name = "web".into();
            p.sandbox_running = true;
        });
        update_container("u-inv", "app", |c| {
            c.owner = container_owner;
            c.namespace = "ns".into();
            c.pod = "web".into();
            c.state = ContainerState::Running;
        });
        crate::metrics().observe_probe("Liveness", "failed", "app", "web", "ns", "u-inv", Some(0.01));
        let text = String::from_utf8(crate::render()).unwrap();
        assert!(text.contains("pod_uid=\"u-inv\""), "{text}");
        assert!(snapshot().containers.iter().any(|c| c.pod_uid == "u-inv"));
        remove_container("u-inv", "app", pod_owner);
        assert!(
            snapshot().containers.iter().any(|c| c.pod_uid == "u-inv"),
            "only its owner removes it"
        );
        remove_container("u-inv", "app", container_owner);
        remove_pod("u-inv", pod_owner);
        let text = String::from_utf8(crate::render()).unwrap();
        assert!(!text.contains("u-inv"), "{text}");
        assert!(!snapshot().containers.iter().any(|c| c.pod_uid == "u-inv"));
    }
}
