//! Messages nodes sign and gossip, and the [`Envelope`] that carries any of them.
//!
//! A renewal is a [`Claim`] re-signed by its holder at the same epoch with a later lease and
//! the same `since_ms`, so a node that missed the original claim learns it from the renewal. A
//! [`Receipt`] and a [`Failure`] embed the holder's latest claim, so they can be checked on
//! their own: only the holder of an epoch can finish or give back that epoch.

use serde::{Deserialize, Serialize};

use crate::directory::Directory;
use crate::ids::{Digest, ItemId, NodeId, ProjectId};
use crate::item::ItemBatch;
use crate::keys::PublicKey;
use crate::manifest::ProjectManifest;
use crate::signed::{Signable, Signed, VerifyError};
use crate::wire::{self, DecodeError, MAX_ENVELOPE_BYTES, Validate, check_len};

/// What a node offers the mesh, as bit flags.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Roles(pub u8);

impl Roles {
    /// Runs crawl chunks.
    pub const CRAWL: Roles = Roles(1);
    /// Holds and serves results.
    pub const SEED: Roles = Roles(2);
    /// Relays for peers behind NAT.
    pub const RELAY: Roles = Roles(4);
    /// Seeds torrents (on top of [`Roles::SEED`]): a node without a BitTorrent session leaves
    /// it out, so torrent duties are ranked among, and claimed by, nodes that can run them.
    pub const TORRENT: Roles = Roles(8);
    /// Everything.
    pub const ALL: Roles = Roles(15);

    /// Whether every role in `other` is set here.
    pub fn contains(self, other: Roles) -> bool {
        self.0 & other.0 == other.0
    }

    /// The roles needed for one item: those of its kind, and for a torrent also
    /// [`Roles::TORRENT`].
    pub fn for_work(work: &crate::item::WorkItem) -> Roles {
        match work {
            crate::item::WorkItem::Torrent { .. } => Roles(Roles::SEED.0 | Roles::TORRENT.0),
            _ => Roles::for_kind(work.kind()),
        }
    }

    /// The role needed for a kind of work.
    pub fn for_kind(kind: crate::item::WorkKind) -> Roles {
        match kind {
            crate::item::WorkKind::Crawl => Roles::CRAWL,
            crate::item::WorkKind::Seed => Roles::SEED,
            crate::item::WorkKind::Relay => Roles::RELAY,
            crate::item::WorkKind::Lane => Roles::CRAWL,
        }
    }
}

/// A heartbeat: this node is alive, with this much room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Increases with every heartbeat from the same node; older ones are ignored.
    pub seq: u64,
    /// The sender's clock when it sent this.
    pub at_ms: u64,
    /// Work slots in all.
    pub capacity: u16,
    /// Work slots free now.
    pub free: u16,
    /// What the node offers.
    pub roles: Roles,
    /// Projects the node works on; empty means every project it trusts (used when it has more
    /// than [`PRESENCE_PROJECTS_MAX`]). Ranking for an item counts only peers of its project.
    #[serde(default)]
    pub projects: Vec<ProjectId>,
}

/// Most projects listed in one presence heartbeat.
pub const PRESENCE_PROJECTS_MAX: usize = 64;

impl Validate for Presence {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("projects", self.projects.len(), PRESENCE_PROJECTS_MAX)
    }
}
impl Signable for Presence {
    const KIND: &'static str = "presence";
    const MAX_BODY_BYTES: usize = 256 + PRESENCE_PROJECTS_MAX * 40;
}

