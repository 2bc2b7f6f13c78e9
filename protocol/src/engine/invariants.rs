//! The engine's bookkeeping checked against itself, in debug builds, at the end of every
//! [`Engine::handle`] (as the kept digest buckets are checked against a walk whenever a digest
//! is made). Each index the engine keeps beside its items must agree with them:
//!
//! - local work is on items this node holds, at the epoch it holds them, and every item it
//!   holds under a lease still running here is local work;
//! - the agenda and the items' wake times name the same (time, item) pairs;
//! - each project's kept digest buckets are what its items add up to.
//!
//! Not checked, because it does not hold: that no item waits for a slot (the ready set) while
//! this node works on it. The ready set is a lazy queue: an item put back on the agenda while
//! it waits (by `rearm_open_items`) can be queued twice, under two keys, and when one entry is
//! claimed the other stays, to be skipped if the item is still worked here when it comes up,
//! or claimed from if the item was lost and is claimable again by then. Removing such entries
//! would change which items are claimed when.
//!
//! A check that fails panics with what disagreed: a bug in the engine, never bad input. The
//! tests plant each inconsistency through [`Engine::plant`] and expect the panic.

use std::collections::BTreeMap;

use crate::ids::ProjectId;
use crate::message::SYNC_BUCKETS;

use super::{Engine, Phase, sync, xor8};

impl Engine {
    /// Panics if the engine's indexes disagree with its items (see the module docs).
    pub(super) fn check_invariants(&self) {
        self.check_local_is_held();
        self.check_held_is_local();
        self.check_agenda();
        self.check_buckets();
    }

    fn check_local_is_held(&self) {
        for (id, l) in &self.local {
            let phase = self.items.get(id).map(|e| &e.phase);
            let held = matches!(phase,
                Some(Phase::Held { holder, epoch, .. }) if *holder == self.me && *epoch == l.epoch);
            assert!(held, "local work on {id:?} at epoch {} is not held here: {phase:?}", l.epoch);
        }
    }

    fn check_held_is_local(&self) {
        for (id, e) in &self.items {
            if let Phase::Held { holder, lease_until, .. } = &e.phase {
                let running = *lease_until > self.last_now;
                assert!(
                    *holder != self.me || !running || self.local.contains_key(id),
                    "{id:?} is held by this node under a running lease but is no local work"
                );
            }
        }
    }

    fn check_agenda(&self) {
        let mut timers = 0;
        for (id, e) in &self.items {
            if let Some(at) = e.wake_at {
                timers += 1;
                assert!(self.agenda.contains(&(at, *id)), "{id:?} wakes at {at} off the agenda");
            }
        }
        for (at, id) in &self.agenda {
            let wake_at = self.items.get(id).and_then(|e| e.wake_at);
            assert_eq!(
                wake_at,
                Some(*at),
                "the agenda wakes {id:?} at {at}, the item at {wake_at:?}"
            );
        }
        assert_eq!(timers, self.agenda.len(), "agenda and wake times differ in number");
    }

    fn check_buckets(&self) {
        let mut walked: BTreeMap<ProjectId, [[u8; 8]; SYNC_BUCKETS]> = BTreeMap::new();
        for (id, e) in &self.items {
            let b = &mut walked.entry(e.project).or_insert([[0; 8]; SYNC_BUCKETS])
                [sync::bucket_of_entry(id, e)];
            *b = xor8(*b, e.in_bucket());
        }
        for (project, kept) in &self.buckets {
            let walked = walked.remove(project).unwrap_or([[0; 8]; SYNC_BUCKETS]);
            assert_eq!(*kept, walked, "kept digest buckets of {project:?} drifted");
        }
        for (project, walked) in walked {
            assert_eq!(walked, [[0; 8]; SYNC_BUCKETS], "{project:?} has no digest buckets kept");
        }
    }
}

/// An inconsistency to plant in an engine's state, for the tests that show each check fires.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(super) enum Plant {
    /// Local work at an epoch the item is not held at.
    LocalAtOtherEpoch,
    /// An item held here under a running lease, dropped from local work.
    HeldNotLocal,
    /// An item's wake time moved without the agenda.
    WakeOffAgenda,
    /// A kept digest bucket changed without its items.
    BucketDrift,
}

#[cfg(test)]
impl Engine {
    /// Plants `plant` on `item` (which this node must hold, with a timer set).
    pub(super) fn plant(&mut self, plant: Plant, item: &crate::ids::ItemId) {
        match plant {
            Plant::LocalAtOtherEpoch => {
                self.local.get_mut(item).expect("held").epoch += 1;
            }
            Plant::HeldNotLocal => {
                self.local.remove(item);
            }
            Plant::WakeOffAgenda => {
                let e = self.items.get_mut(item).expect("known");
                e.wake_at = e.wake_at.map(|t| t + 1);
            }
            Plant::BucketDrift => {
                self.buckets[0].1[0][0] ^= 1;
            }
        }
    }
}
