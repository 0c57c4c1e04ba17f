//! What the daemon and a container's shim say to each other, and what the
//! shim leaves on disk. Both sides are this crate, but they are different
//! processes of possibly different builds (a shim outlives a daemon upgrade),
//! so everything here is plain JSON with optional fields.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything a shim needs to run one container; written by the daemon next to the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// libcontainer container id.
    pub id: String,
    /// OCI bundle directory (holds `config.json`).
    pub bundle: PathBuf,
    /// libcontainer state root.
    pub state_root: PathBuf,
    /// The log file of this start: the container's stdout and stderr, as
    /// CRI records (see `runtime::logfile`).
    pub log_path: PathBuf,
    /// Rotate the log before it passes this many bytes (0: never).
    #[serde(default)]
    pub log_max_size: u64,
    /// Log files kept, the live one included.
    #[serde(default)]
    pub log_max_files: u32,
    /// Unix socket the shim serves.
    pub socket: PathBuf,
    /// Where the shim records the exit, before it deletes the container.
    pub exit_file: PathBuf,
    /// The container's memory cgroup directory, to tell an OOM kill from another SIGKILL.
    pub memory_cgroup: Option<PathBuf>,
    /// The image's StopSignal, kept here so a daemon that re-adopts the container still uses it.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// The image as the pod spec named it for this start, so a re-adopted
    /// container is compared with the spec by what it really runs.
    #[serde(default)]
    pub image: Option<String>,
    /// The image's digest reference (`imageID`), kept for the same reason.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Mount subtrees to leave out of the container's mount table except
    /// for this pod's part of them (see `shim::mounts`). Empty for a
    /// container whose mounts must propagate back to the host.
    #[serde(default)]
    pub mount_scope: Vec<KeptMounts>,
    /// Make the created container's `/dev` nodev, but for the device nodes
    /// the runtime put there (see `shim::mounts::seal_dev`). Off for privileged containers.
    #[serde(default)]
    pub seal_dev: bool,
    /// The container's stdin is a pipe the shim keeps open for `attach`
    /// (the container's `stdin: true`); otherwise /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// The first attach that closes stdin closes it for the container (`stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// The container's stdio is a terminal (`tty: true`): its master is the
    /// shim's, its output is logged as stdout, attach writes and resizes it.
    #[serde(default)]
    pub tty: bool,
}

/// A mount subtree of which a shim keeps only one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptMounts {
    /// A mount point holding every pod's mounts (`<root>/pods`, `<run>/pods`).
    pub tree: PathBuf,
    /// This pod's directory under it, kept with every mount below it.
    pub keep: PathBuf,
}

/// What the shim records in `started.json` once the container runs: from
/// then on the attempt counts as a start, whatever happens to the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedRecord {
    /// The container init's pid (host pid namespace).
    pub pid: i32,
    /// RFC 3339 start time.
    pub started_at: String,
}

/// The file descriptor on which `peapod shim run` receives the attempt's
/// lock (an exclusive flock it holds until it exits).
pub const LOCK_FD: i32 = 3;

/// How a container ended; persisted by the shim as `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// The killing signal, if any.
    pub signal: Option<i32>,
    /// Kubernetes' reason: `Completed`, `Error`, `OOMKilled`, `StartError`, `ContainerStatusUnknown`.
    pub reason: String,
    /// Detail for failures to start.
    pub message: Option<String>,
    /// RFC 3339 start time, when it started.
    pub started_at: Option<String>,
    /// RFC 3339 time of the exit.
    pub finished_at: String,
}

impl ExitRecord {
    /// Builds the record for a status from `waitpid`.
    pub fn from_wait(code: Option<i32>, signal: Option<i32>, oom: bool, started_at: Option<String>) -> Self {
        let exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
        let reason = if oom {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Self {
            exit_code,
            signal,
            reason: reason.into(),
            message: None,
            started_at,
            finished_at: now(),
        }
    }

    /// A record for a container that never ran (`build()` or `start()` failed).
    pub fn start_error(message: String) -> Self {
        Self {
            exit_code: 128,
            signal: None,
            reason: "StartError".into(),
            message: Some(message),
            started_at: None,
            finished_at: now(),
        }
    }

    /// A record for a container whose end nobody saw (its shim and exit file are gone).
    pub fn unknown(started_at: Option<String>) -> Self {
        Self {
            exit_code: 137,
            signal: None,
            reason: "ContainerStatusUnknown".into(),
            message: Some("The container could not be located when the pod was terminated".into()),
            started_at,
            finished_at: now(),
        }
    }
}

/// RFC 3339 now, second precision as Kubernetes' `metav1.Time`.
pub fn now() -> String {
    peapod_core::object::now_rfc3339()
}

/// One request line to a shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ShimRequest {
    /// Reply with the exit record once the container has exited.
    Wait,
    /// Send a signal to the container's init.
    Kill { signal: i32 },
    /// Reply with the container's pid and whether it runs.
    State,
    /// Attach: the reply ([`ShimReply::Attached`]) comes in one message with
    /// the descriptors it names (SCM_RIGHTS), then the connection carries
    /// the container's output from then on, each piece as
    /// `[stream (1 stdout, 2 stderr)][length, u32 big-endian][bytes]`, until
    /// the container ends (or the reader falls behind and is dropped).
    Attach,
}

/// One reply line from a shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum ShimReply {
    /// The container exited.
    Exited { exit: ExitRecord },
    /// A request succeeded.
    Ok { pid: i32 },
    /// A request failed.
    Error { message: String },
    /// Attached: with the write end of the container's stdin pipe (`stdin`)
    /// or a terminal master (`tty`, which is also its stdin), in that order.
    Attached { stdin: bool, tty: bool },
}

/// What the daemon reads from a shim's stdout once the container has started (or failed to).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum StartReport {
    /// Running with this init pid.
    Started { pid: i32, started_at: String },
    /// Never ran; the exit record is on disk too.
    Failed { message: String },
}

/// Now as a Kubernetes `Time` (k8s-openapi's clock-less timestamp type).
pub fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let micros = chrono::Utc::now().timestamp_micros();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_microsecond(micros).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}
