//! `create configmap` and `create secret generic|docker-registry|tls`: the
//! object built from literals, files and env files, as kubectl builds it.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::path::Path;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where the keys come from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `key=value`.
    pub literals: Vec<String>,
    /// `[key=]path`; a directory gives one key per regular file in it.
    pub files: Vec<String>,
    /// `KEY=value` lines.
    pub env_files: Vec<String>,
}

/// The keys and values, in the order given; a repeated key is an error
/// naming the object, as kubectl's.
fn collect(s: &Sources, kind: &str, name: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let add = |k: String, v: Vec<u8>, out: &mut Vec<(String, Vec<u8>)>| -> Result<()> {
        let problems = peapod_core::names::is_config_map_key(&k);
        if !problems.is_empty() {
            bail!(
                "error: {k:?} is not a valid key name for a {kind}: {}",
                problems.join("; ")
            );
        }
        if out.iter().any(|(x, _)| *x == k) {
            bail!(
                "error: cannot add key \"{k}\", another key by that name already exists in Data for {kind} \"{name}\""
            );
        }
        out.push((k, v));
        Ok(())
    };
    for l in &s.literals {
        let Some((k, v)) = l.split_once('=') else {
            bail!("error: invalid literal source {l}, expected key=value");
        };
        add(k.to_string(), v.as_bytes().to_vec(), &mut out)?;
    }
    for f in &s.files {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) if !k.is_empty() => (Some(k.to_string()), p.to_string()),
            Some(_) => bail!("error: key names or file paths cannot contain '=': {f}"),
            None => (None, f.clone()),
        };
        let p = Path::new(&path);
        if p.is_dir() {
            if key.is_some() {
                bail!("error: cannot give a key name for a directory path: {f}");
            }
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .with_context(|| format!("error reading {path}"))?
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .collect();
            entries.sort_by_key(std::fs::DirEntry::file_name);
            for e in entries {
                let k = e.file_name().to_string_lossy().into_owned();
                // kubectl skips files whose names cannot be keys.
                if !peapod_core::names::is_config_map_key(&k).is_empty() {
                    continue;
                }
                let data = std::fs::read(e.path()).with_context(|| format!("error reading {}", e.path().display()))?;
                add(k, data, &mut out)?;
            }
        } else {
            let data = std::fs::read(p).with_context(|| format!("error reading {path}"))?;
            let k = key.unwrap_or_else(|| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            add(k, data, &mut out)?;
        }
    }
    for f in &s.env_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("error reading {f}"))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start_matches('\u{feff}');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (k, v) = match line.split_once('=') {
                Some((k, v)) => (k.trim_start().to_string(), v.to_string()),
                // A bare name takes the value from this environment, as kubectl.
                None => (line.trim().to_string(), std::env::var(line.trim()).unwrap_or_default()),
            };
            let problems = peapod_core::names::is_env_var_name(&k);
            if !problems.is_empty() {
                bail!(
                    "error: {f}:{}: {k:?} is not a valid variable name: {}",
                    i + 1,
                    problems.join("; ")
                );
            }
            add(k, v.into_bytes(), &mut out)?;
        }
    }
    Ok(out)
}

/// A ConfigMap: UTF-8 values under `data`, the rest under `binaryData`.
pub fn config_map(name: &str, namespace: &str, s: &Sources) -> Result<Value> {
    let mut data = Map::new();
    let mut binary = Map::new();
    for (k, v) in collect(s, "ConfigMap", name)? {
        match String::from_utf8(v) {
            Ok(text) => data.insert(k, json!(text)),
            Err(e) => binary.insert(k, json!(B64.encode(e.into_bytes()))),
        };
    }
    let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data});
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    Ok(obj)
}

fn secret(name: &str, namespace: &str, type_: &str, data: Vec<(String, Vec<u8>)>) -> Value {
    let data: Map<String, Value> = data.into_iter().map(|(k, v)| (k, json!(B64.encode(v)))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        "type": type_, "data": data})
}

/// `create secret generic`.
pub fn generic_secret(name: &str, namespace: &str, type_: Option<&str>, s: &Sources) -> Result<Value> {
    Ok(secret(
        name,
        namespace,
        type_.unwrap_or("Opaque"),
        collect(s, "Secret", name)?,
    ))
}

