//! Security context validation, as Kubernetes' `ValidatePodSecurityContext`
//! and `ValidateSecurityContext` do it for the fields peapod honours.

use crate::field::{FieldError, FieldErrors};
use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile};

/// Kubernetes' `maxUserID`/`maxGroupID`: ids are non-negative int32 values.
const MAX_ID: i64 = i32::MAX as i64;
const RANGE: &str = "must be between 0 and 2147483647, inclusive";

fn check_id(path: String, id: Option<i64>, errs: &mut FieldErrors) {
    if let Some(id) = id {
        if !(0..=MAX_ID).contains(&id) {
            errs.push(FieldError::invalid(path, id, RANGE));
        }
    }
}

/// The seccomp profile types Kubernetes knows.
pub const SECCOMP_TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];

/// `<path>.seccompProfile`, as Kubernetes' `validateSeccompProfileField`.
fn check_seccomp(path: String, sp: Option<&SeccompProfile>, errs: &mut FieldErrors) {
    let Some(sp) = sp else { return };
    match sp.type_.as_str() {
        "" => {
            let mut e = FieldError::required(format!("{path}.type"));
            e.detail = "type is required when seccompProfile is set".into();
            errs.push(e);
        }
        t if !SECCOMP_TYPES.contains(&t) => {
            errs.push(FieldError::not_supported(format!("{path}.type"), t, SECCOMP_TYPES))
        }
        _ => {}
    }
    let field = format!("{path}.localhostProfile");
    match (sp.type_.as_str(), sp.localhost_profile.as_deref()) {
        ("Localhost", None) => {
            let mut e = FieldError::required(field);
            e.detail = "must be set when seccomp type is Localhost".into();
            errs.push(e);
        }
        ("Localhost", Some(lp)) => {
            if lp.starts_with('/') {
                errs.push(FieldError::invalid(&field, lp, "must be a relative path"));
            }
            if lp.split('/').any(|c| c == "..") {
                errs.push(FieldError::invalid(&field, lp, "must not contain '..'"));
            }
        }
        (_, Some(lp)) => errs.push(FieldError::invalid(
            field,
            lp,
            "can only be set when seccomp type is Localhost",
        )),
        (_, None) => {}
    }
}

/// `spec.securityContext`: runAsUser, runAsGroup, fsGroup, supplementalGroups, seccompProfile.
pub fn validate_pod(spec: &PodSpec, errs: &mut FieldErrors) {
    let Some(sc) = &spec.security_context else { return };
    let p = "spec.securityContext";
    check_seccomp(format!("{p}.seccompProfile"), sc.seccomp_profile.as_ref(), errs);
    check_id(format!("{p}.runAsUser"), sc.run_as_user, errs);
    check_id(format!("{p}.runAsGroup"), sc.run_as_group, errs);
    check_id(format!("{p}.fsGroup"), sc.fs_group, errs);
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        check_id(format!("{p}.supplementalGroups[{i}]"), Some(*g), errs);
    }
}

