//! In-process loopback swarms: two sessions on 127.0.0.1 with no DHT, no trackers and no LAN
//! discovery, so nothing leaves the machine. The torrents are made here from random bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use starling_protocol::{ItemId, ProjectId, TorrentSource, WorkItem};
use tokio::sync::mpsc;

use super::*;
use crate::runner::{Job, Runner, RunnerCounters, WorkReport};

const PIECE_BYTES: u32 = 256 * 1024;

/// A single-file torrent of `len` seeded random bytes, written to `dir/name`; returns the
/// .torrent bytes, the info hash and the content.
async fn make_torrent(
    dir: &Path,
    name: &str,
    len: usize,
    seed: u64,
) -> (Vec<u8>, [u8; 20], Vec<u8>) {
    let mut data = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut data);
    let path = dir.join(name);
    tokio::fs::create_dir_all(dir).await.expect("dir");
    tokio::fs::write(&path, &data).await.expect("write content");
    let opts = librqbit::CreateTorrentOptions {
        name: Some(name),
        trackers: Vec::new(),
        piece_length: Some(PIECE_BYTES),
    };
    let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
    let t = librqbit::create_torrent(&path, opts, &spawner).await.expect("create torrent");
    let bytes = t.as_bytes().expect("torrent bytes").to_vec();
    (bytes, t.info_hash().0, data)
}

/// Logs to the test output when `RUST_LOG` is set.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::from_default_env();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

fn job(item: u8, work: WorkItem) -> Job {
    Job::new(ItemId([item; 32]), 1, ProjectId([9; 32]), work)
}

fn torrent_item(info_hash: [u8; 20], source: TorrentSource) -> WorkItem {
    WorkItem::Torrent { info_hash, source, replica: 0 }
}

fn no_peers() -> PeerLookup {
    Arc::new(|_| Vec::new())
}

fn peers_of(addr: SocketAddr) -> PeerLookup {
    Arc::new(move |_| vec![addr])
}

async fn next_report(rx: &mut mpsc::Receiver<WorkReport>, limit: Duration) -> WorkReport {
    tokio::time::timeout(limit, rx.recv()).await.expect("a report in time").expect("channel open")
}

/// Polls `cond` every 20 ms for at most `limit`; whether it came to hold.
async fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn settings(stall_ms: u64) -> TorrentSettings {
    TorrentSettings { stall_ms, ..TorrentSettings::loopback() }
}

/// A runner on its own session under `data`.
async fn runner(
    data: &Path,
    s: TorrentSettings,
    lookup: PeerLookup,
) -> (TorrentRunner, mpsc::Receiver<WorkReport>) {
    logs();
    let session = TorrentSession::open(data, s).await.expect("session");
    let (tx, rx) = mpsc::channel(16);
    (TorrentRunner::new(session, lookup, tx, Arc::new(RunnerCounters::default())), rx)
}

