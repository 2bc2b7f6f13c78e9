//! Storage proofs with real processes: four real nodes on loopback, a real local site, and a
//! project that keeps k = 2 copies of every result with a short lease and a proof slot of
//! 10 s without grace, so every seeding holder must show a chunk of its copy within seconds of
//! its claim. Node 0 crawls and seeds; nodes 1 to 3 only seed, and node 3 is started with
//! `STARLING_TEST_DROP_COPIES=1`: it deletes each copy it fetches as it reports the duty ready,
//! as a volunteer that keeps duties but not copies would. Once every chunk is done, the test
//! waits until every duty is held, ready, by an honest node in every honest node's view, each
//! holder storing the copy and having carried proofs; the dropper must have given duties back
//! for want of a copy, and no honest node must have refused a renewal as unproven (the engine
//! never sends one its peers would refuse).
//!
//! The test fails with proofs off. Checked by hand: with `PROOF_EVERY_MS = 0` the dropper
//! keeps the duties it took, renewing them without copies, and the test times out waiting for
//! the duties to leave it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use serde_json::Value;
use starling_protocol::manifest::VerifyPolicy;
use starling_protocol::{Digest, ItemId, Keypair, ProjectId, RatePolicy, WorkItem};

use crate::common::*;

const CHUNKS: usize = 6;
const URLS_PER_CHUNK: usize = 2;
/// Copies kept of every result.
const K: u8 = 2;
/// Four leases make the 10 s slot, so the slot is the manifest's.
const LEASE_MS: u64 = 2_500;
/// The shortest slot the protocol allows; 0 switches proofs off (the by-hand control).
const PROOF_EVERY_MS: u64 = 10_000;
/// The node started with the test switch.
const DROPPER: usize = 3;
/// Generous: four debug nodes on two shared cores.
const LIMIT: Duration = Duration::from_secs(240);

/// The body of `/page/N`: some 20 KB that compress poorly, so a copy spans many 1 KiB chunks.
fn body(n: u64) -> String {
    let filler: String = (0..1_200u64)
        .map(|i| format!("{:016x}\n", (i ^ (n << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    format!("<html><body><h1>page {n}</h1><pre>{filler}</pre></body></html>")
}

fn start_site() -> SocketAddr {
    let page = |UrlPath(n): UrlPath<u64>| async move { body(n) };
    serve_local(Router::new().route("/page/{n}", axum::routing::get(page)))
}

fn signed_project(owner: &Keypair, site: SocketAddr) -> (Vec<u8>, Vec<u8>, ProjectId) {
    let rate =
        RatePolicy { per_s_milli: 50_000, burst: 10, concurrency: 4, ..RatePolicy::default() };
    let verify = VerifyPolicy { proof_every_ms: PROOF_EVERY_MS, proof_grace_ms: 0, ..no_checks() };
    let m = loopback_manifest(owner, "proofs", rate, LEASE_MS, K, verify);
    page_chunks_project(owner, &m, site, CHUNKS, URLS_PER_CHUNK)
}

/// Whether `node`'s results dir holds a copy of `digest` that hashes to it.
fn has_copy(node: &Node, digest: &str) -> bool {
    let path = node.dir.join("results").join(format!("{digest}.warc.gz"));
    std::fs::read(path).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == digest)
}

/// The seeding duties of every done chunk in `node`'s view, by duty id: (source, digest).
/// Sizes are read from the producer's copies.
fn duties(
    node: &Node,
    producer_dir: &Path,
    project: &ProjectId,
) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for i in node.items() {
        let (Some(id), Some(digest)) = (i["id"].as_str(), i["kept_result"].as_str()) else {
            continue;
        };
        let file = producer_dir.join("results").join(format!("{digest}.warc.gz"));
        let Ok(meta) = std::fs::metadata(file) else { continue };
        let source: ItemId = id.parse().expect("item id");
        let result: Digest = digest.parse().expect("digest");
        for replica in 0..K {
            let duty = WorkItem::SeedDuty { source, result, size: meta.len(), replica };
            out.insert(duty.id(project).to_hex(), (id.to_owned(), digest.to_owned()));
        }
    }
    out
}

/// `node`'s items by id.
fn items_by_id(node: &Node) -> BTreeMap<String, Value> {
    node.items().into_iter().filter_map(|i| Some((i["id"].as_str()?.to_owned(), i))).collect()
}

#[test]
fn a_node_that_drops_its_copies_loses_its_duties_to_nodes_that_prove_theirs() {
    let site = start_site();
    let owner = starling_protocol::engine::test_keypair(73);
    let (manifest, batch, project) = signed_project(&owner, site);
    let base = crawl_node_args(&owner);
    // Node 0 crawls and seeds; the others only seed (capacity 0: no crawl chunks).
    let producer = Node::start_real(&base);
    let boot = producer.addr();
    let mut nodes = vec![producer];
    for i in 1..=3 {
        let mut a = base.clone();
        a.extend(["--capacity".into(), "0".into(), "--bootstrap".into(), boot.clone()]);
        let env: &[(&str, &str)] =
            if i == DROPPER { &[("STARLING_TEST_DROP_COPIES", "1")] } else { &[] };
        nodes.push(Node::start_real_env(&a, env));
    }
    let ids: Vec<String> =
        nodes.iter().map(|n| n.status()["node_id"].as_str().unwrap().to_owned()).collect();
    let honest: Vec<usize> = (0..nodes.len()).filter(|i| *i != DROPPER).collect();
    meet_and_publish(&nodes, &manifest, &batch);

    wait_for_or(
        "every chunk done",
        LIMIT,
        || duties(&nodes[0], &nodes[0].dir, &project).len() == CHUNKS * usize::from(K),
        || dump(&nodes),
    );
    let all = duties(&nodes[0], &nodes[0].dir, &project);
    // Settled: in every honest node's view every duty is held, ready, by an honest node that
    // stores the copy; and every honest holder has carried proofs.
    let settled = || {
        let mut holders = BTreeMap::new();
        for v in &honest {
            let items = items_by_id(&nodes[*v]);
            for (duty, (_, digest)) in &all {
                let Some(i) = items.get(duty) else { return false };
                let holder = i["holder"].as_str().unwrap_or_default();
                let Some(h) = ids.iter().position(|id| id == holder) else { return false };
                if i["state"] != "held" || i["ready"] != true || h == DROPPER {
                    return false;
                }
                if !has_copy(&nodes[h], digest) {
                    return false;
                }
                holders.insert(duty.clone(), h);
            }
        }
        holders.values().all(|h| num(&nodes[*h].status(), &["engine", "proofs"]) >= 1)
    };
    wait_for_or(
        "every duty held, ready, by an honest node with its copy, none by the dropper",
        LIMIT,
        settled,
        || dump(&nodes),
    );

    let dropper = nodes[DROPPER].status();
    assert!(
        num(&dropper, &["engine", "unproven"]) >= 1,
        "the dropper gave no duty back: {}",
        dropper["engine"]
    );
    for h in &honest {
        let s = nodes[*h].status();
        assert_eq!(
            num(&s, &["engine", "rejected", "unproven"]),
            0,
            "honest node {h} refused a renewal as unproven: {}",
            s["engine"]
        );
        // Every duty an honest node holds has its copy there (its own view of its duties).
        let seeding: Value = nodes[*h].api.get_json("/seeding").expect("seeding");
        for d in seeding["duties"].as_array().into_iter().flatten() {
            let digest = d["digest"].as_str().unwrap_or_default();
            assert!(has_copy(&nodes[*h], digest), "node {h} holds a duty without {digest}");
        }
    }
}
