//! What the checkers learn from each message an honest engine takes in: whether a result it
//! accepted came from the agreed holder of its epoch, and which executors of a contended item
//! have seen each other's claims.
//!
//! - **Accepted results.** Honest nodes produce results only under claims their own engines
//!   took, so the results to examine are the liars'. A liar's result an honest engine accepts
//!   is *legitimately won* when the liar's claim was the agreed holder of its epoch, by what
//!   the simulator knows to be true: some honest engine took its bare claim as the holder's,
//!   or its claim is dated when it was really made, was made before any honest engine took a
//!   claim of the next epoch, and no claim of its epoch an honest engine took outranks it.
//!   Any other liar's result accepted is a violation: the engine let a peer finish an epoch it
//!   never held. Legitimately won results are counted, not failed: only checking results (a
//!   later layer) can catch a liar that won fairly.
//! - **Overlaps in one view.** Two honest nodes executing one item at the same epoch, each
//!   having taken in the other's claim, disagree on a total order they both know: one of them
//!   must give way at once. Such an overlap that outlasts [`SAME_VIEW_GRACE_MS`] plus the skew
//!   margin is a violation, whatever the item's length.

use std::collections::{BTreeSet, HashMap, HashSet};

use starling_protocol::engine::claim_order;
use starling_protocol::message::{Claim, Receipt};
use starling_protocol::{Envelope, Input, ItemState, NodeId, Reject, Signed};

use crate::world::{ViolationKind, World, env_item};

/// How long two honest executors of one epoch may both go on after each has taken in the
/// other's claim, beyond the skew margin: one check interval's worth of slack for the
/// cancellation to land.
pub const SAME_VIEW_GRACE_MS: u64 = 1_000;

/// Claim sightings kept per contended item.
const SEEN_PER_ITEM_MAX: usize = 32;

/// The checkers' record of results and claim sightings.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Every node's index by id.
    node_of: HashMap<NodeId, u32>,
    /// (item, epoch, liar) whose claim some honest engine took as the holder's.
    liar_held: HashSet<(u32, u32, u32)>,
    /// Items with a liar's result that an honest engine took legitimately.
    pub(crate) liar_won: BTreeSet<u32>,
    /// Per contended item: (observer, claimant, epoch, when the observer, executing the item
    /// itself, first took in the claimant's claim of that epoch).
    seen: HashMap<u32, Vec<(u32, u32, u32, u64)>>,
    /// Set while a message handed over by `take_message` is being applied: receipts the
    /// engine takes in at other times are ones it held back as early and took in later.
    judging: bool,
    /// When an honest engine first took in a claim of (item, epoch), in simulated time; kept
    /// only in runs with liars.
    epoch_first: HashMap<(u32, u32), u64>,
    /// The best claim, in the claim order, that an honest engine took in for (item, epoch).
    epoch_best: HashMap<(u32, u32), ClaimOrder>,
}

/// A claim's place in the claim order, as the engine ranks claims.
type ClaimOrder = (u32, std::cmp::Reverse<u64>, u64, NodeId);

impl Watch {
    pub(crate) fn new(ids: impl Iterator<Item = NodeId>) -> Self {
        Self { node_of: ids.zip(0..).collect(), ..Self::default() }
    }

    /// A node's index, by id.
    pub(crate) fn node_of(&self, node: &NodeId) -> Option<u32> {
        self.node_of.get(node).copied()
    }

    /// When `observer` first took in `claimant`'s claim of `epoch` while both executed it.
    fn seen_at(&self, item: u32, observer: u32, claimant: u32, epoch: u32) -> Option<u64> {
        self.seen
            .get(&item)?
            .iter()
            .find_map(|&(o, c, e, t)| (o == observer && c == claimant && e == epoch).then_some(t))
    }

    /// Forgets the sightings of an item no longer contended.
    pub(crate) fn settled(&mut self, item: u32) {
        self.seen.remove(&item);
    }
}

