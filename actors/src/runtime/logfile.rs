//! Container log files, in kubelet's CRI format, rotated by size.
//!
//! A container's stdout and stderr are pipes to its shim, which writes one
//! record per line: `<RFC 3339 time> <stdout|stderr> <F|P> <line>`, where `F`
//! ends a line and `P` is a piece of a line longer than [`MAX_LINE`] (as
//! containerd writes them, and kubelet reads them). When the next record would
//! take the file past its size limit, the file is renamed `<file>.1` (an older
//! `.1` becomes `.2`, and so on) and a new one begun; files past the count
//! are removed, so a container's log never holds more than
//! `max_size × max_files` plus one record.
//!
//! [`LogReader`] reads the rotated files and the live one as one log: the
//! last lines (`--tail`) across files, lines since a time, timestamps, a byte
//! limit, and following the live file through rotations. A line that is not a
//! CRI record (a log written by an older peapod, straight from the
//! container) is passed through as it is.

use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The longest line written as one record; longer lines are cut into `P`
/// pieces of this size (containerd's default `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// How much one read takes, from a pipe or from a log file.
pub const CHUNK: usize = 64 * 1024;

/// A physical line longer than this (only in a log not written by us) is
/// passed on in pieces rather than held whole.
const MAX_CARRY: usize = 1024 * 1024;

/// Which of the container's outputs a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A record's time as the CRI format writes it (nanoseconds, UTC).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Cuts one output stream into lines: whole lines when a newline comes,
/// pieces of [`MAX_LINE`] while a longer one is still being written. Holds
/// at most [`MAX_LINE`] bytes between calls.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Passes each complete line (without its newline) and each piece of a
    /// long line to `out` as `(bytes, partial)`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(&[u8], bool)) {
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            let (line, rest) = (&data[..i], &data[i + 1..]);
            if self.pending.is_empty() {
                emit(line, out);
            } else {
                self.pending.extend_from_slice(line);
                let whole = std::mem::take(&mut self.pending);
                emit(&whole, out);
            }
            data = rest;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() > MAX_LINE {
            let mut at = 0;
            while self.pending.len() - at > MAX_LINE {
                out(&self.pending[at..at + MAX_LINE], true);
                at += MAX_LINE;
            }
            self.pending.drain(..at);
        }
    }

    /// The stream ended: what is left is the last line, though no newline ended it.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            emit(&rest, out);
        }
    }
}

fn emit(mut line: &[u8], out: &mut impl FnMut(&[u8], bool)) {
    while line.len() > MAX_LINE {
        out(&line[..MAX_LINE], true);
        line = &line[MAX_LINE..];
    }
    out(line, false);
}

/// The name of the `n`th rotated file of `path` (`0.log.1` is the newest).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Appends CRI records to a log file and rotates it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    /// Bytes in `file`.
    size: u64,
    /// Records not yet written.
    buf: Vec<u8>,
    /// 0: no limit.
    max_size: u64,
    /// Files kept, the live one included (at least 1).
    max_files: u32,
}

impl LogWriter {
    /// Opens (creates) `path` for appending.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            buf: Vec::with_capacity(CHUNK),
            max_size,
            max_files: max_files.max(1),
        })
    }

    /// Adds one record; rotates first when it would take the file past the
    /// size limit. `time` is [`timestamp`]'s text.
    pub fn push(&mut self, time: &str, stream: Stream, line: &[u8], partial: bool) -> io::Result<()> {
        let len = (time.len() + stream.name().len() + line.len() + 5) as u64;
        let held = self.size + self.buf.len() as u64;
        if self.max_size > 0 && held > 0 && held + len > self.max_size {
            self.flush()?;
            self.rotate()?;
        }
        self.buf.extend_from_slice(time.as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(stream.name().as_bytes());
        self.buf.extend_from_slice(if partial { b" P " } else { b" F " });
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        if self.buf.len() >= 4 * CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what [`push`](Self::push) holds.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.buf);
        // A failed write is not retried: the records are dropped rather than
        // held without bound (the container must not stall on a full disk).
        self.size += self.buf.len() as u64;
        self.buf.clear();
        r
    }

    /// Starts a new file: the live one becomes `.1`, each older one moves
    /// up by one, and the one past the count is gone. With one file kept,
    /// or if renaming fails, the live file is emptied instead: the bound
    /// holds either way.
    fn rotate(&mut self) -> io::Result<()> {
        self.size = 0;
        if self.max_files == 1 {
            return self.file.set_len(0);
        }
        let renamed = (|| -> io::Result<File> {
            for n in (1..self.max_files - 1).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            open_append(&self.path)
        })();
        match renamed {
            Ok(file) => {
                self.file = file;
                Ok(())
            }
            Err(e) => {
                self.file.set_len(0)?;
                Err(io::Error::new(e.kind(), format!("rotate {}: {e}", self.path.display())))
            }
        }
    }
}

