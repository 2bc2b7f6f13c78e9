//! The claim rule and the result rule, each one pure function: what an incoming claim or
//! result does to an item, judged from the item's phase, the evidence kept about its earlier
//! epochs, the incoming message, HRW scores, `now` and the settings. Nothing here mutates;
//! `apply.rs` carries out the verdict (moves the item, persists, schedules).
//!
//! Claims on one item are totally ordered by [`claim_key`]: higher epoch, then the earlier
//! `since_ms` bucket, then the higher HRW score, then the node id. A claim at a later epoch
//! is valid only once the lease of the current one has run out (within the skew margin), and
//! a claim the evidence shows never held its epoch (see [`fence::Past::fences`]) wins nothing.

use crate::ids::NodeId;
use crate::message::{Claim, Envelope, Receipt};
use crate::signed::Signed;

#[cfg(test)]
use super::EPOCH_JUMP_MAX;
use super::fence::{self, Past, ResultKey, ResultOrder, claim_key};
use super::{FENCE_SKEW_MS, Phase, RESULT_SETTLE_MS, Reject, apply};

/// An incoming claim and what it is judged against.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClaimCase<'a> {
    /// The item's phase here.
    pub(super) phase: &'a Phase,
    /// The evidence kept about the item's earlier epochs.
    pub(super) past: &'a Past,
    /// The claimant.
    pub(super) node: NodeId,
    /// The claim, checked.
    pub(super) claim: &'a Claim,
    /// The claimant's HRW score for the item.
    pub(super) score: u64,
    /// The item's project's lease length.
    pub(super) lease_ms: u64,
    /// Clock skew tolerated between nodes.
    pub(super) skew_margin_ms: u64,
    /// Most epochs a claim may jump ahead of the item's ([`EPOCH_JUMP_MAX`], more for lanes).
    pub(super) epoch_jump_max: u32,
    /// Whether the item is a host lane: a release that opened it here counts as given back
    /// when judging its releaser's next claim (see [`judge`]).
    pub(super) lane: bool,
    /// This node's clock.
    pub(super) now: u64,
}

/// What an incoming claim does to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The claim holds the item at its epoch from now on, taking it from `prev_holder`.
    Takes {
        /// Who held the item before (at this epoch or the one before), if anyone.
        prev_holder: Option<NodeId>,
    },
    /// A renewal by the holder of the epoch: its lease is extended (if it runs longer).
    Renews,
    /// A claim of an epoch already passed: rejected as [`Reject::Stale`], but kept as evidence
    /// about that epoch, for judging results.
    Evidence,
    /// A claim of a later epoch while the current lease still runs here (in this node's view,
    /// which may be its own: a receipt under it is kept and judged again at `until`). Rejected
    /// as [`Reject::EpochRuleBroken`].
    Early {
        /// When the current lease has run out here, skew margin taken off.
        until: u64,
    },
    /// Rejected for `0`.
    Refused(Reject),
}

#[cfg(test)]
impl Verdict {
    /// The [`Reject`] reason a verdict other than `Takes` or `Renews` answers the message with.
    pub(super) fn reject(self) -> Option<Reject> {
        match self {
            Verdict::Takes { .. } | Verdict::Renews => None,
            Verdict::Evidence => Some(Reject::Stale),
            Verdict::Early { .. } => Some(Reject::EpochRuleBroken),
            Verdict::Refused(r) => Some(r),
        }
    }
}

