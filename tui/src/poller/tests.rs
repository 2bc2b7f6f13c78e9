//! The poller and the event reader against a real HTTP server on 127.0.0.1: a small axum app
//! that speaks the control API's contract (token, views, pause, caps, events) from fixtures.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::api::{ApiError, Caps, Outcome};
use crate::fixtures;

const TOKEN: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);

/// What the fake node remembers between requests.
#[derive(Debug, Default)]
struct Node {
    paused: AtomicBool,
    capacity: AtomicU16,
    log_queries: Mutex<Vec<String>>,
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    axum::Json(serde_json::to_value(value).expect("fixture serialises")).into_response()
}

fn error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(ApiError { error: error.to_owned() })).into_response()
}

async fn handle(
    State(node): State<Arc<Node>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let outcome = |what: &str| json(&Outcome { outcome: "applied".into(), what: what.into() });
    match (method.as_str(), uri.path()) {
        ("GET", "/status") => {
            let mut status = fixtures::status();
            status.paused = node.paused.load(Ordering::SeqCst);
            status.caps.capacity = Some(node.capacity.load(Ordering::SeqCst));
            json(&status)
        }
        ("GET", "/peers") => json(&fixtures::peers()),
        ("GET", "/projects") => json(&fixtures::projects()),
        ("GET", "/work") => json(&fixtures::work()),
        ("GET", "/seeding") => json(&fixtures::seeding()),
        ("GET", "/log") => {
            let query = uri.query().unwrap_or_default().to_owned();
            node.log_queries.lock().expect("lock").push(query);
            json(&fixtures::log())
        }
        ("GET", "/events") => {
            let event = r#"{"type":"changed","items":{"open":1,"held":2,"done":3,"failed":4}}"#;
            let body = format!(": hello\n\ndata: {event}\n\n");
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        ("POST", "/pause") => {
            node.paused.store(true, Ordering::SeqCst);
            outcome("pause")
        }
        ("POST", "/resume") => {
            node.paused.store(false, Ordering::SeqCst);
            outcome("resume")
        }
        ("POST", "/caps") => match serde_json::from_slice::<Caps>(&body) {
            Ok(Caps { capacity: Some(n), .. }) if n > 0 => {
                node.capacity.store(n, Ordering::SeqCst);
                json(&Caps { capacity: Some(n), ..Caps::default() })
            }
            Ok(_) => error(StatusCode::BAD_REQUEST, "capacity must be at least 1"),
            Err(e) => error(StatusCode::BAD_REQUEST, &format!("bad caps: {e}")),
        },
        // No `/relay`: this node predates relaying, which the dashboard must take in stride.
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Serves the fake node on `listener` until the returned runtime is dropped.
fn serve(listener: std::net::TcpListener, node: Arc<Node>) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    listener.set_nonblocking(true).expect("nonblocking");
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let app = Router::new().fallback(handle).with_state(node);
        axum::serve(listener, app).await.expect("serve");
    });
    rt
}

fn bind() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// A running poller and the ends of its channels.
struct Harness {
    ui: Receiver<Action>,
    inbox: SyncSender<PollerMsg>,
    shutdown: Arc<AtomicBool>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

fn start_poller(base: String, token: &str) -> Harness {
    let (ui_tx, ui) = sync_channel(UI_QUEUE_CAP);
    let (inbox, inbox_rx) = sync_channel(POLLER_QUEUE_CAP);
    let shutdown = Arc::new(AtomicBool::new(false));
    let target = Target::Fixed { base, token: token.to_owned() };
    let refresh = Arc::new(AtomicBool::new(false));
    let poller = Poller::new(target, TICK, inbox_rx, ui_tx, refresh, shutdown.clone());
    std::thread::spawn(move || poller.run());
    Harness { ui, inbox, shutdown }
}

/// The first action that `pick` accepts, within [`WAIT`].
fn wait_for<T>(rx: &Receiver<Action>, mut pick: impl FnMut(Action) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let action = rx.recv_timeout(left).expect("the expected action within the wait");
        if let Some(found) = pick(action) {
            return found;
        }
    }
}

fn snapshot(rx: &Receiver<Action>) -> Snapshot {
    wait_for(rx, |a| match a {
        Action::Snapshot(s) => Some(*s),
        _ => None,
    })
}

fn unreachable(rx: &Receiver<Action>) -> String {
    wait_for(rx, |a| match a {
        Action::Unreachable { error, .. } => Some(error),
        _ => None,
    })
}