/// One CRI record, a line of a log file without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a [u8],
    pub stream: Stream,
    pub partial: bool,
    pub msg: &'a [u8],
}

/// Reads a CRI record; `None` for a line in any other form.
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    // A record of an empty line is `<time> stdout F ` or, from some
    // writers, `<time> stdout F` with no space after the tag.
    let msg = parts.next().unwrap_or(b"");
    if time.len() < 20 || !time[0].is_ascii_digit() || time.get(10) != Some(&b'T') {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial,
        msg,
    })
}

fn parse_time(t: &[u8]) -> Option<DateTime<Utc>> {
    let s = std::str::from_utf8(t).ok()?;
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// What a reader returns of the log.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last this many lines (of what the log holds when opened).
    pub tail: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Start each line with its time.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
    /// Keep reading what is appended, through rotations, until told to stop.
    pub follow: bool,
}

/// One file of the log as the reader holds it.
#[derive(Debug)]
struct Segment {
    file: File,
    ino: u64,
    offset: u64,
    /// Where reading this file stops; `None` for the live file when following.
    end: Option<u64>,
}

/// Reads a container's log: its rotated files, oldest first, then the live one.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    opts: ReadOptions,
    files: VecDeque<Segment>,
    /// The start of a physical line whose newline has not been read yet.
    carry: Vec<u8>,
    /// The output is at the start of a line (where a timestamp goes).
    line_start: bool,
    /// Bytes of output still allowed.
    remaining: Option<u64>,
    /// Looks for the file that follows the live one once it is read out.
    following: bool,
    /// One chunk, reused by every read.
    buf: Vec<u8>,
}

