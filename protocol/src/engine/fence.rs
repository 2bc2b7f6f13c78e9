//! Fencing: which result an item keeps, judged from signed data alone.
//!
//! A result counts only under the claim the mesh agreed on for its epoch. Two facts decide
//! that, and both are signed: the claims of an item's epochs (their `since_ms` says when each
//! began, their lease when each was due to end), and what ended an epoch (a release or a
//! failure by its holder). [`result_beats`] compares a new result with the one an item keeps, or with
//! the claim of the later epoch it is held at; [`Past`] keeps the evidence about earlier epochs
//! that a result must not contradict. Both are pure: every node that has seen the same signed
//! messages decides alike, whatever order they came in.
//!
//! The rules (see docs/protocol.md, "Fencing results"):
//! - a result whose claim is outranked by a known claim of the same epoch never held it;
//! - a result whose claim began after a later epoch had begun (clearly: by more than the
//!   fencing skew, as the two starts are read on two clocks) was made after its epoch ended;
//! - a holder that released or failed an epoch cannot also finish it;
//! - a lower-epoch result replaces a higher-epoch result or claim only when its claim began
//!   first, it was finished inside its lease, and either it was finished before the higher
//!   claim was made or the higher claim is of the next epoch and came while that lease ran.

use std::cmp::Reverse;

use crate::ids::NodeId;
use crate::message::{Claim, Envelope};
use crate::signed::Signed;

use super::{CLAIM_BUCKET_MS, FENCE_SKEW_MS};

/// Most pieces of evidence kept about an item's earlier epochs; the oldest epochs go first.
pub const PAST_MAX: usize = 8;

/// The total order on claims for one item: higher epoch, then the earlier time bucket of
/// `since_ms` (so a late claim cannot take an item already held at that epoch), then the
/// higher HRW score, then the node id.
pub(super) fn claim_key(
    epoch: u32,
    since_ms: u64,
    score: u64,
    node: NodeId,
) -> (u32, Reverse<u64>, u64, NodeId) {
    (epoch, Reverse(since_ms / CLAIM_BUCKET_MS), score, node)
}

/// Where claim `c` by `signer` stands in the claim order (the whole of [`claim_key`]).
pub fn claim_order(c: &Claim, signer: NodeId) -> (u32, Reverse<u64>, u64, NodeId) {
    claim_key(c.epoch, c.since_ms, crate::hrw::score(&c.item, &signer), signer)
}

/// One result (or the claim of a held epoch), as far as fencing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ResultKey {
    pub(super) epoch: u32,
    pub(super) since_ms: u64,
    pub(super) score: u64,
    pub(super) node: NodeId,
    /// The end of the lease the result was produced under (from its embedded claim).
    pub(super) lease_until_ms: u64,
    /// When the holder finished; `u64::MAX` for an epoch still being worked.
    pub(super) done_at_ms: u64,
}

impl ResultKey {
    fn order(&self) -> (u32, Reverse<u64>, u64, NodeId) {
        claim_key(self.epoch, self.since_ms, self.score, self.node)
    }
}

/// What a new result does to the result (or held claim) an item has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResultOrder {
    /// The new result is the item's result from now on.
    Replaces,
    /// The new result was honest but late: the item keeps what it has.
    Stale,
    /// The new result's claim never held its epoch: rejected, and its sender is to blame.
    Fenced,
}

/// Whether the result `lo` stands against the claim `hi` of a later epoch: `lo`'s claim began
/// first and its result was finished inside its lease, and either `lo` was finished before
/// the epoch after it began, or `hi` is that next epoch and was claimed while `lo`'s lease
/// still ran (it was early). For an `hi` further on, `next_since` is when the epoch after
/// `lo`'s began, from the evidence kept; without it, `hi`'s own start is the latest it can
/// have begun. (Evidence that arrives later withdraws a result it fences, see
/// `Engine::note_past`.)
fn stands(lo: &ResultKey, hi: &ResultKey, next_since: Option<u64>) -> bool {
    let next = lo.epoch.checked_add(1) == Some(hi.epoch);
    let next_since = if next { hi.since_ms } else { next_since.unwrap_or(hi.since_ms) };
    let began_first = lo.since_ms <= next_since && lo.since_ms <= hi.since_ms;
    let inside_lease = lo.done_at_ms <= lo.lease_until_ms.saturating_add(FENCE_SKEW_MS);
    let hi_early = next && hi.since_ms.saturating_add(FENCE_SKEW_MS) < lo.lease_until_ms;
    let lo_first = next_since > lo.done_at_ms.saturating_add(FENCE_SKEW_MS);
    began_first && inside_lease && (hi_early || lo_first)
}

