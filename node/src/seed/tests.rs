//! The fetcher and the runner against in-process holders: honest, lying, missing, busy,
//! failing and stalling ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use starling_protocol::{Digest, ItemId, ProjectId, WorkItem};
use tokio::sync::{mpsc, watch};

use super::fetch::{FetchProgress, IN_FLIGHT_MAX};
use super::serve::serve;
use super::*;
use crate::runner::{Job, Runner, RunnerCounters, WorkReport};

#[derive(Debug, Clone, Copy)]
enum Behaves {
    Honest,
    /// Flips a bit in every slice it serves.
    Liar,
    Missing,
    Busy,
    Erroring,
    /// Honest for its first `n` requests, then never answers.
    StallAfter(u32),
}

#[derive(Debug)]
struct Peer {
    store: Arc<BlobStore>,
    behaves: Behaves,
    served: AtomicU32,
}

/// In-process holders, logging every request as (peer, offset).
#[derive(Debug, Default)]
struct Mesh {
    peers: HashMap<u8, Peer>,
    log: Mutex<Vec<(u8, u64)>>,
    penalised: Mutex<Vec<u8>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Mesh {
    /// Peers with the given behaviour, each holding `blob` in its own store.
    fn new(blob: &[u8], peers: &[(u8, Behaves)]) -> Self {
        let mut mesh = Mesh::default();
        for (id, behaves) in peers {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(BlobStore::open(dir.path(), None).unwrap());
            store.insert(blob).unwrap();
            mesh.peers.insert(*id, Peer { store, behaves: *behaves, served: AtomicU32::new(0) });
            mesh._dirs.push(dir);
        }
        mesh
    }

    fn log(&self) -> Vec<(u8, u64)> {
        self.log.lock().unwrap().clone()
    }
}

impl ChunkSource for Mesh {
    type Peer = u8;

    async fn get(&self, peer: u8, req: BlobRequest) -> Result<BlobResponse, SourceError> {
        let BlobRequest::Get { offset, .. } = req else { unreachable!("the fetcher only reads") };
        self.log.lock().unwrap().push((peer, offset));
        let p = &self.peers[&peer];
        let n = p.served.fetch_add(1, Ordering::SeqCst);
        match p.behaves {
            Behaves::Missing => Ok(BlobResponse::NotFound),
            Behaves::Busy => Ok(BlobResponse::Busy),
            Behaves::Erroring => Err(SourceError::Unreachable),
            Behaves::StallAfter(k) if n >= k => std::future::pending().await,
            Behaves::Honest | Behaves::StallAfter(_) => Ok(serve(&p.store, &req)),
            Behaves::Liar => {
                let mut res = serve(&p.store, &req);
                if let BlobResponse::Slice { bytes, .. } = &mut res {
                    let last = bytes.len() - 1;
                    bytes[last] ^= 0x40;
                }
                Ok(res)
            }
        }
    }

