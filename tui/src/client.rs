//! A blocking client for the node's loopback control API, used by `starling status`,
//! `starling publish`, `starling project trust`, the dashboard and the tests.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::de::DeserializeOwned;

use crate::api::{ApiError, NodeEvent};

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "api-token";
/// The port file's name in the data dir.
pub const PORT_FILE: &str = "api-port";
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read.
pub const RESPONSE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Longest line accepted from the event stream.
pub const EVENT_LINE_MAX: usize = 64 * 1024;

/// Where a node's API is and the token it wants.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
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
    /// A client for a port on 127.0.0.1 and a token.
    pub fn new(port: u16, token: impl Into<String>) -> Self {
        Self::with_base(format!("http://127.0.0.1:{port}"), token)
    }

    /// A client for a base URL such as `http://127.0.0.1:7411`.
    pub fn with_base(base: impl Into<String>, token: impl Into<String>) -> Self {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::blocking::Client::new());
        let base: String = base.into();
        Self { base: base.trim_end_matches('/').to_owned(), token: token.into(), http }
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
        Ok(Self::new(port, read_token(dir)?))
    }

    /// The same client with another per-request time limit (long operations such as exports).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        if let Ok(http) = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .no_proxy()
            .build()
        {
            self.http = http;
        }
        self
    }

    /// The base URL requests go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; `token` overrides the client's (for tests of refusals; an empty
    /// token sends no `Authorization` header).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Answer> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| anyhow!("bad HTTP method {method:?}"))?;
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body.to_vec());
        let token = token.unwrap_or(&self.token);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let resp = req.send().map_err(|e| {
            anyhow!(
                "cannot reach the node's control API at {} ({e}); is `starling up` running?",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        resp.take(RESPONSE_BYTES_MAX)
            .read_to_end(&mut body)
            .map_err(|e| anyhow!("cannot read the node's answer: {e}"))?;
        Ok(Answer { status, body })
    }

    /// GET `path` and decode the JSON answer; a non-2xx answer becomes its error line.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(self.request("GET", path, &[], None)?)
    }

    /// POST `body` to `path` and decode the JSON answer.
    pub fn post_json<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T> {
        decode(self.request("POST", path, body, None)?)
    }

    /// Opens the live event stream (`GET /events`). Reading blocks until the next event; the
    /// iterator ends when the node closes the stream.
    pub fn events(&self) -> Result<Events> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None)
            .no_proxy()
            .build()
            .map_err(|e| anyhow!("cannot build an HTTP client: {e}"))?;
        let resp = http
            .get(format!("{}/events", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .map_err(|e| anyhow!("cannot reach the node's event stream at {}: {e}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.text().unwrap_or_default();
            let answer = Answer { status, body: body.into_bytes() };
            let err = decode::<serde_json::Value>(answer).err();
            return Err(err.unwrap_or_else(|| anyhow!("node answered {status}")));
        }
        Ok(Events { reader: BufReader::new(Box::new(resp)) })
    }
}

/// Reads the API token from a data dir.
pub fn read_token(dir: &Path) -> Result<String> {
    let token_path = dir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path)
        .map_err(|e| anyhow!("cannot read the API token {}: {e}", token_path.display()))?;
    Ok(token.trim().to_owned())
}

/// A non-2xx answer from the node, as an error: callers that care which status it was (the
/// dashboard tells a wrong token from a node that is away) downcast to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status code.
    pub status: u16,
    /// The node's one-line reason.
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node answered {}: {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

/// Decodes a JSON answer; a non-2xx answer becomes a [`Refused`] error carrying the node's
/// message.
pub fn decode<T: DeserializeOwned>(a: Answer) -> Result<T> {
    if !(200..300).contains(&a.status) {
        let message = serde_json::from_slice::<ApiError>(&a.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&a.body).trim().to_owned());
        return Err(Refused { status: a.status, message }.into());
    }
    serde_json::from_slice(&a.body).map_err(|e| anyhow!("unexpected answer from the node: {e}"))
}

/// The live event stream: server-sent events, each `data:` line one JSON [`NodeEvent`].
pub struct Events {
    reader: BufReader<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Iterator for Events {
    type Item = Result<NodeEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = match (&mut self.reader)
                .take(EVENT_LINE_MAX as u64 + 1)
                .read_until(b'\n', &mut line)
            {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => return Some(Err(anyhow!("event stream broke: {e}"))),
            };
            if n > EVENT_LINE_MAX {
                return Some(Err(anyhow!("event line longer than {EVENT_LINE_MAX} bytes")));
            }
            let text = String::from_utf8_lossy(&line);
            let Some(data) = text.trim_end().strip_prefix("data:") else { continue };
            return Some(
                serde_json::from_str(data.trim())
                    .map_err(|e| anyhow!("undecodable event from the node: {e}")),
            );
        }
    }
}
