//! Pod defaulting and validation, following Kubernetes' `SetDefaults_Pod` and
//! `ValidatePodCreate`/`ValidatePodUpdate` for the fields peapod honours.

use super::{decode, encode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use crate::names;
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus};
use serde_json::Value;
use std::collections::HashSet;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// Fills Kubernetes' defaults into a pod spec.
pub fn set_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
}

fn default_container(c: &mut Container) {
    super::probe::set_defaults(c);
    if c.image_pull_policy.is_none() {
        // Kubernetes: `:latest` or no tag pulls always, a pinned tag or digest only if absent.
        let image = c.image.as_deref().unwrap_or("");
        let last = image.rsplit('/').next().unwrap_or("");
        let pinned = image.contains('@') || last.split_once(':').is_some_and(|(_, tag)| tag != "latest");
        c.image_pull_policy = Some(if pinned { "IfNotPresent" } else { "Always" }.into());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy.get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    // A limit without a request requests the limit.
    if let Some(r) = c.resources.as_mut() {
        if let Some(limits) = r.limits.clone() {
            let requests = r.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
}

/// Validates a defaulted pod.
pub fn validate(pod: &Pod) -> FieldErrors {
    let mut errs = FieldErrors::default();
    validate_object_meta(&pod.metadata, NameRule::Dns1123Subdomain, true, &mut errs);
    let Some(spec) = &pod.spec else {
        errs.push(FieldError::required("spec"));
        return errs;
    };
    if spec.containers.is_empty() {
        errs.push(FieldError::required("spec.containers"));
    }
    super::security::validate_pod(spec, &mut errs);
    let volumes = super::volumes::validate_volumes(spec.volumes.as_deref().unwrap_or_default(), &mut errs);
    let mut seen = HashSet::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("spec.initContainers[{i}]");
        validate_container(c, &path, &mut seen, &mut errs);
        super::volumes::validate_mounts(c, &path, &volumes, &mut errs);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        validate_container(c, &path, &mut seen, &mut errs);
        super::volumes::validate_mounts(c, &path, &volumes, &mut errs);
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                format!("spec.containers[{i}].restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    if let Some(p) = spec.restart_policy.as_deref() {
        if !RESTART_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported("spec.restartPolicy", p, RESTART_POLICIES));
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errs.push(FieldError::invalid(
                "spec.terminationGracePeriodSeconds",
                g,
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(d) = spec.active_deadline_seconds {
        if !(1..=i64::from(i32::MAX)).contains(&d) {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                d,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(h) = spec.hostname.as_deref() {
        for p in names::is_dns1123_label(h) {
            errs.push(FieldError::invalid("spec.hostname", h, p));
        }
    }
    errs
}

fn validate_container(c: &Container, path: &str, seen: &mut HashSet<String>, errs: &mut FieldErrors) {
    let regular_init = path.starts_with("spec.initContainers") && c.restart_policy.as_deref() != Some("Always");
    super::probe::validate(c, path, regular_init, errs);
    super::security::validate_container(c, path, errs);
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name")));
    } else {
        for p in names::is_dns1123_label(&c.name) {
            errs.push(FieldError::invalid(format!("{path}.name"), &c.name, p));
        }
        if !seen.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), &c.name));
        }
    }
    if c.image.as_deref().unwrap_or("").trim().is_empty() {
        errs.push(FieldError::required(format!("{path}.image")));
    }
    if let Some(p) = c.image_pull_policy.as_deref() {
        if !PULL_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{path}.imagePullPolicy"),
                p,
                PULL_POLICIES,
            ));
        }
    }
    if let Some(p) = c.restart_policy.as_deref() {
        if p != "Always" {
            errs.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                p,
                &["Always"],
            ));
        }
    }
    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        validate_port(port, &format!("{path}.ports[{i}]"), &mut port_names, errs);
    }
    super::projected::validate_env_sources(c, path, errs);
    for (i, e) in c.env.iter().flatten().enumerate() {
        let p = format!("{path}.env[{i}].name");
        if e.name.is_empty() {
            errs.push(FieldError::required(p));
        } else {
            for problem in names::is_env_var_name(&e.name) {
                errs.push(FieldError::invalid(&p, &e.name, problem));
            }
        }
    }
    if let Some(res) = &c.resources {
        for (field, map) in [("limits", &res.limits), ("requests", &res.requests)] {
            for (name, q) in map.iter().flatten() {
                let p = format!("{path}.resources.{field}[{name}]");
                match Quantity::parse(&q.0) {
                    Err(e) => errs.push(FieldError::invalid(&p, &q.0, e.to_string())),
                    Ok(v) if v.is_negative() => {
                        errs.push(FieldError::invalid(&p, &q.0, "must be greater than or equal to 0"))
                    }
                    Ok(_) => {}
                }
            }
        }
        for (name, req) in res.requests.iter().flatten() {
            let limit = res.limits.as_ref().and_then(|l| l.get(name));
            if let (Some(limit), Ok(r)) = (limit, Quantity::parse(&req.0)) {
                if let Ok(l) = Quantity::parse(&limit.0) {
                    if r.milli_value() > l.milli_value() {
                        errs.push(FieldError::invalid(
                            format!("{path}.resources.requests"),
                            &req.0,
                            format!("must be less than or equal to {name} limit of {}", limit.0),
                        ));
                    }
                }
            }
        }
    }
    if let Some(wd) = c.working_dir.as_deref() {
        if !wd.is_empty() && !wd.starts_with('/') {
            errs.push(FieldError::invalid(
                format!("{path}.workingDir"),
                wd,
                "must be an absolute path",
            ));
        }
    }
}