/// A claim on an item for one epoch, or a renewal of the signer's own claim (same epoch and
/// `since_ms`, later `at_ms` and lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The item claimed.
    pub item: ItemId,
    /// The fencing token: 1 for the first claim, one more for each reclaim.
    pub epoch: u32,
    /// The claimant's clock when it signed.
    pub at_ms: u64,
    /// The lease runs until here (claimant's clock).
    pub lease_until_ms: u64,
    /// When the signer first claimed this epoch; renewals keep it. Same-epoch conflicts are
    /// settled by it (earlier time bucket first) before the HRW score.
    pub since_ms: u64,
    /// For a renewal of a seeding duty in the zone of a proof slot: the holder's proof that it
    /// still has the copy (see [`crate::proof`]). Absent on every other claim, and then not on
    /// the wire, so claims without one are encoded as before proofs existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::proof::StorageProof>,
}

impl Claim {
    /// Whether this is a renewal rather than a fresh claim.
    pub fn is_renewal(&self) -> bool {
        self.since_ms < self.at_ms
    }
}

impl Validate for Claim {
    fn validate(&self) -> Result<(), DecodeError> {
        if self.epoch == 0 {
            return Err(DecodeError::Invalid("claim at epoch 0"));
        }
        if self.lease_until_ms <= self.at_ms {
            return Err(DecodeError::Invalid("lease ends before it starts"));
        }
        if self.since_ms > self.at_ms {
            return Err(DecodeError::Invalid("claim held since after it was signed"));
        }
        if let Some(p) = &self.proof {
            check_len("storage proof", p.slice.len(), crate::proof::PROOF_BYTES_MAX)?;
        }
        Ok(())
    }
}
impl Signable for Claim {
    const KIND: &'static str = "claim";
    const MAX_BODY_BYTES: usize = 256 + crate::proof::PROOF_BYTES_MAX + 64;
}

/// The holder gives an item back without a result (shutdown, lost interest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The item.
    pub item: ItemId,
    /// The epoch given back.
    pub epoch: u32,
    /// When (holder's clock).
    pub at_ms: u64,
    /// For a host lane: the host asked to be left alone until then (holder's clock; a
    /// `Retry-After`, or backoff after a run of errors). No node claims any lane of the host,
    /// and no holder fetches from it, before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until_ms: Option<u64>,
    /// For a host lane: its holder sends the host nothing more than this long after signing
    /// (at most [`crate::engine::LANE_DRAIN_MS`], the drain assumed when it is absent), so
    /// the next holder waits only this long after its claim rather than the whole drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
}
impl Validate for Release {
    fn validate(&self) -> Result<(), DecodeError> {
        if self.drain_ms.is_some_and(|d| d > crate::engine::LANE_DRAIN_MS) {
            return Err(DecodeError::Invalid("release drain longer than the protocol's"));
        }
        Ok(())
    }
}
impl Signable for Release {
    const KIND: &'static str = "release";
    const MAX_BODY_BYTES: usize = 256;
}

/// Work done: the result of `claim`'s epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The holder's claim this result is for (same signer).
    pub claim: Signed<Claim>,
    /// blake3 digest of the result.
    pub result: Digest,
    /// Result size in bytes.
    pub size: u64,
    /// Parts that succeeded (URLs fetched, for a crawl chunk).
    pub ok: u32,
    /// Parts that failed.
    pub failed: u32,
    /// The holder's clock when the work finished.
    pub at_ms: u64,
    /// What happened to each part, in the item's order (each URL of a crawl chunk); empty for
    /// work without parts.
    pub parts: Vec<PartOutcome>,
}

/// Longest reason given for a failed part, in bytes.
pub const PART_REASON_MAX: usize = 160;

/// The outcome of one part of an item (one URL of a crawl chunk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartOutcome {
    /// The final HTTP status, or 0 when no response came.
    pub status: u16,
    /// Why the part did not make it, and what kind of trouble it was; `None` when archived.
    pub failure: Option<PartFailure>,
    /// The blake3 digest of the archived response body, what spot-checks compare (absent in
    /// receipts from before spot-checks, and for parts not archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Digest>,
}

