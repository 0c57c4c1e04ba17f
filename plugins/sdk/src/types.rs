//! The JSON schema of every request and reply. Field names are camelCase on
//! the wire; unknown fields are ignored and missing optional fields default,
//! so a plugin built against an older minor version keeps working.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Free-form key/value pairs (CSI's `volume_context` and `parameters`).
pub type Attributes = BTreeMap<String, String>;

/// The pod a volume is published for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// An error a plugin returns: a `STATUS_*` code and a message for the pod's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginError {
    /// One of the `STATUS_*` codes (not `STATUS_OK`).
    #[serde(default = "internal_code")]
    pub code: i32,
    /// What went wrong, for a human.
    pub message: String,
}

fn internal_code() -> i32 {
    crate::STATUS_INTERNAL
}

impl PluginError {
    /// An error with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// `STATUS_INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(crate::STATUS_INVALID_ARGUMENT, message)
    }
    /// `STATUS_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(crate::STATUS_NOT_FOUND, message)
    }
    /// `STATUS_FAILED_PRECONDITION`.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(crate::STATUS_FAILED_PRECONDITION, message)
    }
    /// `STATUS_INTERNAL`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(crate::STATUS_INTERNAL, message)
    }
    /// `STATUS_UNIMPLEMENTED` for `operation`.
    pub fn unimplemented(operation: &str) -> Self {
        Self::new(crate::STATUS_UNIMPLEMENTED, format!("{operation} is not implemented"))
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// `init`: once after loading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InitRequest {
    /// The node's name.
    pub node_id: String,
    /// A directory the plugin may keep state in (survives daemon restarts).
    pub state_dir: String,
    /// Operator configuration for this plugin from the daemon's config, if any.
    pub config: serde_json::Value,
}

/// Reply to `init`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InitResponse {}

/// `provision`: create a volume of at least `capacityBytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProvisionRequest {
    /// A name unique per volume (the PV name); provisioning the same name twice returns the same volume.
    pub name: String,
    pub capacity_bytes: i64,
    /// `ReadWriteOnce`, `ReadOnlyMany`, `ReadWriteMany`, `ReadWriteOncePod`.
    pub access_modes: Vec<String>,
    /// StorageClass parameters.
    pub parameters: Attributes,
}

/// Reply to `provision`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProvisionResponse {
    pub volume_id: String,
    pub capacity_bytes: i64,
    /// Passed back on stage/publish/delete.
    pub volume_context: Attributes,
    /// The volume exists only on the node that provisioned it (a local
    /// disk): its PersistentVolume gets node affinity to that node.
    pub local_to_node: bool,
}

/// `delete`: remove a provisioned volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeleteRequest {
    pub volume_id: String,
    /// What `provision` returned as `volumeContext` (the PV's `volumeAttributes`).
    pub volume_context: Attributes,
}

/// Reply to `delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeleteResponse {}

/// `stage`: once per node, before any publish (with `CAP_STAGE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageRequest {
    pub volume_id: String,
    /// A directory owned by this volume on this node.
    pub staging_path: String,
    pub access_modes: Vec<String>,
    pub fs_type: String,
    pub read_only: bool,
    pub volume_context: Attributes,
    /// The PersistentVolume's `mountOptions`.
    pub mount_options: Vec<String>,
}

/// Reply to `stage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageResponse {}

/// `unstage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnstageRequest {
    pub volume_id: String,
    pub staging_path: String,
}

/// Reply to `unstage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnstageResponse {}

/// `publish`: make the volume appear at `targetPath` (an existing empty
/// directory the daemon created) for one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PublishRequest {
    pub volume_id: String,
    pub target_path: String,
    /// Set when the plugin stages.
    pub staging_path: String,
    pub read_only: bool,
    /// The volume's source fields (e.g. `path` and `type` for hostPath,
    /// `medium` and `sizeLimit` for emptyDir), or what provision returned.
    pub volume_context: Attributes,
    pub pod: PodRef,
    /// The PersistentVolume's `mountOptions` (for plugins that do not stage).
    pub mount_options: Vec<String>,
}

/// Reply to `publish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PublishResponse {
    /// A host path the daemon binds into containers instead of `targetPath`,
    /// for plugins that only check and hand over an existing path (hostPath:
    /// directories, files, sockets, devices), so nothing is mounted on the host.
    pub host_path: Option<String>,
}

/// `unpublish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnpublishRequest {
    pub volume_id: String,
    pub target_path: String,
    pub volume_context: Attributes,
    pub pod: PodRef,
}

/// Reply to `unpublish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnpublishResponse {}

/// `get_volume_stats` of a published volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeStatsRequest {
    pub volume_id: String,
    pub volume_path: String,
    pub volume_context: Attributes,
}

/// Usage of a volume, as CSI's `NodeGetVolumeStats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeStats {
    pub capacity_bytes: i64,
    pub used_bytes: i64,
    pub available_bytes: i64,
    pub inodes: i64,
    pub inodes_used: i64,
    pub inodes_free: i64,
}

/// `expand` to at least `capacityBytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExpandRequest {
    pub volume_id: String,
    pub capacity_bytes: i64,
    /// Empty: grow the volume itself (its image, its RBD image). Set: the
    /// volume is staged there on this node; grow the filesystem on it too.
    pub volume_path: String,
    /// The volume's context, as on stage and publish.
    pub volume_context: Attributes,
}

/// Reply to `expand`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExpandResponse {
    pub capacity_bytes: i64,
}
