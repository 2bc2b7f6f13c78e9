//! The demo's local website: a small, deterministic site on 127.0.0.1 for the demo nodes to
//! crawl, so `starling demo` needs no network. Pages link to each other, vary in size, and a
//! few URLs answer 404 (archived like any answer). It counts the requests it serves, so the
//! demo can show what the mesh fetched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, anyhow};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Every this many page numbers, the page is gone (404).
pub const GONE_EVERY: u64 = 23;

/// A running demo site.
#[derive(Debug)]
pub struct Site {
    /// Where it listens.
    pub addr: SocketAddr,
    served: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Site {
    /// Binds 127.0.0.1 on a free port and serves on `rt` until dropped.
    pub fn start(rt: &tokio::runtime::Handle) -> Result<Self> {
        let served = Arc::new(AtomicU64::new(0));
        let app = router(served.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .map_err(|e| anyhow!("cannot start the demo site on 127.0.0.1: {e}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "demo site stopped");
            }
        });
        Ok(Self { addr, served, _stop: stop })
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The URL of page `n`.
    pub fn page_url(&self, n: u64) -> String {
        format!("http://{}/page/{n}", self.addr)
    }
}

fn router(served: Arc<AtomicU64>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/robots.txt", get(robots))
        .route("/page/{n}", get(page))
        .with_state(served)
}

async fn robots(State(served): State<Arc<AtomicU64>>) -> &'static str {
    served.fetch_add(1, Ordering::Relaxed);
    "User-agent: *\nAllow: /\n"
}

async fn index(State(served): State<Arc<AtomicU64>>) -> Response {
    served.fetch_add(1, Ordering::Relaxed);
    html("<h1>Starling demo site</h1><p><a href=\"/page/0\">Start here</a></p>".into())
}

async fn page(State(served): State<Arc<AtomicU64>>, Path(n): Path<u64>) -> Response {
    served.fetch_add(1, Ordering::Relaxed);
    if n % GONE_EVERY == GONE_EVERY - 1 {
        return (StatusCode::NOT_FOUND, html(format!("<h1>Page {n} is gone</h1>"))).into_response();
    }
    html(page_body(n))
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// A page of a size that varies with `n` (about 1–9 KB), linking to its neighbours.
pub fn page_body(n: u64) -> String {
    let mut s = format!(
        "<!doctype html><html><head><title>Demo page {n}</title></head><body>\
         <h1>Demo page {n}</h1><p><a href=\"/page/{}\">next</a> · <a href=\"/page/{}\">back</a></p>",
        n + 1,
        n.saturating_sub(1)
    );
    let paragraphs = 2 + (n * 7919) % 17;
    for p in 0..paragraphs {
        s.push_str(&format!(
            "<p>Paragraph {p} of page {n}. Volunteers keep the web's memory; this text stands \
             in for the page a crawler would archive, {} times over.</p>",
            (n + p) % 11
        ));
    }
    s.push_str("</body></html>");
    s
}
