//! The part of libnfs 4.0's synchronous API the client uses (Debian's
//! `libnfs13`), and a safe owner of one context. libnfs is not thread-safe:
//! a [`Context`] is used from one thread only.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

#[repr(C)]
pub struct NfsContext {
    _p: [u8; 0],
}
#[repr(C)]
pub struct NfsFh {
    _p: [u8; 0],
}
#[repr(C)]
pub struct NfsDir {
    _p: [u8; 0],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Stat64 {
    pub dev: u64,
    pub ino: u64,
    pub mode: u64,
    pub nlink: u64,
    pub uid: u64,
    pub gid: u64,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atime_nsec: u64,
    pub mtime_nsec: u64,
    pub ctime_nsec: u64,
    pub used: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct StatVfs64 {
    pub bsize: u64,
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub favail: u64,
    pub fsid: u64,
    pub flag: u64,
    pub namemax: u64,
}

#[repr(C)]
pub struct DirEnt {
    pub next: *mut DirEnt,
    pub name: *mut c_char,
    pub inode: u64,
    pub type_: u32,
    pub mode: u32,
    pub size: u64,
    pub atime: libc::timeval,
    pub mtime: libc::timeval,
    pub ctime: libc::timeval,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub dev: u64,
    pub rdev: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub used: u64,
    pub atime_nsec: u32,
    pub mtime_nsec: u32,
    pub ctime_nsec: u32,
}

#[link(name = "nfs")]
extern "C" {
    fn nfs_init_context() -> *mut NfsContext;
    fn nfs_destroy_context(nfs: *mut NfsContext);
    fn nfs_get_error(nfs: *mut NfsContext) -> *mut c_char;
    fn nfs_set_version(nfs: *mut NfsContext, version: c_int) -> c_int;
    fn nfs_set_timeout(nfs: *mut NfsContext, ms: c_int);
    fn nfs_set_autoreconnect(nfs: *mut NfsContext, retries: c_int);
    fn nfs_mount(nfs: *mut NfsContext, server: *const c_char, export: *const c_char) -> c_int;
    fn nfs_get_readmax(nfs: *mut NfsContext) -> u64;
    fn nfs_get_writemax(nfs: *mut NfsContext) -> u64;
    fn nfs_lstat64(nfs: *mut NfsContext, path: *const c_char, st: *mut Stat64) -> c_int;
    fn nfs_open(nfs: *mut NfsContext, path: *const c_char, flags: c_int, fh: *mut *mut NfsFh) -> c_int;
    fn nfs_create(nfs: *mut NfsContext, path: *const c_char, flags: c_int, mode: c_int, fh: *mut *mut NfsFh) -> c_int;
    fn nfs_close(nfs: *mut NfsContext, fh: *mut NfsFh) -> c_int;
    fn nfs_pread(nfs: *mut NfsContext, fh: *mut NfsFh, offset: u64, count: u64, buf: *mut c_void) -> c_int;
    fn nfs_pwrite(nfs: *mut NfsContext, fh: *mut NfsFh, offset: u64, count: u64, buf: *const c_void) -> c_int;
    fn nfs_fsync(nfs: *mut NfsContext, fh: *mut NfsFh) -> c_int;
    fn nfs_truncate(nfs: *mut NfsContext, path: *const c_char, length: u64) -> c_int;
    fn nfs_mkdir2(nfs: *mut NfsContext, path: *const c_char, mode: c_int) -> c_int;
    fn nfs_rmdir(nfs: *mut NfsContext, path: *const c_char) -> c_int;
    fn nfs_unlink(nfs: *mut NfsContext, path: *const c_char) -> c_int;
    fn nfs_mknod(nfs: *mut NfsContext, path: *const c_char, mode: c_int, dev: c_int) -> c_int;
    fn nfs_rename(nfs: *mut NfsContext, old: *const c_char, new: *const c_char) -> c_int;
    fn nfs_link(nfs: *mut NfsContext, old: *const c_char, new: *const c_char) -> c_int;
    fn nfs_symlink(nfs: *mut NfsContext, target: *const c_char, link: *const c_char) -> c_int;
    fn nfs_readlink(nfs: *mut NfsContext, path: *const c_char, buf: *mut c_char, size: c_int) -> c_int;
    fn nfs_chmod(nfs: *mut NfsContext, path: *const c_char, mode: c_int) -> c_int;
    fn nfs_lchown(nfs: *mut NfsContext, path: *const c_char, uid: c_int, gid: c_int) -> c_int;
    fn nfs_lutimes(nfs: *mut NfsContext, path: *const c_char, times: *mut libc::timeval) -> c_int;
    fn nfs_opendir(nfs: *mut NfsContext, path: *const c_char, dir: *mut *mut NfsDir) -> c_int;
    fn nfs_readdir(nfs: *mut NfsContext, dir: *mut NfsDir) -> *mut DirEnt;
    fn nfs_closedir(nfs: *mut NfsContext, dir: *mut NfsDir);
    fn nfs_statvfs64(nfs: *mut NfsContext, path: *const c_char, st: *mut StatVfs64) -> c_int;
}

/// An errno, or a message where libnfs gave one.
#[derive(Debug, Clone)]
pub struct Error {
    pub errno: i32,
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error {
        errno: libc::EINVAL,
        message: format!("{s:?} holds a NUL byte"),
    })
}

/// A directory entry as READDIRPLUS returned it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub mode: u32,
}

