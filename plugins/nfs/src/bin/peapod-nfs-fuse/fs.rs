//! The export as a FUSE filesystem: path-based, one libnfs context, one
//! thread. Node ids are ours (the root is 1), mapped to paths on the
//! export and kept across renames; open files keep their server handle.

use crate::libnfs::{Context, File, Stat64};
use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache attributes and names (as NFS's `actimeo=1`).
const TTL: Duration = Duration::from_secs(1);

pub struct NfsFs {
    nfs: Context,
    read_only: bool,
    paths: HashMap<u64, String>,
    inodes: HashMap<String, u64>,
    next_ino: u64,
    files: HashMap<u64, File>,
    next_fh: u64,
}

fn time(secs: u64, nsec: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nsec.min(999_999_999) as u32)
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn attr(ino: u64, st: &Stat64) -> FileAttr {
    FileAttr {
        ino,
        size: st.size,
        blocks: st.used.div_ceil(512).max(st.blocks),
        atime: time(st.atime, st.atime_nsec),
        mtime: time(st.mtime, st.mtime_nsec),
        ctime: time(st.ctime, st.ctime_nsec),
        crtime: time(st.ctime, st.ctime_nsec),
        kind: kind(st.mode as u32),
        perm: (st.mode & 0o7777) as u16,
        nlink: st.nlink as u32,
        uid: st.uid as u32,
        gid: st.gid as u32,
        rdev: st.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn timeval(t: Option<TimeOrNow>, keep: (u64, u64)) -> libc::timeval {
    let at = match t {
        Some(TimeOrNow::SpecificTime(t)) => t,
        Some(TimeOrNow::Now) => SystemTime::now(),
        None => time(keep.0, keep.1),
    };
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

/// `parent/name` on the export.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl NfsFs {
    pub fn new(nfs: Context, read_only: bool) -> Self {
        Self {
            nfs,
            read_only,
            paths: HashMap::from([(1, "/".to_string())]),
            inodes: HashMap::from([("/".to_string(), 1)]),
            next_ino: 2,
            files: HashMap::new(),
            next_fh: 1,
        }
    }

    fn ino_of(&mut self, path: &str) -> u64 {
        if let Some(i) = self.inodes.get(path) {
            return *i;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(i, path.to_string());
        self.inodes.insert(path.to_string(), i);
        i
    }

    fn path(&self, ino: u64) -> Result<String, i32> {
        self.paths.get(&ino).cloned().ok_or(libc::ESTALE)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<String, i32> {
        let name = name.to_str().ok_or(libc::EINVAL)?;
        Ok(join(&self.path(parent)?, name))
    }

    fn writable(&self) -> Result<(), i32> {
        if self.read_only {
            Err(libc::EROFS)
        } else {
            Ok(())
        }
    }

    fn entry(&mut self, path: &str, reply: ReplyEntry) {
        match self.nfs.lstat(path) {
            Ok(st) => {
                let ino = self.ino_of(path);
                reply.entry(&TTL, &attr(ino, &st), 0);
            }
            Err(e) => reply.error(e.errno),
        }
    }

    fn forget_path(&mut self, path: &str) {
        if let Some(i) = self.inodes.remove(path) {
            self.paths.remove(&i);
        }
    }

    fn keep_file(&mut self, f: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, f);
        fh
    }
}

macro_rules! tri {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(errno) => return $reply.error(errno),
        }
    };
}

fn errno<T>(r: crate::libnfs::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.errno)
}

impl Filesystem for NfsFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let path = tri!(reply, self.child(parent, name));
        self.entry(&path, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let path = tri!(reply, self.path(ino));
        let st = tri!(reply, errno(self.nfs.lstat(&path)));
        reply.attr(&TTL, &attr(ino, &st));
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        tri!(reply, self.writable());
        let path = tri!(reply, self.path(ino));
        let st = tri!(reply, errno(self.nfs.lstat(&path)));
        if let Some(m) = mode {
            tri!(reply, errno(self.nfs.chmod(&path, m & 0o7777)));
        }
        if uid.is_some() || gid.is_some() {
            let u = uid.map_or(st.uid as i32, |u| u as i32);
            let g = gid.map_or(st.gid as i32, |g| g as i32);
            tri!(reply, errno(self.nfs.lchown(&path, u, g)));
        }
        if let Some(len) = size {
            tri!(reply, errno(self.nfs.truncate(&path, len)));
        }
        if atime.is_some() || mtime.is_some() {
            let a = timeval(atime, (st.atime, st.atime_nsec));
            let m = timeval(mtime, (st.mtime, st.mtime_nsec));
            tri!(reply, errno(self.nfs.lutimes(&path, a, m)));
        }
        let st = tri!(reply, errno(self.nfs.lstat(&path)));
        reply.attr(&TTL, &attr(ino, &st));
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let path = tri!(reply, self.path(ino));
        let target = tri!(reply, errno(self.nfs.readlink(&path)));
        reply.data(&target);
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        tri!(reply, self.writable());
        let path = tri!(reply, self.child(parent, name));
        let mode = mode & !umask;
        if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            let f = tri!(reply, errno(self.nfs.create(&path, libc::O_RDWR, mode & 0o7777)));
            tri!(reply, errno(self.nfs.close(f)));
        } else {
            tri!(reply, errno(self.nfs.mknod(&path, mode, rdev)));
        }
        self.entry(&path, reply);
    }

    fn mkdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        tri!(reply, self.writable());
        let path = tri!(reply, self.child(parent, name));
        tri!(reply, errno(self.nfs.mkdir(&path, mode & !umask & 0o7777)));
        self.entry(&path, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, self.writable());
        let path = tri!(reply, self.child(parent, name));
        tri!(reply, errno(self.nfs.unlink(&path)));
        self.forget_path(&path);
        reply.ok();
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, self.writable());
        let path = tri!(reply, self.child(parent, name));
        tri!(reply, errno(self.nfs.rmdir(&path)));
        self.forget_path(&path);
        reply.ok();
    }

    fn symlink(&mut self, _req: &Request<'_>, parent: u64, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        tri!(reply, self.writable());
        let path = tri!(reply, self.child(parent, link_name));
        let target = tri!(reply, target.to_str().ok_or(libc::EINVAL));
        tri!(reply, errno(self.nfs.symlink(target, &path)));
        self.entry(&path, reply);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        tri!(reply, self.writable());
        if flags != 0 {
            return reply.error(libc::EINVAL);
        }
        let from = tri!(reply, self.child(parent, name));
        let to = tri!(reply, self.child(newparent, newname));
        tri!(reply, errno(self.nfs.rename(&from, &to)));
        // The target's old node is gone; the moved subtree keeps its ids.
        self.forget_path(&to);
        let moved: Vec<(String, u64)> = self
            .inodes
            .iter()
            .filter(|(p, _)| *p == &from || p.starts_with(&format!("{from}/")))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, i) in moved {
            let now = format!("{to}{}", &p[from.len()..]);
            self.inodes.remove(&p);
            self.inodes.insert(now.clone(), i);
            self.paths.insert(i, now);
        }
        reply.ok();
    }

    fn link(&mut self, _req: &Request<'_>, ino: u64, newparent: u64, newname: &OsStr, reply: ReplyEntry) {
        tri!(reply, self.writable());
        let from = tri!(reply, self.path(ino));
        let to = tri!(reply, self.child(newparent, newname));
        tri!(reply, errno(self.nfs.link(&from, &to)));
        self.entry(&to, reply);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let path = tri!(reply, self.path(ino));
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            tri!(reply, self.writable());
        }
        // O_APPEND is the kernel's: it passes the offset of every write.
        let flags = flags & (libc::O_ACCMODE | libc::O_TRUNC | libc::O_SYNC);
        let f = tri!(reply, errno(self.nfs.open(&path, flags)));
        let fh = self.keep_file(f);
        reply.opened(fh, 0);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(f) = self.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let n = tri!(reply, errno(self.nfs.pread(f, offset.max(0) as u64, &mut buf)));
        reply.data(&buf[..n]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        tri!(reply, self.writable());
        let Some(f) = self.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let n = tri!(reply, errno(self.nfs.pwrite(f, offset.max(0) as u64, data)));
        reply.written(n as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.files.remove(&fh) {
            Some(f) => match self.nfs.close(f) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e.errno),
            },
            None => reply.ok(),
        }
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let Some(f) = self.files.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        tri!(reply, errno(self.nfs.fsync(f)));
        reply.ok();
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let path = tri!(reply, self.path(ino));
        let entries = tri!(reply, errno(self.nfs.readdir(&path)));
        for (i, e) in entries.iter().enumerate().skip(offset.max(0) as usize) {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let child_ino = match name.as_str() {
                "." => ino,
                ".." => 1,
                n => self.ino_of(&join(&path, n)),
            };
            if reply.add(child_ino, (i + 1) as i64, kind(e.mode), &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let s = tri!(reply, errno(self.nfs.statvfs("/")));
        reply.statfs(
            s.blocks,
            s.bfree,
            s.bavail,
            s.files,
            s.ffree,
            s.bsize as u32,
            s.namemax as u32,
            s.frsize as u32,
        );
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        tri!(reply, self.writable());
        let path = tri!(reply, self.child(parent, name));
        let flags = flags & (libc::O_ACCMODE | libc::O_EXCL | libc::O_TRUNC);
        let f = tri!(reply, errno(self.nfs.create(&path, flags, mode & !umask & 0o7777)));
        let st = match self.nfs.lstat(&path) {
            Ok(st) => st,
            Err(e) => {
                let _ = self.nfs.close(f);
                return reply.error(e.errno);
            }
        };
        let ino = self.ino_of(&path);
        let fh = self.keep_file(f);
        reply.created(&TTL, &attr(ino, &st), 0, fh, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_below_the_root() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(matches!(kind(libc::S_IFDIR | 0o755), FileType::Directory));
        assert!(matches!(kind(libc::S_IFLNK), FileType::Symlink));
        assert!(matches!(kind(0o644), FileType::RegularFile));
    }
}
