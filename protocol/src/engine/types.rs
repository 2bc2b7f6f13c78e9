//! The engine's inputs, outputs, configuration and rejection reasons.

use serde::{Deserialize, Serialize};

use crate::ids::{Digest, ItemId, NodeId, ProjectId};
use crate::item::WorkItem;
use crate::keys::PublicKey;
use crate::message::{Envelope, Roles};

/// Tunables for one engine. All durations in milliseconds of the driver's clock. Deserializes
/// from a partial table: missing fields take their defaults, unknown ones are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Crawl chunks worked at once.
    pub capacity: u16,
    /// Seeding duties held at once.
    pub seed_capacity: u16,
    /// Relay slots offered at once.
    pub relay_capacity: u16,
    /// What this node offers.
    pub roles: Roles,
    /// Wait after an item becomes claimable before claiming it, so news can spread.
    pub settle_ms: u64,
    /// Wait after claiming before starting work, so a conflicting claim can arrive first.
    pub claim_settle_ms: u64,
    /// Quiet period after start, to learn peers before claiming anything.
    pub warmup_ms: u64,
    /// How often to send a presence heartbeat.
    pub presence_interval_ms: u64,
    /// How long a peer counts as live after its last heartbeat.
    pub presence_ttl_ms: u64,
    /// Clock difference between nodes that is tolerated.
    pub skew_margin_ms: u64,
    /// HRW ranks (from the top) allowed to claim at once.
    pub candidates: u32,
    /// Every this long an item stays unclaimed, one more rank may claim it.
    pub widen_ms: u64,
    /// Lease of a relay slot.
    pub relay_lease_ms: u64,
    /// Most failures kept per item (see `fails.rs`): an item fails for the mesh only on final
    /// failures from two different nodes; retryable ones are never final.
    pub failures_max: u8,
    /// Most items tracked.
    pub items_max: usize,
    /// Most projects tracked, all owners together.
    pub projects_max: usize,
    /// Most projects tracked per owner key, so one trusted owner cannot fill `projects_max`
    /// and lock every other owner's new projects out.
    pub projects_per_owner_max: usize,
    /// Most live peers tracked.
    pub peers_max: usize,
    /// Most messages parked while waiting for their project or item.
    pub pending_max: usize,
    /// Claim the lanes of a crawl chunk's hosts (under a mesh-wide rate) together with the
    /// chunk, so both claims settle at once and the chunk's first request comes a claim's
    /// settle sooner (see `lanes.rs`). For drivers that fetch under lanes; one that never asks
    /// for lanes (a model with no crawler) turns it off.
    pub lanes_with_chunks: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            capacity: 4,
            seed_capacity: 64,
            relay_capacity: 8,
            roles: Roles(Roles::CRAWL.0 | Roles::SEED.0),
            settle_ms: 300,
            claim_settle_ms: 300,
            warmup_ms: 3_000,
            presence_interval_ms: 2_000,
            presence_ttl_ms: 7_000,
            skew_margin_ms: 1_000,
            candidates: 1,
            widen_ms: 2_000,
            relay_lease_ms: 30_000,
            failures_max: 8,
            items_max: 1_000_000,
            projects_max: 1_024,
            projects_per_owner_max: 64,
            peers_max: 4_096,
            pending_max: 4_096,
            lanes_with_chunks: true,
        }
    }
}

/// Why an [`EngineConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting outside its range.
    #[error("{name} = {value} is outside its range {min} ..= {max}")]
    OutOfRange {
        /// The setting's name (as in the config file).
        name: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// Two settings that only make sense in a given order.
    #[error("{larger} = {larger_value} must be larger than {smaller} = {smaller_value}")]
    Order {
        /// The setting that must be larger.
        larger: &'static str,
        /// Its value.
        larger_value: u64,
        /// The setting that must be smaller.
        smaller: &'static str,
        /// Its value.
        smaller_value: u64,
    },
}

/// A minute, an hour and a day in milliseconds, for the ranges below.
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

