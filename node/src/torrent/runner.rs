//! [`TorrentRunner`]: the node's [`Runner`] for torrent items, and [`SeedWithTorrents`], the
//! one seeding runner that routes result duties and torrents to their runners.
//!
//! A job adds its torrent to the shared [`TorrentSession`] (paused), checks the metadata
//! against the item's info hash and the total length against the disk cap, starts it, and
//! reports [`WorkReport::Done`] once every piece is on disk: for an ongoing item that means
//! "ready, seeding now". The torrent then keeps seeding until the job is cancelled; on cancel
//! it is dropped from the session and its files stay on disk (a later duty for the same
//! torrent resumes from them) until the disk cap needs the room. A download that makes no
//! progress for `stall_ms`, a magnet that does not resolve in that time, or a librqbit error
//! is reported as a retryable failure with the reason; metadata that does not hash to the
//! item's info hash is a permanent one. Two jobs for one torrent (two replicas landing on one
//! node) share it, and it is dropped when the last one goes.
//!
//! # Wiring it into the actor
//!
//! ```text
//! // once, at start, inside the tokio runtime; skip when !settings.torrent.enabled, and on an
//! // error log one warning line and go on without torrents (pass None below)
//! let session  = TorrentSession::open(&data_dir, settings.torrent.clone()).await?;
//! let torrents = TorrentRunner::new(session, peer_lookup, reports.clone(), runner_counters);
//! let control  = torrents.control();   // cloneable: add_initial_peers, listen_addr, totals, views
//! runners.register(Box::new(SeedWithTorrents::new(Box::new(seed_runner), Some(torrents), reports.clone())));
//! // on shutdown: control.session().stop().await
//! ```
//! The blob [`SeedRunner`](crate::seed::runner::SeedRunner) alone must not be registered for
//! seeding work once projects list torrents: it fails a torrent job as not retryable.
//!
//! Peers, since the mesh runs without DHT or trackers where the operator says so:
//! 1. Every node with a torrent session advertises `control.listen_addr()` (its BitTorrent
//!    listener, a `SocketAddr`) to the mesh, e.g. in its presence or identify info, with the
//!    IP its other peers see it at when the listener is bound to `0.0.0.0`.
//! 2. `peer_lookup(&TorrentQuery)` runs on the actor's thread when a job starts (it must not
//!    block) and returns the BitTorrent addresses of the item's other live holders (the other
//!    replicas of the same info hash in the same project), best first, never this node.
//! 3. When the node learns of a new holder later, it calls
//!    `control.add_initial_peers(info_hash, addrs)`. A torrent still downloading is restarted
//!    with the longer list (librqbit takes peers only when a torrent starts; the restart
//!    keeps the pieces on disk). A torrent already complete ignores them: seeders are dialled,
//!    they need not dial.
//!
//! Peers are filtered by [`TorrentSession::filter_peers`]: at most
//! [`INITIAL_PEERS_MAX`](super::INITIAL_PEERS_MAX), and private addresses only if the
//! operator allows them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use starling_protocol::{Digest, ItemId, ProjectId, TorrentSource, WorkItem, WorkKind, WorkResult};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::session::{Handle, TorrentSession, TorrentTotals, TorrentView};
use super::{TorrentError, info_hash_hex};
use crate::runner::{Job, Runner, RunnerCounters, WorkReport};

/// How often a running job looks at its torrent's progress.
const POLL_MS: u64 = 250;
/// Most torrents the runner keeps peer lists for (held or announced ahead of a job).
pub const PEER_BOOKS_MAX: usize = 2_048;
/// Shortest stall limit applied, whatever the settings say.
const STALL_MS_MIN: u64 = 2_000;

/// What the node is asked when a torrent job starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentQuery {
    /// The job's project.
    pub project: ProjectId,
    /// The job's item.
    pub item: ItemId,
    /// The torrent's v1 info hash.
    pub info_hash: [u8; 20],
}

/// Finds the BitTorrent addresses of the other holders of a torrent, best first.
pub type PeerLookup = Arc<dyn Fn(&TorrentQuery) -> Vec<SocketAddr> + Send + Sync>;

#[derive(Debug, Default)]
struct PeerBook {
    peers: Vec<SocketAddr>,
    version: u64,
}

#[derive(Debug, Default)]
struct Held {
    jobs: u16,
    total_bytes: u64,
}

