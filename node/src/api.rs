//! The loopback control API: HTTP and JSON on 127.0.0.1 only, every request carrying the
//! bearer token kept in the 0600 file `api-token` in the data dir. The port it got is written
//! to `api-port` beside it, so local clients (`starling status`, the dashboard, tests) find it.
//!
//! Routes (the JSON shapes are in [`crate::views`]):
//! - reads: `GET /status`, `/peers`, `/projects`, `/items?project=&state=&limit=`, `/work`
//!   (held items and host states), `/seeding`, `/relay`, `/caps`, `/log?limit=&level=`,
//!   `/metrics` (Prometheus text, or OpenMetrics when `Accept` asks for it) and `/events` (server-sent events, one JSON
//!   [`NodeEvent`](crate::views::NodeEvent) per message);
//! - actions: `POST /publish` (a signed manifest, batch or directory file as the body),
//!   `/trust` (a project owner key, 64 hex digits), `/follow` (a curator key, 64 hex digits),
//!   `/pause`, `/resume`, `/caps` (JSON
//!   [`Caps`](crate::views::Caps)), `/projects/{id}/subscribe` (JSON `{"subscribed": bool}`)
//!   and `/projects/{id}/priority` (JSON `{"priority": -128..127}`).
//!
//! A missing or wrong token gets 401; a malformed request 400 with a one-line message.
//!
//! Every connection is bounded: at most [`API_CONNECTIONS_MAX`] are served at once (more wait
//! in the kernel's accept queue, holding no file descriptor of the node), request headers must
//! arrive within [`API_HEADER_READ_TIMEOUT`] (an idle keep-alive connection is closed after it
//! too) and a body within [`API_BODY_READ_TIMEOUT`]. The `api-port` file goes when the API
//! stops, however it stops.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use starling_protocol::wire::MAX_FILE_BYTES;
use starling_protocol::{Envelope, ProjectId, PublicKey};

use crate::client::{Client, ItemQuery};
use crate::hub::Hub;
use crate::seed::fetch::{FetchError, Fetcher};
use crate::seed::runner::SwarmSource;
use crate::views::{ApiError, Caps, Outcome, Priority, Subscription};

/// Most log lines one `/log` answer carries.
pub const LOG_LIMIT_DEFAULT: usize = 200;

pub use starling_tui::client::{PORT_FILE, TOKEN_FILE};
/// Largest request body.
pub const BODY_BYTES_MAX: usize = MAX_FILE_BYTES + 64 * 1024;
/// Control API connections served at once; a dashboard holds two or three.
pub const API_CONNECTIONS_MAX: usize = 32;
/// Time a client has to send a request's headers (and an idle connection stays open).
pub const API_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's body once its headers arrived.
pub const API_BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
struct AppState {
    client: Client,
    hub: Arc<Hub>,
    token: String,
    /// Fetches results the node lacks, for exports.
    fetcher: Option<Arc<Fetcher<SwarmSource>>>,
    /// The crawler, for its URL counters and network health in `/status` and `/metrics`.
    crawler: Option<Arc<crate::crawl::Crawler>>,
}

/// Reads the token, creating it (0600) with fresh randomness on first use.
pub fn load_or_create_token(dir: &Path) -> Result<String> {
    let path = dir.join(TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow!("no OS randomness: {e}"))?;
    let token = hex::encode(raw);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    writeln!(f, "{token}").map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}

/// The `api-port` file, removed when dropped: when the API stops, when the node stops before
/// serving, and when the runtime drops the serving task.
#[derive(Debug)]
struct PortFile(PathBuf);

impl Drop for PortFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bound control API, ready to serve.
#[derive(Debug)]
pub struct Api {
    listener: tokio::net::TcpListener,
    state: AppState,
    port_file: PortFile,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Api {
    /// Binds 127.0.0.1:`port` and writes the token and port files into `dir`.
    pub async fn bind(client: Client, hub: Arc<Hub>, dir: &Path, port: u16) -> Result<Self> {
        let token = load_or_create_token(dir)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| anyhow!("cannot listen for the control API on 127.0.0.1:{port}: {e}"))?;
        let addr = listener.local_addr()?;
        let port_file = dir.join(PORT_FILE);
        std::fs::write(&port_file, format!("{}\n", addr.port()))
            .map_err(|e| anyhow!("cannot write {}: {e}", port_file.display()))?;
        let port_file = PortFile(port_file);
        let state = AppState { client, hub, token, fetcher: None, crawler: None };
        Ok(Self { listener, state, port_file, addr })
    }

    /// Lets exports fetch results this node lacks.
    pub fn with_fetcher(mut self, fetcher: Arc<Fetcher<SwarmSource>>) -> Self {
        self.state.fetcher = Some(fetcher);
        self
    }

