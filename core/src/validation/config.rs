//! ConfigMap and Secret defaulting and validation: the API server's
//! `ValidateConfigMap` and `ValidateSecret`, with its field paths and words.

use super::{decode, encode, validate_meta_update, validate_object_meta, NameRule};
use crate::field::{FieldError, FieldErrors};
use crate::names;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use serde_json::Value;

/// The most a ConfigMap's or a Secret's values may hold together (1 MiB),
/// as Kubernetes' `MaxSecretSize`.
pub const MAX_SIZE: usize = 1024 * 1024;

/// The Secret types with required keys, and the keys.
pub const OPAQUE: &str = "Opaque";
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG: &str = "kubernetes.io/dockercfg";
pub const TLS: &str = "kubernetes.io/tls";
pub const BASIC_AUTH: &str = "kubernetes.io/basic-auth";
pub const SSH_AUTH: &str = "kubernetes.io/ssh-auth";
pub const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

const IMMUTABLE: &str = "field is immutable when `immutable` is set";

fn validate_keys<'a>(field: &str, keys: impl Iterator<Item = &'a String>, errs: &mut FieldErrors) {
    for k in keys {
        for p in names::is_config_map_key(k) {
            errs.push(FieldError::invalid(format!("{field}[{k}]"), k, p));
        }
    }
}

fn validate_config_map(cm: &ConfigMap, errs: &mut FieldErrors) {
    validate_object_meta(&cm.metadata, NameRule::Dns1123Subdomain, true, errs);
    validate_keys("data", cm.data.iter().flat_map(|d| d.keys()), errs);
    validate_keys("binaryData", cm.binary_data.iter().flat_map(|d| d.keys()), errs);
    let mut size = 0usize;
    for (k, v) in cm.data.iter().flatten() {
        size = size.saturating_add(v.len());
        if cm.binary_data.as_ref().is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                format!("binaryData[{k}]"),
                k,
                "duplicate of key present in data",
            ));
        }
    }
    for v in cm.binary_data.iter().flat_map(|d| d.values()) {
        size = size.saturating_add(v.0.len());
    }
    if size > MAX_SIZE {
        errs.push(FieldError::too_long("data", MAX_SIZE));
    }
}

/// Validates a new ConfigMap.
pub fn admit_config_map(obj: &mut Value) -> Result<(), FieldErrors> {
    let cm: ConfigMap = decode(obj)?;
    let mut errs = FieldErrors::default();
    validate_config_map(&cm, &mut errs);
    errs.into_result()?;
    encode(&cm, obj);
    Ok(())
}

