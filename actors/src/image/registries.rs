//! Where pulls go and as whom: credentials from a Docker-style `config.json`,
//! per-registry CA certificates and client certificates in a
//! `certs.d/<host>/` directory (Docker's and containerd's layout), registries
//! reached over plain HTTP, and mirrors.
//!
//! Everything is read when a pull begins, so an edited `config.json` or a new
//! CA applies to the next pull without a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::client::{Certificate, CertificateEncoding, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::ImageError;

/// How the node reaches registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// A Docker-style `config.json` (`{"auths": {"host": {"auth": "…"}}}`).
    pub auth_file: Option<PathBuf>,
    /// A directory of `<host[:port]>/` directories holding `*.crt` CA
    /// certificates for that registry and `*.cert` + `*.key` client
    /// certificates to present to it.
    pub certs_dir: Option<PathBuf>,
    /// Registries (`host[:port]`) reached over plain HTTP; loopback ones
    /// always are, unless `certs_dir` has certificates for them.
    pub insecure: Vec<String>,
    /// Mirrors per registry (`docker.io` → `mirror.local:5000`), tried in
    /// order before the registry itself.
    pub mirrors: BTreeMap<String, Vec<String>>,
}

/// A pod's `imagePullSecrets` entry as a pull uses it: the Secret's name
/// (`namespace/name`, for errors) and its `.dockerconfigjson`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecret {
    pub name: String,
    pub config: String,
}

/// How to reach one registry host.
#[derive(Debug)]
pub(super) struct Endpoint {
    pub protocol: ClientProtocol,
    pub roots: Vec<Certificate>,
    /// A client certificate and its key, PEM, for mutual TLS.
    pub identity: Option<Vec<u8>>,
    pub auth: RegistryAuth,
}

/// What `certs.d/<host>/` holds for one registry.
#[derive(Debug, Default)]
struct TlsFiles {
    roots: Vec<Certificate>,
    identity: Option<Vec<u8>>,
}

