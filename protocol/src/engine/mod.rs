//! The claim engine: a sans-IO state machine that decides, identically on every node, who owns
//! each work item.
//!
//! # Call contract
//!
//! The engine never reads a clock, never draws OS randomness and never does I/O. A driver (the
//! node's libp2p actor, or the simulator) owns it and:
//!
//! 1. builds it with [`Engine::new`] (or [`Engine::restore`] from persisted records), giving it
//!    the node key, a configuration and an RNG seed;
//! 2. feeds every event in with [`Engine::handle`]`(input, now)`, where `now` is the driver's
//!    clock in milliseconds and never goes backwards between calls. For a
//!    [`Input::Message`], the result says whether the message was applied or why it was
//!    rejected ([`Reject::penalize`] says whether to lower the sender's peer score);
//! 3. after each `handle`, drains [`Engine::poll_output`] until it returns `None` and carries
//!    out each [`Output`] in order (publish, start or cancel work, persist);
//! 4. calls `handle(Input::Tick, now)` no later than [`Engine::next_wakeup`].
//!
//! Getters (`item_state`, `peers`, `stats`, `is_subscribed`, `priority`, `following`, …) never
//! change state.
//! [`Engine::snapshot`] returns the records needed to rebuild the engine after a restart.
//!
//! Which projects are taken in at all is the operator's trust ([`Input::Trust`]) and the
//! curators the operator follows ([`Input::Follow`]; their signed directories vouch for the
//! projects they list, see `curators.rs`); both are in the snapshot.
//!
//! Local choices ([`Input::Pause`], [`Input::SetCapacity`], [`Input::SetRoles`], [`Input::Subscribe`],
//! [`Input::SetPriority`]) change which items this node tries and in what order, never the
//! claim rule below. Subscriptions and priorities are not in the snapshot: the driver keeps the
//! operator's settings and feeds them in again after a restart.
//!
//! # The claim rule
//!
//! Claims on one item are totally ordered by `(epoch, earlier since_ms bucket, hrw score, node
//! id)` (see [`claim_order`]): a higher epoch wins, then the claim whose `since_ms` falls in an
//! earlier bucket of [`CLAIM_BUCKET_MS`] (so a late claim cannot take an item already held at
//! that epoch), then the higher HRW score, then the higher node id. Every node keeps the
//! greatest valid claim it has seen, so any delivery order of the same claims leaves every
//! node with the same holder. A claim at a higher epoch is valid only once the lease of the
//! current epoch has run out (within `skew_margin_ms`), after a release, or after a failure;
//! one that comes before is refused as early (a receipt under it is held back and judged again
//! when the lease runs out here). Receipts and failures embed the holder's claim, so only the
//! holder of an epoch can end it, and a result counts only under the claim that held its
//! epoch, judged from signed evidence about earlier epochs (`fence.rs`).
//!
//! The rule lives in two pure functions in `judge.rs`: `judge` says what an incoming claim
//! does to an item (a `Verdict`), `judge_result` what an incoming result does (a
//! `ResultVerdict`). `apply.rs` only carries verdicts out: it moves the item, persists,
//! schedules and starts or cancels work.

mod apply;
mod clock;
mod curators;
mod early;
mod fails;
mod fence;
#[cfg(any(test, debug_assertions))]
mod invariants;
mod judge;
mod lanes;
mod peers;
mod progress;
mod proofs;
mod sessions;
mod sync;
mod types;
mod verify;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::hrw;
use crate::ids::{Digest, ItemId, NodeId, ProjectId};
use crate::item::{ItemBatch, WorkItem, WorkKind};
use crate::keys::{Keypair, PublicKey};
use crate::manifest::ProjectManifest;
use crate::message::{Claim, Envelope, Failure, Presence, Receipt, Release, Roles, SYNC_BUCKETS};

use crate::shard::{self, Shard};
use crate::signed::Signed;
use clock::ClockTracker;
use early::EarlyReceipts;
use peers::{PeerTable, RankMemo};

pub use fence::claim_order;
pub use lanes::{
    LANE_COOLDOWN_MAX_MS, LANE_DRAIN_MS, LANE_DRAIN_SLACK_MS, LANE_LEASE_MS, LANES_HELD_MAX,
    LaneView, chunk_finishing, drain_for, drain_quota, finishing_quota, lane_wanted,
};
pub use progress::{
    PROGRESS_INTERVAL_MS, PROGRESS_SHARDS_PER_INTERVAL, PROGRESS_STALE_INTERVALS, ProjectProgress,
    progress_interval_ms,
};
pub use sessions::{
    SYNC_ROUNDS_MAX, SYNC_SESSIONS_MAX, SYNC_TIMEOUT_MS, SYNC_TRIES_MAX, SyncRequest, SyncSessions,
};
pub use verify::{Comparison, MARKED_MAX, Quorum, VerifyCounts, compare, sampled};

/// Most peers whose clocks are kept to judge this node's own.
pub const CLOCK_PEERS_MAX: usize = 64;
/// Fewest peers heard before this node's clock is judged.
pub const CLOCK_QUORUM: usize = 3;
/// Longest a first verdict on this node's clock is waited for, in heartbeat intervals, once
/// [`CLOCK_QUORUM`] peers were heard: each peer is heard twice well within it.
pub const CLOCK_WAIT_BEATS: u64 = 3;
pub use types::{
    CancelReason, ClockView, ConfigError, EngineConfig, EngineStats, Input, ItemState, Output,
    Reject, Route, WorkResult,
};

/// Most epochs a claim may jump ahead of the last one known.
pub const EPOCH_JUMP_MAX: u32 = 16;
/// Same-epoch claims whose `since_ms` fall in one bucket of this many milliseconds are settled
/// by HRW score; an earlier bucket wins outright. A protocol constant: every node must agree.
pub const CLAIM_BUCKET_MS: u64 = 1_000;
/// Clock skew tolerated when fencing one result against another. A protocol constant.
pub const FENCE_SKEW_MS: u64 = 1_000;
/// A result whose claim a node first hears of with the result itself is judged no sooner
/// than this long after the claim began, so rival claims of its epoch have time to arrive.
/// A protocol constant: a claim bucket plus the skew margin for fencing.
pub const RESULT_SETTLE_MS: u64 = CLAIM_BUCKET_MS + FENCE_SKEW_MS;
/// Most relay requests tracked.
pub const RELAY_REQUESTS_MAX: usize = 4_096;

/// The pseudo-project relay slots belong to.
pub fn relay_project() -> ProjectId {
    static RELAY: std::sync::OnceLock<ProjectId> = std::sync::OnceLock::new();
    *RELAY.get_or_init(|| {
        ProjectId(
            *blake3::Hasher::new_derive_key("starling/v1/relay-project").finalize().as_bytes(),
        )
    })
}

#[derive(Debug, Clone)]
struct ProjectEntry {
    manifest: Signed<ProjectManifest>,
    m: Arc<ProjectManifest>,
    batches: BTreeMap<(u64, [u8; 32]), Signed<ItemBatch>>,
    /// After a merge, until when items taken in bare from a batch (their states unheard of)
    /// wait before any claim: see `reshard`.
    bare_until: u64,
}

#[derive(Debug, Clone)]
enum Phase {
    Open {
        epoch: u32,
        proof: Option<Envelope>,
    },
    Held {
        holder: NodeId,
        epoch: u32,
        score: u64,
        since: u64,
        lease_until: u64,
        /// The holder's receipt saying ongoing work is ready (seeding, relaying): kept, and
        /// handed on with the claim in sync deltas and snapshots, so a node that missed it or
        /// restarted learns it too.
        ready: Option<Signed<Receipt>>,
        claim: Signed<Claim>,
        /// What ended the epoch before this one here (the lapsed claim, the release or the
        /// failure), handed on in sync deltas with the claim: a node that missed it can tell
        /// that this epoch is not early after all.
        prior: Option<Envelope>,
    },
    /// Everything about the result is read from the receipt, whose checked body is kept (and
    /// shared) with it: a finished item costs one pointer here.
    Done {
        receipt: Signed<Receipt>,
    },
    Failed {
        epoch: u32,
        proof: Envelope,
    },
}