#[derive(Debug)]
struct Shared {
    session: Arc<TorrentSession>,
    books: Mutex<BTreeMap<[u8; 20], PeerBook>>,
    held: Mutex<BTreeMap<[u8; 20], Held>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn add_peers(&self, info_hash: [u8; 20], peers: Vec<SocketAddr>) {
        let mut books = lock(&self.books);
        if !books.contains_key(&info_hash) && books.len() >= PEER_BOOKS_MAX {
            tracing::debug!(info_hash = %info_hash_hex(&info_hash), "too many peer lists; peers dropped");
            return;
        }
        let book = books.entry(info_hash).or_default();
        let merged = self.session.filter_peers(book.peers.iter().copied().chain(peers));
        if merged != book.peers {
            book.peers = merged;
            book.version += 1;
        }
    }

    fn peers(&self, info_hash: &[u8; 20]) -> (Vec<SocketAddr>, u64) {
        lock(&self.books).get(info_hash).map_or((Vec::new(), 0), |b| (b.peers.clone(), b.version))
    }

    /// Records the torrent's size, unless the held torrents and it would pass the disk cap.
    /// Returns the bytes of the other held torrents.
    fn reserve(&self, info_hash: &[u8; 20], total: u64) -> Result<u64, TorrentError> {
        let max = self.session.settings().disk_bytes_max;
        let mut held = lock(&self.held);
        let others: u64 =
            held.iter().filter(|(h, _)| *h != info_hash).map(|(_, t)| t.total_bytes).sum();
        if others.saturating_add(total) > max {
            return Err(TorrentError::OverDiskCap { need: total, held: others, max });
        }
        if let Some(h) = held.get_mut(info_hash) {
            h.total_bytes = total;
        }
        Ok(others)
    }

    fn held_hashes(&self) -> BTreeSet<[u8; 20]> {
        lock(&self.held).keys().copied().collect()
    }

    /// Ends one job's hold on a torrent; the last one drops it from the session.
    fn release(self: &Arc<Self>, info_hash: [u8; 20]) {
        let last = {
            let mut held = lock(&self.held);
            match held.get_mut(&info_hash) {
                Some(h) if h.jobs > 1 => {
                    h.jobs -= 1;
                    false
                }
                Some(_) => {
                    held.remove(&info_hash);
                    true
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        lock(&self.books).remove(&info_hash);
        let shared = self.clone();
        tokio::spawn(async move {
            // A new job may have taken the torrent up again meanwhile.
            if !lock(&shared.held).contains_key(&info_hash) {
                shared.session.forget(&info_hash, false).await;
                tracing::info!(info_hash = %info_hash_hex(&info_hash), "stopped seeding torrent");
            }
        });
    }
}

/// A cloneable handle on the runner's session, for the actor and the status view.
#[derive(Debug, Clone)]
pub struct TorrentControl {
    shared: Arc<Shared>,
}

impl TorrentControl {
    /// Adds peers for a torrent (see the module doc for when to call it).
    pub fn add_initial_peers(&self, info_hash: [u8; 20], peers: Vec<SocketAddr>) {
        self.shared.add_peers(info_hash, peers);
    }

    /// The BitTorrent listener other holders dial.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.shared.session.listen_addr()
    }

    /// Totals for the dashboard: torrents seeding, bytes up and down, peers.
    pub fn totals(&self) -> TorrentTotals {
        self.shared.session.totals()
    }

    /// Each torrent the node holds: what it serves.
    pub fn views(&self) -> Vec<TorrentView> {
        self.shared.session.views()
    }

    /// The session.
    pub fn session(&self) -> &Arc<TorrentSession> {
        &self.shared.session
    }
}

struct Running {
    info_hash: [u8; 20],
    task: AbortHandle,
    released: Arc<AtomicBool>,
}

/// Runs torrent items on a shared [`TorrentSession`].
pub struct TorrentRunner {
    shared: Arc<Shared>,
    lookup: PeerLookup,
    reports: mpsc::Sender<WorkReport>,
    counters: Arc<RunnerCounters>,
    running: BTreeMap<(ItemId, u32), Running>,
}

impl std::fmt::Debug for TorrentRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorrentRunner")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

fn failed(job: &Job, reason: String, retryable: bool) -> WorkReport {
    WorkReport::Failed { item: job.item, epoch: job.epoch, reason, retryable }
}

impl TorrentRunner {
    /// A runner on `session`, finding peers with `lookup`, reporting on `reports`.
    pub fn new(
        session: Arc<TorrentSession>,
        lookup: PeerLookup,
        reports: mpsc::Sender<WorkReport>,
        counters: Arc<RunnerCounters>,
    ) -> Self {
        let shared = Arc::new(Shared {
            session,
            books: Mutex::new(BTreeMap::new()),
            held: Mutex::new(BTreeMap::new()),
        });
        Self { shared, lookup, reports, counters, running: BTreeMap::new() }
    }

    /// A cloneable handle for peers, the listen address and the views.
    pub fn control(&self) -> TorrentControl {
        TorrentControl { shared: self.shared.clone() }
    }

    /// Adds peers for a torrent (see the module doc).
    pub fn add_initial_peers(&self, info_hash: [u8; 20], peers: Vec<SocketAddr>) {
        self.shared.add_peers(info_hash, peers);
    }

    /// Jobs started and not cancelled (downloading or seeding).
    pub fn jobs(&self) -> usize {
        self.running.len()
    }

    fn report_soon(&self, report: WorkReport) {
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let _ = reports.send(report).await;
        });
    }

