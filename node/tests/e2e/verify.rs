//! Spot-checks with real processes (issue 17): four real nodes crawl a real local site whose
//! pages never change, one of them started with `STARLING_TEST_ALTER_PAYLOADS=1` so every body
//! it archives is altered (its WARC files and the payload digests in its receipts are false).
//! The project checks every result (`verify.sample_milli = 1000`) and marks a node after two
//! lost checks. Once every chunk is done and no check is pending or disputed on the honest
//! nodes: every honest node has marked the liar and nobody else, keeps no result of the
//! liar's for any chunk, and `starling export` from an honest node holds the site's real
//! bodies only, in WARC files none of which the liar wrote.
//!
//! The test fails with verification switched off. Checked by hand: with `SAMPLE_MILLI = 0` it
//! times out waiting for every chunk to be checked (every chunk done, `checks` all zero on
//! every honest node, nobody marked). With the checks on but the switch set to "0" (the liar
//! honest), all 16 chunks are verified, none overturned, and it fails at "honest node 0 did
//! not mark the liar".

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use serde_json::Value;
use starling_protocol::manifest::VerifyPolicy;
use starling_protocol::{Keypair, ProjectId, RatePolicy};

use crate::common::*;

const CHUNKS: usize = 16;
const URLS_PER_CHUNK: usize = 3;
/// Every accepted result is checked.
const SAMPLE_MILLI: u16 = 1_000;
const STRIKES: u8 = 2;
/// What the liar's crawler appends to every body (`crawl::ALTERED_MARKER`).
const MARKER: &[u8] = starling_node::crawl::ALTERED_MARKER;
/// Generous: four debug nodes on two shared cores, each chunk crawled two or three times.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

/// The body of `/page/N`, the same on every fetch.
fn body(n: usize) -> String {
    format!("<html><body><h1>page {n}</h1><p>stable text of page {n}</p></body></html>")
}

/// Serves `/page/N` on 127.0.0.1.
fn start_site() -> SocketAddr {
    let page = |UrlPath(n): UrlPath<usize>| async move { body(n) };
    serve_local(Router::new().route("/page/{n}", axum::routing::get(page)))
}

/// The signed manifest and batch of a crawl of `site` checked at `SAMPLE_MILLI`.
fn signed_project(owner: &Keypair, site: SocketAddr) -> (Vec<u8>, Vec<u8>, ProjectId) {
    // A lane per node: the four nodes fetch side by side, each at a quarter of the rate.
    let rate = RatePolicy {
        per_s_milli: 40_000,
        burst: 4,
        concurrency: 2,
        lanes: 4,
        ..RatePolicy::default()
    };
    let verify = VerifyPolicy {
        sample_milli: SAMPLE_MILLI,
        volatile: Vec::new(),
        strikes: STRIKES,
        ..VerifyPolicy::default()
    };
    let m = loopback_manifest(owner, "verify", rate, 20_000, 0, verify);
    page_chunks_project(owner, &m, site, CHUNKS, URLS_PER_CHUNK)
}

/// `node`'s spot-check view of `project` (from `/status`).
fn checks(node: &Node, project: &ProjectId) -> Value {
    let s = node.status();
    let all = s["checks"].as_array().cloned().unwrap_or_default();
    all.into_iter().find(|c| c["project"] == project.to_hex()).unwrap_or(Value::Null)
}

/// The nodes `node` has marked for `project`.
fn marked(node: &Node, project: &ProjectId) -> BTreeSet<String> {
    checks(node, project)["marked"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["node"].as_str().map(str::to_owned))
        .collect()
}

/// `node`'s done crawl chunks of `project`: (producer, kept maker, check state) by item.
fn chunks(node: &Node, project: &ProjectId) -> BTreeMap<String, (String, String, String)> {
    node.items()
        .iter()
        .filter(|i| i["project"] == project.to_hex() && i["state"] == "done")
        .filter_map(|i| {
            let field = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
            // Only a crawl chunk has a kept result.
            i.get("kept_by")?;
            Some((field("id"), (field("holder"), field("kept_by"), field("check"))))
        })
        .collect()
}

