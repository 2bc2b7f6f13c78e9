//! [`SeedRunner`]: the node's [`Runner`] for seeding duties, and [`SwarmSource`], the
//! [`ChunkSource`] that sends blob requests through the node's swarm.
//!
//! A duty whose blob is already stored (the producer's own result, or a copy fetched before a
//! restart) is reported done at once. Otherwise the runner asks the node for the blob's
//! holders, fetches it in its own task, and reports done or failed (retryable) on the report
//! channel the crawl runner uses. Cancelling a duty aborts its fetch and keeps the partial
//! download, so a later duty for the same blob resumes it. A done duty keeps being served for
//! as long as the blob is stored; the runner never deletes a blob (but under the test switch
//! [`drops_copies`]).
//!
//! # Wiring it into the actor
//!
//! Build the pieces once at start:
//! ```text
//! let store    = Arc::new(BlobStore::open(results_dir, disk_cap)?);
//! let seeding  = Arc::new(SeedingCounters::default());
//! let (source, blob_commands) = SwarmSource::channel();          // bounded, BLOB_COMMAND_CAP
//! let fetcher  = Arc::new(Fetcher::new(Arc::new(source), store.clone(), FetchConfig::default(), seeding.clone()));
//! let runner   = SeedRunner::new(fetcher, holders_lookup, reports.clone(), runner_counters);
//! runners.register(Box::new(runner));
//! let server   = BlobServer::new(store, SERVING_MAX, seeding);
//! ```
//! and add `blob: request_response::Behaviour<BlobCodec>` (from [`super::wire::behaviour`])
//! to the network behaviour. Then the actor must:
//! 1. **Outbound**: on `BlobCommand::Get { peer, request, reply }` from `blob_commands`, call
//!    `swarm.behaviour_mut().blob.send_request(&peer, request)` and keep `reply` in a map
//!    keyed by the returned `OutboundRequestId` (bound it: at most the fetcher's in-flight
//!    limit per running duty). On `Event::Message { message: Response { request_id, response
//!    }, .. }` send `Ok(response)` to that reply; on `Event::OutboundFailure { request_id,
//!    error, .. }` send `Err(SourceError::from_outbound(&error))`. Dropping a reply is also
//!    fine: the fetcher sees [`SourceError::Closed`] and tries another holder.
//! 2. **Penalties**: on `BlobCommand::Penalise { peer, reason }`, lower the peer's score
//!    (e.g. gossipsub application score) and log it. A penalised peer provably sent bytes that
//!    do not hash to the digest.
//! 3. **Inbound**: on `Event::Message { message: Request { request, channel, .. }, .. }` call
//!    `server.admit(request)`: `Err(busy)` is sent back at once with `send_response`;
//!    `Ok(fut)` is spawned, and its answer comes back to the actor loop (through a bounded
//!    channel carrying `(channel, response)`) to be sent with `send_response`. `admit` bounds
//!    the spawned tasks.
//! 4. **Holders**: `holders_lookup(&HolderQuery)` runs on the actor's thread when a duty
//!    starts; it returns the peers believed to hold the blob (the producer of the source item
//!    and the live holders of the other replicas, best first, never this node), from the
//!    engine's view, mapped with `net::peer_id_of`. It must not block.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use libp2p::PeerId;
use libp2p::request_response::OutboundFailure;
use starling_protocol::{Digest, ItemId, ProjectId, WorkItem, WorkKind, WorkResult};
use tokio::sync::{mpsc, oneshot};

use super::fetch::{ChunkSource, Fetcher, SourceError};
use super::wire::{BlobRequest, BlobResponse};
use crate::runner::{Job, Runner, RunnerCounters, RunningJobs, WorkReport};

/// Seeding fetches running at once in one runner; more duties fail (retryable).
pub const SEED_JOBS_MAX: usize = 64;
/// Blob commands queued from fetches to the actor.
pub const BLOB_COMMAND_CAP: usize = 64;

