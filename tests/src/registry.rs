//! Debian's `docker-registry` (distribution 2.8) for the pull tests, on a
//! free port, its storage in a temporary directory; stopped by its PID when
//! dropped. It serves plain HTTP, or TLS from a CA the test makes with
//! openssl, and takes anonymous pulls, htpasswd basic auth, or Bearer
//! tokens from a small issuer run here ([`TokenIssuer`]). Images reach it
//! with `skopeo copy`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

/// Who the registry lets in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    #[default]
    Anonymous,
    /// htpasswd basic auth for this user and password.
    Basic(String, String),
    /// Bearer tokens from a [`TokenIssuer`] that checks this user and password.
    Token(String, String),
}

/// How to start a registry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve TLS with a certificate from a CA of the test's ([`Registry::ca`]).
    pub tls: bool,
    pub access: Access,
    /// Listen on this address instead of 127.0.0.1 (a port is picked).
    pub host: Option<String>,
    /// Accept Docker schema 1 manifests ([`Registry::push_schema1`]).
    pub schema1: bool,
    /// With `tls`: demand a client certificate signed by a client CA of the
    /// test's ([`Registry::client_certificate_dir`]).
    pub client_ca: bool,
}

/// A running registry.
pub struct Registry {
    child: Child,
    /// `HOST:PORT`, as image names carry it.
    pub address: String,
    dir: tempfile::TempDir,
    options: Options,
    /// The token issuer of a registry in token mode.
    pub issuer: Option<TokenIssuer>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key `<name>.key` and, with `x509`, a self-signed
/// certificate `<name>.crt`, else a request `<name>.csr`, for `subject`.
fn new_key(dir: &Path, name: &str, subject: &str, x509: bool) {
    let out = if x509 {
        format!("{name}.crt")
    } else {
        format!("{name}.csr")
    };
    let key = format!("{name}.key");
    let mut args = vec!["req"];
    if x509 {
        args.extend(["-x509", "-days", "2"]);
    }
    args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]);
    args.extend(["-keyout", &key, "-out", &out, "-subj", subject]);
    openssl(dir, &args);
}

/// A CA and a server certificate it signs for `host` (an IP address).
fn make_certificates(dir: &Path, host: &str) {
    new_key(dir, "ca", "/CN=peapod test CA", true);
    new_key(dir, "server", "/CN=peapod test registry", false);
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=IP:{host},DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let sign =
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext";
    openssl(dir, &sign.split(' ').collect::<Vec<_>>());
}

/// A client CA and, in `dir/client/`, a client certificate it signs
/// (`client.cert`, `client.key`: the names `certs.d` and skopeo's
/// `--cert-dir` look for).
fn make_client_certificate(dir: &Path) {
    new_key(dir, "clientca", "/CN=peapod test client CA", true);
    new_key(dir, "client", "/CN=peapod test client", false);
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let sign = "x509 -req -in client.csr -CA clientca.crt -CAkey clientca.key -CAcreateserial -out client.cert -days 2 -extfile client.ext";
    openssl(dir, &sign.split(' ').collect::<Vec<_>>());
    let pair = dir.join("client");
    std::fs::create_dir_all(&pair).unwrap();
    std::fs::rename(dir.join("client.cert"), pair.join("client.cert")).unwrap();
    std::fs::rename(dir.join("client.key"), pair.join("client.key")).unwrap();
}

/// An htpasswd line with a bcrypt hash (the only kind distribution accepts).
fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)))",
            password,
        ])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "bcrypt: {}", String::from_utf8_lossy(&out.stderr));
    format!("{user}:{}", String::from_utf8_lossy(&out.stdout).trim())
}

impl Registry {
    /// Starts a plain-HTTP anonymous registry on 127.0.0.1.
    pub fn start() -> Registry {
        Self::start_with(Options::default())
    }

