//! [`Fetcher`]: downloads one blob from the peers that hold it, chunk by chunk, through a
//! [`ChunkSource`] (the node's is the swarm; tests use in-process sources).
//!
//! Each chunk is asked of one holder at a time, a few chunks in flight. A slice that does not
//! verify against the digest is dropped before it touches the disk, its sender is marked bad
//! (and named in [`FetchOutcome::penalise`]) and the chunk goes to another holder. `NotFound`
//! takes a holder out of this fetch; `Busy` and errors back off and try elsewhere, a holder
//! that keeps failing is dropped. Verified chunks go to a [`Partial`], so a fetch that is
//! cancelled or crashes resumes where it stopped; the last step checks the whole file against
//! the digest and moves it into the store.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use starling_protocol::Digest;
use tokio::sync::watch;
use tokio::time::Instant;

use super::SeedingCounters;
use super::partial::Partial;
use super::slice::{self, SliceError};
use super::store::{BlobStore, StoreError};
use super::wire::{BlobRequest, BlobResponse};

/// Most holders one fetch considers.
pub const HOLDERS_MAX: usize = 64;
/// Most chunk requests in flight in one fetch.
pub const IN_FLIGHT_MAX: usize = 16;

/// Where chunks come from: one request to one peer, one response back.
pub trait ChunkSource: Send + Sync + 'static {
    /// How peers are named (libp2p's `PeerId` in the node, anything in tests).
    type Peer: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static;

    /// Sends `req` to `peer` and waits for the answer.
    fn get(
        &self,
        peer: Self::Peer,
        req: BlobRequest,
    ) -> impl Future<Output = Result<BlobResponse, SourceError>> + Send;

    /// Tells the network layer that `peer` sent data that failed verification.
    fn penalise(&self, _peer: &Self::Peer, _reason: &'static str) {}
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// No connection to the peer could be made.
    #[error("cannot reach the peer")]
    Unreachable,
    /// No answer in time.
    #[error("request timed out")]
    Timeout,
    /// The peer does not speak the blob protocol.
    #[error("peer does not speak the blob protocol")]
    Unsupported,
    /// The stream failed or the answer did not decode.
    #[error("request failed: {0}")]
    Failed(String),
    /// The node's network side is gone.
    #[error("the node's network is shutting down")]
    Closed,
}

/// How a fetch paces itself.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Chunk requests in flight at once (1 to [`IN_FLIGHT_MAX`]).
    pub in_flight_max: usize,
    /// `Busy` answers and errors one chunk may meet before the fetch gives up.
    pub attempts_max: u32,
    /// Errors in a row after which a holder is dropped from the fetch.
    pub peer_errors_max: u32,
    /// First backoff after `Busy` or an error; doubles each time.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Longest wait for one response.
    pub request_timeout: Duration,
    /// The operator's download cap for seeding, shared by every fetch.
    pub download: std::sync::Arc<crate::budget::ByteRate>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            in_flight_max: 4,
            attempts_max: 8,
            peer_errors_max: 3,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(90),
            download: std::sync::Arc::default(),
        }
    }
}

/// Why a fetch gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The holder list was empty.
    #[error("no holder to fetch from")]
    NoHolders,
    /// Every holder answered that it does not have the blob.
    #[error("none of the {0} holders has the blob")]
    NotFound(usize),
    /// Every holder was dropped, for different reasons.
    #[error(
        "no usable holder left ({lacking} lack the blob, {bad} sent bad data, {failing} kept failing)"
    )]
    HoldersExhausted {
        /// Answered `NotFound` (or disagreed on the size).
        lacking: usize,
        /// Sent slices that did not verify.
        bad: usize,
        /// Errors in a row.
        failing: usize,
    },
    /// One chunk met too many `Busy` answers or errors.
    #[error("chunk {chunk} still missing after {attempts} attempts")]
    Exhausted {
        /// The chunk.
        chunk: u32,
        /// Attempts made.
        attempts: u32,
    },
    /// The store already holds a blob of that digest with another size.
    #[error("stored blob has {stored} bytes, the duty says {expected}")]
    SizeMismatch {
        /// Size on disk.
        stored: u64,
        /// Size asked for.
        expected: u64,
    },
    /// Reading or writing the store failed, or the whole did not match the digest.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FetchError {
    /// Whether a later attempt (here or on another node) may succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::SizeMismatch { .. } | Self::Store(StoreError::TooLarge(_)))
    }
}

