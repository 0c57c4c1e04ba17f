//! How objects are shown in tables: each kind's columns and how a row is
//! made from an object, served as a `meta.k8s.io/v1` `Table` (what kubectl
//! asks for with `Accept: application/json;as=Table`) and printed by the CLI.

use serde_json::{json, Value};

/// One column of a kind's table.
#[derive(Debug)]
pub struct Column {
    /// The header (kubectl prints it upper-cased).
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `date`.
    pub kind: &'static str,
    /// 0: always shown; 1: with `-o wide` only.
    pub priority: u8,
    pub description: &'static str,
}

/// A kind's table: columns, and the cells of one object's row.
#[derive(Debug)]
pub struct Printer {
    pub columns: &'static [Column],
    pub row: fn(&Value) -> Vec<Value>,
}

const fn col(name: &'static str, kind: &'static str, priority: u8, description: &'static str) -> Column {
    Column {
        name,
        kind,
        priority,
        description,
    }
}

const NAME: Column = col("Name", "string", 0, "Name must be unique within a namespace.");
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// Name and age: what a kind without its own columns shows.
pub static DEFAULT: Printer = Printer {
    columns: &[NAME, AGE],
    row: |o| {
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

/// kubectl's pod columns.
pub static POD: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Ready",
            "string",
            0,
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        col(
            "Status",
            "string",
            0,
            "The aggregate status of the containers in this pod.",
        ),
        col(
            "Restarts",
            "string",
            0,
            "The number of times the containers in this pod have been restarted.",
        ),
        AGE,
        col("IP", "string", 1, "IP address allocated to the pod."),
        col("Node", "string", 1, "Name of the Node this pod is bound to."),
    ],
    row: |p| {
        let sum = pod_summary(p);
        vec![
            json!(str_at(p, "/metadata/name")),
            json!(format!("{}/{}", sum.ready, sum.total)),
            json!(sum.status),
            json!(sum.restarts.to_string()),
            json!(age_of(p, "/metadata/creationTimestamp")),
            json!(or_none(str_at(p, "/status/podIP"))),
            json!(or_none(str_at(p, "/spec/nodeName"))),
        ]
    },
};

/// kubectl's namespace columns.
pub static NAMESPACE: Printer = Printer {
    columns: &[NAME, col("Status", "string", 0, "The status of the namespace."), AGE],
    row: |n| {
        vec![
            json!(str_at(n, "/metadata/name")),
            json!(str_at(n, "/status/phase")),
            json!(age_of(n, "/metadata/creationTimestamp")),
        ]
    },
};

/// kubectl's event columns.
pub static EVENT: Printer = Printer {
    columns: &[
        col("Last Seen", "string", 0, "Time when the event was last seen."),
        col("Type", "string", 0, "Type of this event (Normal, Warning)."),
        col("Reason", "string", 0, "Why the action was taken."),
        col("Object", "string", 0, "The object that this event is about."),
        col(
            "Message",
            "string",
            0,
            "A human-readable description of the status of this operation.",
        ),
    ],
    row: |e| {
        vec![
            json!(age_of(e, "/lastTimestamp")),
            json!(str_at(e, "/type")),
            json!(str_at(e, "/reason")),
            json!(format!(
                "{}/{}",
                str_at(e, "/involvedObject/kind").to_lowercase(),
                str_at(e, "/involvedObject/name")
            )),
            json!(str_at(e, "/message")),
        ]
    },
};

