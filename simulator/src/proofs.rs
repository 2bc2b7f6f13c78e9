//! Copies and storage proofs in the simulator: which node really keeps which result, what it
//! answers when its engine is challenged (`Output::ProofDue`), and the check that no duty is
//! held for long by a node without its copy.
//!
//! An honest node keeps a copy of each result it produces and of each result a seeding duty of
//! it stored; a hoarding liar (`byzantine.hoard`) reports its duties ready and keeps nothing.
//! Challenged, an honest node answers with a real `bao` slice of the result's bytes
//! ([`crate::world::result_blob`]); a hoarder signs a renewal with a forged proof and sends it
//! to its peers (who must refuse it), and gives its own engine the forgery too.

use starling_protocol::engine::LocalView;
use starling_protocol::message::Claim;
use starling_protocol::proof::{self, StorageProof};
use starling_protocol::{Digest, Envelope, Input, ItemId, ItemState, NodeId, Signed, WorkItem};

use crate::world::{ViolationKind, World, honest_result, result_blob};

/// Slack on top of the rule's bound on how long a copyless node can hold a duty: a claim and
/// its renewals settling, a sync round, the checker's own interval.
const COPYLESS_SLACK_MS: u64 = 30_000;

/// Per duty held by a node without the copy, in an honest observer's view: the holder and
/// since when the observer has seen it so.
pub(crate) type Copyless = std::collections::BTreeMap<ItemId, (NodeId, u64)>;

impl World {
    /// Node `n` finished `item` reporting `result`: it keeps the copy, if the scenario
    /// replicates results and it is not a hoarder.
    pub(crate) fn keep_copy(&mut self, n: u32, item: &ItemId, result: &Digest) {
        if self.s.replication == 0 {
            return;
        }
        let node = &self.nodes[n as usize];
        let Some(engine) = node.engine.as_ref() else { return };
        let copy = match engine.item_work(item) {
            Some((_, WorkItem::SeedDuty { result, .. })) => {
                if node.byz && self.s.byzantine.hoard {
                    return;
                }
                *result
            }
            Some((_, WorkItem::CrawlChunk { .. })) => *result,
            _ => return,
        };
        self.nodes[n as usize].copies.insert(copy);
    }

    /// Node `n`'s engine asks for the proof of `slot` for its duty `item` (a copy of `result`).
    pub(crate) fn answer_proof(
        &mut self,
        n: u32,
        item: ItemId,
        epoch: u32,
        slot: u64,
        result: Digest,
    ) {
        let node = &self.nodes[n as usize];
        let Some(engine) = node.engine.as_ref() else { return };
        let Some((_, WorkItem::SeedDuty { source, .. })) = engine.item_work(&item) else { return };
        let source = *source;
        let proof = if node.copies.contains(&result) {
            let blob = result_blob(&source, result == honest_result(&source));
            Some(proof::prove_from_blob(&item, &blob, slot))
        } else if node.byz {
            let forged = self.forged_renewal(n, item, epoch, slot);
            if let Some((env, proof)) = forged {
                self.publish(n, env);
                Some(proof)
            } else {
                None
            }
        } else {
            self.violate(
                ViolationKind::HonestUnproven,
                format!(
                    "honest node {n} was challenged for a copy of {} it does not have",
                    result.short()
                ),
            );
            None
        };
        self.drive(n, Input::StorageProof { item, epoch, slot, proof });
    }

    /// A hoarder's renewal of `item` at `epoch` with a forged proof for `slot`, and the proof.
    fn forged_renewal(
        &self,
        n: u32,
        item: ItemId,
        epoch: u32,
        slot: u64,
    ) -> Option<(Envelope, StorageProof)> {
        let node = &self.nodes[n as usize];
        let engine = node.engine.as_ref()?;
        let held: LocalView = engine.local_work().find(|l| l.item == item && l.epoch == epoch)?;
        let now = crate::world::node_clock(self.now, node.clock_offset_ms);
        let lease = self.s.lease_ms;
        // The right length, the right header, the wrong bytes.
        let mut slice = (crate::world::RESULT_BYTES as u64).to_le_bytes().to_vec();
        slice.extend(std::iter::repeat_n(0x5a, 1024 + 64 * 2));
        let proof = StorageProof { slot, slice };
        let claim = Claim {
            item,
            epoch,
            at_ms: now,
            lease_until_ms: now + lease,
            since_ms: held.since_ms,
            proof: Some(proof.clone()),
        };
        Some((Envelope::Claim(Signed::sign(&node.key, &claim)), proof))
    }

    /// Looks at the seeding duties in an honest observer's view: a duty held by a node without
    /// its copy for longer than the proof rule allows is a violation (whatever the manifest's
    /// proof policy: a scenario with proofs off shows what they are for).
    pub(crate) fn check_copies(&mut self) {
        if self.s.replication == 0 {
            return;
        }
        let Some(o) = self.nodes.iter().position(|n| !n.byz && n.up()) else { return };
        let Some(engine) = self.nodes[o].engine.as_ref() else { return };
        let now = self.now;
        let mut seen = Copyless::new();
        for (item, _, st) in engine.items() {
            let ItemState::Held { holder, .. } = st else { continue };
            let Some((_, WorkItem::SeedDuty { result, .. })) = engine.item_work(&item) else {
                continue;
            };
            let Some(h) = self.watch.node_of(&holder) else { continue };
            if self.nodes[h as usize].copies.contains(result) {
                continue;
            }
            let since = match self.copyless.get(&item) {
                Some((x, t)) if *x == holder => *t,
                _ => now,
            };
            seen.insert(item, (holder, since));
        }
        self.copyless = seen;
        let longest = self.copyless.values().map(|(_, t)| now - t).max().unwrap_or(0);
        self.stats.copyless_held_ms_max = self.stats.copyless_held_ms_max.max(longest);
        let bound = self.copyless_bound();
        if longest > bound
            && let Some((item, (holder, t))) =
                self.copyless.iter().find(|(_, (_, t))| now - t > bound)
        {
            let detail = format!(
                "duty {} held by {} without its copy since t={t}ms, over {bound} ms",
                item.short(),
                holder.short()
            );
            self.violate(ViolationKind::CopylessHeld, detail);
        }
    }

    /// The longest a node without the copy can hold a duty under the proof rule: the grace,
    /// a whole slot, the zone (two leases), one more lease to run out, and slack. Without
    /// proofs nothing bounds it: a scenario that turns them off is held to the tightest slot
    /// the rule allows, so with hoarders it fails (what shows proofs are needed).
    pub(crate) fn copyless_bound(&self) -> u64 {
        let mut policy = starling_protocol::manifest::VerifyPolicy {
            proof_every_ms: self.s.verify.proof_every_ms,
            proof_grace_ms: self.s.verify.proof_grace_ms,
            ..Default::default()
        };
        if policy.proof_every_ms == 0 {
            policy.proof_every_ms = starling_protocol::manifest::PROOF_EVERY_MS_MIN;
        }
        let lease = self.s.lease_ms;
        proof::grace_ms(&policy, crate::world::RESULT_BYTES as u64)
            + proof::every_ms(&policy, lease)
            + 3 * lease
            + COPYLESS_SLACK_MS
    }

    /// Duties held at the end by a node without the copy, in the observer's view.
    pub(crate) fn copyless_at_end(&self) -> u64 {
        self.copyless.len() as u64
    }
}
