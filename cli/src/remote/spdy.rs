//! SPDY/3.1 as kubectl speaks it for remotecommand (exec, attach, cp before
//! 1.30 and as the fallback after) and port-forward: after a `101 Switching
//! Protocols`, the client opens one stream per channel with a `streamType`
//! header (error, stdin, stdout, stderr, resize); the server answers each
//! with SYN_REPLY, sends output as DATA frames, and ends each stream with a
//! FIN. Header blocks are zlib-compressed with SPDY/3's dictionary, one
//! compression context per direction for the whole connection.
//!
//! Only what kubectl's client (moby/spdystream) sends is served: no server
//! push, no flow control windows enforced (spdystream keeps none either).

use super::{channel, Inbound, Outbound};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

/// The remotecommand versions served over SPDY, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// Frames larger than this from a client end the connection.
const MAX_FRAME: usize = 16 << 20;

/// SPDY/3's header compression dictionary (draft-mbelshe-httpbis-spdy-00,
/// 2.6.10.1): these names, each with a 4-byte big-endian length, then a
/// run of common values.
fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const NAMES: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::new();
        for n in NAMES {
            d.extend_from_slice(&(n.len() as u32).to_be_bytes());
            d.extend_from_slice(n.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// A frame read from the client.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Control { kind: u16, flags: u8, data: Bytes },
    Data { stream: u32, flags: u8, data: Bytes },
}

/// Takes one whole frame off the front of `buf`, if there is one.
pub fn parse_frame(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("a SPDY frame of {len} bytes"));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let head = buf.split_to(8);
    let data = buf.split_to(len).freeze();
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(format!("SPDY version {version}"));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Ok(Some(Frame::Control { kind, flags, data }))
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        Ok(Some(Frame::Data { stream, flags, data }))
    }
}

fn control(kind: u16, flags: u8, data: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(8 + data.len());
    f.extend_from_slice(&[0x80, 3]);
    f.extend_from_slice(&kind.to_be_bytes());
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f[4] = flags;
    f.extend_from_slice(data);
    f.freeze()
}

/// A DATA frame on `stream`.
pub fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f[4] = flags;
    f.extend_from_slice(data);
    f.freeze()
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One direction's header compression context.
pub struct Headers {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Headers {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream.
        let _ = deflate.set_dictionary(dictionary());
        Self {
            inflate: Decompress::new(true),
            deflate,
        }
    }
}

impl Headers {
    /// Decompresses and reads a name/value block.
    pub fn read(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut at = 0;
        loop {
            let before = self.inflate.total_in();
            let room = plain.capacity() - plain.len();
            match self
                .inflate
                .decompress_vec(&block[at..], &mut plain, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    at += (self.inflate.total_in() - before) as usize;
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| format!("SPDY header dictionary: {e}"))?;
                    continue;
                }
                Err(e) => return Err(format!("SPDY header block: {e}")),
            }
            at += (self.inflate.total_in() - before) as usize;
            let filled = plain.len() == plain.capacity() || room == 0;
            if at >= block.len() && !filled {
                break;
            }
            plain.reserve(plain.capacity().max(256));
        }
        parse_name_values(&plain)
    }

    /// Writes and compresses a name/value block.
    pub fn write(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            for s in [k, v] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut at = 0;
        loop {
            let before = self.deflate.total_in();
            if self
                .deflate
                .compress_vec(&plain[at..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            at += (self.deflate.total_in() - before) as usize;
            if at >= plain.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(256);
        }
        out
    }
}

fn parse_name_values(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let bad = || "a truncated SPDY header block".to_string();
    let count = read_u32(b, 0).ok_or_else(bad)? as usize;
    let mut at = 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let mut pair = [String::new(), String::new()];
        for s in &mut pair {
            let n = read_u32(b, at).ok_or_else(bad)? as usize;
            at += 4;
            *s = String::from_utf8_lossy(b.get(at..at + n).ok_or_else(bad)?).into_owned();
            at += n;
        }
        let [k, v] = pair;
        out.push((k, v));
    }
    Ok(out)
}

/// The version chosen from the client's `X-Stream-Protocol-Version` offers.
pub fn choose_protocol(req: &HttpRequest) -> Result<&'static str, String> {
    let offered = super::offered(req, "x-stream-protocol-version");
    PROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
        .ok_or_else(|| {
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {PROTOCOLS:?}"
            )
        })
}

/// What the connection's writer is asked to do.
enum Write {
    /// Answer a stream the client opened.
    Reply(u32),
    /// Data on a stream, with FIN when `fin`.
    Data { stream: u32, data: Bytes, fin: bool },
    /// Echo a PING.
    Ping(Bytes),
    /// End the connection.
    Close,
}