/// The log's files as they are now, oldest first: `.N` … `.1`, then the
/// live file (if it exists). Each is opened, so renames after this do not
/// matter. A rotation while the files are opened would give a chain with a
/// file twice or one missing, so the names are checked again afterwards and
/// the opening retried until nothing moved.
fn open_chain(path: &Path) -> io::Result<Vec<(File, u64)>> {
    // Of the chains seen while files moved, the one holding the most bytes:
    // a chain caught mid-rotation may have lost its rotated files and hold
    // only the new, empty live one.
    let mut best: Option<(u64, Vec<(File, u64)>)> = None;
    for _ in 0..50 {
        match try_open_chain(path) {
            Ok((chain, true)) => return Ok(chain),
            Ok((chain, false)) => {
                let bytes = chain
                    .iter()
                    .map(|(f, _)| f.metadata().map_or(0, |m| m.len()))
                    .sum::<u64>();
                if best.as_ref().is_none_or(|(b, _)| bytes >= *b) {
                    best = Some((bytes, chain));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Rotating without pause: that chain, each file once.
    let mut chain = best
        .map(|(_, c)| c)
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    let mut seen = std::collections::HashSet::new();
    chain.retain(|(_, ino)| seen.insert(*ino));
    Ok(chain)
}

/// One try of [`open_chain`], and whether nothing moved meanwhile.
fn try_open_chain(path: &Path) -> io::Result<(Vec<(File, u64)>, bool)> {
    let ino_of = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => Ok(Some(m.ino())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    // (name, file, inode), newest rotated first.
    let mut opened: Vec<(PathBuf, File, u64)> = Vec::new();
    let mut stable = true;
    for n in 1..=10_000 {
        let name = rotated(path, n);
        match File::open(&name) {
            Ok(f) => {
                let ino = f.metadata()?.ino();
                opened.push((name, f, ino));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // `.n` is missing for a moment while older files move up.
                stable = ino_of(&rotated(path, n + 1))?.is_none();
                break;
            }
            Err(e) => return Err(e),
        }
    }
    opened.reverse();
    let live = match File::open(path) {
        Ok(f) => {
            let ino = f.metadata()?.ino();
            Some((path.to_path_buf(), f, ino))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if live.is_none() && opened.is_empty() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    opened.extend(live);
    for (name, _, ino) in &opened {
        stable &= ino_of(name)? == Some(*ino);
    }
    let rotated_count = opened.len() as u32 - u32::from(opened.last().is_some_and(|(n, _, _)| n == path));
    stable &= ino_of(&rotated(path, rotated_count + 1))?.is_none();
    Ok((opened.into_iter().map(|(_, f, ino)| (f, ino)).collect(), stable))
}

impl LogReader {
    /// Opens the log whose live file is `path`. Fails with `NotFound` when
    /// there is no log at all.
    pub fn open(path: &Path, opts: ReadOptions) -> io::Result<LogReader> {
        let chain = open_chain(path)?;
        let last = chain.len().saturating_sub(1);
        let mut files = VecDeque::new();
        for (i, (file, ino)) in chain.into_iter().enumerate() {
            let mut len = file.metadata()?.len();
            if i == last && !opts.follow {
                // A record being written as the log is read is not a line yet:
                // read up to the last whole one (else `--tail 1` could be that
                // unfinished record alone, and print nothing). Plain logs of
                // older peapods keep a last line without a newline.
                len = complete_len(&file, len)?;
            }
            files.push_back(Segment {
                file,
                ino,
                offset: 0,
                end: (i < last || !opts.follow).then_some(len),
            });
        }
        if let Some(n) = opts.tail {
            let lens: Vec<u64> = files
                .iter()
                .map(|s| s.end.map_or_else(|| s.file.metadata().map(|m| m.len()), Ok))
                .collect::<io::Result<_>>()?;
            let files_only: Vec<&File> = files.iter().map(|s| &s.file).collect();
            let (first, offset) = tail_start(&files_only, &lens, n)?;
            files.drain(..first);
            if let Some(s) = files.front_mut() {
                s.offset = offset;
            }
        }
        Ok(LogReader {
            path: path.to_path_buf(),
            remaining: opts.limit_bytes,
            following: opts.follow,
            opts,
            files,
            carry: Vec::new(),
            line_start: true,
            buf: vec![0u8; CHUNK],
        })
    }

    /// Whether the reader waits for more at the end of the live file.
    pub fn following(&self) -> bool {
        self.opts.follow
    }

    /// From now on, read to the end of what is written and stop (the
    /// container no longer runs).
    pub fn stop_following(&mut self) {
        self.opts.follow = false;
    }

    /// The next piece of output: `Some` with what there is (empty when
    /// following and nothing new was written), `None` when the log is done.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = std::mem::take(&mut self.buf);
        let out = self.read_next(&mut buf);
        self.buf = buf;
        out
    }

    fn read_next(&mut self, buf: &mut [u8]) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.remaining == Some(0) {
                return Ok(None);
            }
            let Some(seg) = self.files.front_mut() else {
                return Ok(None);
            };
            let want = seg
                .end
                .map_or(CHUNK, |end| end.saturating_sub(seg.offset).min(CHUNK as u64) as usize);
            let n = if want == 0 {
                0
            } else {
                seg.file.read_at(&mut buf[..want], seg.offset)?
            };
            if n > 0 {
                seg.offset += n as u64;
                let mut out = Vec::new();
                self.take(&buf[..n], &mut out);
                if !out.is_empty() {
                    return Ok(Some(self.limit(out)));
                }
                continue;
            }
            // This file is read out.
            if self.files.len() > 1 {
                self.files.pop_front();
                let out = self.flush_carry();
                if !out.is_empty() {
                    return Ok(Some(self.limit(out)));
                }
                continue;
            }
            if self.following {
                let ino = self.files[0].ino;
                if let Some(next) = self.successor(ino)? {
                    self.files[0] = next;
                    let out = self.flush_carry();
                    if !out.is_empty() {
                        return Ok(Some(self.limit(out)));
                    }
                    continue;
                }
                if self.opts.follow {
                    return Ok(Some(Vec::new()));
                }
            }
            self.files.pop_front();
            let out = self.flush_carry();
            return Ok((!out.is_empty()).then(|| self.limit(out)));
        }
    }

    /// The file written after the one with inode `ino`, once that one was
    /// rotated away: the next in the chain, or, if it is gone already (the
    /// writer outran us), the oldest left.
    fn successor(&self, ino: u64) -> io::Result<Option<Segment>> {
        let chain = match open_chain(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let next = match chain.iter().position(|(_, i)| *i == ino) {
            Some(at) => chain.into_iter().nth(at + 1),
            None => chain.into_iter().next(),
        };
        Ok(next.map(|(file, ino)| Segment {
            file,
            ino,
            offset: 0,
            end: None,
        }))
    }

    fn limit(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        if let Some(r) = &mut self.remaining {
            out.truncate((*r).min(out.len() as u64) as usize);
            *r -= out.len() as u64;
        }
        out
    }

    /// Turns the physical lines completed by `data` into output.
    fn take(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            if self.carry.is_empty() {
                self.line(&rest[..i], out);
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(&rest[..i]);
                self.line(&line, out);
            }
            rest = &rest[i + 1..];
        }
        self.carry.extend_from_slice(rest);
        if self.carry.len() > MAX_CARRY {
            // Not a record of ours: pass it on as it is.
            out.extend_from_slice(&std::mem::take(&mut self.carry));
            self.line_start = false;
        }
    }

    fn flush_carry(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            match parse(&line) {
                Some(_) => self.line(&line, &mut out),
                // A plain log's last line without a newline stays without one.
                None => {
                    out.extend_from_slice(&line);
                    self.line_start = false;
                }
            }
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let Some(rec) = parse(line) else {
            out.extend_from_slice(line);
            out.push(b'\n');
            self.line_start = true;
            return;
        };
        if let Some(since) = self.opts.since {
            if parse_time(rec.time).is_some_and(|t| t < since) {
                self.line_start = !rec.partial;
                return;
            }
        }
        if self.opts.timestamps && self.line_start {
            out.extend_from_slice(rec.time);
            out.push(b' ');
        }
        out.extend_from_slice(rec.msg);
        if !rec.partial {
            out.push(b'\n');
        }
        self.line_start = !rec.partial;
    }
}

/// Where the last `n` lines of the log begin: the index of the file and the
/// offset in it. `files` are oldest first, each read up to its `lens` entry.
/// A line is a `F` record with the `P` pieces before it, a line of another
/// form, or (at the very end) pieces whose last one has not come yet.
pub fn tail_start(files: &[&File], lens: &[u64], n: usize) -> io::Result<(usize, u64)> {
    let Some(last) = files.len().checked_sub(1) else {
        return Ok((0, 0));
    };
    if n == 0 {
        return Ok((last, lens[last]));
    }
    let mut ends = 0;
    let mut newest = true;
    // The start of the physical line after the one being looked at.
    let mut next = (last, lens[last]);
    let mut header = [0u8; 64];
    for i in (0..files.len()).rev() {
        let (f, len) = (files[i], lens[i]);
        let mut found = None;
        line_starts_rev(f, len, |start| {
            let got = f.read_at(&mut header[..(len - start).min(64) as usize], start)?;
            let partial = is_partial_header(&header[..got]);
            if !partial || newest {
                ends += 1;
                if ends == n + 1 {
                    found = Some(next);
                    return Ok(false);
                }
            }
            newest = false;
            next = (i, start);
            Ok(true)
        })?;
        if let Some(at) = found {
            return Ok(at);
        }
    }
    Ok(next)
}

/// The length of the first `len` bytes of a log file without a record
/// still being written at its end: up to and including its last newline when
/// the line before it is a record; `len` for a plain log or a whole last line.
fn complete_len(file: &File, len: u64) -> io::Result<u64> {
    let mut cut = None;
    let mut previous = None;
    line_starts_rev(file, len, |start| {
        match cut {
            None => cut = Some(start),
            Some(end) => {
                previous = Some((start, end));
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    let Some(cut) = cut.filter(|c| *c < len) else {
        return Ok(len);
    };
    let mut last = [0u8; 1];
    if len > 0 && file.read_at(&mut last, len - 1)? == 1 && last[0] == b'\n' {
        return Ok(len);
    }
    let Some((start, end)) = previous else {
        return Ok(len);
    };
    let mut line = vec![0u8; (end - start).min(CHUNK as u64) as usize];
    file.read_exact_at(&mut line, start)?;
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    Ok(if parse(line).is_some() { cut } else { len })
}

/// Whether a line that begins with `head` is a `P` record.
fn is_partial_header(head: &[u8]) -> bool {
    let mut parts = head.splitn(4, |b| *b == b' ');
    let _time = parts.next();
    matches!(parts.next(), Some(b"stdout" | b"stderr")) && parts.next() == Some(b"P")
}

/// Calls `f` with the start of each line of the first `len` bytes of `file`,
/// last line first, while it returns true. A final newline ends the last line
/// rather than starting another.
fn line_starts_rev(file: &File, len: u64, mut f: impl FnMut(u64) -> io::Result<bool>) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut buf = vec![0u8; CHUNK];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let block = &mut buf[..(end - start) as usize];
        file.read_exact_at(block, start)?;
        for i in (0..block.len()).rev() {
            let at = start + i as u64;
            if block[i] == b'\n' && at + 1 < len && !f(at + 1)? {
                return Ok(());
            }
        }
        end = start;
    }
    f(0).map(|_| ())
}

/// Removes the logs of attempts before `attempt - 1` from a container's log
/// directory: as kubelet keeps the logs of a container's last dead instance
/// only, for `logs --previous`.
pub fn prune_attempts(dir: &Path, attempt: u32) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((n, rest)) = name.split_once(".log") else {
            continue;
        };
        let ours = rest.is_empty() || rest.strip_prefix('.').is_some_and(|r| r.parse::<u32>().is_ok());
        if let (true, Ok(n)) = (ours, n.parse::<u32>()) {
            if n.saturating_add(1) < attempt {
                match std::fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut l = Lines::default();
        let mut got = Vec::new();
        let mut out = |b: &[u8], p: bool| got.push((b.to_vec(), p));
        for c in chunks {
            l.feed(c, &mut out);
        }
        l.finish(&mut out);
        got
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        assert_eq!(
            lines(&[b"a\nb", b"c\n\nd"]),
            vec![
                (b"a".to_vec(), false),
                (b"bc".to_vec(), false),
                (b"".to_vec(), false),
                (b"d".to_vec(), false)
            ]
        );
    }

    #[test]
    fn long_lines_become_pieces_of_max_line() {
        let long = vec![b'x'; 2 * MAX_LINE + 5];
        let mut text = long.clone();
        text.push(b'\n');
        let got = lines(&[&text[..100], &text[100..]]);
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].0.len(), got[0].1), (MAX_LINE, true));
        assert_eq!((got[1].0.len(), got[1].1), (MAX_LINE, true));
        assert_eq!((got[2].0.len(), got[2].1), (5, false));
        // A line of exactly MAX_LINE is one record.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(lines(&[&exact]), vec![(vec![b'y'; MAX_LINE], false)]);
    }

    #[test]
    fn records_parse_and_other_lines_do_not() {
        let r = parse(b"2026-12-01T02:42:49.123456789Z stderr P half a line").unwrap();
        assert_eq!(r.time, b"2026-12-01T02:42:49.123456789Z");
        assert_eq!(
            (r.stream, r.partial, r.msg),
            (Stream::Stderr, true, &b"half a line"[..])
        );
        assert_eq!(parse(b"2026-12-01T02:42:49Z stdout F").unwrap().msg, b"");
        assert_eq!(
            parse(b"2026-12-01T02:42:49Z stdout F  two spaces").unwrap().msg,
            b" two spaces"
        );
        assert!(parse(b"plain text from an old log").is_none());
        assert!(parse(b"2026-12-01T02:42:49Z stdin F x").is_none());
        assert!(parse(b"2026-12-01T02:42:49Z stdout X x").is_none());
        assert!(parse(b"hello stdout F x").is_none());
    }

    fn write_log(dir: &Path, max_size: u64, max_files: u32, records: &[(&str, Stream, &[u8], bool)]) -> PathBuf {
        let path = dir.join("0.log");
        let mut w = LogWriter::open(&path, max_size, max_files).unwrap();
        for (t, s, l, p) in records {
            w.push(t, *s, l, *p).unwrap();
        }
        w.flush().unwrap();
        path
    }

    fn read(path: &Path, opts: ReadOptions) -> String {
        let mut r = LogReader::open(path, opts).unwrap();
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            out.extend(c);
        }
        String::from_utf8(out).unwrap()
    }

    const T1: &str = "2026-12-01T10:00:01.000000000Z";
    const T2: &str = "2026-12-01T10:00:02.000000000Z";
    const T3: &str = "2026-12-01T10:00:03.000000000Z";

    #[test]
    fn written_records_are_read_back_as_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(
            dir.path(),
            0,
            5,
            &[
                (T1, Stream::Stdout, b"one", false),
                (T2, Stream::Stderr, b"tw", true),
                (T2, Stream::Stderr, b"o", false),
                (T3, Stream::Stdout, b"three", false),
            ],
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(&format!("{T1} stdout F one\n{T2} stderr P tw\n")),
            "{text}"
        );
        assert_eq!(read(&path, ReadOptions::default()), "one\ntwo\nthree\n");
        let stamped = ReadOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(read(&path, stamped), format!("{T1} one\n{T2} two\n{T3} three\n"));
        let since = ReadOptions {
            since: Some(parse_time(T2.as_bytes()).unwrap()),
            ..Default::default()
        };
        assert_eq!(read(&path, since), "two\nthree\n");
        let limited = ReadOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(read(&path, limited), "one\ntw");
    }

    #[test]
    fn rotation_keeps_max_files_of_at_most_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let line = [b'z'; 60];
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, 1000, 3).unwrap();
        for i in 0..200 {
            let text = format!("{i:03} {}", String::from_utf8_lossy(&line));
            w.push(T1, Stream::Stdout, text.as_bytes(), false).unwrap();
        }
        w.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["0.log", "0.log.1", "0.log.2"]);
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 1000, "{n} holds {len} bytes");
        }
        // The files read as one log, oldest first, ending with the last line.
        let text = read(&path, ReadOptions::default());
        let got: Vec<u32> = text.lines().map(|l| l[..3].parse().unwrap()).collect();
        assert_eq!(*got.last().unwrap(), 199);
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
        // Records are 105 bytes: nine to a full file, two full files and the live one.
        assert!(got.len() >= 19, "{}", got.len());
        // --tail crosses into the rotated files.
        let tail = ReadOptions {
            tail: Some(15),
            ..Default::default()
        };
        let got: Vec<u32> = read(&path, tail).lines().map(|l| l[..3].parse().unwrap()).collect();
        assert_eq!(got, (185..200).collect::<Vec<_>>());
    }

    #[test]
    fn without_follow_the_log_is_read_as_it_stood_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, 0, 2).unwrap();
        w.push(T1, Stream::Stdout, b"a", false).unwrap();
        w.push(T1, Stream::Stdout, b"b", false).unwrap();
        w.flush().unwrap();
        let tail = ReadOptions {
            tail: Some(1),
            ..Default::default()
        };
        let mut r = LogReader::open(&path, tail).unwrap();
        // Written after the request: neither one of the last lines nor read.
        w.push(T2, Stream::Stdout, b"later", false).unwrap();
        w.flush().unwrap();
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            out.extend(c);
        }
        assert_eq!(out, b"b\n");
    }

    #[test]
    fn a_log_rotating_under_a_reader_still_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut w = LogWriter::open(&path, 4096, 3).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for _ in 0..100 {
                        w.push(T1, Stream::Stdout, b"y", false).unwrap();
                    }
                    w.flush().unwrap();
                }
            })
        };
        while !path.exists() {
            std::thread::yield_now();
        }
        for _ in 0..2000 {
            let tail = ReadOptions {
                tail: Some(3),
                ..Default::default()
            };
            let got = LogReader::open(&path, tail).map(|mut r| {
                let mut out = Vec::new();
                while let Some(c) = r.next_chunk().unwrap() {
                    out.extend(c);
                }
                out
            });
            match got {
                Ok(out) => assert_eq!(String::from_utf8_lossy(&out), "y\ny\ny\n"),
                Err(e) => panic!("open while rotating: {e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn one_file_only_is_emptied_rather_than_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, 200, 1).unwrap();
        for _ in 0..50 {
            w.push(T1, Stream::Stdout, b"0123456789", false).unwrap();
        }
        w.flush().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        assert!(!rotated(&path, 1).exists());
    }

    #[test]
    fn a_record_still_being_written_is_not_read_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:01Z stdout F tw",
        )
        .unwrap();
        let opts = ReadOptions {
            tail: Some(1),
            timestamps: true,
            ..Default::default()
        };
        let mut r = LogReader::open(&path, opts).unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = r.next_chunk().unwrap() {
            out.extend(chunk);
        }
        assert_eq!(String::from_utf8(out).unwrap(), "2026-01-01T00:00:00Z one\n");
    }

    #[test]
    fn tail_counts_lines_not_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(
            dir.path(),
            0,
            5,
            &[
                (T1, Stream::Stdout, b"a", false),
                (T1, Stream::Stdout, b"b1", true),
                (T1, Stream::Stdout, b"b2", true),
                (T2, Stream::Stdout, b"b3", false),
                (T3, Stream::Stdout, b"c", false),
                (T3, Stream::Stdout, b"unfinished", true),
            ],
        );
        let tail = |n| {
            read(
                &path,
                ReadOptions {
                    tail: Some(n),
                    ..Default::default()
                },
            )
        };
        assert_eq!(tail(0), "");
        assert_eq!(tail(1), "unfinished");
        assert_eq!(tail(2), "c\nunfinished");
        assert_eq!(tail(3), "b1b2b3\nc\nunfinished");
        assert_eq!(tail(4), "a\nb1b2b3\nc\nunfinished");
        assert_eq!(tail(9), "a\nb1b2b3\nc\nunfinished");
    }

    #[test]
    fn plain_logs_of_older_peapods_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "first\nsecond\nno newline").unwrap();
        assert_eq!(read(&path, ReadOptions::default()), "first\nsecond\nno newline");
        let tail = ReadOptions {
            tail: Some(2),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(read(&path, tail), "second\nno newline");
    }

    #[test]
    fn following_reads_through_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, 120, 3).unwrap();
        let follow = ReadOptions {
            follow: true,
            ..Default::default()
        };
        let mut r = LogReader::open(&path, follow).unwrap();
        let mut got = Vec::new();
        for i in 0..12 {
            // Each record is ~45 bytes: a rotation every two or three.
            w.push(T1, Stream::Stdout, format!("line{i:02}").as_bytes(), false)
                .unwrap();
            w.flush().unwrap();
            if i % 2 == 1 {
                while let Some(c) = r.next_chunk().unwrap() {
                    if c.is_empty() {
                        break;
                    }
                    got.extend(c);
                }
            }
        }
        r.stop_following();
        while let Some(c) = r.next_chunk().unwrap() {
            got.extend(c);
        }
        let want: String = (0..12).map(|i| format!("line{i:02}\n")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    #[test]
    fn older_attempts_are_pruned_and_the_previous_kept() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "0.log",
            "0.log.1",
            "1.log",
            "2.log",
            "2.log.3",
            "3.log",
            "notes.txt",
            "1.logx",
        ] {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        prune_attempts(dir.path(), 3).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["1.logx", "2.log", "2.log.3", "3.log", "notes.txt"]);
    }
}
