//! The one table of kinds. Routing, store keys, API discovery and the CLI's
//! resource names all read it; adding a kind is one entry here plus its
//! validation (and, for kinds that run something, an actor).

use crate::field::FieldErrors;
use crate::printers::{self, Printer};
use crate::validation;
use k8s_openapi::api::core::v1 as core_v1;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Admission of a new object: fill defaults, then validate.
pub type AdmitCreate = fn(&mut Value) -> Result<(), FieldErrors>;
/// Admission of an update from `old` to `new`: fill defaults in `new`, then validate the change.
pub type AdmitUpdate = fn(&Value, &mut Value) -> Result<(), FieldErrors>;
/// Admission of a deletion: may refuse it (the message of a 403) or change
/// the object as it is marked deleted (`marked` holds its deletionTimestamp).
pub type AdmitDelete = fn(&Value, &mut Value) -> Result<(), String>;
/// Decodes a manifest document as the kind's Kubernetes type, so that a
/// field of the wrong type is reported with its YAML line.
pub type TypedCheck = fn(&str) -> Result<(), String>;

/// The parts of an object served under its own URL (`pods/x/log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: read, and replaced alone by the actors that own it.
    Status,
    /// `log`: a pod's container log (`PodLogOptions`).
    Log,
    /// `scale`: `spec.replicas` read and set through an autoscaling/v1 `Scale`.
    Scale,
    /// `exec`: a command in a pod's container over an upgraded connection (`PodExecOptions`).
    Exec,
    /// `portforward`: TCP connections to the pod's ports (`PodPortForwardOptions`).
    PortForward,
    /// `attach`: a container's own stdio over an upgraded connection (`PodAttachOptions`).
    Attach,
}

impl Subresource {
    /// The name in URLs and discovery.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Log => "log",
            Subresource::Scale => "scale",
            Subresource::Exec => "exec",
            Subresource::PortForward => "portforward",
            Subresource::Attach => "attach",
        }
    }

    /// The group and version of the subresource's kind, when not the parent's.
    pub fn group_version(self) -> Option<(&'static str, &'static str)> {
        match self {
            Subresource::Scale => Some(("autoscaling", "v1")),
            Subresource::Status
            | Subresource::Log
            | Subresource::Exec
            | Subresource::PortForward
            | Subresource::Attach => None,
        }
    }

    /// What discovery lists: the subresource's kind and verbs.
    pub fn discovery(self, kind: &Kind) -> (&'static str, &'static [&'static str]) {
        match self {
            Subresource::Status => (kind.kind, &["get", "update"]),
            Subresource::Log => ("Pod", &["get"]),
            Subresource::Scale => ("Scale", &["get", "patch", "update"]),
            Subresource::Exec => ("PodExecOptions", &["create", "get"]),
            Subresource::PortForward => ("PodPortForwardOptions", &["create", "get"]),
            Subresource::Attach => ("PodAttachOptions", &["create", "get"]),
        }
    }
}

/// The verbs every kind serves.
pub const VERBS: &[&str] = &["create", "delete", "get", "list", "update", "watch"];

fn typed<T: DeserializeOwned>(doc: &str) -> Result<(), String> {
    serde_saphyr::from_str_with_options::<T>(doc, crate::manifest::yaml_options())
        .map(drop)
        .map_err(|e| e.to_string())
}

fn delete_anything(_: &Value, _: &mut Value) -> Result<(), String> {
    Ok(())
}

/// Everything peapod knows about one kind.
#[derive(Debug)]
pub struct Kind {
    /// API group, "" for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// `kind` as it appears in manifests.
    pub kind: &'static str,
    /// Resource name in URLs and store keys.
    pub plural: &'static str,
    /// Lowercase singular name (`peapod get pod`).
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl's short names (`po`, `ns`).
    pub short_names: &'static [&'static str],
    /// Deletion first marks the object (`deletionTimestamp`); an actor finishes it.
    pub graceful_deletion: bool,
    /// Whether the kind has a `status` that only the status subresource may change.
    pub has_status: bool,
    /// Defaulting and validation of a new object.
    pub admit_create: AdmitCreate,
    /// Defaulting and validation of an update.
    pub admit_update: AdmitUpdate,
    /// What happens to an object as it is deleted, or why it may not be.
    pub admit_delete: AdmitDelete,
    /// The manifest check against the kind's Kubernetes type.
    pub typed_check: TypedCheck,
    /// Served subresources.
    pub subresources: &'static [Subresource],
    /// Discovery categories (`all`: shown by `get all`).
    pub categories: &'static [&'static str],
    /// Table columns.
    pub printer: &'static Printer,
}

