//! Request bodies in Kubernetes' protobuf encoding, for the kinds kubectl's
//! typed `create` commands send that way (kubectl 1.31+ sends built-in
//! objects as `application/vnd.kubernetes.protobuf`: `create configmap`,
//! `create secret`, `create quota`, `create namespace`, `create service`,
//! `create deployment`, `create job`, `create cronjob`), with the fields
//! those commands set and the common ones beside them. A body is the
//! magic `k8s\0` and a `runtime.Unknown` (type meta, then the object's
//! bytes); the object is decoded by a table of its `generated.proto` field
//! numbers into the same JSON the API would have been sent. Go's proto2
//! encoder writes every non-pointer field, so empty strings and zeros are
//! dropped as absent.

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// The Content-Type of a protobuf body.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// How one field is decoded.
#[derive(Clone, Copy)]
enum F {
    Str,
    Int,
    Bool,
    /// A message, by its schema.
    Msg(&'static [(u32, &'static str, F)]),
    /// Repeated strings.
    Strs,
    /// Repeated messages.
    Msgs(&'static [(u32, &'static str, F)]),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`, as base64 in JSON.
    MapBytes,
    /// `map<string, Quantity>` (a Quantity is `{string = 1}`).
    MapQuantity,
    /// `Time` (`{int64 seconds = 1; int32 nanos = 2}`), as RFC 3339.
    Time,
    /// An optional (pointer) number: kept when zero.
    OptInt,
    /// `IntOrString` (`{type = 1; intVal = 2; strVal = 3}`), as a number or a string.
    IntOrString,
    /// Read past: an object's `status`, which a create does not set.
    Skip,
}

type Schema = &'static [(u32, &'static str, F)];

const OWNER_REFERENCE: Schema = &[
    (1, "kind", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "controller", F::Bool),
    (7, "blockOwnerDeletion", F::Bool),
];
const OBJECT_META: Schema = &[
    (1, "name", F::Str),
    (2, "generateName", F::Str),
    (3, "namespace", F::Str),
    (5, "uid", F::Str),
    (6, "resourceVersion", F::Str),
    (7, "generation", F::Int),
    (8, "creationTimestamp", F::Time),
    (11, "labels", F::MapStr),
    (12, "annotations", F::MapStr),
    (13, "ownerReferences", F::Msgs(OWNER_REFERENCE)),
    (14, "finalizers", F::Strs),
];
const CONFIG_MAP: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapStr),
    (3, "binaryData", F::MapBytes),
    (4, "immutable", F::Bool),
];
const SECRET: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapBytes),
    (3, "type", F::Str),
    (4, "stringData", F::MapStr),
    (5, "immutable", F::Bool),
];
const SCOPED_REQUIREMENT: Schema = &[
    (1, "scopeName", F::Str),
    (2, "operator", F::Str),
    (3, "values", F::Strs),
];
const SCOPE_SELECTOR: Schema = &[(1, "matchExpressions", F::Msgs(SCOPED_REQUIREMENT))];
const QUOTA_SPEC: Schema = &[
    (1, "hard", F::MapQuantity),
    (2, "scopes", F::Strs),
    (3, "scopeSelector", F::Msg(SCOPE_SELECTOR)),
];
const RESOURCE_QUOTA: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(QUOTA_SPEC)),
    (3, "status", F::Skip),
];
const NAMESPACE_SPEC: Schema = &[(1, "finalizers", F::Strs)];
const NAMESPACE: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(NAMESPACE_SPEC)),
    (3, "status", F::Skip),
];
const TYPE_META: Schema = &[(1, "apiVersion", F::Str), (2, "kind", F::Str)];
const LABEL_REQUIREMENT: Schema = &[(1, "key", F::Str), (2, "operator", F::Str), (3, "values", F::Strs)];
const LABEL_SELECTOR: Schema = &[
    (1, "matchLabels", F::MapStr),
    (2, "matchExpressions", F::Msgs(LABEL_REQUIREMENT)),
];
const CONTAINER_PORT: Schema = &[
    (1, "name", F::Str),
    (2, "hostPort", F::Int),
    (3, "containerPort", F::Int),
    (4, "protocol", F::Str),
    (5, "hostIP", F::Str),
];
const ENV_VAR: Schema = &[(1, "name", F::Str), (2, "value", F::Str)];
const RESOURCES: Schema = &[(1, "limits", F::MapQuantity), (2, "requests", F::MapQuantity)];
const CONTAINER: Schema = &[
    (1, "name", F::Str),
    (2, "image", F::Str),
    (3, "command", F::Strs),
    (4, "args", F::Strs),
    (5, "workingDir", F::Str),
    (6, "ports", F::Msgs(CONTAINER_PORT)),
    (7, "env", F::Msgs(ENV_VAR)),
    (8, "resources", F::Msg(RESOURCES)),
    (13, "terminationMessagePath", F::Str),
    (14, "imagePullPolicy", F::Str),
    (16, "stdin", F::Bool),
    (17, "stdinOnce", F::Bool),
    (18, "tty", F::Bool),
    (20, "terminationMessagePolicy", F::Str),
];
const POD_SPEC: Schema = &[
    (2, "containers", F::Msgs(CONTAINER)),
    (3, "restartPolicy", F::Str),
    (4, "terminationGracePeriodSeconds", F::OptInt),
    (6, "dnsPolicy", F::Str),
    (7, "nodeSelector", F::MapStr),
    (8, "serviceAccountName", F::Str),
    (10, "nodeName", F::Str),
    (11, "hostNetwork", F::Bool),
    (16, "hostname", F::Str),
    (17, "subdomain", F::Str),
    (19, "schedulerName", F::Str),
    (20, "initContainers", F::Msgs(CONTAINER)),
    (24, "priorityClassName", F::Str),
];
const POD_TEMPLATE: Schema = &[(1, "metadata", F::Msg(OBJECT_META)), (2, "spec", F::Msg(POD_SPEC))];
const ROLLING_UPDATE: Schema = &[(1, "maxUnavailable", F::IntOrString), (2, "maxSurge", F::IntOrString)];
const STRATEGY: Schema = &[(1, "type", F::Str), (2, "rollingUpdate", F::Msg(ROLLING_UPDATE))];
const DEPLOYMENT_SPEC: Schema = &[
    (1, "replicas", F::OptInt),
    (2, "selector", F::Msg(LABEL_SELECTOR)),
    (3, "template", F::Msg(POD_TEMPLATE)),
    (4, "strategy", F::Msg(STRATEGY)),
    (5, "minReadySeconds", F::Int),
    (6, "revisionHistoryLimit", F::OptInt),
    (7, "paused", F::Bool),
    (9, "progressDeadlineSeconds", F::OptInt),
];
const DEPLOYMENT: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(DEPLOYMENT_SPEC)),
    (3, "status", F::Skip),
];
const SERVICE_PORT: Schema = &[
    (1, "name", F::Str),
    (2, "protocol", F::Str),
    (3, "port", F::Int),
    (4, "targetPort", F::IntOrString),
    (5, "nodePort", F::Int),
];
const SERVICE_SPEC: Schema = &[
    (1, "ports", F::Msgs(SERVICE_PORT)),
    (2, "selector", F::MapStr),
    (3, "clusterIP", F::Str),
    (4, "type", F::Str),
    (7, "sessionAffinity", F::Str),
    (10, "externalName", F::Str),
    (11, "externalTrafficPolicy", F::Str),
];
const SERVICE: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(SERVICE_SPEC)),
    (3, "status", F::Skip),
];
const JOB_SPEC: Schema = &[
    (1, "parallelism", F::OptInt),
    (2, "completions", F::OptInt),
    (3, "activeDeadlineSeconds", F::OptInt),
    (4, "selector", F::Msg(LABEL_SELECTOR)),
    (5, "manualSelector", F::Bool),
    (6, "template", F::Msg(POD_TEMPLATE)),
    (7, "backoffLimit", F::OptInt),
    (8, "ttlSecondsAfterFinished", F::OptInt),
    (9, "completionMode", F::Str),
    (10, "suspend", F::Bool),
];
const JOB: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(JOB_SPEC)),
    (3, "status", F::Skip),
];
const JOB_TEMPLATE: Schema = &[(1, "metadata", F::Msg(OBJECT_META)), (2, "spec", F::Msg(JOB_SPEC))];
const CRON_JOB_SPEC: Schema = &[
    (1, "schedule", F::Str),
    (2, "startingDeadlineSeconds", F::OptInt),
    (3, "concurrencyPolicy", F::Str),
    (4, "suspend", F::Bool),
    (5, "jobTemplate", F::Msg(JOB_TEMPLATE)),
    (6, "successfulJobsHistoryLimit", F::OptInt),
    (7, "failedJobsHistoryLimit", F::OptInt),
    (8, "timeZone", F::Str),
];
const CRON_JOB: Schema = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(CRON_JOB_SPEC)),
    (3, "status", F::Skip),
];

/// The kinds (`apiVersion`, `kind`) whose protobuf form is read here.
const KINDS: &[(&str, &str, Schema)] = &[
    ("v1", "ConfigMap", CONFIG_MAP),
    ("v1", "Secret", SECRET),
    ("v1", "ResourceQuota", RESOURCE_QUOTA),
    ("v1", "Namespace", NAMESPACE),
    ("v1", "Service", SERVICE),
    ("apps/v1", "Deployment", DEPLOYMENT),
    ("batch/v1", "Job", JOB),
    ("batch/v1", "CronJob", CRON_JOB),
];

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let c = *self.b.get(self.i).ok_or("truncated varint")?;
            self.i += 1;
            v |= u64::from(c & 0x7f) << shift;
            if c < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// The next field: (number, wire type, varint value or bytes).
    fn field(&mut self) -> Result<(u32, Wire<'a>), String> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        match key & 7 {
            0 => Ok((number, Wire::Varint(self.varint()?))),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                let end = self
                    .i
                    .checked_add(len)
                    .filter(|e| *e <= self.b.len())
                    .ok_or("truncated field")?;
                let bytes = &self.b[self.i..end];
                self.i = end;
                Ok((number, Wire::Bytes(bytes)))
            }
            1 => {
                self.i = self
                    .i
                    .checked_add(8)
                    .filter(|e| *e <= self.b.len())
                    .ok_or("truncated field")?;
                Ok((number, Wire::Fixed))
            }
            5 => {
                self.i = self
                    .i
                    .checked_add(4)
                    .filter(|e| *e <= self.b.len())
                    .ok_or("truncated field")?;
                Ok((number, Wire::Fixed))
            }
            t => Err(format!("wire type {t} is not supported")),
        }
    }

    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn text(b: &[u8], name: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{name}: not UTF-8"))
}

/// A map entry: (key = 1, value = 2).
fn entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), &b[..0]);
    while !r.done() {
        match r.field()? {
            (1, Wire::Bytes(x)) => k = text(x, "map key")?,
            (2, Wire::Bytes(x)) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<String, String> {
    let mut r = Reader { b, i: 0 };
    let mut secs = 0i64;
    while !r.done() {
        if let (1, Wire::Varint(v)) = r.field()? {
            secs = v as i64;
        }
    }
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .ok_or_else(|| format!("time {secs} out of range"))
}

fn message(b: &[u8], schema: Schema, path: &str) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    while !r.done() {
        let (number, wire) = r.field()?;
        let Some((_, name, f)) = schema.iter().find(|(n, _, _)| *n == number) else {
            // Go writes every non-pointer field, set or not: an empty one
            // says nothing. One with content is a field this table lacks,
            // and dropping it would store less than was sent.
            let empty = match wire {
                Wire::Varint(v) => v == 0,
                Wire::Bytes(b) => b.is_empty(),
                Wire::Fixed => false,
            };
            if empty {
                continue;
            }
            return Err(format!(
                "{}field {number} is not read from protobuf here; send the object as JSON (`kubectl create -f`)",
                if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}: ")
                }
            ));
        };
        let name = *name;
        let here = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        match (f, wire) {
            (F::Skip, _) => {}
            (F::Str, Wire::Bytes(x)) => {
                if !x.is_empty() {
                    out.insert(name.into(), json!(text(x, name)?));
                }
            }
            (F::Int, Wire::Varint(v)) => {
                if v != 0 {
                    out.insert(name.into(), json!(v as i64));
                }
            }
            (F::OptInt, Wire::Varint(v)) => {
                out.insert(name.into(), json!(v as i64));
            }
            (F::IntOrString, Wire::Bytes(x)) => {
                let v = message(
                    x,
                    &[(1, "type", F::Int), (2, "intVal", F::Int), (3, "strVal", F::Str)],
                    &here,
                )?;
                let value = if v["type"] == 1 {
                    v.get("strVal").cloned().unwrap_or(json!(""))
                } else {
                    v.get("intVal").cloned().unwrap_or(json!(0))
                };
                out.insert(name.into(), value);
            }
            (F::Bool, Wire::Varint(v)) => {
                out.insert(name.into(), json!(v != 0));
            }
            (F::Time, Wire::Bytes(x)) => {
                if !x.is_empty() {
                    out.insert(name.into(), json!(time(x)?));
                }
            }
            (F::Msg(s), Wire::Bytes(x)) => {
                let v = message(x, s, &here)?;
                if v.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(name.into(), v);
                }
            }
            (F::Strs, Wire::Bytes(x)) => {
                let list = out.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(text(x, name)?));
                }
            }
            (F::Msgs(s), Wire::Bytes(x)) => {
                let v = message(x, s, &here)?;
                let list = out.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(v);
                }
            }
            (F::MapStr | F::MapBytes | F::MapQuantity, Wire::Bytes(x)) => {
                let (k, v) = entry(x)?;
                let value = match f {
                    F::MapStr => json!(text(v, name)?),
                    F::MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(v)),
                    _ => {
                        let q = message(v, &[(1, "string", F::Str)], &here)?;
                        q.get("string").cloned().unwrap_or(json!("0"))
                    }
                };
                let map = out.entry(name).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(k, value);
                }
            }
            _ => return Err(format!("{name}: unexpected wire type")),
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body into the object's JSON form; the error
/// names what is wrong (not protobuf, a kind this server reads only as JSON).
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with Kubernetes' protobuf magic (k8s\\0)")?;
    let mut r = Reader { b: rest, i: 0 };
    let (mut type_meta, mut raw) = (Value::Null, None);
    while !r.done() {
        match r.field()? {
            (1, Wire::Bytes(x)) => type_meta = message(x, TYPE_META, "")?,
            (2, Wire::Bytes(x)) => raw = Some(x),
            _ => {}
        }
    }
    let api_version = type_meta["apiVersion"].as_str().unwrap_or("");
    let kind = type_meta["kind"].as_str().unwrap_or("");
    let Some((_, _, schema)) = KINDS.iter().find(|(v, k, _)| *v == api_version && *k == kind) else {
        return Err(format!(
            "{api_version}/{kind} is read as JSON only (protobuf is read for the kinds kubectl's `create` subcommands make)"
        ));
    };
    let mut obj = message(raw.unwrap_or_default(), schema, "")?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(n << 3 | 2).unwrap(), u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn kubectls_create_secret_body_reads_as_json() {
        // As kubectl 1.33 sends `create secret generic s1 --from-literal=p=q --type=foo -n ns1`.
        let meta = [
            field(1, b"s1"),
            field(2, b""),
            field(3, b"ns1"),
            vec![7 << 3, 0],
            field(8, b""),
        ]
        .concat();
        let obj = [
            field(1, &meta),
            field(2, &[field(1, b"p"), field(2, b"q")].concat()),
            field(3, b"foo"),
        ]
        .concat();
        let unknown = [
            field(1, &[field(1, b"v1"), field(2, b"Secret")].concat()),
            field(2, &obj),
            field(3, b""),
            field(4, b""),
        ]
        .concat();
        let body = [MAGIC, &unknown].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1", "namespace": "ns1"},
                "data": {"p": "cQ=="}, "type": "foo"})
        );
    }

    /// Bodies kubectl 1.33.9 sent for `create deployment web --image=busybox:1.35 --port=8080
    /// --replicas=2 -- sleep 3600`, `create service nodeport svc2 --tcp=80:8080 --node-port=30001`
    /// and `create cronjob cj1 --image=busybox:1.35 --schedule='*/1 * * * *' -- echo hi`.
    #[test]
    fn bodies_kubectl_sent_read_as_the_json_it_means() {
        let read = |f: &str| {
            decode(&std::fs::read(format!("{}/testdata/protobuf/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()).unwrap()
        };
        let d = read("create-deployment.pb");
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(
            d["metadata"],
            json!({"name": "web", "namespace": "ns1", "labels": {"app": "web"}})
        );
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"app": "web"}}));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "busybox");
        assert_eq!(c["image"], "busybox:1.35");
        assert_eq!(c["command"], json!(["sleep", "3600"]));
        assert_eq!(c["ports"], json!([{"containerPort": 8080}]));
        let s = read("create-service-nodeport.pb");
        assert_eq!(s["spec"]["type"], "NodePort");
        assert_eq!(
            s["spec"]["ports"],
            json!([{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30001}])
        );
        assert_eq!(s["spec"]["selector"], json!({"app": "svc2"}));
        let cj = read("create-cronjob.pb");
        assert_eq!(cj["spec"]["schedule"], "*/1 * * * *");
        let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert_eq!(pod["containers"][0]["command"], json!(["echo", "hi"]));
    }

    #[test]
    fn quotas_and_refusals() {
        let hard = [field(1, b"pods"), field(2, &field(1, b"5"))].concat();
        let spec = [field(1, &hard), field(2, b"BestEffort")].concat();
        let obj = [field(1, &field(1, b"q")), field(2, &spec)].concat();
        let tm = [field(1, b"v1"), field(2, b"ResourceQuota")].concat();
        let body = [MAGIC, &field(1, &tm), &field(2, &obj)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                "spec": {"hard": {"pods": "5"}, "scopes": ["BestEffort"]}})
        );
        let tm = [field(1, b"apps/v1"), field(2, b"StatefulSet")].concat();
        let e = decode(&[MAGIC, &field(1, &tm)].concat()).unwrap_err();
        assert!(e.starts_with("apps/v1/StatefulSet is read as JSON only"), "{e}");
        // A field the table lacks (a container's volumeMounts, 9) is refused, not dropped.
        let container = [field(1, b"c"), field(9, &field(1, b"v"))].concat();
        let spec = [
            field(1, &field(1, b"j")),
            field(2, &field(6, &field(2, &field(2, &container)))),
        ]
        .concat();
        let tm = [field(1, b"batch/v1"), field(2, b"Job")].concat();
        let e = decode(&[MAGIC, &field(1, &tm), &field(2, &spec)].concat()).unwrap_err();
        assert!(
            e.starts_with("spec.template.spec.containers: field 9 is not read from protobuf here"),
            "{e}"
        );
        assert!(decode(b"{}").is_err());
        assert!(decode(&[MAGIC, &[0x0a, 0x7f][..]].concat())
            .unwrap_err()
            .contains("truncated"));
    }
}