/// kubectl's node columns.
pub static NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0, "The status of the node"),
        col("Roles", "string", 0, "The roles of the node"),
        AGE,
        col("Version", "string", 0, "Kubelet Version reported by the node."),
        col("Internal-IP", "string", 1, "List of internal IPs."),
        col(
            "OS-Image",
            "string",
            1,
            "OS Image reported by the node from /etc/os-release.",
        ),
        col("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
        col(
            "Container-Runtime",
            "string",
            1,
            "Container Runtime Version reported by the node.",
        ),
    ],
    row: |n| {
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map_or("Unknown", |c| if c["status"] == "True" { "Ready" } else { "NotReady" });
        let mut roles: Vec<&str> = n["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        roles.sort();
        let internal = n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>");
        vec![
            json!(str_at(n, "/metadata/name")),
            json!(ready),
            json!(if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            }),
            json!(age_of(n, "/metadata/creationTimestamp")),
            json!(str_at(n, "/status/nodeInfo/kubeletVersion")),
            json!(internal),
            json!(or_none(str_at(n, "/status/nodeInfo/osImage"))),
            json!(or_none(str_at(n, "/status/nodeInfo/kernelVersion"))),
            json!(or_none(str_at(n, "/status/nodeInfo/containerRuntimeVersion"))),
        ]
    },
};

/// kubectl's lease columns.
pub static LEASE: Printer = Printer {
    columns: &[NAME, col("Holder", "string", 0, "The holder of the lease."), AGE],
    row: |l| {
        vec![
            json!(str_at(l, "/metadata/name")),
            json!(str_at(l, "/spec/holderIdentity")),
            json!(age_of(l, "/metadata/creationTimestamp")),
        ]
    },
};