/// `<path>.securityContext` of one container.
pub fn validate_container(c: &Container, path: &str, errs: &mut FieldErrors) {
    let Some(sc) = &c.security_context else { return };
    let p = format!("{path}.securityContext");
    check_id(format!("{p}.runAsUser"), sc.run_as_user, errs);
    check_id(format!("{p}.runAsGroup"), sc.run_as_group, errs);
    check_seccomp(format!("{p}.seccompProfile"), sc.seccomp_profile.as_ref(), errs);
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errs.push(FieldError::invalid(
                &p,
                "privileged: true, allowPrivilegeEscalation: false",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        let adds = sc.capabilities.as_ref().and_then(|c| c.add.as_ref());
        if adds.is_some_and(|a| a.iter().any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN")) {
            errs.push(FieldError::invalid(
                &p,
                "capabilities.add: SYS_ADMIN, allowPrivilegeEscalation: false",
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(spec: serde_json::Value) -> Vec<String> {
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        let mut errs = FieldErrors::default();
        validate_pod(&spec, &mut errs);
        for (i, c) in spec.containers.iter().enumerate() {
            validate_container(c, &format!("spec.containers[{i}]"), &mut errs);
        }
        errs.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn ids_outside_int32_are_refused_with_their_path() {
        let errs = errors(json!({
            "securityContext": {"runAsUser": 4294967296i64, "runAsGroup": -1, "fsGroup": 2147483648i64,
                                "supplementalGroups": [5, -7]},
            "containers": [{"name": "c", "image": "busybox",
                            "securityContext": {"runAsUser": 4294967296i64, "runAsGroup": 4294967295i64}}]
        }));
        assert_eq!(
            errs,
            vec![
                "spec.securityContext.runAsUser: Invalid value: \"4294967296\": must be between 0 and 2147483647, inclusive",
                "spec.securityContext.runAsGroup: Invalid value: \"-1\": must be between 0 and 2147483647, inclusive",
                "spec.securityContext.fsGroup: Invalid value: \"2147483648\": must be between 0 and 2147483647, inclusive",
                "spec.securityContext.supplementalGroups[1]: Invalid value: \"-7\": must be between 0 and 2147483647, inclusive",
                "spec.containers[0].securityContext.runAsUser: Invalid value: \"4294967296\": must be between 0 and 2147483647, inclusive",
                "spec.containers[0].securityContext.runAsGroup: Invalid value: \"4294967295\": must be between 0 and 2147483647, inclusive",
            ]
        );
    }

    #[test]
    fn the_edges_of_the_range_are_accepted() {
        let errs = errors(json!({
            "securityContext": {"runAsUser": 0, "runAsGroup": 2147483647i64, "fsGroup": 0, "supplementalGroups": [2147483647i64]},
            "containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 2147483647i64}}]
        }));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn seccomp_profiles_are_checked_as_kubernetes_does() {
        let errs = errors(json!({
            "securityContext": {"seccompProfile": {"type": "Localhost"}},
            "containers": [
                {"name": "a", "image": "busybox", "securityContext": {"seccompProfile": {"type": "Strict"}}},
                {"name": "b", "image": "busybox", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "/etc/x.json"}}},
                {"name": "c", "image": "busybox", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p/../../x.json"}}},
                {"name": "d", "image": "busybox", "securityContext": {"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x.json"}}},
                {"name": "e", "image": "busybox", "securityContext": {"seccompProfile": {"type": ""}}},
                {"name": "ok", "image": "busybox", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}}
            ]
        }));
        assert_eq!(
            errs,
            vec![
                "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
                "spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Strict\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
                "spec.containers[1].securityContext.seccompProfile.localhostProfile: Invalid value: \"/etc/x.json\": must be a relative path",
                "spec.containers[2].securityContext.seccompProfile.localhostProfile: Invalid value: \"p/../../x.json\": must not contain '..'",
                "spec.containers[3].securityContext.seccompProfile.localhostProfile: Invalid value: \"x.json\": can only be set when seccomp type is Localhost",
                "spec.containers[4].securityContext.seccompProfile.type: Required value: type is required when seccompProfile is set",
            ]
        );
    }

    #[test]
    fn no_escalation_conflicts_with_privileged_and_sys_admin() {
        let errs = errors(json!({"containers": [
            {"name": "a", "image": "busybox", "securityContext": {"privileged": true, "allowPrivilegeEscalation": false}},
            {"name": "b", "image": "busybox", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}, "allowPrivilegeEscalation": false}},
            {"name": "c", "image": "busybox", "securityContext": {"privileged": true, "allowPrivilegeEscalation": true}}
        ]}));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.containers[0].securityContext: Invalid value"),
            "{errs:?}"
        );
        assert!(errs[0].ends_with("cannot set `allowPrivilegeEscalation` to false and `privileged` to true"));
        assert!(
            errs[1].starts_with("spec.containers[1].securityContext: Invalid value"),
            "{errs:?}"
        );
    }
}