/// A stream the client opened (already answered with SYN_REPLY).
pub struct Stream {
    /// Its headers, names lowercased as SPDY carries them.
    pub headers: Vec<(String, String)>,
    /// What the client sends on it; ends at the client's FIN or RST_STREAM.
    pub incoming: mpsc::Receiver<Bytes>,
    /// Writes to it.
    pub out: StreamWriter,
}

impl Stream {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The server's side of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    stream: u32,
    writer: mpsc::Sender<Write>,
}

impl StreamWriter {
    /// Sends `data` (in frames of at most 64 KiB).
    pub async fn send(&self, data: Bytes) -> Result<(), ()> {
        let mut data = data;
        while !data.is_empty() {
            let part = data.split_to(data.len().min(64 * 1024));
            self.writer
                .send(Write::Data {
                    stream: self.stream,
                    data: part,
                    fin: false,
                })
                .await
                .map_err(drop)?;
        }
        Ok(())
    }
    /// Ends the server's side of the stream (FIN).
    pub async fn finish(&self) {
        let _ = self
            .writer
            .send(Write::Data {
                stream: self.stream,
                data: Bytes::new(),
                fin: true,
            })
            .await;
    }
}

/// Ends the connection when asked.
#[derive(Clone)]
pub struct Closer(mpsc::Sender<Write>);

impl Closer {
    pub async fn close(&self) {
        let _ = self.0.send(Write::Close).await;
    }
}

/// Runs a SPDY connection over `incoming` chunks, writing frames to `body`:
/// streams the client opens come out of the returned receiver, which ends
/// when the client goes away.
pub fn connection<S>(incoming: S, body: mpsc::Sender<Bytes>) -> (mpsc::Receiver<Stream>, Closer)
where
    S: futures_util::Stream<Item = Result<Bytes, String>> + Unpin + 'static,
{
    let (write_tx, write_rx) = mpsc::channel::<Write>(64);
    let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
    actix_web::rt::spawn(writer(write_rx, body));
    let closer = Closer(write_tx.clone());
    actix_web::rt::spawn(async move {
        if let Err(e) = reader(incoming, &write_tx, streams_tx).await {
            tracing::debug!("SPDY connection: {e}");
        }
    });
    (streams_rx, closer)
}

/// Reads the client's frames: answers new streams and hands them on, routes
/// DATA to its stream, echoes PINGs.
async fn reader<S>(mut incoming: S, writer: &mpsc::Sender<Write>, streams: mpsc::Sender<Stream>) -> Result<(), String>
where
    S: futures_util::Stream<Item = Result<Bytes, String>> + Unpin,
{
    let mut headers = Headers::default();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = BytesMut::new();
    while let Some(chunk) = incoming.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(frame) = parse_frame(&mut buf)? {
            match frame {
                Frame::Control {
                    kind: SYN_STREAM,
                    flags,
                    data,
                } => {
                    let stream = read_u32(&data, 0).ok_or("a short SYN_STREAM")? & 0x7fff_ffff;
                    let nv = headers.read(data.get(10..).ok_or("a short SYN_STREAM")?)?;
                    writer.send(Write::Reply(stream)).await.map_err(|_| "writer gone")?;
                    let (tx, rx) = mpsc::channel(64);
                    if flags & FLAG_FIN == 0 {
                        open.insert(stream, tx);
                    }
                    let s = Stream {
                        headers: nv,
                        incoming: rx,
                        out: StreamWriter {
                            stream,
                            writer: writer.clone(),
                        },
                    };
                    if streams.send(s).await.is_err() {
                        return Ok(());
                    }
                }
                Frame::Control { kind: PING, data, .. } => {
                    writer.send(Write::Ping(data)).await.map_err(|_| "writer gone")?;
                }
                Frame::Control { kind: GOAWAY, .. } => return Ok(()),
                Frame::Control {
                    kind: RST_STREAM, data, ..
                } => {
                    open.remove(&(read_u32(&data, 0).unwrap_or(0) & 0x7fff_ffff));
                }
                // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do.
                Frame::Control { .. } => {}
                Frame::Data { stream, flags, data } => {
                    if let Some(tx) = open.get(&stream) {
                        // A stream whose reader is gone only loses its data.
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            open.remove(&stream);
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes the server's frames, in the order asked.
async fn writer(mut requests: mpsc::Receiver<Write>, body: mpsc::Sender<Bytes>) {
    let mut headers = Headers::default();
    while let Some(request) = requests.recv().await {
        let frame = match request {
            Write::Reply(stream) => {
                let mut data = stream.to_be_bytes().to_vec();
                data.extend_from_slice(&headers.write(&[]));
                control(SYN_REPLY, 0, &data)
            }
            Write::Data { stream, data, fin } => data_frame(stream, if fin { FLAG_FIN } else { 0 }, &data),
            Write::Ping(data) => control(PING, 0, &data),
            Write::Close => return,
        };
        if body.send(frame).await.is_err() {
            return;
        }
    }
}

/// The client's side of an upgraded HTTP connection, as chunks.
pub fn payload_chunks(payload: web::Payload) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
    payload.map(|c| c.map_err(|e| e.to_string()))
}

/// A response body fed from a channel.
pub fn body_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) })
}