impl EngineConfig {
    /// Every setting with the range it must be in: `(name, value, min, max)`. Durations are
    /// bounded so that no sum of a clock reading and a setting comes near `u64::MAX`, and so
    /// that a typo (an extra few zeros) is refused instead of stalling a node for years.
    pub fn ranges(&self) -> [(&'static str, u64, u64, u64); 18] {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        [
            ("capacity", self.capacity.into(), 0, 1_024),
            ("seed_capacity", self.seed_capacity.into(), 0, 4_096),
            ("relay_capacity", self.relay_capacity.into(), 0, 1_024),
            ("settle_ms", self.settle_ms, 0, 10 * MINUTE_MS),
            ("claim_settle_ms", self.claim_settle_ms, 0, 10 * MINUTE_MS),
            ("warmup_ms", self.warmup_ms, 0, HOUR_MS),
            ("presence_interval_ms", self.presence_interval_ms, 100, 10 * MINUTE_MS),
            ("presence_ttl_ms", self.presence_ttl_ms, 200, HOUR_MS),
            ("skew_margin_ms", self.skew_margin_ms, 0, 10 * MINUTE_MS),
            ("candidates", self.candidates.into(), 1, 64),
            ("widen_ms", self.widen_ms, 0, HOUR_MS),
            ("relay_lease_ms", self.relay_lease_ms, 1_000, DAY_MS),
            ("failures_max", self.failures_max.into(), 1, 100),
            ("items_max", n(self.items_max), 1, 100_000_000),
            ("projects_max", n(self.projects_max), 1, 65_536),
            ("projects_per_owner_max", n(self.projects_per_owner_max), 1, 65_536),
            ("peers_max", n(self.peers_max), 1, 1_000_000),
            ("pending_max", n(self.pending_max), 0, 1_000_000),
        ]
    }

    /// Checks every setting against [`EngineConfig::ranges`] and the settings that depend on
    /// each other; the first problem names the setting, its value and what it must be.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value, min, max) in self.ranges() {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange { name, value, min, max });
            }
        }
        let order = |larger: &'static str, l: u64, smaller: &'static str, s: u64| {
            if l > s {
                Ok(())
            } else {
                Err(ConfigError::Order { larger, larger_value: l, smaller, smaller_value: s })
            }
        };
        order(
            "presence_ttl_ms",
            self.presence_ttl_ms,
            "presence_interval_ms",
            self.presence_interval_ms,
        )?;
        let (per_owner, all) = (self.projects_per_owner_max, self.projects_max);
        if per_owner > all {
            let (value, max) = (per_owner as u64, all as u64);
            return Err(ConfigError::OutOfRange {
                name: "projects_per_owner_max",
                value,
                min: 1,
                max,
            });
        }
        Ok(())
    }
}

/// What a runner reports for finished work; the engine signs it into a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkResult {
    /// The item.
    pub item: ItemId,
    /// The epoch the work ran under.
    pub epoch: u32,
    /// Digest of the result.
    pub result: Digest,
    /// Size of the result.
    pub size: u64,
    /// Parts that succeeded.
    pub ok: u32,
    /// Parts that failed.
    pub failed: u32,
    /// Each part's outcome, in the item's order (may be empty).
    pub parts: Vec<crate::message::PartOutcome>,
}

