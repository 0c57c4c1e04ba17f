//! The API-fed parts of a pod: `env[].valueFrom`, `envFrom`, and the
//! `configMap`, `secret`, `downwardAPI` and `projected` volume sources,
//! checked as the API server's `validateEnvVarValueFrom`,
//! `validateEnvFrom` and the volume source validations check them.

use crate::field::{FieldError, FieldErrors};
use crate::names;
use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Volume};

/// The fields `fieldRef` may read in env.
pub const ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
/// The fields a downwardAPI volume file may hold.
pub const VOLUME_FIELDS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
/// The resources `resourceFieldRef` may read.
pub const RESOURCES: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn field_path(path: &str, value: &str, allowed: &[&str], errs: &mut FieldErrors) {
    let keyed = ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|p| value.starts_with(p) && value.ends_with("']"));
    if value.is_empty() {
        errs.push(FieldError::required(path));
    } else if !keyed && !allowed.contains(&value) {
        errs.push(FieldError::not_supported(path, value, allowed));
    }
}

fn name_and_key(path: &str, name: &str, key: &str, errs: &mut FieldErrors) {
    if name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name")));
    }
    if key.is_empty() {
        errs.push(FieldError::required(format!("{path}.key")));
    } else {
        for p in names::is_config_map_key(key) {
            errs.push(FieldError::invalid(format!("{path}.key"), key, p));
        }
    }
}