/// One mounted export on one connection.
pub struct Context {
    nfs: *mut NfsContext,
}

// The context moves to the FUSE thread once and is used there only.
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `nfs` came from nfs_init_context and is destroyed once.
        unsafe { nfs_destroy_context(self.nfs) }
    }
}

/// An open file on the server.
pub struct File(*mut NfsFh);

impl Context {
    /// Mounts `export` of `server` over NFSv3 (libnfs 4.0's NFSv4 writes
    /// fail past ~4000 bytes).
    pub fn mount(server: &str, export: &str, timeout_ms: i32) -> Result<Context> {
        // SAFETY: plain constructor; null on failure.
        let nfs = unsafe { nfs_init_context() };
        if nfs.is_null() {
            return Err(Error {
                errno: libc::ENOMEM,
                message: "nfs_init_context failed".into(),
            });
        }
        let ctx = Context { nfs };
        // SAFETY: `nfs` is a live context; the strings outlive the calls.
        unsafe {
            nfs_set_version(nfs, 3);
            nfs_set_timeout(nfs, timeout_ms);
            nfs_set_autoreconnect(nfs, -1);
        }
        let (s, e) = (cstr(server)?, cstr(export)?);
        // SAFETY: as above.
        let rc = unsafe { nfs_mount(nfs, s.as_ptr(), e.as_ptr()) };
        ctx.check(rc)?;
        Ok(ctx)
    }