/// Judges the result `new` against `old`, the item's result or the claim of the epoch it is
/// held at (with `done_at_ms` = `u64::MAX`). Both are read from signed data; `next_since` is
/// when the epoch after the lower of the two began, where the evidence kept shows it.
pub(super) fn result_beats(
    new: &ResultKey,
    old: &ResultKey,
    next_since: Option<u64>,
) -> ResultOrder {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match new.epoch.cmp(&old.epoch) {
        Equal if new.order() > old.order() => ResultOrder::Replaces,
        Equal if new.node != old.node => ResultOrder::Fenced,
        Equal => ResultOrder::Stale,
        Greater if stands(old, new, next_since) => ResultOrder::Stale,
        Greater => ResultOrder::Replaces,
        Less if new.since_ms > old.since_ms.saturating_add(FENCE_SKEW_MS) => ResultOrder::Fenced,
        Less if stands(new, old, next_since) => ResultOrder::Replaces,
        Less => ResultOrder::Stale,
    }
}

/// Evidence about an item's earlier epochs: the best claim known for each, and the releases
/// and failures that ended them. At most [`PAST_MAX`] envelopes, sorted by epoch; empty (and
/// one pointer wide) for the many items that finish in their first epoch.
#[derive(Debug, Clone, Default)]
pub(super) struct Past(Option<Box<[Envelope]>>);

/// The epoch an envelope in [`Past`] is about, and the claim it carries, if any.
fn facts(env: &Envelope) -> Option<(u32, Option<&Claim>)> {
    match env {
        Envelope::Claim(c) => c.verified_ref().ok().map(|c| (c.epoch, Some(c))),
        Envelope::Failure(f) => {
            let c = f.verified_ref().ok()?.claim.verified_ref().ok()?;
            Some((c.epoch, Some(c)))
        }
        Envelope::Release(r) => r.verified_ref().ok().map(|r| (r.epoch, None)),
        _ => None,
    }
}

impl Past {
    /// The envelopes kept, oldest epoch first.
    pub(super) fn envelopes(&self) -> &[Envelope] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// Whether a result by `node` under claim `c` (whose HRW score is `score`) contradicts
    /// what is known of earlier epochs: its claim is outranked by a known claim of the same
    /// epoch, a later epoch began before it, `node` released or failed that epoch, or `node`
    /// claimed it while its own lease of an earlier epoch still ran (see `was_early`).
    pub(super) fn fences(&self, node: NodeId, c: &Claim, score: u64) -> bool {
        self.fences_at(node, c, score, None, None)
    }

    /// [`Past::fences`], for an item also known at epoch `now_at` (the one it is held, open or
    /// done at here, which is not in the evidence kept) and, for a lane, open here under
    /// `opened_by`: the release that ended its last epoch counts as given back like one kept
    /// in the evidence. (A node that took it in ahead of its view, back from a snapshot or
    /// caught up by sync, keeps it only there; without it the releaser's claim of the next
    /// epoch, made while its lease of the released one would still have run, would look early.)
    pub(super) fn fences_at(
        &self,
        node: NodeId,
        c: &Claim,
        score: u64,
        now_at: Option<u32>,
        opened_by: Option<&Envelope>,
    ) -> bool {
        self.contradicts(node, c, score) || self.was_early(node, c, now_at, opened_by)
    }

    /// Whether `node` began claim `c` while its own lease of an earlier epoch, signed before
    /// `c` began, still ran, with that epoch not given back by then and no epoch between known
    /// here. An honest holder renews its lease; it never claims past it, unless its view
    /// moved on through an epoch in between (another node took the item and let it go): the
    /// evidence of such an epoch, once here, clears the claim. (Another node's claim in that
    /// window may be early only in some views, when the holder showed its renewal to some nodes
    /// and not others; the result order settles that case, see `result_beats`.)
    fn was_early(
        &self,
        node: NodeId,
        c: &Claim,
        now_at: Option<u32>,
        opened_by: Option<&Envelope>,
    ) -> bool {
        let began = c.since_ms;
        let list = self.envelopes();
        let given_back = |ep: u32| {
            list.iter().chain(opened_by).any(|env| match env {
                Envelope::Release(r) => r
                    .verified_ref()
                    .is_ok_and(|r| r.epoch == ep && r.at_ms <= began.saturating_add(FENCE_SKEW_MS)),
                Envelope::Failure(_) => facts(env).is_some_and(|(e, _)| e == ep),
                _ => false,
            })
        };
        let between = |ep: u32| {
            now_at.is_some_and(|e| ep < e && e < c.epoch)
                || list.iter().any(|env| facts(env).is_some_and(|(e, _)| ep < e && e < c.epoch))
        };
        list.iter().any(|env| {
            facts(env).is_some_and(|(ep, k)| {
                ep < c.epoch
                    && env.signer() == node
                    && k.is_some_and(|k| {
                        k.at_ms <= began && k.lease_until_ms > began.saturating_add(FENCE_SKEW_MS)
                    })
                    && !given_back(ep)
                    && !between(ep)
            })
        })
    }