/// Something that happened, handed to [`super::Engine::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A message arrived from the network (gossip or sync).
    Message(Envelope),
    /// The operator published a signed file (manifest, batch) through this node.
    Publish(Envelope),
    /// Time passed: timers due at or before `now` fire.
    Tick,
    /// Local work finished.
    WorkDone(WorkResult),
    /// Local work failed.
    WorkFailed {
        /// The item.
        item: ItemId,
        /// The epoch the work ran under.
        epoch: u32,
        /// Why, for operators.
        reason: String,
        /// Whether another node may succeed.
        retryable: bool,
    },
    /// Stop or resume claiming new work (held work goes on).
    Pause(bool),
    /// Change the number of crawl chunks worked at once.
    SetCapacity(u16),
    /// Change the roles this node fills (e.g. relaying once it learns it is reachable). Held
    /// work goes on; peers learn the new roles from the next heartbeat, sent at once.
    SetRoles(Roles),
    /// Trust a project owner key.
    Trust(PublicKey),
    /// Follow a curator key: projects its directories list are taken in as if their owners
    /// were trusted, at the listed priority. At most [`crate::limits::FOLLOWING_MAX`] keys;
    /// more are refused with [`Reject::Full`].
    Follow(PublicKey),
    /// Work on a project or stop taking new items of it (held items go on to completion).
    /// Every known project is subscribed by default; a choice made before the project is
    /// known is remembered (at most `projects_max` projects) and applies when it arrives.
    Subscribe {
        /// The project.
        project: ProjectId,
        /// Whether to take its items and list it in presence heartbeats.
        subscribed: bool,
    },
    /// Set how eagerly this node takes a project's items: when claimable items compete for
    /// free work slots, higher priorities are claimed first (default 0, or what a followed
    /// curator lists). The operator's choice wins over a curator's; setting 0 clears it, so a
    /// curator's listed priority applies again. A purely local choice: it never changes who
    /// wins a claim.
    SetPriority {
        /// The project.
        project: ProjectId,
        /// Higher first.
        priority: i8,
    },
    /// The node cannot do work now because of a fault of its own: its store cannot be
    /// written, it is over its disk cap, or it has lost the network. With `true` it stops
    /// claiming and gives back every item it holds (releases, not failures: one node's trouble
    /// never fails an item for the mesh); with `false` the fault has cleared and it claims
    /// again. A clock found off against the peers' has the same effect by itself (see
    /// [`super::Engine::clock`]).
    LocalFault(bool),
    /// Give back every held item and stop claiming (graceful shutdown).
    Shutdown,
    /// This node has URLs for `host` in `project` (`wanted`), or no longer has (`!wanted`):
    /// under a mesh-wide rate it claims one of the host's lanes while it wants one, and
    /// releases the lane it holds once it does not (see `lanes.rs`). At most
    /// `lanes::LANE_DEMAND_MAX` hosts are wanted at once; more are refused with
    /// [`Reject::Full`].
    WantLane {
        /// The project.
        project: ProjectId,
        /// The host, as [`crate::item::url_host`] gives it.
        host: String,
        /// Whether the node has URLs for it.
        wanted: bool,
        /// When giving the lane back (`!wanted`): the node sends the host nothing more than
        /// this long from now (its last few URLs; 0 when none are left), at most
        /// `LANE_DRAIN_MS` (more is taken as that). The release says so, and the next
        /// holder starts that much after its claim instead of the whole drain. Ignored when
        /// `wanted`.
        drain_ms: u64,
    },
    /// Of the crawl chunks held here, `blocked` wait on lanes other nodes hold (or on a host's
    /// cooldown) and `finishing` are down to their last URLs on one host
    /// ([`finishing_quota`](crate::engine::finishing_quota)): a local choice, like
    /// [`Input::SetCapacity`]. They stop counting against the crawl capacity, each kind up to
    /// the capacity itself (so a node holds at most three times its capacity, the last third
    /// only for the moment its finishing chunks take), so the node takes work for other hosts
    /// instead of idling while one host's lane is busy, and claims the chunk after a finishing
    /// one before that one ends even while its blocked chunks fill the first allowance.
    LaneBlocked {
        /// Chunks waiting on a lane held elsewhere or on a cooldown.
        blocked: u16,
        /// Chunks down to their last URLs on one host.
        finishing: u16,
    },
    /// The driver's answer to [`Output::ProofDue`]: the challenged chunk of its copy as a
    /// slice ([`crate::proof::StorageProof`]), or `None` when it does not have the copy. An
    /// answer that does not check counts as `None`: the engine gives the duty back.
    StorageProof {
        /// The seeding duty.
        item: ItemId,
        /// The epoch held.
        epoch: u32,
        /// The slot asked about.
        slot: u64,
        /// The proof, if the copy is there.
        proof: Option<crate::proof::StorageProof>,
    },
    /// `host` told this node to wait until `until_ms` (driver's clock): a `Retry-After`, or
    /// backoff after a run of refusals. The lanes of the host held here are released with the
    /// cooldown, so the whole mesh leaves the host alone until then.
    HostRefused {
        /// The project.
        project: ProjectId,
        /// The host, as [`crate::item::url_host`] gives it.
        host: String,
        /// Until when.
        until_ms: u64,
    },
}