    fn check(&self, rc: c_int) -> Result<c_int> {
        if rc >= 0 {
            return Ok(rc);
        }
        // SAFETY: nfs_get_error returns the context's last message (or null).
        let msg = unsafe { nfs_get_error(self.nfs) };
        let message = if msg.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string owned by the context.
            unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
        };
        Err(Error { errno: -rc, message })
    }

    /// The largest read and write the server takes in one call.
    pub fn io_max(&self) -> (u64, u64) {
        // SAFETY: live context.
        unsafe {
            (
                nfs_get_readmax(self.nfs).max(4096),
                nfs_get_writemax(self.nfs).max(4096),
            )
        }
    }

    pub fn lstat(&self, path: &str) -> Result<Stat64> {
        let p = cstr(path)?;
        let mut st = Stat64::default();
        // SAFETY: `st` is a valid out pointer of the header's layout.
        self.check(unsafe { nfs_lstat64(self.nfs, p.as_ptr(), &mut st) })?;
        Ok(st)
    }

    pub fn open(&self, path: &str, flags: i32) -> Result<File> {
        let p = cstr(path)?;
        let mut fh = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        self.check(unsafe { nfs_open(self.nfs, p.as_ptr(), flags, &mut fh) })?;
        Ok(File(fh))
    }

    pub fn create(&self, path: &str, flags: i32, mode: u32) -> Result<File> {
        let p = cstr(path)?;
        let mut fh = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        self.check(unsafe { nfs_create(self.nfs, p.as_ptr(), flags, mode as c_int, &mut fh) })?;
        Ok(File(fh))
    }

    pub fn close(&self, f: File) -> Result<()> {
        // SAFETY: `f` came from this context and is closed once (moved in).
        self.check(unsafe { nfs_close(self.nfs, f.0) }).map(drop)
    }

    /// Reads up to `buf.len()` bytes at `offset`, across as many calls as
    /// the server's limit needs; short only at the end of the file.
    pub fn pread(&self, f: &File, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (max, _) = self.io_max();
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(max as usize);
            // SAFETY: `buf[done..done+n]` is writable.
            let rc = unsafe {
                nfs_pread(
                    self.nfs,
                    f.0,
                    offset + done as u64,
                    n as u64,
                    buf[done..].as_mut_ptr().cast(),
                )
            };
            let got = self.check(rc)? as usize;
            if got == 0 {
                break;
            }
            done += got;
        }
        Ok(done)
    }

    /// Writes all of `data` at `offset`.
    pub fn pwrite(&self, f: &File, offset: u64, data: &[u8]) -> Result<usize> {
        let (_, max) = self.io_max();
        let mut done = 0usize;
        while done < data.len() {
            let n = (data.len() - done).min(max as usize);
            // SAFETY: `data[done..done+n]` is readable.
            let rc = unsafe {
                nfs_pwrite(
                    self.nfs,
                    f.0,
                    offset + done as u64,
                    n as u64,
                    data[done..].as_ptr().cast(),
                )
            };
            let put = self.check(rc)? as usize;
            if put == 0 {
                return Err(Error {
                    errno: libc::EIO,
                    message: "the server wrote nothing".into(),
                });
            }
            done += put;
        }
        Ok(done)
    }

    pub fn fsync(&self, f: &File) -> Result<()> {
        // SAFETY: live handle.
        self.check(unsafe { nfs_fsync(self.nfs, f.0) }).map(drop)
    }

    pub fn truncate(&self, path: &str, len: u64) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid string.
        self.check(unsafe { nfs_truncate(self.nfs, p.as_ptr(), len) }).map(drop)
    }

    pub fn mkdir(&self, path: &str, mode: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid string.
        self.check(unsafe { nfs_mkdir2(self.nfs, p.as_ptr(), mode as c_int) })
            .map(drop)
    }

    pub fn rmdir(&self, path: &str) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid string.
        self.check(unsafe { nfs_rmdir(self.nfs, p.as_ptr()) }).map(drop)
    }

    pub fn unlink(&self, path: &str) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid string.
        self.check(unsafe { nfs_unlink(self.nfs, p.as_ptr()) }).map(drop)
    }

    pub fn mknod(&self, path: &str, mode: u32, dev: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid string.
        self.check(unsafe { nfs_mknod(self.nfs, p.as_ptr(), mode as c_int, dev as c_int) })
            .map(drop)
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        // SAFETY: valid strings.
        self.check(unsafe { nfs_rename(self.nfs, a.as_ptr(), b.as_ptr()) })
            .map(drop)
    }

    pub fn link(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        // SAFETY: valid strings.
        self.check(unsafe { nfs_link(self.nfs, a.as_ptr(), b.as_ptr()) })
            .map(drop)
    }

    pub fn symlink(&self, target: &str, link: &str) -> Result<()> {
        let (a, b) = (cstr(target)?, cstr(link)?);
        // SAFETY: valid strings.
        self.check(unsafe { nfs_symlink(self.nfs, a.as_ptr(), b.as_ptr()) })
            .map(drop)
    }

    pub fn readlink(&self, path: &str) -> Result<Vec<u8>> {
        let p = cstr(path)?;
        let mut buf = vec![0u8; 4097];
        // SAFETY: `buf` has room for `len - 1` bytes and the NUL.
        self.check(unsafe { nfs_readlink(self.nfs, p.as_ptr(), buf.as_mut_ptr().cast(), buf.len() as c_int) })?;
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        buf.truncate(end);
        Ok(buf)
    }

    pub fn chmod(&self, path: &str, mode: u32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid string.
        self.check(unsafe { nfs_chmod(self.nfs, p.as_ptr(), mode as c_int) })
            .map(drop)
    }

    pub fn lchown(&self, path: &str, uid: i32, gid: i32) -> Result<()> {
        let p = cstr(path)?;
        // SAFETY: valid string.
        self.check(unsafe { nfs_lchown(self.nfs, p.as_ptr(), uid, gid) })
            .map(drop)
    }

    /// Sets access and modification times (seconds, microseconds).
    pub fn lutimes(&self, path: &str, atime: libc::timeval, mtime: libc::timeval) -> Result<()> {
        let p = cstr(path)?;
        let mut times = [atime, mtime];
        // SAFETY: two timevals, as utimes takes.
        self.check(unsafe { nfs_lutimes(self.nfs, p.as_ptr(), times.as_mut_ptr()) })
            .map(drop)
    }

    pub fn readdir(&self, path: &str) -> Result<Vec<Entry>> {
        let p = cstr(path)?;
        let mut dir = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        self.check(unsafe { nfs_opendir(self.nfs, p.as_ptr(), &mut dir) })?;
        let mut out = Vec::new();
        loop {
            // SAFETY: `dir` is open; entries live until closedir.
            let e = unsafe { nfs_readdir(self.nfs, dir) };
            if e.is_null() {
                break;
            }
            // SAFETY: a valid entry with a NUL-terminated name.
            let (name, mode) = unsafe { (CStr::from_ptr((*e).name).to_bytes().to_vec(), (*e).mode) };
            out.push(Entry { name, mode });
        }
        // SAFETY: closed once.
        unsafe { nfs_closedir(self.nfs, dir) };
        Ok(out)
    }

    pub fn statvfs(&self, path: &str) -> Result<StatVfs64> {
        let p = cstr(path)?;
        let mut st = StatVfs64::default();
        // SAFETY: valid out pointer.
        self.check(unsafe { nfs_statvfs64(self.nfs, p.as_ptr(), &mut st) })?;
        Ok(st)
    }

    /// Removes `path` and everything below it.
    pub fn remove_all(&self, path: &str) -> Result<()> {
        let st = match self.lstat(path) {
            Ok(st) => st,
            Err(e) if e.errno == libc::ENOENT => return Ok(()),
            Err(e) => return Err(e),
        };
        if st.mode as u32 & libc::S_IFMT != libc::S_IFDIR {
            return self.unlink(path);
        }
        for e in self.readdir(path)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let child = format!("{}/{}", path.trim_end_matches('/'), String::from_utf8_lossy(&e.name));
            self.remove_all(&child)?;
        }
        self.rmdir(path)
    }
}