/// The claim rule: what the claim in `case` does to its item.
pub(super) fn judge(case: &ClaimCase<'_>) -> Verdict {
    let c = case.claim;
    let phase = case.phase;
    if c.lease_until_ms - c.at_ms > case.lease_ms.saturating_add(case.skew_margin_ms) {
        return Verdict::Refused(Reject::LeaseTooLong);
    }
    if c.epoch < phase.epoch() || at_ended_epoch(phase, c, case.node) {
        return Verdict::Evidence;
    }
    // The evidence about earlier epochs shows this claim never held its epoch (its
    // claimant's own lease of an earlier epoch still ran when it began, say; the item's epoch
    // here counts as an epoch between).
    // A lane's release taken in ahead of this node's view (back from a snapshot, by sync) is
    // known only as its open state; its releaser's next claim, made while its lease of the
    // released epoch would still have run, must not look early for want of it. (Lanes only:
    // their epochs change hands every few seconds, and they have no results to fence.)
    let opened_by = match phase {
        Phase::Open { proof: Some(env @ Envelope::Release(_)), .. } if case.lane => Some(env),
        _ => None,
    };
    if case.past.fences_at(case.node, c, case.score, Some(phase.epoch()), opened_by) {
        return Verdict::Refused(Reject::Fenced);
    }
    match phase {
        Phase::Done { receipt } => {
            // A later epoch that began before the result's claim: evidence that the result's
            // claim was made after its epoch ended.
            let began_before = apply::receipt_parts(receipt)
                .is_some_and(|(_, rc)| c.since_ms.saturating_add(FENCE_SKEW_MS) < rc.since_ms);
            if began_before { Verdict::Evidence } else { Verdict::Refused(Reject::Stale) }
        }
        Phase::Failed { .. } => Verdict::Refused(Reject::Stale),
        Phase::Open { epoch, .. } => {
            if c.epoch <= *epoch {
                Verdict::Refused(Reject::Stale)
            } else if c.epoch > epoch.saturating_add(case.epoch_jump_max) {
                Verdict::Refused(Reject::EpochRuleBroken)
            } else {
                Verdict::Takes { prev_holder: None }
            }
        }
        Phase::Held { holder, epoch, score, since, lease_until, .. } => {
            let held = HeldClaim {
                holder: *holder,
                epoch: *epoch,
                score: *score,
                since: *since,
                lease_until: *lease_until,
            };
            judge_against_held(case, &held)
        }
    }
}

/// The claim an item is held under, as far as the claim rule goes.
struct HeldClaim {
    holder: NodeId,
    epoch: u32,
    score: u64,
    since: u64,
    lease_until: u64,
}

/// The claim rule for an item held at an epoch no later than the claim's.
fn judge_against_held(case: &ClaimCase<'_>, held: &HeldClaim) -> Verdict {
    let (c, node) = (case.claim, case.node);
    if c.epoch < held.epoch {
        return Verdict::Refused(Reject::Stale);
    }
    if c.epoch == held.epoch && node == held.holder {
        // A renewal keeps the start of its epoch: a holder that moves it would blur which of
        // two claims of the epoch came first (see `fence.rs`).
        return if c.since_ms == held.since {
            Verdict::Renews
        } else {
            Verdict::Refused(Reject::Stale)
        };
    }
    if c.epoch == held.epoch
        && claim_key(c.epoch, c.since_ms, case.score, node)
            < claim_key(held.epoch, held.since, held.score, held.holder)
    {
        return Verdict::Refused(Reject::Lost);
    }
    if c.epoch > held.epoch {
        if c.epoch > held.epoch.saturating_add(case.epoch_jump_max) {
            return Verdict::Refused(Reject::EpochRuleBroken);
        }
        if case.now.saturating_add(case.skew_margin_ms) < held.lease_until {
            return Verdict::Early { until: held.lease_until - case.skew_margin_ms };
        }
    }
    Verdict::Takes { prev_holder: Some(held.holder) }
}

/// Whether claim `c` by `node` is of an epoch that has ended here: the epoch an open item was
/// released or failed at, or another node's claim of the epoch of the item's result.
fn at_ended_epoch(phase: &Phase, c: &Claim, node: NodeId) -> bool {
    match phase {
        Phase::Open { epoch, .. } => c.epoch == *epoch && *epoch > 0,
        // Another claim of the finished epoch: evidence against its result if it outranks.
        Phase::Done { receipt } => c.epoch == phase.epoch() && receipt.signer().node_id() != node,
        _ => false,
    }
}

/// What ended the epoch before the one of a claim at `epoch` that takes an item in `phase`:
/// kept with the claim, for peers that missed it (handed on in sync deltas).
pub(super) fn prior_of(phase: &Phase, epoch: u32) -> Option<Envelope> {
    match phase {
        Phase::Open { epoch: at, proof } if epoch > *at => proof.clone(),
        Phase::Held { epoch: at, claim, .. } if epoch > *at => Some(Envelope::Claim(claim.clone())),
        Phase::Held { prior, .. } => prior.clone(),
        _ => None,
    }
}