/// Validates a ConfigMap update: an immutable one keeps its data, and stays immutable.
pub fn update_config_map(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: ConfigMap = decode(old)?;
    let n: ConfigMap = decode(new)?;
    let mut errs = FieldErrors::default();
    validate_config_map(&n, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    if o.immutable == Some(true) {
        if n.immutable != Some(true) {
            errs.push(FieldError::forbidden("immutable", IMMUTABLE));
        }
        if o.data.clone().unwrap_or_default() != n.data.clone().unwrap_or_default() {
            errs.push(FieldError::forbidden("data", IMMUTABLE));
        }
        if o.binary_data.clone().unwrap_or_default() != n.binary_data.clone().unwrap_or_default() {
            errs.push(FieldError::forbidden("binaryData", IMMUTABLE));
        }
    }
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}

/// `stringData` is write-only: merged into `data` (winning over it) as
/// the API server converts a v1 Secret, then dropped. `type` defaults to `Opaque`.
fn default_secret(s: &mut Secret) {
    if let Some(strings) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    if s.type_.as_deref().is_none_or(str::is_empty) {
        s.type_ = Some(OPAQUE.into());
    }
}

fn required_key(s: &Secret, key: &str, errs: &mut FieldErrors) {
    if s.data.as_ref().is_none_or(|d| !d.contains_key(key)) {
        errs.push(FieldError::required(format!("data[{key}]")));
    }
}

fn validate_secret(s: &Secret, errs: &mut FieldErrors) {
    validate_object_meta(&s.metadata, NameRule::Dns1123Subdomain, true, errs);
    validate_keys("data", s.data.iter().flat_map(|d| d.keys()), errs);
    let size = s
        .data
        .iter()
        .flat_map(|d| d.values())
        .fold(0usize, |n, v| n.saturating_add(v.0.len()));
    if size > MAX_SIZE {
        errs.push(FieldError::too_long("data", MAX_SIZE));
    }
    let value = |k: &str| s.data.as_ref().and_then(|d| d.get(k)).map(|v| v.0.as_slice());
    match s.type_.as_deref().unwrap_or(OPAQUE) {
        SERVICE_ACCOUNT_TOKEN => {
            let named = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_some_and(|n| !n.is_empty());
            if !named {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        DOCKER_CONFIG | DOCKER_CONFIG_JSON => {
            let key = if s.type_.as_deref() == Some(DOCKER_CONFIG) {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match value(key) {
                None => required_key(s, key, errs),
                Some(bytes) => {
                    if let Err(e) = serde_json::from_slice::<Value>(bytes) {
                        errs.push(FieldError::invalid(
                            format!("data[{key}]"),
                            "<secret contents redacted>",
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        BASIC_AUTH
            if value("username").is_none_or(<[u8]>::is_empty) && value("password").is_none_or(<[u8]>::is_empty) =>
        {
            errs.push(FieldError::required("data[username]"));
            errs.push(FieldError::required("data[password]"));
        }
        SSH_AUTH if value("ssh-privatekey").is_none_or(<[u8]>::is_empty) => {
            errs.push(FieldError::required("data[ssh-privatekey]"));
        }
        TLS => {
            required_key(s, "tls.key", errs);
            required_key(s, "tls.crt", errs);
        }
        _ => {}
    }
}

/// Defaults and validates a new Secret.
pub fn admit_secret(obj: &mut Value) -> Result<(), FieldErrors> {
    let mut s: Secret = decode(obj)?;
    default_secret(&mut s);
    let mut errs = FieldErrors::default();
    validate_secret(&s, &mut errs);
    errs.into_result()?;
    encode(&s, obj);
    Ok(())
}

/// Validates a Secret update: `type` never changes; an immutable Secret keeps its data.
pub fn update_secret(old: &Value, new: &mut Value) -> Result<(), FieldErrors> {
    let o: Secret = decode(old)?;
    let mut n: Secret = decode(new)?;
    default_secret(&mut n);
    let mut errs = FieldErrors::default();
    validate_secret(&n, &mut errs);
    validate_meta_update(&o.metadata, &n.metadata, &mut errs);
    if o.type_ != n.type_ {
        errs.push(FieldError::invalid(
            "type",
            n.type_.clone().unwrap_or_default(),
            "field is immutable",
        ));
    }
    if o.immutable == Some(true) {
        if n.immutable != Some(true) {
            errs.push(FieldError::forbidden("immutable", IMMUTABLE));
        }
        if o.data.clone().unwrap_or_default() != n.data.clone().unwrap_or_default() {
            errs.push(FieldError::forbidden("data", IMMUTABLE));
        }
    }
    errs.into_result()?;
    encode(&n, new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(e: FieldErrors) -> Vec<String> {
        e.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn string_data_is_merged_into_data_and_type_defaults() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
            "data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "over", "c": "new"}});
        admit_secret(&mut s).unwrap();
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
        // base64 of "x", "over", "new"
        assert_eq!(s["data"], json!({"a": "eA==", "b": "b3Zlcg==", "c": "bmV3"}));
    }

    #[test]
    fn keys_sizes_and_types_are_checked() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"bad key": "eA=="}});
        let e = texts(admit_secret(&mut s).unwrap_err());
        assert!(e[0].starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"), "{e:?}");

        let big = "x".repeat(MAX_SIZE + 1);
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"k": big}});
        assert_eq!(
            texts(admit_secret(&mut s).unwrap_err()),
            ["data: Too long: may not be more than 1048576 bytes"]
        );

        let mut s = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "c"}});
        assert_eq!(
            texts(admit_secret(&mut s).unwrap_err()),
            ["data[tls.key]: Required value"]
        );

        let mut s = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": "{not json"}});
        let e = texts(admit_secret(&mut s).unwrap_err());
        assert!(
            e[0].starts_with("data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": "),
            "{e:?}"
        );

        let mut s = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/basic-auth"});
        assert_eq!(
            texts(admit_secret(&mut s).unwrap_err()),
            ["data[username]: Required value", "data[password]: Required value"]
        );
        let mut s =
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/basic-auth", "stringData": {"password": "p"}});
        admit_secret(&mut s).unwrap();
    }

    #[test]
    fn immutable_objects_keep_their_data_and_secrets_their_type() {
        let mut old = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true});
        admit_config_map(&mut old).unwrap();
        let mut new = json!({"metadata": {"name": "c"}, "data": {"a": "2"}, "immutable": true});
        assert_eq!(
            texts(update_config_map(&old, &mut new).unwrap_err()),
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );
        let mut new = json!({"metadata": {"name": "c", "labels": {"x": "y"}}, "data": {"a": "1"}, "immutable": true});
        update_config_map(&old, &mut new).unwrap();

        let mut old = json!({"metadata": {"name": "s"}, "stringData": {"a": "1"}});
        admit_secret(&mut old).unwrap();
        let mut new =
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/ssh-auth", "stringData": {"ssh-privatekey": "k"}});
        assert_eq!(
            texts(update_secret(&old, &mut new).unwrap_err()),
            ["type: Invalid value: \"kubernetes.io/ssh-auth\": field is immutable"]
        );
    }

    #[test]
    fn config_map_keys_may_not_repeat_across_data_and_binary_data() {
        let mut cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "..b": "2"}, "binaryData": {"a": "eA=="}});
        let e = texts(admit_config_map(&mut cm).unwrap_err());
        assert!(
            e.iter()
                .any(|t| t == "data[..b]: Invalid value: \"..b\": must not start with '..'"),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|t| t == "binaryData[a]: Invalid value: \"a\": duplicate of key present in data"),
            "{e:?}"
        );
    }
}