/// Answers an exec's upgrade and runs `session` on the connection.
pub fn serve<F, Fut>(req: &HttpRequest, payload: web::Payload, session: F) -> HttpResponse
where
    F: FnOnce(mpsc::Receiver<Inbound>, mpsc::Sender<Outbound>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let protocol = match choose_protocol(req) {
        Ok(p) => p,
        Err(message) => return crate::api::status(403, "Forbidden", message, None),
    };
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(64);
    let (streams, closer) = connection(payload_chunks(payload), body_tx);
    actix_web::rt::spawn(exec_streams(streams, closer, session));
    HttpResponse::SwitchingProtocols()
        .upgrade("SPDY/3.1")
        .insert_header(("x-stream-protocol-version", protocol))
        .streaming(body_stream(body_rx))
}

/// Carries an exec session over the streams kubectl opens: stdin and resize
/// in, stdout, stderr and error out (output held until its stream is open).
/// After the Status: a FIN on every output stream, and the connection ends
/// once the client hangs up (or 10 s on).
async fn exec_streams<F, Fut>(mut streams: mpsc::Receiver<Stream>, closer: Closer, session: F)
where
    F: FnOnce(mpsc::Receiver<Inbound>, mpsc::Sender<Outbound>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(64);
    actix_web::rt::spawn(session(in_rx, out_tx));
    let mut outputs: HashMap<u8, StreamWriter> = HashMap::new();
    let mut held: Vec<(u8, Bytes)> = Vec::new();
    let mut status: Option<Bytes> = None;
    let mut session_done = false;
    loop {
        if let (Some(s), Some(err)) = (&status, outputs.get(&channel::ERROR)) {
            for ch in [channel::STDOUT, channel::STDERR] {
                if let Some(w) = outputs.get(&ch) {
                    w.finish().await;
                }
            }
            let _ = err.send(s.clone()).await;
            err.finish().await;
            break;
        }
        if session_done && status.is_none() {
            break;
        }
        tokio::select! {
            s = streams.recv() => match s {
                // The client is gone: dropping the session's input ends the command.
                None => return,
                Some(s) => {
                    let kind = s.header("streamtype").unwrap_or("").to_string();
                    let ch = match kind.as_str() {
                        "stdout" => channel::STDOUT,
                        "stderr" => channel::STDERR,
                        "error" => channel::ERROR,
                        "stdin" | "resize" => {
                            actix_web::rt::spawn(client_input(kind == "stdin", s.incoming, in_tx.clone()));
                            continue;
                        }
                        _ => continue,
                    };
                    for (_, data) in held.iter().filter(|(c, _)| *c == ch) {
                        let _ = s.out.send(data.clone()).await;
                    }
                    held.retain(|(c, _)| *c != ch);
                    outputs.insert(ch, s.out);
                }
            },
            o = out_rx.recv(), if !session_done => match o {
                None => session_done = true,
                Some(Outbound::Data(ch, data)) => match outputs.get(&ch) {
                    Some(w) => {
                        let _ = w.send(data).await;
                    }
                    None => held.push((ch, data)),
                },
                Some(Outbound::Status(s)) => status = Some(Bytes::from(s.to_string())),
            },
        }
    }
    drop(in_tx);
    // Let the client read everything and hang up; then end the connection.
    // An output stream the client opens only now (the command was quicker
    // than its stream's SYN_STREAM, as through another node) gets what was
    // held for it and its end: kubectl reads stdout and stderr to their end
    // before it reports the Status it already has.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(s) = streams.recv().await {
            let ch = match s.header("streamtype") {
                Some("stdout") => channel::STDOUT,
                Some("stderr") => channel::STDERR,
                _ => continue,
            };
            for (_, data) in held.iter().filter(|(c, _)| *c == ch) {
                let _ = s.out.send(data.clone()).await;
            }
            s.out.finish().await;
        }
    })
    .await;
    closer.close().await;
}

