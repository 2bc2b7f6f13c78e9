//! A real node crawls real sites whose robots.txt cannot be read at first (503, 429, a host
//! that refuses connections until it comes up): every allowed URL ends archived, a URL the
//! robots.txt disallows stays disallowed with that reason, an out-of-scope one is refused, and
//! the owner's `starling urls --failed` lists exactly those two. `/status`, `starling status`
//! and `/metrics` count URLs by outcome.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use starling_protocol::{
    Envelope, ItemBatch, ProjectManifest, RatePolicy, RobotsPolicy, Signed, SizeCaps, WorkItem,
};

use crate::common::*;

type Hits = Arc<Mutex<BTreeMap<String, u32>>>;

/// A site's robots.txt: `status` for the first `fails` requests, then `text` (404 if `None`).
#[derive(Clone)]
struct Plan {
    status: u16,
    fails: u32,
    text: Option<&'static str>,
    hits: Hits,
}

async fn handle(State(p): State<Plan>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    let seen = {
        let mut hits = p.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    if path == "/robots.txt" {
        if seen <= p.fails {
            return StatusCode::from_u16(p.status).unwrap().into_response();
        }
        return match p.text {
            Some(t) => t.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    format!("<html><body>{path}</body></html>").into_response()
}

/// Serves `plan` on `listener` from a thread of its own.
fn serve(listener: std::net::TcpListener, plan: Plan) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new().fallback(handle).with_state(plan);
            let _ = axum::serve(listener, app).await;
        });
    });
}

fn plan(status: u16, fails: u32, text: Option<&'static str>) -> Plan {
    Plan { status, fails, text, hits: Hits::default() }
}

fn hits(p: &Plan, path: &str) -> u32 {
    p.hits.lock().unwrap().get(path).copied().unwrap_or(0)
}

#[test]
fn unreadable_robots_txt_defers_and_in_the_end_every_allowed_url_is_archived() {
    let a = std::net::TcpListener::bind("127.0.0.61:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.62:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // Host C refuses connections until the node has tried it once.
    let c_addr: SocketAddr =
        std::net::TcpListener::bind("127.0.0.63:0").unwrap().local_addr().unwrap();
    let a_plan = plan(503, 2, Some("User-agent: *\nDisallow: /private\n"));
    let b_plan = plan(429, 2, None);
    let c_plan = plan(200, 0, Some(""));
    serve(a, a_plan.clone());
    serve(b, b_plan.clone());

    let owner = starling_protocol::engine::test_keypair(61);
    let m = ProjectManifest {
        name: "outcomes".into(),
        description: String::new(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy {
            per_s_milli: 50_000,
            burst: 10,
            concurrency: 4,
            ..RatePolicy::default()
        },
        lease_ms: 20_000,
        replication: 0,
        scope: vec!["127.0.0.61".into(), "127.0.0.62".into(), "127.0.0.63".into()],
        user_agent: "starling-test-crawler".into(),
        robots: RobotsPolicy::Obey,
        caps: SizeCaps::default(),
        verify: no_checks(),
        shard_depth: 0,
    };
    let out_of_scope = "http://127.0.0.99:1/out".to_string();
    let private = format!("http://{a_addr}/private/x");
    let chunks: Vec<Vec<String>> = vec![
        vec![
            format!("http://{a_addr}/page/a1"),
            format!("http://{a_addr}/page/a2"),
            private.clone(),
        ],
        vec![format!("http://{b_addr}/page/b1"), format!("http://{b_addr}/page/b2")],
        vec![format!("http://{c_addr}/page/c1"), out_of_scope.clone()],
    ];
    let batch = ItemBatch {
        project: m.id(),
        seq: 1,
        items: chunks.iter().map(|urls| WorkItem::CrawlChunk { urls: urls.clone() }).collect(),
    };
    let args = crawl_node_args(&owner);
    let node = Node::start_real(&args);
    node.publish(&Envelope::Manifest(Signed::sign(&owner, &m)).to_bytes());
    node.publish(&Envelope::Batch(Signed::sign(&owner, &batch)).to_bytes());

    wait_for_or(
        "the node to try host C",
        Duration::from_secs(120),
        || num(&node.status(), &["network", "connect_failures"]) >= 1,
        || dump(std::slice::from_ref(&node)),
    );
    let c = std::net::TcpListener::bind(c_addr).expect("host C's port is free again");
    serve(c, c_plan.clone());
    wait_for_or(
        "every chunk done",
        Duration::from_secs(240),
        || num(&node.status(), &["items", "done"]) == chunks.len() as u64,
        || format!("{}\n{:?}", dump(std::slice::from_ref(&node)), node.status()["urls"]),
    );
    assert_eq!(num(&node.status(), &["items", "failed"]), 0);
    for (p, path) in [
        (&a_plan, "/page/a1"),
        (&a_plan, "/page/a2"),
        (&b_plan, "/page/b1"),
        (&b_plan, "/page/b2"),
        (&c_plan, "/page/c1"),
    ] {
        assert!(hits(p, path) >= 1, "{path} never fetched");
    }
    assert_eq!(hits(&a_plan, "/private/x"), 0, "a disallowed page was fetched");
    assert!(hits(&a_plan, "/robots.txt") >= 3 && hits(&b_plan, "/robots.txt") >= 3);

    // The owner's view: exactly the two URLs that did not make it, each with its reason.
    let project = m.id().to_hex();
    let failed = cli(&node, &["urls", "--project", &project, "--failed"]);
    let lines: Vec<&str> = failed.lines().collect();
    assert_eq!(lines.len(), 2, "{failed}");
    assert!(
        lines.contains(&format!("disallowed\t0\t{private}\tdisallowed by robots.txt").as_str()),
        "{failed}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("refused\t0\t{out_of_scope}\trefused: host"))
            && l.ends_with("out of scope")),
        "{failed}"
    );
    // A project is named by a unique id prefix or its name as well as its whole id.
    let all = cli(&node, &["urls", "--project", &project[..8]]);
    assert_eq!(cli(&node, &["urls", "--project", "outcomes"]), all);
    // `starling projects` lists it, complete, with its URL outcomes.
    let listed = cli(&node, &["projects"]);
    let row = listed.lines().find(|l| l.starts_with(&project[..12])).expect("listed");
    assert!(
        row.contains("outcomes") && row.contains("complete") && row.contains("3/3"),
        "{listed}"
    );
    assert_eq!(all.lines().filter(|l| l.starts_with("ok\t200\t")).count(), 5, "{all}");
    // The same counts per project, as the dashboard's Projects tab shows them.
    let projects: Vec<serde_json::Value> = node.api.get_json("/projects").expect("projects");
    let urls = &projects.iter().find(|p| p["id"] == project.as_str()).expect("listed")["urls"];
    assert_eq!(
        (urls["ok"].as_u64(), urls["refused"].as_u64(), urls["disallowed"].as_u64()),
        (Some(5), Some(1), Some(1)),
        "{urls}"
    );

    let s = node.status();
    assert!(num(&s, &["urls", "ok"]) >= 5, "{}", s["urls"]);
    assert!(num(&s, &["urls", "disallowed"]) >= 1 && num(&s, &["urls", "refused"]) >= 1);
    assert_eq!(s["network"]["down"], false);
    let text = cli(&node, &["status"]);
    assert!(text.contains("urls      ") && text.contains(" disallowed"), "{text}");
    let answer = node.api.request("GET", "/metrics", &[], None).expect("metrics");
    let metrics = String::from_utf8(answer.body).unwrap();
    assert!(metrics.contains("starling_urls_total{outcome=\"disallowed\"}"), "{metrics}");
}