/// A blob in the store after a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes fetched by this call (less than `size` after a resume, 0 if it was there).
    pub fetched_bytes: u64,
}

/// What a fetch did.
#[derive(Debug)]
pub struct FetchOutcome<P> {
    /// The blob, or why not.
    pub result: Result<Fetched, FetchError>,
    /// Peers that sent slices that did not verify, each once.
    pub penalise: Vec<P>,
    /// Requests sent.
    pub requests: u32,
}

/// Bytes verified so far of one fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchProgress {
    /// Verified and on disk (including what a resume found).
    pub verified_bytes: u64,
    /// The blob's size.
    pub total_bytes: u64,
}

/// Downloads blobs into a store through a [`ChunkSource`].
#[derive(Debug)]
pub struct Fetcher<S> {
    source: Arc<S>,
    store: Arc<BlobStore>,
    config: FetchConfig,
    counters: Arc<SeedingCounters>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HolderState {
    Usable,
    Lacks,
    Bad,
    Failing,
}

#[derive(Debug)]
struct Holder<P> {
    peer: P,
    state: HolderState,
    errors_in_row: u32,
    in_flight: u32,
}

/// A chunk waiting for a request.
#[derive(Debug, Clone, Copy)]
struct Want {
    chunk: u32,
    attempts: u32,
    not_before: Instant,
    /// The holder that last failed it, tried again only when no other is left.
    avoid: Option<usize>,
}

type Reply = (Want, usize, Result<BlobResponse, SourceError>);

/// The state of one fetch, borrowed by its loop.
struct Run<'a, S: ChunkSource> {
    fetcher: &'a Fetcher<S>,
    digest: Digest,
    size: u64,
    holders: Vec<Holder<S::Peer>>,
    next_holder: usize,
    queue: VecDeque<Want>,
    penalise: Vec<S::Peer>,
    requests: u32,
    fetched: u64,
    progress: Option<watch::Sender<FetchProgress>>,
    verified: u64,
}

impl<S: ChunkSource> Fetcher<S> {
    /// A fetcher writing into `store` and counting into `counters`.
    pub fn new(
        source: Arc<S>,
        store: Arc<BlobStore>,
        config: FetchConfig,
        counters: Arc<SeedingCounters>,
    ) -> Self {
        Self { source, store, config, counters }
    }

    /// The source it fetches through.
    pub fn source(&self) -> &Arc<S> {
        &self.source
    }

    /// The store it fetches into.
    pub fn store(&self) -> &Arc<BlobStore> {
        &self.store
    }

    /// Fetches blob `digest` of `size` bytes from `holders` (the first [`HOLDERS_MAX`]),
    /// reporting verified bytes on `progress`.
    pub async fn fetch(
        &self,
        digest: Digest,
        size: u64,
        holders: Vec<S::Peer>,
        progress: Option<watch::Sender<FetchProgress>>,
    ) -> FetchOutcome<S::Peer> {
        let mut holders_seen = Vec::new();
        for peer in holders {
            if holders_seen.len() < HOLDERS_MAX && !holders_seen.contains(&peer) {
                holders_seen.push(peer);
            }
        }
        let mut run = Run {
            fetcher: self,
            digest,
            size,
            holders: holders_seen
                .into_iter()
                .map(|peer| Holder {
                    peer,
                    state: HolderState::Usable,
                    errors_in_row: 0,
                    in_flight: 0,
                })
                .collect(),
            next_holder: 0,
            queue: VecDeque::new(),
            penalise: Vec::new(),
            requests: 0,
            fetched: 0,
            progress,
            verified: 0,
        };
        let result = run.go().await;
        if result.is_err() {
            SeedingCounters::add(&self.counters.fetches_failed, 1);
        }
        for peer in &run.penalise {
            tracing::warn!(?peer, digest = %digest, "peer sent a blob chunk that does not verify");
        }
        FetchOutcome { result, penalise: run.penalise, requests: run.requests }
    }
}