#[derive(Debug, Clone)]
struct ItemEntry {
    project: ProjectId,
    work: WorkRef,
    phase: Phase,
    /// When the item last became claimable, for settle and rank widening.
    since: u64,
    /// The agenda entry for this item, if any.
    wake_at: Option<u64>,
    /// The failures given back for this item, from which its fate is read (see `fails.rs`).
    fails: fails::FailLog,
    /// What this node last learnt of its HRW rank for the item, carried forward through
    /// changes of the peer set while the attempt stays the same.
    rank: Option<RankMemo>,
    /// What the item adds to its sync digest bucket (see `sync.rs`), kept up to date with the
    /// phase so a digest needs no hashing.
    digest: [u8; 8],
    /// Evidence about earlier epochs, against which results are fenced (see `fence.rs`).
    past: fence::Past,
}

impl ItemEntry {
    /// Moves the item to `phase`. Returns what changed in the item's digest bucket, for
    /// [`Engine::fold_bucket`].
    #[must_use]
    fn set_phase(&mut self, id: &ItemId, phase: Phase) -> [u8; 8] {
        // What the item added before is read under its old phase: back to never claimed
        // (a withdrawn first-epoch result) it adds nothing, whatever its old digest.
        let before = self.in_bucket();
        self.phase = phase;
        let _ = self.refresh_digest(id);
        xor8(before, self.in_bucket())
    }

    /// Recomputes the digest contribution after the phase changed in place. Returns what
    /// changed in the item's digest bucket, for [`Engine::fold_bucket`].
    #[must_use]
    fn refresh_digest(&mut self, id: &ItemId) -> [u8; 8] {
        let before = self.in_bucket();
        self.digest = sync::state_digest(id, self);
        xor8(before, self.in_bucket())
    }

    /// What the item adds to its project's digest bucket: nothing while it was never claimed
    /// (batches cover those), its state digest after.
    fn in_bucket(&self) -> [u8; 8] {
        match self.phase {
            Phase::Open { epoch: 0, .. } => [0; 8],
            _ => self.digest,
        }
    }
}

fn xor8(a: [u8; 8], b: [u8; 8]) -> [u8; 8] {
    (u64::from_ne_bytes(a) ^ u64::from_ne_bytes(b)).to_ne_bytes()
}

/// An item's work: a place in the (shared, decoded) batch it came in, or its own copy for
/// items the engine derives (seed duties, relay slots).
#[derive(Debug, Clone)]
enum WorkRef {
    InBatch(Arc<ItemBatch>, u32),
    Own(Arc<WorkItem>),
}

impl std::ops::Deref for WorkRef {
    type Target = WorkItem;

    fn deref(&self) -> &WorkItem {
        match self {
            WorkRef::InBatch(b, i) => &b.items[*i as usize],
            WorkRef::Own(w) => w,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Local {
    epoch: u32,
    since: u64,
    kind: WorkKind,
    start_at: u64,
    started: bool,
    renew_at: u64,
}

/// A live peer as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerView {
    /// The peer.
    pub node: NodeId,
    /// Its presence runs out here (this node's clock).
    pub expires_at_ms: u64,
    /// Its roles.
    pub roles: Roles,
    /// Its free work slots at its last heartbeat.
    pub free: u16,
    /// Its work slots in all.
    pub capacity: u16,
}

/// This node's shard of one split project and how many live nodes it counts in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardView {
    /// The split project.
    pub project: ProjectId,
    /// This node's shard of it (at the manifest's depth).
    pub shard: Shard,
    /// Live nodes of the project in the shard, this node included: the nodes its items are
    /// ranked among.
    pub members: usize,
}

/// Work this node holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalView {
    /// The item.
    pub item: ItemId,
    /// Its project.
    pub project: ProjectId,
    /// Its kind.
    pub kind: WorkKind,
    /// The epoch held.
    pub epoch: u32,
    /// Lease end.
    pub lease_until_ms: u64,
    /// Whether the work has started (it waits `claim_settle_ms` first).
    pub started: bool,
    /// When this node's claim of the epoch began (its renewals keep it).
    #[serde(default)]
    pub since_ms: u64,
}

/// Counts of items by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemCounts {
    /// Unclaimed.
    pub open: u64,
    /// Held under a lease.
    pub held: u64,
    /// Finished.
    pub done: u64,
    /// Given up.
    pub failed: u64,
}

/// Records to rebuild an engine after a restart; see [`Engine::restore`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Trusted project keys.
    pub trusted: Vec<PublicKey>,
    /// Followed curator keys (their directories are among the records).
    #[serde(default)]
    pub following: Vec<PublicKey>,
    /// Every applied envelope that still matters: directories, manifests, batches, relay
    /// requests, and the proof of each item's current state.
    pub records: Vec<Envelope>,
    /// The last presence sequence number used.
    pub presence_seq: u64,
}

/// The claim engine for one node. See the module docs for the call contract.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    key: Keypair,
    me: NodeId,
    /// This node's [`shard::member_bits`], hashed once.
    my_bits: u16,
    rng: ChaCha8Rng,
    trusted: BTreeSet<PublicKey>,
    /// Followed curators and their directories.
    curators: curators::Curators,
    /// Shards' progress counts of split projects (see `progress.rs`).
    progress: progress::ProgressBook,
    projects: BTreeMap<ProjectId, ProjectEntry>,
    items: BTreeMap<ItemId, ItemEntry>,
    /// The live peers, indexed for ranking.
    peers: PeerTable,
    /// Each project's sync digest buckets, kept up to date as items change, so a digest costs
    /// no walk over the items (see `sync.rs`).
    /// A short list in project order, searched in place: it is touched on every change of an
    /// item, and a map's nodes and boxes cost cache misses there.
    buckets: Vec<(ProjectId, [[u8; 8]; SYNC_BUCKETS])>,
    relay_requests: BTreeMap<NodeId, Signed<crate::message::RelayRequest>>,
    local: BTreeMap<ItemId, Local>,
    agenda: BTreeSet<(u64, ItemId)>,
    /// Claimable items waiting for a free slot: (priority, higher first; rank; since; item).
    ready: [BTreeSet<ReadyKey>; 4],
    /// Host lanes: demand, cooldowns and the hosts each project has lanes for.
    lanes: lanes::Lanes,
    /// Lost spot-check quorums and the nodes marked for them (see `verify.rs`).
    strikes: verify::Strikes,
    /// Storage proofs for this node's own seeding duties, held or asked for (see
    /// `proofs.rs`); only for items in `local`.
    proofs: BTreeMap<ItemId, proofs::HeldProof>,
    /// Results whose copy this node gave a duty back for, unable to show it: it claims no
    /// duty of them again (at most `proofs::DISOWNED_MAX`; forgotten on restart, when the
    /// store may hold them again).
    disowned: BTreeSet<Digest>,
    /// Held crawl chunks the driver says wait on lanes held elsewhere (at most `capacity`).
    lane_blocked: u16,
    /// Projects this node takes no new items of (the default is subscribed).
    unsubscribed: BTreeSet<ProjectId>,
    /// Local priority per project, where not 0.
    priorities: BTreeMap<ProjectId, i8>,
    /// Messages waiting for their project or item to arrive.
    pending: VecDeque<Envelope>,
    /// Receipts held back until the lease their claim follows has run out (see
    /// `Engine::hold_back`).
    early: EarlyReceipts,
    outputs: VecDeque<Output>,
    paused: bool,
    shut_down: bool,
    /// Set by [`Input::LocalFault`]: no claiming, nothing held.
    unfit: bool,
    /// The offsets of each peer's clock against this one's, from its verified heartbeats.
    clock: ClockTracker,
    started_at: Option<u64>,
    presence_seq: u64,
    next_presence_at: u64,
    last_now: u64,
    stats: EngineStats,
}

