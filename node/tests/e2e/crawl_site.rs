//! The crawler against a local test site: axum servers on 127.0.0.x addresses stand in for
//! separate hosts. Everything about politeness and SSRF is measured at the site (which
//! requests arrived, when); the WARC files are checked by warcio, a reader nobody here wrote.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use starling_node::crawl::runner::{CrawlRunner, ManifestLookup};
use starling_node::crawl::{
    ChunkRequest, ChunkResult, CrawlError, Crawler, CrawlerConfig, Outcome,
};
use starling_node::runner::{Job, Runner, RunnerCounters, WorkReport};
use starling_protocol::message::PartClass;
use starling_protocol::{
    ItemId, Keypair, NodeId, ProjectManifest, RatePolicy, RobotsPolicy, SizeCaps, WorkItem,
    WorkKind, WorkResult,
};

use crate::warcio::warcio_cli;

/// Body size of `/big`.
const BIG_BYTES: usize = 200 * 1024;
/// Response cap the tests' manifests set.
const RESPONSE_CAP: u64 = 64 * 1024;

/// One request as the site saw it.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    at: Instant,
    wall: SystemTime,
    user_agent: String,
    /// For a 429: the earliest wall time the next request may come.
    not_before: Option<SystemTime>,
}

/// `/hold/…` requests in flight across all sites, and the most seen at once.
static HOLD_IN_FLIGHT: Mutex<(usize, usize)> = Mutex::new((0, 0));

/// Counts one `/hold/…` request in flight at its site and across all sites while alive.
struct InFlight(Arc<SiteState>);

impl InFlight {
    fn new(s: &Arc<SiteState>) -> Self {
        for counter in [&s.in_flight, &HOLD_IN_FLIGHT] {
            let mut c = counter.lock().expect("lock");
            c.0 += 1;
            c.1 = c.1.max(c.0);
        }
        Self(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for counter in [&self.0.in_flight, &HOLD_IN_FLIGHT] {
            counter.lock().expect("lock").0 -= 1;
        }
    }
}

#[derive(Debug, Default)]
struct SiteState {
    /// `/hold/…` requests in flight here, and the most seen at once.
    in_flight: Mutex<(usize, usize)>,
    hits: Mutex<Vec<Hit>>,
    seen: Mutex<HashMap<String, u32>>,
    redirects: HashMap<String, String>,
    robots: Option<String>,
}

/// A running test host.
struct Site {
    addr: SocketAddr,
    state: Arc<SiteState>,
}

impl Site {
    async fn start(ip: &str, redirects: HashMap<String, String>, robots: Option<&str>) -> Self {
        let state = Arc::new(SiteState {
            redirects,
            robots: robots.map(str::to_owned),
            ..SiteState::default()
        });
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind on 127/8");
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

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().expect("lock").clone()
    }