/// What `create secret docker-registry` takes.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub server: String,
    pub username: String,
    pub password: String,
    pub email: String,
}

/// `create secret docker-registry`: one `auths` entry, as kubectl writes it.
pub fn docker_registry_secret(name: &str, namespace: &str, r: &Registry) -> Result<Value> {
    if r.username.is_empty() || r.password.is_empty() {
        bail!("error: --docker-username and --docker-password are required");
    }
    let mut entry = json!({"username": r.username, "password": r.password,
        "auth": B64.encode(format!("{}:{}", r.username, r.password))});
    if !r.email.is_empty() {
        entry["email"] = json!(r.email);
    }
    let config = json!({"auths": {r.server.clone(): entry}});
    Ok(secret(
        name,
        namespace,
        "kubernetes.io/dockerconfigjson",
        vec![(".dockerconfigjson".into(), config.to_string().into_bytes())],
    ))
}

/// `create secret tls`: the PEM files as `tls.crt` and `tls.key`.
pub fn tls_secret(name: &str, namespace: &str, cert: &str, key: &str) -> Result<Value> {
    let c = std::fs::read(cert).with_context(|| format!("error reading {cert}"))?;
    let k = std::fs::read(key).with_context(|| format!("error reading {key}"))?;
    if !String::from_utf8_lossy(&c).contains("-----BEGIN CERTIFICATE-----") {
        bail!("error: {cert}: no PEM certificate found");
    }
    if !String::from_utf8_lossy(&k).contains("PRIVATE KEY-----") {
        bail!("error: {key}: no PEM private key found");
    }
    Ok(secret(
        name,
        namespace,
        "kubernetes.io/tls",
        vec![("tls.crt".into(), c), ("tls.key".into(), k)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_files_and_env_files_make_keys_as_kubectl() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.conf"), "a=1\n").unwrap();
        std::fs::write(dir.path().join("blob"), [0xff, 0x00]).unwrap();
        let env = dir.path().join("e.env");
        std::fs::write(&env, "# c\nMODE=fast\n\nLEVEL=3\n").unwrap();
        let s = Sources {
            literals: vec!["greeting=hello=world".into()],
            files: vec![dir.path().display().to_string(), format!("renamed={}", env.display())],
            env_files: vec![env.display().to_string()],
        };
        let cm = config_map("c", "ns", &s).unwrap();
        assert_eq!(cm["data"]["greeting"], "hello=world");
        assert_eq!(cm["data"]["app.conf"], "a=1\n");
        assert_eq!(cm["binaryData"]["blob"], B64.encode([0xff, 0x00]));
        assert_eq!(cm["data"]["renamed"], "# c\nMODE=fast\n\nLEVEL=3\n");
        assert_eq!(cm["data"]["MODE"], "fast");
        assert_eq!(cm["data"]["LEVEL"], "3");

        let dup = Sources {
            literals: vec!["a=1".into(), "a=2".into()],
            ..Sources::default()
        };
        let e = config_map("c", "ns", &dup).unwrap_err().to_string();
        assert_eq!(
            e,
            "error: cannot add key \"a\", another key by that name already exists in Data for ConfigMap \"c\""
        );
        std::fs::write(&env, "OK=1\n1BAD=2\n").unwrap();
        let bad = Sources {
            env_files: vec![env.display().to_string()],
            ..Sources::default()
        };
        let e = generic_secret("s", "ns", None, &bad).unwrap_err().to_string();
        assert!(e.contains("e.env:2: \"1BAD\" is not a valid variable name"), "{e}");
    }

    #[test]
    fn docker_registry_secrets_carry_one_auths_entry() {
        let r = Registry {
            server: "registry.local:5000".into(),
            username: "u".into(),
            password: "p".into(),
            email: String::new(),
        };
        let s = docker_registry_secret("pull", "ns", &r).unwrap();
        assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
        let config: Value =
            serde_json::from_slice(&B64.decode(s["data"][".dockerconfigjson"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(config["auths"]["registry.local:5000"]["auth"], B64.encode("u:p"));
    }
}
