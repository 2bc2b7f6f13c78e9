//! The engine's side of storage proofs (the rule is in [`crate::proof`]): every claim of a
//! seeding duty is checked for the proof it owes, and this node's own renewals in a slot's
//! zone carry the proof its driver cut from the stored copy.
//!
//! When a renewal is due in a zone, the engine asks its driver with [`Output::ProofDue`] and
//! renews once [`Input::StorageProof`](super::Input::StorageProof) brings a proof that checks.
//! A driver that has no copy (or answers with one that does not check, or not before the lease
//! would run out) makes the engine give the duty back, so it goes to a node that has the copy
//! or fetches it; the engine never signs a renewal its peers would refuse.

use crate::ids::ItemId;
use crate::item::WorkItem;
use crate::message::Claim;
use crate::proof::{self, StorageProof};

use super::{Engine, ItemEntry, Output, Phase, Reject};

/// How long the engine waits for its driver's proof before asking again.
pub const PROOF_RETRY_MS: u64 = 2_000;
/// Most results an engine remembers it could not show a copy of.
pub const DISOWNED_MAX: usize = 4_096;

/// The proof this node holds, or asked its driver for, for one of its duties.
#[derive(Debug, Clone)]
pub(super) struct HeldProof {
    epoch: u32,
    slot: u64,
    /// `None` while the driver has not answered.
    proof: Option<StorageProof>,
}

/// What a renewal does about its proof.
pub(super) enum ProofStep {
    /// None is due.
    NotDue,
    /// Carry this one.
    Carry(StorageProof),
    /// Asked for; renew once it comes.
    Wait,
    /// The copy cannot be shown in time: give the duty back.
    GiveUp,
}

impl Engine {
    /// The proof rule for claim `c` of the item in `e`: every node runs it on every claim.
    pub(super) fn check_proof(&self, e: &ItemEntry, c: &Claim) -> Result<(), Reject> {
        if !matches!(&*e.work, WorkItem::SeedDuty { .. }) && c.proof.is_none() {
            return Ok(());
        }
        let Some(p) = self.projects.get(&e.project) else { return Ok(()) };
        proof::check(&p.m.verify, self.lease_of(e), &c.item, &e.work, c)
            .map_err(|_| Reject::Unproven)
    }

    /// What this node's renewal `c` of `item` at `epoch` does about its proof at `now`.
    pub(super) fn proof_step(&mut self, c: &Claim, now: u64) -> ProofStep {
        let Some(e) = self.items.get(&c.item) else { return ProofStep::NotDue };
        let Some(p) = self.projects.get(&e.project) else { return ProofStep::NotDue };
        let Some(slot) = proof::slot_due(&p.m.verify, self.lease_of(e), &e.work, c) else {
            return ProofStep::NotDue;
        };
        let WorkItem::SeedDuty { result, size, .. } = &*e.work else { return ProofStep::NotDue };
        let lease_until = match &e.phase {
            Phase::Held { lease_until, .. } => *lease_until,
            _ => 0,
        };
        match self.proofs.get(&c.item) {
            Some(h) if h.epoch == c.epoch && h.slot == slot => match &h.proof {
                Some(p) => ProofStep::Carry(p.clone()),
                None if now.saturating_add(PROOF_RETRY_MS) >= lease_until => ProofStep::GiveUp,
                None => ProofStep::Wait,
            },
            _ => {
                let (offset, len) = proof::challenge(&c.item, result, *size, slot);
                self.outputs.push_back(Output::ProofDue {
                    item: c.item,
                    epoch: c.epoch,
                    slot,
                    result: *result,
                    size: *size,
                    offset,
                    len,
                });
                let local = &self.local;
                self.proofs.retain(|i, _| local.contains_key(i));
                self.proofs.insert(c.item, HeldProof { epoch: c.epoch, slot, proof: None });
                ProofStep::Wait
            }
        }
    }

    /// Carries out [`Input::StorageProof`](super::Input::StorageProof): the driver's answer
    /// to [`Output::ProofDue`].
    pub(super) fn take_storage_proof(
        &mut self,
        item: ItemId,
        epoch: u32,
        slot: u64,
        answer: Option<StorageProof>,
        now: u64,
    ) {
        let asked = self
            .proofs
            .get(&item)
            .is_some_and(|h| h.epoch == epoch && h.slot == slot && h.proof.is_none());
        let held = self.local.get(&item).is_some_and(|l| l.epoch == epoch);
        if !asked || !held {
            return;
        }
        let checks = match (&answer, self.items.get(&item).map(|e| &*e.work)) {
            (Some(p), Some(WorkItem::SeedDuty { result, size, .. })) => {
                p.slot == slot && proof::verify_slice(&item, result, *size, p).is_ok()
            }
            _ => false,
        };
        if checks {
            if let Some(h) = self.proofs.get_mut(&item) {
                h.proof = answer;
            }
            self.renew(item, now);
        } else {
            self.disown(item, epoch, now);
        }
    }

    /// Gives back duty `item` held at `epoch`, whose copy this node cannot show, and claims
    /// no duty of that result again: the copy is for a node that has it or fetches it.
    pub(super) fn disown(&mut self, item: ItemId, epoch: u32, now: u64) {
        self.proofs.remove(&item);
        self.stats.unproven += 1;
        if let Some(WorkItem::SeedDuty { result, .. }) = self.items.get(&item).map(|e| &*e.work) {
            if self.disowned.len() >= DISOWNED_MAX {
                self.disowned.pop_first();
            }
            self.disowned.insert(*result);
        }
        self.give_back(item, epoch, now);
    }
}