fn answer(rx: &Receiver<Action>) -> (Command, Result<Applied, String>) {
    wait_for(rx, |a| match a {
        Action::CommandDone { command, result } => Some((command, result)),
        _ => None,
    })
}

#[test]
fn polls_every_view_and_runs_commands() {
    let listener = bind();
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let node = Arc::new(Node { capacity: AtomicU16::new(4), ..Node::default() });
    let _server = serve(listener, node.clone());
    let h = start_poller(base.clone(), TOKEN);

    let snap = snapshot(&h.ui);
    assert_eq!(snap.base, base);
    assert_eq!(snap.status.node_id, fixtures::status().node_id);
    assert_eq!(snap.peers.len(), fixtures::peers().len());
    assert_eq!(snap.work, fixtures::work());
    assert_eq!(snap.seeding, Some(fixtures::seeding()));
    assert_eq!(snap.relay, None, "a 404 view is absent, not an error");
    assert_eq!(snap.log, fixtures::log());
    assert!(node.log_queries.lock().expect("lock").iter().any(|q| q == "limit=500"));

    h.inbox.send(PollerMsg::Command(Command::Pause)).expect("send");
    assert_eq!(answer(&h.ui), (Command::Pause, Ok(Applied::Done)));
    assert!(node.paused.load(Ordering::SeqCst), "the node really paused");
    assert!(snapshot(&h.ui).status.paused, "the poll after a command shows it");

    h.inbox.send(PollerMsg::Command(Command::SetCapacity(7))).expect("send");
    let caps = Caps { capacity: Some(7), ..Caps::default() };
    assert_eq!(answer(&h.ui), (Command::SetCapacity(7), Ok(Applied::Caps(caps))));

    h.inbox.send(PollerMsg::Command(Command::SetCapacity(0))).expect("send");
    let (_, result) = answer(&h.ui);
    let err = result.expect_err("the node refuses capacity 0");
    assert!(err.contains("400") && err.contains("at least 1"), "{err}");

    h.inbox.send(PollerMsg::Command(Command::Resume)).expect("send");
    assert_eq!(answer(&h.ui), (Command::Resume, Ok(Applied::Done)));
    assert!(!node.paused.load(Ordering::SeqCst));
}

#[test]
fn a_wrong_token_is_reported() {
    let listener = bind();
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let _server = serve(listener, Arc::new(Node::default()));
    let h = start_poller(base, "wrong");
    // Told apart from a node that is away, so the dashboard can say what to fix.
    let error = wait_for(&h.ui, |a| match a {
        Action::Unauthorized { error, .. } => Some(error),
        Action::Unreachable { error, .. } => panic!("a 401 read as unreachable: {error}"),
        _ => None,
    });
    assert!(error.contains("401") && error.contains("wrong token"), "{error}");
}

#[test]
fn recovers_when_the_node_comes_back() {
    let listener = bind();
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let h = start_poller(format!("http://{addr}"), TOKEN);
    let error = unreachable(&h.ui);
    assert!(error.contains("cannot reach"), "{error}");
    let listener = std::net::TcpListener::bind(addr).expect("rebind the same port");
    let _server = serve(listener, Arc::new(Node::default()));
    let snap = snapshot(&h.ui);
    assert_eq!(snap.status.node_id, fixtures::status().node_id);
}

#[test]
fn events_are_forwarded_and_nudge_the_poller() {
    let listener = bind();
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let _server = serve(listener, Arc::new(Node::default()));
    let (ui_tx, ui) = sync_channel(UI_QUEUE_CAP);
    let (poller_tx, poller_rx) = sync_channel(POLLER_QUEUE_CAP);
    let shutdown = Arc::new(AtomicBool::new(false));
    let refresh = Arc::new(AtomicBool::new(false));
    let target = Target::Fixed { base, token: TOKEN.to_owned() };
    let (stop, flag) = (shutdown.clone(), refresh.clone());
    std::thread::spawn(move || read_events(target, ui_tx, poller_tx, flag, stop));
    let items = wait_for(&ui, |a| match a {
        Action::Node(NodeEvent::Changed { items }) => Some(items),
        _ => None,
    });
    assert_eq!((items.open, items.held, items.done, items.failed), (1, 2, 3, 4));
    let nudge = poller_rx.recv_timeout(WAIT).expect("a refresh nudge");
    assert!(matches!(nudge, PollerMsg::Refresh));
    // The stream ended; the reader reconnects and the event comes again.
    wait_for(&ui, |a| matches!(a, Action::Node(NodeEvent::Changed { .. })).then_some(()));
    shutdown.store(true, Ordering::SeqCst);
}
