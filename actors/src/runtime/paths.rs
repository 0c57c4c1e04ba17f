//! Where a node keeps things. State that must survive a daemon restart lives
//! under the root dir; sockets, namespaces and libcontainer state under the run dir.

use std::path::{Path, PathBuf};

/// The node's directory layout, from `--root-dir` and `--run-dir`.
#[derive(Debug, Clone)]
pub struct NodePaths {
    /// Persistent state (default `/var/lib/peapod`).
    pub root: PathBuf,
    /// Runtime state (default `/run/peapod`).
    pub run: PathBuf,
}

impl NodePaths {
    /// Layout under the two directories.
    pub fn new(root: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            run: run.into(),
        }
    }
    /// The embedded store's database file.
    pub fn store_db(&self) -> PathBuf {
        self.root.join("store.db")
    }
    /// The keys Secrets are sealed with in the store (see `peapod_core::store::Keys`).
    pub fn secret_keys(&self) -> PathBuf {
        self.root.join("secret-encryption.keys")
    }
    /// The local image store.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// Localhost seccomp profiles (`localhostProfile` is relative to it), as
    /// kubelet's `/var/lib/kubelet/seccomp`.
    pub fn seccomp(&self) -> PathBuf {
        self.root.join("seccomp")
    }
    /// The API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.run.join("peapod.sock")
    }
    /// The parent of every pod's persistent directory: a bind mount of
    /// itself, so a shim can drop every other pod's mounts in one call.
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
    /// A pod's persistent directory (container rootfs layers, exit records).
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods().join(uid)
    }
    /// One start ("attempt") of one container of a pod.
    pub fn attempt_dir(&self, uid: &str, container: &str, attempt: u32) -> PathBuf {
        self.pod_dir(uid)
            .join("containers")
            .join(container)
            .join(attempt.to_string())
    }
    /// All attempts of one container.
    pub fn container_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join("containers").join(container)
    }
    /// Where the pod's shared namespace files are pinned.
    pub fn sandbox_dir(&self, uid: &str) -> PathBuf {
        self.run.join("pods").join(uid)
    }
    /// The parent of every sandbox dir: a private bind mount.
    pub fn sandboxes(&self) -> PathBuf {
        self.run.join("pods")
    }
    /// A pod's log directory, named as kubelet names `/var/log/pods` entries.
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.root.join("logs").join(format!("{namespace}_{name}_{uid}"))
    }
    /// The log file of one start of one container.
    pub fn log_file(&self, namespace: &str, name: &str, uid: &str, container: &str, attempt: u32) -> PathBuf {
        self.pod_log_dir(namespace, name, uid)
            .join(container)
            .join(format!("{attempt}.log"))
    }
    /// libcontainer's state root.
    pub fn container_state_root(&self) -> PathBuf {
        self.run.join("containers")
    }
    /// Shim sockets; names are hashed to stay under the 108-byte socket path limit.
    pub fn shim_socket(&self, container_id: &str) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(container_id.as_bytes());
        self.run
            .join("shims")
            .join(format!("{}.sock", &hex::encode(digest)[..16]))
    }
}

/// The libcontainer id of one start of one container.
pub fn container_id(pod_uid: &str, container: &str, attempt: u32) -> String {
    let short: String = pod_uid.chars().filter(|c| *c != '-').take(12).collect();
    format!("{short}-{container}-{attempt}")
}

/// Creates `dir` and its parents.
pub(crate) fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