/// Every chunk done and checked, and nothing pending or disputed, in `node`'s view.
fn settled(node: &Node, project: &ProjectId) -> bool {
    let c = checks(node, project);
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    chunks(node, project).len() == CHUNKS
        && n("pending") == 0
        && n("disputed") == 0
        && n("verified") + n("overturned") + n("split") == CHUNKS as u64
}

/// What an exported WARC file holds: who wrote it, and each response's URL and body.
struct Warc {
    node: String,
    responses: Vec<(String, Vec<u8>)>,
    raw: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` in a header block.
fn header(block: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(block)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_owned()))
}

/// Reads a gzipped WARC file record by record (each `Content-Length` long).
fn read_warc(path: &Path) -> Warc {
    let gz = std::fs::read(path).unwrap();
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    let (mut node, mut responses) = (String::new(), Vec::new());
    let mut rest = &raw[..];
    while !rest.is_empty() {
        let head_end = find(rest, b"\r\n\r\n").expect("a record head") + 4;
        let head = &rest[..head_end];
        let len: usize = header(head, "Content-Length").and_then(|v| v.parse().ok()).unwrap();
        let block = &rest[head_end..head_end + len];
        match header(head, "WARC-Type").as_deref() {
            Some("warcinfo") => node = header(block, "starling-node").unwrap_or_default(),
            Some("response") => {
                let http_end = find(block, b"\r\n\r\n").expect("an http head") + 4;
                let uri = header(head, "WARC-Target-URI").unwrap_or_default();
                responses.push((uri, block[http_end..].to_vec()));
            }
            _ => {}
        }
        rest = &rest[head_end + len + 4..];
    }
    Warc { node, responses, raw }
}

/// `starling export` of `project` from `node` into `out`; the WARC files written.
fn export(node: &Node, project: &ProjectId, out: &Path) -> Vec<PathBuf> {
    let run = std::process::Command::new(BIN)
        .arg("export")
        .arg("--data-dir")
        .arg(&node.dir)
        .args(["--project", &project.to_hex(), "--timeout-s", "120"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "export failed: {said}");
    let mut warcs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".warc.gz"))
        .collect();
    warcs.sort();
    warcs
}

#[test]
fn a_node_that_alters_its_payloads_is_marked_and_none_of_its_results_is_kept_or_exported() {
    let site = start_site();
    let owner = starling_protocol::engine::test_keypair(171);
    let (manifest, batch, project) = signed_project(&owner, site);
    let args = crawl_node_args(&owner);
    let first = Node::start_real(&args);
    let mut joined = args.clone();
    joined.extend(["--bootstrap".to_string(), first.addr()]);
    let liar = Node::start_real_env(&joined, &[("STARLING_TEST_ALTER_PAYLOADS", "1")]);
    let mut nodes = vec![first, liar];
    for _ in 0..2 {
        nodes.push(Node::start_real(&joined));
    }
    const LIAR: usize = 1;
    let id_of = |n: &Node| n.status()["node_id"].as_str().unwrap().to_owned();
    let liar_id = id_of(&nodes[LIAR]);
    let honest: Vec<&Node> =
        nodes.iter().enumerate().filter(|(i, _)| *i != LIAR).map(|(_, n)| n).collect();
    let honest_ids: BTreeSet<String> = honest.iter().map(|n| id_of(n)).collect();
    meet_and_publish(&nodes, &manifest, &batch);

    wait_for_or(
        "every chunk done and checked, nothing pending or disputed, on every honest node",
        SETTLE_LIMIT,
        || honest.iter().all(|n| settled(n, &project)),
        || {
            let views: Vec<String> =
                honest.iter().map(|n| checks(n, &project).to_string()).collect();
            format!("checks per honest node: {views:?}\n{}", dump(&nodes))
        },
    );

    // What the liar did: chunks whose accepted result is its (it still shows as the producer
    // of those; a quorum overturned each, and another node's result is kept).
    let view = chunks(honest[0], &project);
    let by_liar = view.values().filter(|(producer, _, _)| *producer == liar_id).count();
    let overturned = num(&checks(honest[0], &project), &["overturned"]);
    println!(
        "liar produced {by_liar} of {CHUNKS} chunks; overturned {overturned}; checks per \
         honest node: {:?}",
        honest.iter().map(|n| checks(n, &project).to_string()).collect::<Vec<_>>()
    );
    assert!(by_liar >= 1, "the liar produced no result, so nothing was shown\n{}", dump(&nodes));

    for (i, n) in honest.iter().enumerate() {
        // The liar is marked, and nobody else.
        let m = marked(n, &project);
        assert!(m.contains(&liar_id), "honest node {i} did not mark the liar: {m:?}");
        assert!(m.is_disjoint(&honest_ids), "honest node {i} marked an honest node: {m:?}");
        // No chunk keeps the liar's result.
        let view = chunks(n, &project);
        assert_eq!(view.len(), CHUNKS);
        for (item, (producer, kept_by, check)) in &view {
            assert_ne!(kept_by, &liar_id, "node {i} keeps the liar's result of {item}");
            assert!(honest_ids.contains(kept_by), "node {i}: {item} kept by {kept_by}");
            if producer == &liar_id {
                assert_eq!(check, "overturned", "node {i}: the liar's {item}");
            } else {
                assert!(check == "confirmed" || check == "upheld", "node {i}: {item} {check}");
            }
        }
    }
    // And its gossip score drops on every honest node (`net::MARKED_PEER_SCORE`), set within a
    // second of the mark; an honest peer's stays at or above zero.
    let score_of = |n: &Node, id: &str| -> Option<f64> {
        let peers: Vec<Value> = n.api.get_json("/peers").ok()?;
        peers.iter().find(|p| p["node_id"].as_str() == Some(id))?["score"].as_f64()
    };
    wait_for_or(
        "every honest node to score the liar below zero",
        Duration::from_secs(30),
        || honest.iter().all(|n| score_of(n, &liar_id).is_some_and(|s| s < 0.0)),
        || format!("{:?}", honest.iter().map(|n| score_of(n, &liar_id)).collect::<Vec<_>>()),
    );
    for n in &honest {
        for id in honest_ids.iter().filter(|id| **id != id_of(n)) {
            assert!(score_of(n, id).is_none_or(|s| s >= 0.0), "an honest peer scored below zero");
        }
    }
    // `starling status` says so to the operator.
    let text = std::process::Command::new(BIN)
        .arg("status")
        .arg("--data-dir")
        .arg(&honest[0].dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("marked    verify: {liar_id} (")), "{text}");

    // The export of an honest node: one WARC file per chunk, every body the site's own, none
    // of them written by the liar.
    let out = tempfile::tempdir().unwrap();
    let warcs = export(honest[1], &project, out.path());
    assert_eq!(warcs.len(), CHUNKS, "one kept WARC file per chunk");
    let mut pages = BTreeSet::new();
    for path in &warcs {
        let w = read_warc(path);
        assert!(find(&w.raw, MARKER).is_none(), "{} holds an altered body", path.display());
        assert!(honest_ids.contains(&w.node), "{} written by {:?}", path.display(), w.node);
        assert_ne!(w.node, liar_id, "{} was written by the liar", path.display());
        for (uri, got) in &w.responses {
            let n: usize = uri.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap();
            assert_eq!(got, body(n).as_bytes(), "{uri} in {}", path.display());
            pages.insert(n);
        }
    }
    assert_eq!(pages.len(), CHUNKS * URLS_PER_CHUNK, "every page exported once at least");
}