    /// Starts a registry as `options` say and waits until it listens.
    pub fn start_with(options: Options) -> Registry {
        let (dir, loopback) = crate::server_dir_and_address("pp-registry-");
        let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let address = match &options.host {
            None => loopback,
            Some(h) => {
                let port = TcpListener::bind((h.as_str(), 0))
                    .and_then(|l| l.local_addr())
                    .expect("a free port")
                    .port();
                format!("{h}:{port}")
            }
        };
        let mut config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp:\n  addr: {address}\n  secret: peapod-test\n",
            dir.path().join("data").display()
        );
        if options.tls {
            make_certificates(dir.path(), &host);
            let client_cas = if options.client_ca {
                make_client_certificate(dir.path());
                format!(", clientcas: [{}]", dir.path().join("clientca.crt").display())
            } else {
                String::new()
            };
            config += &format!(
                "  tls: {{certificate: {}, key: {}{client_cas}}}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            );
        } else {
            assert!(!options.client_ca, "a client CA needs tls");
        }
        if options.schema1 {
            config += "compatibility: {schema1: {enabled: true}}\n";
        }
        let mut issuer = None;
        match &options.access {
            Access::Anonymous => {}
            Access::Basic(user, password) => {
                std::fs::write(dir.path().join("htpasswd"), htpasswd_line(user, password) + "\n").unwrap();
                config += &format!(
                    "auth: {{htpasswd: {{realm: peapod-test, path: {}}}}}\n",
                    dir.path().join("htpasswd").display()
                );
            }
            Access::Token(user, password) => {
                let i = TokenIssuer::start(dir.path(), user, password);
                config += &format!(
                    "auth: {{token: {{realm: 'http://{}/token', service: {}, issuer: {}, rootcertbundle: {}}}}}\n",
                    i.address,
                    TokenIssuer::SERVICE,
                    TokenIssuer::ISSUER,
                    i.certificate.display()
                );
                issuer = Some(i);
            }
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (scripts/setup.sh installs it)");
        let registry = Registry {
            child,
            address,
            dir,
            options,
            issuer,
        };
        crate::wait_for("registry listening", Duration::from_secs(30), || {
            TcpStream::connect(&registry.address).ok().map(|_| ())
        });
        if !registry.options.tls {
            crate::wait_for("registry ready", Duration::from_secs(30), || {
                let (code, _) = crate::http_get(&registry.address, "/v2/");
                (code == 200 || code == 401).then_some(())
            });
        }
        registry
    }

    /// The CA that signed a TLS registry's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        assert!(self.options.tls, "a plain-HTTP registry has no CA");
        self.dir.path().join("ca.crt")
    }

    /// The directory holding the client certificate the registry accepts
    /// (`client.cert` and `client.key`).
    pub fn client_certificate_dir(&self) -> PathBuf {
        assert!(self.options.client_ca, "the registry demands no client certificate");
        self.dir.path().join("client")
    }

    /// Pushes the image tagged `tag` in the OCI layout at `layout` as
    /// `<address>/<name>` (with the registry's credentials).
    pub fn push(&self, layout: &Path, tag: &str, name: &str) {
        self.push_ref(&format!("oci:{}:{tag}", layout.display()), name, &[]);
    }

    /// Pushes an index with every manifest it lists (`skopeo copy --all`).
    pub fn push_all(&self, layout: &Path, tag: &str, name: &str) {
        self.push_ref(&format!("oci:{}:{tag}", layout.display()), name, &["--all"]);
    }

    /// Pushes as a signed Docker schema 1 manifest (`--format v2s1`).
    pub fn push_schema1(&self, layout: &Path, tag: &str, name: &str) {
        let source = format!("oci:{}:{tag}", layout.display());
        self.push_ref(&source, name, &["--format", "v2s1"]);
    }

    /// Pushes with uncompressed layers gzip-compressed, as images usually are.
    pub fn push_gzip(&self, layout: &Path, tag: &str, name: &str) {
        let source = format!("oci:{}:{tag}", layout.display());
        self.push_ref(&source, name, &["--dest-compress"]);
    }