impl Kind {
    /// `apiVersion` as written in manifests (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key of this kind's objects in the store (`pods`, `apps/deployments`).
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }

    /// URL prefix of this kind's group and version (`/api/v1`, `/apis/apps/v1`).
    pub fn api_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The collection URL for `namespace` (ignored for cluster-scoped kinds).
    pub fn collection_path(&self, namespace: &str) -> String {
        if self.namespaced {
            format!("{}/namespaces/{}/{}", self.api_prefix(), namespace, self.plural)
        } else {
            format!("{}/{}", self.api_prefix(), self.plural)
        }
    }

    /// The collection URL across every namespace (`/api/v1/pods`).
    pub fn all_path(&self) -> String {
        format!("{}/{}", self.api_prefix(), self.plural)
    }

    /// The URL of one object.
    pub fn object_path(&self, namespace: &str, name: &str) -> String {
        format!("{}/{}", self.collection_path(namespace), name)
    }

    /// Whether `word` names this kind as kubectl accepts it (kind, plural, singular, short name; any case).
    pub fn matches_name(&self, word: &str) -> bool {
        let w = word.to_ascii_lowercase();
        let (w, group) = match w.split_once('.') {
            Some((n, g)) => (n.to_string(), Some(g.to_string())),
            None => (w, None),
        };
        if let Some(g) = group {
            if g != self.group {
                return false;
            }
        }
        w == self.plural
            || w == self.singular
            || w == self.kind.to_ascii_lowercase()
            || self.short_names.contains(&w.as_str())
    }
}

