//! Unpacking layer tarballs into overlayfs lower directories, and extracting
//! oci-archive tarballs into plain layout directories.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nix::fcntl::AtFlags;
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, geteuid, Gid, Uid};
use sha2::{Digest, Sha256};
use tar::EntryType;
use tracing::{debug, warn};

use super::fsutil::{io_err, set_xattr};
use super::oci::Compression;
use super::ImageError;

/// Prefix marking a whiteout entry in an OCI layer.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// What follows [`WHITEOUT_PREFIX`] in the opaque-directory marker
/// `.wh..wh..opq`.
const OPAQUE_MARKER_REST: &[u8] = b".wh..opq";
/// overlayfs hides lower layers below a directory carrying this xattr = "y".
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX records carrying extended attributes (GNU tar / Docker spelling).
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Turns an archive path into a path relative to the extraction root, or
/// `None` when it is absolute or climbs with `..` (both could write outside
/// the root). `./` components are dropped; the empty result means the root.
///
/// A path that is nothing but `/` is accepted as the root itself: umoci
/// writes its layers' root directory entry that way, and it cannot escape.
pub(crate) fn sanitize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut absolute = false;
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => absolute = true,
            Component::ParentDir => return None,
        }
    }
    if absolute && !out.as_os_str().is_empty() {
        return None;
    }
    Some(out)
}

/// A reader that hashes everything read through it, so a layer's diff_id
/// (the sha256 of the uncompressed tar) is checked in the same pass that
/// unpacks it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// `sha256:<hex>` of everything read so far.
    pub(crate) fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Unpacks the layer blob at `blob` into the empty directory `dest`,
/// converting OCI whiteouts to overlayfs form, and verifies that the
/// uncompressed stream hashes to `diff_id`.
///
/// On error `dest` is left partially filled; the caller unpacks into a
/// temporary directory and discards it.
pub(crate) fn unpack_layer(
    blob: &Path,
    compression: Compression,
    digest: &str,
    diff_id: &str,
    dest: &Path,
    max_bytes: u64,
) -> Result<(), ImageError> {
    let file = File::open(blob).map_err(io_err("open layer", blob))?;
    let buffered = BufReader::new(file);
    // Multi-member gzip (pigz, concatenated streams) is valid for layers.
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(ZstdFrames::new(buffered)),
    };
    let mut hashing = HashingReader::new(Capped {
        inner: decoded,
        left: max_bytes,
        max: max_bytes,
    });

    // The layer root becomes the merged root's attributes when this is the
    // top layer; do not let the caller's umask decide them.
    fs::set_permissions(dest, Permissions::from_mode(0o755)).map_err(io_err("chmod", dest))?;

    let mut unpacker = Unpacker {
        root: dest,
        blob,
        digest,
        max_bytes,
        unpacked: 0,
        is_root: geteuid().is_root(),
        dirs: BTreeMap::new(),
        opaque: BTreeSet::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(io_err("read layer", blob))?;
        for entry in entries {
            let mut entry = entry.map_err(io_err("read layer", blob))?;
            unpacker.apply(&mut entry)?;
        }
    }
    // tar stops at the first end-of-archive block; the diff_id covers the
    // whole stream, padding included.
    io::copy(&mut hashing, &mut io::sink()).map_err(io_err("read layer", blob))?;
    let actual = hashing.digest();
    if actual != diff_id {
        return Err(ImageError::DiffIdMismatch {
            digest: digest.to_string(),
            diff_id: diff_id.to_string(),
            actual,
        });
    }
    unpacker.finish()
}

/// Ownership, permissions and modification time of an entry.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
}

/// What PAX records add beyond the tar header (tar already applies PAX
/// path, size, uid and gid itself).
#[derive(Default)]
struct PaxInfo {
    mtime: Option<TimeSpec>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A decompressed stream that ends in an error past `max` bytes: a small
/// gzip blob can expand without end.
struct Capped<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Whether the stream really goes on: one more byte says so.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "the layer decompresses to more than {} bytes (--max-layer-size)",
                    self.max
                ))),
            };
        }
        let room = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes `from` into `file`, leaving runs of zeros as holes, and sets its
