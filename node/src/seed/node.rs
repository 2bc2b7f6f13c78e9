//! The actor's side of seeding: building the parts at start ([`SeedParts::build`]), routing
//! blob requests between the fetcher and the swarm, answering peers' requests from the store,
//! and telling the runner who holds a blob.
//!
//! Who holds a blob comes from the engine's view: the producer of the source item and the
//! holders of the other replicas' duties that reported ready. The actor writes that list into
//! a shared map just before it starts a duty ([`SeedParts::note_holders`]); the runner's lookup
//! reads it, so the runner never touches the engine. [`SeedParts`] owns seeding's state; the
//! actor hands it the swarm or the engine per call and routes the blob protocol's events to it
//! (and to the torrent part, which asks its questions over the same protocol).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::request_response::{OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use starling_protocol::{Digest, Engine, ItemState, ProjectId, WorkItem};
use tokio::sync::{mpsc, oneshot};

use super::fetch::{FetchConfig, Fetcher, SourceError};
use super::runner::{BlobCommand, HolderLookup, HolderQuery, SeedRunner, SwarmSource};
use super::serve::{BlobServer, SERVING_MAX};
use super::store::BlobStore;
use super::wire::{BlobRequest, BlobResponse};
use super::{SeedingCounters, SeedingStats};
use crate::net::Behaviour;
use crate::runner::{RunnerCounters, WorkReport};
use crate::views::NetStats;

/// Answers computed off the actor, waiting to be sent.
pub const SERVED_CAP: usize = 64;
/// Blob requests in flight from this node at once (the fetcher bounds itself lower).
pub const BLOB_INFLIGHT_MAX: usize = 1_024;
/// Application score given to a peer that served a corrupt chunk (weighted by gossipsub's
/// `app_specific_weight`, this puts it far below the graylist threshold).
pub const PENALTY_SCORE: f64 = -1_000.0;
/// Blobs whose holder lists are remembered for running duties.
pub const HOLDER_LISTS_MAX: usize = 4_096;

type Holders = Arc<Mutex<HashMap<Digest, Vec<PeerId>>>>;
type Reply = oneshot::Sender<Result<BlobResponse, SourceError>>;

/// The operator's bandwidth caps for seeding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedCaps {
    /// Fetching copies from peers, bytes per second.
    pub download_bytes_per_s: Option<std::num::NonZeroU32>,
    /// Serving copies to peers, bytes per second.
    pub upload_bytes_per_s: Option<std::num::NonZeroU32>,
}

/// Everything seeding needs at run time.
#[derive(Debug)]
pub struct SeedParts {
    /// The blob store (the results dir).
    pub store: Arc<BlobStore>,
    /// Counters for the dashboard.
    pub counters: Arc<SeedingCounters>,
    /// The fetcher, shared with the runner (and export).
    pub fetcher: Arc<Fetcher<SwarmSource>>,
    server: BlobServer,
    holders: Holders,
    pending: HashMap<OutboundRequestId, Reply>,
    served_tx: mpsc::Sender<(ResponseChannel<BlobResponse>, BlobResponse)>,
    /// Requests from the fetcher; the actor's loop takes it.
    pub commands: Option<mpsc::Receiver<BlobCommand>>,
    /// Answers ready to send; the actor's loop takes it.
    pub served: Option<mpsc::Receiver<(ResponseChannel<BlobResponse>, BlobResponse)>>,
}

impl SeedParts {
    /// Opens the store in `results_dir` and builds the runner (returned, to register).
    pub fn build(
        results_dir: std::path::PathBuf,
        disk_bytes_max: Option<u64>,
        caps: SeedCaps,
        reports: mpsc::Sender<WorkReport>,
        runner_counters: Arc<RunnerCounters>,
    ) -> anyhow::Result<(Self, SeedRunner<SwarmSource>)> {
        let store = Arc::new(
            BlobStore::open(results_dir, disk_bytes_max)
                .map_err(|e| anyhow::anyhow!("cannot open the blob store: {e}"))?,
        );
        let counters = Arc::new(SeedingCounters::default());
        let (source, commands) = SwarmSource::channel();
        let download = Arc::new(crate::budget::ByteRate::new(caps.download_bytes_per_s));
        let upload = Arc::new(crate::budget::ByteRate::new(caps.upload_bytes_per_s));
        let config = FetchConfig { download, ..FetchConfig::default() };
        let fetcher =
            Arc::new(Fetcher::new(Arc::new(source), store.clone(), config, counters.clone()));
        let holders: Holders = Arc::default();
        let lookup_holders = holders.clone();
        let lookup: HolderLookup<PeerId> = Arc::new(move |q: &HolderQuery| {
            let map = lookup_holders.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&q.digest).cloned().unwrap_or_default()
        });
        let runner = SeedRunner::new(fetcher.clone(), lookup, reports, runner_counters);
        let server =
            BlobServer::new(store.clone(), SERVING_MAX, counters.clone()).with_upload_cap(upload);
        let (served_tx, served) = mpsc::channel(SERVED_CAP);
        let parts = Self {
            store,
            counters,
            fetcher,
            server,
            holders,
            pending: HashMap::new(),
            served_tx,
            commands: Some(commands),
            served: Some(served),
        };
        Ok((parts, runner))
    }

    /// The counters now.
    pub fn stats(&self) -> SeedingStats {
        self.counters.snapshot()
    }
}