/// What kind of outcome a part had. On the wire a single small integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u8)]
pub enum PartClass {
    /// Fetched and archived, whatever the final HTTP status.
    Ok = 0,
    /// Refused by policy: out of scope, the SSRF guard, a scheme not fetched, a size cap.
    Refused = 1,
    /// Disallowed by a robots.txt that was actually read.
    Disallowed = 2,
    /// Still failing after retries for a reason that may pass (timeouts, 5xx, 429, network
    /// errors, robots.txt unreachable). A holder only signs this when it gives up on a part
    /// for good, which the crawler avoids: it fails the whole item as retryable instead.
    Transient = 3,
}

impl PartClass {
    /// A short lowercase name, as the control API and the command line show it.
    pub fn name(self) -> &'static str {
        match self {
            PartClass::Ok => "ok",
            PartClass::Refused => "refused",
            PartClass::Disallowed => "disallowed",
            PartClass::Transient => "transient",
        }
    }
}

impl From<PartClass> for u8 {
    fn from(c: PartClass) -> u8 {
        c as u8
    }
}

impl TryFrom<u8> for PartClass {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            0 => Ok(PartClass::Ok),
            1 => Ok(PartClass::Refused),
            2 => Ok(PartClass::Disallowed),
            3 => Ok(PartClass::Transient),
            other => Err(format!("unknown part class {other}")),
        }
    }
}

/// Why a part was not archived: its class and a short reason. On the wire a pair
/// `[class, reason]`, two bytes more than the bare reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "(PartClass, String)", from = "(PartClass, String)")]
pub struct PartFailure {
    /// What kind of trouble (never [`PartClass::Ok`] in a valid receipt).
    pub class: PartClass,
    /// What happened, at most [`PART_REASON_MAX`] bytes.
    pub reason: String,
}

impl From<PartFailure> for (PartClass, String) {
    fn from(f: PartFailure) -> Self {
        (f.class, f.reason)
    }
}

impl From<(PartClass, String)> for PartFailure {
    fn from((class, reason): (PartClass, String)) -> Self {
        Self { class, reason }
    }
}

impl PartOutcome {
    /// A part that was archived with `status`.
    pub fn ok(status: u16) -> Self {
        Self { status, failure: None, payload: None }
    }

    /// A part that was archived with `status`, its body's digest `payload`.
    pub fn archived(status: u16, payload: Digest) -> Self {
        Self { status, failure: None, payload: Some(payload) }
    }

    /// A part that was not archived, its reason cut to [`PART_REASON_MAX`] bytes.
    pub fn failed(status: u16, failure: &PartFailure) -> Self {
        let reason = &failure.reason;
        let mut cut = reason.len().min(PART_REASON_MAX);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let failure = PartFailure { class: failure.class, reason: reason[..cut].to_string() };
        Self { status, failure: Some(failure), payload: None }
    }

    /// A part that was not archived, of `class`, for `reason` (cut like [`Self::failed`]).
    pub fn not_archived(status: u16, class: PartClass, reason: &str) -> Self {
        Self::failed(status, &PartFailure { class, reason: reason.to_owned() })
    }

    /// Its class: [`PartClass::Ok`] when archived.
    pub fn class(&self) -> PartClass {
        self.failure.as_ref().map_or(PartClass::Ok, |f| f.class)
    }
}

impl Validate for Receipt {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("parts", self.parts.len(), crate::item::CHUNK_URLS_MAX)?;
        for p in &self.parts {
            let Some(f) = &p.failure else { continue };
            check_len("part reason", f.reason.len(), PART_REASON_MAX)?;
            if f.class == PartClass::Ok {
                return Err(DecodeError::Invalid("part failure classed ok"));
            }
        }
        self.claim.validate()
    }
}
impl Signable for Receipt {
    const KIND: &'static str = "receipt";
    // Per part: the map keys and status (~21 bytes), the pair header and class (2), the
    // reason's length (2) and the reason itself.
    const MAX_BODY_BYTES: usize =
        1024 + crate::proof::PROOF_BYTES_MAX + crate::item::CHUNK_URLS_MAX * (PART_REASON_MAX + 32);
}