/// What the node is asked when a duty needs its blob fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderQuery {
    /// The duty's project.
    pub project: ProjectId,
    /// The item whose result the blob is.
    pub source: ItemId,
    /// The blob.
    pub digest: Digest,
}

/// Finds the peers that hold a blob, best first.
pub type HolderLookup<P> = Arc<dyn Fn(&HolderQuery) -> Vec<P> + Send + Sync>;

/// What a fetch asks of the actor.
#[derive(Debug)]
pub enum BlobCommand {
    /// Send `request` to `peer` on the blob protocol and put the outcome in `reply`.
    Get {
        /// The holder asked.
        peer: PeerId,
        /// The request.
        request: BlobRequest,
        /// Where the response (or why there is none) goes.
        reply: oneshot::Sender<Result<BlobResponse, SourceError>>,
    },
    /// `peer` sent data that failed verification.
    Penalise {
        /// The peer.
        peer: PeerId,
        /// Why, for the log.
        reason: &'static str,
    },
}

/// The [`ChunkSource`] that goes through the actor's swarm.
#[derive(Debug, Clone)]
pub struct SwarmSource {
    commands: mpsc::Sender<BlobCommand>,
}

impl SwarmSource {
    /// A source and the receiver of its commands, for the actor.
    pub fn channel() -> (Self, mpsc::Receiver<BlobCommand>) {
        let (commands, rx) = mpsc::channel(BLOB_COMMAND_CAP);
        (Self { commands }, rx)
    }
}

impl ChunkSource for SwarmSource {
    type Peer = PeerId;

    fn get(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> impl Future<Output = Result<BlobResponse, SourceError>> + Send {
        let commands = self.commands.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            let cmd = BlobCommand::Get { peer, request, reply };
            commands.send(cmd).await.map_err(|_| SourceError::Closed)?;
            answer.await.map_err(|_| SourceError::Closed)?
        }
    }

    fn penalise(&self, peer: &PeerId, reason: &'static str) {
        if self.commands.try_send(BlobCommand::Penalise { peer: *peer, reason }).is_err() {
            tracing::warn!(%peer, reason, "blob command queue full; penalty not delivered");
        }
    }
}

impl SourceError {
    /// The error for a failed outbound request on the blob protocol.
    pub fn from_outbound(e: &OutboundFailure) -> Self {
        match e {
            OutboundFailure::DialFailure => Self::Unreachable,
            OutboundFailure::Timeout => Self::Timeout,
            OutboundFailure::UnsupportedProtocols => Self::Unsupported,
            OutboundFailure::ConnectionClosed => Self::Failed("connection closed".into()),
            OutboundFailure::Io(e) => Self::Failed(e.to_string()),
        }
    }
}

/// Debug builds only, for the storage-proof tests: `STARLING_TEST_DROP_COPIES=1` makes this
/// node delete every copy it fetches for a seeding duty as it reports the duty ready, so it
/// holds duties without copies, as a cheating or broken volunteer would. Results the node had
/// already (its own crawl results, copies from before) are kept. Ignored in release builds.
pub fn drops_copies() -> bool {
    #[cfg(debug_assertions)]
    {
        let on = std::env::var_os("STARLING_TEST_DROP_COPIES").is_some_and(|v| v == "1");
        if on {
            tracing::warn!("TEST SWITCH ACTIVE: every copy fetched for a seeding duty is deleted");
        }
        on
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// Runs seeding duties with a shared [`Fetcher`].
pub struct SeedRunner<S: ChunkSource> {
    fetcher: Arc<Fetcher<S>>,
    holders: HolderLookup<S::Peer>,
    reports: mpsc::Sender<WorkReport>,
    counters: Arc<RunnerCounters>,
    running: RunningJobs,
    /// The test switch [`drops_copies`].
    drop_copies: bool,
}

impl<S: ChunkSource> std::fmt::Debug for SeedRunner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedRunner")
            .field("running", &self.running.running())
            .finish_non_exhaustive()
    }
}