fn validate_port(port: &ContainerPort, path: &str, seen: &mut HashSet<String>, errs: &mut FieldErrors) {
    if !(1..=65535).contains(&port.container_port) {
        errs.push(FieldError::invalid(
            format!("{path}.containerPort"),
            port.container_port,
            "must be between 1 and 65535, inclusive",
        ));
    }
    if let Some(hp) = port.host_port {
        if !(0..=65535).contains(&hp) {
            errs.push(FieldError::invalid(
                format!("{path}.hostPort"),
                hp,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    if let Some(p) = port.protocol.as_deref() {
        if !PROTOCOLS.contains(&p) {
            errs.push(FieldError::not_supported(format!("{path}.protocol"), p, PROTOCOLS));
        }
    }
    if let Some(name) = port.name.as_deref() {
        let ok = name.len() <= 15
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name.chars().any(|c| c.is_ascii_lowercase())
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !ok {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                name,
                "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', contain at least one letter and not begin, end or repeat '-'",
            ));
        } else if !seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
}

/// How long a pod stays on a node that went unreachable or not ready
/// unless it says otherwise (the DefaultTolerationSeconds admission plugin's 300 s).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission plugin: a pod that does not
/// tolerate the `not-ready` and `unreachable` NoExecute taints tolerates
/// them for [`DEFAULT_TOLERATION_SECONDS`], so a node's brief absence does
/// not evict it, and a long one does.
fn add_default_tolerations(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    use k8s_openapi::api::core::v1::{Taint, Toleration};
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let taint = Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        if !tolerations.iter().any(|t| crate::scheduling::tolerates(t, &taint)) {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
                ..Default::default()
            });
        }
    }
}

/// Defaults and validates a new Pod; sets `status.phase: Pending`.
pub fn admit_create(obj: &mut Value) -> Result<(), FieldErrors> {
    let mut pod: Pod = decode(obj)?;
    set_defaults(&mut pod);
    add_default_tolerations(pod.spec.get_or_insert_with(Default::default));
    validate(&pod).into_result()?;
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    encode(&pod, obj);
    Ok(())
}