    fn contradicts(&self, node: NodeId, c: &Claim, score: u64) -> bool {
        let mine = claim_key(c.epoch, c.since_ms, score, node);
        self.envelopes().iter().any(|env| {
            let Some((epoch, claim)) = facts(env) else { return false };
            let signer = env.signer();
            if epoch > c.epoch {
                // Two clocks: the later epoch must have begun clearly before.
                return claim
                    .is_some_and(|k| k.since_ms.saturating_add(FENCE_SKEW_MS) < c.since_ms);
            }
            if epoch < c.epoch {
                return false;
            }
            let ended_by_me = signer == node && !matches!(env, Envelope::Claim(_));
            let outranked = claim.is_some_and(|k| signer != node && claim_order(k, signer) > mine);
            ended_by_me || outranked
        })
    }

    /// The best bare claim of `epoch` kept as evidence, if it is not `except`'s.
    pub(super) fn best_claim(&self, epoch: u32, except: NodeId) -> Option<Signed<Claim>> {
        self.envelopes().iter().find_map(|env| match env {
            Envelope::Claim(c)
                if c.verified_ref().is_ok_and(|c| c.epoch == epoch)
                    && c.signer().node_id() != except =>
            {
                Some(c.clone())
            }
            _ => None,
        })
    }

    /// When `epoch` began, as far as the evidence shows: the `since_ms` of its best claim known.
    pub(super) fn began(&self, epoch: u32) -> Option<u64> {
        self.envelopes()
            .iter()
            .filter_map(facts)
            .filter(|(ep, _)| *ep == epoch)
            .filter_map(|(_, c)| c.map(|c| c.since_ms))
            .min()
    }

    /// Takes in one piece of evidence about an earlier epoch: a claim (kept if it is the best
    /// known for its epoch and no later epoch began before it), a release or a failure (kept
    /// once per signer and epoch). Returns whether anything changed.
    pub(super) fn note(&mut self, env: &Envelope) -> bool {
        let Some((epoch, claim)) = facts(env) else { return false };
        let signer = env.signer();
        if let Some(c) = claim
            && self.fences(signer, c, crate::hrw::score(&c.item, &signer))
            && matches!(env, Envelope::Claim(_))
        {
            return false;
        }
        if self.envelopes().iter().any(|e| e == env) {
            return false;
        }
        let mut list: Vec<Envelope> = self.envelopes().to_vec();
        let same_kind = |e: &Envelope| {
            facts(e).is_some_and(|(ep, _)| ep == epoch)
                && std::mem::discriminant(e) == std::mem::discriminant(env)
                && (matches!(env, Envelope::Claim(_)) || e.signer() == signer)
        };
        if let Some(i) = list.iter().position(same_kind) {
            let better = match (&list[i], claim) {
                (Envelope::Claim(old), Some(new)) => old.verified_ref().is_ok_and(|o| {
                    claim_order(new, signer) > claim_order(o, old.signer().node_id())
                }),
                // A later renewal or a second failure of the same holder adds nothing.
                _ => false,
            };
            if !better {
                return false;
            }
            list[i] = env.clone();
        } else {
            let at = list.partition_point(|e| facts(e).is_some_and(|(ep, _)| ep <= epoch));
            list.insert(at, env.clone());
            if list.len() > PAST_MAX {
                list.remove(0);
            }
        }
        self.0 = Some(list.into_boxed_slice());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: u32, since: u64, lease: u64, done: u64, node: u8) -> ResultKey {
        ResultKey {
            epoch,
            since_ms: since,
            score: u64::from(node),
            node: NodeId([node; 32]),
            lease_until_ms: lease,
            done_at_ms: done,
        }
    }

