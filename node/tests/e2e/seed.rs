//! Seeding duties end to end: five real nodes crawl a local site with replication k = 3. Every
//! result ends up on k nodes besides its producer, each copy checked against its digest. One
//! node lies: it serves corrupted chunks. When a holder of a result the liar also holds is
//! killed, a new holder copies the result from the remaining ones; the liar's chunks are
//! rejected and fetched again from an honest holder, the liar is penalised, and k is restored.
//! With the producer killed too, the result is still served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use crate::warcio::warcio_cli;
use axum::Router;
use axum::extract::Path;
use starling_node::views::{ItemInfo, StatusView};
use starling_protocol::{
    Envelope, ItemBatch, ProjectManifest, RatePolicy, RobotsPolicy, Signed, SizeCaps, WorkItem,
};

const CHUNKS: usize = 4;
const K: u8 = 3;

/// `/page/N`: about 1 MB for even N (so results span several 256 KiB transfer chunks).
fn start_site() -> SocketAddr {
    serve_local(Router::new().route(
        "/page/{n}",
        axum::routing::get(|Path(n): Path<u64>| async move {
            // Hex of mixed numbers: compresses only about 2:1, so the WARC stays large.
            let filler: String = (0..(1u64 << 20) / 17)
                .map(|i| {
                    let x = (i ^ (n << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    format!("{:016x}\n", x.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9))
                })
                .collect();
            format!("<html><body>page {n}<pre>{filler}</pre></body></html>")
        }),
    ))
}

fn crawl_manifest(owner: &starling_protocol::Keypair, _site: SocketAddr) -> ProjectManifest {
    ProjectManifest {
        name: "seed".into(),
        description: "node seeding test".into(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy {
            per_s_milli: 50_000,
            burst: 10,
            concurrency: 4,
            ..RatePolicy::default()
        },
        lease_ms: 4_000,
        replication: K,
        scope: vec!["127.0.0.1".into()],
        user_agent: "starling-test-seeder".into(),
        robots: RobotsPolicy::Ignore,
        caps: SizeCaps::default(),
        verify: Default::default(),
        shard_depth: 0,
    }
}

fn signed_files(owner: &starling_protocol::Keypair, site: SocketAddr) -> (Vec<u8>, Vec<u8>) {
    let m = crawl_manifest(owner, site);
    let items = (0..CHUNKS)
        .map(|c| WorkItem::CrawlChunk { urls: vec![format!("http://{site}/page/{}", c * 2)] })
        .collect();
    let batch = ItemBatch { project: m.id(), seq: 1, items };
    (
        Envelope::Manifest(Signed::sign(owner, &m)).to_bytes(),
        Envelope::Batch(Signed::sign(owner, &batch)).to_bytes(),
    )
}

/// The nodes (by index, among those alive) holding a verified copy of `digest`.
fn copies(nodes: &[Option<Node>], digest: &str) -> BTreeSet<usize> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
        .filter(|(_, n)| {
            let path = n.dir.join("results").join(format!("{digest}.warc.gz"));
            std::fs::read(path).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == digest)
        })
        .map(|(i, _)| i)
        .collect()
}

fn alive(nodes: &[Option<Node>]) -> Vec<&Node> {
    nodes.iter().flatten().collect()
}

fn dump_alive(nodes: &[Option<Node>]) -> String {
    nodes.iter().flatten().map(|n| dump(std::slice::from_ref(n))).collect()
}

