//! The WebSocket framing of the remotecommand channels
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`): each binary message starts
//! with its channel number; v5 adds `[255, channel]` to close a channel
//! (the client's stdin end). Resize messages carry `{"Width":W,"Height":H}`.

use super::{channel, Inbound, Outbound};
use actix_http::ws::{hash_key, CloseCode, CloseReason, OpCode, Parser};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::future::Future;
use tokio::sync::mpsc;

/// The subprotocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The largest message accepted from a client (a stdin chunk or a resize).
const MAX_MESSAGE: usize = 1 << 20;

/// A binary message on `channel`.
pub fn frame(channel: u8, data: &[u8], mask: bool) -> Bytes {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    let mut out = BytesMut::new();
    Parser::write_message(&mut out, payload, OpCode::Binary, true, mask);
    out.freeze()
}

/// Reads one client message into what it means for the session; `None`
/// for messages that carry nothing for it.
pub fn inbound(message: &[u8]) -> Option<Inbound> {
    let (&ch, data) = message.split_first()?;
    match ch {
        channel::STDIN => Some(Inbound::Stdin(Bytes::copy_from_slice(data))),
        channel::RESIZE => resize(data),
        255 if data.first() == Some(&channel::STDIN) => Some(Inbound::StdinEnd),
        _ => None,
    }
}

/// A resize message: `{"Width":W,"Height":H}`.
pub fn resize(data: &[u8]) -> Option<Inbound> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some(Inbound::Resize {
        width: u16::try_from(v["Width"].as_u64()?).ok()?,
        height: u16::try_from(v["Height"].as_u64()?).ok()?,
    })
}

/// An accepted WebSocket: the 101 answer, the client's messages (binary
/// or text payloads, whole; the channel ends when the client closes), and a
/// sender of encoded frames (the response body ends when every sender is gone).
pub(super) struct Accepted {
    pub response: HttpResponse,
    pub messages: mpsc::Receiver<Vec<u8>>,
    pub frames: mpsc::Sender<Bytes>,
}

/// Answers a WebSocket upgrade offering one of `protocols`. Pings are
/// answered here.
pub(super) fn accept(
    req: &HttpRequest,
    mut payload: web::Payload,
    protocols: &[&'static str],
) -> Result<Accepted, Box<HttpResponse>> {
    let bad = |m: String| Box::new(crate::api::status(400, "BadRequest", m, None));
    let offered = super::offered(req, "sec-websocket-protocol");
    let Some(protocol) = protocols.iter().copied().find(|p| offered.iter().any(|o| o == p)) else {
        return Err(bad(format!(
            "no supported WebSocket subprotocol offered ({})",
            protocols.join(", ")
        )));
    };
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Err(bad("a WebSocket upgrade without Sec-WebSocket-Key".into()));
    };
    let accept = hash_key(key.as_bytes());
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(64);
    let (msg_tx, msg_rx) = mpsc::channel::<Vec<u8>>(64);
    let pongs = body_tx.downgrade();
    actix_web::rt::spawn(async move {
        let mut buf = BytesMut::new();
        let mut partial: Option<Vec<u8>> = None;
        'read: while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            loop {
                let (fin, op, data) = match Parser::parse(&mut buf, true, MAX_MESSAGE) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("WebSocket: {e}");
                        break 'read;
                    }
                };
                let data = data.map(|d| d.to_vec()).unwrap_or_default();
                let message = match op {
                    OpCode::Ping => {
                        let mut pong = BytesMut::new();
                        Parser::write_message(&mut pong, data, OpCode::Pong, true, false);
                        if let Some(tx) = pongs.upgrade() {
                            let _ = tx.send(pong.freeze()).await;
                        }
                        continue;
                    }
                    OpCode::Close => break 'read,
                    OpCode::Binary | OpCode::Text if fin => data,
                    OpCode::Binary | OpCode::Text => {
                        partial = Some(data);
                        continue;
                    }
                    OpCode::Continue => {
                        let mut m = partial.take().unwrap_or_default();
                        m.extend_from_slice(&data);
                        if !fin {
                            partial = Some(m);
                            continue;
                        }
                        m
                    }
                    _ => continue,
                };
                if msg_tx.send(message).await.is_err() {
                    break 'read;
                }
            }
        }
    });
    let response = HttpResponse::SwitchingProtocols()
        .upgrade("websocket")
        .insert_header(("sec-websocket-accept", &accept[..]))
        .insert_header(("sec-websocket-protocol", protocol))
        .streaming(super::spdy::body_stream(body_rx));
    Ok(Accepted {
        response,
        messages: msg_rx,
        frames: body_tx,
    })
}

pub(super) fn close_frame() -> Bytes {
    let mut close = BytesMut::new();
    Parser::write_close(&mut close, Some(CloseReason::from(CloseCode::Normal)), false);
    close.freeze()
}

/// Answers an exec's upgrade and runs `session` on the connection.
pub fn serve<F, Fut>(req: &HttpRequest, payload: web::Payload, session: F) -> HttpResponse
where
    F: FnOnce(mpsc::Receiver<Inbound>, mpsc::Sender<Outbound>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let Accepted {
        response,
        mut messages,
        frames,
    } = match accept(req, payload, &PROTOCOLS) {
        Ok(a) => a,
        Err(refused) => return *refused,
    };
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(64);
    actix_web::rt::spawn(session(in_rx, out_tx));
    // The session's output, framed; after the Status, a normal close.
    actix_web::rt::spawn(async move {
        while let Some(o) = out_rx.recv().await {
            let (bytes, last) = match o {
                Outbound::Data(ch, data) => (frame(ch, &data, false), false),
                Outbound::Status(s) => (frame(channel::ERROR, s.to_string().as_bytes(), false), true),
            };
            if frames.send(bytes).await.is_err() {
                return;
            }
            if last {
                let _ = frames.send(close_frame()).await;
                return;
            }
        }
    });
    // The client's messages. The session ends when the client closes or
    // the connection drops (`in_tx` dropped).
    actix_web::rt::spawn(async move {
        while let Some(message) = messages.recv().await {
            if let Some(event) = inbound(&message) {
                if in_tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    });
    response
}

/// A byte stream carried in WebSocket binary messages.
pub struct Tunnel {
    /// The 101 answer.
    pub response: HttpResponse,
    /// What the client sends.
    pub incoming: mpsc::Receiver<Vec<u8>>,
    /// Bytes to send back, one message each; dropping it closes the connection.
    pub outgoing: mpsc::Sender<Bytes>,
}

/// Accepts a byte stream in binary messages under subprotocol `protocol`
/// (kubectl 1.31+'s port-forward tunnels SPDY this way).
pub fn tunnel(req: &HttpRequest, payload: web::Payload, protocol: &'static str) -> Result<Tunnel, Box<HttpResponse>> {
    let Accepted {
        response,
        messages,
        frames,
    } = accept(req, payload, &[protocol])?;
    let (raw_tx, mut raw_rx) = mpsc::channel::<Bytes>(64);
    actix_web::rt::spawn(async move {
        while let Some(data) = raw_rx.recv().await {
            let mut f = BytesMut::new();
            Parser::write_message(&mut f, data, OpCode::Binary, true, false);
            if frames.send(f.freeze()).await.is_err() {
                return;
            }
        }
        let _ = frames.send(close_frame()).await;
    });
    Ok(Tunnel {
        response,
        incoming: messages,
        outgoing: raw_tx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_read_as_kubectl_sends_them() {
        assert!(matches!(inbound(b"\x00ls\n"), Some(Inbound::Stdin(d)) if &d[..] == b"ls\n"));
        assert!(matches!(inbound(&[255, 0]), Some(Inbound::StdinEnd)));
        assert!(matches!(
            inbound(b"\x04{\"Width\":80,\"Height\":24}"),
            Some(Inbound::Resize { width: 80, height: 24 })
        ));
        assert!(inbound(b"\x04{\"Width\":-1,\"Height\":24}").is_none());
        assert!(inbound(b"").is_none());
    }

    #[test]
    fn frames_carry_their_channel_first() {
        let mut f = BytesMut::from(&frame(channel::STDOUT, b"hi", true)[..]);
        let (fin, op, data) = Parser::parse(&mut f, true, 100).unwrap().unwrap();
        assert!(fin);
        assert_eq!(op, OpCode::Binary);
        assert_eq!(&data.unwrap()[..], b"\x01hi");
    }
}