    /// Pushes with the layers recompressed as zstd.
    pub fn push_zstd(&self, layout: &Path, tag: &str, name: &str) {
        let source = format!("oci:{}:{tag}", layout.display());
        self.push_ref(&source, name, &["--dest-compress", "--dest-compress-format=zstd"]);
    }

    /// The manifest `name` has in the registry, as stored (`skopeo inspect --raw`).
    pub fn raw_manifest(&self, name: &str) -> serde_json::Value {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{name}", self.address))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn push_ref(&self, source: &str, name: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if self.options.client_ca {
            cmd.arg("--dest-cert-dir").arg(self.client_certificate_dir());
        }
        cmd.args(extra);
        match &self.options.access {
            Access::Anonymous => {}
            Access::Basic(u, p) | Access::Token(u, p) => {
                cmd.arg(format!("--dest-creds={u}:{p}"));
            }
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}/{name}", self.address))
            .output()
            .expect("run skopeo (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "skopeo copy to {}/{name}: {}",
            self.address,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the registry keeps the blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many blob downloads (`GET …/blobs/sha256:…`) the registry served.
    pub fn blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token issuer for distribution's `token` auth: `GET /token?scope=…&service=…`
/// with basic auth answers a JWT (ES256, its certificate in the `x5c`
/// header) granting the actions asked for, to one user; anyone else gets a
/// 401 with a message. Runs on a thread until dropped.
pub struct TokenIssuer {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The certificate the registry trusts for tokens (PEM).
    pub certificate: PathBuf,
    requests: Arc<AtomicUsize>,
    granted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn pem_body(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenIssuer {
    pub const SERVICE: &'static str = "peapod-test-registry";
    pub const ISSUER: &'static str = "peapod-test-issuer";

    fn start(dir: &Path, user: &str, password: &str) -> TokenIssuer {
        new_key(dir, "token", "/CN=peapod test token issuer", true);
        let der = "pkcs8 -topk8 -nocrypt -in token.key -outform DER -out token.p8";
        openssl(dir, &der.split(' ').collect::<Vec<_>>());
        let pkcs8 = std::fs::read(dir.join("token.p8")).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key =
            ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
                .expect("the token key");
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(pem_body(&dir.join("token.crt")))],
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let granted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (r, g, s, subject) = (requests.clone(), granted.clone(), stop.clone(), user.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut authorization = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_string());
                        }
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
                let target = line.split_whitespace().nth(1).unwrap_or("");
                let query = target.split_once('?').map_or("", |(_, q)| q);
                let (status, body) = if authorization.as_deref() != Some(expected.as_str()) {
                    (
                        "401 Unauthorized",
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"peapod test issuer: invalid username or password"}]}"#.to_string(),
                    )
                } else {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let access: Vec<serde_json::Value> = query_values(query, "scope")
                        .iter()
                        .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
                        .filter_map(|scope| {
                            let (kind, rest) = scope.split_once(':')?;
                            let (name, actions) = rest.rsplit_once(':')?;
                            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                        })
                        .collect();
                    let claims = serde_json::json!({
                        "iss": TokenIssuer::ISSUER,
                        "sub": subject,
                        "aud": TokenIssuer::SERVICE,
                        "exp": now + 300,
                        "nbf": now - 10,
                        "iat": now,
                        "jti": format!("{now}-{}", g.load(Ordering::SeqCst)),
                        "access": access,
                    });
                    let signing_input = format!(
                        "{}.{}",
                        b64url(header.to_string().as_bytes()),
                        b64url(claims.to_string().as_bytes())
                    );
                    let signature = key.sign(&rng, signing_input.as_bytes()).expect("sign");
                    g.fetch_add(1, Ordering::SeqCst);
                    let token = format!("{signing_input}.{}", b64url(signature.as_ref()));
                    (
                        "200 OK",
                        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenIssuer {
            address,
            certificate: dir.join("token.crt"),
            requests,
            granted,
            stop,
        }
    }

    /// Token requests received, refused ones included.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Tokens issued.
    pub fn granted(&self) -> usize {
        self.granted.load(Ordering::SeqCst)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.address);
    }
}
