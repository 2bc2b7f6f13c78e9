//! A tracker-less torrent swarm on loopback between two real nodes: node A seeds a torrent the
//! test makes, node B takes the second copy, downloads it from A through the initial peers the
//! mesh gives it, and the bytes match. No DHT, no trackers, no LAN discovery: nothing leaves
//! the machine.
//!
//! Needs the actor wiring (see `node/src/torrent/runner.rs`):
//! - `starling up --torrent-loopback true`: `TorrentSettings::loopback()` (listener on
//!   127.0.0.1, DHT, trackers and LAN discovery off, loopback peers allowed);
//! - `--seed-capacity N`: the engine's `seed_capacity`, so A cannot take both copies;
//! - the torrent runner registered for seeding work (`SeedWithTorrents`), its peer lookup
//!   answering with the BitTorrent listen addresses of the item's other holders (which nodes
//!   advertise in their presence or identify info);
//! - `/status` → `torrents`: the session's totals (`seeding`, `uploaded_bytes`,
//!   `downloaded_bytes`, `peers`, …) and its `listen` address.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use starling_protocol::{
    Envelope, ItemBatch, Keypair, ProjectManifest, RatePolicy, RobotsPolicy, Signed, SizeCaps,
    TorrentSource, WorkItem,
};

pub(crate) const NAME: &str = "payload.bin";
pub(crate) const LEN: usize = 2 * 1024 * 1024 + 777;

/// Makes a single-file torrent of seeded random bytes under `dir`: the .torrent bytes, the info
/// hash and the content.
pub(crate) fn make_torrent(dir: &Path) -> (Vec<u8>, [u8; 20], Vec<u8>) {
    let mut data = vec![0u8; LEN];
    blake3::Hasher::new().update(b"node torrent test").finalize_xof().fill(&mut data);
    let path = dir.join(NAME);
    std::fs::write(&path, &data).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(async {
        let opts = librqbit::CreateTorrentOptions {
            name: Some(NAME),
            trackers: Vec::new(),
            piece_length: Some(256 * 1024),
        };
        let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
        librqbit::create_torrent(&path, opts, &spawner).await.unwrap()
    });
    (t.as_bytes().unwrap().to_vec(), t.info_hash().0, data)
}

pub(crate) fn manifest(owner: &Keypair) -> ProjectManifest {
    ProjectManifest {
        name: "torrents".into(),
        description: "node torrent test".into(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy::default(),
        lease_ms: 20_000,
        replication: 2,
        scope: vec![],
        user_agent: "starling-test".into(),
        robots: RobotsPolicy::default(),
        caps: SizeCaps::default(),
        verify: Default::default(),
        shard_depth: 0,
    }
}

pub(crate) fn batch(owner: &Keypair, m: &ProjectManifest, seq: u64, item: WorkItem) -> Vec<u8> {
    let b = ItemBatch { project: m.id(), seq, items: vec![item] };
    Envelope::Batch(Signed::sign(owner, &b)).to_bytes()
}

pub(crate) fn torrent_file(node: &Node, info_hash: &[u8; 20]) -> std::path::PathBuf {
    node.dir.join("torrents").join(hex::encode(info_hash)).join(NAME)
}

#[test]

fn a_torrent_seeded_by_one_node_is_downloaded_by_another_and_the_bytes_match() {
    let src = tempfile::tempdir().unwrap();
    let (torrent, info_hash, content) = make_torrent(src.path());
    let owner = starling_protocol::engine::test_keypair(61);
    let m = manifest(&owner);
    let args: Vec<String> =
        ["--listen", "/ip4/127.0.0.1/tcp/0", "--torrent-loopback", "true", "--seed-capacity", "1"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--trust".to_string(), owner.public().to_hex()])
            .collect();

    // A alone, with the content already where its session keeps this torrent: it takes copy 0
    // and is ready at once.
    let a = Node::start_real(&args);
    let a_file = torrent_file(&a, &info_hash);
    std::fs::create_dir_all(a_file.parent().unwrap()).unwrap();
    std::fs::write(&a_file, &content).unwrap();
    let copy = |replica| WorkItem::Torrent {
        info_hash,
        source: TorrentSource::File(torrent.clone()),
        replica,
    };
    assert_eq!(
        a.publish(&Envelope::Manifest(Signed::sign(&owner, &m)).to_bytes())["outcome"],
        "applied"
    );
    assert_eq!(a.publish(&batch(&owner, &m, 1, copy(0)))["outcome"], "applied");
    wait_for_or(
        "A to seed the torrent",
        Duration::from_secs(60),
        || num(&a.status(), &["torrents", "seeding"]) == 1,
        || dump(std::slice::from_ref(&a)),
    );

    // B joins, and C, which seeds results but runs no torrents. A is at its seeding capacity,
    // so copy 1 goes to B, which downloads it from A; C never ranks for it.
    let mut b_args = args.clone();
    b_args.extend(["--bootstrap".to_string(), a.addr()]);
    let b = Node::start_real(&b_args);
    let mut c_args = b_args.clone();
    c_args.extend(["--torrents".to_string(), "false".to_string()]);
    let c = Node::start_real(&c_args);
    let nodes = vec![a, b, c];
    wait_for("the nodes to see each other", Duration::from_secs(60), || {
        nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == 2)
    });
    let torrent_role = u64::from(starling_protocol::Roles::TORRENT.0);
    assert_eq!(num(&nodes[1].status(), &["roles"]) & torrent_role, torrent_role);
    assert_eq!(num(&nodes[2].status(), &["roles"]) & torrent_role, 0, "C offers no torrents");
    assert_eq!(nodes[0].publish(&batch(&owner, &m, 2, copy(1)))["outcome"], "applied");
    wait_for_or(
        "B to download and seed the torrent",
        Duration::from_secs(120),
        || num(&nodes[1].status(), &["torrents", "seeding"]) == 1,
        || dump(&nodes),
    );
    let got = std::fs::read(torrent_file(&nodes[1], &info_hash)).unwrap();
    assert!(got == content, "B's bytes differ from the seeded ones");
    assert!(num(&nodes[1].status(), &["torrents", "downloaded_bytes"]) >= LEN as u64);
    assert!(num(&nodes[0].status(), &["torrents", "uploaded_bytes"]) >= LEN as u64);
    // C took no torrent duty, so it had none to fail.
    let c = nodes[2].status();
    assert_eq!((num(&c, &["engine", "claims"]), num(&c, &["engine", "failed"])), (0, 0));
}