/// Every kind this build serves.
pub static KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        graceful_deletion: true,
        has_status: true,
        admit_create: validation::namespace::admit_create,
        admit_update: validation::namespace::admit_update,
        admit_delete: validation::namespace::admit_delete,
        typed_check: typed::<core_v1::Namespace>,
        subresources: &[Subresource::Status],
        categories: &[],
        printer: &printers::NAMESPACE,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        graceful_deletion: true,
        has_status: true,
        admit_create: validation::pod::admit_create,
        admit_update: validation::pod::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::Pod>,
        subresources: &[
            Subresource::Status,
            Subresource::Log,
            Subresource::Exec,
            Subresource::PortForward,
            Subresource::Attach,
        ],
        categories: &["all"],
        printer: &printers::POD,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::event::admit_create,
        admit_update: validation::event::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::Event>,
        subresources: &[],
        categories: &[],
        printer: &printers::EVENT,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::node::admit_create,
        admit_update: validation::node::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::Node>,
        subresources: &[Subresource::Status],
        categories: &[],
        printer: &printers::NODE,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::node::admit_lease_create,
        admit_update: validation::node::admit_lease_update,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::coordination::v1::Lease>,
        subresources: &[],
        categories: &[],
        printer: &printers::LEASE,
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::workloads::admit_replicaset,
        admit_update: validation::workloads::update_replicaset,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::apps::v1::ReplicaSet>,
        subresources: &[Subresource::Status, Subresource::Scale],
        categories: &["all"],
        printer: &printers::REPLICASET,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "ReplicationController",
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        namespaced: true,
        short_names: &["rc"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::workloads::admit_replicationcontroller,
        admit_update: validation::workloads::update_replicationcontroller,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::ReplicationController>,
        subresources: &[Subresource::Status, Subresource::Scale],
        categories: &["all"],
        printer: &printers::REPLICASET,
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::deployment::admit_create,
        admit_update: validation::deployment::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::apps::v1::Deployment>,
        subresources: &[Subresource::Status, Subresource::Scale],
        categories: &["all"],
        printer: &printers::DEPLOYMENT,
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::daemonset::admit_create,
        admit_update: validation::daemonset::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::apps::v1::DaemonSet>,
        subresources: &[Subresource::Status],
        categories: &["all"],
        printer: &printers::DAEMONSET,
    },
    Kind {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        singular: "job",
        namespaced: true,
        short_names: &[],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::job::admit_create,
        admit_update: validation::job::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::batch::v1::Job>,
        subresources: &[Subresource::Status],
        categories: &["all"],
        printer: &printers::JOB,
    },
    Kind {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        plural: "cronjobs",
        singular: "cronjob",
        namespaced: true,
        short_names: &["cj"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::cronjob::admit_create,
        admit_update: validation::cronjob::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::batch::v1::CronJob>,
        subresources: &[Subresource::Status],
        categories: &["all"],
        printer: &printers::CRONJOB,
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        namespaced: true,
        short_names: &["sts"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::statefulset::admit_create,
        admit_update: validation::statefulset::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::apps::v1::StatefulSet>,
        subresources: &[Subresource::Status, Subresource::Scale],
        categories: &["all"],
        printer: &printers::STATEFULSET,
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "ControllerRevision",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        namespaced: true,
        short_names: &[],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::statefulset::admit_revision,
        admit_update: validation::statefulset::update_revision,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::apps::v1::ControllerRevision>,
        subresources: &[],
        categories: &[],
        printer: &printers::CONTROLLERREVISION,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        namespaced: true,
        short_names: &["pvc"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::storage::admit_claim,
        admit_update: validation::storage::update_claim,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::PersistentVolumeClaim>,
        subresources: &[Subresource::Status],
        categories: &[],
        printer: &printers::CLAIM,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "PersistentVolume",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        namespaced: false,
        short_names: &["pv"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::storage::admit_volume,
        admit_update: validation::storage::update_volume,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::PersistentVolume>,
        subresources: &[Subresource::Status],
        categories: &[],
        printer: &printers::VOLUME,
    },
    Kind {
        group: "storage.k8s.io",
        version: "v1",
        kind: "StorageClass",
        plural: "storageclasses",
        singular: "storageclass",
        namespaced: false,
        short_names: &["sc"],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::storage::admit_class,
        admit_update: validation::storage::update_class,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::storage::v1::StorageClass>,
        subresources: &[],
        categories: &[],
        printer: &printers::STORAGECLASS,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::service::admit_create,
        admit_update: validation::service::admit_update,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::Service>,
        subresources: &[Subresource::Status],
        categories: &["all"],
        printer: &printers::SERVICE,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "ResourceQuota",
        plural: "resourcequotas",
        singular: "resourcequota",
        namespaced: true,
        short_names: &["quota"],
        graceful_deletion: false,
        has_status: true,
        admit_create: validation::quota::admit_quota,
        admit_update: validation::quota::update_quota,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::ResourceQuota>,
        subresources: &[Subresource::Status],
        categories: &[],
        printer: &printers::RESOURCEQUOTA,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "LimitRange",
        plural: "limitranges",
        singular: "limitrange",
        namespaced: true,
        short_names: &["limits"],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::quota::admit_limit_range,
        admit_update: validation::quota::update_limit_range,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::LimitRange>,
        subresources: &[],
        categories: &[],
        printer: &printers::LIMITRANGE,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::config::admit_config_map,
        admit_update: validation::config::update_config_map,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::ConfigMap>,
        subresources: &[],
        categories: &[],
        printer: &printers::CONFIGMAP,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::config::admit_secret,
        admit_update: validation::config::update_secret,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::Secret>,
        subresources: &[],
        categories: &[],
        printer: &printers::SECRET,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::service::admit_endpoints,
        admit_update: validation::service::update_endpoints,
        admit_delete: delete_anything,
        typed_check: typed::<core_v1::Endpoints>,
        subresources: &[],
        categories: &[],
        printer: &printers::ENDPOINTS,
    },
    Kind {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::service::admit_slice,
        admit_update: validation::service::update_slice,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::discovery::v1::EndpointSlice>,
        subresources: &[],
        categories: &[],
        printer: &printers::ENDPOINTSLICE,
    },
    Kind {
        group: "networking.k8s.io",
        version: "v1",
        kind: "IPAddress",
        plural: "ipaddresses",
        singular: "ipaddress",
        namespaced: false,
        short_names: &["ip"],
        graceful_deletion: false,
        has_status: false,
        admit_create: validation::service::admit_ipaddress,
        admit_update: validation::service::update_ipaddress,
        admit_delete: delete_anything,
        typed_check: typed::<k8s_openapi::api::networking::v1::IPAddress>,
        subresources: &[],
        categories: &[],
        printer: &printers::IPADDRESS,
    },
];

/// The kind served at `group`/`version`/`plural`.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind of a manifest's `apiVersion` and `kind`.
pub fn by_type(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.api_version() == api_version && k.kind == kind)
}

/// The kind a user named on the command line (`pods`, `po`, `pod`, `Pod`).
pub fn by_name(word: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.matches_name(word))
}

/// The API groups served, each with its versions, in table order (the core group is `""`).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for k in KINDS {
        match out.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, versions)) if !versions.contains(&k.version) => versions.push(k.version),
            Some(_) => {}
            None => out.push((k.group, vec![k.version])),
        }
    }
    out
}