    /// Shows the crawler's URL counters and network health in `/status` and `/metrics`.
    pub fn with_crawler(mut self, crawler: Option<Arc<crate::crawl::Crawler>>) -> Self {
        self.state.crawler = crawler;
        self
    }

    /// Serves until `shutdown` resolves, then removes the port file at once and waits for the
    /// open requests to finish (the caller bounds that wait).
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        use hyper_util::rt::{TokioIo, TokioTimer};
        use hyper_util::service::TowerToHyperService;
        let Self { listener, state, port_file, .. } = self;
        let app = routes(state);
        let slots = Arc::new(tokio::sync::Semaphore::new(API_CONNECTIONS_MAX));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // A slot first, then the accept: connections past the cap wait in the kernel.
            let slot = tokio::select! {
                _ = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let stream = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "control API cannot accept a connection");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            let service = TowerToHyperService::new(app.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new()).header_read_timeout(API_HEADER_READ_TIMEOUT);
                let conn = http.serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                let stopping = tokio::select! {
                    _ = conn.as_mut() => false,
                    stop = stop.wait_for(|stop| *stop) => stop.is_ok(),
                };
                if stopping {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                drop(slot);
            });
        }
        drop(listener);
        drop(port_file);
        let _ = stop_tx.send(true);
        // Every slot back means every connection has finished.
        let _ = slots.acquire_many(API_CONNECTIONS_MAX as u32).await;
    }
}

/// Reads the whole body within [`API_BODY_READ_TIMEOUT`] and [`BODY_BYTES_MAX`], so a client
/// that stops half-way through a body does not hold its connection for ever.
async fn read_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(API_BODY_READ_TIMEOUT, axum::body::to_bytes(body, BODY_BYTES_MAX))
        .await
    {
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {} s", API_BODY_READ_TIMEOUT.as_secs()),
        ),
        Ok(Err(e)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body unreadable or over {BODY_BYTES_MAX} bytes: {e}"),
        ),
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
    }
}

fn routes(state: AppState) -> Router {
    let router = Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/projects", get(projects))
        .route("/items", get(items))
        .route("/work", get(work))
        .route("/seeding", get(seeding))
        .route("/relay", get(relay))
        .route("/caps", get(caps).post(set_caps))
        .route("/log", get(log))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/publish", post(publish))
        .route("/trust", post(trust))
        .route("/follow", post(follow))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/projects/{id}/subscribe", post(subscribe))
        .route("/projects/{id}/priority", post(priority))
        .route("/projects/{id}/export", post(export))
        .route("/projects/{id}/urls", get(urls));
    #[cfg(debug_assertions)]
    let router = router.route("/debug/gossip", post(debug_gossip));
    router
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn(read_body))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ApiError { error: msg.into() })).into_response()
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.trim().as_bytes(), state.token.as_bytes()) => next.run(req).await,
        _ => error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (see the api-token file)",
        ),
    }
}

fn unavailable(e: anyhow::Error) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// `/status`: the actor's view, plus (additively) the crawler's `urls` counters by class and
/// its `network` health, when this node crawls.
async fn status(State(s): State<AppState>) -> Response {
    let view = match s.client.status().await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let Some(crawler) = &s.crawler else { return Json(view).into_response() };
    let mut v = match serde_json::to_value(&view) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("urls".into(), serde_json::json!(crawler.url_counts()));
        obj.insert("network".into(), serde_json::json!(crawler.network_health()));
    }
    Json(v).into_response()
}

#[derive(Debug, Deserialize)]
struct UrlsParams {
    failed: Option<bool>,
}

/// `/projects/{id}/urls`: each URL of the project's done chunks with its class and reason,
/// from the signed receipts; `?failed=true` lists only those not archived.
async fn urls(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(p): Query<UrlsParams>,
) -> Response {
    let project = match project_id(&id) {
        Ok(p) => p,
        Err(msg) => return bad_request(msg),
    };
    match s.client.url_outcomes(project, p.failed.unwrap_or(false)).await {
        Err(e) => unavailable(e),
        Ok(Err(msg)) if msg.starts_with("no project") => error(StatusCode::NOT_FOUND, msg),
        Ok(Err(msg)) => error(StatusCode::SERVICE_UNAVAILABLE, msg),
        Ok(Ok(list)) => Json(list).into_response(),
    }
}

async fn peers(State(s): State<AppState>) -> Response {
    s.client.peers().await.map_or_else(unavailable, |v| Json(v).into_response())
}

async fn projects(State(s): State<AppState>) -> Response {
    s.client.projects().await.map_or_else(unavailable, |v| Json(v).into_response())
}

