//! Pod volumes and volume mounts: Kubernetes' `ValidateVolumes` and
//! `ValidateVolumeMounts` for the fields peapod honours.

use crate::field::{FieldError, FieldErrors};
use crate::names;
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, Volume};
use std::collections::HashSet;

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];
const PROPAGATIONS: &[&str] = &["None", "HostToContainer", "Bidirectional"];

/// The source fields a volume sets (each must be the only one).
fn sources(v: &Volume) -> Vec<&'static str> {
    let Ok(serde_json::Value::Object(m)) = serde_json::to_value(v) else {
        return vec![];
    };
    const KNOWN: &[&str] = &[
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "hostPath",
        "image",
        "iscsi",
        "nfs",
        "persistentVolumeClaim",
        "photonPersistentDisk",
        "portworxVolume",
        "projected",
        "quobyte",
        "rbd",
        "scaleIO",
        "secret",
        "storageos",
        "vsphereVolume",
    ];
    KNOWN.iter().copied().filter(|k| m.contains_key(*k)).collect()
}

/// Validates `spec.volumes`; returns the set of volume names.
pub fn validate_volumes(vols: &[Volume], errs: &mut FieldErrors) -> HashSet<String> {
    let mut names_seen = HashSet::new();
    for (i, v) in vols.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name")));
        } else {
            for p in names::is_dns1123_label(&v.name) {
                errs.push(FieldError::invalid(format!("{path}.name"), &v.name, p));
            }
            if !names_seen.insert(v.name.clone()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), &v.name));
            }
        }
        let set = sources(v);
        if set.is_empty() {
            errs.push(FieldError::invalid(&path, "", "must specify a volume type"));
        }
        for extra in set.iter().skip(1) {
            errs.push(FieldError::forbidden(
                format!("{path}.{extra}"),
                "may not specify more than 1 volume type",
            ));
        }
        if let Some(h) = &v.host_path {
            if h.path.is_empty() {
                errs.push(FieldError::required(format!("{path}.hostPath.path")));
            } else if h.path.split('/').any(|c| c == "..") {
                errs.push(FieldError::invalid(
                    format!("{path}.hostPath.path"),
                    &h.path,
                    "must not contain '..'",
                ));
            }
            if let Some(t) = h.type_.as_deref() {
                if !HOST_PATH_TYPES.contains(&t) {
                    errs.push(FieldError::not_supported(
                        format!("{path}.hostPath.type"),
                        t,
                        HOST_PATH_TYPES,
                    ));
                }
            }
        }
        if let Some(e) = &v.empty_dir {
            if let Some(m) = e.medium.as_deref() {
                if !["", "Memory"].contains(&m) && !m.starts_with("HugePages") {
                    errs.push(FieldError::not_supported(
                        format!("{path}.emptyDir.medium"),
                        m,
                        &["", "Memory", "HugePages"],
                    ));
                }
            }
            if let Some(q) = &e.size_limit {
                match Quantity::parse(&q.0) {
                    Err(err) => errs.push(FieldError::invalid(
                        format!("{path}.emptyDir.sizeLimit"),
                        &q.0,
                        err.to_string(),
                    )),
                    Ok(v) if v.is_negative() => errs.push(FieldError::invalid(
                        format!("{path}.emptyDir.sizeLimit"),
                        &q.0,
                        "must be greater than or equal to 0",
                    )),
                    Ok(_) => {}
                }
            }
        }
        super::projected::validate_volume_source(v, &path, errs);
        if let Some(c) = &v.csi {
            if c.driver.is_empty() {
                errs.push(FieldError::required(format!("{path}.csi.driver")));
            }
        }
    }
    names_seen
}

/// Validates one container's `volumeMounts` against the pod's volume names.
pub fn validate_mounts(c: &Container, path: &str, volumes: &HashSet<String>, errs: &mut FieldErrors) {
    let privileged = c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false);
    let mut paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name")));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(format!("{p}.name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{p}.mountPath")));
        } else if !paths.insert(m.mount_path.clone()) {
            errs.push(FieldError::invalid(
                format!("{p}.mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        for (field, v) in [("subPath", &m.sub_path), ("subPathExpr", &m.sub_path_expr)] {
            let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else {
                continue;
            };
            if v.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{p}.{field}"),
                    v,
                    "must be a relative path",
                ));
            }
            if v.split('/').any(|c| c == "..") {
                errs.push(FieldError::invalid(format!("{p}.{field}"), v, "must not contain '..'"));
            }
        }
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            && m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            errs.push(FieldError::invalid(
                format!("{p}.subPathExpr"),
                m.sub_path_expr.as_deref().unwrap_or(""),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        if let Some(prop) = m.mount_propagation.as_deref() {
            if !PROPAGATIONS.contains(&prop) {
                errs.push(FieldError::not_supported(
                    format!("{p}.mountPropagation"),
                    prop,
                    PROPAGATIONS,
                ));
            } else if prop == "Bidirectional" && !privileged {
                errs.push(FieldError::forbidden(
                    format!("{p}.mountPropagation"),
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: serde_json::Value) -> Vec<String> {
        let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(spec).unwrap();
        let mut errs = FieldErrors::default();
        let names = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), &mut errs);
        for (i, c) in spec.containers.iter().enumerate() {
            validate_mounts(c, &format!("spec.containers[{i}]"), &names, &mut errs);
        }
        errs.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn messages_name_the_field() {
        assert_eq!(
            check(json!({"containers": [{"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]})),
            ["spec.containers[0].volumeMounts[0].name: Not found: \"nope\""]
        );
        assert_eq!(
            check(json!({"volumes": [{"name": "v", "hostPath": {"path": "/a", "type": "Dir"}}], "containers": []})),
            ["spec.volumes[0].hostPath.type: Unsupported value: \"Dir\": supported values: \"\", \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\""]
        );
        assert_eq!(
            check(json!({"volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/a"}}], "containers": []})),
            ["spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"]
        );
        assert_eq!(
            check(
                json!({"volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "c",
                "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "../etc"}]}]})
            ),
            ["spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../etc\": must not contain '..'"]
        );
        assert_eq!(
            check(json!({"volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "c",
                "volumeMounts": [{"name": "v", "mountPath": "/x", "mountPropagation": "Bidirectional"}]}]})),
            ["spec.containers[0].volumeMounts[0].mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers"]
        );
        assert!(check(
            json!({"volumes": [{"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/x", "subPathExpr": "$(POD)"}]}]})
        )
        .is_empty());
    }
}