/// Longest failure reason, in bytes.
pub const REASON_MAX: usize = 256;

/// Work failed: the holder gives the item back with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The holder's claim being given back (same signer).
    pub claim: Signed<Claim>,
    /// What went wrong, for operators.
    pub reason: String,
    /// Whether another node may succeed where this one failed.
    pub retryable: bool,
}
impl Validate for Failure {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("reason", self.reason.len(), REASON_MAX)?;
        self.claim.validate()
    }
}
impl Signable for Failure {
    const KIND: &'static str = "failure";
    const MAX_BODY_BYTES: usize = 1024 + crate::proof::PROOF_BYTES_MAX;
}

/// A node that is not publicly reachable asks the mesh for relay capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRequest {
    /// Increases with each request; the newest replaces older ones.
    pub seq: u64,
    /// The requester's clock when it asked.
    pub at_ms: u64,
}
impl Validate for RelayRequest {
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}
impl Signable for RelayRequest {
    const KIND: &'static str = "relay-request";
    const MAX_BODY_BYTES: usize = 256;
}

/// How far one shard of a split project is, as one of its members counts it: the nodes of a
/// split project learn how far the whole of it is from one of these per shard now and then,
/// not from every receipt (see `engine/progress.rs`). Informational: no claim rests on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardProgress {
    /// The split project.
    pub project: ProjectId,
    /// The shard counted, at the depth of the manifest the counter holds; the signer must be
    /// one of its members.
    pub shard: crate::shard::Shard,
    /// The signer's clock when it counted.
    pub at_ms: u64,
    /// The shard's items by state (those never sharded, host lanes, left out).
    pub open: u64,
    pub held: u64,
    pub done: u64,
    pub failed: u64,
}
impl Validate for ShardProgress {
    fn validate(&self) -> Result<(), DecodeError> {
        let s = self.shard;
        if s.depth == 0
            || s.depth > crate::shard::SHARD_DEPTH_MAX
            || u32::from(s.prefix) >> s.depth != 0
        {
            return Err(DecodeError::Invalid("shard outside 1 ..= 12 deep or past its depth"));
        }
        Ok(())
    }
}
impl Signable for ShardProgress {
    const KIND: &'static str = "shard-progress";
    const MAX_BODY_BYTES: usize = 256;
}

/// Anything that travels over gossip or sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// A project manifest from its owner.
    Manifest(Signed<ProjectManifest>),
    /// A batch of items from a project owner.
    Batch(Signed<ItemBatch>),
    /// A node heartbeat.
    Presence(Signed<Presence>),
    /// A claim or renewal.
    Claim(Signed<Claim>),
    /// A claim given back.
    Release(Signed<Release>),
    /// A result.
    Receipt(Signed<Receipt>),
    /// A failure.
    Failure(Signed<Failure>),
    /// A request for relay capacity.
    RelayRequest(Signed<RelayRequest>),
    /// A curator's directory of projects.
    Directory(Signed<Directory>),
    /// A shard's progress, counted by one of its members (new kinds go last).
    Progress(Signed<ShardProgress>),
}

impl Validate for Envelope {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Envelope::Manifest(s) => s.validate(),
            Envelope::Batch(s) => s.validate(),
            Envelope::Presence(s) => s.validate(),
            Envelope::Claim(s) => s.validate(),
            Envelope::Release(s) => s.validate(),
            Envelope::Receipt(s) => s.validate(),
            Envelope::Failure(s) => s.validate(),
            Envelope::RelayRequest(s) => s.validate(),
            Envelope::Directory(s) => s.validate(),
            Envelope::Progress(s) => s.validate(),
        }
    }
}