impl<S: ChunkSource> SeedRunner<S> {
    /// A runner fetching with `fetcher`, finding holders with `holders`, reporting on
    /// `reports`.
    pub fn new(
        fetcher: Arc<Fetcher<S>>,
        holders: HolderLookup<S::Peer>,
        reports: mpsc::Sender<WorkReport>,
        counters: Arc<RunnerCounters>,
    ) -> Self {
        let drop_copies = drops_copies();
        Self { fetcher, holders, reports, counters, running: RunningJobs::default(), drop_copies }
    }

    /// The fetcher (its store, its source).
    pub fn fetcher(&self) -> &Arc<Fetcher<S>> {
        &self.fetcher
    }

    /// Duties with a fetch still running.
    pub fn fetching(&self) -> usize {
        self.running.running()
    }

    fn report_soon(&self, report: WorkReport) {
        if matches!(report, WorkReport::Done(_)) {
            self.counters.completed.fetch_add(1, Ordering::Relaxed);
        }
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let _ = reports.send(report).await;
        });
    }
}

fn failed(job: &Job, reason: String, retryable: bool) -> WorkReport {
    WorkReport::Failed { item: job.item, epoch: job.epoch, reason, retryable }
}

fn done(job: &Job, digest: Digest, size: u64) -> WorkReport {
    WorkReport::Done(WorkResult {
        item: job.item,
        epoch: job.epoch,
        result: digest,
        size,
        ok: 1,
        failed: 0,
        parts: Vec::new(),
    })
}

impl<S: ChunkSource> Runner for SeedRunner<S> {
    fn kind(&self) -> WorkKind {
        WorkKind::Seed
    }

    fn start(&mut self, job: Job) {
        let running = self.running.prune();
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let WorkItem::SeedDuty { source, result, size, .. } = job.work else {
            return self.report_soon(failed(&job, "not a seeding duty".into(), false));
        };
        match self.fetcher.store().size(&result) {
            Ok(Some(stored)) if stored == size => {
                return self.report_soon(done(&job, result, size));
            }
            Ok(Some(stored)) => {
                let why = format!("stored blob has {stored} bytes, the duty says {size}");
                return self.report_soon(failed(&job, why, false));
            }
            Ok(None) => {}
            Err(e) => return self.report_soon(failed(&job, e.to_string(), true)),
        }
        if running >= SEED_JOBS_MAX {
            return self.report_soon(failed(&job, "too many seeding fetches".into(), true));
        }
        let query = HolderQuery { project: job.project, source, digest: result };
        let holders = (self.holders)(&query);
        let (job_item, job_epoch) = (job.item, job.epoch);
        let (fetcher, reports, counters) =
            (self.fetcher.clone(), self.reports.clone(), self.counters.clone());
        let drop_copy = self.drop_copies;
        let task = tokio::spawn(async move {
            let outcome = fetcher.fetch(result, size, holders, None).await;
            for peer in &outcome.penalise {
                fetcher.source().penalise(peer, "blob chunk failed verification");
            }
            let report = match outcome.result {
                Ok(f) => {
                    tracing::info!(item = %job.item, digest = %result, size, fetched = f.fetched_bytes, "blob stored");
                    counters.completed.fetch_add(1, Ordering::Relaxed);
                    if drop_copy {
                        let dropped = fetcher.store().remove(&result);
                        tracing::warn!(item = %job.item, digest = %result, ?dropped, "test switch: copy deleted");
                    }
                    done(&job, result, f.size)
                }
                Err(e) => {
                    tracing::warn!(item = %job.item, digest = %result, error = %e, "blob fetch failed");
                    failed(&job, e.to_string(), e.retryable())
                }
            };
            let _ = reports.send(report).await;
        });
        self.running.insert(job_item, job_epoch, task.abort_handle());
    }

    fn cancel(&mut self, item: ItemId, epoch: u32) {
        self.running.cancel(item, epoch, &self.counters);
    }
}