/// What a claim at `epoch` that takes an item in `phase` ends, as evidence for later results:
/// the claim of the epoch before, or the release or failure that ended it.
pub(super) fn ended_by(phase: &Phase, epoch: u32) -> Option<Envelope> {
    match phase {
        Phase::Held { epoch: at, claim, .. } if epoch > *at => Some(Envelope::Claim(claim.clone())),
        Phase::Open { epoch: at, proof: Some(proof) } if epoch > *at => Some(proof.clone()),
        _ => None,
    }
}

/// An incoming result (after its embedded claim was taken in) and what it is judged against.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResultCase<'a> {
    /// The item's phase here.
    pub(super) phase: &'a Phase,
    /// The evidence kept about the item's earlier epochs.
    pub(super) past: &'a Past,
    /// The result's embedded claim, checked.
    pub(super) claim: &'a Claim,
    /// The result, as far as fencing goes.
    pub(super) key: ResultKey,
    /// Whether the item's work goes on after a result (a seeding duty, a relay slot).
    pub(super) ongoing: bool,
    /// Whether this node knew the result's claim as the holder's before the result came.
    pub(super) known: bool,
    /// Whether the result is this node's own.
    pub(super) mine: bool,
    /// This node's clock.
    pub(super) now: u64,
}

/// What an incoming result does to an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ResultVerdict {
    /// The result is the item's from now on; `replaced` is the claim of the earlier epoch's
    /// result it replaces, evidence of who held that epoch.
    Accepts {
        /// The replaced result's claim, when it was of an earlier epoch.
        replaced: Option<Envelope>,
    },
    /// The holder of ongoing work reports it ready; the item stays held.
    Ready,
    /// Too young to judge: its claim was first heard of with it, and rival claims of its epoch
    /// may still be on their way. Kept and judged again at `until`.
    Settling {
        /// When its claim has settled.
        until: u64,
    },
    /// Rejected for `0`.
    Refused(Reject),
}

/// The result rule: what the result in `case` does to its item.
pub(super) fn judge_result(case: &ResultCase<'_>) -> ResultVerdict {
    let (c, new) = (case.claim, &case.key);
    if case.past.fences(new.node, c, new.score) {
        return ResultVerdict::Refused(Reject::Fenced);
    }
    let against = match case.phase {
        Phase::Held { holder, epoch, ready, .. } if *holder == new.node && *epoch == c.epoch => {
            match (case.ongoing, ready.is_some()) {
                (true, true) => return ResultVerdict::Refused(Reject::Duplicate),
                (true, false) => return ResultVerdict::Ready,
                (false, _) => Ok(None),
            }
        }
        // Ongoing work has no result: its receipt only says the holder of the current epoch is
        // ready. One of another epoch or holder (an earlier holder's, handed on late) is stale,
        // never a result that ends the item.
        _ if case.ongoing => Err(Reject::Stale),
        Phase::Done { receipt } => against_result(case, receipt),
        // A higher epoch is held, but the fencing rule may still favour this earlier result
        // (the higher claim came while this epoch's lease ran): take the result, so every
        // node ends with the one that nodes already done with the item keep.
        Phase::Held { holder, epoch, score, since, claim, .. } if *epoch > c.epoch => {
            let held = ResultKey {
                epoch: *epoch,
                since_ms: *since,
                score: *score,
                node: *holder,
                lease_until_ms: claim.verified().map_or(0, |c| c.lease_until_ms),
                done_at_ms: u64::MAX,
            };
            let next = case.past.began(c.epoch.saturating_add(1));
            refusal(fence::result_beats(new, &held, next)).map_or(Ok(None), Err)
        }
        // Held by another node at this epoch is settled by the embedded claim (`Lost`); an
        // epoch that was released or failed here, or a later one, leaves the result late.
        _ => Err(Reject::Stale),
    };
    let replaced = match against {
        Ok(replaced) => replaced,
        Err(r) => return ResultVerdict::Refused(r),
    };
    // Accepted as it stands; but a result under a claim first heard of with it, made moments
    // ago: rival claims of its epoch may still be on their way (an honest holder's claim went
    // out when it claimed, and it works for a while after), so it is judged once they had time.
    let settled_at = c.since_ms.saturating_add(RESULT_SETTLE_MS);
    if !case.known && !case.mine && case.now < settled_at {
        return ResultVerdict::Settling { until: settled_at };
    }
    ResultVerdict::Accepts { replaced }
}

