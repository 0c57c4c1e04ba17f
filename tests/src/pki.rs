//! Test certificates made with openssl (scripts/setup.sh installs it):
//! CAs, and certificates they sign for clients and servers.

use std::path::Path;
use std::process::Command;

/// Runs openssl in `dir` with `args` (split on spaces).
pub fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `NAME.crt`/`NAME.key` in `dir` (P-256, two days).
pub fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!("req -x509 -days 2 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key -out {name}.crt -subj /CN={name}"),
    );
}

/// `NAME.crt`/`NAME.key` for `subject`, signed by `ca`, with the X.509 v3
/// extensions in `extensions` (lines of an openssl extension file).
pub fn signed(dir: &Path, ca: &str, name: &str, subject: &str, extensions: &str) {
    openssl(
        dir,
        &format!("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key -out {name}.csr -subj {subject}"),
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &format!("x509 -req -days 2 -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -out {name}.crt -extfile {name}.ext"),
    );
}

/// A client certificate `NAME.crt`/`NAME.key` for `subject`, signed by `ca`.
pub fn client_certificate(dir: &Path, ca: &str, name: &str, subject: &str) {
    signed(dir, ca, name, subject, "extendedKeyUsage=clientAuth\n");
}