#[test]
fn every_result_is_kept_on_k_nodes_and_restored_after_kills_despite_a_liar() {
    let site = start_site();
    let owner = starling_protocol::engine::test_keypair(61);
    let (manifest, batch) = signed_files(&owner, site);
    let base: Vec<String> = ["--listen", "/ip4/127.0.0.1/tcp/0", "--allow-private-targets", "true"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--trust".to_string(), owner.public().to_hex()])
        .collect();
    // Node 0 crawls and seeds nothing; nodes 1..=4 only seed. Node 4 lies.
    let mut args0 = base.clone();
    args0.extend(["--seed".into(), "false".into()]);
    let producer = Node::start_real(&args0);
    let boot = producer.addr();
    let mut nodes = vec![Some(producer)];
    for i in 1..=4 {
        let mut a = base.clone();
        a.extend(["--capacity".into(), "0".into(), "--bootstrap".into(), boot.clone()]);
        let env: &[(&str, &str)] =
            if i == 4 { &[("STARLING_TEST_CORRUPT_BLOBS", "1")] } else { &[] };
        nodes.push(Some(Node::start_real_env(&a, env)));
    }
    const LIAR: usize = 4;
    wait_for("every node to see the others", Duration::from_secs(60), || {
        alive(&nodes).iter().all(|n| num(&n.status(), &["live_peers"]) == 4)
    });
    let p = nodes[0].as_ref().unwrap();
    assert_eq!(p.publish(&manifest)["outcome"], "applied");
    assert_eq!(p.publish(&batch)["outcome"], "applied");

    // Every chunk done, then k verified copies of every result besides the producer's.
    let mut results: Vec<String> = Vec::new();
    wait_for_or(
        "every chunk done",
        Duration::from_secs(120),
        || {
            let items: Vec<ItemInfo> = p.api.get_json("/items?state=done").unwrap_or_default();
            results = items.iter().filter_map(|i| i.result.clone()).collect();
            results.len() == CHUNKS
        },
        || dump_alive(&nodes),
    );
    wait_for_or(
        "k copies of every result on the seeding nodes",
        Duration::from_secs(120),
        || results.iter().all(|d| copies(&nodes, d).iter().filter(|i| **i != 0).count() >= 3),
        || dump_alive(&nodes),
    );
    let before: BTreeMap<&String, BTreeSet<usize>> =
        results.iter().map(|d| (d, copies(&nodes, d))).collect();

    // A result the liar holds, and an honest holder of it to kill along with the producer.
    let (digest, holders) = before
        .iter()
        .find(|(_, h)| h.contains(&LIAR))
        .expect("the liar holds a copy of some result");
    let victim = *holders.iter().find(|i| **i != 0 && **i != LIAR).unwrap();
    nodes[victim].take().unwrap().kill9();
    nodes[0].take().unwrap().kill9();

    // The node that held no copy takes the duty and copies the result from the honest holder
    // and the liar; the liar's chunks are refused and it is penalised.
    wait_for_or(
        "k copies restored after the kills",
        Duration::from_secs(120),
        || copies(&nodes, digest).len() >= 3,
        || dump_alive(&nodes),
    );
    let newcomer = copies(&nodes, digest).into_iter().find(|i| !holders.contains(i)).unwrap();
    let s: StatusView = nodes[newcomer].as_ref().unwrap().api.get_json("/status").unwrap();
    assert!(s.net.blob_penalties >= 1, "the liar was not penalised: {:?}", s.net);
    let seeding: starling_node::views::SeedingView =
        nodes[newcomer].as_ref().unwrap().api.get_json("/seeding").unwrap();
    assert!(seeding.chunks_rejected >= 1, "{seeding:?}");
    assert!(seeding.bytes_fetched > 0, "{seeding:?}");

    // `starling export` on an honest survivor: every result (fetching those it lacks) plus a
    // CDX index that lists every response record, read back by warcio.
    let exporter = nodes.iter().enumerate().find(|(i, n)| n.is_some() && *i != LIAR).unwrap().0;
    let out = tempfile::tempdir().unwrap();
    let project = starling_protocol::ProjectManifest::id(&crawl_manifest(&owner, site));
    let run = std::process::Command::new(BIN)
        .arg("export")
        .arg("--data-dir")
        .arg(&nodes[exporter].as_ref().unwrap().dir)
        .args(["--project", &project.to_hex()])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let warcs: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".warc.gz"))
        .collect();
    assert_eq!(warcs.len(), CHUNKS, "{stdout}");
    // Progress on stderr: without a terminal, only each stage's final line.
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains(&format!("gathered {CHUNKS} results (")), "{stderr}");
    assert!(stderr.contains(&format!("wrote {CHUNKS}/{CHUNKS} files, ")), "{stderr}");
    assert!(!stderr.contains('\r'), "no redrawn lines without a terminal: {stderr:?}");
    let cdx = std::fs::read_to_string(out.path().join("index.cdx")).unwrap();
    let lines: Vec<&str> = cdx.lines().filter(|l| !l.starts_with(" CDX")).collect();
    let mut responses = 0;
    for w in &warcs {
        let index = warcio_cli().args(["index", "-f", "warc-type"]).arg(w).output();
        let index = index.expect("cannot run python3");
        assert!(
            index.status.success(),
            "warcio cannot read {}: {}",
            w.display(),
            String::from_utf8_lossy(&index.stderr)
        );
        responses += String::from_utf8_lossy(&index.stdout).matches("\"response\"").count();
    }
    assert_eq!(lines.len(), responses, "the CDX lists every response record:\n{cdx}");
    for d in &results {
        assert!(lines.iter().any(|l| l.contains(&format!("{d}.warc.gz"))), "{d} not indexed");
    }
}