/// Validates an update. As in Kubernetes, a pod's spec is immutable except
/// container images and `activeDeadlineSeconds`.
pub fn admit_update(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: Pod = decode(old)?;
    let mut n: Pod = decode(new)?;
    // Fields the update leaves unset keep their stored (defaulted) values, as
    // a patch from `kubectl apply` would: changing an image must not re-default
    // imagePullPolicy into a forbidden change.
    if let (Some(os), Some(ns)) = (o.spec.as_ref(), n.spec.as_mut()) {
        // The node a pod was bound to stays, as kubectl apply's patch keeps it;
        // so do the tolerations admission added.
        if ns.node_name.is_none() {
            ns.node_name = os.node_name.clone();
        }
        if ns.tolerations.is_none() {
            ns.tolerations = os.tolerations.clone();
        }
        let old_containers: Vec<&k8s_openapi::api::core::v1::Container> = os
            .containers
            .iter()
            .chain(os.init_containers.iter().flatten())
            .collect();
        for c in ns.containers.iter_mut().chain(ns.init_containers.iter_mut().flatten()) {
            if c.image_pull_policy.is_none() {
                c.image_pull_policy = old_containers
                    .iter()
                    .find(|oc| oc.name == c.name)
                    .and_then(|oc| oc.image_pull_policy.clone());
            }
        }
    }
    set_defaults(&mut n);
    add_default_tolerations(n.spec.get_or_insert_with(Default::default));
    let mut errs = validate(&n);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    // Tolerations may be added, and their tolerationSeconds changed, as Kubernetes allows.
    let without_seconds = |p: &Pod| -> Vec<k8s_openapi::api::core::v1::Toleration> {
        let mut t = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
        for x in &mut t {
            x.toleration_seconds = None;
        }
        t
    };
    let kept = without_seconds(&n);
    if without_seconds(&o).iter().any(|t| !kept.contains(t)) {
        errs.push(FieldError::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    let strip = |p: &Pod| {
        let mut s = p.spec.clone().unwrap_or_default();
        for c in s.containers.iter_mut().chain(s.init_containers.iter_mut().flatten()) {
            c.image = None;
        }
        s.active_deadline_seconds = None;
        s.tolerations = None;
        s
    };
    if strip(&o) != strip(&n) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`",
        ));
    }
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_by_its_path() {
        // `name: yes` in YAML 1.1 (kubectl's) is the boolean true.
        let mut p = pod(json!({"containers": [{"name": "a", "image": "busybox"}, {"name": true, "image": "busybox"}]}));
        let err = admit_create(&mut p).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "spec.containers[1].name: Invalid value: \"true\": invalid type: boolean `true`, expected a string"
            ),
            "{err}"
        );
    }

    #[test]
    fn image_update_keeps_stored_pull_policy_and_refuses_other_changes() {
        let mut old = pod(json!({"containers": [{"name": "a", "image": "busybox"}]}));
        admit_create(&mut old).unwrap();
        let mut new = pod(json!({"containers": [{"name": "a", "image": "busybox:1.36"}]}));
        admit_update(&old, &mut new).unwrap();
        assert_eq!(new["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(new["spec"]["containers"][0]["image"], "busybox:1.36");
        let mut changed = pod(json!({"containers": [{"name": "a", "image": "busybox", "command": ["sh"]}]}));
        let e = admit_update(&old, &mut changed).unwrap_err().to_string();
        assert!(e.contains("pod updates may not change fields other than"), "{e}");
    }

    #[test]
    fn every_new_pod_tolerates_a_lost_node_for_five_minutes_unless_it_says_otherwise() {
        let mut p = json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}],
            "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 5}]}});
        admit_create(&mut p).unwrap();
        let t = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0]["tolerationSeconds"], 5, "the pod's own stays");
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);
        // A pod tolerating everything gets nothing more.
        let mut p = json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}],
            "tolerations": [{"operator": "Exists"}]}});
        admit_create(&mut p).unwrap();
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn defaults_are_filled() {
        let mut p = pod(json!({"containers": [{"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]}]}));
        admit_create(&mut p).unwrap();
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(p["status"]["phase"], "Pending");
        let mut p = pod(json!({"containers": [{"name": "a", "image": "localhost:5000/busybox:1.35"}]}));
        admit_create(&mut p).unwrap();
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn messages_name_the_field_path() {
        let cases = [
            (json!({"containers": [{"name": "a"}]}), "spec.containers[0].image: Required value"),
            (json!({"containers": []}), "spec.containers: Required value"),
            (
                json!({"containers": [{"name": "A_b", "image": "x"}]}),
                "spec.containers[0].name: Invalid value: \"A_b\": a lowercase RFC 1123 label",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}),
                "spec.containers[1].name: Duplicate value: \"a\"",
            ),
            (
                json!({"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x"}]}),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]}),
                "spec.containers[0].ports[0].containerPort: Invalid value: \"70000\": must be between 1 and 65535, inclusive",
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "resources": {"limits": {"memory": "12zz"}}}]}),
                "spec.containers[0].resources.limits[memory]: Invalid value: \"12zz\"",
            ),
            (
                json!({"terminationGracePeriodSeconds": -1, "containers": [{"name": "a", "image": "x"}]}),
                "spec.terminationGracePeriodSeconds: Invalid value: \"-1\"",
            ),
        ];
        for (spec, want) in cases {
            let mut p = pod(spec.clone());
            let err = admit_create(&mut p).expect_err(&spec.to_string()).to_string();
            assert!(err.contains(want), "{err}\n  wanted: {want}");
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        let mut p = pod(json!({"containers": [{"name": "a", "image": "x"}]}));
        p["metadata"]["name"] = json!("Not_A_Name");
        let err = admit_create(&mut p).unwrap_err().to_string();
        assert!(err.starts_with("metadata.name: Invalid value: \"Not_A_Name\""), "{err}");
    }

    #[test]
    fn spec_is_immutable_except_image() {
        let mut old = pod(json!({"containers": [{"name": "a", "image": "x"}]}));
        admit_create(&mut old).unwrap();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("y");
        admit_update(&old, &mut new).unwrap();
        let mut new = old.clone();
        new["spec"]["restartPolicy"] = json!("Never");
        let err = admit_update(&old, &mut new).unwrap_err().to_string();
        assert!(
            err.contains("spec: Forbidden: pod updates may not change fields"),
            "{err}"
        );
        // A manifest applied again without the node it was bound to keeps it; another node is refused.
        old["spec"]["nodeName"] = json!("n1");
        let mut new = old.clone();
        new["spec"].as_object_mut().unwrap().remove("nodeName");
        admit_update(&old, &mut new).unwrap();
        assert_eq!(new["spec"]["nodeName"], "n1");
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!("n2");
        assert!(admit_update(&old, &mut new).is_err());
    }
}