impl Engine {
    /// A fresh engine for the node with `key`, trusting `trusted` project keys.
    pub fn new(
        cfg: EngineConfig,
        key: Keypair,
        trusted: impl IntoIterator<Item = PublicKey>,
        seed: u64,
    ) -> Self {
        let me = key.node_id();
        Self {
            cfg,
            key,
            me,
            my_bits: shard::member_bits(&me),
            rng: ChaCha8Rng::seed_from_u64(seed),
            trusted: trusted.into_iter().collect(),
            curators: curators::Curators::default(),
            progress: progress::ProgressBook::default(),
            projects: BTreeMap::new(),
            items: BTreeMap::new(),
            peers: PeerTable::default(),
            buckets: Vec::new(),
            relay_requests: BTreeMap::new(),
            local: BTreeMap::new(),
            agenda: BTreeSet::new(),
            ready: Default::default(),
            lanes: lanes::Lanes::default(),
            lane_blocked: 0,
            unsubscribed: BTreeSet::new(),
            priorities: BTreeMap::new(),
            pending: VecDeque::new(),
            strikes: verify::Strikes::default(),
            proofs: BTreeMap::new(),
            disowned: BTreeSet::new(),
            early: EarlyReceipts::default(),
            outputs: VecDeque::new(),
            paused: false,
            shut_down: false,
            unfit: false,
            clock: ClockTracker::default(),
            started_at: None,
            presence_seq: 0,
            next_presence_at: 0,
            last_now: 0,
            stats: EngineStats::default(),
        }
    }

    /// Rebuilds an engine from a [`Snapshot`] at time `now`. Leases this node held that are
    /// still running resume (their work restarts); leases that ran out while it was down do not.
    pub fn restore(
        cfg: EngineConfig,
        key: Keypair,
        snapshot: Snapshot,
        seed: u64,
        now: u64,
    ) -> Self {
        let mut engine = Self::new(cfg, key, snapshot.trusted, seed);
        engine.presence_seq = snapshot.presence_seq;
        engine.started_at = Some(now);
        for curator in snapshot.following {
            // Past the bound only if the bound shrank: the first ones are kept.
            let _ = engine.follow(curator);
        }
        for record in snapshot.records {
            // A record that no longer applies (an untrusted key was dropped, say) is skipped.
            let _ = engine.apply_envelope(record, now, false);
        }
        engine.outputs.retain(|o| !matches!(o, Output::Persist(_)));
        engine
    }

    // ---- getters -------------------------------------------------------------------------

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Whether claiming is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the driver reported a fault of the node's own ([`Input::LocalFault`]).
    pub fn is_unfit(&self) -> bool {
        self.unfit
    }

    /// This node's clock against its peers'.
    pub fn clock(&self) -> ClockView {
        self.clock.view()
    }

    /// Whether this node stays out of claiming: paused, shut down, unfit or off the clock.
    fn halted(&self) -> bool {
        let clock = self.clock.view();
        self.paused || self.shut_down || self.unfit || clock.off || self.clock.pending()
    }

    /// Whether this node holds no lanes either: shut down, unfit or off the clock (a pause
    /// stops new work, not the lanes held work needs).
    fn lanes_halted(&self) -> bool {
        let clock = self.clock.view();
        self.shut_down || self.unfit || clock.off || self.clock.pending()
    }

    /// Whether this node takes new items of `project` (true unless unsubscribed).
    pub fn is_subscribed(&self, project: &ProjectId) -> bool {
        !self.unsubscribed.contains(project)
    }

    /// This node's local priority for `project`: the operator's, else the highest a followed
    /// curator lists, else 0.
    pub fn priority(&self, project: &ProjectId) -> i8 {
        self.priorities
            .get(project)
            .or_else(|| self.curators.priorities.get(project))
            .copied()
            .unwrap_or(0)
    }

    /// Trusted project keys.
    pub fn trusted(&self) -> impl Iterator<Item = &PublicKey> {
        self.trusted.iter()
    }

    /// One item's state, if known.
    pub fn item_state(&self, item: &ItemId) -> Option<ItemState> {
        self.items.get(item).map(|e| e.phase.view())
    }

    /// One item's work and project, if known.
    pub fn item_work(&self, item: &ItemId) -> Option<(ProjectId, &WorkItem)> {
        self.items.get(item).map(|e| (e.project, &*e.work))
    }