    #[test]
    fn a_lower_epoch_claim_made_after_the_higher_one_began_is_fenced() {
        let p = key(2, 42_000, 72_000, 50_000, 2);
        let forged = key(1, 100_000, 130_000, 100_000, 3);
        assert_eq!(result_beats(&forged, &p, None), ResultOrder::Fenced);
        let held = key(2, 42_000, 72_000, u64::MAX, 2);
        let forged = key(1, 45_000, 75_000, 45_000, 3);
        assert_eq!(result_beats(&forged, &held, None), ResultOrder::Fenced);
    }

    #[test]
    fn a_lower_epoch_result_stands_only_inside_its_lease_against_an_early_claim() {
        let early_hi = key(2, 42_000, 72_000, 50_000, 2);
        // Claimed at 10 s, renewed to 60 s, finished at 50 s: the higher claim was early.
        assert_eq!(
            result_beats(&key(1, 10_000, 60_000, 50_000, 1), &early_hi, None),
            ResultOrder::Replaces
        );
        // Finished after its own lease: late.
        assert_eq!(
            result_beats(&key(1, 10_000, 40_000, 45_000, 1), &early_hi, None),
            ResultOrder::Stale
        );
        // An epoch further on was not early against it: the one between came after its lease.
        let later = key(3, 42_000, 72_000, 50_000, 2);
        assert_eq!(
            result_beats(&key(1, 10_000, 60_000, 50_000, 1), &later, None),
            ResultOrder::Stale
        );
        assert_eq!(
            result_beats(&later, &key(1, 10_000, 60_000, 50_000, 1), None),
            ResultOrder::Replaces
        );
        // A result finished before the epoch after it began stands; evidence of when that was
        // is used where it is kept, the later epoch's own start otherwise.
        let before_next = key(1, 10_000, 60_000, 30_000, 1);
        assert_eq!(result_beats(&before_next, &later, Some(35_000)), ResultOrder::Replaces);
        assert_eq!(result_beats(&later, &before_next, Some(35_000)), ResultOrder::Stale);
        assert_eq!(result_beats(&before_next, &later, Some(30_500)), ResultOrder::Stale);
        assert_eq!(result_beats(&before_next, &later, None), ResultOrder::Replaces);
        // The same two the other way round agree.
        assert_eq!(
            result_beats(&early_hi, &key(1, 10_000, 60_000, 50_000, 1), None),
            ResultOrder::Stale
        );
        assert_eq!(
            result_beats(&early_hi, &key(1, 10_000, 40_000, 45_000, 1), None),
            ResultOrder::Replaces
        );
    }

    #[test]
    fn equal_epochs_follow_the_claim_order_and_fence_the_outranked() {
        let first = key(1, 10_000, 40_000, 20_000, 1);
        let later = key(1, 25_000, 55_000, 30_000, 9);
        assert_eq!(result_beats(&later, &first, None), ResultOrder::Fenced);
        assert_eq!(result_beats(&first, &later, None), ResultOrder::Replaces);
        let renewal_of_first = key(1, 10_000, 50_000, 20_000, 1);
        assert_eq!(result_beats(&renewal_of_first, &first, None), ResultOrder::Stale);
    }

    proptest::proptest! {
        /// Whatever two results meet, every node keeps the same one: the verdict one way
        /// replaces exactly when the verdict the other way does not.
        #[test]
        fn two_results_settle_alike_in_either_order(
            e1 in 1u32..4, e2 in 1u32..4,
            s1 in 0u64..100, s2 in 0u64..100,
            l1 in 0u64..60, l2 in 0u64..60,
            d1 in 0u64..80, d2 in 0u64..80,
            n1 in 0u8..4, n2 in 0u8..4,
            next in proptest::option::of(0u64..200),
        ) {
            let a = key(e1, s1 * 1_000, (s1 + l1) * 1_000, (s1 + d1) * 1_000, n1);
            let b = key(e2, s2 * 1_000, (s2 + l2) * 1_000, (s2 + d2) * 1_000, n2);
            proptest::prop_assume!(a != b && !(e1 == e2 && n1 == n2));
            let next = next.map(|n| n * 1_000);
            let ab = result_beats(&a, &b, next) == ResultOrder::Replaces;
            let ba = result_beats(&b, &a, next) == ResultOrder::Replaces;
            proptest::prop_assert!(ab != ba, "a over b: {ab}, b over a: {ba}; {a:?} {b:?}");
        }
    }
}
