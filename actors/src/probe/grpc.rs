//! The `grpc` handler: one `grpc.health.v1.Health/Check` call over HTTP/2
//! cleartext (prior knowledge), as kubelet's gRPC prober makes it. Only what
//! one unary call needs is spoken: the connection preface and SETTINGS, a
//! HEADERS frame whose HPACK block uses literal fields only (no dynamic table,
//! no Huffman), one DATA frame, and the reply's DATA frame read as a
//! `HealthCheckResponse`. Response headers are not decoded: a reply that ends
//! without a message (a trailers-only error) or with RST_STREAM/GOAWAY fails.

use super::Outcome;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE.
const MAX_FRAME: usize = 16_384;
/// The most of a reply's DATA read before giving up on it.
const MAX_REPLY: usize = 16_384;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string literal, not Huffman-coded (lengths here stay below 127).
fn hpack_string(out: &mut Vec<u8>, s: &str) {
    hpack_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// An HPACK integer with an `n`-bit prefix over `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// The request headers: indexed `:method POST` and `:scheme http`, the rest
/// literal without indexing (static-table names where they exist).
pub fn request_headers(authority: &str) -> Vec<u8> {
    let mut h = vec![0x83, 0x86];
    for (name_index, value) in [
        (4usize, "/grpc.health.v1.Health/Check"),
        (1, authority),
        (31, "application/grpc"),
    ] {
        hpack_int(&mut h, 0x00, 4, name_index);
        hpack_string(&mut h, value);
    }
    for (name, value) in [("te", "trailers"), ("user-agent", "kube-probe/1.34")] {
        h.push(0x00);
        hpack_string(&mut h, name);
        hpack_string(&mut h, value);
    }
    h
}

/// A gRPC-framed `HealthCheckRequest{service}`.
pub fn request_message(service: &str) -> Vec<u8> {
    let mut pb = Vec::new();
    if !service.is_empty() {
        pb.push(0x0a); // field 1, length-delimited
        let mut len = service.len();
        while len >= 0x80 {
            pb.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        pb.push(len as u8);
        pb.extend_from_slice(service.as_bytes());
    }
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    msg.extend_from_slice(&pb);
    msg
}

/// A protobuf varint at `pb[*i..]`; `None` when truncated or longer than 10 bytes.
fn varint(pb: &[u8], i: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *pb.get(*i)?;
        *i += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The serving status in a gRPC-framed `HealthCheckResponse`: 0 UNKNOWN,
/// 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN. `None` until the message is complete.
pub fn response_status(data: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(data.get(1..5)?.try_into().ok()?) as usize;
    let pb = data.get(5..5usize.checked_add(len)?)?;
    let mut i = 0;
    let mut status = 0;
    while i < pb.len() {
        let key = varint(pb, &mut i)?;
        match key & 0x7 {
            0 => {
                let v = varint(pb, &mut i)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => i = i.checked_add(8)?,
            2 => {
                let l = usize::try_from(varint(pb, &mut i)?).ok()?;
                i = i.checked_add(l)?;
            }
            5 => i = i.checked_add(4)?,
            _ => return None,
        }
    }
    (i == pb.len()).then_some(status)
}

fn status_name(s: u64) -> &'static str {
    match s {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// Calls `Check(service)` at `host:port` within `timeout`.
pub async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = super::join_host_port(host, port);
    let call = async {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("failed to connect service {addr:?}: {}", super::os_error_text(&e)))?;
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out.extend(frame(HEADERS, END_HEADERS, 1, &request_headers(&addr)));
        out.extend(frame(DATA, END_STREAM, 1, &request_message(service)));
        s.write_all(&out).await.map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        loop {
            let mut head = [0u8; 9];
            s.read_exact(&mut head)
                .await
                .map_err(|e| format!("connection closed before a reply: {e}"))?;
            let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            // We advertise no SETTINGS_MAX_FRAME_SIZE, so the peer may send at most the default.
            if len > MAX_FRAME {
                return Err(format!(
                    "the server sent a {len}-byte frame (at most {MAX_FRAME} allowed)"
                ));
            }
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
            match kind {
                SETTINGS if flags & ACK == 0 => s
                    .write_all(&frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .map_err(|e| e.to_string())?,
                PING if flags & ACK == 0 => s
                    .write_all(&frame(PING, ACK, 0, &payload))
                    .await
                    .map_err(|e| e.to_string())?,
                DATA if stream == 1 => {
                    // PADDED: a pad-length byte first, padding at the end.
                    let data = if flags & PADDED != 0 {
                        let pad = usize::from(*payload.first().unwrap_or(&0));
                        payload.get(1..payload.len().saturating_sub(pad)).unwrap_or_default()
                    } else {
                        &payload[..]
                    };
                    body.extend_from_slice(data);
                    if let Some(st) = response_status(&body) {
                        return Ok(st);
                    }
                    // A health reply is a few bytes: a server that keeps
                    // sending is not answering, and is not read until the timeout.
                    if body.len() > MAX_REPLY {
                        return Err(format!("the health reply is longer than {MAX_REPLY} bytes"));
                    }
                }
                HEADERS if stream == 1 && flags & END_STREAM != 0 => {
                    return Err("the server answered with an error status and no health reply".to_string())
                }
                RST_STREAM if stream == 1 => return Err("the server reset the stream".into()),
                // A graceful GOAWAY that still covers stream 1 lets the reply finish.
                GOAWAY
                    if payload.len() < 4
                        || u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff < 1 =>
                {
                    return Err("the server closed the connection (GOAWAY)".into())
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(1)) => Outcome::Success,
        Ok(Ok(st)) => Outcome::Failure(format!("service unhealthy (responded with {:?})", status_name(st))),
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_and_decode() {
        assert_eq!(request_message(""), [0, 0, 0, 0, 0]);
        assert_eq!(request_message("db"), [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 0x01]), Some(1));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 0x02]), Some(2));
        // An empty message is UNKNOWN (0); a short frame is incomplete.
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08]), None);
        // Unknown fields of every wire type are skipped; overlong varints are refused.
        assert_eq!(
            response_status(&[0, 0, 0, 0, 7, 0x12, 0x01, b'x', 0x08, 0x02, 0x18, 0x05]),
            Some(2)
        );
        let mut long = vec![0, 0, 0, 0, 12, 0x08];
        long.extend([0xff; 11]);
        assert_eq!(response_status(&long), None);
    }

    /// A server that answers every probe with `reply` (raw frames), written
    /// over and over until the client goes away.
    async fn flooding_server(reply: Vec<u8>) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut first = [0u8; 24];
            let _ = c.read_exact(&mut first).await;
            while c.write_all(&reply).await.is_ok() {}
        });
        port
    }

    #[tokio::test]
    async fn an_endless_reply_fails_the_probe_before_its_timeout() {
        // A message that claims 2 GiB, then DATA frames of zeros forever.
        let mut reply = frame(DATA, 0, 1, &[0, 0x7f, 0xff, 0xff, 0xff]);
        reply.extend(frame(DATA, 0, 1, &[0u8; 16_000]));
        let port = flooding_server(reply).await;
        // Without the cap this would be "timeout: …" after ten minutes.
        match probe("127.0.0.1", port, "", Duration::from_secs(600)).await {
            Outcome::Failure(m) => assert!(m.contains("longer than 16384"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_fails_the_probe() {
        let mut head = vec![0xff, 0xff, 0xff, DATA, 0];
        head.extend(1u32.to_be_bytes());
        let port = flooding_server(head).await;
        match probe("127.0.0.1", port, "", Duration::from_secs(600)).await {
            Outcome::Failure(m) => assert!(m.contains("16777215-byte frame"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_block_uses_static_names() {
        let h = request_headers("10.0.0.2:50051");
        assert_eq!(&h[..2], &[0x83, 0x86]);
        assert_eq!(h[2], 0x04, ":path as a literal with the static name");
        assert_eq!(h[3] as usize, "/grpc.health.v1.Health/Check".len());
        // content-type's static index 31 needs the 4-bit prefix continuation.
        let ct = h.windows(2).position(|w| w == [0x0f, 0x10]);
        assert!(ct.is_some(), "{h:?}");
    }
}