    /// Every item with its project and state, in id order.
    pub fn items(&self) -> impl Iterator<Item = (ItemId, ProjectId, ItemState)> + '_ {
        self.items.iter().map(|(id, e)| (*id, e.project, e.phase.view()))
    }

    /// Number of items known.
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// Counts of items by state, optionally for one project.
    pub fn counts(&self, project: Option<ProjectId>) -> ItemCounts {
        let mut c = ItemCounts::default();
        // Lanes are the mesh's hold on a host, not work: they are counted apart (`lanes_of`);
        // spot-checks are counted by how their results stand (`verify_counts`).
        let work = self.items.values().filter(|e| !Self::is_lane(e) && !Self::is_check(e));
        for e in work.filter(|e| project.is_none_or(|p| e.project == p)) {
            match e.phase {
                Phase::Open { .. } => c.open += 1,
                Phase::Held { .. } => c.held += 1,
                Phase::Done { .. } => c.done += 1,
                Phase::Failed { .. } => c.failed += 1,
            }
        }
        c
    }

    /// Counts of `project`'s items by state, apart for each kind of work it has (crawl chunks
    /// end; seeding duties are held for as long as their holder keeps the copy), so progress
    /// can be read from the kind that finishes.
    pub fn counts_by_kind(&self, project: &ProjectId) -> BTreeMap<WorkKind, ItemCounts> {
        let mut out: BTreeMap<WorkKind, ItemCounts> = BTreeMap::new();
        for e in self.items.values().filter(|e| e.project == *project && !Self::is_check(e)) {
            let c = out.entry(e.work.kind()).or_default();
            match e.phase {
                Phase::Open { .. } => c.open += 1,
                Phase::Held { .. } => c.held += 1,
                Phase::Done { .. } => c.done += 1,
                Phase::Failed { .. } => c.failed += 1,
            }
        }
        out
    }

    /// Known projects with their current manifests.
    pub fn projects(&self) -> impl Iterator<Item = (ProjectId, &ProjectManifest)> + '_ {
        self.projects.iter().map(|(id, p)| (*id, &*p.m))
    }

    /// Live peers.
    pub fn peers(&self) -> impl Iterator<Item = PeerView> + '_ {
        self.peers.iter().map(|(n, p)| PeerView {
            node: *n,
            expires_at_ms: p.expires_at,
            roles: p.roles,
            free: p.free,
            capacity: p.capacity,
        })
    }

    /// Work this node holds.
    pub fn local_work(&self) -> impl Iterator<Item = LocalView> + '_ {
        self.local.iter().filter_map(|(id, l)| {
            let e = self.items.get(id)?;
            let lease_until_ms = match e.phase {
                Phase::Held { lease_until, .. } => lease_until,
                _ => 0,
            };
            Some(LocalView {
                item: *id,
                project: e.project,
                kind: l.kind,
                epoch: l.epoch,
                lease_until_ms,
                started: l.started,
                since_ms: l.since,
            })
        })
    }

    /// Whether this node holds the item under a live claim and is (or will be) working on it.
    pub fn holds(&self, item: &ItemId) -> bool {
        self.local.contains_key(item)
    }

    /// The relay slot item of `requester`'s newest relay request, if one is known.
    pub fn relay_slot_of(&self, requester: &NodeId) -> Option<ItemId> {
        let seq = self.relay_requests.get(requester)?.verify().ok()?.seq;
        Some(WorkItem::RelaySlot { requester: *requester, seq }.id(&relay_project()))
    }

    /// Earliest time at which [`Input::Tick`] has work to do.
    pub fn next_wakeup(&self) -> Option<u64> {
        if self.shut_down {
            return None;
        }
        let mut next = Some(self.next_presence_at);
        let mut consider = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        if let Some((t, _)) = self.agenda.first() {
            consider(*t);
        }
        if let Some(t) = self.peers.next_expiry() {
            consider(t);
        }
        if let Some(t) = self.early.next_due() {
            consider(t);
        }
        if let Some(w) = self.warmup_end()
            && w > self.last_now
        {
            consider(w);
        }
        next
    }

    /// The next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Parts of `project`'s finished items by outcome class, `[ok, refused, disallowed,
    /// transient]`, read from their receipts (for a crawl chunk, its URLs). A pass over the
    /// project's items: for a status view, not for every message.
    pub fn part_counts(&self, project: &ProjectId) -> [u64; 4] {
        let mut out = [0u64; 4];
        for (id, e) in self.items.iter().filter(|(_, e)| e.project == *project) {
            if !matches!(&*e.work, WorkItem::CrawlChunk { .. }) {
                continue;
            }
            // The kept result's parts: a check's own, when it overturned the producer's.
            let Some(receipt) = self.kept_receipt(id) else { continue };
            let Some((r, _)) = apply::receipt_parts(receipt) else { continue };
            for part in &r.parts {
                let class = part.failure.as_ref().map_or(0, |f| f.class as usize);
                out[class.min(3)] += 1;
            }
        }
        out
    }

    /// What a driver's store holds when it is up to date: directories, manifests, batches,
    /// relay requests, each item's proof and its failures (not the evidence about earlier
    /// epochs, which [`Engine::snapshot`] adds). For rewriting a store that missed writes.
    pub fn stored_records(&self) -> Vec<Envelope> {
        let mut records = self.directory_records();
        for p in self.projects.values() {
            records.push(Envelope::Manifest(p.manifest.clone()));
            records.extend(p.batches.values().cloned().map(Envelope::Batch));
        }
        records.extend(self.relay_requests.values().cloned().map(Envelope::RelayRequest));
        for e in self.items.values() {
            records.extend(e.phase.proof());
            records.extend(e.phase.ready_receipt());
            records.extend(e.fails.envelopes());
        }
        records
    }

    /// The directories held, as records.
    fn directory_records(&self) -> Vec<Envelope> {
        self.curators.held().map(|h| Envelope::Directory(h.signed.clone())).collect()
    }

    /// The records needed to rebuild this engine with [`Engine::restore`].
    pub fn snapshot(&self) -> Snapshot {
        // Directories first: the manifests they vouch for follow.
        let mut records = self.directory_records();
        for p in self.projects.values() {
            records.push(Envelope::Manifest(p.manifest.clone()));
            records.extend(p.batches.values().cloned().map(Envelope::Batch));
        }
        records.extend(self.relay_requests.values().cloned().map(Envelope::RelayRequest));
        for e in self.items.values() {
            records.extend(e.phase.proof());
            records.extend(e.phase.ready_receipt());
            // After the proof, where they are evidence about earlier epochs.
            records.extend(e.past.envelopes().iter().cloned());
            // And every failure kept, which decide whether the item failed for the mesh.
            records.extend(e.fails.envelopes());
        }
        Snapshot {
            trusted: self.trusted.iter().copied().collect(),
            following: self.curators.followed.keys().copied().collect(),
            records,
            presence_seq: self.presence_seq,
        }
    }

    // ---- inputs --------------------------------------------------------------------------

    /// Feeds one input at time `now`. For messages, says whether it was applied.
    pub fn handle(&mut self, input: Input, now: u64) -> Result<(), Reject> {
        let now = now.max(self.last_now);
        self.last_now = now;
        if self.started_at.is_none() {
            self.started_at = Some(now);
            self.next_presence_at = now;
        }
        let is_message = matches!(input, Input::Message(_) | Input::Publish(_));
        let result = match input {
            Input::Message(env) => {
                let held = self.local.len();
                let result = self.take_in(env, now);
                // A slot given up to a rival's claim or result is filled now, not at whatever
                // tick comes next: items waiting for a slot have no timer of their own.
                if self.local.len() < held {
                    self.fill_capacity(now);
                }
                result
            }
            Input::Publish(env) => self.apply_envelope(env, now, true),
            Input::Tick => {
                self.tick(now);
                Ok(())
            }
            Input::WorkDone(done) => {
                self.work_done(done, now);
                Ok(())
            }
            Input::WorkFailed { item, epoch, reason, retryable } => {
                self.work_failed(item, epoch, reason, retryable, now);
                Ok(())
            }
            Input::Pause(p) => {
                self.paused = p;
                if !p {
                    self.rearm_open_items(None, now);
                }
                Ok(())
            }
            Input::SetCapacity(c) => {
                self.cfg.capacity = c;
                self.fill_capacity(now);
                Ok(())
            }
            Input::SetRoles(roles) => {
                let gained = roles.0 & !self.cfg.roles.0 != 0;
                self.cfg.roles = roles;
                self.next_presence_at = now;
                if gained {
                    self.rearm_open_items(None, now);
                }
                Ok(())
            }
            Input::Trust(key) => {
                self.trusted.insert(key);
                Ok(())
            }
            Input::Follow(key) => self.follow(key),
            Input::Subscribe { project, subscribed } => self.subscribe(project, subscribed, now),
            Input::SetPriority { project, priority } => self.set_priority(project, priority),
            Input::LocalFault(fault) => {
                let was = self.halted();
                self.unfit = fault;
                self.halt_changed(was, now);
                Ok(())
            }
            Input::Shutdown => {
                self.shutdown(now);
                Ok(())
            }
            Input::WantLane { project, host, wanted, drain_ms } => {
                let r = self.want_lane(project, host, wanted, drain_ms, now);
                self.fill_capacity(now);
                r
            }
            Input::HostRefused { project, host, until_ms } => {
                self.host_refused(project, host, until_ms, now);
                Ok(())
            }
            Input::StorageProof { item, epoch, slot, proof } => {
                self.take_storage_proof(item, epoch, slot, proof, now);
                Ok(())
            }
            Input::LaneBlocked { blocked, finishing } => {
                let was = self.lane_blocked;
                let cap = self.cfg.capacity;
                self.lane_blocked = blocked.min(cap).saturating_add(finishing.min(cap));
                if self.lane_blocked > was {
                    self.fill_capacity(now);
                    // Peers count this node's free slots in their rankings.
                    self.next_presence_at = self.next_presence_at.min(now);
                }
                Ok(())
            }
        };
        self.drop_stale_provisional(now);
        match result {
            // A local choice refused for lack of room is no message rejected.
            Err(Reject::Full) if !is_message => self.stats.full += 1,
            Err(r) => *self.stats.rejected.entry(r).or_default() += 1,
            Ok(()) => {}
        }
        #[cfg(debug_assertions)]
        self.check_invariants();
        result
    }

    // ---- time ----------------------------------------------------------------------------

    fn warmup_end(&self) -> Option<u64> {
        self.started_at.map(|s| s.saturating_add(self.cfg.warmup_ms))
    }

    fn tick(&mut self, now: u64) {
        if self.shut_down {
            return;
        }
        self.peers.expire(now);
        if now >= self.next_presence_at {
            self.send_presence(now);
        }
        self.tend_progress(now);
        while let Some(env) = self.early.pop_due(now) {
            // Judged afresh; held back again if a renewal came meanwhile.
            let _ = self.apply_envelope(env, now, false);
        }
        while let Some(&(t, item)) = self.agenda.first() {
            if t > now {
                break;
            }
            self.agenda.pop_first();
            if let Some(e) = self.items.get_mut(&item) {
                e.wake_at = None;
            }
            self.on_item_timer(item, now);
        }
        self.fill_capacity(now);
    }

    /// Takes in the clock of a peer's verified heartbeat (see [`ClockTracker::note`]),
    /// judging it at once until it was first judged.
    fn note_clock(&mut self, peer: NodeId, seq: u64, at_ms: u64, now: u64) {
        if self.clock.note(peer, seq, at_ms, now) {
            self.judge_clock(now);
        }
    }

    /// Works out this node's clock offset from the peers heard within a heartbeat's life
    /// (see [`ClockTracker::judge`]), and stops (or resumes) claiming when it crosses the
    /// skew margin.
    fn judge_clock(&mut self, now: u64) {
        // Whether the node was halted is read before the stale samples go: a first verdict
        // pending on peers that then went quiet (a shard's members are all that a node of a
        // split project hears) held items back, and ends here, so they are looked at again.
        let was = self.halted();
        self.clock.forget_before(now.saturating_sub(self.cfg.presence_ttl_ms));
        let wait = self.cfg.presence_interval_ms.saturating_mul(CLOCK_WAIT_BEATS);
        self.clock.judge(self.cfg.skew_margin_ms, wait, now);
        self.halt_changed(was, now);
    }

    /// After a change of `unfit` or the clock's verdict: gives back every held item on the way
    /// into a halt, and looks at open items again on the way out.
    fn halt_changed(&mut self, was: bool, now: u64) {
        let halted = self.halted();
        if (self.unfit || self.clock.view().off) && !self.shut_down && !self.local.is_empty() {
            let held: Vec<(ItemId, Local)> = self.local.iter().map(|(i, l)| (*i, *l)).collect();
            self.stats.gave_back += held.len() as u64;
            for (item, l) in held {
                self.give_back(item, l.epoch, now);
            }
        }
        if halted != was {
            // Peers learn at once whether this node has room.
            self.next_presence_at = now;
            if !halted {
                self.rearm_open_items(None, now);
            }
        }
    }

    fn send_presence(&mut self, now: u64) {
        self.judge_clock(now);
        let p = self.sign_presence(now);
        self.outputs.push_back(Output::Publish(p));
        // Up to 10% jitter keeps heartbeats of nodes started together from bunching up.
        let jitter = self.rng.random_range(0..=self.cfg.presence_interval_ms / 10);
        self.next_presence_at = now.saturating_add(self.cfg.presence_interval_ms) - jitter;
    }

    /// Another heartbeat like the one just sent, under the next sequence number: for a driver
    /// whose transport cannot send one message on two topics (gossipsub knows a message by its
    /// bytes, and takes a second publication of them for a duplicate) while this node's
    /// heartbeat must reach more than one group of peers (a shard and a whole project, say).
    /// A peer that hears both takes the newer and ignores the older as a duplicate.
    pub fn presence_copy(&mut self, now: u64) -> Envelope {
        self.sign_presence(now)
    }

    /// Signs a heartbeat for `now` under the next sequence number.
    fn sign_presence(&mut self, now: u64) -> Envelope {
        self.presence_seq = self.presence_seq.saturating_add(1).max(now);
        let capacity = self.cfg.capacity;
        let used = self.used(WorkKind::Crawl);
        let free = if self.halted() { 0 } else { capacity.saturating_sub(used) };
        let p = {
            let mut projects: Vec<ProjectId> =
                self.projects.keys().filter(|p| self.is_subscribed(p)).copied().collect();
            if projects.len() > crate::message::PRESENCE_PROJECTS_MAX {
                // Too many to list: an empty list stands for every project.
                projects.clear();
            } else if projects.is_empty() && !self.projects.is_empty() {
                // Subscribed to none of them. An empty list would read as "every project", so
                // list only the relay pseudo-project, which no item ranking counts.
                projects.push(relay_project());
            }
            Presence {
                seq: self.presence_seq,
                at_ms: now,
                capacity,
                free,
                roles: self.cfg.roles,
                projects,
            }
        };
        Envelope::Presence(Signed::sign(&self.key, &p))
    }

    fn schedule(&mut self, item: ItemId, at: u64) {
        let Some(e) = self.items.get(&item) else { return };
        // No rank may claim an item before it has settled, so a claimable item not worked
        // here is looked at first then: one wake-up instead of two.
        let at = match self.claimable_since(&item, e) {
            Some(since) if !self.local.contains_key(&item) && !Self::is_lane(e) => {
                at.max(since.max(self.warmup_end().unwrap_or(0)).saturating_add(self.cfg.settle_ms))
            }
            _ => at,
        };
        let Some(e) = self.items.get_mut(&item) else { return };
        if let Some(old) = e.wake_at {
            if old <= at {
                return;
            }
            self.agenda.remove(&(old, item));
        }
        e.wake_at = Some(at);
        self.agenda.insert((at, item));
    }

    fn unschedule(&mut self, item: ItemId) {
        if let Some(e) = self.items.get_mut(&item)
            && let Some(old) = e.wake_at.take()
        {
            self.agenda.remove(&(old, item));
        }
    }

    fn lease_ms(&self, project: &ProjectId) -> u64 {
        if *project == relay_project() {
            return self.cfg.relay_lease_ms;
        }
        self.projects.get(project).map_or(self.cfg.relay_lease_ms, |p| p.m.lease_ms)
    }

    fn capacity_for(&self, kind: WorkKind) -> u16 {
        match kind {
            WorkKind::Crawl => self.cfg.capacity,
            WorkKind::Seed => self.cfg.seed_capacity,
            WorkKind::Relay => self.cfg.relay_capacity,
            WorkKind::Lane => LANES_HELD_MAX,
        }
    }

    fn used(&self, kind: WorkKind) -> u16 {
        let n = self.local.values().filter(|l| l.kind == kind).count() as u16;
        match kind {
            // Chunks that wait for lanes held elsewhere leave their slots to other hosts' work.
            WorkKind::Crawl => n.saturating_sub(self.lane_blocked.min(n)),
            _ => n,
        }
    }

    /// This node's shard of `project` when the project is split (see `crate::shard`): the
    /// only one whose items it takes in, ranks and claims.
    pub fn shard_of(&self, project: &ProjectId) -> Option<Shard> {
        let depth = self.projects.get(project)?.m.shard_depth;
        (depth > 0).then(|| Shard::of_bits(self.my_bits, depth))
    }

    /// This node's shard of each split project it knows, for its driver to join their
    /// topics (and leave those of a depth the project no longer has).
    pub fn shards(&self) -> impl Iterator<Item = (ProjectId, Shard)> + '_ {
        self.projects.keys().filter_map(|p| Some((*p, self.shard_of(p)?)))
    }

    /// This node's shard of each split project it knows, with the live members it counts there.
    pub fn shard_views(&self) -> Vec<ShardView> {
        self.shards()
            .map(|(project, shard)| ShardView {
                project,
                shard,
                members: 1 + self.peers.members(&project, shard),
            })
            .collect()
    }

    /// The shard an item of `project` lies in, `None` when the project is whole or the item
    /// serves all of it (a host lane).
    fn item_shard(&self, project: &ProjectId, id: &ItemId, work: &WorkItem) -> Option<Shard> {
        let depth = self.projects.get(project)?.m.shard_depth;
        if depth == 0 {
            return None;
        }
        shard::shard_key(id, work).map(|key| Shard::of_key(&key, depth))
    }

    /// Whether this node keeps the item: every item of a whole project, and of a split one
    /// those of its own shard and those that are never sharded.
    fn keeps(&self, project: &ProjectId, id: &ItemId, work: &WorkItem) -> bool {
        self.item_shard(project, id, work).is_none_or(|s| Some(s) == self.shard_of(project))
    }

    /// Where a driver sends `env`, which this engine published (or took in to pass on):
    /// `None` for an item message about an item this node does not know.
    pub fn route(&self, env: &Envelope) -> Option<Route> {
        match env {
            Envelope::Presence(_) => Some(Route::Presence),
            Envelope::RelayRequest(_) | Envelope::Directory(_) => Some(Route::Everyone),
            Envelope::Progress(s) => s.verified_ref().ok().map(|p| Route::Project(p.project)),
            Envelope::Manifest(s) => s.verified_ref().ok().map(|m| Route::Project(m.id())),
            Envelope::Batch(s) => {
                let b = s.verified_ref().ok()?;
                let depth = self.projects.get(&b.project).map_or(0, |p| p.m.shard_depth);
                let mut shards = b.items.iter().map(|w| {
                    shard::shard_key(&w.id(&b.project), w).map(|k| Shard::of_key(&k, depth))
                });
                let first = shards.next().flatten();
                match first {
                    Some(s) if depth > 0 && shards.all(|x| x == Some(s)) => {
                        Some(Route::Shard(b.project, s))
                    }
                    _ => Some(Route::Project(b.project)),
                }
            }
            _ => {
                let item = env.item()?;
                let e = self.items.get(&item)?;
                Some(match self.item_shard(&e.project, &item, &e.work) {
                    Some(s) => Route::Shard(e.project, s),
                    None if e.project == relay_project() => Route::Everyone,
                    None => Route::Project(e.project),
                })
            }
        }
    }

    /// Whether this node may try to claim the item at all (role, pause, shutdown,
    /// subscription).
    fn wants(&self, project: &ProjectId, work: &WorkItem) -> bool {
        // A lane serves chunks held already: paused or unsubscribed, they still go on.
        if let WorkItem::HostLane { .. } = work {
            return !self.lanes_halted() && self.wants_lane(project, work);
        }
        if self.halted() || self.unsubscribed.contains(project) {
            return false;
        }
        if !self.cfg.roles.contains(Roles::for_work(work)) {
            return false;
        }
        // Marked for the project by what this node saw: every peer that saw it too refuses
        // this node's claims there.
        if self.is_marked(project, &self.me) {
            return false;
        }
        match work {
            WorkItem::RelaySlot { requester, .. } => *requester != self.me,
            WorkItem::Verify { exclude, .. } => !exclude.contains(&self.me),
            // A copy this node could not show (see `proofs.rs`) is left to others.
            WorkItem::SeedDuty { result, .. } if self.disowned.contains(result) => false,
            // k copies on k nodes: a node keeps at most one replica of a result.
            WorkItem::SeedDuty { source, result, size, replica } => {
                let k = self.projects.get(project).map_or(0, |p| p.m.replication);
                !(0..k).filter(|r| r != replica).any(|r| {
                    let other = WorkItem::SeedDuty {
                        source: *source,
                        result: *result,
                        size: *size,
                        replica: r,
                    };
                    self.local.contains_key(&other.id(project))
                })
            }
            _ => true,
        }
    }

    /// The item is claimable by anyone now: open, or held under a lease that ran out.
    fn claimable_since(&self, id: &ItemId, e: &ItemEntry) -> Option<u64> {
        match &e.phase {
            Phase::Open { .. } => Some(e.since),
            // Held by another, or by this node in a past life (restored after its lease lapsed).
            Phase::Held { lease_until, holder, .. }
                if *holder != self.me || !self.local.contains_key(id) =>
            {
                Some(lease_until.saturating_add(self.cfg.skew_margin_ms))
            }
            _ => None,
        }
    }

    /// This node's HRW rank for an item among the live peers that work on its project and
    /// have the role. Ranking within the project keeps the cost to that project's peers.
    #[cfg(test)]
    fn my_rank(&self, item: &ItemId, project: &ProjectId, kind: WorkKind) -> u32 {
        self.peers.rank_of(item, &self.me, project, Roles::for_kind(kind))
    }

    /// The rank kept for `item`, brought up to date and completed: (rank, whether the kept
    /// ranking could be carried forward rather than started afresh). `None` if none is kept.
    #[cfg(test)]
    fn cached_rank(&mut self, item: &ItemId) -> Option<(u32, bool)> {
        let e = self.items.get(item)?;
        let (memo, project, role) = (e.rank?, e.project, Roles::for_work(&e.work));
        let shard = self.item_shard(&project, item, &e.work);
        let key = hrw::attempt_key(item, memo.failures);
        let caught_up = self.catch_up(memo, &key, &project, role, shard);
        let carried = caught_up.is_some();
        let mut scan = caught_up.unwrap_or_else(|| hrw::RankScan::start(&key, &self.me));
        let others = self.rank_peers(&project, role, shard);
        let rank = scan.advance(&key, &self.me, &others, u32::MAX).ok()?;
        Some((rank, carried))
    }

    /// The peers [`Engine::my_rank`] counts for items of `project` that need `role`, within
    /// `shard` for an item of a split project.
    fn rank_peers(
        &mut self,
        project: &ProjectId,
        role: Roles,
        shard: Option<Shard>,
    ) -> Arc<[NodeId]> {
        self.peers.rank_list(project, role, shard)
    }

    /// Folds `change` (from [`ItemEntry::set_phase`] or [`ItemEntry::refresh_digest`]) into
    /// the digest bucket of `item` in `project`. Every change of an item's phase (and every
    /// item removed) comes through here, so it also keeps the hosts' held chunks
    /// ([`Engine::note_chunk_phase`]).
    fn fold_bucket(&mut self, project: ProjectId, item: &ItemId, change: [u8; 8]) {
        self.note_chunk_phase(item);
        if change == [0; 8] {
            return;
        }
        let at = match self.buckets.binary_search_by(|(p, _)| p.cmp(&project)) {
            Ok(at) => at,
            Err(at) => {
                self.buckets.insert(at, (project, [[0; 8]; SYNC_BUCKETS]));
                at
            }
        };
        let bucket =
            self.items.get(item).map_or(sync::bucket_of(item), |e| sync::bucket_of_entry(item, e));
        let b = &mut self.buckets[at].1[bucket];
        *b = xor8(*b, change);
    }

    /// The digest buckets kept for `project`.
    fn buckets_of(&self, project: &ProjectId) -> [[u8; 8]; SYNC_BUCKETS] {
        match self.buckets.binary_search_by(|(p, _)| p.cmp(project)) {
            Ok(at) => self.buckets[at].1,
            Err(_) => [[0; 8]; SYNC_BUCKETS],
        }
    }

    /// Brings a ranking cached at `memo.version` up to the current peer set; see
    /// [`PeerTable::catch_up`].
    fn catch_up(
        &self,
        memo: RankMemo,
        key: &ItemId,
        project: &ProjectId,
        role: Roles,
        shard: Option<Shard>,
    ) -> Option<hrw::RankScan> {
        self.peers.catch_up(memo, key, &self.me, project, role, shard)
    }

    fn on_item_timer(&mut self, item: ItemId, now: u64) {
        if let Some(l) = self.local.get(&item).copied() {
            self.on_local_timer(item, l, now);
            return;
        }
        let Some(e) = self.items.get(&item) else { return };
        if Self::is_lane(e) {
            self.lane_timer(item, now);
            return;
        }
        // Kept past a change of depth only while it was worked here: now that it is not, it
        // is the other shard's, which this node neither hears nor ranks in.
        if !self.keeps(&e.project, &item, &e.work) {
            self.forget_item(item);
            return;
        }
        if !self.wants(&e.project, &e.work) {
            return;
        }
        let Some(since) = self.claimable_since(&item, e) else { return };
        let kind = e.work.kind();
        let role = Roles::for_work(&e.work);
        let project = e.project;
        let shard = self.item_shard(&project, &item, &e.work);
        // Each earlier epoch that ended without a result was a top-ranked node's turn wasted
        // (it crashed, or claimed and never worked): one more rank may claim per such epoch,
        // so nodes that let their leases lapse cannot starve an item by ranking first.
        let head = self.cfg.candidates.saturating_sub(1).saturating_add(e.phase.epoch());
        let base = since.max(self.warmup_end().unwrap_or(0)).saturating_add(self.cfg.settle_ms);
        if now < base {
            // No rank may claim before the item has settled: the rank can wait until then.
            self.schedule(item, base);
            return;
        }
        // Every `widen_ms` after `base` one more rank may claim. Only whether this node is
        // within the ranks allowed now matters, so peers are scored only until that is known:
        // most nodes rank far down and learn it from a few peers, and by the time more ranks
        // may claim, the item is usually claimed already.
        let limit = match (now - base).checked_div(self.cfg.widen_ms) {
            None => u32::MAX,
            Some(steps) => {
                let steps = u32::try_from(steps).unwrap_or(u32::MAX);
                head.saturating_add(steps)
            }
        };
        // After each failure the ranking is drawn afresh, so the node that just failed is not
        // simply first in line again: another node, perhaps better placed, tries next.
        let failures = u8::try_from(e.fails.len()).unwrap_or(u8::MAX);
        let key = hrw::attempt_key(&item, failures);
        let cached = e.rank.filter(|m| m.failures == failures);
        let peers_changed = cached.is_some_and(|m| m.version != self.peers.version() as u32);
        // Scoring goes on until the rank is known to be past twice the ranks allowed now, so a
        // node waiting its turn wakes about log2(rank) times, not rank times.
        let scan_to = limit.saturating_mul(2).saturating_add(1);
        let mut scan = cached
            .and_then(|m| self.catch_up(m, &key, &project, role, shard))
            .unwrap_or_else(|| hrw::RankScan::start(&key, &self.me));
        let rank = if scan.complete() {
            Ok(scan.above())
        } else {
            let others = self.rank_peers(&project, role, shard);
            scan.advance(&key, &self.me, &others, scan_to)
        };
        // A node that failed the item itself goes behind every other node's turn: it hears of
        // its own failure first, and once lapsed epochs let every rank claim at once it would
        // otherwise win the retry it should leave to a node on another network.
        let behind = if self.items.get(&item).is_some_and(|e| e.fails.signed_by(&self.me)) {
            let others = self.rank_peers(&project, role, shard).len();
            u32::try_from(others).unwrap_or(u32::MAX).saturating_add(head).saturating_add(1)
        } else {
            0
        };
        let rank = rank.map(|r| r.saturating_add(behind)).map_err(|r| r.saturating_add(behind));
        if let Some(e) = self.items.get_mut(&item) {
            e.rank = Some(RankMemo { version: self.peers.version() as u32, failures, scan });
        }
        let rank = match rank {
            Ok(rank) if rank <= limit => rank,
            // Not yet: the earliest this node may claim is when its rank (or the lower bound
            // on it) may.
            Ok(r) | Err(r) => {
                // Once the peer set has changed, wake no later than a ranking started afresh
                // would: peers that ranked above may be gone by then, and the node's turn
                // come sooner than its rank now says.
                let r = if peers_changed { r.min(scan_to.saturating_add(1)) } else { r };
                let extra = u64::from(r.saturating_sub(head));
                self.schedule(item, base.saturating_add(extra.saturating_mul(self.cfg.widen_ms)));
                return;
            }
        };
        // Claimed by `fill_capacity` at the end of the tick, so that items falling due together
        // compete for the free slots by priority first.
        let key = (Reverse(self.priority(&project)), rank, since, item);
        self.ready[kind_index(kind)].insert(key);
    }

    fn on_local_timer(&mut self, item: ItemId, l: Local, now: u64) {
        if self.settled_unwanted_lane(item, now) {
            return;
        }
        let Some(e) = self.items.get(&item) else { return };
        let (project, work) = (e.project, e.work.clone());
        if !l.started && now >= l.start_at {
            if let Some(local) = self.local.get_mut(&item) {
                local.started = true;
            }
            self.stats.started += 1;
            self.outputs.push_back(Output::StartWork {
                item,
                epoch: l.epoch,
                project,
                work: (*work).clone(),
            });
        }
        if now >= l.renew_at {
            self.renew(item, now);
        }
        if let Some(l) = self.local.get(&item).copied() {
            let next = if l.started { l.renew_at } else { l.start_at.min(l.renew_at) };
            self.schedule(item, next);
        }
    }

    /// Claims items waiting in the ready set while there is room.
    fn fill_capacity(&mut self, now: u64) {
        if self.lanes_halted() {
            return;
        }
        for kind in WorkKind::ALL {
            if kind != WorkKind::Lane && self.halted() {
                continue;
            }
            let queue = kind_index(kind);
            while self.used(kind) < self.capacity_for(kind) {
                let picked = match kind {
                    WorkKind::Crawl => self.pick_ready_chunk(&self.ready[queue]),
                    _ => None,
                };
                let next = match picked {
                    Some(key) => self.ready[queue].take(&key),
                    None => self.ready[queue].pop_first(),
                };
                let Some((_, _, _, item)) = next else { break };
                let Some(e) = self.items.get(&item) else { continue };
                // Claimed by another since it was queued (its timer is set for when the lease
                // runs out), or no longer wanted: drop it.
                if self.local.contains_key(&item)
                    || self.claimable_since(&item, e).is_none_or(|t| t > now)
                    || !self.wants(&e.project, &e.work)
                {
                    continue;
                }
                self.claim(item, now);
            }
        }
    }

    /// Puts every claimable item without a timer (of `project`, or of all) back on the agenda.
    fn rearm_open_items(&mut self, project: Option<ProjectId>, now: u64) {
        let ids: Vec<ItemId> = self
            .items
            .iter()
            .filter(|(_, e)| project.is_none_or(|p| e.project == p))
            .filter(|(id, e)| e.wake_at.is_none() && !self.local.contains_key(id))
            .filter(|(id, e)| self.claimable_since(id, e).is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.schedule(id, now);
        }
    }

    // ---- local choices ---------------------------------------------------------------------

    fn subscribe(&mut self, project: ProjectId, subscribed: bool, now: u64) -> Result<(), Reject> {
        let changed = if subscribed {
            self.unsubscribed.remove(&project)
        } else {
            if !self.unsubscribed.contains(&project)
                && self.unsubscribed.len() >= self.cfg.projects_max
            {
                return Err(Reject::Full);
            }
            self.unsubscribed.insert(project)
        };
        if changed && self.projects.contains_key(&project) {
            if subscribed {
                self.rearm_open_items(Some(project), now);
            }
            // Tell peers at the next tick, so their rankings for the project catch up.
            self.next_presence_at = self.next_presence_at.min(now);
        }
        Ok(())
    }

    fn set_priority(&mut self, project: ProjectId, priority: i8) -> Result<(), Reject> {
        if priority == 0 {
            self.priorities.remove(&project);
        } else {
            if !self.priorities.contains_key(&project)
                && self.priorities.len() >= self.cfg.projects_max
            {
                return Err(Reject::Full);
            }
            self.priorities.insert(project, priority);
        }
        self.resort_ready();
        Ok(())
    }

    /// Puts the items waiting for a slot in the order of the priorities now in force.
    fn resort_ready(&mut self) {
        for queue in 0..self.ready.len() {
            let waiting = std::mem::take(&mut self.ready[queue]);
            self.ready[queue] = waiting
                .into_iter()
                .map(|(_, rank, since, item)| {
                    let p = self.items.get(&item).map_or(0, |e| self.priority(&e.project));
                    (Reverse(p), rank, since, item)
                })
                .collect();
        }
    }

    // ---- local decisions -------------------------------------------------------------------

    fn claim(&mut self, item: ItemId, now: u64) {
        let Some(e) = self.items.get(&item) else { return };
        let epoch = match &e.phase {
            Phase::Open { epoch, .. } | Phase::Held { epoch, .. } => epoch.saturating_add(1),
            _ => return,
        };
        let lease_ms = self.lease_of(e);
        let claim = Claim {
            item,
            epoch,
            at_ms: now,
            lease_until_ms: now.saturating_add(lease_ms),
            since_ms: now,
            proof: None,
        };
        let signed = Signed::sign(&self.key, &claim);
        self.stats.claims += 1;
        let env = Envelope::Claim(signed);
        if self.apply_envelope(env.clone(), now, false).is_ok() {
            self.outputs.push_back(Output::Publish(env));
        }
    }

    fn renew(&mut self, item: ItemId, now: u64) {
        let Some(l) = self.local.get(&item).copied() else { return };
        // A lane nobody wants goes back rather than on (one not started yet, once settled:
        // see `settled_unwanted_lane`).
        if l.kind == WorkKind::Lane && l.started && self.lane_unwanted(&item) {
            self.give_back_with(item, l.epoch, None, Some(0), now);
            return;
        }
        let Some(e) = self.items.get(&item) else { return };
        let lease_ms = self.lease_of(e);
        let mut claim = Claim {
            item,
            epoch: l.epoch,
            at_ms: now,
            lease_until_ms: now.saturating_add(lease_ms),
            since_ms: l.since,
            proof: None,
        };
        // A seeding duty's renewal in a proof zone shows the copy (see `proofs.rs`).
        match self.proof_step(&claim, now) {
            proofs::ProofStep::NotDue => {}
            proofs::ProofStep::Carry(p) => {
                claim.proof = Some(p);
                self.stats.proofs += 1;
            }
            proofs::ProofStep::Wait => {
                if let Some(l) = self.local.get_mut(&item) {
                    l.renew_at = now.saturating_add(proofs::PROOF_RETRY_MS);
                }
                return;
            }
            proofs::ProofStep::GiveUp => {
                self.disown(item, l.epoch, now);
                return;
            }
        }
        let env = Envelope::Claim(Signed::sign(&self.key, &claim));
        self.stats.renewals += 1;
        if self.apply_envelope(env.clone(), now, false).is_ok() {
            self.outputs.push_back(Output::Publish(env));
        }
    }

    fn current_claim(&self, item: &ItemId, epoch: u32) -> Option<Signed<Claim>> {
        match &self.items.get(item)?.phase {
            Phase::Held { holder, epoch: e, claim, .. } if *holder == self.me && *e == epoch => {
                Some(claim.clone())
            }
            _ => None,
        }
    }

    fn work_done(&mut self, done: WorkResult, now: u64) {
        let WorkResult { item, epoch, result, size, ok, failed, mut parts } = done;
        // A lane has no result: it is held while wanted and released (see `lanes.rs`).
        if self.items.get(&item).is_some_and(Self::is_lane) {
            return;
        }
        let Some(claim) = self.current_claim(&item, epoch) else { return };
        // Keep the receipt within its limits whatever the runner reported.
        parts.truncate(crate::item::CHUNK_URLS_MAX);
        for p in &mut parts {
            if let Some(reason) = &p.failure {
                *p = crate::message::PartOutcome::failed(p.status, &reason.clone());
            }
        }
        // Taking in the receipt decodes this claim again from its bytes.
        claim.recall_verified();
        let receipt = Receipt { claim, result, size, ok, failed, at_ms: now, parts };
        let env = Envelope::Receipt(Signed::sign(&self.key, &receipt));
        if self.apply_envelope(env.clone(), now, false).is_ok() {
            self.stats.finished += 1;
            self.outputs.push_back(Output::Publish(env));
        }
        self.fill_capacity(now);
    }

    fn work_failed(&mut self, item: ItemId, epoch: u32, reason: String, retryable: bool, now: u64) {
        let Some(claim) = self.current_claim(&item, epoch) else { return };
        let mut reason = reason;
        if reason.len() > crate::message::REASON_MAX {
            let mut cut = crate::message::REASON_MAX;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        claim.recall_verified();
        let failure = Failure { claim, reason, retryable };
        let env = Envelope::Failure(Signed::sign(&self.key, &failure));
        if self.apply_envelope(env.clone(), now, false).is_ok() {
            self.stats.failed += 1;
            self.outputs.push_back(Output::Publish(env));
        }
        self.fill_capacity(now);
    }

    /// A message from a peer. A live claim of this node's own that it is not working on is
    /// left over from before a restart that lost its state (the claims it works on it makes,
    /// renews and replays from its store itself): it is given back at once, so that the item
    /// need not wait out the lease, and no node that missed an earlier release of it goes on
    /// taking it for held.
    fn take_in(&mut self, env: Envelope, now: u64) -> Result<(), Reject> {
        let own = match &env {
            Envelope::Claim(s) if s.signer().node_id() == self.me => {
                apply::verified(s).ok().map(|c| (c.item, c.epoch))
            }
            _ => None,
        };
        let working = own.is_some_and(|(item, _)| self.local.contains_key(&item));
        let result = self.apply_envelope(env, now, false);
        if let (Ok(()), Some((item, epoch)), false) = (result, own, working)
            && self.local.get(&item).is_some_and(|l| l.epoch == epoch)
        {
            self.give_back(item, epoch, now);
        }
        result
    }

    /// Releases an item this node holds at `epoch`, for others to take.
    fn give_back(&mut self, item: ItemId, epoch: u32, now: u64) {
        self.give_back_with(item, epoch, None, None, now);
    }

    /// [`Engine::give_back`], with a host's cooldown for a lane, and how long its driver goes
    /// on sending the host (see `lanes.rs`).
    fn give_back_with(
        &mut self,
        item: ItemId,
        epoch: u32,
        cooldown: Option<u64>,
        drain_ms: Option<u64>,
        now: u64,
    ) {
        let release = Release { item, epoch, at_ms: now, cooldown_until_ms: cooldown, drain_ms };
        let env = Envelope::Release(Signed::sign(&self.key, &release));
        if self.apply_envelope(env.clone(), now, false).is_ok() {
            self.outputs.push_back(Output::Publish(env));
        }
    }

    fn shutdown(&mut self, now: u64) {
        let held: Vec<(ItemId, Local)> = self.local.iter().map(|(i, l)| (*i, *l)).collect();
        for (item, l) in held {
            self.give_back(item, l.epoch, now);
        }
        self.shut_down = true;
        self.ready.iter_mut().for_each(BTreeSet::clear);
        self.agenda.clear();
        for e in self.items.values_mut() {
            e.wake_at = None;
        }
    }
}