/// The claim an envelope carries (bare, or inside a receipt or failure), with its signer.
fn full_claim(env: &Envelope) -> Option<(NodeId, &Claim)> {
    match env {
        Envelope::Claim(c) => Some((c.signer().node_id(), c.verified_ref().ok()?)),
        Envelope::Receipt(r) => {
            Some((r.signer().node_id(), r.verified_ref().ok()?.claim.verified_ref().ok()?))
        }
        Envelope::Failure(f) => {
            Some((f.signer().node_id(), f.verified_ref().ok()?.claim.verified_ref().ok()?))
        }
        _ => None,
    }
}

impl World {
    /// Hands a gossiped or synced message to node `to`'s engine, with the bookkeeping and the
    /// result and overlap checks that follow. `None` when the node is down.
    pub(crate) fn take_message(&mut self, to: u32, env: &Envelope) -> Option<Result<(), Reject>> {
        let honest = !self.nodes[to as usize].byz;
        let claim = if honest { full_claim(env).map(|(n, c)| (n, c.epoch)) } else { None };
        let liar = claim.and_then(|(signer, _)| {
            let i = *self.watch.node_of.get(&signer)?;
            self.nodes[i as usize].byz.then_some(i)
        });
        let item = claim.and_then(|_| env_item(env)).map(|(item, _)| item);
        let before = match (liar, item) {
            (Some(_), Some(item)) if matches!(env, Envelope::Receipt(_)) => {
                self.nodes[to as usize].engine.as_ref().and_then(|e| e.item_state(&item))
            }
            _ => None,
        };
        self.watch.judging = true;
        let result = self.drive(to, Input::Message(env.clone()));
        self.watch.judging = false;
        let result = result?;
        self.after_apply(to, env, result);
        let (Some((signer, epoch)), Some(item)) = (claim, item) else { return Some(result) };
        let Some(&idx) = self.ledger.item_index.get(&item) else { return Some(result) };
        if let Some(liar) = liar
            && result.is_ok()
        {
            match env {
                Envelope::Receipt(_) => self.judge_liar_result(to, idx, env, liar, before),
                _ => {
                    let now_held = self.nodes[to as usize].engine.as_ref().and_then(|e| {
                        e.item_state(&item).filter(|st| {
                            matches!(st, ItemState::Held { holder, epoch: e, .. }
                                if *holder == signer && *e == epoch)
                        })
                    });
                    if now_held.is_some() {
                        self.watch.liar_held.insert((idx, epoch, liar));
                    }
                }
            }
        }
        if result.is_ok() && self.s.byzantine.nodes > 0 {
            self.record_epoch(idx, env);
        }
        if let Some(&claimant) = self.watch.node_of.get(&signer) {
            self.sighting(to, claimant, idx, epoch);
        }
        Some(result)
    }

    /// Notes the claim an honest engine just took in, for the agreed holder of its epoch.
    fn record_epoch(&mut self, idx: u32, env: &Envelope) {
        let Some((signer, c)) = full_claim(env) else { return };
        let order = claim_order(c, signer);
        let now = self.now;
        self.watch.epoch_first.entry((idx, c.epoch)).or_insert(now);
        let best = self.watch.epoch_best.entry((idx, c.epoch)).or_insert(order);
        if order > *best {
            *best = order;
        }
    }

    /// An honest node took in a receipt (its engine persists it). A liar's receipt taken in
    /// outside `take_message` is one the engine held back because its claim was early in this
    /// node's view (a later epoch while the lease it knew ran) and took in once that lease ran
    /// out; it is judged like any other.
    pub(crate) fn receipt_persisted(&mut self, n: u32, receipt: &Signed<Receipt>) {
        if self.watch.judging || self.nodes[n as usize].byz {
            return;
        }
        let Some(&liar) = self.watch.node_of.get(&receipt.signer().node_id()) else { return };
        if !self.nodes[liar as usize].byz {
            return;
        }
        let Some(c) = receipt.verified_ref().ok().and_then(|r| r.claim.verified_ref().ok()) else {
            return;
        };
        let Some(&idx) = self.ledger.item_index.get(&c.item) else { return };
        let env = Envelope::Receipt(receipt.clone());
        self.judge_liar_result(n, idx, &env, liar, None);
        if self.s.byzantine.nodes > 0 {
            self.record_epoch(idx, &env);
        }
    }