/// The kinds served at one group and version.
pub fn in_group_version(group: &str, version: &str) -> Vec<&'static Kind> {
    KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect()
}

/// The kind stored under a store resource key.
pub fn by_store_key(resource: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.resource() == resource)
}

/// The Pod kind, which the node runs.
pub fn pod() -> &'static Kind {
    by_store_key("pods").expect("pods are in the kind table")
}

/// The Service kind.
pub fn service() -> &'static Kind {
    by_store_key("services").expect("services are in the kind table")
}

/// The Endpoints kind (v1), which older clients read.
pub fn endpoints() -> &'static Kind {
    by_store_key("endpoints").expect("endpoints are in the kind table")
}

/// The EndpointSlice kind (discovery.k8s.io/v1).
pub fn endpointslice() -> &'static Kind {
    by_store_key("discovery.k8s.io/endpointslices").expect("endpointslices are in the kind table")
}

/// The IPAddress kind (networking.k8s.io/v1): one per cluster IP held.
pub fn ipaddress() -> &'static Kind {
    by_store_key("networking.k8s.io/ipaddresses").expect("ipaddresses are in the kind table")
}

/// The Namespace kind.
pub fn namespace() -> &'static Kind {
    by_store_key("namespaces").expect("namespaces are in the kind table")
}

/// The Node kind.
pub fn node() -> &'static Kind {
    by_store_key("nodes").expect("nodes are in the kind table")
}

/// The Lease kind (coordination.k8s.io), the node's heartbeat.
pub fn lease() -> &'static Kind {
    by_store_key("coordination.k8s.io/leases").expect("leases are in the kind table")
}

/// The ReplicaSet kind (apps/v1).
pub fn replicaset() -> &'static Kind {
    by_store_key("apps/replicasets").expect("replicasets are in the kind table")
}

/// The ReplicationController kind (v1).
pub fn replicationcontroller() -> &'static Kind {
    by_store_key("replicationcontrollers").expect("replicationcontrollers are in the kind table")
}

/// The Deployment kind (apps/v1).
pub fn deployment() -> &'static Kind {
    by_store_key("apps/deployments").expect("deployments are in the kind table")
}

/// The DaemonSet kind (apps/v1).
pub fn daemonset() -> &'static Kind {
    by_store_key("apps/daemonsets").expect("daemonsets are in the kind table")
}

/// The Job kind (batch/v1).
pub fn job() -> &'static Kind {
    by_store_key("batch/jobs").expect("jobs are in the kind table")
}

/// The CronJob kind (batch/v1).
pub fn cronjob() -> &'static Kind {
    by_store_key("batch/cronjobs").expect("cronjobs are in the kind table")
}

/// The StatefulSet kind (apps/v1).
pub fn statefulset() -> &'static Kind {
    by_store_key("apps/statefulsets").expect("statefulsets are in the kind table")
}