/// Something the driver must do, drained with [`super::Engine::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// This node's next renewal of seeding duty `item` must show `len` bytes at `offset` of
    /// its copy of `result` (`size` bytes): answer with [`Input::StorageProof`] (see
    /// `crate::proof`). Until the answer comes the engine holds the renewal back.
    ProofDue {
        /// The seeding duty.
        item: ItemId,
        /// The epoch held.
        epoch: u32,
        /// The proof slot.
        slot: u64,
        /// The copy's digest.
        result: Digest,
        /// The copy's size.
        size: u64,
        /// Where the challenged chunk starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Send this to the mesh.
    Publish(Envelope),
    /// Start work on an item this node now holds.
    StartWork {
        /// The item.
        item: ItemId,
        /// The epoch (fencing token) the result must carry.
        epoch: u32,
        /// The item's project.
        project: ProjectId,
        /// What to do.
        work: WorkItem,
    },
    /// Stop work on an item this node no longer holds.
    CancelWork {
        /// The item.
        item: ItemId,
        /// The epoch that was running.
        epoch: u32,
        /// Why.
        reason: CancelReason,
    },
    /// Store this record durably; [`super::Engine::restore`] takes the stored records back.
    Persist(Envelope),
    /// A node released a lane of `host` with a cooldown: send `host` nothing for `project`
    /// before `until_ms` (the releasing node's clock), whatever lane this node holds.
    HostCooldown {
        /// The project.
        project: ProjectId,
        /// The host.
        host: String,
        /// Until when.
        until_ms: u64,
    },
}

/// Where a driver sends an envelope the engine publishes ([`super::Engine::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Every node: relay requests and curators' directories.
    Everyone,
    /// This node's heartbeat: to each whole project it works on, and to its own shard of each
    /// split one ([`super::Engine::shards`]), never to a split project as a whole.
    Presence,
    /// Every node of the project: its manifest and host lanes, and the batches and item
    /// messages of a project that is not split.
    Project(ProjectId),
    /// The members of one shard of a split project: the shard's batches and item messages.
    Shard(ProjectId, crate::shard::Shard),
}

/// Why local work was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Another node won the item under the claim rule.
    Lost,
    /// The item was finished by someone else.
    Finished,
    /// The node is shutting down.
    Shutdown,
    /// The item was replaced (a newer relay request).
    Replaced,
    /// The item failed for the mesh (final failures from enough nodes).
    Failed,
}

