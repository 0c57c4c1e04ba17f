//! Debian's `docker-registry` (distribution 2.8) for the pull tests, on
//! 127.0.0.1 and a free port, its storage in a temporary directory; stopped
//! by its PID when dropped. Images reach it with `skopeo copy`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, as image names carry it.
    pub address: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a plain-HTTP registry and waits until `/v2/` answers.
    pub fn start() -> Registry {
        let (dir, address) = crate::server_dir_and_address("pp-registry-");
        let config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {address}, secret: peapod-test}}\n",
            dir.path().join("data").display()
        );
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
        let registry = Registry { child, address, dir };
        crate::wait_for("registry ready", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&registry.address)
                .is_ok()
                .then(|| crate::http_get(&registry.address, "/v2/"))
                .filter(|(code, _)| *code == 200)
        });
        registry
    }

    /// Pushes the image tagged `tag` in the OCI layout at `layout` as
    /// `<address>/<name>`.
    pub fn push(&self, layout: &Path, tag: &str, name: &str) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
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