    /// Takes a hold on the torrent, unless the node holds as many as it may.
    fn hold(&self, info_hash: [u8; 20]) -> Result<(), TorrentError> {
        let limit = self.shared.session.settings().torrents_limit();
        let mut held = lock(&self.shared.held);
        if !held.contains_key(&info_hash) && held.len() >= limit {
            return Err(TorrentError::TooMany(held.len()));
        }
        held.entry(info_hash).or_default().jobs += 1;
        Ok(())
    }
}

impl Runner for TorrentRunner {
    fn kind(&self) -> WorkKind {
        WorkKind::Seed
    }

    fn start(&mut self, job: Job) {
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        // Failed jobs are not cancelled by the engine: forget them here.
        self.running.retain(|_, r| !(r.task.is_finished() && r.released.load(Ordering::Acquire)));
        let WorkItem::Torrent { info_hash, source, .. } = &job.work else {
            return self.report_soon(failed(&job, "not a torrent item".into(), false));
        };
        let (info_hash, source) = (*info_hash, source.clone());
        if !self.shared.session.settings().enabled {
            return self.report_soon(failed(&job, "torrents are off on this node".into(), true));
        }
        let key = (job.item, job.epoch);
        if let Some(r) = self.running.get(&key)
            && !r.released.load(Ordering::Acquire)
        {
            return; // Already running under this epoch: its report is on the way.
        }
        if let Err(e) = self.hold(info_hash) {
            return self.report_soon(failed(&job, e.to_string(), e.retryable()));
        }
        let query = TorrentQuery { project: job.project, item: job.item, info_hash };
        self.shared.add_peers(info_hash, (self.lookup)(&query));
        let released = Arc::new(AtomicBool::new(false));
        let (shared, reports, counters) =
            (self.shared.clone(), self.reports.clone(), self.counters.clone());
        let flag = released.clone();
        let task = tokio::spawn(async move {
            let report = match run(&shared, &info_hash, &source).await {
                Ok(size) => {
                    tracing::info!(item = %job.item, info_hash = %info_hash_hex(&info_hash), size, "torrent complete, seeding");
                    counters.completed.fetch_add(1, Ordering::Relaxed);
                    WorkReport::Done(WorkResult {
                        item: job.item,
                        epoch: job.epoch,
                        result: result_digest(&info_hash),
                        size,
                        ok: 1,
                        failed: 0,
                        parts: Vec::new(),
                    })
                }
                Err(e) => {
                    tracing::warn!(item = %job.item, info_hash = %info_hash_hex(&info_hash), error = %e, "torrent job failed");
                    if !flag.swap(true, Ordering::AcqRel) {
                        shared.release(info_hash);
                    }
                    failed(&job, e.to_string(), e.retryable())
                }
            };
            let _ = reports.send(report).await;
        });
        self.running.insert(key, Running { info_hash, task: task.abort_handle(), released });
    }