impl Phase {
    fn view(&self) -> ItemState {
        match self {
            Phase::Open { epoch, .. } => ItemState::Open { epoch: *epoch },
            Phase::Held { holder, epoch, lease_until, ready, .. } => ItemState::Held {
                holder: *holder,
                epoch: *epoch,
                lease_until_ms: *lease_until,
                ready: ready.is_some(),
            },
            Phase::Done { receipt } => {
                let holder = receipt.signer().node_id();
                match apply::receipt_parts(receipt) {
                    Some((r, c)) => {
                        ItemState::Done { holder, epoch: c.epoch, result: r.result, size: r.size }
                    }
                    // Never: a receipt is stored only after it verified.
                    None => ItemState::Done { holder, epoch: 0, result: Digest([0; 32]), size: 0 },
                }
            }
            Phase::Failed { epoch, .. } => ItemState::Failed { epoch: *epoch },
        }
    }

    fn proof(&self) -> Option<Envelope> {
        match self {
            Phase::Open { proof, .. } => proof.clone(),
            Phase::Held { claim, .. } => Some(Envelope::Claim(claim.clone())),
            Phase::Done { receipt, .. } => Some(Envelope::Receipt(receipt.clone())),
            Phase::Failed { proof, .. } => Some(proof.clone()),
        }
    }

