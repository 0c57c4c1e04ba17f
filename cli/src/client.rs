//! A small HTTP/1.1 client for the daemon's unix socket.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Talks to one daemon.
pub struct Client {
    socket: PathBuf,
    accept: &'static str,
    content_type: &'static str,
}

/// What kubectl's `get` asks for: objects as the server prints them.
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// A response: status code and body reader (chunked bodies are decoded).
struct Response {
    code: u16,
    reader: BufReader<UnixStream>,
    chunked: bool,
    length: Option<usize>,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            accept: "application/json",
            content_type: "application/json",
        }
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// The same daemon, sent bodies of another type (a PATCH's format).
    pub fn sending(&self, content_type: &'static str) -> Client {
        Client {
            socket: self.socket.clone(),
            accept: self.accept,
            content_type,
        }
    }

    /// The same daemon, asked for `Table`s where a list or object is returned.
    pub fn tables(&self) -> Client {
        Client {
            socket: self.socket.clone(),
            accept: ACCEPT_TABLE,
            content_type: self.content_type,
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response> {
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "cannot reach the peapod daemon at {} (is `peapod daemon` running?)",
                self.socket.display()
            )
        })?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: peapod\r\nAccept: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.accept,
            self.content_type,
            body.len()
        )?;
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                bail!("the daemon closed the connection without a response");
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&head)
            .map_err(|e| anyhow!("bad response from daemon: {e}"))?;
        let code = resp.code.unwrap_or(0);
        let mut chunked = false;
        let mut length = None;
        for h in resp.headers.iter() {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if h.name.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
            // The server's warnings (an unknown field), printed as kubectl prints them.
            if h.name.eq_ignore_ascii_case("warning") {
                eprintln!("Warning: {}", warning_text(&String::from_utf8_lossy(h.value)));
            }
        }
        Ok(Response {
            code,
            reader,
            chunked,
            length,
        })
    }

    /// Sends a request and returns the status code and the JSON body.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let mut bytes = Vec::new();
        let mut r = self.send(method, path, body)?;
        read_body(&mut r, |chunk| {
            bytes.extend_from_slice(chunk);
            true
        })?;
        let code = r.code;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((code, v))
    }

    /// Like [`Client::request`] but fails with the server's message on an error status.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (code, v) = self.request(method, path, body)?;
        if code >= 400 {
            bail!(
                "Error from server ({}): {}",
                v["reason"].as_str().unwrap_or("Unknown"),
                v["message"].as_str().unwrap_or(&v.to_string())
            );
        }
        Ok(v)
    }

    /// Reads the object at `path`, changes it with `change` and writes it
    /// back, again from a fresh read when it changed meanwhile (409), as
    /// kubectl's patches never conflict with a controller's status writes.
    pub fn modify(&self, path: &str, mut change: impl FnMut(&mut Value) -> Result<()>) -> Result<Value> {
        for _ in 0..10 {
            let mut obj = self.call("GET", path, None)?;
            change(&mut obj)?;
            let (code, v) = self.request("PUT", path, Some(&obj))?;
            if code == 409 {
                continue;
            }
            if code >= 400 {
                bail!(
                    "Error from server ({}): {}",
                    v["reason"].as_str().unwrap_or("Unknown"),
                    v["message"].as_str().unwrap_or(&v.to_string())
                );
            }
            return Ok(v);
        }
        bail!("Error from server (Conflict): {path} kept changing; try again")
    }

    /// Sends a request and hands the body to `on_data` as it arrives, until it returns false.
    /// Returns the status code; an error status's body is turned into an error.
    pub fn stream(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        mut on_data: impl FnMut(&[u8]) -> bool,
    ) -> Result<u16> {
        let mut r = self.send(method, path, body)?;
        if r.code >= 400 {
            let mut bytes = Vec::new();
            read_body(&mut r, |c| {
                bytes.extend_from_slice(c);
                true
            })?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            bail!(
                "Error from server ({}): {}",
                v["reason"].as_str().unwrap_or("Unknown"),
                v["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
            );
        }
        read_body(&mut r, &mut on_data)?;
        Ok(r.code)
    }
}

fn read_body(r: &mut Response, mut on_data: impl FnMut(&[u8]) -> bool) -> Result<()> {
    if r.chunked {
        loop {
            let mut size_line = String::new();
            if r.reader.read_line(&mut size_line)? == 0 {
                return Ok(());
            }
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                return Ok(());
            }
            let mut buf = vec![0; size];
            r.reader.read_exact(&mut buf)?;
            let mut crlf = [0; 2];
            r.reader.read_exact(&mut crlf)?;
            if !on_data(&buf) {
                return Ok(());
            }
        }
    }
    let mut buf = Vec::new();
    match r.length {
        Some(n) => {
            buf.resize(n, 0);
            r.reader.read_exact(&mut buf)?;
        }
        None => {
            r.reader.read_to_end(&mut buf)?;
        }
    }
    on_data(&buf);
    Ok(())
}

/// The text of a `Warning` header (`299 - "unknown field \"spec.x\""`).
fn warning_text(value: &str) -> String {
    let quoted = value.splitn(3, ' ').nth(2).unwrap_or(value).trim();
    match quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => quoted.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn warnings_read_as_kubectl_prints_them() {
        assert_eq!(
            super::warning_text(r#"299 - "unknown field \"spec.imagee\"""#),
            r#"unknown field "spec.imagee""#
        );
        assert_eq!(super::warning_text("299 - plain"), "plain");
    }
}