/// Debug builds only, for the lying-peer test: `STARLING_TEST_CORRUPT_BLOBS=1` makes this node
/// flip a byte of every chunk it serves.
fn serves_corrupt_chunks() -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var_os("STARLING_TEST_CORRUPT_BLOBS").is_some_and(|v| v == "1")
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// A done crawl item of a project being exported, and where its result can be had.
#[derive(Debug, Clone)]
pub struct ExportPlanItem {
    /// The item.
    pub item: starling_protocol::ItemId,
    /// Its kept result (see [`crate::checks::kept`]).
    pub digest: Digest,
    /// The result's size.
    pub size: u64,
    /// Whether this node stores it already.
    pub local: bool,
    /// Who else holds it, best first.
    pub holders: Vec<PeerId>,
}

/// The kept results of `project`'s done crawl chunks, for `starling export` (a result a
/// spot-check overturned is never listed: the check's is, in its place); an error when the
/// project is unknown or this node keeps no blob store (`seed` is `None`).
pub fn export_plan(
    engine: &Engine,
    seed: Option<&SeedParts>,
    project: &ProjectId,
) -> Result<Vec<ExportPlanItem>, String> {
    if !engine.projects().any(|(id, _)| id == *project) {
        return Err(format!("no project {} is known here", project.to_hex()));
    }
    let Some(seed) = seed else { return Err("this node keeps no blob store".into()) };
    let plan = engine
        .items()
        .filter(|(_, p, _)| p == project)
        .filter_map(|(item, _, _)| {
            let k = crate::checks::kept(engine, &item)?;
            Some(ExportPlanItem {
                item,
                digest: k.digest,
                size: k.size,
                local: seed.store.has(&k.digest),
                holders: blob_holders(engine, project, &k.receipt_item, &k.digest, k.size),
            })
        })
        .collect();
    Ok(plan)
}

/// The peers believed to hold `digest`, result of item `source` in `project` (a chunk, or
/// the check whose result is kept in its place): the producer first, then ready holders of
/// the replicas' duties. Never this node.
pub fn blob_holders(
    engine: &Engine,
    project: &ProjectId,
    source: &starling_protocol::ItemId,
    digest: &Digest,
    size: u64,
) -> Vec<PeerId> {
    let me = engine.node_id();
    let mut out = Vec::new();
    let mut push = |node: starling_protocol::NodeId| {
        if node != me
            && let Some(p) = crate::net::peer_id_of(&node)
            && !out.contains(&p)
        {
            out.push(p);
        }
    };
    if let Some(ItemState::Done { holder, result, .. }) = engine.item_state(source)
        && result == *digest
    {
        push(holder);
    }
    let k = engine.projects().find(|(id, _)| id == project).map_or(0, |(_, m)| m.replication);
    for replica in 0..k {
        let duty = WorkItem::SeedDuty { source: *source, result: *digest, size, replica };
        if let Some(ItemState::Held { holder, ready: true, .. }) =
            engine.item_state(&duty.id(project))
        {
            push(holder);
        }
    }
    out
}

impl SeedParts {
    /// Records who holds a duty's blob, for the runner's lookup, before the duty starts.
    pub fn note_holders(&self, engine: &Engine, project: &ProjectId, work: &WorkItem) {
        let WorkItem::SeedDuty { source, result, size, .. } = work else { return };
        let holders = blob_holders(engine, project, source, result, *size);
        let mut map = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= HOLDER_LISTS_MAX && !map.contains_key(result) {
            map.clear();
        }
        map.insert(*result, holders);
    }

    /// A request from the fetcher: send it, or penalise a peer that sent bad bytes.
    pub fn on_command(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        stats: &mut NetStats,
        cmd: BlobCommand,
    ) {
        match cmd {
            BlobCommand::Get { peer, request, reply } => {
                if self.pending.len() >= BLOB_INFLIGHT_MAX {
                    let _ = reply.send(Err(SourceError::Failed("too many blob requests".into())));
                    return;
                }
                let id = swarm.behaviour_mut().blob.send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            BlobCommand::Penalise { peer, reason } => {
                tracing::warn!(%peer, reason, "peer served a corrupt blob chunk; disconnecting it");
                stats.blob_penalties += 1;
                // The peer provably sent bytes that do not hash to the digest: its gossip score
                // drops below the graylist threshold and the connection is cut.
                swarm.behaviour_mut().gossipsub.set_application_score(&peer, PENALTY_SCORE);
                let _ = swarm.disconnect_peer_id(peer);
            }
        }
    }

    /// A peer's answer to one of the fetcher's requests.
    pub fn on_response(&mut self, id: OutboundRequestId, response: BlobResponse) {
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(Ok(response));
        }
    }

    /// One of the fetcher's requests failed.
    pub fn on_failure(&mut self, id: OutboundRequestId, error: &OutboundFailure) {
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(Err(SourceError::from_outbound(error)));
        }
    }

    /// A peer asks for (part of) a blob: refused at once when the server is busy, else
    /// answered off the actor (the answer comes back through [`SeedParts::served`]).
    pub fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        request: BlobRequest,
        channel: ResponseChannel<BlobResponse>,
    ) {
        match self.server.admit(request) {
            Err(busy) => {
                let _ = swarm.behaviour_mut().blob.send_response(channel, busy);
            }
            Ok(answer) => {
                let tx = self.served_tx.clone();
                let corrupt = serves_corrupt_chunks();
                tokio::spawn(async move {
                    let mut response = answer.await;
                    if corrupt
                        && let BlobResponse::Slice { bytes, .. } = &mut response
                        && let Some(b) = bytes.last_mut()
                    {
                        *b ^= 0xff;
                    }
                    let _ = tx.send((channel, response)).await;
                });
            }
        }
    }
}
