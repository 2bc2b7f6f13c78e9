//! Truthful per-URL outcomes against real sites on 127.0.0.x: a robots.txt that cannot be read
//! (503, 429, a host refusing connections) defers the host's URLs, never drops them; only a
//! robots.txt that was read disallows; the SSRF guard refusing the robots.txt target refuses
//! the URL; a chunk still transient after its retries goes back to the mesh with no file left;
//! connect failures on several hosts say the network is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use starling_node::crawl::runner::{CrawlRunner, ManifestLookup};
use starling_node::crawl::{
    ChunkRequest, ChunkResult, CrawlError, Crawler, CrawlerConfig, Outcome,
};
use starling_node::runner::{Job, Runner, RunnerCounters, WorkReport};
use starling_protocol::{
    ItemId, Keypair, NodeId, ProjectManifest, RatePolicy, RobotsPolicy, SizeCaps, WorkItem,
};

/// How a site answers `/robots.txt`: `status` for the first `fails` requests, then `text`
/// with 200 (or 404 when `None`).
#[derive(Debug, Clone)]
struct RobotsPlan {
    status: u16,
    fails: u32,
    text: Option<String>,
}

#[derive(Debug)]
struct SiteState {
    plan: RobotsPlan,
    hits: Mutex<HashMap<String, u32>>,
}

struct Site {
    addr: SocketAddr,
    state: Arc<SiteState>,
}

impl Site {
    async fn start(ip: &str, plan: RobotsPlan) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind on 127/8");
        Self::serve(listener, plan)
    }

    fn serve(listener: tokio::net::TcpListener, plan: RobotsPlan) -> Self {
        let state = Arc::new(SiteState { plan, hits: Mutex::default() });
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits_on(&self, path: &str) -> u32 {
        self.state.hits.lock().expect("lock").get(path).copied().unwrap_or(0)
    }
}