/// length: a sparse entry stays sparse on disk.
fn copy_sparse(from: &mut impl Read, file: &mut File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            file.seek(SeekFrom::Current(n as i64))?;
        } else {
            file.write_all(&buf[..n])?;
        }
        len += n as u64;
    }
    file.set_len(len)?;
    Ok(len)
}

struct Unpacker<'a> {
    root: &'a Path,
    blob: &'a Path,
    digest: &'a str,
    /// At most this many bytes of files in the layer (`--max-layer-size`).
    max_bytes: u64,
    /// Bytes of files so far, sparse files at their full size.
    unpacked: u64,
    /// chown needs root; unprivileged unpacking (development) keeps the
    /// caller's ownership instead of failing.
    is_root: bool,
    /// Directory metadata is applied last: creating children would bump the
    /// mtime, and a read-only mode would block them for a non-root caller.
    dirs: BTreeMap<PathBuf, Meta>,
    /// Directories that had a `.wh..wh..opq` marker.
    opaque: BTreeSet<PathBuf>,
}

impl Unpacker<'_> {
    fn entry_error(&self, entry: &str, reason: impl Into<String>) -> ImageError {
        ImageError::LayerEntry {
            digest: self.digest.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let path = entry
            .path()
            .map_err(|e| self.entry_error(&name, format!("unreadable path: {e}")))?
            .into_owned();
        let rel = sanitize(&path)
            .ok_or_else(|| self.entry_error(&name, "path escapes the layer directory (absolute or contains '..')"))?;
        let pax = pax_info(entry).map_err(|e| self.entry_error(&name, format!("bad PAX header: {e}")))?;
        let meta = self.meta(entry, &pax, &name)?;

        let Some(file_name) = rel.file_name() else {
            // `./` describes the layer root itself.
            if kind.is_dir() {
                self.dirs.insert(self.root.to_path_buf(), meta);
                return Ok(());
            }
            return Err(self.entry_error(&name, "only a directory may name the layer root"));
        };
        if let Some(hidden) = file_name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&rel, hidden, &name);
        }

        let parent = self.prepare_parent(&rel, &name)?;
        let target = parent.join(file_name);
        match kind {
            EntryType::Directory => {
                if !self.clear(&target, true)? {
                    DirBuilder::new()
                        .mode(0o700)
                        .create(&target)
                        .map_err(io_err("create directory", &target))?;
                }
                apply_xattrs(&target, &pax.xattrs);
                self.dirs.insert(target, meta);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // A sparse entry's header names its full size, which reading
                // it produces (as zeros) from a few bytes of archive.
                let size = if kind == EntryType::GNUSparse {
                    entry
                        .header()
                        .as_gnu()
                        .and_then(|g| g.real_size().ok())
                        .unwrap_or(u64::MAX)
                } else {
                    entry.size()
                };
                self.unpacked = self.unpacked.saturating_add(size);
                if self.unpacked > self.max_bytes {
                    return Err(self.entry_error(
                        &name,
                        format!(
                            "the layer's files add up to more than {} bytes (--max-layer-size)",
                            self.max_bytes
                        ),
                    ));
                }
                self.clear(&target, false)?;
                // Private until chmod below, so nothing sees it half-written
                // with its final (perhaps setuid) mode.
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io_err("create", &target))?;
                copy_sparse(entry, &mut file).map_err(io_err("unpack", &target))?;
                drop(file);
                self.set_meta(&target, meta, false)?;
                // After chown, which clears security.capability.
                apply_xattrs(&target, &pax.xattrs);
            }
            EntryType::Symlink => {
                let link = link_name(entry)
                    .map_err(|e| self.entry_error(&name, format!("unreadable link target: {e}")))?
                    .ok_or_else(|| self.entry_error(&name, "symlink has no target"))?;
                self.clear(&target, false)?;
                // The target is stored verbatim: it is only ever resolved
                // inside the container's root, and the unpacker itself never
                // follows symlinks (see prepare_parent).
                std::os::unix::fs::symlink(&link, &target).map_err(io_err("symlink", &target))?;
                self.set_meta(&target, meta, true)?;
            }
            EntryType::Link => {
                let link = link_name(entry)
                    .map_err(|e| self.entry_error(&name, format!("unreadable link target: {e}")))?
                    .ok_or_else(|| self.entry_error(&name, "hard link has no target"))?;
                let source_rel = sanitize(&link).ok_or_else(|| {
                    self.entry_error(
                        &name,
                        format!("hard link target {} escapes the layer directory", link.display()),
                    )
                })?;
                let source = self.existing_file(&source_rel, &name)?;
                if source == target {
                    return Ok(());
                }
                self.clear(&target, false)?;
                // std's hard_link does not follow a symlink source, so a
                // link to a symlink stays inside the layer.
                fs::hard_link(&source, &target).map_err(io_err("hard link", &target))?;
            }
            // A layer's device nodes are not made: an image could otherwise
            // ship the host's disk (`b 8 0`, mode 0666) into every container
            // and into the node's own image store. The runtime gives each
            // container the devices it may use.
            EntryType::Char | EntryType::Block => {
                warn!(layer = self.digest, entry = %name, "skipping a device node in an image layer");
            }
            EntryType::Fifo => {
                self.clear(&target, false)?;
                mknod(&target, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| io_err("mknod", &target)(e.into()))?;
                self.set_meta(&target, meta, false)?;
            }
            other => {
                debug!(layer = self.digest, entry = %name, kind = ?other, "skipping unsupported tar entry type");
            }
        }
        Ok(())
    }

    /// Reads an entry's metadata, refusing ids that do not fit a uid_t.
    fn meta<R: Read>(&self, entry: &tar::Entry<'_, R>, pax: &PaxInfo, name: &str) -> Result<Meta, ImageError> {
        let header = entry.header();
        let bad = |what: &str, e: io::Error| self.entry_error(name, format!("bad {what}: {e}"));
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let uid = header.uid().map_err(|e| bad("uid", e))?;
        let gid = header.gid().map_err(|e| bad("gid", e))?;
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(self.entry_error(name, format!("owner {uid}:{gid} is out of range")));
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => {
                let secs = header.mtime().map_err(|e| bad("mtime", e))?;
                TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
            }
        };
        Ok(Meta { mode, uid, gid, mtime })
    }

    /// Handles `.wh.<name>` (delete `<name>` from lower layers) and
    /// `.wh..wh..opq` (hide the whole lower directory), in overlayfs form.
    fn whiteout(&mut self, rel: &Path, hidden: &[u8], name: &str) -> Result<(), ImageError> {
        let parent = self.prepare_parent(rel, name)?;
        if hidden == OPAQUE_MARKER_REST {
            self.opaque.insert(parent);
            return Ok(());
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.*` names are aufs bookkeeping (e.g. `.wh..wh.plnk`)
            // with no meaning for overlayfs.
            debug!(layer = self.digest, entry = %name, "skipping aufs metadata entry");
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.entry_error(name, "whiteout names no file"));
        }
        let target = parent.join(OsStr::from_bytes(hidden));
        self.clear(&target, false)?;
        // overlayfs's whiteout is a 0:0 character device with the hidden name.
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| io_err("mknod whiteout", &target)(e.into()))
    }

    /// Creates the missing parent directories of `rel` and returns the
    /// absolute parent. Refuses to pass through a symlink: a layer holding
    /// `x -> /etc` and then `x/passwd` must not write to the host's /etc.
    fn prepare_parent(&self, rel: &Path, name: &str) -> Result<PathBuf, ImageError> {
        let mut current = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(current);
        };
        for component in parent.components() {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.entry_error(
                        name,
                        format!(
                            "parent {} is a symlink; refusing to write through it",
                            self.display(&current)
                        ),
                    ))
                }
                Ok(_) => {
                    return Err(self.entry_error(name, format!("parent {} is not a directory", self.display(&current))))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Implicit parents get the conventional mode; an explicit
                    // entry later in the tar overrides it.
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&current)
                        .map_err(io_err("create directory", &current))?;
                    // Whatever the umask of the process unpacking.
                    fs::set_permissions(&current, Permissions::from_mode(0o755)).map_err(io_err("chmod", &current))?;
                }
                Err(e) => return Err(io_err("stat", &current)(e)),
            }
        }
        Ok(current)
    }

    /// Resolves a hard link source: it must already be in this layer, reached
    /// without symlinks, and not be a directory.
    fn existing_file(&self, rel: &Path, name: &str) -> Result<PathBuf, ImageError> {
        let mut current = self.root.to_path_buf();
        let count = rel.components().count();
        for (i, component) in rel.components().enumerate() {
            current.push(component);
            let last = i + 1 == count;
            match fs::symlink_metadata(&current) {
                Ok(m) if last && !m.is_dir() => return Ok(current),
                Ok(m) if !last && m.file_type().is_dir() => {}
                Ok(_) | Err(_) => break,
            }
        }
        Err(self.entry_error(
            name,
            format!("hard link target {} is not a file earlier in this layer", rel.display()),
        ))
    }

    /// Makes room for a new entry at `target`. When `keep_dir` and a
    /// directory is already there it is kept (tar may list a directory twice,
    /// or after its children); returns whether it was kept.
    fn clear(&mut self, target: &Path, keep_dir: bool) -> Result<bool, ImageError> {
        match fs::symlink_metadata(target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("stat", target)(e)),
            Ok(m) if m.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(target).map_err(io_err("remove", target))?;
                // Forget deferred work for what was just deleted.
                self.dirs.retain(|p, _| !p.starts_with(target));
                self.opaque.retain(|p| !p.starts_with(target));
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(target).map_err(io_err("remove", target))?;
                Ok(false)
            }
        }
    }

    /// chown, then chmod (chown clears setuid bits), then mtime; never
    /// following a symlink at `path`.
    fn set_meta(&self, path: &Path, meta: Meta, is_symlink: bool) -> Result<(), ImageError> {
        if self.is_root {
            fchownat(
                None,
                path,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err("chown", path)(e.into()))?;
        }
        if !is_symlink {
            fs::set_permissions(path, Permissions::from_mode(meta.mode)).map_err(io_err("chmod", path))?;
        }
        utimensat(None, path, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| io_err("set mtime", path)(e.into()))
    }

    /// Applies the deferred opaque markers and directory metadata.
    fn finish(self) -> Result<(), ImageError> {
        for dir in &self.opaque {
            set_xattr(dir, OVERLAY_OPAQUE_XATTR, b"y")?;
        }
        // Children before parents, although metadata changes on a child do
        // not touch its parent's mtime; the order only matters for clarity.
        for (dir, meta) in self.dirs.iter().rev() {
            self.set_meta(dir, *meta, false)?;
        }
        debug!(layer = self.digest, blob = %self.blob.display(), "layer unpacked");
        Ok(())
    }

    fn display(&self, path: &Path) -> String {
        path.strip_prefix(self.root).unwrap_or(path).display().to_string()
    }
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<Option<PathBuf>> {
    Ok(entry.link_name()?.map(|l| l.into_owned()))
}

fn pax_info<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<PaxInfo> {
    let mut info = PaxInfo::default();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            let Ok(key) = extension.key() else { continue };
            if key == "mtime" {
                info.mtime = parse_pax_time(extension.value_bytes());
            } else if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                info.xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
            }
        }
    }
    Ok(info)
}

/// Parses a PAX time (`1600000000.123456789`); `None` (fall back to the
/// header's whole seconds) for anything unusual such as negative times.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if secs < 0 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    Some(TimeSpec::new(secs, nanos))
}

/// Applies the extended attributes a layer carries. Only file capabilities
/// and `user.*` are honoured: `trusted.*` (overlayfs's own namespace) from an
/// image could forge redirects or whiteouts, and SELinux labels are the
/// runtime's business. Failures are logged, not fatal, because some file
/// systems lack xattr support and most images run fine without them.
fn apply_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) {
    for (name, value) in xattrs {
        if name != "security.capability" && !name.starts_with("user.") {
            debug!(path = %path.display(), xattr = %name, "ignoring layer xattr");
            continue;
        }
        if let Err(e) = set_xattr(path, name, value) {
            warn!(error = %e, "could not apply layer xattr");
        }
    }
}

/// Extracts an oci-archive (a tar of an OCI layout, optionally gzipped) into
/// the existing empty directory `dest`.
///
/// Only directories and regular files are extracted — a layout needs nothing
/// else — so no symlink can redirect a later write; paths that escape
/// `dest` are refused with an error naming the entry.
pub(crate) fn extract_archive(archive: &Path, dest: &Path) -> Result<(), ImageError> {
    let mut file = File::open(archive).map_err(io_err("open archive", archive))?;
    let mut magic = [0u8; 2];
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0)).map_err(io_err("read archive", archive))?;
    let buffered = BufReader::new(file);
    let reader: Box<dyn Read> = if gzipped {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(io_err("read archive", archive))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read archive", archive))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_error = |reason: String| ImageError::ArchiveEntry {
            path: archive.to_path_buf(),
            entry: name.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        let path = entry
            .path()
            .map_err(|e| entry_error(format!("unreadable path: {e}")))?
            .into_owned();
        let rel = sanitize(&path)
            .ok_or_else(|| entry_error("path escapes the extraction directory (absolute or contains '..')".into()))?;
        let target = dest.join(&rel);
        match kind {
            EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_err("create directory", &target))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(entry_error("a file cannot name the archive root".into()));
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
                }
                let mut out = File::create(&target).map_err(io_err("create", &target))?;
                io::copy(&mut entry, &mut out).map_err(io_err("extract", &target))?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {}
            other => {
                debug!(archive = %archive.display(), entry = %name, kind = ?other, "skipping archive entry that an OCI layout does not need");
            }
        }
    }
    Ok(())
}

/// Reads a zstd stream of any number of frames, skipping skippable frames
/// (zstd:chunked layers carry their table of contents in them), as the
/// `zstd` tool and containerd do.
struct ZstdFrames<R: Read> {
    frame: Option<ruzstd::decoding::StreamingDecoder<Prefixed<R>, ruzstd::decoding::FrameDecoder>>,
    idle: Option<(Prefixed<R>, ruzstd::decoding::FrameDecoder)>,
}

/// A reader that yields `prefix` (bytes already read to look at them) first.
struct Prefixed<R> {
    prefix: [u8; 4],
    pos: usize,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.pos);
            buf[..n].copy_from_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

const ZSTD_SKIPPABLE: std::ops::RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;

impl<R: Read> ZstdFrames<R> {
    fn new(inner: R) -> Self {
        let source = Prefixed {
            prefix: [0; 4],
            pos: 4,
            inner,
        };
        Self {
            frame: None,
            idle: Some((source, ruzstd::decoding::FrameDecoder::new())),
        }
    }

    /// Starts the next frame; `false` at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"));
        loop {
            let Some((mut source, decoder)) = self.idle.take() else {
                return Ok(false);
            };
            let mut magic = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                match source.read(&mut magic[got..])? {
                    0 if got == 0 => return Ok(false),
                    0 => return Err(invalid("truncated frame header".into())),
                    n => got += n,
                }
            }
            let number = u32::from_le_bytes(magic);
            if ZSTD_SKIPPABLE.contains(&number) {
                let mut length = [0u8; 4];
                source.read_exact(&mut length)?;
                let length = u64::from(u32::from_le_bytes(length));
                let skipped = io::copy(&mut (&mut source).take(length), &mut io::sink())?;
                if skipped != length {
                    return Err(invalid("truncated skippable frame".into()));
                }
                self.idle = Some((source, decoder));
                continue;
            }
            source.prefix = magic;
            source.pos = 0;
            let frame = ruzstd::decoding::StreamingDecoder::new_with_decoder(source, decoder)
                .map_err(|e| invalid(e.to_string()))?;
            self.frame = Some(frame);
            return Ok(true);
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(frame) = self.frame.as_mut() {
                let n = frame.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                let done = self.frame.take().map(|f| f.into_parts());
                self.idle = done;
            }
            if !self.next_frame()? {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod zstd_tests {
    use super::ZstdFrames;
    use std::io::Read;

    fn compress(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn frames_and_skippable_frames_read_as_one_stream() {
        let a: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let b = b"second frame".to_vec();
        let mut stream = compress(&a);
        // A skippable frame between them (magic 0x184D2A5E, 5 bytes).
        stream.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(compress(&b));
        let mut out = Vec::new();
        ZstdFrames::new(&stream[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, [a, b].concat());
        let mut empty = Vec::new();
        ZstdFrames::new(&[][..]).read_to_end(&mut empty).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn damage_is_an_error() {
        let mut stream = compress(b"some data that is long enough to compress into blocks");
        stream.truncate(stream.len() - 3);
        let mut out = Vec::new();
        assert!(ZstdFrames::new(&stream[..]).read_to_end(&mut out).is_err());
        let mut out = Vec::new();
        let e = ZstdFrames::new(&b"nonsense"[..]).read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("zstd"), "{e}");
    }
}
