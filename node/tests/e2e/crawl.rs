//! Two real nodes crawl a real local site: every chunk is fetched, archived as a WARC file
//! named by its blake3 digest in the holder's results directory, and agreed on by both nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::extract::{Path, State};
use starling_protocol::{
    Envelope, ItemBatch, ProjectManifest, RatePolicy, RobotsPolicy, Signed, SizeCaps, WorkItem,
};

const CHUNKS: usize = 8;
const URLS_PER_CHUNK: usize = 3;

type Hits = Arc<Mutex<BTreeMap<String, u32>>>;

/// Serves `/page/N` on 127.0.0.1 from a thread of its own, counting hits per path.
fn start_site() -> (SocketAddr, Hits) {
    let hits: Hits = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let state = hits.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route(
                    "/page/{n}",
                    axum::routing::get(
                        |State(hits): State<Hits>, Path(n): Path<String>| async move {
                            *hits.lock().unwrap().entry(format!("/page/{n}")).or_default() += 1;
                            format!("<html><body>page {n}</body></html>")
                        },
                    ),
                )
                .with_state(state);
            let _ = axum::serve(listener, app).await;
        });
    });
    (rx.recv().unwrap(), hits)
}

fn crawl_manifest(owner: &starling_protocol::Keypair) -> ProjectManifest {
    ProjectManifest {
        name: "crawl".into(),
        description: "node crawl test".into(),
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
        scope: vec!["127.0.0.1".into()],
        user_agent: "starling-test-crawler".into(),
        robots: RobotsPolicy::Ignore,
        caps: SizeCaps::default(),
        verify: no_checks(),
        shard_depth: 0,
    }
}

fn chunks(site: SocketAddr) -> Vec<WorkItem> {
    (0..CHUNKS)
        .map(|c| WorkItem::CrawlChunk {
            urls: (0..URLS_PER_CHUNK)
                .map(|u| format!("http://{site}/page/{}", c * URLS_PER_CHUNK + u))
                .collect(),
        })
        .collect()
}

fn signed_files(owner: &starling_protocol::Keypair, site: SocketAddr) -> (Vec<u8>, Vec<u8>) {
    let m = crawl_manifest(owner);
    let batch = ItemBatch { project: m.id(), seq: 1, items: chunks(site) };
    (
        Envelope::Manifest(Signed::sign(owner, &m)).to_bytes(),
        Envelope::Batch(Signed::sign(owner, &batch)).to_bytes(),
    )
}

#[test]
fn two_nodes_crawl_a_local_site_into_warc_files() {
    let (site, hits) = start_site();
    let owner = starling_protocol::engine::test_keypair(41);
    let (manifest, batch) = signed_files(&owner, site);
    let args = crawl_node_args(&owner);
    let first = Node::start_real(&args);
    let mut second_args = args.clone();
    second_args.extend(["--bootstrap".to_string(), first.addr()]);
    let nodes = vec![first, Node::start_real(&second_args)];
    wait_for("the nodes to see each other", Duration::from_secs(60), || {
        nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == 1)
    });
    assert_eq!(nodes[0].publish(&manifest)["outcome"], "applied");
    assert_eq!(nodes[0].publish(&batch)["outcome"], "applied");
    wait_for_or(
        "every chunk done on both nodes",
        Duration::from_secs(120),
        || nodes.iter().all(|n| num(&n.status(), &["items", "done"]) == CHUNKS as u64),
        || dump(&nodes),
    );
    let states = item_states(&nodes[0]);
    assert_eq!(item_states(&nodes[1]), states, "the nodes disagree");
    let dir_of: BTreeMap<String, std::path::PathBuf> = nodes
        .iter()
        .map(|n| (n.status()["node_id"].as_str().unwrap().to_string(), n.dir.clone()))
        .collect();
    for (id, state, _epoch, holder, result) in &states {
        assert_eq!(state, "done", "item {id}");
        let dir = dir_of.get(holder).unwrap_or_else(|| panic!("holder {holder} is not a node"));
        let path = dir.join("results").join(format!("{result}.warc.gz"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            blake3::hash(&bytes).to_hex().to_string(),
            *result,
            "digest of {}",
            path.display()
        );
        let mut text = String::new();
        use std::io::Read;
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
        assert!(text.starts_with("WARC/1.1"), "not a WARC file");
        assert!(text.contains("WARC-Type: response"));
    }
    let hits = hits.lock().unwrap();
    for n in 0..CHUNKS * URLS_PER_CHUNK {
        assert!(
            hits.get(&format!("/page/{n}")).copied().unwrap_or(0) >= 1,
            "/page/{n} never fetched"
        );
    }
    // No temp files left behind.
    for n in &nodes {
        for entry in std::fs::read_dir(n.dir.join("results")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(name.ends_with(".warc.gz"), "stray file {name}");
        }
    }
}

#[test]
fn over_the_disk_cap_a_node_stops_claiming_crawl_work() {
    let (site, _hits) = start_site();
    let owner = starling_protocol::engine::test_keypair(42);
    let (manifest, batch) = signed_files(&owner, site);
    let args: Vec<String> = [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--allow-private-targets",
        "true",
        "--capacity",
        "1",
        "--disk-bytes-max",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--trust".to_string(), owner.public().to_hex()])
    .collect();
    let node = Node::start_real(&args);
    assert_eq!(num(&node.status(), &["capacity"]), 1);
    node.publish(&manifest);
    node.publish(&batch);
    // The first result puts the node over its 1-byte cap: it stops taking crawl work.
    wait_for_or(
        "the node to notice it is over the disk cap",
        Duration::from_secs(60),
        || node.status()["over_disk_cap"] == true,
        || dump(std::slice::from_ref(&node)),
    );
    let s = node.status();
    // A fault of the node's own: it says so, holds nothing and claims nothing.
    assert_eq!(s["health"]["ok"], false, "{s}");
    assert_eq!(s["health"]["faults"][0]["kind"], "disk", "{s}");
    assert_eq!(num(&s, &["holding"]), 0, "{s}");
    assert!(num(&s, &["items", "done"]) >= 1);
    assert!(num(&s, &["items", "done"]) < CHUNKS as u64, "it kept claiming over the cap");
    assert!(read_log(&node.dir).contains("over the disk cap"));
}