/// Why an incoming message was not applied. [`Reject::penalize`] says whether it should cost
/// the sending peer score.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reject {
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The body does not decode or breaks a limit.
    #[error("malformed message")]
    Malformed,
    /// A project or batch signed by a key this node does not trust, or a directory from a
    /// curator it does not follow.
    #[error("project key is not trusted")]
    UntrustedProject,
    /// A claim at a later epoch while the current lease still runs, or an epoch jump.
    #[error("claim breaks the epoch rule")]
    EpochRuleBroken,
    /// A lease longer than the project allows.
    #[error("lease longer than the project allows")]
    LeaseTooLong,
    /// A message about an item this node does not know (it may arrive later).
    #[error("unknown item")]
    UnknownItem,
    /// A batch for a project whose manifest has not arrived.
    #[error("unknown project")]
    UnknownProject,
    /// A message about an epoch that is already superseded or an item already finished.
    #[error("stale")]
    Stale,
    /// Already applied.
    #[error("duplicate")]
    Duplicate,
    /// A receipt, failure or release from a node that does not hold the item.
    #[error("sender does not hold the item")]
    NotHolder,
    /// Dated too far in the future for the allowed clock skew.
    #[error("timestamp too far in the future")]
    FromTheFuture,
    /// A bound was reached (items, projects, peers).
    #[error("over capacity")]
    Full,
    /// A valid claim that lost the claim rule to one already known.
    #[error("lost the claim rule")]
    Lost,
    /// A claim, or a result whose claim, never held its epoch: outranked by a known claim of
    /// that epoch, made after a later epoch began or inside its claimant's own lease of the
    /// epoch before, or of an epoch its signer released or failed.
    #[error("claim never held its epoch")]
    Fenced,
    /// A result under a claim first heard of with it, too young to judge: kept and judged
    /// once rival claims of its epoch have had time to arrive.
    #[error("result held back until its claim has settled")]
    Settling,
    /// A claim by a node that may not hold the item: the producer (or first checker) of the
    /// result a check is about (see `verify.rs`).
    #[error("sender may not hold this item")]
    Barred,
    /// A renewal of a seeding duty without the storage proof due in it, or with one that does
    /// not check (see `crate::proof`).
    #[error("storage proof missing or invalid")]
    Unproven,
    /// Work of a split project that lies in another shard than this node's (see
    /// `crate::shard`): not kept here, and no fault of the sender's.
    #[error("item of another shard")]
    OtherShard,
}

impl Reject {
    /// Whether this rejection points at a misbehaving (not merely late) peer.
    pub fn penalize(self) -> bool {
        matches!(
            self,
            Reject::BadSignature
                | Reject::Malformed
                | Reject::UntrustedProject
                | Reject::EpochRuleBroken
                | Reject::LeaseTooLong
                | Reject::NotHolder
                | Reject::FromTheFuture
                | Reject::Fenced
                | Reject::Barred
                | Reject::Unproven
        )
    }

    /// All reasons, in a fixed order (for metrics).
    pub const ALL: [Reject; 18] = [
        Reject::BadSignature,
        Reject::Malformed,
        Reject::UntrustedProject,
        Reject::EpochRuleBroken,
        Reject::LeaseTooLong,
        Reject::UnknownItem,
        Reject::UnknownProject,
        Reject::Stale,
        Reject::Duplicate,
        Reject::NotHolder,
        Reject::FromTheFuture,
        Reject::Full,
        Reject::Lost,
        Reject::Fenced,
        Reject::Settling,
        Reject::Barred,
        Reject::Unproven,
        Reject::OtherShard,
    ];

    /// snake_case name, for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Reject::BadSignature => "bad_signature",
            Reject::Malformed => "malformed",
            Reject::UntrustedProject => "untrusted_project",
            Reject::EpochRuleBroken => "epoch_rule_broken",
            Reject::LeaseTooLong => "lease_too_long",
            Reject::UnknownItem => "unknown_item",
            Reject::UnknownProject => "unknown_project",
            Reject::Stale => "stale",
            Reject::Duplicate => "duplicate",
            Reject::NotHolder => "not_holder",
            Reject::FromTheFuture => "from_the_future",
            Reject::Full => "full",
            Reject::Lost => "lost",
            Reject::Fenced => "fenced",
            Reject::Settling => "settling",
            Reject::Barred => "barred",
            Reject::Unproven => "unproven",
            Reject::OtherShard => "other_shard",
        }
    }
}

