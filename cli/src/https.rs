//! The daemon's HTTPS listener, for kubectl and anything else that speaks to
//! a Kubernetes API server over the network: a certificate from the node's
//! own CA (made at first start in `<root>/pki`, or the operator's), bearer
//! tokens from a kube-apiserver-style token file, and 401/403 answered as
//! `Status` objects. The unix socket stays the local CLI's way in and asks
//! for nothing: only root can open it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use anyhow::{bail, Context, Result};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The group whose members may do anything; peapod has no RBAC, so it is
/// the only group that may use the API (as `system:masters` may bypass
/// authorization on a Kubernetes API server).
pub const ADMIN_GROUP: &str = "system:masters";

/// How the HTTPS listener is set up (`peapod daemon` flags).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HttpsArgs {
    /// Serve the API over HTTPS on ADDR:PORT (off unless given), for kubectl:
    /// `peapod kubeconfig` prints a kubeconfig for it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen_https: Option<SocketAddr>,
    /// The listener's certificate (PEM, the chain), with --tls-private-key-file;
    /// without them one is made at every start, signed by the node's CA in
    /// `<root-dir>/pki` (made at first start), for 127.0.0.1, localhost, the
    /// host name and the node's addresses.
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Bearer tokens, one `token,user,uid,"group1,group2"` line each, as
    /// kube-apiserver's --token-auth-file. Default `<root-dir>/pki/tokens.csv`,
    /// made at first start with one admin token. Read again when it changes.
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates are accepted, as
    /// kube-apiserver's --client-ca-file: the subject's CN is the user, its
    /// O values the groups.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Names the listener is also reached by from pods: the `kubernetes`
    /// service's cluster IP and DNS names (set by the daemon, not a flag).
    #[arg(skip)]
    pub service_names: Vec<String>,
}

/// Where the node's own PKI lives.
pub fn pki_dir(root: &Path) -> PathBuf {
    root.join("pki")
}

/// The address the daemon last listened on, for `peapod kubeconfig`.
pub fn listen_record(root: &Path) -> PathBuf {
    pki_dir(root).join("listen-https")
}

/// A user a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Parses a token file: `token,user,uid[,"g1,g2"]` per line; blank lines and
/// `#` comments skipped. Errors name the file and line.
pub fn parse_tokens(text: &str, path: &Path) -> Result<HashMap<String, User>> {
    let mut tokens = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let mut parts = line.splitn(4, ',');
        let (Some(token), Some(name), Some(uid)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{}: expected token,user,uid[,\"groups\"]", at());
        };
        let (token, name) = (token.trim(), name.trim());
        if token.is_empty() || name.is_empty() {
            bail!("{}: the token and the user may not be empty", at());
        }
        let groups = parts
            .next()
            .map(|g| {
                g.trim()
                    .trim_matches('"')
                    .split(',')
                    .map(|g| g.trim().to_string())
                    .filter(|g| !g.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let user = User {
            name: name.to_string(),
            uid: uid.trim().to_string(),
            groups,
        };
        if tokens.insert(token.to_string(), user).is_some() {
            bail!("{}: this token is already given to another line", at());
        }
    }
    Ok(tokens)
}

/// Tokens by their secret.
type TokenMap = Arc<HashMap<String, User>>;

/// The token file, read again whenever its modification time changes.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    /// When the file was read, and what it said.
    cached: std::sync::Mutex<(Option<std::time::SystemTime>, TokenMap)>,
}

impl Tokens {
    pub fn new(path: PathBuf) -> Result<Self> {
        let tokens = Self {
            path,
            cached: std::sync::Mutex::new((None, Arc::default())),
        };
        tokens.current()?;
        Ok(tokens)
    }

    /// The tokens as the file says now; on a bad edit the last good set,
    /// with the error logged, so a typo does not lock everyone out.
    fn current(&self) -> Result<TokenMap> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .with_context(|| format!("read {}", self.path.display()))?;
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.0 != Some(modified) {
            let text = std::fs::read_to_string(&self.path).with_context(|| format!("read {}", self.path.display()))?;
            let parsed = parse_tokens(&text, &self.path)?;
            *cached = (Some(modified), Arc::new(parsed));
        }
        Ok(cached.1.clone())
    }

    fn user(&self, token: &str) -> Option<User> {
        match self.current() {
            Ok(t) => t.get(token).cloned(),
            Err(e) => {
                tracing::error!("token file: {e:#}; keeping the tokens read before");
                let cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                cached.1.get(token).cloned()
            }
        }
    }
}