#[derive(Debug, Deserialize)]
struct ItemsParams {
    project: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

async fn items(State(s): State<AppState>, Query(p): Query<ItemsParams>) -> Response {
    let q = ItemQuery { project: p.project, state: p.state, limit: p.limit };
    s.client.items(q).await.map_or_else(unavailable, |v| Json(v).into_response())
}

fn outcome(r: Result<Result<Outcome, String>>) -> Response {
    match r {
        Err(e) => unavailable(e),
        Ok(Err(msg)) => error(StatusCode::UNPROCESSABLE_ENTITY, msg),
        Ok(Ok(o)) => Json(o).into_response(),
    }
}

async fn publish(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let env = match Envelope::from_file_bytes(&body) {
        Ok(env) => env,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("not a signed Starling file: {e}"));
        }
    };
    if let Err(e) = env.verify() {
        return error(StatusCode::BAD_REQUEST, format!("{} refused: {e}", env.kind()));
    }
    outcome(s.client.publish(env).await)
}

async fn trust(State(s): State<AppState>, body: String) -> Response {
    let key = match body.trim().parse::<PublicKey>() {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a public key: {e}")),
    };
    outcome(s.client.trust(key).await)
}

async fn follow(State(s): State<AppState>, body: String) -> Response {
    let key = match body.trim().parse::<PublicKey>() {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a public key: {e}")),
    };
    outcome(s.client.follow(key).await)
}

async fn work(State(s): State<AppState>) -> Response {
    s.client.work().await.map_or_else(unavailable, |v| Json(v).into_response())
}

async fn seeding(State(s): State<AppState>) -> Response {
    s.client.seeding().await.map_or_else(unavailable, |v| Json(v).into_response())
}

async fn relay(State(s): State<AppState>) -> Response {
    s.client.relay().await.map_or_else(unavailable, |v| Json(v).into_response())
}

async fn caps(State(s): State<AppState>) -> Response {
    s.client.status().await.map_or_else(unavailable, |v| Json(v.caps).into_response())
}

/// Parses a JSON body; the error is serde's message, for a 400.
fn json_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad {what} body: {e}"))
}

fn project_id(text: &str) -> Result<ProjectId, String> {
    text.parse::<ProjectId>()
        .map_err(|e| format!("{text:?} is not a project id (64 hex digits): {e}"))
}

fn bad_request(msg: String) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

async fn set_caps(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let caps: Caps = match json_body(&body, "caps") {
        Ok(c) => c,
        Err(msg) => return bad_request(msg),
    };
    match s.client.set_caps(caps).await {
        Err(e) => unavailable(e),
        Ok(Err(msg)) => error(StatusCode::BAD_REQUEST, msg),
        Ok(Ok(now)) => Json(now).into_response(),
    }
}

async fn pause(State(s): State<AppState>) -> Response {
    s.client.pause(true).await.map_or_else(unavailable, |v| Json(v).into_response())
}

async fn resume(State(s): State<AppState>) -> Response {
    s.client.pause(false).await.map_or_else(unavailable, |v| Json(v).into_response())
}

async fn subscribe(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let (project, sub) = match project_id(&id)
        .and_then(|p| json_body::<Subscription>(&body, "subscription").map(|b| (p, b)))
    {
        Ok(x) => x,
        Err(msg) => return bad_request(msg),
    };
    refusable(s.client.subscribe(project, sub.subscribed).await)
}

async fn priority(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let (project, p) = match project_id(&id)
        .and_then(|p| json_body::<Priority>(&body, "priority").map(|b| (p, b)))
    {
        Ok(x) => x,
        Err(msg) => return bad_request(msg),
    };
    refusable(s.client.priority(project, p.priority).await)
}

/// An action the node may refuse for a reason the caller can fix: 404 for an unknown project,
/// else 400.
fn refusable(r: Result<Result<Outcome, String>>) -> Response {
    match r {
        Err(e) => unavailable(e),
        Ok(Err(msg)) if msg.starts_with("no project") => error(StatusCode::NOT_FOUND, msg),
        Ok(Err(msg)) => error(StatusCode::BAD_REQUEST, msg),
        Ok(Ok(o)) => Json(o).into_response(),
    }
}