/// The ControllerRevision kind (apps/v1): a StatefulSet's or DaemonSet's template history.
pub fn controllerrevision() -> &'static Kind {
    by_store_key("apps/controllerrevisions").expect("controllerrevisions are in the kind table")
}

/// The PersistentVolumeClaim kind (v1).
pub fn claim() -> &'static Kind {
    by_store_key("persistentvolumeclaims").expect("persistentvolumeclaims are in the kind table")
}

/// The PersistentVolume kind (v1, cluster-scoped).
pub fn volume() -> &'static Kind {
    by_store_key("persistentvolumes").expect("persistentvolumes are in the kind table")
}

/// The StorageClass kind (storage.k8s.io/v1, cluster-scoped).
pub fn storageclass() -> &'static Kind {
    by_store_key("storage.k8s.io/storageclasses").expect("storageclasses are in the kind table")
}

/// The Event kind.
pub fn event() -> &'static Kind {
    by_store_key("events").expect("events are in the kind table")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_like_kubectl() {
        for w in ["po", "pod", "pods", "Pod", "pods."] {
            let k = by_name(w.trim_end_matches('.'));
            assert_eq!(k.map(|k| k.kind), Some("Pod"), "{w}");
        }
        assert_eq!(by_name("ns").map(|k| k.kind), Some("Namespace"));
        assert_eq!(by_name("deploy").map(|k| k.kind), Some("Deployment"));
        assert_eq!(by_name("sts").map(|k| k.resource()), Some("apps/statefulsets".into()));
        assert_eq!(by_name("pvc").map(|k| k.api_version()), Some("v1".into()));
        assert_eq!(by_name("pv").map(|k| k.namespaced), Some(false));
        assert_eq!(
            by_name("sc").map(|k| k.resource()),
            Some("storage.k8s.io/storageclasses".into())
        );
        assert_eq!(by_name("rs").map(|k| k.resource()), Some("apps/replicasets".into()));
        assert_eq!(by_name("rc").map(|k| k.api_version()), Some("v1".into()));
        assert_eq!(pod().collection_path("default"), "/api/v1/namespaces/default/pods");
        assert_eq!(namespace().object_path("", "x"), "/api/v1/namespaces/x");
        assert_eq!(by_type("v1", "Pod").map(|k| k.plural), Some("pods"));
        assert!(by_type("apps/v1", "Pod").is_none());
    }

    #[test]
    fn discovery_comes_from_the_table() {
        let core = groups().into_iter().find(|(g, _)| g.is_empty()).unwrap();
        assert_eq!(core.1, ["v1"]);
        let served: Vec<&str> = in_group_version("", "v1").iter().map(|k| k.plural).collect();
        assert_eq!(
            served,
            KINDS
                .iter()
                .filter(|k| k.group.is_empty())
                .map(|k| k.plural)
                .collect::<Vec<_>>()
        );
        assert!(in_group_version("policy", "v1").is_empty());
        assert_eq!(
            pod().subresources,
            [
                Subresource::Status,
                Subresource::Log,
                Subresource::Exec,
                Subresource::PortForward,
                Subresource::Attach
            ]
        );
        // Each kind's typed check decodes its own Kubernetes type.
        assert!((pod().typed_check)("apiVersion: v1\nkind: Pod\nspec:\n  containers: 3\n").is_err());
        assert!((namespace().typed_check)("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n").is_ok());
    }

    #[test]
    fn the_nodes_namespaces_may_not_be_deleted() {
        let mut marked = serde_json::json!({"metadata": {"name": "default"}});
        let cur = marked.clone();
        let err = (namespace().admit_delete)(&cur, &mut marked).unwrap_err();
        assert_eq!(
            err,
            "namespaces \"default\" is forbidden: this namespace may not be deleted"
        );
        let cur = serde_json::json!({"metadata": {"name": "team"}});
        let mut marked = cur.clone();
        (namespace().admit_delete)(&cur, &mut marked).unwrap();
        assert_eq!(marked["status"]["phase"], "Terminating");
    }
}