/// Containers, images and selector: the wide columns of the workload kinds.
const CONTAINERS: Column = col("Containers", "string", 1, "Names of each container in the template.");
const IMAGES: Column = col(
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = col("Selector", "string", 1, "Label selector for pods.");

fn int_at(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The template's container names and images, comma-separated.
fn template_containers(o: &Value) -> (String, String) {
    let cs = o.pointer("/spec/template/spec/containers").and_then(Value::as_array);
    let names: Vec<&str> = cs
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    let images: Vec<&str> = cs
        .into_iter()
        .flatten()
        .map(|c| c["image"].as_str().unwrap_or(""))
        .collect();
    (names.join(","), images.join(","))
}

/// A workload's selector as kubectl prints it (`app=web,tier in (fe)`).
fn selector_text(o: &Value) -> String {
    crate::validation::workloads::workload_selector(o)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// A workload's row: name, its own `counts`, age, then the template's
/// containers, images and the selector (the wide columns).
fn workload_row(o: &Value, counts: Vec<Value>) -> Vec<Value> {
    let (containers, images) = template_containers(o);
    let mut row = vec![json!(str_at(o, "/metadata/name"))];
    row.extend(counts);
    row.extend([
        json!(age_of(o, "/metadata/creationTimestamp")),
        json!(containers),
        json!(images),
        json!(or_none(&selector_text(o))),
    ]);
    row
}

/// kubectl's DaemonSet columns.
pub static DAEMONSET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", 0, "The desired number of daemon pods."),
        col("Current", "integer", 0, "The current number of daemon pods."),
        col("Ready", "integer", 0, "The number of daemon pods ready."),
        col("Up-to-date", "integer", 0, "The number of daemon pods up to date."),
        col("Available", "integer", 0, "The number of daemon pods available."),
        col("Node Selector", "string", 0, "The node selector of the daemon pods."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o| {
        let mut selector: Vec<String> = o["spec"]["template"]["spec"]["nodeSelector"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        selector.sort();
        workload_row(
            o,
            vec![
                json!(int_at(o, "/status/desiredNumberScheduled")),
                json!(int_at(o, "/status/currentNumberScheduled")),
                json!(int_at(o, "/status/numberReady")),
                json!(int_at(o, "/status/updatedNumberScheduled")),
                json!(int_at(o, "/status/numberAvailable")),
                json!(or_none(&selector.join(","))),
            ],
        )
    },
};

/// kubectl's Job columns.
pub static JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0, "Status of the job."),
        col("Completions", "string", 0, "The completion status of the job."),
        col("Duration", "string", 0, "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o| {
        let has = |t: &str| {
            o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        let state = if has("Complete") {
            "Complete"
        } else if has("Failed") {
            "Failed"
        } else if has("Suspended") {
            "Suspended"
        } else if has("FailureTarget") {
            "FailureTarget"
        } else if has("SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else {
            "Running"
        };
        let succeeded = int_at(o, "/status/succeeded");
        let completions = match o["spec"]["completions"].as_i64() {
            Some(c) => format!("{succeeded}/{c}"),
            None => match int_at(o, "/spec/parallelism") {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let time = |p: &str| {
            o.pointer(p)
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        let duration = match (time("/status/startTime"), time("/status/completionTime")) {
            (Some(s), Some(e)) => short_duration((e - s).num_seconds()),
            (Some(s), None) => short_duration((chrono::Utc::now() - s.to_utc()).num_seconds()),
            _ => String::new(),
        };
        workload_row(o, vec![json!(state), json!(completions), json!(duration)])
    },
};

/// kubectl's CronJob columns.
pub static CRONJOB: Printer = Printer {
    columns: &[
        NAME,
        col("Schedule", "string", 0, "The schedule in Cron format."),
        col("Timezone", "string", 0, "The time zone of the schedule."),
        col("Suspend", "boolean", 0, "Whether new Jobs are started."),
        col("Active", "integer", 0, "The number of running Jobs."),
        col("Last Schedule", "date", 0, "When a Job was last started."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o| {
        let t = &o["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"];
        let names: Vec<&str> = t
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        let images: Vec<&str> = t
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["image"].as_str().unwrap_or(""))
            .collect();
        let last = str_at(o, "/status/lastScheduleTime");
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(str_at(o, "/spec/schedule")),
            json!(or_none(str_at(o, "/spec/timeZone"))),
            json!(if o["spec"]["suspend"] == true { "True" } else { "False" }),
            json!(o["status"]["active"].as_array().map_or(0, Vec::len)),
            json!(if last.is_empty() {
                "<none>".to_string()
            } else {
                age(last)
            }),
            json!(age_of(o, "/metadata/creationTimestamp")),
            json!(names.join(",")),
            json!(images.join(",")),
            json!("<none>"),
        ]
    },
};

/// A duration as kubectl prints one (`5s`, `3m2s`, `2h5m`).
fn short_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// kubectl's Deployment columns.
pub static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", 0, "Number of the pod with ready state"),
        col(
            "Up-to-date",
            "string",
            0,
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        col(
            "Available",
            "string",
            0,
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o| {
        let ready = format!("{}/{}", int_at(o, "/status/readyReplicas"), int_at(o, "/spec/replicas"));
        workload_row(
            o,
            vec![
                json!(ready),
                json!(int_at(o, "/status/updatedReplicas")),
                json!(int_at(o, "/status/availableReplicas")),
            ],
        )
    },
};

/// kubectl's ReplicaSet and ReplicationController columns.
pub static REPLICASET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", 0, "Number of desired pods."),
        col("Current", "integer", 0, "Number of actual replicas."),
        col("Ready", "integer", 0, "The number of ready replicas."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |o| {
        workload_row(
            o,
            vec![
                json!(int_at(o, "/spec/replicas")),
                json!(int_at(o, "/status/replicas")),
                json!(int_at(o, "/status/readyReplicas")),
            ],
        )
    },
};

/// kubectl's StatefulSet columns.
pub static STATEFULSET: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", 0, "Number of the pod with ready state"),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    row: |o| {
        let ready = format!("{}/{}", int_at(o, "/status/readyReplicas"), int_at(o, "/spec/replicas"));
        let mut row = workload_row(o, vec![json!(ready)]);
        row.pop();
        row
    },
};

/// kubectl's ControllerRevision columns: the controller as `statefulset.apps/web`.
pub static CONTROLLERREVISION: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", 0, "Controller of the object"),
        col("Revision", "integer", 0, "Revision of the ControllerRevision"),
        AGE,
    ],
    row: |o| {
        let controller = o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["controller"] == true)
            .map(|r| {
                let group = r["apiVersion"].as_str().unwrap_or("").rsplit_once('/').map(|(g, _)| g);
                let kind = r["kind"].as_str().unwrap_or("").to_ascii_lowercase();
                let name = r["name"].as_str().unwrap_or("");
                match group {
                    Some(g) => format!("{kind}.{g}/{name}"),
                    None => format!("{kind}/{name}"),
                }
            })
            .unwrap_or_else(|| "<none>".into());
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(controller),
            json!(int_at(o, "/revision")),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
pub fn access_modes(modes: &Value) -> String {
    modes
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m.as_str().unwrap_or("") {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

const VOLUME_MODE: Column = col(
    "VolumeMode",
    "string",
    1,
    "Whether the volume is a filesystem or a block device.",
);
const VOLUME_ATTRIBUTES_CLASS: Column = col(
    "VolumeAttributesClass",
    "string",
    0,
    "The VolumeAttributesClass of the volume or claim.",
);

/// kubectl's PersistentVolumeClaim columns.
pub static CLAIM: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0, "Phase of the claim."),
        col("Volume", "string", 0, "The volume bound to the claim."),
        col(
            "Capacity",
            "string",
            0,
            "The actual resources of the underlying volume.",
        ),
        col("Access Modes", "string", 0, "The access modes the volume has."),
        col(
            "StorageClass",
            "string",
            0,
            "The name of the StorageClass the claim asks for.",
        ),
        VOLUME_ATTRIBUTES_CLASS,
        AGE,
        VOLUME_MODE,
    ],
    row: |o| {
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(storage_phase(o)),
            json!(str_at(o, "/spec/volumeName")),
            json!(str_at(o, "/status/capacity/storage")),
            json!(access_modes(&o["status"]["accessModes"])),
            json!(str_at(o, "/spec/storageClassName")),
            json!(or_unset(str_at(o, "/spec/volumeAttributesClassName"))),
            json!(age_of(o, "/metadata/creationTimestamp")),
            json!(str_at(o, "/spec/volumeMode")),
        ]
    },
};

/// kubectl's Service columns.
pub static SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", 0, "The type of the service."),
        col("Cluster-IP", "string", 0, "The cluster IP of the service."),
        col("External-IP", "string", 0, "The external IP of the service."),
        col("Port(s)", "string", 0, "The ports the service listens on."),
        AGE,
        col(
            "Selector",
            "string",
            1,
            "The labels of the pods the service sends traffic to.",
        ),
    ],
    row: |o| {
        let ty = str_at(o, "/spec/type");
        let external_ips: Vec<&str> = o["spec"]["externalIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let external = match ty {
            "ExternalName" => str_at(o, "/spec/externalName").to_string(),
            "LoadBalancer" => {
                let mut ips: Vec<&str> = o["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                    .collect();
                ips.extend(&external_ips);
                if ips.is_empty() {
                    "<pending>".to_string()
                } else {
                    ips.join(",")
                }
            }
            _ if !external_ips.is_empty() => external_ips.join(","),
            _ => "<none>".to_string(),
        };
        let ports: Vec<String> = o["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let proto = p["protocol"].as_str().unwrap_or("TCP");
                match p["nodePort"].as_i64().filter(|n| *n != 0) {
                    Some(n) => format!("{}:{n}/{proto}", p["port"]),
                    None => format!("{}/{proto}", p["port"]),
                }
            })
            .collect();
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(ty),
            json!(or_none(str_at(o, "/spec/clusterIP"))),
            json!(external),
            json!(if ports.is_empty() {
                "<none>".to_string()
            } else {
                ports.join(",")
            }),
            json!(age_of(o, "/metadata/creationTimestamp")),
            json!(or_none(&map_string(&o["spec"]["selector"]))),
        ]
    },
};