/// Puts the content where the seeder's session keeps this torrent's files.
async fn place_content(data: &Path, info_hash: &[u8; 20], name: &str, content: &[u8]) {
    let folder = data.join(TORRENTS_DIR).join(info_hash_hex(info_hash));
    tokio::fs::create_dir_all(&folder).await.expect("folder");
    tokio::fs::write(folder.join(name), content).await.expect("content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torrent_moves_between_two_loopback_sessions_and_the_bytes_match() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let (torrent, info_hash, content) =
        make_torrent(&tmp.path().join("src"), "payload.bin", 3 * 1024 * 1024 + 12_345, 7).await;
    place_content(&a_dir, &info_hash, "payload.bin", &content).await;

    // A: the seeder, whose copy is complete on disk.
    let (mut a, mut a_rx) = runner(&a_dir, settings(20_000), no_peers()).await;
    let a_addr = a.control().listen_addr().expect("A listens");
    assert!(a_addr.ip().is_loopback(), "A listens on loopback only: {a_addr}");
    a.start(job(1, torrent_item(info_hash, TorrentSource::File(torrent.clone()))));
    let r = match next_report(&mut a_rx, Duration::from_secs(30)).await {
        WorkReport::Done(r) => r,
        WorkReport::Failed { reason, .. } => panic!("the seeder should report ready: {reason}"),
    };
    assert_eq!(r.size, content.len() as u64);
    assert_eq!(r.result, runner::result_digest(&info_hash));

    // B: downloads through its initial peer, A.
    let (mut b, mut b_rx) = runner(&b_dir, settings(20_000), peers_of(a_addr)).await;
    b.start(job(2, torrent_item(info_hash, TorrentSource::File(torrent))));
    match next_report(&mut b_rx, Duration::from_secs(60)).await {
        WorkReport::Done(r) => assert_eq!(r.size, content.len() as u64),
        WorkReport::Failed { reason, .. } => panic!("download failed: {reason}"),
    }
    let got = tokio::fs::read(
        b_dir.join(TORRENTS_DIR).join(info_hash_hex(&info_hash)).join("payload.bin"),
    )
    .await
    .expect("B has the file");
    assert!(got == content, "downloaded bytes differ from the seeded ones");
    let totals = b.control().totals();
    assert_eq!(totals.seeding, 1);
    assert!(totals.downloaded_bytes >= content.len() as u64, "{totals:?}");
    assert!(a.control().totals().uploaded_bytes >= content.len() as u64);

    // Cancel on B: the torrent leaves the session and its data stays.
    b.cancel(ItemId([2; 32]), 1);
    let left = within(Duration::from_secs(30), || b.control().views().is_empty()).await;
    assert!(left, "B kept the cancelled torrent in its session");
    assert!(b_dir.join(TORRENTS_DIR).join(info_hash_hex(&info_hash)).join("payload.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnet_resolves_from_initial_peers_added_later() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let (torrent, info_hash, content) =
        make_torrent(&tmp.path().join("src"), "m.bin", 600_000, 8).await;
    place_content(&a_dir, &info_hash, "m.bin", &content).await;
    let (mut a, mut a_rx) = runner(&a_dir, settings(20_000), no_peers()).await;
    a.start(job(1, torrent_item(info_hash, TorrentSource::File(torrent))));
    assert!(matches!(next_report(&mut a_rx, Duration::from_secs(30)).await, WorkReport::Done(_)));
    let a_addr = a.control().listen_addr().expect("A listens");

    // B knows the peer before the job starts (as the actor would tell it).
    let (mut b, mut b_rx) = runner(&b_dir, settings(20_000), no_peers()).await;
    b.add_initial_peers(info_hash, vec![a_addr]);
    let magnet = format!("magnet:?xt=urn:btih:{}", info_hash_hex(&info_hash));
    b.start(job(2, torrent_item(info_hash, TorrentSource::Magnet(magnet))));
    match next_report(&mut b_rx, Duration::from_secs(60)).await {
        WorkReport::Done(r) => assert_eq!(r.size, content.len() as u64),
        WorkReport::Failed { reason, .. } => panic!("magnet download failed: {reason}"),
    }
    let got =
        tokio::fs::read(b_dir.join(TORRENTS_DIR).join(info_hash_hex(&info_hash)).join("m.bin"))
            .await
            .expect("B has the file");
    assert!(got == content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_peers_is_a_retryable_failure_and_a_wrong_hash_a_permanent_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (torrent, info_hash, _) = make_torrent(&tmp.path().join("src"), "x.bin", 300_000, 9).await;
    let (mut b, mut rx) = runner(&tmp.path().join("b"), settings(2_000), no_peers()).await;

    b.start(job(1, torrent_item(info_hash, TorrentSource::File(torrent.clone()))));
    match next_report(&mut rx, Duration::from_secs(30)).await {
        WorkReport::Failed { retryable, reason, .. } => {
            assert!(retryable, "{reason}");
            assert!(reason.contains("stalled"), "{reason}");
        }
        WorkReport::Done(_) => panic!("nothing to download from, yet done"),
    }

    let mut wrong = info_hash;
    wrong[0] ^= 1;
    b.start(job(2, torrent_item(wrong, TorrentSource::File(torrent))));
    match next_report(&mut rx, Duration::from_secs(30)).await {
        WorkReport::Failed { retryable, reason, .. } => {
            assert!(!retryable, "{reason}");
            assert!(reason.contains("info hash"), "{reason}");
        }
        WorkReport::Done(_) => panic!("a torrent with the wrong info hash was taken"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torrent_over_the_disk_cap_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (torrent, info_hash, content) =
        make_torrent(&tmp.path().join("src"), "big.bin", 500_000, 10).await;
    let s = TorrentSettings { disk_bytes_max: content.len() as u64 - 1, ..settings(5_000) };
    let (mut b, mut rx) = runner(&tmp.path().join("b"), s, no_peers()).await;
    b.start(job(1, torrent_item(info_hash, TorrentSource::File(torrent))));
    match next_report(&mut rx, Duration::from_secs(30)).await {
        WorkReport::Failed { reason, retryable, .. } => {
            assert!(retryable);
            assert!(reason.contains("disk cap"), "{reason}");
        }
        WorkReport::Done(_) => panic!("over the cap, yet done"),
    }
    let gone = within(Duration::from_secs(30), || b.control().views().is_empty()).await;
    assert!(gone, "a refused torrent is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_peers_are_dropped_unless_allowed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let public = TorrentSettings { allow_private_peers: false, ..TorrentSettings::loopback() };
    let s = TorrentSession::open(tmp.path(), public).await.expect("session");
    let peers: Vec<SocketAddr> = vec![
        "127.0.0.1:6881".parse().unwrap(),
        "192.168.1.2:6881".parse().unwrap(),
        "8.8.8.8:6881".parse().unwrap(),
    ];
    assert_eq!(s.filter_peers(peers.clone()), vec!["8.8.8.8:6881".parse().unwrap()]);
    s.stop().await;
    let s = TorrentSession::open(&tmp.path().join("2"), TorrentSettings::loopback())
        .await
        .expect("session");
    assert_eq!(s.filter_peers(peers).len(), 3);
}
