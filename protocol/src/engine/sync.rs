//! State sync over request-response: a compact [`SyncDigest`] of what a node holds, and the
//! [`SyncDelta`] of envelopes a peer answers with. The requester applies the delta through the
//! ordinary message path, so synced state is validated exactly like gossip.

use crate::ids::{ItemId, ProjectId};
use crate::item::{ItemBatch, WorkItem};
use crate::message::{
    Envelope, ProjectDigest, SYNC_BUCKETS, SYNC_DELTA_MAX, SYNC_PROJECTS_MAX, SyncDelta, SyncDigest,
};
use crate::shard::Shard;
use crate::signed::Signed;

use super::{Engine, ItemEntry, Phase};

/// Presence records included in a delta, so a joining node learns the membership at once.
const SYNC_PRESENCE_MAX: usize = 256;

/// Whether a requester with `digest` hears `peer`'s heartbeats by gossip, and so gets them in
/// a delta: unless every project the peer works on is one the requester split differently, with
/// the peer in another shard. Handed the heartbeats of other shards, a node of a split project
/// would keep counting every node of the mesh live, and its sync answers would carry them on.
fn heard_by(digest: &SyncDigest, peer: &super::peers::Peer) -> bool {
    use crate::message::Roles;
    peer.projects.is_empty()
        || peer.roles.contains(Roles::RELAY)
        || peer.projects.iter().any(|x| {
            let theirs = digest.projects.iter().find(|d| d.project == *x);
            theirs.and_then(|d| d.shard).is_none_or(|s| Shard::of_bits(peer.bits, s.depth) == s)
        })
}

fn fold(acc: &mut [u8; 8], bytes: &[u8]) {
    let h = blake3::hash(bytes);
    for (a, b) in acc.iter_mut().zip(h.as_bytes()) {
        *a ^= b;
    }
}

/// An item's contribution to its digest bucket: what `fold` adds for its state bytes.
pub(super) fn state_digest(id: &crate::ids::ItemId, e: &ItemEntry) -> [u8; 8] {
    let mut out = [0u8; 8];
    fold(&mut out, &state_bytes(id, e));
    out
}

/// What of an item's state a digest covers: phase and epoch and holder, not lease times, so
/// renewals do not make two otherwise equal nodes look different.
fn state_bytes(id: &crate::ids::ItemId, e: &ItemEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(id.as_bytes());
    match &e.phase {
        Phase::Open { epoch, .. } => {
            out.push(0);
            out.extend_from_slice(&epoch.to_le_bytes());
            // Failures kept are part of the state: two nodes that differ in them sync.
            out.push(e.fails.len() as u8);
        }
        Phase::Held { holder, epoch, ready, .. } => {
            out.push(1);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(holder.as_bytes());
            out.push(u8::from(ready.is_some()));
        }
        Phase::Done { receipt } => {
            let (epoch, result) = super::apply::receipt_parts(receipt)
                .map_or((0, crate::ids::Digest([0; 32])), |(r, c)| (c.epoch, r.result));
            out.push(2);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(receipt.signer().node_id().as_bytes());
            out.extend_from_slice(result.as_bytes());
        }
        Phase::Failed { epoch, .. } => {
            out.push(3);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.push(e.fails.len() as u8);
        }
    }
    out
}

pub(super) fn bucket_of(id: &crate::ids::ItemId) -> usize {
    id.as_bytes()[0] as usize % SYNC_BUCKETS
}

/// The digest bucket of item `id` (entry `e`): a spot-check counts in its source's bucket, so
/// a bucket's differences are settled by that bucket alone (a check means nothing to a peer
/// without its source's result, and sent in another bucket it could hold that bucket apart
/// until the source's came, round after round of answers cut short).
pub(super) fn bucket_of_entry(id: &crate::ids::ItemId, e: &super::ItemEntry) -> usize {
    match &*e.work {
        crate::item::WorkItem::Verify { source, .. } => bucket_of(source),
        _ => bucket_of(id),
    }
}

