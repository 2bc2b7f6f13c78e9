//! The crawler with a real loopback site: payload digests in receipts, the test switch that
//! alters bodies, and spot-checks run by the crawl runner.

use std::io::Read;

use starling_protocol::message::PartOutcome;
use starling_protocol::{Keypair, RatePolicy, RobotsPolicy, SizeCaps};

use super::*;

const PAGE: &[u8] = b"<html><body>a stable page</body></html>";

/// A loopback site: `/page` (200), `/gone` (404 with a body), `/moved` (to `/page`).
async fn site() -> std::net::SocketAddr {
    use axum::response::{IntoResponse, Redirect};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route("/page", axum::routing::get(|| async { PAGE }))
        .route(
            "/gone",
            axum::routing::get(|| async {
                (axum::http::StatusCode::NOT_FOUND, "no such page").into_response()
            }),
        )
        .route("/moved", axum::routing::get(|| async { Redirect::temporary("/page") }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn manifest() -> ProjectManifest {
    ProjectManifest {
        name: "payloads".into(),
        description: String::new(),
        version: 1,
        owner: Keypair::from_secret([7; 32]).public(),
        rate: RatePolicy { per_s_milli: 100_000, burst: 10, ..RatePolicy::default() },
        lease_ms: 60_000,
        replication: 0,
        scope: vec!["127.0.0.1".into()],
        user_agent: "StarlingUnitTest/1.0".into(),
        robots: RobotsPolicy::Ignore,
        caps: SizeCaps::default(),
        verify: Default::default(),
        shard_depth: 0,
    }
}

async fn crawl(alter: bool, urls: &[String]) -> (tempfile::TempDir, ChunkResult) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = CrawlerConfig::new(dir.path().to_owned(), NodeId([9; 32]));
    config.allow_private_targets = true;
    let mut crawler = Crawler::new(config).expect("crawler");
    crawler.alter_payloads = alter;
    let m = manifest();
    let req = ChunkRequest {
        item: ItemId([1; 32]),
        epoch: 1,
        project: m.id(),
        manifest: &m,
        urls,
        checks: None,
    };
    let result = crawler.crawl_chunk(req).await.expect("crawl");
    (dir, result)
}

/// The bodies of the WARC file's response records, in order.
fn response_bodies(path: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("read warc");
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut text).expect("gunzip");
    let mut bodies = Vec::new();
    let mut rest = &text[..];
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    while let Some(at) = find(rest, b"WARC-Type: response\r\n") {
        rest = &rest[at..];
        let warc_head = find(rest, b"\r\n\r\n").expect("warc head") + 4;
        let http_head = find(&rest[warc_head..], b"\r\n\r\n").expect("http head") + 4;
        let body = &rest[warc_head + http_head..];
        let end = find(body, b"\r\n\r\nWARC/1.1").unwrap_or(body.len() - 4);
        bodies.push(body[..end].to_vec());
        rest = &body[end..];
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_parts_carry_the_blake3_digest_of_the_payload_as_archived() {
    let addr = site().await;
    let urls: Vec<String> = ["/page", "/gone", "/moved"]
        .iter()
        .map(|p| format!("http://{addr}{p}"))
        .chain(["http://out-of-scope.example/x".to_owned()])
        .collect();
    let (_dir, result) = crawl(false, &urls).await;
    let parts = result.parts();
    assert_eq!(parts[0], PartOutcome::archived(200, Digest::of(PAGE)));
    assert_eq!(parts[1], PartOutcome::archived(404, Digest::of(b"no such page")));
    // A redirect's part is its last answer's.
    assert_eq!(parts[2], PartOutcome::archived(200, Digest::of(PAGE)));
    assert_eq!(parts[3].class(), PartClass::Refused);
    assert_eq!(parts[3].payload, None, "nothing archived, nothing digested");
    // What is digested is what the WARC file holds.
    let bodies = response_bodies(&result.path);
    assert!(bodies.iter().any(|b| b == PAGE), "{bodies:?}");
    assert!(bodies.iter().any(|b| b == b"no such page"), "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_switch_alters_bodies_before_they_are_archived_and_digested() {
    let addr = site().await;
    let urls = vec![format!("http://{addr}/page")];
    let (_dir, honest) = crawl(false, &urls).await;
    let (_dir2, liar) = crawl(true, &urls).await;
    let altered = [PAGE, ALTERED_MARKER].concat();
    assert_eq!(liar.parts()[0], PartOutcome::archived(200, Digest::of(&altered)));
    assert_ne!(liar.parts()[0], honest.parts()[0]);
    assert_eq!(response_bodies(&liar.path), vec![altered]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_crawls_a_check_with_its_source_chunks_urls() {
    use crate::runner::{Job, Runner, RunnerCounters, WorkReport};
    let addr = site().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = CrawlerConfig::new(dir.path().to_owned(), NodeId([9; 32]));
    config.allow_private_targets = true;
    let crawler = Arc::new(Crawler::new(config).expect("crawler"));
    let m = manifest();
    let known = m.clone();
    let lookup: runner::ManifestLookup =
        Arc::new(move |p| (*p == known.id()).then(|| known.clone()));
    let (tx, mut rx) = mpsc::channel(4);
    let counters = Arc::new(RunnerCounters::default());
    let mut r = runner::CrawlRunner::new(crawler, lookup, tx, counters);
    let source = ItemId([5; 32]);
    let check = starling_protocol::WorkItem::Verify {
        source,
        result: Digest([6; 32]),
        round: 0,
        exclude: vec![NodeId([7; 32])],
    };
    // Without its chunk's URLs (the chunk unknown here) a check is handed back.
    r.start(Job::new(ItemId([1; 32]), 1, m.id(), check.clone()));
    let report = rx.recv().await.expect("a report");
    assert!(matches!(report, WorkReport::Failed { retryable: true, .. }), "{report:?}");
    // With them it is crawled like a chunk, and its file names the chunk it checks.
    let urls = vec![format!("http://{addr}/page"), format!("http://{addr}/gone")];
    r.start(Job { source_urls: Some(urls), ..Job::new(ItemId([2; 32]), 1, m.id(), check) });
    let WorkReport::Done(done) = rx.recv().await.expect("a report") else {
        panic!("the check did not finish");
    };
    assert_eq!(done.parts[0], PartOutcome::archived(200, Digest::of(PAGE)));
    assert_eq!(done.parts[1], PartOutcome::archived(404, Digest::of(b"no such page")));
    let path = dir.path().join(format!("{}{}", done.result.to_hex(), warc::WARC_SUFFIX));
    let mut text = Vec::new();
    let gz = std::fs::read(&path).expect("the check's warc file");
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut text).expect("gunzip");
    let want = format!("starling-checks: {}", source.to_hex());
    assert!(String::from_utf8_lossy(&text).contains(&want));
}