/// Results fetched at once for an export.
pub const EXPORT_FETCHES_MAX: usize = 4;
/// Times an export waits for a seeding duty already fetching the same result.
pub const EXPORT_WAITS_MAX: u32 = 120;
/// How long each such wait is.
pub const EXPORT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Makes every done result of a project local (fetching what this node lacks from holders)
/// and lists where each file is, for `starling export`.
async fn export(State(s): State<AppState>, UrlPath(id): UrlPath<String>) -> Response {
    use futures::StreamExt;
    let project = match project_id(&id) {
        Ok(p) => p,
        Err(msg) => return bad_request(msg),
    };
    let plan = match s.client.export_plan(project).await {
        Err(e) => return unavailable(e),
        Ok(Err(msg)) if msg.starts_with("no project") => return error(StatusCode::NOT_FOUND, msg),
        Ok(Err(msg)) => return error(StatusCode::CONFLICT, msg),
        Ok(Ok(plan)) => plan,
    };
    let Some(fetcher) = s.fetcher.clone() else {
        return error(StatusCode::CONFLICT, "this node keeps no blob store");
    };
    let results: Vec<Result<crate::views::ExportItem, String>> = futures::stream::iter(plan)
        .map(|p| {
            let fetcher = fetcher.clone();
            async move {
                let item = p.item.to_hex();
                let digest = p.digest.to_hex();
                if p.local {
                    let path = fetcher.store().blob_path(&p.digest).display().to_string();
                    return Ok(crate::views::ExportItem { item, digest, path, fetched: false });
                }
                let mut attempt = 0;
                let outcome = loop {
                    let outcome = fetcher.fetch(p.digest, p.size, p.holders.clone(), None).await;
                    // A seeding duty may be fetching the same blob right now: wait for it.
                    let busy = matches!(
                        outcome.result,
                        Err(FetchError::Store(crate::seed::store::StoreError::InUse))
                    );
                    attempt += 1;
                    if !busy || attempt >= EXPORT_WAITS_MAX || fetcher.store().has(&p.digest) {
                        break outcome;
                    }
                    tokio::time::sleep(EXPORT_WAIT).await;
                };
                let result = match outcome.result {
                    Err(FetchError::Store(crate::seed::store::StoreError::InUse))
                        if fetcher.store().has(&p.digest) =>
                    {
                        Ok(fetcher.store().blob_path(&p.digest))
                    }
                    other => other.map(|f| f.path),
                };
                match result {
                    Ok(path) => Ok(crate::views::ExportItem {
                        item,
                        digest,
                        path: path.display().to_string(),
                        fetched: true,
                    }),
                    Err(e) => Err(format!("result {digest} of item {item}: {e}")),
                }
            }
        })
        .buffer_unordered(EXPORT_FETCHES_MAX)
        .collect()
        .await;
    let mut items = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(item) => items.push(item),
            Err(e) => failed.push(e),
        }
    }
    if let Some(first) = failed.first() {
        let n = failed.len();
        return error(
            StatusCode::BAD_GATEWAY,
            format!("{n} results could not be fetched from their holders; first: {first}"),
        );
    }
    items.sort_by(|a, b| a.item.cmp(&b.item));
    Json(items).into_response()
}

#[derive(Debug, Deserialize)]
struct LogParams {
    limit: Option<usize>,
    level: Option<String>,
}

async fn log(State(s): State<AppState>, Query(p): Query<LogParams>) -> Response {
    let level = match p.level.as_deref().map(str::parse::<tracing::Level>) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "level must be one of error, warn, info, debug, trace",
            );
        }
    };
    let limit = p.limit.unwrap_or(LOG_LIMIT_DEFAULT).min(crate::hub::LOG_LINES_MAX);
    Json(s.hub.log_lines(limit, level)).into_response()
}

async fn events(State(s): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    use tokio::sync::broadcast::error::RecvError;
    let rx = s.hub.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(missed)) => crate::views::NodeEvent::Lagged { missed },
            Err(RecvError::Closed) => return None,
        };
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Some((Ok::<_, std::convert::Infallible>(Event::default().data(data)), rx))
    })
    // A stream left open would hold the server's graceful shutdown forever.
    .take_until(s.hub.closed());
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// `/metrics`: the classic Prometheus text format, or OpenMetrics when `Accept` prefers it.
async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use crate::metrics::Format;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let snap = match s.client.metrics().await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let urls = s.crawler.as_ref().map(|c| c.url_counts());
    let text = crate::metrics::render(&snap, urls.as_ref(), format);
    ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "Accept")], text)
        .into_response()
}

#[cfg(debug_assertions)]
#[derive(Debug, Deserialize)]
struct GossipParams {
    topic: String,
}

/// Debug builds only: gossip raw bytes, bypassing the engine (to test peers' rejection).
#[cfg(debug_assertions)]
async fn debug_gossip(
    State(s): State<AppState>,
    Query(p): Query<GossipParams>,
    body: axum::body::Bytes,
) -> Response {
    outcome(s.client.raw_gossip(p.topic, body.to_vec()).await)
}