/// `k=v,k=v`, in key order.
fn map_string(m: &Value) -> String {
    m.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first three of a list, then how many more, as kubectl abbreviates endpoints.
fn first_three(items: Vec<String>, empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    let mut out = items.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if items.len() > 3 {
        out.push_str(&format!(" + {} more...", items.len() - 3));
    }
    out
}

/// kubectl's Endpoints columns.
fn count(o: &Value, field: &str) -> usize {
    o[field].as_object().map_or(0, serde_json::Map::len)
}

/// kubectl's ConfigMap columns.
pub static CONFIGMAP: Printer = Printer {
    columns: &[NAME, col("Data", "string", 0, "The number of keys in the data."), AGE],
    row: |o| {
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(count(o, "data") + count(o, "binaryData")),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

/// kubectl's Secret columns.
pub static SECRET: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", 0, "The type of the secret."),
        col("Data", "string", 0, "The number of keys in the data."),
        AGE,
    ],
    row: |o| {
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(str_at(o, "/type")),
            json!(count(o, "data")),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

/// kubectl's ResourceQuota columns: `used/hard` per resource, limits apart.
pub static RESOURCEQUOTA: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col("Request", "string", 0, "Request represents a minimum amount of cpu/memory that a container may consume."),
        col("Limit", "string", 0, "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ],
    row: |o| {
        let (mut request, mut limit) = (Vec::new(), Vec::new());
        for (k, hard) in o["status"]["hard"].as_object().into_iter().flatten() {
            let used = o["status"]["used"][k].as_str().unwrap_or("0");
            let cell = format!("{k}: {used}/{}", hard.as_str().unwrap_or(""));
            if k.starts_with("limits.") {
                limit.push(cell);
            } else {
                request.push(cell);
            }
        }
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(age_of(o, "/metadata/creationTimestamp")),
            json!(request.join(", ")),
            json!(limit.join(", ")),
        ]
    },
};

/// kubectl's LimitRange columns.
pub static LIMITRANGE: Printer = Printer {
    columns: &[NAME, col("Created At", "date", 0, "Time the LimitRange was created.")],
    row: |o| {
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(str_at(o, "/metadata/creationTimestamp")),
        ]
    },
};

pub static ENDPOINTS: Printer = Printer {
    columns: &[NAME, col("Endpoints", "string", 0, "Endpoints of the service."), AGE],
    row: |o| {
        let mut items = Vec::new();
        for subset in o["subsets"].as_array().into_iter().flatten() {
            let ports: Vec<&Value> = subset["ports"].as_array().into_iter().flatten().collect();
            for a in subset["addresses"].as_array().into_iter().flatten() {
                let ip = a["ip"].as_str().unwrap_or("");
                if ports.is_empty() {
                    items.push(ip.to_string());
                }
                for p in &ports {
                    items.push(format!("{ip}:{}", p["port"]));
                }
            }
        }
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(first_three(items, "<none>")),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

/// kubectl's EndpointSlice columns.
pub static ENDPOINTSLICE: Printer = Printer {
    columns: &[
        NAME,
        col("AddressType", "string", 0, "The type of the addresses."),
        col("Ports", "string", 0, "The ports of the endpoints."),
        col("Endpoints", "string", 0, "The addresses of the endpoints."),
        AGE,
    ],
    row: |o| {
        let ports: Vec<String> = o["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["port"].as_i64().map_or("<unset>".to_string(), |n| n.to_string()))
            .collect();
        let addresses: Vec<String> = o["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(str_at(o, "/addressType")),
            json!(if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            }),
            json!(first_three(addresses, "<unset>")),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

/// kubectl's IPAddress columns.
pub static IPADDRESS: Printer = Printer {
    columns: &[
        NAME,
        col("ParentRef", "string", 0, "The object the address is allocated to."),
        AGE,
    ],
    row: |o| {
        let p = &o["spec"]["parentRef"];
        let group = p["group"].as_str().filter(|g| !g.is_empty());
        let resource = match group {
            Some(g) => format!("{}.{g}", p["resource"].as_str().unwrap_or("")),
            None => p["resource"].as_str().unwrap_or("").to_string(),
        };
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(format!(
                "{resource}/{}/{}",
                p["namespace"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or("")
            )),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

/// A claim's or volume's phase as kubectl shows it: `Terminating` once deleted.
fn storage_phase(o: &Value) -> &str {
    if o["metadata"]["deletionTimestamp"].is_null() {
        str_at(o, "/status/phase")
    } else {
        "Terminating"
    }
}

/// kubectl's PersistentVolume columns.
pub static VOLUME: Printer = Printer {
    columns: &[
        NAME,
        col("Capacity", "string", 0, "The capacity of the volume."),
        col("Access Modes", "string", 0, "The access modes of the volume."),
        col(
            "Reclaim Policy",
            "string",
            0,
            "What happens to the volume when its claim goes.",
        ),
        col("Status", "string", 0, "Phase of the volume."),
        col("Claim", "string", 0, "The claim bound to the volume."),
        col("StorageClass", "string", 0, "The class of the volume."),
        VOLUME_ATTRIBUTES_CLASS,
        col("Reason", "string", 0, "Why the volume is in its phase."),
        AGE,
        VOLUME_MODE,
    ],
    row: |o| {
        let claim = match (str_at(o, "/spec/claimRef/namespace"), str_at(o, "/spec/claimRef/name")) {
            (_, "") => String::new(),
            (ns, name) => format!("{ns}/{name}"),
        };
        vec![
            json!(str_at(o, "/metadata/name")),
            json!(str_at(o, "/spec/capacity/storage")),
            json!(access_modes(&o["spec"]["accessModes"])),
            json!(str_at(o, "/spec/persistentVolumeReclaimPolicy")),
            json!(storage_phase(o)),
            json!(claim),
            json!(str_at(o, "/spec/storageClassName")),
            json!(or_unset(str_at(o, "/spec/volumeAttributesClassName"))),
            json!(str_at(o, "/status/reason")),
            json!(age_of(o, "/metadata/creationTimestamp")),
            json!(str_at(o, "/spec/volumeMode")),
        ]
    },
};

/// kubectl's StorageClass columns; the default class is marked `(default)`.
pub static STORAGECLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Provisioner", "string", 0, "What makes the volumes of the class."),
        col(
            "ReclaimPolicy",
            "string",
            0,
            "What happens to a volume when its claim goes.",
        ),
        col("VolumeBindingMode", "string", 0, "When claims are bound."),
        col("AllowVolumeExpansion", "string", 0, "Whether claims may grow."),
        AGE,
    ],
    row: |o| {
        let mut name = str_at(o, "/metadata/name").to_string();
        if str_at(o, "/metadata/annotations/storageclass.kubernetes.io~1is-default-class") == "true" {
            name.push_str(" (default)");
        }
        vec![
            json!(name),
            json!(str_at(o, "/provisioner")),
            json!(str_at(o, "/reclaimPolicy")),
            json!(str_at(o, "/volumeBindingMode")),
            json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false).to_string()),
            json!(age_of(o, "/metadata/creationTimestamp")),
        ]
    },
};

fn or_unset(s: &str) -> &str {
    if s.is_empty() {
        "<unset>"
    } else {
        s
    }
}

fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

fn age_of(o: &Value, pointer: &str) -> String {
    age(str_at(o, pointer))
}

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    /// `PartialObjectMetadata`: the object's metadata (the default).
    Metadata,
    Object,
}

impl Include {
    /// From the `includeObject` query parameter.
    pub fn parse(v: Option<&str>) -> Result<Include, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(o) => Err(format!(
                "includeObject: Unsupported value: \"{o}\": supported values: \"None\", \"Metadata\", \"Object\""
            )),
        }
    }
}

/// A `meta.k8s.io/v1` Table of `items` as `printer` shows them.
pub fn table(printer: &Printer, items: &[Value], include: Include, resource_version: Option<&str>) -> Value {
    let columns: Vec<Value> = printer
        .columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include {
                Include::None => Value::Null,
                Include::Metadata => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"].clone()}),
                Include::Object => o.clone(),
            };
            json!({"cells": (printer.row)(o), "object": object})
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

/// Human age like kubectl (`5s`, `3m`, `2h`, `4d`).
pub fn age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// READY, STATUS and RESTARTS of a pod, as kubectl's `printPod` computes them.
pub struct PodSummary {
    pub ready: usize,
    pub total: usize,
    pub status: String,
    pub restarts: u64,
}

/// kubectl's `printPod`: init progress (`Init:1/2`, `Init:CrashLoopBackOff`),
/// then the first app container's waiting or terminated reason.
pub fn pod_summary(p: &Value) -> PodSummary {
    let spec_inits = p["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
    let sidecar = |name: &str| {
        spec_inits
            .iter()
            .any(|c| c["name"] == name && c["restartPolicy"] == "Always")
    };
    let mut total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    total += spec_inits.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut reason = p["status"]["reason"]
        .as_str()
        .or(p["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    let mut initializing = false;
    let inits = p["status"]["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, c) in inits.iter().enumerate() {
        restarts += c["restartCount"].as_u64().unwrap_or(0);
        let name = c["name"].as_str().unwrap_or("");
        let term = &c["state"]["terminated"];
        let waiting = c["state"]["waiting"]["reason"].as_str().unwrap_or("");
        if sidecar(name) && c["started"] == true {
            if c["ready"] == true {
                ready += 1;
            }
            continue;
        }
        if term.is_object() && term["exitCode"] == 0 {
            continue;
        }
        if term.is_object() {
            reason = match term["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if term["signal"].as_i64().unwrap_or(0) != 0 => format!("Init:Signal:{}", term["signal"]),
                None => format!("Init:ExitCode:{}", term["exitCode"]),
            };
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            reason = format!("Init:{waiting}");
        } else {
            reason = format!("Init:{i}/{}", spec_inits.len());
        }
        initializing = true;
        break;
    }
    let initialized = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = 0;
        let mut has_running = false;
        let cs = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        for c in cs.iter().rev() {
            restarts += c["restartCount"].as_u64().unwrap_or(0);
            let term = &c["state"]["terminated"];
            if let Some(r) = c["state"]["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if let Some(r) = term["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if term.is_object() {
                reason = if term["signal"].as_i64().unwrap_or(0) != 0 {
                    format!("Signal:{}", term["signal"])
                } else {
                    format!("ExitCode:{}", term["exitCode"])
                };
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    let terminal = matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !p["metadata"]["deletionTimestamp"].is_null() && !terminal {
        reason = "Terminating".into();
    }
    PodSummary {
        ready,
        total,
        status: reason,
        restarts,
    }
}

/// The STATUS column kubectl shows for a pod.
pub fn pod_status(p: &Value) -> String {
    pod_summary(p).status
}

/// `k=v,k2=v2` or `<none>`.
pub fn label_string(o: &Value) -> String {
    let l: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if l.is_empty() {
        "<none>".into()
    } else {
        l.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_table_has_kubectls_columns_and_cells() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z",
                "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.88.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table(&POD, std::slice::from_ref(&pod), Include::Metadata, Some("7"));
        let cols: Vec<(&str, u64)> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1)
            ]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert!(cells[4].as_str().unwrap().ends_with('d'), "{}", cells[4]);
        assert_eq!(cells[5], "10.88.0.5");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "web");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        let bare = table(&POD, &[pod], Include::None, None);
        assert!(bare["rows"][0]["object"].is_null());
        assert_eq!(bare["rows"][0]["cells"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn a_node_row_says_ready_and_its_roles() {
        let node = json!({"metadata": {"name": "n1", "creationTimestamp": "2020-01-01T00:00:00Z",
                "labels": {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/edge": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let cells = (NODE.row)(&node);
        assert_eq!(cells[1], "NotReady");
        assert_eq!(cells[2], "edge,worker");
        assert_eq!(cells[4], "v1.33.0");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(cells.len(), NODE.columns.len());
        let bare = (NODE.row)(&json!({"metadata": {"name": "n2"}}));
        assert_eq!((bare[1].as_str(), bare[2].as_str()), (Some("Unknown"), Some("<none>")));
    }

    #[test]
    fn include_object_takes_kubernetes_values_only() {
        assert_eq!(Include::parse(None), Ok(Include::Metadata));
        assert_eq!(Include::parse(Some("Object")), Ok(Include::Object));
        assert_eq!(Include::parse(Some("None")), Ok(Include::None));
        assert!(Include::parse(Some("all"))
            .unwrap_err()
            .starts_with("includeObject: Unsupported value: \"all\""));
    }
}