    fn penalise(&self, peer: &u8, _reason: &'static str) {
        self.penalised.lock().unwrap().push(*peer);
    }
}

/// 10 full chunks and a short one.
fn blob() -> Vec<u8> {
    let len = 10 * CHUNK_BYTES as usize + 1234;
    let mut x = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

const CHUNKS: u32 = 11;

fn quick() -> FetchConfig {
    FetchConfig {
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..FetchConfig::default()
    }
}

struct Local {
    _dir: tempfile::TempDir,
    store: Arc<BlobStore>,
    counters: Arc<SeedingCounters>,
}

fn local() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(BlobStore::open(dir.path(), None).unwrap());
    Local { _dir: dir, store, counters: Arc::new(SeedingCounters::default()) }
}

fn fetcher(mesh: Mesh, local: &Local) -> Arc<Fetcher<Mesh>> {
    Arc::new(Fetcher::new(Arc::new(mesh), local.store.clone(), quick(), local.counters.clone()))
}

#[tokio::test]
async fn a_blob_round_trips_from_two_honest_holders() {
    let data = blob();
    let digest = Digest::of(&data);
    let local = local();
    let f = fetcher(Mesh::new(&data, &[(1, Behaves::Honest), (2, Behaves::Honest)]), &local);
    let (tx, rx) = watch::channel(FetchProgress::default());
    let out = f.fetch(digest, data.len() as u64, vec![1, 2], Some(tx)).await;
    let fetched = out.result.unwrap();
    assert_eq!(std::fs::read(&fetched.path).unwrap(), data);
    assert_eq!(fetched.fetched_bytes, data.len() as u64);
    assert!(local.store.has(&digest));
    assert!(out.penalise.is_empty());
    assert_eq!(out.requests, CHUNKS);
    let log = f.source().log();
    assert!(log.iter().any(|(p, _)| *p == 1) && log.iter().any(|(p, _)| *p == 2), "{log:?}");
    let done = FetchProgress { verified_bytes: data.len() as u64, total_bytes: data.len() as u64 };
    assert_eq!(*rx.borrow(), done);
    let stats = local.counters.snapshot();
    assert_eq!((stats.bytes_fetched, stats.blobs_stored), (data.len() as u64, 1));
    // The stored copy can be served on at once.
    let again = serve(&local.store, &BlobRequest::Get { digest, offset: 0, len: 10 });
    assert!(matches!(again, BlobResponse::Slice { .. }));
    // Already stored: nothing is asked.
    let out = f.fetch(digest, data.len() as u64, vec![1, 2], None).await;
    assert_eq!((out.requests, out.result.unwrap().fetched_bytes), (0, 0));
}

#[tokio::test]
async fn a_lying_holder_is_caught_and_its_chunks_come_from_the_other() {
    let data = blob();
    let digest = Digest::of(&data);
    let local = local();
    let f = fetcher(Mesh::new(&data, &[(1, Behaves::Liar), (2, Behaves::Honest)]), &local);
    let out = f.fetch(digest, data.len() as u64, vec![1, 2], None).await;
    let fetched = out.result.unwrap();
    assert_eq!(std::fs::read(&fetched.path).unwrap(), data);
    assert_eq!(out.penalise, vec![1]);
    let log = f.source().log();
    let asked_liar: Vec<u64> = log.iter().filter(|(p, _)| *p == 1).map(|(_, o)| *o).collect();
    assert!(!asked_liar.is_empty(), "the liar was asked for something: {log:?}");
    for offset in &asked_liar {
        assert!(log.contains(&(2, *offset)), "chunk at {offset} refetched from the honest peer");
    }
    assert_eq!(local.counters.snapshot().chunks_rejected, asked_liar.len() as u64);
    assert_eq!(out.requests as usize, CHUNKS as usize + asked_liar.len());
}

#[tokio::test]
async fn a_cancelled_fetch_resumes_with_only_the_missing_chunks() {
    let data = blob();
    let digest = Digest::of(&data);
    let size = data.len() as u64;
    let local = local();
    let f = fetcher(Mesh::new(&data, &[(1, Behaves::StallAfter(3))]), &local);
    let (tx, mut rx) = watch::channel(FetchProgress::default());
    let task = tokio::spawn({
        let f = f.clone();
        async move { f.fetch(digest, size, vec![1], Some(tx)).await }
    });
    let three = 3 * u64::from(CHUNK_BYTES);
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|p| p.verified_bytes >= three))
        .await
        .expect("three chunks arrive")
        .unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(!local.store.has(&digest));

    let f = fetcher(Mesh::new(&data, &[(2, Behaves::Honest)]), &local);
    let out = f.fetch(digest, size, vec![2], None).await;
    let fetched = out.result.unwrap();
    assert_eq!(std::fs::read(&fetched.path).unwrap(), data);
    assert_eq!(out.requests, CHUNKS - 3, "only the missing chunks are fetched");
    assert_eq!(fetched.fetched_bytes, size - three);
    let offsets: Vec<u64> = f.source().log().iter().map(|(_, o)| *o).collect();
    assert!(offsets.iter().all(|o| *o >= three), "{offsets:?}");
}

#[tokio::test]
async fn holders_without_the_blob_give_a_clear_retryable_error() {
    let data = blob();
    let local = local();
    let f = fetcher(Mesh::new(&data, &[(1, Behaves::Missing), (2, Behaves::Missing)]), &local);
    let out = f.fetch(Digest::of(&data), data.len() as u64, vec![1, 2, 1], None).await;
    let err = out.result.unwrap_err();
    assert!(matches!(err, FetchError::NotFound(2)), "{err}");
    assert_eq!(err.to_string(), "none of the 2 holders has the blob");
    assert!(err.retryable());
    assert!(out.penalise.is_empty());
    assert_eq!(local.counters.snapshot().fetches_failed, 1);

    let out = f.fetch(Digest::of(&data), data.len() as u64, vec![], None).await;
    assert!(matches!(out.result, Err(FetchError::NoHolders)));
}