    fn hits_on(&self, path: &str) -> usize {
        self.hits().iter().filter(|h| h.path == path).count()
    }
}

async fn handle(
    State(s): State<Arc<SiteState>>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let seen = {
        let mut seen = s.seen.lock().expect("lock");
        let n = seen.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let wall = SystemTime::now();
    let not_before =
        if (path.starts_with("/limited/") && seen == 1) || path.starts_with("/always-429") {
            Some(wall + Duration::from_secs(1))
        } else if path.starts_with("/limited-date/") && seen == 1 {
            // An HTTP date has whole seconds: the promise is the date as written.
            httpdate::parse_http_date(&httpdate::fmt_http_date(wall + Duration::from_secs(2))).ok()
        } else {
            None
        };
    // Recorded on arrival: a client that gives up early still counts.
    let hit = Hit { path: path.clone(), at: Instant::now(), wall, user_agent, not_before };
    s.hits.lock().expect("lock").push(hit);
    if let Some(to) = s.redirects.get(&path) {
        (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response()
    } else if path == "/robots.txt" {
        match &s.robots {
            Some(text) => text.clone().into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    } else if path.starts_with("/page/") {
        format!("<html><body>page {path}</body></html>").into_response()
    } else if path.starts_with("/redirect/") {
        let to = path.replacen("/redirect/", "/page/", 1);
        (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response()
    } else if path == "/loop" {
        (StatusCode::FOUND, [(header::LOCATION, "/loop")]).into_response()
    } else if let Some(at) = not_before {
        let value = if path.starts_with("/limited-date/") {
            httpdate::fmt_http_date(at)
        } else {
            "1".to_owned()
        };
        let value = HeaderValue::from_str(&value).expect("header value");
        (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, value)]).into_response()
    } else if path.starts_with("/flaky/") && seen <= 2 {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    } else if path.starts_with("/limited") || path.starts_with("/flaky/") {
        "fine now".into_response()
    } else if path.starts_with("/hold/") {
        let _held = InFlight::new(&s);
        tokio::time::sleep(Duration::from_millis(150)).await;
        "held".into_response()
    } else if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(10)).await;
        "too late".into_response()
    } else if path == "/big" {
        vec![b'x'; BIG_BYTES].into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn manifest(name: &str, rate: RatePolicy, robots: RobotsPolicy) -> ProjectManifest {
    ProjectManifest {
        name: name.into(),
        description: String::new(),
        version: 1,
        owner: Keypair::from_secret([7; 32]).public(),
        rate,
        lease_ms: 60_000,
        replication: 0,
        scope: Vec::new(),
        user_agent: "StarlingTest/1.0".into(),
        robots,
        caps: SizeCaps {
            response_bytes_max: RESPONSE_CAP,
            chunk_urls_max: 100,
            result_bytes_max: 64 << 20,
        },
        verify: Default::default(),
        shard_depth: 0,
    }
}

fn config(dir: &Path) -> CrawlerConfig {
    let mut c = CrawlerConfig::new(dir.to_owned(), NodeId([9; 32]));
    c.allow_private_targets = true;
    c.response_timeout = Duration::from_millis(500);
    c.read_timeout = Duration::from_millis(500);
    c.attempts_max = 4;
    c.redirects_max = 3;
    c.url_rounds_max = 4;
    c.robots_fail_ttl = Duration::from_millis(200);
    c.backoff.base = Duration::from_millis(50);
    c.backoff.max = Duration::from_millis(400);
    c.backoff.park_after = 20;
    c.backoff.park = Duration::from_millis(500);
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

fn outcome<'a>(r: &'a ChunkResult, url: &str) -> &'a Outcome {
    &r.outcomes.iter().find(|o| o.url == url).expect("url in outcomes").outcome
}

fn failed_with(o: &Outcome, needle: &str) -> bool {
    o.reason().is_some_and(|r| r.contains(needle))
}

/// Checks that no window of arrivals holds more requests than `rate` and `burst` allow.
fn assert_within_rate(hits: &[Hit], per_s: f64, burst: u32) {
    assert_within_rate_slack(hits, per_s, burst, 1.0);
}

/// As [`assert_within_rate`], allowing `slack` requests of arrival jitter (a loaded machine
/// delays the site's accepts and bunches arrivals that were sent evenly).
fn assert_within_rate_slack(hits: &[Hit], per_s: f64, burst: u32, slack: f64) {
    let times: Vec<Instant> = hits.iter().map(|h| h.at).collect();
    for i in 0..times.len() {
        for j in i..times.len() {
            let window = times[j].duration_since(times[i]).as_secs_f64();
            let count = (j - i + 1) as f64;
            // Generous margin: `slack` requests of arrival jitter and 10 % on the rate.
            let allowed = f64::from(burst.max(1)) + per_s * window * 1.1 + slack;
            assert!(
                count <= allowed,
                "{count} requests in {window:.3} s; allowed {allowed:.1} at {per_s}/s burst {burst}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_never_sees_more_than_its_rate_and_burst() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start("127.0.0.2", HashMap::new(), None).await;
    let crawler = Crawler::new(config(dir.path())).expect("crawler");
    let rate = RatePolicy { per_s_milli: 8_000, burst: 2, concurrency: 2, ..RatePolicy::default() };
    let m = manifest("rate", rate, RobotsPolicy::Ignore);
    let urls: Vec<String> = (0..24).map(|i| site.url(&format!("/page/{i}"))).collect();
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    assert_eq!(result.counts(), (24, 0), "{:?}", result.outcomes);
    let hits = site.hits();
    assert_eq!(hits.len(), 24);
    assert_within_rate(&hits, 8.0, 2);
    assert!(hits.iter().all(|h| h.user_agent.starts_with("StarlingTest/1.0 (starling node ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_respected_in_both_forms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start("127.0.0.3", HashMap::new(), None).await;
    let crawler = Crawler::new(config(dir.path())).expect("crawler");
    let rate =
        RatePolicy { per_s_milli: 50_000, burst: 1, concurrency: 1, ..RatePolicy::default() };
    let m = manifest("retry-after", rate, RobotsPolicy::Ignore);
    let urls = vec![site.url("/limited/a"), site.url("/limited-date/b"), site.url("/page/c")];
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    assert_eq!(result.counts(), (3, 0), "{:?}", result.outcomes);
    let hits = site.hits();
    let mut refusals = 0;
    for (i, h) in hits.iter().enumerate() {
        let Some(not_before) = h.not_before else { continue };
        refusals += 1;
        for later in &hits[i + 1..] {
            let early = not_before.duration_since(later.wall).unwrap_or_default();
            assert!(
                early <= Duration::from_millis(15),
                "{} came {early:?} before Retry-After allowed",
                later.path
            );
        }
    }
    assert_eq!(refusals, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_is_refused_directly_by_redirect_and_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The victims: hosts the crawler must never reach with the guard on.
    let victim = Site::start("127.0.0.10", HashMap::new(), None).await;
    let local = Site::start("127.0.0.1", HashMap::new(), None).await;
    let redirects = HashMap::from([
        ("/to-victim".to_owned(), victim.url("/page/secret")),
        ("/to-localhost".to_owned(), format!("http://localhost:{}/page/secret", local.addr.port())),
    ]);
    // The public-looking site: allowed by address while the guard stays on.
    let site = Site::start("127.0.0.9", redirects, None).await;
    let mut cfg = config(dir.path());
    cfg.allow_private_targets = false;
    cfg.allow_private_addrs = vec![site.addr.ip()];
    let crawler = Crawler::new(cfg).expect("crawler");
    let m = manifest(
        "ssrf",
        RatePolicy { per_s_milli: 50_000, burst: 10, concurrency: 4, ..RatePolicy::default() },
        RobotsPolicy::Ignore,
    );
    let urls = vec![
        site.url("/page/fine"),
        victim.url("/page/direct"),
        site.url("/to-victim"),
        format!("http://localhost:{}/page/by-name", local.addr.port()),
        site.url("/to-localhost"),
    ];
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    assert!(archived(outcome(&result, &urls[0]), 200, 0));
    for url in &urls[1..] {
        let o = outcome(&result, url);
        assert!(failed_with(o, "SSRF guard"), "{url}: {o:?}");
        assert_eq!(o.class(), PartClass::Refused, "{url}: {o:?}");
    }
    assert!(victim.hits().is_empty(), "victim was reached: {:?}", victim.hits());
    assert!(local.hits().is_empty(), "localhost was reached: {:?}", local.hits());
    warcio_check(&result.path, &urls).expect("warcio");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_chunk_is_archived_and_read_back_by_warcio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start("127.0.0.4", HashMap::new(), None).await;
    let crawler = Crawler::new(config(dir.path())).expect("crawler");
    let mut m = manifest(
        "mixed",
        RatePolicy { per_s_milli: 50_000, burst: 10, concurrency: 4, ..RatePolicy::default() },
        RobotsPolicy::Ignore,
    );
    m.scope = vec!["127.0.0.4".into()];
    let urls: Vec<String> = vec![
        site.url("/page/1"),
        site.url("/redirect/2"),
        site.url("/missing"),
        site.url("/flaky/3"),
        site.url("/big"),
        site.url("/loop"),
        "http://127.0.0.99:1/out-of-scope".into(),
        "not a url".into(),
    ];
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    let o = |i: usize| outcome(&result, &urls[i]);
    assert!(archived(o(0), 200, 0), "{:?}", o(0));
    assert!(archived(o(1), 200, 1), "{:?}", o(1));
    assert!(archived(o(2), 404, 0), "{:?}", o(2));
    assert!(archived(o(3), 200, 0), "503 burst retried: {:?}", o(3));
    assert!(failed_with(o(4), "truncated"), "{:?}", o(4));
    assert!(failed_with(o(5), "redirects"), "{:?}", o(5));
    assert!(failed_with(o(6), "out of scope"), "{:?}", o(6));
    assert!(failed_with(o(7), "bad url"), "{:?}", o(7));
    for i in 4..=7 {
        assert_eq!(o(i).class(), PartClass::Refused, "{:?}", o(i));
    }
    assert_eq!(site.hits_on("/flaky/3"), 3);

    let bytes = std::fs::read(&result.path).expect("read warc");
    assert_eq!(blake3::hash(&bytes).as_bytes(), result.digest.as_bytes());
    assert_eq!(bytes.len() as u64, result.size);
    let name = result.path.file_name().and_then(|n| n.to_str()).expect("name");
    assert_eq!(name, format!("{:#}.warc.gz", result.digest));
    let index = warcio_check(&result.path, &urls).expect("warcio");
    let big = index.iter().find(|r| r.uri.ends_with("/big") && r.kind == "response").expect("big");
    assert!(big.length > 0);
}

/// Whether `o` is archived with `status` after `redirects` hops, its payload digested.
fn archived(o: &Outcome, status: u16, redirects: u32) -> bool {
    matches!(o, Outcome::Ok { status: s, redirects: r, payload: Some(_) }
        if *s == status && *r == redirects)
}

/// The text of every record of a WARC file (one gzip member each), in order.
fn warc_text(path: &Path) -> String {
    use std::io::Read;
    let bytes = std::fs::read(path).expect("read warc");
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut text).expect("gunzip");
    String::from_utf8_lossy(&text).into_owned()
}

/// What the HTTP client keeps of a response head reaches the record: an unusual reason
/// phrase and the values as sent; names come lowercased and a repeated name's values grouped
/// (the client keeps neither case nor order, see docs/crawling.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_record_keeps_what_the_client_keeps_of_the_head() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind(("127.0.0.15", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let sent_tx = sent_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let _ = sent_tx.send(buf[..n].to_vec());
                let answer = "HTTP/1.1 200 Fine Thanks\r\nX-Second: b\r\nX-First:  a  value\r\n\
                              x-second: c\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    let crawler = Crawler::new(config(dir.path())).expect("crawler");
    let m = manifest("heads", RatePolicy::default(), RobotsPolicy::Ignore);
    let urls = vec![format!("http://{addr}/head")];
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    let payload = Some(starling_protocol::Digest::of(b"hello"));
    assert_eq!(outcome(&result, &urls[0]), &Outcome::Ok { status: 200, redirects: 0, payload });
    let text = warc_text(&result.path);
    let want = "HTTP/1.1 200 Fine Thanks\r\nx-second: b\r\nx-second: c\r\nx-first: a  value\r\n\
                content-length: 5\r\nconnection: close\r\n\r\nhello";
    assert!(text.contains(want), "{text}");
    // The request record is the request as it went over the wire.
    let wire = String::from_utf8(sent_rx.recv().await.expect("a request")).expect("ascii");
    assert!(
        text.contains(&format!("msgtype=request\r\nContent-Length: {}\r\n\r\n{wire}", wire.len())),
        "{wire}\n{text}"
    );
    warcio_check(&result.path, &urls).expect("warcio");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_txt_is_obeyed_and_fetched_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let robots = "User-agent: *\nDisallow: /page/private\n\nUser-agent: otherbot\nDisallow: /\n";
    let site = Site::start("127.0.0.5", HashMap::new(), Some(robots)).await;
    let crawler = Crawler::new(config(dir.path())).expect("crawler");
    let m = manifest(
        "robots",
        RatePolicy { per_s_milli: 50_000, burst: 10, concurrency: 4, ..RatePolicy::default() },
        RobotsPolicy::Obey,
    );
    let urls: Vec<String> = ["/page/a", "/page/private/b", "/page/c", "/page/private"]
        .iter()
        .map(|p| site.url(p))
        .collect();
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    assert_eq!(result.counts(), (2, 2), "{:?}", result.outcomes);
    assert_eq!(
        outcome(&result, &urls[1]),
        &Outcome::Disallowed { reason: "disallowed by robots.txt".into() }
    );
    assert_eq!(site.hits_on("/robots.txt"), 1);
    assert!(site.hits().iter().all(|h| !h.path.starts_with("/page/private")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_answering_429_does_not_hold_up_another_project() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stubborn = Site::start("127.0.0.6", HashMap::new(), None).await;
    let good = Site::start("127.0.0.7", HashMap::new(), None).await;
    let mut cfg = config(dir.path());
    cfg.fetches_max = 2;
    cfg.attempts_max = 3;
    cfg.url_rounds_max = 0;
    let crawler = Arc::new(Crawler::new(cfg).expect("crawler"));
    let rate =
        RatePolicy { per_s_milli: 20_000, burst: 2, concurrency: 2, ..RatePolicy::default() };
    let slow_project = manifest("stubborn", rate, RobotsPolicy::Ignore);
    let fast_project = manifest("good", rate, RobotsPolicy::Ignore);
    let stubborn_urls: Vec<String> =
        (0..4).map(|i| stubborn.url(&format!("/always-429/{i}"))).collect();
    let good_urls: Vec<String> = (0..20).map(|i| good.url(&format!("/page/{i}"))).collect();

    let c = crawler.clone();
    let blocked = tokio::spawn(async move { crawl(&c, &slow_project, &stubborn_urls).await });
    let done = crawl(&crawler, &fast_project, &good_urls).await.expect("good crawl");
    assert_eq!(done.counts(), (20, 0));
    assert!(!blocked.is_finished(), "the 429 host's chunk should still be waiting");
    let last_good = good.hits().iter().map(|h| h.at).max().expect("hits");
    let err = blocked.await.expect("join").expect_err("429s to the end are transient");
    let CrawlError::Transient { transient, urls, first } = &err else { panic!("{err:?}") };
    assert_eq!((*transient, *urls), (4, 4));
    assert!(first.contains("http 429 after 3 attempts"), "{err}");
    let last_stubborn = stubborn.hits().iter().map(|h| h.at).max().expect("hits");
    assert!(last_good < last_stubborn);
    assert_within_rate(&good.hits(), 20.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_files_are_cleaned_and_the_disk_cap_stops_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("half.warc.gz.tmp"), b"half a warc").expect("write");
    let mut cfg = config(dir.path());
    cfg.disk_bytes_max = Some(1_000);
    let crawler = Crawler::new(cfg).expect("crawler");
    assert!(!dir.path().join("half.warc.gz.tmp").exists(), "temp file left from a crash");
    assert!(!crawler.over_disk_cap());
    std::fs::write(dir.path().join("old.warc.gz"), vec![0u8; 1_000]).expect("write");
    assert!(crawler.over_disk_cap());
    let m = manifest("disk", RatePolicy::default(), RobotsPolicy::Ignore);
    let err = crawl(&crawler, &m, &["http://127.0.0.8:1/".to_owned()]).await.expect_err("over cap");
    assert!(matches!(err, CrawlError::DiskCap));
}

/// A record as warcio's index lists it.
#[derive(Debug)]
struct Indexed {
    kind: String,
    uri: String,
    length: u64,
}

/// Runs `warcio check` and `warcio index` on `path` (installing warcio on first use); every
/// URL must have a response, a revisit or a metadata (failure) record.
fn warcio_check(path: &Path, urls: &[String]) -> Result<Vec<Indexed>> {
    let run = |args: &[&str]| -> Result<std::process::Output> {
        let out = warcio_cli().args(args).arg(path).output().context("cannot run python3")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "warcio {args:?} failed: {stderr}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(out)
    };
    run(&["check", "-v"])?;
    let out = run(&["index", "-f", "warc-type,warc-target-uri,length"])?;
    let mut records = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("index line")?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        let length = v
            .get("length")
            .and_then(|x| x.as_str().map(str::to_owned).or(x.as_u64().map(|n| n.to_string())));
        records.push(Indexed {
            kind: field("warc-type"),
            uri: field("warc-target-uri"),
            length: length.and_then(|l| l.parse().ok()).unwrap_or(0),
        });
    }
    ensure!(records.first().is_some_and(|r| r.kind == "warcinfo"), "warcinfo is not first");
    let answered: BTreeSet<&str> = records
        .iter()
        .filter(|r| matches!(r.kind.as_str(), "response" | "revisit" | "metadata"))
        .map(|r| r.uri.as_str())
        .collect();
    for url in urls {
        let normalised =
            url::Url::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.replace(' ', "%20"));
        ensure!(
            answered.contains(url.as_str()) || answered.contains(normalised.as_str()),
            "{url} has neither a response nor a failure record; records: {answered:?}"
        );
    }
    Ok(records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_global_concurrency_caps_hold_at_the_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Site::start("127.0.0.12", HashMap::new(), None).await;
    let b = Site::start("127.0.0.13", HashMap::new(), None).await;
    let mut cfg = config(dir.path());
    cfg.fetches_max = 3;
    let crawler = Crawler::new(cfg).expect("crawler");
    let rate =
        RatePolicy { per_s_milli: 100_000, burst: 20, concurrency: 2, ..RatePolicy::default() };
    let m = manifest("concurrency", rate, RobotsPolicy::Ignore);
    let urls: Vec<String> =
        (0..8).flat_map(|i| [a.url(&format!("/hold/{i}")), b.url(&format!("/hold/{i}"))]).collect();
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    assert_eq!(result.counts(), (16, 0), "{:?}", result.outcomes);
    for site in [&a, &b] {
        let (now, max) = *site.state.in_flight.lock().expect("lock");
        assert_eq!(now, 0);
        assert!((1..=2).contains(&max), "{max} in flight at one host, cap 2");
    }
    let (_, global_max) = *HOLD_IN_FLIGHT.lock().expect("lock");
    assert!(global_max <= 3, "{global_max} in flight in all, cap 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bandwidth_cap_slows_downloads() {
    const CAP_BYTES_PER_S: u32 = 100 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start("127.0.0.14", HashMap::new(), None).await;
    let mut cfg = config(dir.path());
    cfg.bandwidth_bytes_per_s = std::num::NonZeroU32::new(CAP_BYTES_PER_S);
    cfg.read_timeout = Duration::from_secs(5);
    let crawler = Crawler::new(cfg).expect("crawler");
    let m = manifest(
        "bandwidth",
        RatePolicy { per_s_milli: 50_000, burst: 10, concurrency: 4, ..RatePolicy::default() },
        RobotsPolicy::Ignore,
    );
    let urls: Vec<String> = (0..3).map(|i| site.url(&format!("/big?{i}"))).collect();
    let started = Instant::now();
    let result = crawl(&crawler, &m, &urls).await.expect("crawl");
    let elapsed = started.elapsed().as_secs_f64();
    assert!(result.outcomes.iter().all(|o| failed_with(&o.outcome, "truncated")));
    // 3 bodies cut at 64 KiB: 192 KiB through a 100 KiB/s cap that starts with a full second
    // of burst takes at least 0.92 s. A lower bound: a slow machine only makes it longer.
    let bytes = 3.0 * RESPONSE_CAP as f64;
    let least = (bytes - f64::from(CAP_BYTES_PER_S)) / f64::from(CAP_BYTES_PER_S);
    assert!(elapsed >= least * 0.95, "{elapsed:.2} s for {bytes} bytes at {CAP_BYTES_PER_S} B/s");
}

fn job(m: &ProjectManifest, urls: Vec<String>) -> Job {
    let work = WorkItem::CrawlChunk { urls };
    Job::new(work.id(&m.id()), 3, m.id(), work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_reports_the_warc_digest_and_cancel_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = Site::start("127.0.0.11", HashMap::new(), None).await;
    let crawler = Arc::new(Crawler::new(config(dir.path())).expect("crawler"));
    let rate =
        RatePolicy { per_s_milli: 50_000, burst: 10, concurrency: 4, ..RatePolicy::default() };
    let m = manifest("runner", rate, RobotsPolicy::Ignore);
    let known = m.clone();
    let lookup: ManifestLookup = Arc::new(move |p| (*p == known.id()).then(|| known.clone()));
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let counters = Arc::new(RunnerCounters::default());
    let mut runner = CrawlRunner::new(crawler, lookup, tx, counters.clone());
    assert_eq!(runner.kind(), WorkKind::Crawl);

    let slow = job(&m, vec![site.url("/slow")]);
    let (slow_item, slow_epoch) = (slow.item, slow.epoch);
    runner.start(slow);
    runner.start(job(
        &m,
        vec![site.url("/page/1"), site.url("/missing"), "ftp://127.0.0.11/x".into()],
    ));
    // Cancel the first job once its request is in flight at the site.
    let deadline = Instant::now() + Duration::from_secs(20);
    while site.hits_on("/slow") == 0 {
        assert!(Instant::now() < deadline, "the slow job never reached the site");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.cancel(slow_item, slow_epoch);
    let report = rx.recv().await.expect("report");
    let WorkReport::Done(WorkResult { item, result, size, ok, failed, parts, .. }) = report else {
        panic!("expected a result, got {report:?}");
    };
    assert_ne!(item, slow_item, "a cancelled job reports nothing");
    assert_eq!((ok, failed), (2, 1));
    // The receipt's per-URL outcomes, in chunk order: the page and the 404 are archived
    // answers, the ftp URL is refused by policy with its reason.
    assert_eq!(parts.len(), 3);
    // Archived parts carry their body's digest, for spot-checks.
    for (part, status) in parts[..2].iter().zip([200, 404]) {
        assert_eq!((part.status, part.class()), (status, PartClass::Ok), "{part:?}");
        assert!(part.payload.is_some(), "{part:?}");
    }
    assert_ne!(parts[0].payload, parts[1].payload);
    assert_eq!(parts[2].class(), PartClass::Refused, "{:?}", parts[2]);
    assert!(parts[2].failure.as_ref().is_some_and(|f| f.reason.contains("scheme ftp")));
    let path = dir.path().join(format!("{result:#}.warc.gz"));
    let bytes = std::fs::read(&path).expect("result file");
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(blake3::hash(&bytes).as_bytes(), result.as_bytes());
    // The cancelled job's task is dropped by the runtime after `abort` returns, and its
    // temporary file goes with it: wait for that, within a generous bound.
    let names = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while names().len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = names();
    assert_eq!(left.len(), 1, "only the finished warc remains: {left:?}");
    assert_eq!(counters.snapshot().cancelled, 1);
}

/// Reads a field in kB from /proc/self/status.
fn proc_status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12) // utime, stime (fields 14 and 15 of stat)
}

/// The benchmark the issue asks for: 20 hosts at 50 requests/s each. Run with
/// `cargo test -p starling-node --test e2e --release -- --ignored --nocapture crawl_site::bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints figures"]
async fn bench_twenty_hosts_at_fifty_per_second() {
    const HOSTS: usize = 20;
    const PAGES: usize = 150;
    const BURST: u32 = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sites = Vec::new();
    for i in 0..HOSTS {
        sites.push(Site::start(&format!("127.0.1.{}", i + 1), HashMap::new(), None).await);
    }
    let mut cfg = config(dir.path());
    cfg.fetches_max = 256;
    let crawler = Arc::new(Crawler::new(cfg).expect("crawler"));
    let rate =
        RatePolicy { per_s_milli: 50_000, burst: BURST, concurrency: 4, ..RatePolicy::default() };
    let mut m = manifest("bench", rate, RobotsPolicy::Ignore);
    m.caps.chunk_urls_max = 1_000;
    let (rss_before, cpu_before) = (proc_status_kb("VmRSS:"), cpu_ticks());
    let mut chunks = Vec::new();
    for site in &sites {
        let urls: Vec<String> = (0..PAGES).map(|p| site.url(&format!("/page/{p}"))).collect();
        let (c, m) = (crawler.clone(), m.clone());
        chunks.push(tokio::spawn(async move { crawl(&c, &m, &urls).await }));
    }
    for c in chunks {
        let r = c.await.expect("join").expect("crawl");
        assert_eq!(r.counts(), (PAGES as u32, 0));
    }
    let cpu_s = (cpu_ticks() - cpu_before) as f64 / 100.0;
    let mut shares = Vec::new();
    for site in &sites {
        let hits = site.hits();
        assert_within_rate_slack(&hits, 50.0, BURST, 4.0);
        let first = hits.iter().map(|h| h.at).min().expect("hits");
        let last = hits.iter().map(|h| h.at).max().expect("hits");
        let budget = f64::from(BURST) + 50.0 * last.duration_since(first).as_secs_f64();
        shares.push(hits.len() as f64 / budget);
    }
    let pages = (HOSTS * PAGES) as f64;
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let min = shares.iter().cloned().fold(f64::MAX, f64::min);
    println!(
        "bench: {HOSTS} hosts x {PAGES} pages at 50/s: achieved share of budget mean {:.1} % min {:.1} %; \
         CPU {:.3} s per 1000 pages (process, site included); RSS {} kB before, {} kB after, peak {} kB",
        mean * 100.0,
        min * 100.0,
        cpu_s * 1000.0 / pages,
        rss_before,
        proc_status_kb("VmRSS:"),
        proc_status_kb("VmHWM:"),
    );
}