    fn cancel(&mut self, item: ItemId, epoch: u32) {
        let Some(r) = self.running.remove(&(item, epoch)) else { return };
        if !r.task.is_finished() {
            r.task.abort();
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        if !r.released.swap(true, Ordering::AcqRel) {
            self.shared.release(r.info_hash);
        }
    }
}

/// The digest a torrent job's receipt carries: blake3 of the 20-byte v1 info hash.
pub fn result_digest(info_hash: &[u8; 20]) -> Digest {
    Digest::of(info_hash)
}

/// Adds the torrent and waits until it is complete; returns its total length.
async fn run(
    shared: &Arc<Shared>,
    info_hash: &[u8; 20],
    source: &TorrentSource,
) -> Result<u64, TorrentError> {
    let session = &shared.session;
    let stall = Duration::from_millis(session.settings().stall_ms.max(STALL_MS_MIN));
    let (mut handle, mut version) = add(shared, info_hash, source, stall).await?;
    let total = handle.stats().total_bytes;
    let others = shared.reserve(info_hash, total)?;
    session.make_room(total, others, &shared.held_hashes()).await?;
    let mut progress = (u64::MAX, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        let (_, newest) = shared.peers(info_hash);
        let gone = session.get(info_hash).is_none();
        let view = session.view(&handle);
        if !gone && view.finished && view.state == "live" {
            return Ok(view.total_bytes);
        }
        if view.state == "error" && !gone {
            return Err(TorrentError::Torrent(
                view.error.unwrap_or_else(|| "unknown error".into()),
            ));
        }
        if gone || (newest != version && !view.finished) {
            // Dropped under us, or new holders to dial: add it again (pieces on disk stay).
            if !gone {
                session.forget(info_hash, false).await;
            }
            (handle, version) = add(shared, info_hash, source, stall).await?;
            continue;
        }
        // Added paused, it comes out of the piece check paused: start it then.
        if view.state == "paused" {
            session.start(&handle).await?;
        }
        if view.have_bytes != progress.0 {
            progress = (view.have_bytes, Instant::now());
        } else if progress.1.elapsed() > stall {
            return Err(TorrentError::Stalled(stall.as_millis() as u64));
        }
    }
}

/// Adds the torrent (paused) with the peers known now, bounding a magnet's resolution.
async fn add(
    shared: &Arc<Shared>,
    info_hash: &[u8; 20],
    source: &TorrentSource,
    stall: Duration,
) -> Result<(Handle, u64), TorrentError> {
    let (peers, version) = shared.peers(info_hash);
    match tokio::time::timeout(stall, shared.session.add_paused(info_hash, source, peers)).await {
        Ok(added) => Ok((added?, version)),
        Err(_) => Err(TorrentError::Stalled(stall.as_millis() as u64)),
    }
}

/// The node's one runner for [`WorkKind::Seed`]: result duties go to `duties` (the blob seed
/// runner), torrents to `torrents`. Without a torrent runner (torrents off, or the session did
/// not start) a torrent job fails as retryable, so another node takes it.
#[derive(Debug)]
pub struct SeedWithTorrents {
    duties: Box<dyn Runner>,
    torrents: Option<TorrentRunner>,
    reports: mpsc::Sender<WorkReport>,
}

impl SeedWithTorrents {
    /// Routes seeding work between the two runners; `reports` carries the refusals of torrent
    /// jobs when there is no torrent runner.
    pub fn new(
        duties: Box<dyn Runner>,
        torrents: Option<TorrentRunner>,
        reports: mpsc::Sender<WorkReport>,
    ) -> Self {
        Self { duties, torrents, reports }
    }

    /// The torrent runner, if torrents are on.
    pub fn torrents(&self) -> Option<&TorrentRunner> {
        self.torrents.as_ref()
    }
}

impl Runner for SeedWithTorrents {
    fn kind(&self) -> WorkKind {
        WorkKind::Seed
    }

    fn start(&mut self, job: Job) {
        if !matches!(job.work, WorkItem::Torrent { .. }) {
            return self.duties.start(job);
        }
        match &mut self.torrents {
            Some(t) => t.start(job),
            None => {
                let report = failed(&job, "torrents are off on this node".into(), true);
                let reports = self.reports.clone();
                tokio::spawn(async move {
                    let _ = reports.send(report).await;
                });
            }
        }
    }

    fn cancel(&mut self, item: ItemId, epoch: u32) {
        if let Some(t) = &mut self.torrents {
            t.cancel(item, epoch);
        }
        self.duties.cancel(item, epoch);
    }
}

#[cfg(test)]
mod routing_tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Recorder(Arc<Mutex<Vec<ItemId>>>);

    impl Runner for Recorder {
        fn kind(&self) -> WorkKind {
            WorkKind::Seed
        }
        fn start(&mut self, job: Job) {
            lock(&self.0).push(job.item);
        }
        fn cancel(&mut self, _: ItemId, _: u32) {}
    }

    #[tokio::test]
    async fn duties_go_to_the_blob_runner_and_torrents_fail_retryably_without_a_session() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::channel(4);
        let mut r = SeedWithTorrents::new(Box::new(Recorder(seen.clone())), None, tx);
        let duty = WorkItem::SeedDuty {
            source: ItemId([1; 32]),
            result: Digest([2; 32]),
            size: 3,
            replica: 0,
        };
        let torrent = WorkItem::Torrent {
            info_hash: [4; 20],
            source: TorrentSource::Magnet("magnet:?xt=urn:btih:04".into()),
            replica: 0,
        };
        let project = ProjectId([5; 32]);
        r.start(Job::new(ItemId([6; 32]), 1, project, duty));
        r.start(Job::new(ItemId([7; 32]), 1, project, torrent));
        assert_eq!(*lock(&seen), vec![ItemId([6; 32])]);
        match rx.recv().await.expect("a report") {
            WorkReport::Failed { item, retryable, .. } => {
                assert_eq!(item, ItemId([7; 32]));
                assert!(retryable);
            }
            WorkReport::Done(_) => panic!("a torrent job done without a session"),
        }
    }
}