/// The result in `case` against the item's result `receipt`: the claim of the result it
/// replaces if that was of an earlier epoch (evidence of who held it), or why it does not.
fn against_result(
    case: &ResultCase<'_>,
    receipt: &Signed<Receipt>,
) -> Result<Option<Envelope>, Reject> {
    let (c, new) = (case.claim, &case.key);
    let old = apply::stored_result_key(&c.item, receipt).ok_or(Reject::Stale)?;
    if old.epoch == c.epoch && old.node == new.node {
        return Err(Reject::Duplicate);
    }
    let next = case.past.began(new.epoch.min(old.epoch).saturating_add(1));
    if let Some(r) = refusal(fence::result_beats(new, &old, next)) {
        return Err(r);
    }
    Ok((old.epoch < c.epoch)
        .then(|| receipt.verified_ref().ok().map(|r| Envelope::Claim(r.claim.clone())))
        .flatten())
}

fn refusal(v: ResultOrder) -> Option<Reject> {
    match v {
        ResultOrder::Replaces => None,
        ResultOrder::Stale => Some(Reject::Stale),
        ResultOrder::Fenced => Some(Reject::Fenced),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::engine::{CLAIM_BUCKET_MS, test_keypair};
    use crate::hrw;
    use crate::ids::{Digest, ItemId};
    use crate::keys::Keypair;
    use crate::message::Receipt;
    use crate::signed::Signed;

    const LEASE: u64 = 30_000;
    const SKEW: u64 = 1_000;

    fn item() -> ItemId {
        ItemId([7; 32])
    }

    fn key(k: usize) -> &'static Keypair {
        static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
        &KEYS.get_or_init(|| (0..4).map(|i| test_keypair(500 + i)).collect())[k]
    }

    fn node(k: usize) -> NodeId {
        key(k).node_id()
    }

    fn score(k: usize) -> u64 {
        hrw::score(&item(), &node(k))
    }

    /// A claim of `epoch` begun at `since`, made at `at` with a full lease from then.
    fn claim(epoch: u32, since: u64, at: u64) -> Claim {
        Claim {
            item: item(),
            epoch,
            at_ms: at,
            lease_until_ms: at + LEASE,
            since_ms: since,
            proof: None,
        }
    }

    fn held(k: usize, c: &Claim) -> Phase {
        Phase::Held {
            holder: node(k),
            epoch: c.epoch,
            score: score(k),
            since: c.since_ms,
            lease_until: c.lease_until_ms,
            ready: None,
            claim: Signed::sign(key(k), c),
            prior: None,
        }
    }

    fn open(epoch: u32) -> Phase {
        Phase::Open { epoch, proof: None }
    }

    fn verdict(phase: &Phase, past: &Past, k: usize, c: &Claim, now: u64) -> Verdict {
        judge_as(false, phase, past, k, c, now)
    }

    fn judge_as(lane: bool, phase: &Phase, past: &Past, k: usize, c: &Claim, now: u64) -> Verdict {
        judge(&ClaimCase {
            phase,
            past,
            node: node(k),
            claim: c,
            score: score(k),
            lease_ms: LEASE,
            skew_margin_ms: SKEW,
            epoch_jump_max: EPOCH_JUMP_MAX,
            now,
            lane,
        })
    }

    fn done(k: usize, c: &Claim, at: u64) -> Phase {
        let receipt = Receipt {
            claim: Signed::sign(key(k), c),
            result: Digest([1; 32]),
            size: 1,
            ok: 1,
            failed: 0,
            at_ms: at,
            parts: vec![],
        };
        Phase::Done { receipt: Signed::sign(key(k), &receipt) }
    }

    /// The claim rule's order on two claims of one item, as [`claim_key`] gives it.
    fn beats(a: (usize, &Claim), b: (usize, &Claim)) -> bool {
        claim_key(a.1.epoch, a.1.since_ms, score(a.0), node(a.0))
            > claim_key(b.1.epoch, b.1.since_ms, score(b.0), node(b.0))
    }

    #[test]
    fn a_claim_of_the_next_epoch_takes_an_open_item() {
        let v = verdict(&open(0), &Past::default(), 0, &claim(1, 5_000, 5_000), 5_000);
        assert_eq!(v, Verdict::Takes { prev_holder: None });
    }

    #[test]
    fn the_holder_renews_only_keeping_the_start_of_its_epoch() {
        let first = claim(1, 5_000, 5_000);
        let phase = held(0, &first);
        let renewal = claim(1, 5_000, 20_000);
        assert_eq!(verdict(&phase, &Past::default(), 0, &renewal, 20_000), Verdict::Renews);
        let moved = claim(1, 6_000, 20_000);
        let v = verdict(&phase, &Past::default(), 0, &moved, 20_000);
        assert_eq!(v, Verdict::Refused(Reject::Stale));
    }

    #[test]
    fn a_claim_of_an_ended_epoch_is_evidence() {
        let phase = held(0, &claim(2, 50_000, 50_000));
        let v = verdict(&phase, &Past::default(), 1, &claim(1, 5_000, 5_000), 50_000);
        assert_eq!(v, Verdict::Evidence);
        // Released at epoch 1: another claim of epoch 1 comes after its end.
        let v = verdict(&open(1), &Past::default(), 1, &claim(1, 5_000, 5_000), 50_000);
        assert_eq!((v, v.reject()), (Verdict::Evidence, Some(Reject::Stale)));
    }

    #[test]
    fn a_next_epoch_claim_inside_the_running_lease_is_early_until_it_runs_out() {
        let phase = held(0, &claim(1, 5_000, 5_000));
        let next = claim(2, 20_000, 20_000);
        let v = verdict(&phase, &Past::default(), 1, &next, 20_000);
        assert_eq!(v, Verdict::Early { until: 5_000 + LEASE - SKEW });
        assert_eq!(v.reject(), Some(Reject::EpochRuleBroken));
        // Once the lease has run out (within the margin) it takes the item.
        let v = verdict(&phase, &Past::default(), 1, &next, 5_000 + LEASE - SKEW);
        assert_eq!(v, Verdict::Takes { prev_holder: Some(node(0)) });
    }

    #[test]
    fn a_later_bucket_loses_to_the_holder_of_its_epoch_whatever_its_score() {
        for (a, b) in [(0, 1), (1, 0), (2, 3), (3, 2)] {
            let phase = held(a, &claim(1, 5_000, 5_000));
            let late = claim(1, 6_000, 6_000);
            let v = verdict(&phase, &Past::default(), b, &late, 6_000);
            assert_eq!(v, Verdict::Refused(Reject::Lost), "{a} holds, {b} claims");
        }
    }

    #[test]
    fn broken_limits_are_refused() {
        let mut long = claim(1, 5_000, 5_000);
        long.lease_until_ms = 5_000 + LEASE + SKEW + 1;
        let v = verdict(&open(0), &Past::default(), 0, &long, 5_000);
        assert_eq!(v, Verdict::Refused(Reject::LeaseTooLong));
        let jump = claim(1 + EPOCH_JUMP_MAX, 5_000, 5_000);
        let v = verdict(&open(0), &Past::default(), 0, &jump, 5_000);
        assert_eq!(v, Verdict::Refused(Reject::EpochRuleBroken));
        let failed =
            Phase::Failed { epoch: 1, proof: Envelope::Claim(Signed::sign(key(0), &long)) };
        let v = verdict(&failed, &Past::default(), 0, &claim(2, 5_000, 5_000), 5_000);
        assert_eq!(v, Verdict::Refused(Reject::Stale));
    }

    #[test]
    fn a_lane_release_known_only_as_the_open_state_counts_as_given_back() {
        // Node 0 held epoch 1 (its claim kept as evidence), released it at 8 s and claimed
        // epoch 2 at 9 s, while its lease of epoch 1 would still have run. A node that took
        // the release in ahead of its view (back from a snapshot, by sync) has it only as the
        // item's open state: it must count as given back, or the claim looks early and is
        // fenced, and that node misses the epoch (host-lanes-crash seed 1099).
        let first = claim(1, 5_000, 5_000);
        let mut past = Past::default();
        assert!(past.note(&Envelope::Claim(Signed::sign(key(0), &first))));
        let next = claim(2, 9_000, 9_000);
        let v = verdict(&open(1), &past, 0, &next, 9_000);
        assert_eq!(v, Verdict::Refused(Reject::Fenced), "no release known: early");
        let release = crate::message::Release {
            item: item(),
            epoch: 1,
            at_ms: 8_000,
            cooldown_until_ms: None,
            drain_ms: None,
        };
        let released = Phase::Open {
            epoch: 1,
            proof: Some(Envelope::Release(Signed::sign(key(0), &release))),
        };
        let v = judge_as(true, &released, &past, 0, &next, 9_000);
        assert_eq!(v, Verdict::Takes { prev_holder: None });
        // Kept to lanes: other items' claims are judged as before.
        let v = judge_as(false, &released, &past, 0, &next, 9_000);
        assert_eq!(v, Verdict::Refused(Reject::Fenced));
    }

    #[test]
    fn a_claim_outranked_by_evidence_of_its_epoch_is_fenced() {
        let first = claim(1, 5_000, 5_000);
        let mut past = Past::default();
        assert!(past.note(&Envelope::Claim(Signed::sign(key(0), &first))));
        let late = claim(1, 9_000, 9_000);
        let v = verdict(&open(0), &past, 1, &late, 9_000);
        assert_eq!(v, Verdict::Refused(Reject::Fenced));
    }

    #[test]
    fn a_claim_against_a_result_is_evidence_only_when_it_began_clearly_first() {
        let result = done(0, &claim(1, 10_000, 10_000), 12_000);
        // Of the result's epoch, by another node: evidence against the result.
        let v = verdict(&result, &Past::default(), 1, &claim(1, 9_000, 9_000), 12_000);
        assert_eq!(v, Verdict::Evidence);
        // Of a later epoch begun before the result's claim (beyond the skew): evidence.
        let v = verdict(&result, &Past::default(), 1, &claim(2, 8_000, 8_000), 12_000);
        assert_eq!(v, Verdict::Evidence);
        // Of a later epoch begun after it: merely late.
        let v = verdict(&result, &Past::default(), 1, &claim(2, 11_000, 11_000), 12_000);
        assert_eq!(v, Verdict::Refused(Reject::Stale));
    }

    fn result_case<'a>(
        phase: &'a Phase,
        past: &'a Past,
        k: usize,
        c: &'a Claim,
        done_at: u64,
        known: bool,
    ) -> ResultCase<'a> {
        let key = ResultKey {
            epoch: c.epoch,
            since_ms: c.since_ms,
            score: score(k),
            node: node(k),
            lease_until_ms: c.lease_until_ms,
            done_at_ms: done_at,
        };
        ResultCase { phase, past, claim: c, key, ongoing: false, known, mine: false, now: done_at }
    }

    /// Found by the `copies-churn` scenario: an earlier holder's ready receipt for a copy,
    /// arriving after a later epoch's claim, was judged as a result and ended the duty as done.
    #[test]
    fn an_earlier_holders_ready_receipt_never_ends_ongoing_work() {
        let past = Past::default();
        let early = claim(1, 5_000, 5_000);
        let later = claim(2, 40_000, 40_000);
        let phase = held(1, &later);
        let chunk = result_case(&phase, &past, 0, &early, 20_000, true);
        let ongoing = ResultCase { ongoing: true, ..chunk };
        assert_eq!(judge_result(&ongoing), ResultVerdict::Refused(Reject::Stale));
        let Phase::Done { receipt } = done(0, &early, 20_000) else { unreachable!() };
        let finished = Phase::Done { receipt };
        let other = result_case(&finished, &past, 1, &later, 50_000, true);
        let ongoing = ResultCase { ongoing: true, ..other };
        assert_eq!(judge_result(&ongoing), ResultVerdict::Refused(Reject::Stale));
    }

    #[test]
    fn the_holders_result_is_accepted_and_ongoing_work_is_made_ready_once() {
        let past = Past::default();
        let c = claim(1, 5_000, 5_000);
        let phase = held(0, &c);
        let case = result_case(&phase, &past, 0, &c, 20_000, true);
        assert_eq!(judge_result(&case), ResultVerdict::Accepts { replaced: None });
        let ongoing = ResultCase { ongoing: true, ..case };
        assert_eq!(judge_result(&ongoing), ResultVerdict::Ready);
        let Phase::Held { holder, epoch, score, since, lease_until, claim, prior, .. } =
            phase.clone()
        else {
            unreachable!()
        };
        let Phase::Done { receipt } = done(0, &c, 20_000) else { unreachable!() };
        let ready = Phase::Held {
            holder,
            epoch,
            score,
            since,
            lease_until,
            ready: Some(receipt),
            claim,
            prior,
        };
        let again = ResultCase { phase: &ready, ..ongoing };
        assert_eq!(judge_result(&again), ResultVerdict::Refused(Reject::Duplicate));
    }

    #[test]
    fn a_result_under_a_claim_first_heard_with_it_settles_first() {
        let past = Past::default();
        let c = claim(1, 5_000, 5_000);
        let phase = held(0, &c);
        let case = result_case(&phase, &past, 0, &c, 5_500, false);
        let until = 5_000 + RESULT_SETTLE_MS;
        assert_eq!(judge_result(&case), ResultVerdict::Settling { until });
        let later = ResultCase { now: until, ..case };
        assert_eq!(judge_result(&later), ResultVerdict::Accepts { replaced: None });
        let own = ResultCase { mine: true, ..case };
        assert_eq!(judge_result(&own), ResultVerdict::Accepts { replaced: None });
    }

    #[test]
    fn a_result_against_a_finished_item_replaces_it_only_by_the_result_order() {
        let (past, released) = (Past::default(), open(1));
        let first = claim(1, 5_000, 5_000);
        // Finished after its lease had run out (at 35 s).
        let finished = done(0, &first, 37_000);
        // The same holder again: a duplicate.
        let case = result_case(&finished, &past, 0, &first, 10_000, true);
        assert_eq!(judge_result(&case), ResultVerdict::Refused(Reject::Duplicate));
        // The next epoch's result, claimed after that lease: it replaces the late first,
        // whose claim is handed back as evidence.
        let next = claim(2, 40_000, 40_000);
        let case = result_case(&finished, &past, 1, &next, 45_000, true);
        let replaced = Some(Envelope::Claim(Signed::sign(key(0), &first)));
        assert_eq!(judge_result(&case), ResultVerdict::Accepts { replaced });
        // Another node's result of the same epoch begun later: it never held the epoch.
        let late = claim(1, 9_000, 9_000);
        let case = result_case(&finished, &past, 1, &late, 12_000, true);
        assert_eq!(judge_result(&case), ResultVerdict::Refused(Reject::Fenced));
        // Released here: late.
        let case = result_case(&released, &past, 1, &late, 12_000, true);
        assert_eq!(judge_result(&case), ResultVerdict::Refused(Reject::Stale));
    }

    /// Claims `order` (node, since) of `epoch` in turn on an item held at `epoch - 1` by node
    /// 0 under a lease that ran out before `now`; returns the final holder.
    fn settle(epoch: u32, order: &[(usize, u64)], now: u64) -> Option<NodeId> {
        let mut phase = held(0, &claim(epoch - 1, 0, 0));
        for &(k, since) in order {
            let c = claim(epoch, since, since);
            if let Verdict::Takes { .. } = verdict(&phase, &Past::default(), k, &c, now) {
                phase = held(k, &c);
            }
        }
        match phase {
            Phase::Held { holder, epoch: e, .. } if e == epoch => Some(holder),
            _ => None,
        }
    }

    proptest! {
        /// Two claims of one epoch by two nodes: exactly one takes the item from the other,
        /// the one the claim order ranks higher, wherever their `since_ms` fall (one bucket,
        /// the same instant, or apart).
        #[test]
        fn same_epoch_claims_settle_alike_in_either_order(
            epoch in 1u32..5,
            a in 0usize..4, b in 0usize..4,
            since_a in 0u64..4_000, since_b in 0u64..4_000,
            shared in any::<bool>(),
        ) {
            prop_assume!(a != b);
            let since_b = if shared { since_a } else { since_b };
            let (ca, cb) = (claim(epoch, since_a, since_a), claim(epoch, since_b, since_b));
            let now = since_a.max(since_b);
            let b_over_a = verdict(&held(a, &ca), &Past::default(), b, &cb, now);
            let a_over_b = verdict(&held(b, &cb), &Past::default(), a, &ca, now);
            let b_takes = matches!(b_over_a, Verdict::Takes { .. });
            let a_takes = matches!(a_over_b, Verdict::Takes { .. });
            prop_assert!(a_takes != b_takes, "{a_over_b:?} / {b_over_a:?}");
            prop_assert_eq!(a_takes, beats((a, &ca), (b, &cb)));
            let loser = if a_takes { b_over_a } else { a_over_b };
            prop_assert_eq!(loser, Verdict::Refused(Reject::Lost));
            // An earlier bucket wins outright.
            let (bucket_a, bucket_b) = (since_a / CLAIM_BUCKET_MS, since_b / CLAIM_BUCKET_MS);
            if bucket_a != bucket_b {
                prop_assert_eq!(a_takes, bucket_a < bucket_b);
            }
        }

        /// Every lease expired and a crowd claims the next epoch at once, with one shared
        /// `since_ms`: whatever order the claims come in, the item ends with the same holder,
        /// the highest in the claim order.
        #[test]
        fn with_every_lease_expired_any_order_of_claims_ends_with_one_holder(
            epoch in 1u32..5,
            since in 40_000u64..50_000,
            order in Just(vec![1usize, 2, 3]).prop_shuffle(),
            late in proptest::collection::vec(0u64..3_000, 3),
            shared in any::<bool>(),
        ) {
            let claims: Vec<(usize, u64)> = order
                .iter()
                .map(|&k| (k, if shared { since } else { since + late[k - 1] }))
                .collect();
            let now = since + 3_000;
            let holder = settle(epoch, &claims, now);
            let mut sorted = claims.clone();
            sorted.sort_unstable();
            prop_assert_eq!(holder, settle(epoch, &sorted, now));
            let best = claims
                .iter()
                .copied()
                .max_by_key(|&(k, s)| claim_key(epoch, s, score(k), node(k)))
                .map(|(k, _)| node(k));
            prop_assert_eq!(holder, best);
        }

        /// A claim the evidence fences never takes the item, nor renews it.
        #[test]
        fn a_fenced_claim_never_wins(
            ev_epoch in 1u32..4, ev_since in 0u64..20_000, ev_node in 0usize..4,
            epoch in 1u32..4, since in 0u64..20_000, k in 0usize..4,
            held_by in proptest::option::of(0usize..4),
            now_after in 0u64..60_000,
        ) {
            let mut past = Past::default();
            past.note(&Envelope::Claim(Signed::sign(key(ev_node), &claim(ev_epoch, ev_since, ev_since))));
            let c = claim(epoch, since, since);
            let phase = match held_by {
                Some(h) => held(h, &claim(epoch, since, since)),
                None => open(epoch - 1),
            };
            let now = since + now_after;
            let v = verdict(&phase, &past, k, &c, now);
            // The item's own epoch here counts as known, as an epoch between (see `was_early`).
            if past.fences_at(node(k), &c, score(k), Some(phase.epoch()), None) {
                prop_assert!(!matches!(v, Verdict::Takes { .. } | Verdict::Renews), "{v:?}");
            }
        }

        /// A claim of the next epoch is early exactly while the held lease runs (skew margin
        /// taken off), and then it is told when that lease runs out.
        #[test]
        fn a_next_epoch_claim_is_early_exactly_while_the_lease_runs(
            epoch in 1u32..5, held_since in 0u64..10_000, at in 0u64..80_000,
        ) {
            let phase = held(0, &claim(epoch, held_since, held_since));
            let lease_until = held_since + LEASE;
            let v = verdict(&phase, &Past::default(), 1, &claim(epoch + 1, at, at), at);
            if at + SKEW < lease_until {
                prop_assert_eq!(v, Verdict::Early { until: lease_until - SKEW });
                prop_assert!(lease_until - SKEW > at);
            } else {
                prop_assert_eq!(v, Verdict::Takes { prev_holder: Some(node(0)) });
            }
        }
        /// A result the evidence fences is never accepted, whatever the item's phase.
        #[test]
        fn a_fenced_result_is_never_accepted(
            ev_epoch in 1u32..4, ev_since in 0u64..20_000, ev_node in 0usize..4,
            epoch in 1u32..4, since in 0u64..20_000, k in 0usize..4,
            phase_kind in 0u8..3, done_after in 0u64..40_000, known in any::<bool>(),
        ) {
            let mut past = Past::default();
            past.note(&Envelope::Claim(Signed::sign(key(ev_node), &claim(ev_epoch, ev_since, ev_since))));
            let c = claim(epoch, since, since);
            let phase = match phase_kind {
                0 => held(k, &c),
                1 => done(ev_node, &claim(ev_epoch, ev_since, ev_since), ev_since + 1_000),
                _ => held(ev_node, &claim(epoch + 1, since + 1_000, since + 1_000)),
            };
            let case = result_case(&phase, &past, k, &c, since + done_after, known);
            if past.fences(node(k), &c, score(k)) {
                let v = judge_result(&case);
                prop_assert!(!matches!(v, ResultVerdict::Accepts { .. } | ResultVerdict::Ready), "{v:?}");
            }
        }
    }
}
