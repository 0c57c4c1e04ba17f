//! Docker-style image references: parsing, validation and normalisation.
//!
//! Kubernetes hands us whatever the user typed in `spec.containers[].image`
//! (`busybox`, `foo/bar:1`, `localhost:5000/x@sha256:…`). The store keys images
//! by the fully qualified form so that `busybox` and
//! `docker.io/library/busybox:latest` name the same image, exactly as they do
//! for a real container runtime.

use super::ImageError;

/// Registry assumed when a reference names none.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Old spelling of Docker Hub that Docker rewrites to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace of Docker Hub's official images (`busybox` is `library/busybox`).
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Tag assumed when a reference has neither tag nor digest.
pub(crate) const DEFAULT_TAG: &str = "latest";
/// Docker's limit on the length of `domain/path`.
const NAME_TOTAL_MAX: usize = 255;
/// Docker's limit on the length of a tag.
const TAG_MAX: usize = 128;

/// A parsed, validated reference in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `domain/path`, with Docker Hub defaults applied.
    pub(crate) repository: String,
    /// Tag as written, if any.
    pub(crate) tag: Option<String>,
    /// `sha256:<hex>` digest as written, if any.
    pub(crate) digest: Option<String>,
}

impl Reference {
    /// Parses `input` following Docker's `ParseNormalizedNamed` rules.
    pub(crate) fn parse(input: &str) -> Result<Self, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("reference is empty".into()));
        }
        // Docker refuses a bare image ID here so that it is never mistaken
        // for a repository called `<64 hex>`.
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "a 64-character hexadecimal string is an image ID, not a repository name".into(),
            ));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(invalid)?;
                (name, Some(digest.to_string()))
            }
            None => (input, None),
        };

        // The tag is introduced by the last ':' after the last '/', so the
        // port in `localhost:5000/x` is not mistaken for one.
        let last_component = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_component..].rfind(':') {
            Some(i) => {
                let split = last_component + i;
                (&rest[..split], Some(&rest[split + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(invalid(format!(
                    "tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
                )));
            }
        }
        if name.is_empty() {
            return Err(invalid("repository name is empty".into()));
        }

        let (domain, path) = split_domain(name);
        if let Some(domain) = domain {
            validate_domain(domain).map_err(invalid)?;
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        for component in path.split('/') {
            if !is_valid_path_component(component) {
                return Err(invalid(format!(
                    "path component {component:?} must be lowercase letters and digits \
                     separated by '.', '_', '__' or dashes"
                )));
            }
        }

        let domain = match domain {
            None | Some(LEGACY_DEFAULT_DOMAIN) => DEFAULT_DOMAIN,
            Some(d) => d,
        };
        let repository = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{domain}/{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            format!("{domain}/{path}")
        };
        if repository.len() > NAME_TOTAL_MAX {
            return Err(invalid(format!(
                "repository name is longer than {NAME_TOTAL_MAX} characters"
            )));
        }
        Ok(Self {
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The canonical string: `domain/path[:tag][@digest]`, with `:latest`
    /// added only when there is neither a tag nor a digest (a digest already
    /// pins the content, so Docker adds no tag to it).
    pub(crate) fn normalized(&self) -> String {
        let mut out = self.repository.clone();
        match (&self.tag, &self.digest) {
            (None, None) => {
                out.push(':');
                out.push_str(DEFAULT_TAG);
            }
            (tag, digest) => {
                if let Some(tag) = tag {
                    out.push(':');
                    out.push_str(tag);
                }
                if let Some(digest) = digest {
                    out.push('@');
                    out.push_str(digest);
                }
            }
        }
        out
    }
}

/// Normalises an image reference the way Docker and the CRI do.
///
/// `busybox` becomes `docker.io/library/busybox:latest`, `foo/bar` becomes
/// `docker.io/foo/bar:latest`, a first component containing `.` or `:` or
/// equal to `localhost` is kept as the registry, an explicit tag is kept, and
/// a digest reference (`name@sha256:<64 hex>`) is kept without adding a tag.
///
/// # Errors
/// [`ImageError::InvalidReference`] naming the input when it is empty, has
/// upper-case letters in the repository path, invalid characters, a malformed
/// tag, or a digest that is not `sha256:` followed by 64 lower-case hex digits.
pub fn normalize_reference(name: &str) -> Result<String, ImageError> {
    Reference::parse(name).map(|r| r.normalized())
}

/// Whether `s` is only a tag (`latest`, `v1.2`) rather than a name, as tools
/// like umoci and skopeo write in `org.opencontainers.image.ref.name`.
pub(crate) fn is_bare_tag(s: &str) -> bool {
    !s.contains(['/', ':', '@']) && is_valid_tag(s)
}

/// Whether `s` is exactly `sha256:<64 lower-case hex>`, i.e. an image ID a
/// user may pass instead of a name.
pub(crate) fn is_bare_digest(s: &str) -> bool {
    validate_digest(s).is_ok()
}

/// Checks the only digest form the store supports; the hex part is later used
/// as a file name, so this also keeps path separators out of blob paths.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} must be algorithm:hex"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest {digest:?} uses {algorithm:?}; only sha256 is supported"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("digest {digest:?} must have 64 lower-case hexadecimal digits"));
    }
    Ok(())
}

/// Splits off the registry the way Docker does: the first component is a
/// registry only if it looks like a host (has `.` or `:`, is `localhost`, or
/// has upper-case letters, which repository paths cannot).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let bad = || format!("registry {domain:?} is not a valid host[:port]");
    // Bracketed IPv6 literals contain ':' themselves, so split the port after
    // the closing bracket.
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                let b = label.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            });
        if !ok {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(())
}

fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn is_valid_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = component.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}