impl Envelope {
    /// Encodes the envelope for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes a gossip envelope (at most [`MAX_ENVELOPE_BYTES`]; batches over it go by sync or
    /// by file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, MAX_ENVELOPE_BYTES)
    }

    /// Decodes a signed file (manifest, batch or directory), up to [`wire::MAX_FILE_BYTES`].
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, wire::MAX_FILE_BYTES + 1024)
    }

    /// The signer's node id (unverified).
    pub fn signer(&self) -> NodeId {
        let key = match self {
            Envelope::Manifest(s) => s.signer(),
            Envelope::Batch(s) => s.signer(),
            Envelope::Presence(s) => s.signer(),
            Envelope::Claim(s) => s.signer(),
            Envelope::Release(s) => s.signer(),
            Envelope::Receipt(s) => s.signer(),
            Envelope::Failure(s) => s.signer(),
            Envelope::RelayRequest(s) => s.signer(),
            Envelope::Directory(s) => s.signer(),
            Envelope::Progress(s) => s.signer(),
        };
        key.node_id()
    }

    /// Short name of the message kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Envelope::Manifest(_) => ProjectManifest::KIND,
            Envelope::Batch(_) => ItemBatch::KIND,
            Envelope::Presence(_) => Presence::KIND,
            Envelope::Claim(_) => Claim::KIND,
            Envelope::Release(_) => Release::KIND,
            Envelope::Receipt(_) => Receipt::KIND,
            Envelope::Failure(_) => Failure::KIND,
            Envelope::RelayRequest(_) => RelayRequest::KIND,
            Envelope::Directory(_) => Directory::KIND,
            Envelope::Progress(_) => ShardProgress::KIND,
        }
    }

    /// Verifies the signature and decodes the body, discarding it: a full check of the file.
    pub fn verify(&self) -> Result<(), VerifyError> {
        match self {
            Envelope::Manifest(s) => s.verify().map(drop),
            Envelope::Batch(s) => s.verify().map(drop),
            Envelope::Presence(s) => s.verify().map(drop),
            Envelope::Claim(s) => s.verify().map(drop),
            Envelope::Release(s) => s.verify().map(drop),
            Envelope::Receipt(s) => s.verify().map(drop),
            Envelope::Failure(s) => s.verify().map(drop),
            Envelope::RelayRequest(s) => s.verify().map(drop),
            Envelope::Directory(s) => s.verify().map(drop),
            Envelope::Progress(s) => s.verify().map(drop),
        }
    }

    /// The item a claim, release, receipt or failure is about (`None` for other kinds, and
    /// for one whose body or embedded claim does not check).
    pub fn item(&self) -> Option<crate::ids::ItemId> {
        let claim = |c: &Signed<Claim>| c.verified_ref().ok().map(|c| c.item);
        match self {
            Envelope::Claim(s) => claim(s),
            Envelope::Release(s) => s.verified_ref().ok().map(|r| r.item),
            Envelope::Receipt(s) => s.verified_ref().ok().and_then(|r| claim(&r.claim)),
            Envelope::Failure(s) => s.verified_ref().ok().and_then(|f| claim(&f.claim)),
            _ => None,
        }
    }

    /// A content hash, for gossip message ids and duplicate suppression.
    pub fn content_id(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }
}

/// Buckets per project in a sync digest.
pub const SYNC_BUCKETS: usize = 16;
/// Most projects described in one digest.
pub const SYNC_PROJECTS_MAX: usize = 256;
/// Most envelopes in one delta; a requester asks again while `more` is set.
pub const SYNC_DELTA_MAX: usize = 2_000;

/// What one project looks like to the requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectDigest {
    /// The project.
    pub project: ProjectId,
    /// The manifest version held.
    pub manifest_version: u64,
    /// Hash of the batch sequence numbers held.
    pub batches: [u8; 8],
    /// Hash of the item states in each bucket (by first byte of the item id).
    pub buckets: [[u8; 8]; SYNC_BUCKETS],
    /// The requester's shard of a split project: the peer answers with that shard's items
    /// and batches only. Absent for a whole project, and then not on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
}