/// The name a registry goes by in configuration: Docker Hub's several host
/// names are one.
pub(super) fn canonical_registry(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// Whether a registry is reached over plain HTTP without configuration, as
/// Docker does for loopback registries.
pub(super) fn is_loopback(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| registry.rsplit_once(':').map_or(registry, |(h, _)| h));
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistryConfig {
    /// Parses `REGISTRY=MIRROR` settings (`docker.io=mirror.local:5000`).
    ///
    /// # Errors
    /// A text naming the setting that has no `=` or an empty side.
    pub fn parse_mirrors(settings: &[String]) -> Result<BTreeMap<String, Vec<String>>, String> {
        let mut mirrors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in settings {
            let (registry, mirror) = s
                .split_once('=')
                .filter(|(r, m)| !r.is_empty() && !m.is_empty())
                .ok_or_else(|| {
                    format!("registry mirror {s:?}: expected REGISTRY=MIRROR, as in docker.io=mirror.local:5000")
                })?;
            let mirror = mirror
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            mirrors
                .entry(canonical_registry(registry).to_string())
                .or_default()
                .push(mirror.to_string());
        }
        Ok(mirrors)
    }

    /// The mirrors to try for `registry`, in order.
    pub(super) fn mirrors_of(&self, registry: &str) -> &[String] {
        self.mirrors
            .get(canonical_registry(registry))
            .map_or(&[], Vec::as_slice)
    }

    /// How to reach `registry` (`host[:port]`) for `repository`.
    ///
    /// # Errors
    /// [`ImageError::Registry`] naming the file that cannot be read or
    /// parsed: the credentials file, or a certificate in `certs_dir`.
    pub(super) fn endpoint(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        pull_secrets: &[PullSecret],
    ) -> Result<Endpoint, ImageError> {
        let TlsFiles { roots, identity } = self.tls_files(registry, reference)?;
        let plain = roots.is_empty()
            && identity.is_none()
            && (is_loopback(registry)
                || self
                    .insecure
                    .iter()
                    .any(|i| canonical_registry(i) == canonical_registry(registry)));
        // The registry name as the client resolves it (Docker Hub's API host).
        let api_host = match canonical_registry(registry) {
            "docker.io" => "index.docker.io",
            _ => registry,
        };
        let protocol = if plain {
            ClientProtocol::HttpsExcept(vec![api_host.to_string()])
        } else {
            ClientProtocol::Https
        };
        // A pod's imagePullSecrets first, in order, then the node's file (kubelet's order).
        let mut auth = None;
        for secret in pull_secrets {
            // One unusable secret does not end the pull: the next one, or the node's, may serve.
            match credentials_in(&secret.config, &secret.name, registry, repository, reference) {
                Ok(Some(a)) => {
                    auth = Some(a);
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("imagePullSecret {}: {e}", secret.name),
            }
        }
        if auth.is_none() {
            if let Some(path) = &self.auth_file {
                auth = credentials(path, registry, repository, reference)?;
            }
        }
        let auth = auth.unwrap_or(RegistryAuth::Anonymous);
        Ok(Endpoint {
            protocol,
            roots,
            identity,
            auth,
        })
    }

    /// What `certs_dir/<registry>/` holds, read as Docker and containerd
    /// read it: every `*.crt` is a CA certificate; `name.cert` is a client
    /// certificate whose key is `name.key` (one without the other is an
    /// error naming it). Several client pairs: the first by name is used.
    fn tls_files(&self, registry: &str, reference: &str) -> Result<TlsFiles, ImageError> {
        let Some(dir) = &self.certs_dir else {
            return Ok(TlsFiles::default());
        };
        let dir = dir.join(registry);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TlsFiles::default()),
            Err(e) => return Err(config_error(reference, &dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let read = |path: &Path, marker: &str, what: &str| -> Result<Vec<u8>, ImageError> {
            let data = std::fs::read(path).map_err(|e| config_error(reference, path, e))?;
            if String::from_utf8_lossy(&data).contains(marker) {
                Ok(data)
            } else {
                Err(config_error(reference, path, format!("not a PEM {what}")))
            }
        };
        let mut files = TlsFiles::default();
        for path in &paths {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => files.roots.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: read(path, "-----BEGIN CERTIFICATE-----", "certificate")?,
                }),
                Some("cert") => {
                    let key = path.with_extension("key");
                    if !key.is_file() {
                        return Err(config_error(
                            reference,
                            path,
                            format!(
                                "a client certificate needs its private key beside it as {}",
                                key.display()
                            ),
                        ));
                    }
                    let mut identity = read(path, "-----BEGIN CERTIFICATE-----", "certificate")?;
                    identity.push(b'\n');
                    identity.extend(read(&key, "PRIVATE KEY-----", "private key")?);
                    match &files.identity {
                        None => files.identity = Some(identity),
                        Some(_) => tracing::warn!(
                            registry,
                            ignored = %path.display(),
                            "several client certificates for one registry; presenting the first by name"
                        ),
                    }
                }
                Some("key") if !path.with_extension("cert").is_file() => {
                    return Err(config_error(
                        reference,
                        path,
                        format!(
                            "a private key without its client certificate {}",
                            path.with_extension("cert").display()
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(files)
    }
}

fn config_error(reference: &str, path: &Path, e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        reference: reference.to_string(),
        message: format!("{}: {e}", path.display()),
    }
}

/// One `auths` entry of a Docker `config.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuthEntry {
    /// base64 of `user:password`.
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// A bearer token sent as is.
    registrytoken: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DockerConfig {
    auths: BTreeMap<String, AuthEntry>,
}

/// A credentials key as kubelet matches one: an optional scheme, a host
/// (its leftmost labels may be `*`), an optional port, an optional path
/// that must prefix the repository.
struct Key<'a> {
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
}

fn parse_key(key: &str) -> Key<'_> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // Docker Hub's historical key, https://index.docker.io/v1/.
    let path = path.trim_end_matches('/');
    let path = if matches!(path, "v1" | "v2") { "" } else { path };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    };
    Key { host, port, path }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = canonical_registry(pattern);
    let host = canonical_registry(host);
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len() && p.iter().zip(&h).all(|(p, h)| *p == "*" || p.eq_ignore_ascii_case(h))
}

/// Whether `key` applies to `repository` on `registry`, and how specific it is.
fn key_matches(key: &str, registry: &str, repository: &str) -> Option<usize> {
    let k = parse_key(key);
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (registry, None),
    };
    if !host_matches(k.host, host) || k.port != port {
        return None;
    }
    if !k.path.is_empty() && repository != k.path && !repository.starts_with(&format!("{}/", k.path)) {
        return None;
    }
    Some(k.host.len() + k.path.len())
}

/// The credentials `path` holds for `repository` on `registry`: the most
/// specific matching key; `None` when the file or a matching key is missing.
fn credentials(
    path: &Path,
    registry: &str,
    repository: &str,
    reference: &str,
) -> Result<Option<RegistryAuth>, ImageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(config_error(reference, path, e)),
    };
    credentials_in(&text, &path.display().to_string(), registry, repository, reference)
}