/// Passes a stdin or resize stream into the session.
async fn client_input(stdin: bool, mut incoming: mpsc::Receiver<Bytes>, session: mpsc::Sender<Inbound>) {
    let mut resize = BytesMut::new();
    while let Some(data) = incoming.recv().await {
        if stdin {
            if session.send(Inbound::Stdin(data)).await.is_err() {
                return;
            }
            continue;
        }
        // A stream of JSON objects, one per size.
        resize.extend_from_slice(&data);
        let mut sizes = serde_json::Deserializer::from_slice(&resize).into_iter::<serde_json::Value>();
        let mut used = 0;
        while let Some(Ok(v)) = sizes.next() {
            used = sizes.byte_offset();
            if let Some(r) = super::ws::resize(v.to_string().as_bytes()) {
                let _ = session.send(r).await;
            }
        }
        resize.advance(used);
    }
    if stdin {
        let _ = session.send(Inbound::StdinEnd).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: u32, kind: &str, writer: &mpsc::Sender<Write>) -> Stream {
        let (_tx, incoming) = mpsc::channel(1);
        Stream {
            headers: vec![("streamtype".into(), kind.into())],
            incoming,
            out: StreamWriter {
                stream: id,
                writer: writer.clone(),
            },
        }
    }

    #[actix_rt::test]
    async fn output_for_a_stream_opened_after_the_status_still_reaches_it() {
        let (writes_tx, mut writes) = mpsc::channel::<Write>(64);
        let (streams_tx, streams) = mpsc::channel::<Stream>(8);
        // The command ends (output and Status) before the client's stdout stream is open.
        let session = |_inbound: mpsc::Receiver<Inbound>, out: mpsc::Sender<Outbound>| async move {
            let _ = out
                .send(Outbound::Data(channel::STDOUT, Bytes::from_static(b"hello")))
                .await;
            let _ = out.send(Outbound::Status(super::super::success())).await;
        };
        streams_tx.send(stream(1, "error", &writes_tx)).await.unwrap();
        let task = actix_web::rt::spawn(exec_streams(streams, Closer(writes_tx.clone()), session));
        // The Status goes out on the error stream, which then ends.
        let on = |id: u32, writes: Vec<Write>| -> (Vec<u8>, bool) {
            let mut data = Vec::new();
            let mut fin = false;
            for w in writes {
                if let Write::Data {
                    stream,
                    data: d,
                    fin: f,
                } = w
                {
                    if stream == id {
                        data.extend_from_slice(&d);
                        fin |= f;
                    }
                }
            }
            (data, fin)
        };
        let mut first = Vec::new();
        while let Ok(Some(w)) = tokio::time::timeout(Duration::from_millis(300), writes.recv()).await {
            first.push(w);
        }
        let (status, ended) = on(1, first);
        assert!(String::from_utf8_lossy(&status).contains("Success") && ended);
        // Now the stdout stream opens: it gets the held output and its end.
        streams_tx.send(stream(3, "stdout", &writes_tx)).await.unwrap();
        drop(streams_tx);
        task.await.unwrap();
        drop(writes_tx);
        let mut rest = Vec::new();
        while let Some(w) = writes.recv().await {
            rest.push(w);
        }
        assert_eq!(on(3, rest), (b"hello".to_vec(), true));
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_across_frames() {
        // One context per direction: a block only reads with the state the
        // blocks before it left.
        let mut ours = Headers::default();
        let mut theirs = Headers::default();
        for pairs in [
            vec![("streamtype", "stdout")],
            vec![("streamtype", "error"), ("port", "8080")],
        ] {
            let block = ours.write(&pairs);
            let read = theirs.read(&block).unwrap();
            let want: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(read, want);
        }
    }

    #[test]
    fn frames_are_read_whole() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&data_frame(3, FLAG_FIN, b"hello"));
        let ping = control(PING, 0, &7u32.to_be_bytes());
        buf.extend_from_slice(&ping[..6]);
        assert_eq!(
            parse_frame(&mut buf).unwrap(),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(parse_frame(&mut buf).unwrap(), None, "half a frame waits for the rest");
        buf.extend_from_slice(&ping[6..]);
        assert!(matches!(
            parse_frame(&mut buf).unwrap(),
            Some(Frame::Control { kind: PING, .. })
        ));
        let mut bad = BytesMut::from(&control(PING, 0, &[0; 4])[..]);
        bad[1] = 2;
        assert!(parse_frame(&mut bad).is_err(), "SPDY/2 is refused");
    }
}