/// A public view of one item's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ItemState {
    /// Nobody holds it; `epoch` is the last epoch used (0 = never claimed).
    Open {
        /// Last epoch used.
        epoch: u32,
    },
    /// Held under a lease (which may have run out in this node's view).
    Held {
        /// The holder.
        holder: NodeId,
        /// The epoch.
        epoch: u32,
        /// Lease end, holder's clock.
        lease_until_ms: u64,
        /// For ongoing work: the holder reported it ready (a replica stored, a relay up).
        ready: bool,
    },
    /// Finished; terminal for crawl chunks.
    Done {
        /// Who produced the accepted result.
        holder: NodeId,
        /// The epoch of the accepted result.
        epoch: u32,
        /// The result's digest.
        result: Digest,
        /// The result's size.
        size: u64,
    },
    /// Given up after too many failures.
    Failed {
        /// The last epoch tried.
        epoch: u32,
    },
}

/// Counters kept by the engine, for metrics and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Messages applied.
    pub accepted: u64,
    /// Crawl results a spot-check quorum overturned (see `verify.rs`).
    #[serde(default)]
    pub overturned: u64,
    /// Nodes marked for a project after losing `verify.strikes` quorums.
    #[serde(default)]
    pub marked: u64,
    /// Hosts left without lanes because their project has `lanes::LANE_HOSTS_MAX` already.
    #[serde(default)]
    pub lane_hosts_over: u64,
    /// Times a split project's depth changed here, and this node's items with it.
    #[serde(default)]
    pub reshards: u64,
    /// Messages rejected, by reason (reasons never seen are absent; in JSON, keyed by the
    /// reason's snake_case name).
    pub rejected: std::collections::BTreeMap<Reject, u64>,
    /// Local choices (a subscription, a priority) refused because a bound was reached: not
    /// messages, so not counted in `rejected`.
    #[serde(default)]
    pub full: u64,
    /// Claims this node made (not renewals).
    pub claims: u64,
    /// Renewals this node made.
    pub renewals: u64,
    /// Work this node started.
    pub started: u64,
    /// Work this node had started and cancelled after losing it or seeing it finish
    /// elsewhere (claims given up before their work started are not counted).
    pub yielded: u64,
    /// Results withdrawn because later evidence showed their claim never held its epoch.
    #[serde(default)]
    pub withdrawn: u64,
    /// Receipts this node published.
    pub finished: u64,
    /// Failures this node published.
    pub failed: u64,
    /// Items this node gave back because of a fault of its own (store, disk, network, clock).
    #[serde(default)]
    pub gave_back: u64,
    /// Renewals of this node's seeding duties that carried a storage proof.
    #[serde(default)]
    pub proofs: u64,
    /// Seeding duties this node gave back because it could not show its copy.
    #[serde(default)]
    pub unproven: u64,
    /// Seeding duties dropped, not done, because the result they copy was replaced or
    /// withdrawn.
    #[serde(default)]
    pub duties_dropped: u64,
}

/// This node's clock against its peers', from the times in their signed heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockView {
    /// Median of (peer's clock − this node's clock) over recent heartbeats, in milliseconds,
    /// once enough peers were heard ([`super::CLOCK_QUORUM`]); `None` before.
    pub offset_ms: Option<i64>,
    /// Peers the median is over.
    pub peers: u32,
    /// Whether the offset is beyond the skew margin, so this node does not claim.
    pub off: bool,
}

impl EngineStats {
    /// Count of rejections for `reason`.
    pub fn rejected_for(&self, reason: Reject) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::EngineStats;

    #[test]
    fn stats_of_a_node_without_storage_proofs_still_read() {
        // A newer CLI reads the `/status` of a node built before storage proofs: the counters
        // that node never had read as zero.
        let full = ciborium::Value::serialized(&EngineStats { proofs: 3, ..Default::default() })
            .expect("serializes");
        let ciborium::Value::Map(entries) = full else { panic!("a map") };
        let older: Vec<_> = entries
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_text(), Some("proofs" | "unproven")))
            .collect();
        let read: EngineStats =
            ciborium::Value::Map(older).deserialized().expect("reads without the new counters");
        assert_eq!((read.proofs, read.unproven), (0, 0));
    }
}