    /// The epoch the item is at (0 before its first claim).
    fn epoch(&self) -> u32 {
        match self {
            Phase::Open { epoch, .. } | Phase::Held { epoch, .. } | Phase::Failed { epoch, .. } => {
                *epoch
            }
            Phase::Done { receipt } => apply::receipt_parts(receipt).map_or(0, |(_, c)| c.epoch),
        }
    }

    /// The holder's ready receipt, for ongoing work held and ready: handed on after
    /// [`Phase::proof`].
    fn ready_receipt(&self) -> Option<Envelope> {
        match self {
            Phase::Held { ready: Some(r), .. } => Some(Envelope::Receipt(r.clone())),
            _ => None,
        }
    }

    /// What ended the previous epoch, for an item held at a later one.
    fn prior(&self) -> Option<&Envelope> {
        match self {
            Phase::Held { prior, .. } => prior.as_ref(),
            _ => None,
        }
    }
}

/// A place in the ready set: higher priority first, then better rank, then waiting longest.
type ReadyKey = (Reverse<i8>, u32, u64, ItemId);

fn kind_index(kind: WorkKind) -> usize {
    match kind {
        WorkKind::Crawl => 0,
        WorkKind::Seed => 1,
        WorkKind::Relay => 2,
        WorkKind::Lane => 3,
    }
}

/// Builds a keypair for a test or simulated node from a seed (never for real nodes).
pub fn test_keypair(seed: u64) -> Keypair {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Keypair::from_rng(&mut rng)
}
