//! The control API end to end against a real node process: every route answers in its JSON
//! shape, refuses a missing or wrong token, answers malformed requests with 400 and a message,
//! and its actions (pause, resume, caps, subscribe, priority) really change what the node does
//! — and the ones meant to last survive a restart. `/metrics` parses back and agrees with
//! `/status`; `/events` streams.

use std::time::Duration;

use crate::common::*;
use starling_node::views::{
    Caps, ItemInfo, LogLine, NodeEvent, PeerInfo, ProjectInfo, RelayView, SeedingView, StatusView,
    WorkView,
};

const GETS: &[&str] = &[
    "/status",
    "/peers",
    "/projects",
    "/items",
    "/work",
    "/seeding",
    "/relay",
    "/caps",
    "/log",
    "/metrics",
    "/events",
];
const POSTS: &[&str] = &["/publish", "/trust", "/follow", "/pause", "/resume", "/caps"];

fn done(n: &Node) -> u64 {
    n.api.get_json::<StatusView>("/status").map_or(0, |s| s.items.done)
}

/// Parses Prometheus text into (name{labels}, value) pairs.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad metrics line {l:?}"));
            (k.to_owned(), v.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

fn metric(all: &[(String, f64)], key: &str) -> f64 {
    all.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no metric {key}")).1
}

#[test]
fn every_route_answers_and_refuses_bad_requests() {
    let p = project(41, "api", 6, 20_000);
    let node = Node::start(100, &trusted(&p));
    let api = &node.api;

    // Every route wants the token.
    for path in GETS {
        for token in ["", "0000wrong"] {
            let a = api.request("GET", path, &[], Some(token)).unwrap();
            assert_eq!(a.status, 401, "GET {path} with token {token:?}");
        }
    }
    for path in POSTS {
        let a = api.request("POST", path, b"{}", Some("")).unwrap();
        assert_eq!(a.status, 401, "POST {path} without a token");
    }

    node.publish(&p.manifest);
    node.publish(&p.batch);
    wait_for("all items done", Duration::from_secs(60), || done(&node) == 6);

    let status: StatusView = api.get_json("/status").unwrap();
    assert_eq!(status.items.done, 6);
    assert!(status.now_ms > 0);
    let _: Vec<PeerInfo> = api.get_json("/peers").unwrap();
    let projects: Vec<ProjectInfo> = api.get_json("/projects").unwrap();
    assert_eq!(projects.len(), 1);
    assert!(projects[0].trusted && projects[0].subscribed);
    assert_eq!(projects[0].priority, 0);
    let items: Vec<ItemInfo> = api.get_json("/items?state=done&limit=4").unwrap();
    assert_eq!(items.len(), 4);
    let work: WorkView = api.get_json("/work").unwrap();
    assert!(work.now_ms > 0);
    let seeding: SeedingView = api.get_json("/seeding").unwrap();
    assert!(seeding.capacity > 0);
    let relay: RelayView = api.get_json("/relay").unwrap();
    assert!(["unknown", "public", "private"].contains(&relay.reachability.as_str()));
    let log: Vec<LogLine> = api.get_json("/log?limit=5").unwrap();
    assert!(!log.is_empty() && log.len() <= 5, "{log:?}");
    let warn: Vec<LogLine> = api.get_json("/log?level=warn").unwrap();
    assert!(warn.iter().all(|l| l.level == "WARN" || l.level == "ERROR"), "{warn:?}");

    // Metrics parse back and agree with the status.
    let a = api.request("GET", "/metrics", &[], None).unwrap();
    assert_eq!(a.status, 200);
    let text = String::from_utf8(a.body).unwrap();
    // The classic text format unless OpenMetrics is asked for (see metrics.rs).
    assert!(!text.contains("# EOF"), "{text}");
    let m = parse_metrics(&text);
    assert_eq!(metric(&m, "starling_items{state=\"done\"}"), 6.0);
    assert_eq!(metric(&m, "starling_items{state=\"open\"}"), 0.0);
    let status: StatusView = api.get_json("/status").unwrap();
    assert_eq!(metric(&m, "starling_items_done_total"), status.engine.finished as f64);
    assert!(metric(&m, "starling_store_bytes") > 0.0);
    assert_eq!(metric(&m, "starling_paused"), 0.0);

    // Malformed requests: 400 with a message.
    let bad: &[(&str, &[u8], &str)] = &[
        ("/caps", b"{not json", "bad caps body"),
        ("/caps", br#"{"speed": 3}"#, "unknown field"),
        ("/caps", br#"{"capacity": 100000}"#, "bad caps body"),
        ("/caps", br#"{"capacity": 999}"#, "over the most allowed"),
        ("/trust", b"not-a-key", "not a public key"),
        ("/follow", b"not-a-key", "not a public key"),
        ("/publish", b"garbage", "not a signed Starling file"),
        ("/projects/xyz/subscribe", br#"{"subscribed": false}"#, "not a project id"),
        ("/projects/xyz/priority", br#"{"priority": 1}"#, "not a project id"),
    ];
    for (path, body, needle) in bad {
        let a = api.request("POST", path, body, None).unwrap();
        let text = String::from_utf8_lossy(&a.body);
        assert_eq!(a.status, 400, "POST {path}: {text}");
        assert!(text.contains(needle), "POST {path}: {text}");
    }
    let pid = p.id.to_hex();
    let a = api
        .request("POST", &format!("/projects/{pid}/subscribe"), br#"{"on": true}"#, None)
        .unwrap();
    assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(&a.body));
    let a = api
        .request("POST", &format!("/projects/{pid}/priority"), br#"{"priority": 300}"#, None)
        .unwrap();
    assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(&a.body));
    let unknown = "ab".repeat(32);
    let a = api
        .request(
            "POST",
            &format!("/projects/{unknown}/subscribe"),
            br#"{"subscribed": false}"#,
            None,
        )
        .unwrap();
    assert_eq!(a.status, 404, "{}", String::from_utf8_lossy(&a.body));
    let a = api.request("GET", "/log?level=loud", &[], None).unwrap();
    assert_eq!(a.status, 400);

    // Caps change and show in the status.
    let caps: Caps = api.post_json("/caps", br#"{"capacity": 2, "disk_bytes_max": 0}"#).unwrap();
    assert_eq!(caps.capacity, Some(2));
    let status: StatusView = api.get_json("/status").unwrap();
    assert_eq!(status.capacity, 2);
    assert_eq!(status.caps.capacity, Some(2));
}

#[test]
fn pause_subscribe_and_priority_change_what_the_node_claims_and_last() {
    // Three projects of one owner: `paused` is worked on by a witness node while this one is
    // paused; `control` is unsubscribed here; `witness` shows when this node has claimed what
    // it would claim.
    let paused = project(42, "paused", 3, 20_000);
    let p = project(42, "control", 5, 20_000);
    let witness = project(42, "witness", 3, 20_000);
    let mut node = Node::start(50, &trusted(&p));
    let api = node.api.clone();

    // Events stream: the pause shows up as an event.
    let events = api.events().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    std::thread::spawn(move || {
        for ev in events {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });

    let _: serde_json::Value = api.post_json("/pause", b"").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = rx.recv_timeout(Duration::from_secs(30)).expect("an event").unwrap();
        if ev == (NodeEvent::Paused { paused: true }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no pause event");
    }

    // Paused: the items arrive but nothing is claimed. A second node, started after this one
    // learnt the items, does all of them: this node had them, warmed up, at least as long,
    // and an unpaused node ranking first for some would have claimed those (and the other
    // could not have finished them all).
    node.publish(&paused.manifest);
    node.publish(&paused.batch);
    wait_for("items known", Duration::from_secs(30), || {
        project_items(&node, &paused).is_some_and(|c| c.open == 3)
    });
    let mut other_args = trusted(&paused);
    other_args.extend(["--bootstrap".to_string(), node.addr()]);
    let mut other = Node::start(50, &other_args);
    wait_for_or(
        "the other node does the paused node's items",
        Duration::from_secs(60),
        || project_items(&node, &paused).is_some_and(|c| c.done == 3),
        || read_log(&other.dir),
    );
    let s: StatusView = api.get_json("/status").unwrap();
    assert!(s.paused);
    assert_eq!(s.engine.claims, 0, "a paused node claimed work");
    let stopped = other.stop();
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}\n{}", read_log(&other.dir));

    // Unsubscribe, then resume: still nothing claimed for that project, though it comes first
    // by priority and was ready first. The witness project's items being done shows the node
    // claimed what it would claim.
    node.publish(&p.manifest);
    node.publish(&p.batch);
    node.publish(&witness.manifest);
    node.publish(&witness.batch);
    wait_for("items known", Duration::from_secs(30), || {
        project_items(&node, &p).is_some_and(|c| c.open == 5)
            && project_items(&node, &witness).is_some_and(|c| c.open == 3)
    });
    let pid = p.id.to_hex();
    let _: serde_json::Value =
        api.post_json(&format!("/projects/{pid}/subscribe"), br#"{"subscribed": false}"#).unwrap();
    let _: serde_json::Value =
        api.post_json(&format!("/projects/{pid}/priority"), br#"{"priority": 5}"#).unwrap();
    let _: serde_json::Value = api.post_json("/resume", b"").unwrap();
    wait_for_or(
        "the witness project's items done",
        Duration::from_secs(60),
        || project_items(&node, &witness).is_some_and(|c| c.done == 3),
        || read_log(&node.dir),
    );
    let s: StatusView = api.get_json("/status").unwrap();
    assert!(!s.paused);
    let items: Vec<ItemInfo> = api.get_json(&format!("/items?project={pid}")).unwrap();
    assert_eq!(items.len(), 5);
    assert!(
        items.iter().all(|i| i.state == "open" && i.epoch == 0),
        "an unsubscribed project's items were claimed: {items:?}"
    );

    // The choices survive a restart.
    let stopped = node.stop();
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}\n{}", read_log(&node.dir));
    node.restart();
    let projects: Vec<ProjectInfo> = node.api.get_json("/projects").unwrap();
    let control = projects.iter().find(|i| i.id == pid).expect("the project after restart");
    assert!(!control.subscribed, "subscription lost on restart");
    assert_eq!(control.priority, 5, "priority lost on restart");

    // Subscribing again lets the work run.
    let _: serde_json::Value = node
        .api
        .post_json(&format!("/projects/{pid}/subscribe"), br#"{"subscribed": true}"#)
        .unwrap();
    wait_for_or(
        "all items done after subscribing",
        Duration::from_secs(60),
        || project_items(&node, &p).is_some_and(|c| c.done == 5),
        || read_log(&node.dir),
    );
}

/// A project's item counts as the node reports them, once it knows the project.
fn project_items(n: &Node, p: &TestProject) -> Option<starling_protocol::ItemCounts> {
    let projects: Vec<ProjectInfo> = n.api.get_json("/projects").ok()?;
    projects.into_iter().find(|i| i.id == p.id.to_hex()).map(|i| i.items)
}
