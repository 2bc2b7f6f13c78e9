//! Receipts held back because, in this node's view, their claim came before the lease it
//! follows ran out (or is still settling): each is taken in again when that time comes (see
//! `Engine::hold_back` for why they are kept rather than dropped).

use std::collections::BTreeMap;

use crate::message::Envelope;

/// Receipts held back at once until the lease their claim follows has run out.
pub(super) const EARLY_MAX: usize = 256;

/// Held-back receipts by when they fall due, in arrival order among equals. Bounded by
/// [`EARLY_MAX`]: when full, the one to fall due latest makes room.
#[derive(Debug, Default)]
pub(super) struct EarlyReceipts {
    held: BTreeMap<(u64, u64), Envelope>,
    seq: u64,
}

impl EarlyReceipts {
    /// Keeps `env` to take in again at `at`.
    pub(super) fn hold(&mut self, env: Envelope, at: u64) {
        if self.held.len() >= EARLY_MAX {
            self.held.pop_last();
        }
        self.seq += 1;
        self.held.insert((at, self.seq), env);
    }

    /// When the next receipt falls due.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.held.first_key_value().map(|((t, _), _)| *t)
    }

    /// The next receipt due by `now`, taken out.
    pub(super) fn pop_due(&mut self, now: u64) -> Option<Envelope> {
        if self.next_due()? > now {
            return None;
        }
        self.held.pop_first().map(|(_, env)| env)
    }

    /// Number held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_keypair;
    use crate::message::Release;
    use crate::signed::Signed;

    fn env(n: u64) -> Envelope {
        let r = Release {
            item: crate::ids::ItemId([1; 32]),
            epoch: 1,
            at_ms: n,
            cooldown_until_ms: None,
            drain_ms: None,
        };
        Envelope::Release(Signed::sign(&test_keypair(1), &r))
    }

    #[test]
    fn receipts_fall_due_in_time_order_then_arrival_order() {
        let mut early = EarlyReceipts::default();
        early.hold(env(1), 300);
        early.hold(env(2), 100);
        early.hold(env(3), 100);
        assert_eq!(early.next_due(), Some(100));
        assert_eq!(early.pop_due(99), None);
        assert_eq!(early.pop_due(100), Some(env(2)));
        assert_eq!(early.pop_due(100), Some(env(3)));
        assert_eq!(early.pop_due(299), None);
        assert_eq!(early.pop_due(1_000), Some(env(1)));
        assert_eq!((early.pop_due(u64::MAX), early.next_due()), (None, None));
    }

    #[test]
    fn when_full_the_latest_to_fall_due_makes_room() {
        let mut early = EarlyReceipts::default();
        for i in 0..EARLY_MAX as u64 {
            early.hold(env(i), 1_000 + i);
        }
        early.hold(env(u64::MAX), 10);
        assert_eq!(early.len(), EARLY_MAX);
        let mut due = Vec::new();
        while let Some(e) = early.pop_due(u64::MAX) {
            due.push(e);
        }
        assert_eq!(due.first(), Some(&env(u64::MAX)));
        assert!(!due.contains(&env(EARLY_MAX as u64 - 1)), "the latest was kept");
        assert_eq!(due.len(), EARLY_MAX);
    }
}