/// A new random token: 32 bytes, hex.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for a token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `bytes` to `path` (mode 0600) unless it exists.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// The default token file, made with one admin token when absent.
pub fn ensure_token_file(root: &Path) -> Result<PathBuf> {
    let dir = pki_dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("tokens.csv");
    if !path.exists() {
        let line = format!("{},admin,admin,\"{ADMIN_GROUP}\"\n", new_token()?);
        write_private(&path, line.as_bytes())?;
        tracing::info!("made an admin token in {}", path.display());
    }
    Ok(path)
}

/// The node's CA: `ca.crt` and `ca.key` in `<root>/pki`, made when absent.
fn ensure_ca(dir: &Path) -> Result<(rcgen::CertificateParams, rcgen::KeyPair, String)> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let params = ca_params()?;
    if cert_path.exists() && key_path.exists() {
        let key_pem = std::fs::read_to_string(&key_path).with_context(|| format!("read {}", key_path.display()))?;
        let key =
            rcgen::KeyPair::from_pem(&key_pem).with_context(|| format!("{}: not a private key", key_path.display()))?;
        let cert_pem = std::fs::read_to_string(&cert_path).with_context(|| format!("read {}", cert_path.display()))?;
        return Ok((params, key, cert_pem));
    }
    let key = rcgen::KeyPair::generate().context("make the CA's key")?;
    let cert = params.self_signed(&key).context("make the CA's certificate")?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    tracing::info!("made the node's CA in {}", cert_path.display());
    Ok((params, key, cert.pem()))
}

fn ca_params() -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "peapod-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let (y, m, d) = today();
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + 10, m, d.min(28));
    Ok(params)
}

fn today() -> (i32, u8, u8) {
    use chrono::Datelike;
    let now = chrono::Utc::now() - chrono::Duration::days(1);
    (now.year(), now.month() as u8, now.day() as u8)
}

/// The names the listener's certificate is for: 127.0.0.1, ::1, localhost,
/// the host name, every address of the node's interfaces, and the address
/// listened on.
fn serving_names(listen: &SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()];
    names.extend(extra.iter().cloned());
    if let Ok(host) = nix::unistd::gethostname() {
        if let Some(h) = host.to_str().filter(|h| !h.is_empty()) {
            names.push(h.to_string());
        }
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let ip: Option<IpAddr> = a.address.and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            if let Some(ip) = ip {
                names.push(ip.to_string());
            }
        }
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.sort();
    names.dedup();
    names
}

/// The listener's certificate chain and key: the operator's files, or a
/// certificate made now from the node's CA.
fn serving_identity(
    root: &Path,
    args: &HttpsArgs,
    listen: &SocketAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    serving_identity_as(root, args, listen, "apiserver")
}

