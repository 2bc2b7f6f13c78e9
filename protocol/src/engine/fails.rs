//! The failure evidence of one item: the signed failures its holders gave back.
//!
//! A failure used to be counted where it arrived, so the count was lost on a restart and never
//! reached a node that learnt the item by sync, and one node failing an item a few times (a full
//! disk, a dead network) failed it for the whole mesh. Now the failures themselves are kept,
//! persisted and synced, and the item's fate is read from them alone, the same on every node:
//!
//! - a **retryable** failure (the site timed out, answered 5xx or 429, robots.txt could not be
//!   read) is never final: the item opens again after a backoff that doubles with each failure
//!   ([`FailLog::backoff_ms`]), for another node, on another network, to try;
//! - a **final** (not retryable) failure ends the item only once [`FAIL_QUORUM`] different
//!   nodes have reported one: a single node's verdict, which may come from its own fault,
//!   never fails an item for everyone.
//!
//! Faults of the node itself (its store, disk, network or clock) are not failures at all: the
//! driver gives such work back with [`crate::Input::LocalFault`], which releases it.

use crate::ids::NodeId;
use crate::message::{Envelope, Failure};
use crate::signed::Signed;

/// Different nodes whose final failures it takes to fail an item for the mesh.
pub const FAIL_QUORUM: usize = 2;
/// Longest wait before an item that failed (retryably) may be claimed again.
pub const RETRY_BACKOFF_MAX_MS: u64 = 300_000;

/// One kept failure.
#[derive(Debug, Clone)]
struct Entry {
    signer: NodeId,
    epoch: u32,
    retryable: bool,
    env: Signed<Failure>,
}

/// The failures of one item, at most `cap` of them, one per (signer, epoch). Empty, it is one
/// null pointer.
#[derive(Debug, Clone, Default)]
pub(super) struct FailLog(Option<Box<[Entry]>>);

impl FailLog {
    /// Failures kept.
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    /// Keeps failure `env` (of `f`, signed by `signer` for `epoch`). Returns whether it was
    /// new. Past `cap`, a final failure takes the place of the oldest retryable one (a quorum
    /// must not be locked out by retries); otherwise the newcomer is dropped.
    pub(super) fn note(
        &mut self,
        signer: NodeId,
        epoch: u32,
        f: &Failure,
        env: &Signed<Failure>,
        cap: usize,
    ) -> bool {
        let mut v: Vec<Entry> = self.0.take().map(Vec::from).unwrap_or_default();
        let added = Self::add(&mut v, signer, epoch, f, env, cap);
        self.0 = (!v.is_empty()).then(|| v.into_boxed_slice());
        added
    }

    fn add(
        v: &mut Vec<Entry>,
        signer: NodeId,
        epoch: u32,
        f: &Failure,
        env: &Signed<Failure>,
        cap: usize,
    ) -> bool {
        if v.iter().any(|x| x.signer == signer && x.epoch == epoch) {
            return false;
        }
        let entry = Entry { signer, epoch, retryable: f.retryable, env: env.clone() };
        if v.len() >= cap.max(FAIL_QUORUM) {
            let oldest_retry = (!f.retryable)
                .then(|| {
                    v.iter().enumerate().filter(|(_, x)| x.retryable).min_by_key(|(_, x)| x.epoch)
                })
                .flatten()
                .map(|(i, _)| i);
            let Some(i) = oldest_retry else { return false };
            v.remove(i);
        }
        v.push(entry);
        v.sort_by_key(|x| (x.epoch, x.signer));
        true
    }

    /// Whether `node` signed one of the failures kept.
    pub(super) fn signed_by(&self, node: &NodeId) -> bool {
        self.0.as_ref().is_some_and(|v| v.iter().any(|x| x.signer == *node))
    }

    /// Whether the item has failed for the mesh: final failures from [`FAIL_QUORUM`] nodes.
    pub(super) fn is_final(&self) -> bool {
        let Some(v) = &self.0 else { return false };
        let mut signers: Vec<NodeId> =
            v.iter().filter(|x| !x.retryable).map(|x| x.signer).collect();
        signers.sort_unstable();
        signers.dedup();
        signers.len() >= FAIL_QUORUM
    }

    /// How long after its latest failure the item waits before it may be claimed again:
    /// `base_ms`, doubled for each further failure kept, at most [`RETRY_BACKOFF_MAX_MS`].
    pub(super) fn backoff_ms(&self, base_ms: u64) -> u64 {
        let n = self.len().saturating_sub(1).min(20) as u32;
        base_ms.saturating_mul(1u64 << n).min(RETRY_BACKOFF_MAX_MS)
    }

    /// The kept failures as envelopes, oldest epoch first.
    pub(super) fn envelopes(&self) -> impl Iterator<Item = Envelope> + '_ {
        self.0.iter().flat_map(|v| v.iter()).map(|x| Envelope::Failure(x.env.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ItemId;
    use crate::keys::Keypair;
    use crate::message::Claim;

    fn failure(key: &Keypair, epoch: u32, retryable: bool) -> (NodeId, Failure, Signed<Failure>) {
        let claim = Claim {
            item: ItemId([1; 32]),
            epoch,
            at_ms: 1,
            lease_until_ms: 10,
            since_ms: 1,
            proof: None,
        };
        let f = Failure { claim: Signed::sign(key, &claim), reason: "x".into(), retryable };
        (key.node_id(), f.clone(), Signed::sign(key, &f))
    }

    #[test]
    fn one_node_never_fails_an_item_for_the_mesh() {
        let a = Keypair::from_secret([1; 32]);
        let b = Keypair::from_secret([2; 32]);
        let mut log = FailLog::default();
        for epoch in 1..=6 {
            let (n, f, s) = failure(&a, epoch, false);
            assert!(log.note(n, epoch, &f, &s, 8));
            assert!(!log.is_final(), "one node's failures ended the item at epoch {epoch}");
        }
        let (n, f, s) = failure(&a, 6, false);
        assert!(!log.note(n, 6, &f, &s, 8), "the same failure counted twice");
        let (n, f, s) = failure(&b, 7, true);
        log.note(n, 7, &f, &s, 8);
        assert!(!log.is_final(), "a retryable failure made a quorum");
        let (n, f, s) = failure(&b, 8, false);
        log.note(n, 8, &f, &s, 8);
        assert!(log.is_final());
    }

    #[test]
    fn retries_do_not_lock_out_a_quorum_and_backoff_is_capped() {
        let a = Keypair::from_secret([1; 32]);
        let b = Keypair::from_secret([2; 32]);
        let mut log = FailLog::default();
        for epoch in 1..=4 {
            let (n, f, s) = failure(&a, epoch, epoch != 1);
            log.note(n, epoch, &f, &s, 4);
        }
        assert_eq!(log.len(), 4);
        let (n, f, s) = failure(&b, 5, true);
        assert!(!log.note(n, 5, &f, &s, 4), "a retry went past the cap");
        let (n, f, s) = failure(&b, 5, false);
        assert!(log.note(n, 5, &f, &s, 4));
        assert_eq!(log.len(), 4);
        assert!(log.is_final());
        assert_eq!(FailLog::default().backoff_ms(2_000), 2_000);
        assert_eq!(log.backoff_ms(2_000), 16_000);
        assert_eq!(log.backoff_ms(u64::MAX), RETRY_BACKOFF_MAX_MS);
    }
}