    /// A liar's result (`env`) that honest node `to` just accepted for item `idx`; `before` is
    /// the item's state in `to`'s engine before.
    fn judge_liar_result(
        &mut self,
        to: u32,
        idx: u32,
        env: &Envelope,
        liar: u32,
        before: Option<ItemState>,
    ) {
        let Some((signer, c)) = full_claim(env) else { return };
        let epoch = c.epoch;
        // When the claim was really made, in simulated time: its `since_ms` is on the liar's
        // clock, and a claim dated back before it was signed is forged.
        let made = crate::world::sim_time(c.since_ms, self.nodes[liar as usize].clock_offset_ms);
        let dated_true = c.since_ms + starling_protocol::engine::CLAIM_BUCKET_MS >= c.at_ms;
        let before_next =
            self.watch.epoch_first.get(&(idx, epoch + 1)).is_none_or(|&first| made < first);
        let order = claim_order(c, signer);
        let unbeaten = self.watch.epoch_best.get(&(idx, epoch)).is_none_or(|best| order >= *best);
        if dated_true && before_next && unbeaten {
            self.watch.liar_held.insert((idx, epoch, liar));
        }
        if self.watch.liar_held.contains(&(idx, epoch, liar)) {
            self.watch.liar_won.insert(idx);
            return;
        }
        let item = self.ledger.items[idx as usize].id;
        self.violate(
            ViolationKind::ForgedResult,
            format!(
                "honest node {to} accepted liar {liar}'s result for item {} at epoch {epoch}, \
                 whose claim was not the agreed holder of that epoch (its state before: \
                 {before:?})",
                item.short()
            ),
        );
    }

    /// Notes that executing node `observer` took in `claimant`'s claim of `epoch` for item
    /// `idx`, when both are executing it.
    fn sighting(&mut self, observer: u32, claimant: u32, idx: u32, epoch: u32) {
        if observer == claimant || !self.ledger.contended.contains(&idx) {
            return;
        }
        let ex = &self.ledger.items[idx as usize].executing;
        let executing = |n: u32| ex.iter().any(|(m, _)| *m == n);
        if !executing(observer) || !executing(claimant) {
            return;
        }
        if self.nodes[claimant as usize].running.get(&idx).map(|r| r.1) != Some(epoch) {
            return;
        }
        if self.watch.seen_at(idx, observer, claimant, epoch).is_some() {
            return;
        }
        let list = self.watch.seen.entry(idx).or_default();
        if list.len() >= SEEN_PER_ITEM_MAX {
            list.remove(0);
        }
        list.push((observer, claimant, epoch, self.now));
    }

    /// Whether honest executors `a` and `b` of item `idx` have run one epoch for longer than
    /// the grace since each took in the other's claim; the moment both had, if so.
    pub(crate) fn same_view_overlap(&self, idx: u32, a: u32, b: u32) -> Option<u64> {
        let ea = self.nodes[a as usize].running.get(&idx)?.1;
        let eb = self.nodes[b as usize].running.get(&idx)?.1;
        if ea != eb {
            return None;
        }
        let both = self.watch.seen_at(idx, a, b, ea)?.max(self.watch.seen_at(idx, b, a, ea)?);
        let grace = SAME_VIEW_GRACE_MS + self.cfg.skew_margin_ms;
        (self.now.saturating_sub(both) > grace).then_some(both)
    }
}