/// As [`serving_identity`], the certificate made for `role` (its CN and file name).
fn serving_identity_as(
    root: &Path,
    args: &HttpsArgs,
    listen: &SocketAddr,
    role: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_private_key_file) {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
        if chain.is_empty() {
            bail!("{}: no certificate in it", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
        return Ok((chain, key));
    }
    let dir = pki_dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let (ca_params, ca_key, _) = ensure_ca(&dir)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(serving_names(listen, &args.service_names))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("peapod-{role}"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    let (y, m, d) = today();
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + 1, m, d.min(28));
    let key = rcgen::KeyPair::generate().context("make the listener's key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("sign the listener's certificate")?;
    write_private(&dir.join(format!("{role}.crt")), cert.pem().as_bytes())?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow::anyhow!("listener key: {e}"))?;
    Ok((vec![cert.der().clone()], key_der))
}

/// The rustls configuration of the listener: a client certificate is
/// asked for (not required) when a client CA is configured.
pub fn server_config(root: &Path, args: &HttpsArgs, listen: &SocketAddr) -> Result<rustls::ServerConfig> {
    let (chain, key) = serving_identity(root, args, listen)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = match &args.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
                let cert = cert.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("{}: not a CA certificate: {e}", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{}: no certificate in it", path.display());
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("client CAs from {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the listener's certificate and key do not belong together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS configuration of the daemon endpoint other nodes reach, with a
/// certificate made now from the node's CA for `listen` and the node's
/// addresses, and that CA (PEM) for the Node to publish.
pub fn daemon_endpoint_config(root: &Path, listen: &SocketAddr) -> Result<(rustls::ServerConfig, String)> {
    let (chain, key) = serving_identity_as(root, &HttpsArgs::default(), listen, "daemon-endpoint")?;
    let (_, _, ca_pem) = ensure_ca(&pki_dir(root))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the daemon endpoint's certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, ca_pem))
}

/// The user a verified client certificate names, kept per connection.
#[derive(Debug, Clone)]
pub struct CertificateUser(pub User);

/// For `HttpServer::on_connect`: the user of the connection's client
/// certificate (rustls verified it against the client CA during the
/// handshake), if one was presented.
pub fn note_client_certificate(connection: &dyn std::any::Any, extensions: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(tls) = connection.downcast_ref::<Tls>() else {
        return;
    };
    let (_, session) = tls.get_ref();
    if let Some(user) = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| certificate_user(leaf.as_ref()))
    {
        extensions.insert(CertificateUser(user));
    }
}

/// One DER element: its tag, its content and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, b| (l << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The user a certificate names, as kube-apiserver reads one: the subject's
/// CN is the user name, each O a group.
pub fn certificate_user(cert: &[u8]) -> Option<User> {
    const SEQUENCE: u8 = 0x30;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    let (SEQUENCE, certificate, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der(certificate)? else {
        return None;
    };
    // version [0] (optional), serialNumber, signature, issuer, validity, subject
    let (tag, _, mut rest) = der(tbs)?;
    let skip = if tag == 0xa0 { 4 } else { 3 };
    for _ in 0..skip {
        rest = der(rest)?.2;
    }
    let (SEQUENCE, mut subject, _) = der(rest)? else {
        return None;
    };
    let (mut name, mut groups) = (None, Vec::new());
    while !subject.is_empty() {
        let (_, mut set, next) = der(subject)?;
        subject = next;
        while !set.is_empty() {
            let (_, pair, next) = der(set)?;
            set = next;
            let (0x06, oid, value) = der(pair)? else { return None };
            let (_, text, _) = der(value)?;
            let text = String::from_utf8_lossy(text).into_owned();
            match oid {
                CN => name = Some(text),
                O => groups.push(text),
                _ => {}
            }
        }
    }
    Some(User {
        name: name.filter(|n| !n.is_empty())?,
        uid: String::new(),
        groups,
    })
}

/// A `Status` failure as the API server sends one.
pub fn status_response(code: StatusCode, reason: &str, message: &str) -> HttpResponse {
    HttpResponse::build(code).json(serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    }))
}

/// The request's bearer token, if it has one.
pub fn bearer(req: &ServiceRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Authenticates a request that came over HTTPS: a bearer token from the
/// token file or, without one, a client certificate from the client CA;
/// the user must be a member of [`ADMIN_GROUP`]. 401 without a known token
/// or certificate, 403 for anyone else; `/version` is open to a request
/// without credentials.
pub async fn authenticate(
    tokens: actix_web::web::Data<Tokens>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let bearer = bearer(&req);
    // As kube-apiserver's system:public-info-viewer: the version is no
    // secret, and the kubectl dispatcher asks for it before it knows whom
    // to run. A token that is sent must still be good.
    if bearer.is_none() && req.conn_data::<CertificateUser>().is_none() && req.path() == "/version" {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let from_certificate = || req.conn_data::<CertificateUser>().map(|c| c.0.clone());
    let user = match bearer {
        Some(t) => tokens.user(t),
        None => from_certificate(),
    };
    let Some(user) = user else {
        let response = status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        return Ok(req.into_response(response));
    };
    if !user.groups.iter().any(|g| g == ADMIN_GROUP) {
        let message = format!(
            "User \"{}\" cannot {} {}: peapod has no RBAC; only members of {ADMIN_GROUP} may use the API",
            user.name,
            req.method(),
            req.path()
        );
        let response = status_response(StatusCode::FORBIDDEN, "Forbidden", &message);
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// What `peapod kubeconfig` prints: a kubeconfig with the node's CA and an
/// admin token for the listener the daemon last started.
pub fn kubeconfig(root: &Path, server: Option<&str>, token_file: Option<&Path>) -> Result<String> {
    let dir = pki_dir(root);
    let server = match server {
        Some(s) => s.to_string(),
        None => {
            let record = listen_record(root);
            let addr: SocketAddr = std::fs::read_to_string(&record)
                .with_context(|| {
                    format!(
                        "read {} (start the daemon with --listen-https ADDR:PORT, or pass --server)",
                        record.display()
                    )
                })?
                .trim()
                .parse()
                .with_context(|| format!("{}: not ADDR:PORT", record.display()))?;
            let host = match addr.ip() {
                ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            };
            format!("https://{host}:{}", addr.port())
        }
    };
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path).with_context(|| {
        format!(
            "read {} (the daemon makes it at its first start with --listen-https)",
            ca_path.display()
        )
    })?;
    let token_path = token_file.map_or_else(|| dir.join("tokens.csv"), Path::to_path_buf);
    let text = std::fs::read_to_string(&token_path).with_context(|| format!("read {}", token_path.display()))?;
    let (token, user) = parse_tokens(&text, &token_path)?
        .into_iter()
        .filter(|(_, u)| u.groups.iter().any(|g| g == ADMIN_GROUP))
        .min_by(|a, b| a.1.name.cmp(&b.1.name))
        .with_context(|| format!("{}: no token for a member of {ADMIN_GROUP}", token_path.display()))?;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca);
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: peapod\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {}\n  user:\n    token: {}\ncontexts:\n- name: peapod\n  context:\n    cluster: peapod\n    user: {}\n    namespace: default\ncurrent-context: peapod\n",
        q(&server),
        q(&ca_data),
        q(&user.name),
        q(&token),
        q(&user.name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_read_as_kube_apiservers() {
        let path = Path::new("/etc/peapod/tokens.csv");
        let t = parse_tokens("# admins\nabc,alice,1,\"system:masters,dev\"\n\n def , bob , 2\n", path).unwrap();
        assert_eq!(t["abc"].groups, ["system:masters", "dev"]);
        assert_eq!(t["def"].name, "bob");
        assert!(t["def"].groups.is_empty());
        let e = parse_tokens("abc,alice\n", path).unwrap_err().to_string();
        assert!(e.contains("tokens.csv:1") && e.contains("token,user,uid"), "{e}");
        let e = parse_tokens("a,b,1\na,c,2\n", path).unwrap_err().to_string();
        assert!(e.contains("tokens.csv:2"), "{e}");
    }

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params.distinguished_name.push(rcgen::DnType::CommonName, "carol");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = certificate_user(cert.der()).unwrap();
        assert_eq!(user.name, "carol");
        assert_eq!(user.groups, ["system:masters"]);
        // No CN, no user; garbage is nothing, not a panic.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "dev");
        assert!(certificate_user(params.self_signed(&key).unwrap().der()).is_none());
        assert!(certificate_user(&[0x30, 0x82, 0xff]).is_none());
        assert!(certificate_user(&[]).is_none());
    }

    #[test]
    fn a_kubeconfig_carries_the_ca_and_an_admin_token() {
        let root = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        std::fs::create_dir_all(pki_dir(root.path())).unwrap();
        std::fs::write(listen_record(root.path()), listen.to_string()).unwrap();
        let config = server_config(root.path(), &HttpsArgs::default(), &listen);
        assert!(config.is_ok(), "{:?}", config.err());
        let tokens = ensure_token_file(root.path()).unwrap();
        let text = std::fs::read_to_string(&tokens).unwrap();
        let token = text.split(',').next().unwrap();
        assert_eq!(token.len(), 64);
        let kc = kubeconfig(root.path(), None, None).unwrap();
        assert!(kc.contains("server: \"https://127.0.0.1:6443\""), "{kc}");
        assert!(kc.contains(token), "{kc}");
        let ca = std::fs::read(pki_dir(root.path()).join("ca.crt")).unwrap();
        assert!(kc.contains(&base64::engine::general_purpose::STANDARD.encode(ca)));
        // The CA survives a restart; the serving certificate is made again.
        let before = std::fs::read(pki_dir(root.path()).join("ca.crt")).unwrap();
        server_config(root.path(), &HttpsArgs::default(), &listen).unwrap();
        assert_eq!(std::fs::read(pki_dir(root.path()).join("ca.crt")).unwrap(), before);
    }
}