/// Whether an item of `project` is for a member of `shard` (every item is, without one).
fn in_shard(id: &ItemId, work: &WorkItem, shard: Option<Shard>) -> bool {
    let Some(s) = shard else { return true };
    crate::shard::shard_key(id, work).is_none_or(|k| Shard::of_key(&k, s.depth) == s)
}

/// Whether a batch holds work for a member of `shard`.
fn batch_in(b: &Signed<ItemBatch>, project: ProjectId, shard: Option<Shard>) -> bool {
    shard.is_none()
        || b.verified_ref()
            .is_ok_and(|b| b.items.iter().any(|w| in_shard(&w.id(&project), w, shard)))
}

impl Engine {
    fn project_digest(&self, project: ProjectId) -> Option<ProjectDigest> {
        let p = self.projects.get(&project);
        let mut batches = [0u8; 8];
        if let Some(p) = p {
            for (seq, hash) in p.batches.keys() {
                let mut b = seq.to_le_bytes().to_vec();
                b.extend_from_slice(hash);
                fold(&mut batches, &b);
            }
        }
        let buckets = self.buckets_of(&project);
        #[cfg(debug_assertions)]
        assert_eq!(self.walk_buckets(project), buckets, "kept digest buckets drifted");
        Some(ProjectDigest {
            project,
            manifest_version: p.map_or(0, |p| p.m.version),
            batches,
            buckets,
            shard: self.shard_of(&project),
        })
    }

    /// The digest buckets of `project` worked out by walking its items, as the kept ones
    /// must be.
    #[cfg(any(test, debug_assertions))]
    pub(super) fn walk_buckets(&self, project: ProjectId) -> [[u8; 8]; SYNC_BUCKETS] {
        let mut walked = [[0u8; 8]; SYNC_BUCKETS];
        for (id, e) in self.items.iter().filter(|(_, e)| e.project == project) {
            // Never-claimed items come from batches, which are compared separately.
            if matches!(e.phase, Phase::Open { epoch: 0, .. }) {
                continue;
            }
            debug_assert_eq!(e.digest, state_digest(id, e), "stale digest for {id:?}");
            for (a, b) in walked[bucket_of_entry(id, e)].iter_mut().zip(e.in_bucket()) {
                *a ^= b;
            }
        }
        walked
    }

    /// The digest buckets of `project` as kept.
    #[cfg(test)]
    pub(super) fn kept_buckets(&self, project: ProjectId) -> [[u8; 8]; SYNC_BUCKETS] {
        self.buckets_of(&project)
    }

    fn relay_hash(&self) -> [u8; 8] {
        let mut h = [0u8; 8];
        for r in self.relay_requests.values() {
            fold(&mut h, r.body());
            fold(&mut h, r.signer().as_bytes());
        }
        h
    }

    /// A summary of this node's state, to send to a peer.
    pub fn sync_digest(&self) -> SyncDigest {
        let mut ids: Vec<ProjectId> = self.projects.keys().copied().collect();
        ids.push(super::relay_project());
        ids.truncate(SYNC_PROJECTS_MAX);
        SyncDigest {
            projects: ids.into_iter().filter_map(|p| self.project_digest(p)).collect(),
            relay: self.relay_hash(),
            following: self
                .following()
                .map(|(curator, dir)| (*curator, dir.map_or(0, |d| d.version)))
                .collect(),
        }
    }