async fn handle(State(s): State<Arc<SiteState>>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    let seen = {
        let mut hits = s.hits.lock().expect("lock");
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    if path == "/robots.txt" {
        if seen <= s.plan.fails {
            return StatusCode::from_u16(s.plan.status).expect("status").into_response();
        }
        return match &s.plan.text {
            Some(text) => text.clone().into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    format!("<html><body>{path}</body></html>").into_response()
}

fn manifest(name: &str) -> ProjectManifest {
    ProjectManifest {
        name: name.into(),
        description: String::new(),
        version: 1,
        owner: Keypair::from_secret([8; 32]).public(),
        rate: RatePolicy {
            per_s_milli: 50_000,
            burst: 10,
            concurrency: 4,
            ..RatePolicy::default()
        },
        lease_ms: 60_000,
        replication: 0,
        scope: Vec::new(),
        user_agent: "StarlingTest/1.0".into(),
        robots: RobotsPolicy::Obey,
        caps: SizeCaps {
            response_bytes_max: 64 * 1024,
            chunk_urls_max: 100,
            result_bytes_max: 1 << 20,
        },
        verify: Default::default(),
        shard_depth: 0,
    }
}

fn config(dir: &Path) -> CrawlerConfig {
    let mut c = CrawlerConfig::new(dir.to_owned(), NodeId([9; 32]));
    c.allow_private_targets = true;
    c.connect_timeout = Duration::from_secs(2);
    c.response_timeout = Duration::from_secs(2);
    c.read_timeout = Duration::from_secs(2);
    c.attempts_max = 2;
    c.url_rounds_max = 5;
    c.robots_fail_ttl = Duration::from_millis(150);
    c.backoff.base = Duration::from_millis(20);
    c.backoff.max = Duration::from_millis(200);
    c.backoff.park_after = 50;
    c.backoff.park = Duration::from_millis(200);
    c.backoff.retry_after_max = Duration::from_millis(200);
    c
}

async fn crawl(
    crawler: &Crawler,
    m: &ProjectManifest,
    urls: &[String],
) -> Result<ChunkResult, CrawlError> {
    let item = ItemId(*blake3::hash(urls.join("\n").as_bytes()).as_bytes());
    let req = ChunkRequest { item, epoch: 1, project: m.id(), manifest: m, urls, checks: None };
    crawler.crawl_chunk(req).await
}

fn pages(site: &Site) -> Vec<String> {
    vec![site.url("/page/1"), site.url("/page/2"), site.url("/private/3")]
}

fn assert_all_archived(result: &ChunkResult) {
    for o in &result.outcomes {
        assert!(matches!(o.outcome, Outcome::Ok { status: 200, .. }), "{}: {:?}", o.url, o.outcome);
    }
}

/// Names in `dir` (results and temp files alike).
fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_503_then_200_archives_every_allowed_url_and_disallows_only_what_it_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "User-agent: *\nDisallow: /private\n".to_owned();
    let site =
        Site::start("127.0.0.51", RobotsPlan { status: 503, fails: 2, text: Some(text) }).await;
    let crawler = Crawler::new(config(dir.path())).expect("crawler");
    let urls = pages(&site);
    let result = crawl(&crawler, &manifest("r503"), &urls).await.expect("a result in the end");
    assert!(matches!(result.outcomes[0].outcome, Outcome::Ok { status: 200, .. }));
    assert!(matches!(result.outcomes[1].outcome, Outcome::Ok { status: 200, .. }));
    assert_eq!(
        result.outcomes[2].outcome,
        Outcome::Disallowed { reason: "disallowed by robots.txt".into() }
    );
    assert_eq!(site.hits_on("/robots.txt"), 3, "asked again after each 503");
    assert_eq!(site.hits_on("/private/3"), 0);
    let counts = crawler.url_counts();
    assert_eq!((counts.ok, counts.disallowed, counts.transient), (2, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_429_then_404_archives_every_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start("127.0.0.52", RobotsPlan { status: 429, fails: 2, text: None }).await;
    let crawler = Crawler::new(config(dir.path())).expect("crawler");
    let result = crawl(&crawler, &manifest("r429"), &pages(&site)).await.expect("result");
    assert_all_archived(&result);
    assert_eq!(site.hits_on("/robots.txt"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_on_a_host_refusing_connections_defers_until_it_comes_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on yet: connections to it are refused until the site starts.
    let addr =
        std::net::TcpListener::bind("127.0.0.53:0").expect("bind").local_addr().expect("addr");
    let crawler = Arc::new(Crawler::new(config(dir.path())).expect("crawler"));
    let urls: Vec<String> =
        ["/page/1", "/page/2"].iter().map(|p| format!("http://{addr}{p}")).collect();
    let c = crawler.clone();
    let starter = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.network_health().connect_failures == 0 {
            assert!(Instant::now() < deadline, "the crawler never tried the host");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind the port");
        Site::serve(listener, RobotsPlan { status: 200, fails: 0, text: Some(String::new()) })
    });
    let result = crawl(&crawler, &manifest("refused"), &urls).await.expect("result");
    let site = starter.await.expect("site");
    assert_all_archived(&result);
    assert_eq!(site.hits_on("/page/1"), 1);
    assert!(crawler.network_health().connect_failures >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_unreachable_to_the_end_hands_the_chunk_back_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site =
        Site::start("127.0.0.54", RobotsPlan { status: 503, fails: u32::MAX, text: None }).await;
    let crawler = Arc::new(Crawler::new(config(dir.path())).expect("crawler"));
    let m = manifest("gone");
    let known = m.clone();
    let lookup: ManifestLookup = Arc::new(move |p| (*p == known.id()).then(|| known.clone()));
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let counters = Arc::new(RunnerCounters::default());
    let mut runner = CrawlRunner::new(crawler.clone(), lookup, tx, counters.clone());
    let work = WorkItem::CrawlChunk { urls: vec![site.url("/page/1"), site.url("/page/2")] };
    runner.start(Job::new(work.id(&m.id()), 1, m.id(), work));
    let report = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a report in time")
        .expect("report");
    let WorkReport::Failed { reason, retryable, .. } = &report else {
        panic!("a chunk with transient urls is not done: {report:?}");
    };
    assert!(*retryable);
    assert_eq!(reason, "2 of 2 urls transient: robots.txt unreachable: 503");
    assert_eq!(site.hits_on("/page/1"), 0, "nothing fetched without a robots.txt");
    assert_eq!(site.hits_on("/robots.txt"), 6, "asked once per round, first pass and 5 more");
    assert!(files(dir.path()).is_empty(), "left behind: {:?}", files(dir.path()));
    assert_eq!(counters.snapshot().completed, 0);
    assert_eq!(crawler.url_counts().transient, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refusing_the_robots_txt_target_refuses_the_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start("127.0.0.1", RobotsPlan { status: 200, fails: 0, text: None }).await;
    let mut cfg = config(dir.path());
    cfg.allow_private_targets = false;
    let crawler = Crawler::new(cfg).expect("crawler");
    let url = format!("http://localhost:{}/page/1", site.addr.port());
    let result =
        crawl(&crawler, &manifest("guard"), std::slice::from_ref(&url)).await.expect("result");
    let o = &result.outcomes[0].outcome;
    assert!(matches!(o, Outcome::Refused { reason } if reason.contains("SSRF guard")), "{o:?}");
    assert_eq!(site.hits_on("/robots.txt") + site.hits_on("/page/1"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_on_two_hosts_mean_network_down_until_any_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead: Vec<SocketAddr> = ["127.0.0.55:0", "127.0.0.56:0"]
        .iter()
        .map(|a| std::net::TcpListener::bind(a).expect("bind").local_addr().expect("addr"))
        .collect();
    let mut cfg = config(dir.path());
    cfg.url_rounds_max = 1;
    let crawler = Crawler::new(cfg).expect("crawler");
    let mut m = manifest("down");
    m.robots = RobotsPolicy::Ignore;
    let urls: Vec<String> =
        dead.iter().flat_map(|a| (0..2).map(move |i| format!("http://{a}/page/{i}"))).collect();
    let err = crawl(&crawler, &m, &urls).await.expect_err("nothing answers");
    assert!(err.to_string().starts_with("4 of 4 urls transient: connection refused"), "{err}");
    assert!(crawler.network_down(), "{:?}", crawler.network_health());
    let site = Site::start("127.0.0.57", RobotsPlan { status: 200, fails: 0, text: None }).await;
    let result = crawl(&crawler, &m, &[site.url("/page/1")]).await.expect("result");
    assert_all_archived(&result);
    assert!(!crawler.network_down(), "an answer clears it");
}
