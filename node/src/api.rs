//! The loopback control API: HTTP and JSON on 127.0.0.1 only, every request carrying the
//! bearer token kept in the 0600 file `api-token` in the data dir. The port it got is written
//! to `api-port` beside it, so local clients (`starling status`, the dashboard, tests) find it.
//!
//! Routes: `GET /status`, `/peers`, `/projects`, `/items?project=&state=&limit=`;
//! `POST /publish` (a signed manifest or batch file as the body) and `POST /trust` (a project
//! owner key, 64 hex digits). A missing or wrong token gets 401.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use starling_protocol::wire::MAX_FILE_BYTES;
use starling_protocol::{Envelope, PublicKey};

use crate::client::{Client, ItemQuery};
use crate::views::{ApiError, Outcome};

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "api-token";
/// The port file's name in the data dir.
pub const PORT_FILE: &str = "api-port";
/// Largest request body.
pub const BODY_BYTES_MAX: usize = MAX_FILE_BYTES + 64 * 1024;

#[derive(Debug, Clone)]
struct AppState {
    client: Client,
    token: String,
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

/// A bound control API, ready to serve.
#[derive(Debug)]
pub struct Api {
    listener: tokio::net::TcpListener,
    router: Router,
    port_file: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Api {
    /// Binds 127.0.0.1:`port` and writes the token and port files into `dir`.
    pub async fn bind(client: Client, dir: &Path, port: u16) -> Result<Self> {
        let token = load_or_create_token(dir)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| anyhow!("cannot listen for the control API on 127.0.0.1:{port}: {e}"))?;
        let addr = listener.local_addr()?;
        let port_file = dir.join(PORT_FILE);
        std::fs::write(&port_file, format!("{}\n", addr.port()))
            .map_err(|e| anyhow!("cannot write {}: {e}", port_file.display()))?;
        let state = AppState { client, token };
        let router = routes(state);
        Ok(Self { listener, router, port_file, addr })
    }

    /// Serves until `shutdown` resolves, then removes the port file.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let port_file = self.port_file.clone();
        if let Err(e) =
            axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await
        {
            tracing::error!(error = %e, "control API stopped");
        }
        let _ = std::fs::remove_file(port_file);
    }
}

fn routes(state: AppState) -> Router {
    let router = Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/projects", get(projects))
        .route("/items", get(items))
        .route("/publish", post(publish))
        .route("/trust", post(trust));
    #[cfg(debug_assertions)]
    let router = router.route("/debug/gossip", post(debug_gossip));
    router
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
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

async fn status(State(s): State<AppState>) -> Response {
    s.client.status().await.map_or_else(unavailable, |v| Json(v).into_response())
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