    /// What a peer with `digest` lacks or holds differently, at most [`SYNC_DELTA_MAX`]
    /// envelopes; `more` is set when the answer was cut short.
    pub fn sync_delta(&self, digest: &SyncDigest) -> SyncDelta {
        let mut out: Vec<Envelope> = Vec::new();
        let mut more = false;
        let mut push = |out: &mut Vec<Envelope>, env: Envelope| {
            if out.len() >= SYNC_DELTA_MAX {
                more = true;
            } else {
                out.push(env);
            }
        };
        out.extend(
            self.peers
                .iter()
                .filter(|(_, p)| heard_by(digest, p))
                .take(SYNC_PRESENCE_MAX)
                .map(|(_, p)| Envelope::Presence(p.presence.clone())),
        );
        // The directories the requester follows and holds an older version of (a few, bounded
        // by `FOLLOWING_MAX`), before the manifests they vouch for: a follower that missed one
        // learns it here. An equal version with another body is left to gossip.
        for held in self.curators.held() {
            let theirs = digest.following.iter().find(|(c, _)| *c == held.dir.curator);
            if theirs.is_some_and(|(_, version)| *version < held.dir.version) {
                push(&mut out, Envelope::Directory(held.signed.clone()));
            }
        }
        let mut ids: Vec<ProjectId> = self.projects.keys().copied().collect();
        ids.push(super::relay_project());
        for project in ids {
            let Some(mine) = self.project_digest(project) else { continue };
            let theirs = digest.projects.iter().find(|d| d.project == project);
            let behind = theirs.is_none_or(|t| t.manifest_version < mine.manifest_version);
            // Of a split project, a peer is sent only work whose every state this node holds:
            // the items of its shard when that lies in this node's, or of this node's shard
            // when that lies in the peer's (a peer gone shallower first, gathering its shard
            // from each part). Items taken in bare from a batch, without their states, would
            // look open and be claimed again; so a peer in another shard, or one that does not
            // know the split yet, gets nothing but the manifest, and its shard's work from a
            // member of that shard.
            let shard = match (mine.shard, theirs.and_then(|t| t.shard)) {
                (None, theirs) => Some(theirs),
                (Some(_), _) if behind => None,
                (Some(m), None) => Some(Some(m)),
                (Some(m), Some(t)) if m.covers(&t) => Some(Some(t)),
                (Some(m), Some(t)) if t.covers(&m) => Some(Some(m)),
                (Some(_), Some(_)) => None,
            };
            if let Some(p) = self.projects.get(&project) {
                if behind {
                    push(&mut out, Envelope::Manifest(p.manifest.clone()));
                }
                let Some(shard) = shard else { continue };
                if theirs.is_none_or(|t| t.batches != mine.batches) {
                    for b in p.batches.values().filter(|b| batch_in(b, project, shard)) {
                        push(&mut out, Envelope::Batch(b.clone()));
                    }
                }
            }
            let Some(shard) = shard else { continue };
            if project == super::relay_project() && digest.relay != self.relay_hash() {
                for r in self.relay_requests.values() {
                    push(&mut out, Envelope::RelayRequest(r.clone()));
                }
            }
            for (bucket, hash) in mine.buckets.iter().enumerate() {
                if theirs.is_some_and(|t| t.buckets[bucket] == *hash) {
                    continue;
                }
                let differing = self
                    .items
                    .iter()
                    .filter(|(id, e)| e.project == project && bucket_of_entry(id, e) == bucket)
                    .filter(|(id, e)| in_shard(id, &e.work, shard));
                for (_, e) in differing {
                    // What ended the previous epoch first, so the claim after it is not early.
                    if let Some(prior) = e.phase.prior() {
                        push(&mut out, prior.clone());
                    }
                    if let Some(proof) = e.phase.proof() {
                        push(&mut out, proof);
                    }
                    // Ongoing work's ready receipt after its claim (which carries the lease).
                    if let Some(ready) = e.phase.ready_receipt() {
                        push(&mut out, ready);
                    }
                    // Evidence about earlier epochs after it, for fencing results alike.
                    for env in e.past.envelopes().iter().filter(|env| e.phase.prior() != Some(*env))
                    {
                        push(&mut out, env.clone());
                    }
                    // And the failures that decide whether it failed for the mesh.
                    for env in e.fails.envelopes() {
                        push(&mut out, env);
                    }
                }
            }
        }
        SyncDelta { envelopes: out, more }
    }
}
