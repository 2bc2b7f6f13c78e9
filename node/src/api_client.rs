//! A small blocking client for the loopback control API, used by `starling status`,
//! `starling publish`, `starling project trust` and the tests. It speaks just enough HTTP/1.1
//! for one request per connection to 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde::de::DeserializeOwned;

use crate::api::{PORT_FILE, TOKEN_FILE};
use crate::views::ApiError;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response read.
pub const RESPONSE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Where a node's API is and the token it wants.
#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    token: String,
}

/// An answer: status code and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl ApiClient {
    /// A client for a given port and token.
    pub fn new(port: u16, token: impl Into<String>) -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], port)), token: token.into() }
    }

    /// Reads the port and token files a running node wrote into `dir`.
    pub fn from_data_dir(dir: &Path) -> Result<Self> {
        let port_path = dir.join(PORT_FILE);
        let port = std::fs::read_to_string(&port_path).map_err(|_| {
            anyhow!(
                "no running node found in {} (no {PORT_FILE} file); start one with `starling up`",
                dir.display()
            )
        })?;
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| anyhow!("{} does not hold a port number", port_path.display()))?;
        let token_path = dir.join(TOKEN_FILE);
        let token = std::fs::read_to_string(&token_path)
            .map_err(|e| anyhow!("cannot read the API token {}: {e}", token_path.display()))?;
        Ok(Self::new(port, token.trim()))
    }

    /// Sends one request; `token` overrides the client's (for tests of refusals).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Answer> {
        let mut s = TcpStream::connect_timeout(&self.addr, REQUEST_TIMEOUT).map_err(|e| {
            anyhow!(
                "cannot reach the node's control API at {} ({e}); is `starling up` running?",
                self.addr
            )
        })?;
        s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let token = token.unwrap_or(&self.token);
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw)?;
        parse_response(&raw)
    }

    /// GET `path` and decode the JSON answer; a non-2xx answer becomes its error line.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(self.request("GET", path, &[], None)?)
    }

    /// POST `body` to `path` and decode the JSON answer.
    pub fn post_json<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T> {
        decode(self.request("POST", path, body, None)?)
    }
}

fn decode<T: DeserializeOwned>(a: Answer) -> Result<T> {
    if !(200..300).contains(&a.status) {
        let msg = serde_json::from_slice::<ApiError>(&a.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&a.body).trim().to_owned());
        bail!("node answered {}: {msg}", a.status);
    }
    serde_json::from_slice(&a.body).map_err(|e| anyhow!("unexpected answer from the node: {e}"))
}

fn parse_response(raw: &[u8]) -> Result<Answer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("truncated HTTP answer from the node"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| anyhow!("garbled HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("garbled HTTP status line"))?;
    let body = raw[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(&body)? } else { body };
    Ok(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("bad chunk"))?;
        let size_text = std::str::from_utf8(&data[..eol])?.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| anyhow!("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}