/// A compact summary of a node's state; the peer answers with what differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDigest {
    /// Per-project summaries.
    pub projects: Vec<ProjectDigest>,
    /// Hash of the relay requests held.
    pub relay: [u8; 8],
    /// The curators the requester follows, each with the version of the directory it holds
    /// from them (0 for none): the peer answers with the newer directories of those curators
    /// only. Left out when empty, so the digest of a node that follows no one is encoded as
    /// before curators existed, and such a node is never sent a directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub following: Vec<(PublicKey, u64)>,
}

impl Validate for SyncDigest {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("projects", self.projects.len(), SYNC_PROJECTS_MAX)?;
        check_len("following", self.following.len(), crate::limits::FOLLOWING_MAX)
    }
}

impl SyncDigest {
    /// Encodes for the request-response protocol.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }
    /// Decodes a peer's digest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, 64 * 1024)
    }
}

/// The envelopes the requester lacks, in the order they should be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDelta {
    /// Directories, then manifests, then batches, then item state.
    pub envelopes: Vec<Envelope>,
    /// More differences remain; ask again.
    pub more: bool,
}

impl Validate for SyncDelta {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("envelopes", self.envelopes.len(), SYNC_DELTA_MAX)?;
        self.envelopes.iter().try_for_each(Validate::validate)
    }
}

impl SyncDelta {
    /// Largest delta on the wire.
    pub const MAX_BYTES: usize = 16 * 1024 * 1024;
    /// Encodes for the request-response protocol.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }
    /// Decodes a peer's delta.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, Self::MAX_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(parts: Vec<PartOutcome>) -> Signed<Receipt> {
        let key = crate::engine::test_keypair(1);
        let claim = Claim {
            item: ItemId([1; 32]),
            epoch: 1,
            at_ms: 1,
            lease_until_ms: 9,
            since_ms: 1,
            proof: None,
        };
        let r = Receipt {
            claim: Signed::sign(&key, &claim),
            result: Digest([2; 32]),
            size: 1,
            ok: 0,
            failed: parts.len() as u32,
            at_ms: 5,
            parts,
        };
        Signed::sign(&key, &r)
    }

    #[test]
    fn each_part_class_round_trips_and_a_full_receipt_fits() {
        let classes = [PartClass::Refused, PartClass::Disallowed, PartClass::Transient];
        let mut parts = vec![PartOutcome::ok(404)];
        parts.extend(classes.iter().map(|c| PartOutcome::not_archived(0, *c, c.name())));
        let back = receipt(parts.clone()).verify().expect("verifies");
        assert_eq!(back.parts, parts);
        assert_eq!(back.parts.iter().map(PartOutcome::class).collect::<Vec<_>>()[1..], classes);
        // The worst honest receipt: every URL with the longest reason and a 3-digit status.
        let long = "é".repeat(PART_REASON_MAX);
        let worst: Vec<PartOutcome> = (0..crate::item::CHUNK_URLS_MAX)
            .map(|_| PartOutcome::not_archived(599, PartClass::Transient, &long))
            .collect();
        assert_eq!(worst[0].failure.as_ref().map(|f| f.reason.len()), Some(PART_REASON_MAX));
        receipt(worst).verify().expect("a receipt of the largest size decodes");
    }

    #[test]
    fn unknown_classes_and_an_ok_failure_are_refused() {
        assert!(PartClass::try_from(4).is_err());
        let bad = receipt(vec![PartOutcome::not_archived(0, PartClass::Ok, "nothing wrong")]);
        assert!(bad.verify().is_err(), "a failure classed ok is invalid");
        let mut bytes = wire::encode(&PartOutcome::not_archived(0, PartClass::Refused, "x"));
        let at = bytes.iter().position(|b| *b == 1).expect("class byte");
        bytes[at] = 9;
        let undecodable = ciborium::de::from_reader::<PartOutcome, _>(bytes.as_slice());
        assert!(undecodable.is_err(), "class 9 does not decode");
    }
}