#[tokio::test]
async fn busy_and_failing_holders_are_retried_then_dropped() {
    let data = blob();
    let digest = Digest::of(&data);
    let local = local();
    let mesh =
        Mesh::new(&data, &[(1, Behaves::Busy), (2, Behaves::Erroring), (3, Behaves::Honest)]);
    let f = fetcher(mesh, &local);
    let out = f.fetch(digest, data.len() as u64, vec![1, 2, 3], None).await;
    assert_eq!(std::fs::read(out.result.unwrap().path).unwrap(), data);
    assert!(out.penalise.is_empty(), "busy or failing is no lie");

    let local = self::local();
    let f = fetcher(Mesh::new(&data, &[(2, Behaves::Erroring)]), &local);
    let out = f.fetch(digest, data.len() as u64, vec![2], None).await;
    let err = out.result.unwrap_err();
    assert!(matches!(err, FetchError::HoldersExhausted { failing: 1, .. }), "{err}");
    assert!(out.requests as usize <= quick().peer_errors_max as usize + IN_FLIGHT_MAX);

    let f = fetcher(Mesh::new(&data, &[(1, Behaves::Busy)]), &local);
    let out = f.fetch(digest, data.len() as u64, vec![1], None).await;
    let err = out.result.unwrap_err();
    assert!(matches!(err, FetchError::Exhausted { attempts: 8, .. }), "{err}");
}

#[tokio::test]
async fn an_empty_blob_needs_no_holder() {
    let local = local();
    let f = fetcher(Mesh::default(), &local);
    let out = f.fetch(Digest::of(b""), 0, vec![], None).await;
    assert_eq!(out.result.unwrap().size, 0);
    assert!(local.store.has(&Digest::of(b"")));
}

fn job(digest: Digest, size: u64) -> Job {
    let work = WorkItem::SeedDuty { source: ItemId([3; 32]), result: digest, size, replica: 1 };
    Job::new(ItemId([1; 32]), 4, ProjectId([2; 32]), work)
}

fn runner(
    mesh: Mesh,
    local: &Local,
    holders: Vec<u8>,
) -> (SeedRunner<Mesh>, mpsc::Receiver<WorkReport>) {
    let (tx, rx) = mpsc::channel(8);
    let lookup: HolderLookup<u8> = Arc::new(move |q: &HolderQuery| {
        assert_eq!(q.source, ItemId([3; 32]));
        holders.clone()
    });
    let r = SeedRunner::new(fetcher(mesh, local), lookup, tx, Arc::new(RunnerCounters::default()));
    (r, rx)
}

async fn next(rx: &mut mpsc::Receiver<WorkReport>) -> WorkReport {
    tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("a report").unwrap()
}

#[tokio::test]
async fn the_runner_reports_a_stored_blob_at_once_and_fetches_a_missing_one() {
    let data = blob();
    let digest = Digest::of(&data);
    let local = local();
    local.store.insert(b"mine").unwrap();
    let (mut r, mut rx) =
        runner(Mesh::new(&data, &[(1, Behaves::Liar), (2, Behaves::Honest)]), &local, vec![1, 2]);
    r.start(job(Digest::of(b"mine"), 4));
    let WorkReport::Done(res) = next(&mut rx).await else { panic!("not done") };
    assert_eq!(
        (res.item, res.epoch, res.result, res.size),
        (ItemId([1; 32]), 4, Digest::of(b"mine"), 4)
    );

    r.start(job(digest, data.len() as u64));
    let WorkReport::Done(res) = next(&mut rx).await else { panic!("not done") };
    assert_eq!((res.result, res.size), (digest, data.len() as u64));
    assert!(local.store.has(&digest));
    assert_eq!(*r.fetcher().source().penalised.lock().unwrap(), vec![1]);
}

#[tokio::test]
async fn the_runner_fails_retryably_when_no_holder_has_the_blob() {
    let data = blob();
    let local = local();
    let (mut r, mut rx) = runner(Mesh::new(&data, &[(1, Behaves::Missing)]), &local, vec![1]);
    r.start(job(Digest::of(&data), data.len() as u64));
    let report = next(&mut rx).await;
    let WorkReport::Failed { retryable, reason, epoch, .. } = report else { panic!("{report:?}") };
    assert!(retryable);
    assert_eq!(epoch, 4);
    assert!(reason.contains("none of the 1 holders"), "{reason}");
}

#[tokio::test]
async fn a_cancelled_duty_reports_nothing_and_keeps_its_partial_download() {
    let data = blob();
    let digest = Digest::of(&data);
    let local = local();
    let (mut r, mut rx) = runner(Mesh::new(&data, &[(1, Behaves::StallAfter(2))]), &local, vec![1]);
    r.start(job(digest, data.len() as u64));
    let part = local.store.dir().join(format!("{}{}", digest.to_hex(), store::PART_SUFFIX));
    for _ in 0..300 {
        if local.counters.snapshot().bytes_fetched >= 2 * u64::from(CHUNK_BYTES) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.fetching(), 1);
    r.cancel(ItemId([1; 32]), 4);
    assert_eq!(r.fetching(), 0);
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err());
    assert!(part.exists());
    let p = Partial::open(&local.store, digest, data.len() as u64).unwrap();
    assert_eq!(p.verified_bytes(), 2 * u64::from(CHUNK_BYTES));
}