impl<S: ChunkSource> Run<'_, S> {
    async fn go(&mut self) -> Result<Fetched, FetchError> {
        let store = self.fetcher.store.clone();
        if let Some(stored) = store.size(&self.digest)? {
            if stored != self.size {
                return Err(FetchError::SizeMismatch { stored, expected: self.size });
            }
            let path = store.blob_path(&self.digest);
            return Ok(Fetched { path, size: stored, fetched_bytes: 0 });
        }
        let (digest, size) = (self.digest, self.size);
        let mut partial = blocking(move || Partial::open(&store, digest, size)).await??;
        self.verified = partial.verified_bytes();
        self.report_progress();
        let now = Instant::now();
        self.queue = partial
            .missing()
            .into_iter()
            .map(|chunk| Want { chunk, attempts: 0, not_before: now, avoid: None })
            .collect();
        if !self.queue.is_empty() && self.holders.is_empty() {
            return Err(FetchError::NoHolders);
        }
        partial = self.fetch_chunks(partial).await?;
        let path = blocking(move || partial.finish()).await??;
        SeedingCounters::add(&self.fetcher.counters.blobs_stored, 1);
        Ok(Fetched { path, size: self.size, fetched_bytes: self.fetched })
    }

    /// Requests and writes every queued chunk; hands the partial back when all are in.
    async fn fetch_chunks(&mut self, mut partial: Partial) -> Result<Partial, FetchError> {
        let fetcher = self.fetcher;
        let in_flight_max = fetcher.config.in_flight_max.clamp(1, IN_FLIGHT_MAX);
        let mut in_flight: FuturesUnordered<BoxFuture<'_, Reply>> = FuturesUnordered::new();
        loop {
            while in_flight.len() < in_flight_max {
                let Some(want) = self.take_ready() else { break };
                let holder = self.choose_holder(want.avoid).ok_or_else(|| self.exhausted())?;
                let (offset, len) = partial.chunk_range(want.chunk);
                let req = BlobRequest::Get { digest: self.digest, offset, len };
                let peer = self.holders[holder].peer.clone();
                self.holders[holder].in_flight += 1;
                self.requests += 1;
                let (source, timeout) = (&*fetcher.source, fetcher.config.request_timeout);
                let download = &fetcher.config.download;
                in_flight.push(Box::pin(async move {
                    download.spend(len as usize).await;
                    let res = tokio::time::timeout(timeout, source.get(peer, req))
                        .await
                        .unwrap_or(Err(SourceError::Timeout));
                    (want, holder, res)
                }));
            }
            if in_flight.is_empty() && self.queue.is_empty() {
                return Ok(partial);
            }
            let wake = self.queue.iter().map(|w| w.not_before).min();
            let reply = tokio::select! {
                Some(reply) = in_flight.next() => reply,
                () = sleep_until(wake) => continue,
            };
            partial = self.handle(partial, reply).await?;
        }
    }

    /// Acts on one response: writes a good slice, or decides what to do with the chunk.
    async fn handle(&mut self, partial: Partial, reply: Reply) -> Result<Partial, FetchError> {
        let (want, h, res) = reply;
        self.holders[h].in_flight -= 1;
        match res {
            Ok(BlobResponse::Slice { total_size, bytes }) if total_size == self.size => {
                let (digest, chunk) = (self.digest, want.chunk);
                let (partial, written) = blocking(move || {
                    let mut partial = partial;
                    let written = verify_and_write(&mut partial, &digest, chunk, &bytes);
                    (partial, written)
                })
                .await?;
                match written {
                    Ok(len) => {
                        self.holders[h].errors_in_row = 0;
                        self.fetched += len;
                        self.verified += len;
                        SeedingCounters::add(&self.fetcher.counters.bytes_fetched, len);
                        self.report_progress();
                    }
                    Err(ChunkError::Slice(e)) => {
                        tracing::debug!(chunk, error = %e, "rejected a blob chunk");
                        SeedingCounters::add(&self.fetcher.counters.chunks_rejected, 1);
                        self.holders[h].state = HolderState::Bad;
                        let peer = &self.holders[h].peer;
                        if !self.penalise.contains(peer) {
                            self.penalise.push(peer.clone());
                        }
                        self.retry(want, h, false)?;
                    }
                    Err(ChunkError::Store(e)) => return Err(e.into()),
                }
                return Ok(partial);
            }
            // A blob has one size: a holder that disagrees has another blob or none.
            Ok(BlobResponse::Slice { .. } | BlobResponse::BadRange { .. })
            | Ok(BlobResponse::NotFound | BlobResponse::TorrentAddr { .. }) => {
                self.holders[h].state = HolderState::Lacks;
                self.retry(want, h, false)?;
            }
            Ok(BlobResponse::Busy) => self.retry(want, h, true)?,
            Err(e) => {
                tracing::debug!(peer = ?self.holders[h].peer, error = %e, "blob request failed");
                let holder = &mut self.holders[h];
                holder.errors_in_row += 1;
                if holder.errors_in_row >= self.fetcher.config.peer_errors_max {
                    holder.state = HolderState::Failing;
                }
                self.retry(want, h, true)?;
            }
        }
        Ok(partial)
    }

    /// Queues a chunk again, away from holder `h`; `soft` failures count as attempts and
    /// back off.
    fn retry(&mut self, want: Want, h: usize, soft: bool) -> Result<(), FetchError> {
        let mut again = Want { avoid: Some(h), not_before: Instant::now(), ..want };
        if soft {
            again.attempts += 1;
            if again.attempts >= self.fetcher.config.attempts_max {
                return Err(FetchError::Exhausted { chunk: want.chunk, attempts: again.attempts });
            }
            let config = &self.fetcher.config;
            let factor = 1u32 << (again.attempts - 1).min(16);
            again.not_before += config.backoff_base.saturating_mul(factor).min(config.backoff_max);
        }
        self.queue.push_back(again);
        Ok(())
    }

    /// The first queued chunk whose backoff is over.
    fn take_ready(&mut self) -> Option<Want> {
        let now = Instant::now();
        let at = self.queue.iter().position(|w| w.not_before <= now)?;
        self.queue.remove(at)
    }

    /// A usable holder with the fewest requests in flight, in turn, other than `avoid` if
    /// there is another.
    fn choose_holder(&mut self, avoid: Option<usize>) -> Option<usize> {
        let n = self.holders.len();
        let usable = |i: &usize| self.holders[*i].state == HolderState::Usable;
        let order: Vec<usize> = (0..n).map(|k| (self.next_holder + k) % n).filter(usable).collect();
        let pick = order
            .iter()
            .filter(|i| Some(**i) != avoid)
            .min_by_key(|i| self.holders[**i].in_flight)
            .or_else(|| order.first())
            .copied()?;
        self.next_holder = (pick + 1) % n;
        Some(pick)
    }

    /// The error when no usable holder is left.
    fn exhausted(&self) -> FetchError {
        let count = |s| self.holders.iter().filter(|h| h.state == s).count();
        let (lacking, bad, failing) =
            (count(HolderState::Lacks), count(HolderState::Bad), count(HolderState::Failing));
        if lacking == self.holders.len() {
            FetchError::NotFound(lacking)
        } else {
            FetchError::HoldersExhausted { lacking, bad, failing }
        }
    }

    fn report_progress(&self) {
        if let Some(p) = &self.progress {
            p.send_replace(FetchProgress { verified_bytes: self.verified, total_bytes: self.size });
        }
    }
}

#[derive(Debug)]
enum ChunkError {
    Slice(SliceError),
    Store(StoreError),
}

/// Verifies a slice for chunk `chunk` and writes its content; returns the bytes written.
fn verify_and_write(
    partial: &mut Partial,
    digest: &Digest,
    chunk: u32,
    slice_bytes: &[u8],
) -> Result<u64, ChunkError> {
    let (offset, len) = partial.chunk_range(chunk);
    let content = slice::verify(digest, offset, len, slice_bytes).map_err(ChunkError::Slice)?;
    partial.write_chunk(chunk, &content).map_err(ChunkError::Store)?;
    Ok(u64::from(len))
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io { what: "blob store task", source: std::io::Error::other(e) })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