/// The credentials a Docker `config.json` text (from `source`, named in
/// errors) holds for `repository` on `registry`; `None` when no key matches.
fn credentials_in(
    text: &str,
    source: &str,
    registry: &str,
    repository: &str,
    reference: &str,
) -> Result<Option<RegistryAuth>, ImageError> {
    let source = Path::new(source);
    let config: DockerConfig = serde_json::from_str(text).map_err(|e| config_error(reference, source, e))?;
    let Some((key, entry)) = config
        .auths
        .iter()
        .filter_map(|(k, v)| key_matches(k, registry, repository).map(|score| (score, k, v)))
        .max_by_key(|(score, _, _)| *score)
        .map(|(_, k, v)| (k, v))
    else {
        return Ok(None);
    };
    let bad = |what: &str| config_error(reference, source, format!("auths.{key:?}: {what}"));
    if let Some(token) = entry.registrytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryAuth::Bearer(token.to_string())));
    }
    if entry.identitytoken.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(bad(
            "identitytoken (an OAuth refresh token) is not supported; use auth or username and password",
        ));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(&format!("auth is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("auth does not decode to text"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad("auth must encode user:password"))?;
        return Ok(Some(RegistryAuth::Basic(user.to_string(), password.to_string())));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(RegistryAuth::Basic(u.clone(), p.clone()))),
        _ => Err(bad(
            "no credentials: expected auth, username and password, or registrytoken",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_for(config: &str, registry: &str, repository: &str) -> Result<RegistryAuth, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).unwrap();
        credentials(&path, registry, repository, "r")
            .map(|a| a.unwrap_or(RegistryAuth::Anonymous))
            .map_err(|e| e.to_string())
    }

    fn basic(u: &str, p: &str) -> RegistryAuth {
        RegistryAuth::Basic(u.into(), p.into())
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "index.docker.io",
            "10.0.0.1:5000",
            "registry.local:5000",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn credentials_match_as_kubelet_matches_them() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "reg.example.com:5000": {{"username": "bob", "password": "pw"}},
                "reg.example.com:5000/team": {{"auth": "{}"}},
                "*.corp.example": {{"registrytoken": "tok"}}
            }}}}"#,
            b64("hub:hubpw"),
            b64("team:teampw")
        );
        assert_eq!(
            auth_for(&config, "docker.io", "library/busybox").unwrap(),
            basic("hub", "hubpw")
        );
        assert_eq!(
            auth_for(&config, "index.docker.io", "x/y").unwrap(),
            basic("hub", "hubpw")
        );
        assert_eq!(
            auth_for(&config, "reg.example.com:5000", "app").unwrap(),
            basic("bob", "pw")
        );
        assert_eq!(
            auth_for(&config, "reg.example.com:5000", "team/app").unwrap(),
            basic("team", "teampw"),
            "the longer path wins"
        );
        assert_eq!(
            auth_for(&config, "reg.example.com:5000", "teamwork/app").unwrap(),
            basic("bob", "pw"),
            "a path matches whole segments"
        );
        assert_eq!(
            auth_for(&config, "reg.example.com", "app").unwrap(),
            RegistryAuth::Anonymous,
            "the port must match"
        );
        assert_eq!(
            auth_for(&config, "a.corp.example", "app").unwrap(),
            RegistryAuth::Bearer("tok".into())
        );
        assert_eq!(
            auth_for(&config, "a.b.corp.example", "app").unwrap(),
            RegistryAuth::Anonymous,
            "* is one label"
        );
    }

    #[test]
    fn bad_credentials_files_say_where() {
        let e = auth_for("{\"auths\": {\"r:5000\": {\"auth\": \"!!\"}}}", "r:5000", "a").unwrap_err();
        assert!(
            e.contains("config.json") && e.contains("auths.\"r:5000\"") && e.contains("base64"),
            "{e}"
        );
        let e = auth_for("{\"auths\": {\"r:5000\": {}}}", "r:5000", "a").unwrap_err();
        assert!(e.contains("no credentials"), "{e}");
        let e = auth_for("{\"auths\": [", "r:5000", "a").unwrap_err();
        assert!(e.contains("config.json") && e.contains("line 1"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let missing = credentials(&dir.path().join("none.json"), "r:5000", "a", "r")
            .unwrap()
            .unwrap_or(RegistryAuth::Anonymous);
        assert_eq!(missing, RegistryAuth::Anonymous, "no file: anonymous");
    }

    #[test]
    fn mirrors_parse_and_name_bad_settings() {
        let m =
            RegistryConfig::parse_mirrors(&["index.docker.io=https://m1:5000/".into(), "docker.io=m2".into()]).unwrap();
        let c = RegistryConfig {
            mirrors: m,
            ..Default::default()
        };
        assert_eq!(c.mirrors_of("docker.io"), ["m1:5000", "m2"]);
        assert!(c.mirrors_of("quay.io").is_empty());
        let e = RegistryConfig::parse_mirrors(&["docker.io".into()]).unwrap_err();
        assert!(e.contains("\"docker.io\"") && e.contains("REGISTRY=MIRROR"), "{e}");
    }

    #[test]
    fn certs_dir_gives_roots_and_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("reg.local:5000");
        std::fs::create_dir_all(&host).unwrap();
        let config = RegistryConfig {
            certs_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let plain = |r: &str| {
            matches!(
                config.endpoint(r, "a", "x", &[]).unwrap().protocol,
                ClientProtocol::HttpsExcept(_)
            )
        };
        assert!(!plain("reg.local:5000"));
        assert!(plain("127.0.0.1:5000"));
        std::fs::write(host.join("ca.crt"), "junk").unwrap();
        let e = config
            .endpoint("reg.local:5000", "a", "x", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.crt") && e.contains("not a PEM"), "{e}");
        std::fs::write(host.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(config.endpoint("reg.local:5000", "a", "x", &[]).unwrap().roots.len(), 1);
        let local = dir.path().join("127.0.0.1:5000");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(
            !plain("127.0.0.1:5000"),
            "a loopback registry with a CA is reached over TLS"
        );

        // A client certificate needs its key, and a key its certificate.
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
        std::fs::write(host.join("client.cert"), cert).unwrap();
        let e = config
            .endpoint("reg.local:5000", "a", "x", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("client.cert") && e.contains("client.key"), "{e}");
        std::fs::write(host.join("client.key"), "junk").unwrap();
        let e = config
            .endpoint("reg.local:5000", "a", "x", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("client.key") && e.contains("not a PEM private key"), "{e}");
        std::fs::write(host.join("client.key"), key).unwrap();
        let identity = config
            .endpoint("reg.local:5000", "a", "x", &[])
            .unwrap()
            .identity
            .unwrap();
        assert_eq!(String::from_utf8(identity).unwrap(), format!("{cert}\n{key}"));
        std::fs::write(host.join("other.key"), key).unwrap();
        let e = config
            .endpoint("reg.local:5000", "a", "x", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("other.key") && e.contains("other.cert"), "{e}");
        std::fs::remove_file(host.join("other.key")).unwrap();

        // A loopback registry with only a client certificate is reached over TLS too.
        let mtls = dir.path().join("127.0.0.2:5000");
        std::fs::create_dir_all(&mtls).unwrap();
        std::fs::write(mtls.join("client.cert"), cert).unwrap();
        std::fs::write(mtls.join("client.key"), key).unwrap();
        assert!(!plain("127.0.0.2:5000"));
    }
}