/// `env[].valueFrom` and `envFrom` of container `c` at `path`.
pub fn validate_env_sources(c: &Container, path: &str, errs: &mut FieldErrors) {
    for (i, e) in c.env.iter().flatten().enumerate() {
        let Some(from) = &e.value_from else { continue };
        let p = format!("{path}.env[{i}].valueFrom");
        let set = [
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set == 0 {
            errs.push(FieldError::invalid(
                &p,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if set > 1 {
            errs.push(FieldError::invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.push(FieldError::invalid(
                &p,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        if let Some(f) = &from.field_ref {
            field_path(&format!("{p}.fieldRef.fieldPath"), &f.field_path, ENV_FIELDS, errs);
        }
        if let Some(r) = &from.resource_field_ref {
            if !RESOURCES.contains(&r.resource.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("{p}.resourceFieldRef.resource"),
                    &r.resource,
                    RESOURCES,
                ));
            }
        }
        if let Some(r) = &from.config_map_key_ref {
            name_and_key(&format!("{p}.configMapKeyRef"), &r.name, &r.key, errs);
        }
        if let Some(r) = &from.secret_key_ref {
            name_and_key(&format!("{p}.secretKeyRef"), &r.name, &r.key, errs);
        }
    }
    for (i, e) in c.env_from.iter().flatten().enumerate() {
        let p = format!("{path}.envFrom[{i}]");
        if let Some(prefix) = e.prefix.as_deref().filter(|s| !s.is_empty()) {
            for problem in names::is_env_var_name(prefix) {
                errs.push(FieldError::invalid(format!("{p}.prefix"), prefix, problem));
            }
        }
        match (&e.config_map_ref, &e.secret_ref) {
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                &p,
                "",
                "may not have more than one field specified at a time",
            )),
            (None, None) => errs.push(FieldError::invalid(
                &p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            (Some(r), None) if r.name.is_empty() => errs.push(FieldError::required(format!("{p}.configMapRef.name"))),
            (None, Some(r)) if r.name.is_empty() => errs.push(FieldError::required(format!("{p}.secretRef.name"))),
            _ => {}
        }
    }
}

fn mode(path: &str, m: Option<i32>, errs: &mut FieldErrors) {
    if let Some(m) = m {
        if !(0..=0o777).contains(&m) {
            errs.push(FieldError::invalid(
                path,
                m,
                "must be a number between 0 and 0777 (octal), both inclusive",
            ));
        }
    }
}

/// A file path inside a volume: relative, without `..`.
fn local_path(path: &str, value: &str, errs: &mut FieldErrors) {
    if value.is_empty() {
        errs.push(FieldError::required(path));
        return;
    }
    if value.starts_with('/') {
        errs.push(FieldError::invalid(path, value, "must be a relative path"));
    }
    if value.split('/').any(|c| c == "..") {
        errs.push(FieldError::invalid(path, value, "must not contain '..'"));
    } else if value.starts_with("..") {
        errs.push(FieldError::invalid(path, value, "must not start with '..'"));
    }
}

fn items(path: &str, items: Option<&Vec<KeyToPath>>, errs: &mut FieldErrors) {
    for (i, it) in items.into_iter().flatten().enumerate() {
        let p = format!("{path}.items[{i}]");
        if it.key.is_empty() {
            errs.push(FieldError::required(format!("{p}.key")));
        }
        local_path(&format!("{p}.path"), &it.path, errs);
        mode(&format!("{p}.mode"), it.mode, errs);
    }
}

fn downward_items(path: &str, files: &[DownwardAPIVolumeFile], errs: &mut FieldErrors) {
    for (i, f) in files.iter().enumerate() {
        let p = format!("{path}.items[{i}]");
        local_path(&format!("{p}.path"), &f.path, errs);
        mode(&format!("{p}.mode"), f.mode, errs);
        match (&f.field_ref, &f.resource_field_ref) {
            (Some(r), None) => field_path(&format!("{p}.fieldRef.fieldPath"), &r.field_path, VOLUME_FIELDS, errs),
            (None, Some(r)) => {
                if r.container_name.as_deref().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{p}.resourceFieldRef.containerName")));
                }
                if !RESOURCES.contains(&r.resource.as_str()) {
                    errs.push(FieldError::not_supported(
                        format!("{p}.resourceFieldRef.resource"),
                        &r.resource,
                        RESOURCES,
                    ));
                }
            }
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                &p,
                "",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (None, None) => errs.push(FieldError::required_detail(
                &p,
                "one of fieldRef and resourceFieldRef is required",
            )),
        }
    }
}

/// The `configMap`, `secret`, `downwardAPI` and `projected` source of volume `v` at `path`.
pub fn validate_volume_source(v: &Volume, path: &str, errs: &mut FieldErrors) {
    if let Some(c) = &v.config_map {
        if c.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.configMap.name")));
        }
        mode(&format!("{path}.configMap.defaultMode"), c.default_mode, errs);
        items(&format!("{path}.configMap"), c.items.as_ref(), errs);
    }
    if let Some(s) = &v.secret {
        if s.secret_name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{path}.secret.secretName")));
        }
        mode(&format!("{path}.secret.defaultMode"), s.default_mode, errs);
        items(&format!("{path}.secret"), s.items.as_ref(), errs);
    }
    if let Some(d) = &v.downward_api {
        mode(&format!("{path}.downwardAPI.defaultMode"), d.default_mode, errs);
        downward_items(
            &format!("{path}.downwardAPI"),
            d.items.as_deref().unwrap_or_default(),
            errs,
        );
    }
    if let Some(p) = &v.projected {
        mode(&format!("{path}.projected.defaultMode"), p.default_mode, errs);
        let mut paths = std::collections::HashSet::new();
        for (i, s) in p.sources.iter().flatten().enumerate() {
            let sp = format!("{path}.projected.sources[{i}]");
            let set = [
                s.config_map.is_some(),
                s.secret.is_some(),
                s.downward_api.is_some(),
                s.service_account_token.is_some(),
                s.cluster_trust_bundle.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if set > 1 {
                errs.push(FieldError::forbidden(
                    &sp,
                    "may not specify more than 1 volume type per source",
                ));
            }
            let mut claim = |p: &str, errs: &mut FieldErrors| {
                if !paths.insert(p.to_string()) {
                    errs.push(FieldError::invalid(sp.clone(), p, "conflicting duplicate paths"));
                }
            };
            if let Some(c) = &s.config_map {
                items(&format!("{sp}.configMap"), c.items.as_ref(), errs);
                for it in c.items.iter().flatten() {
                    claim(&it.path, errs);
                }
            }
            if let Some(c) = &s.secret {
                items(&format!("{sp}.secret"), c.items.as_ref(), errs);
                for it in c.items.iter().flatten() {
                    claim(&it.path, errs);
                }
            }
            if let Some(d) = &s.downward_api {
                let files = d.items.as_deref().unwrap_or_default();
                downward_items(&format!("{sp}.downwardAPI"), files, errs);
                for f in files {
                    claim(&f.path, errs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds;
    use crate::writes::admit_new;
    use serde_json::json;

    fn refused(spec: serde_json::Value) -> String {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        admit_new(kinds::pod(), &mut pod).unwrap_err().to_string()
    }

    #[test]
    fn env_sources_and_volume_sources_are_checked_as_the_api_server_does() {
        let e = refused(json!({"containers": [{"name": "c", "image": "busybox",
            "env": [
                {"name": "A", "valueFrom": {}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "bad key"}}},
                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}
            ],
            "envFrom": [{"prefix": "1X", "configMapRef": {"name": "cm"}}]}]}));
        assert!(e.contains("spec.containers[0].env[0].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"), "{e}");
        assert!(
            e.contains("spec.containers[0].env[1].valueFrom.configMapKeyRef.key: Invalid value: \"bad key\""),
            "{e}"
        );
        assert!(
            e.contains("spec.containers[0].env[2].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.hostname\""),
            "{e}"
        );
        assert!(
            e.contains("spec.containers[0].envFrom[0].prefix: Invalid value: \"1X\""),
            "{e}"
        );

        let e = refused(json!({"containers": [{"name": "c", "image": "busybox"}], "volumes": [
            {"name": "a", "configMap": {"name": "cm", "defaultMode": 0o1777, "items": [{"key": "k", "path": "../x"}]}},
            {"name": "b", "downwardAPI": {"items": [{"path": "mem", "resourceFieldRef": {"resource": "limits.memory"}}]}},
            {"name": "c", "projected": {"sources": [
                {"configMap": {"name": "x", "items": [{"key": "k", "path": "same"}]}},
                {"secret": {"name": "y", "items": [{"key": "k", "path": "same"}]}}]}}
        ]}));
        assert!(e.contains("spec.volumes[0].configMap.defaultMode: Invalid value: \"1023\": must be a number between 0 and 0777 (octal), both inclusive"), "{e}");
        assert!(
            e.contains("spec.volumes[0].configMap.items[0].path: Invalid value: \"../x\": must not contain '..'"),
            "{e}"
        );
        assert!(
            e.contains("spec.volumes[1].downwardAPI.items[0].resourceFieldRef.containerName: Required value"),
            "{e}"
        );
        assert!(
            e.contains("spec.volumes[2].projected.sources[1]: Invalid value: \"same\": conflicting duplicate paths"),
            "{e}"
        );
    }
}
