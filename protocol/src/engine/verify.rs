//! Spot-check quorums for crawl results: the rule by which the mesh checks what a volunteer
//! hands back, from signed data alone.
//!
//! - **Sampling.** When a crawl chunk's result is accepted, every node computes whether it is
//!   sampled (`blake3(domain ‖ item ‖ result)` against the project's `verify.sample_milli`);
//!   if so it derives a verification duty [`WorkItem::Verify`] (round 0) that excludes the
//!   result's producer. A node marked for the project has every accepted result verified.
//! - **Checking.** The duty's holder fetches the chunk's URLs again and reports each part's
//!   status and payload digest in its receipt. [`compare`] sets the two side by side: status
//!   always, payload digests unless the owner lists the URL as volatile (`verify.volatile`).
//! - **Settling.** Agreement confirms the result. A disagreement derives round 1, a duty that
//!   excludes both the producer and the first checker; the third execution sides with the one
//!   of the two it differs from on fewer parts. When that is the checker, the source is
//!   *overturned*: the first checker's result is kept (its copies are made in place of the
//!   producer's, see [`Engine::kept`]). When it is as far from both, the result stands and
//!   nobody is blamed (`Split`).
//! - **Blame.** The loser of a quorum gets a strike when it differs from the other two on more
//!   than half the parts compared: a page or two that changed between fetches costs a result,
//!   never a strike. A node with `verify.strikes` strikes (each on a different item) is
//!   *marked* for the project: every result of it is checked from then on, whatever the
//!   sample (those known already too), and a node that finds itself marked takes no more work
//!   there. Its claims are still judged by the claim rule: refusing them was tried, and since
//!   nodes learn the evidence at different times, it split their views of who held an epoch
//!   (an engine restored from its own records refused claims it had taken live).
//!
//! Everything is computed from items and receipts every node holds alike, so nodes that have
//! seen the same messages reach the same verdicts, and a restart replays them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::ids::{Digest, ItemId, NodeId, ProjectId};
use crate::item::WorkItem;
use crate::manifest::VerifyPolicy;
use crate::message::{PartOutcome, Receipt};
use crate::signed::Signed;

use super::apply::receipt_parts;
use super::{Engine, Phase, WorkRef};

/// Domain of the sampling hash.
const SAMPLE_DOMAIN: &[u8] = b"starling/v1/verify-sample";

/// Most marked nodes a view lists per project.
pub const MARKED_MAX: usize = 256;

/// Whether the accepted result `result` of `item` is spot-checked at `sample_milli`
/// thousandths. Every node computes the same answer.
pub fn sampled(item: &ItemId, result: &Digest, sample_milli: u16) -> bool {
    if sample_milli >= 1_000 {
        return true;
    }
    if sample_milli == 0 {
        return false;
    }
    let mut h = blake3::Hasher::new();
    h.update(SAMPLE_DOMAIN);
    h.update(item.as_bytes());
    h.update(result.as_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    x % 1_000 < u64::from(sample_milli)
}

/// Two executions of one chunk set side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    /// Parts compared.
    pub compared: u32,
    /// Parts on which they differ.
    pub differ: u32,
}

impl Comparison {
    /// They agree on every part compared.
    pub fn agree(self) -> bool {
        self.differ == 0
    }

    /// They differ on more than half the parts: not a page or two that changed.
    pub fn major(self) -> bool {
        self.differ * 2 > self.compared
    }
}

/// Compares two executions of a chunk of `urls`: each part's status and class, and the
/// payload digests of parts both archived, unless `policy` lists the URL as volatile. Parts
/// lists of different lengths differ everywhere. With no parts at all (a receipt that reports
/// none) the result digests are compared.
pub fn compare(
    urls: &[String],
    a: (&Digest, &[PartOutcome]),
    b: (&Digest, &[PartOutcome]),
    policy: &VerifyPolicy,
) -> Comparison {
    let (a_parts, b_parts) = (a.1, b.1);
    if a_parts.is_empty() && b_parts.is_empty() {
        return Comparison { compared: 1, differ: u32::from(a.0 != b.0) };
    }
    if a_parts.len() != b_parts.len() {
        let n = a_parts.len().max(b_parts.len()) as u32;
        return Comparison { compared: n, differ: n };
    }
    let mut c = Comparison { compared: a_parts.len() as u32, differ: 0 };
    for (i, (x, y)) in a_parts.iter().zip(b_parts).enumerate() {
        let volatile = urls.get(i).is_some_and(|u| policy.is_volatile(u));
        let payload_differs =
            !volatile && matches!((&x.payload, &y.payload), (Some(p), Some(q)) if p != q);
        if x.status != y.status || x.class() != y.class() || payload_differs {
            c.differ += 1;
        }
    }
    c
}

/// Where a sampled result stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quorum {
    /// Not sampled (or not finished).
    Unchecked,
    /// A check is due or running.
    Pending,
    /// A check agreed with the result.
    Confirmed,
    /// The first check disagreed; a third execution is due or running.
    Disputed,
    /// The third execution agreed with the producer: the result stands.
    Upheld,
    /// The third execution agreed with the first check: its result is kept instead.
    Overturned,
    /// The third execution is as far from both: the result stands, nobody is blamed.
    Split,
}

impl Quorum {
    /// Settled in the result's favour.
    pub fn verified(self) -> bool {
        matches!(self, Quorum::Confirmed | Quorum::Upheld)
    }
}

/// Per project, how its results stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyCounts {
    /// Results a quorum confirmed or upheld.
    pub verified: u64,
    /// Results whose check is due or running.
    pub pending: u64,
    /// Results under dispute (a third execution due or running).
    pub disputed: u64,
    /// Results a quorum overturned (another node's result is kept).
    pub overturned: u64,
    /// Results the third execution found as far from both (kept, nobody blamed).
    pub split: u64,
}

impl VerifyCounts {
    fn count(&mut self, q: Quorum) {
        match q {
            Quorum::Unchecked => {}
            Quorum::Pending => self.pending += 1,
            Quorum::Confirmed | Quorum::Upheld => self.verified += 1,
            Quorum::Disputed => self.disputed += 1,
            Quorum::Overturned => self.overturned += 1,
            Quorum::Split => self.split += 1,
        }
    }
}

/// The evidence against nodes: per (project, node), the sources on which it lost a quorum
/// (bounded by the project's items). A node is marked while it has the project's
/// `verify.strikes` of them; nothing else is kept.
#[derive(Debug, Clone, Default)]
pub(super) struct Strikes {
    pub(super) by_node: BTreeMap<(ProjectId, NodeId), BTreeSet<ItemId>>,
}

/// A check's receipt, read: who made it, its result and its parts.
struct Check<'a> {
    node: NodeId,
    result: &'a Digest,
    parts: &'a [PartOutcome],
}

fn check_of(receipt: &Signed<Receipt>) -> Option<Check<'_>> {
    let (r, _) = receipt_parts(receipt)?;
    Some(Check { node: receipt.signer().node_id(), result: &r.result, parts: &r.parts })
}

impl Engine {
    fn policy(&self, project: &ProjectId) -> VerifyPolicy {
        self.projects.get(project).map(|p| p.m.verify.clone()).unwrap_or_default()
    }

    /// Whether `node` is marked for `project`: it lost `verify.strikes` quorums there.
    pub fn is_marked(&self, project: &ProjectId, node: &NodeId) -> bool {
        !self.strikes.by_node.is_empty()
            && self
                .strikes
                .by_node
                .get(&(*project, *node))
                .is_some_and(|s| s.len() >= self.strikes_needed(project))
    }

    /// Lost quorums that mark a node in `project`.
    fn strikes_needed(&self, project: &ProjectId) -> usize {
        usize::from(self.policy(project).strikes)
    }

    /// The nodes marked for `project`, with their strikes.
    pub fn marked(&self, project: &ProjectId) -> Vec<(NodeId, usize)> {
        let need = self.strikes_needed(project);
        self.strikes
            .by_node
            .range((*project, NodeId([0; 32]))..=(*project, NodeId([0xff; 32])))
            .filter(|(_, s)| s.len() >= need)
            .map(|((_, n), s)| (*n, s.len()))
            .collect()
    }

    /// The round-0 and round-1 duty ids for `source`'s result `result` by `producer`, the
    /// second only once the first checker is known.
    fn duty(source: ItemId, result: Digest, round: u8, exclude: Vec<NodeId>) -> WorkItem {
        WorkItem::Verify { source, result, round, exclude }
    }

    /// The finished receipt of item `id`, if it is done.
    fn done_receipt(&self, id: &ItemId) -> Option<&Signed<Receipt>> {
        match &self.items.get(id)?.phase {
            Phase::Done { receipt } => Some(receipt),
            _ => None,
        }
    }

    /// How `source`'s accepted result stands, with the receipt kept as its result (the
    /// producer's, or the first checker's when overturned).
    fn quorum_of(&self, source: &ItemId) -> Option<(Quorum, &Signed<Receipt>)> {
        let e = self.items.get(source)?;
        let Phase::Done { receipt } = &e.phase else { return None };
        if !matches!(&*e.work, WorkItem::CrawlChunk { .. }) {
            return None;
        }
        let producer = check_of(receipt)?;
        let WorkItem::CrawlChunk { urls } = &*e.work else { return None };
        let r0 = Self::duty(*source, *producer.result, 0, vec![producer.node]).id(&e.project);
        if !self.items.contains_key(&r0) {
            return Some((Quorum::Unchecked, receipt));
        }
        let Some(r0_receipt) = self.done_receipt(&r0) else {
            return Some((Quorum::Pending, receipt));
        };
        let Some(first) = check_of(r0_receipt) else { return Some((Quorum::Pending, receipt)) };
        let policy = self.policy(&e.project);
        let p = (producer.result, producer.parts);
        if compare(urls, p, (first.result, first.parts), &policy).agree() {
            return Some((Quorum::Confirmed, receipt));
        }
        let r1 = Self::duty(*source, *producer.result, 1, vec![producer.node, first.node])
            .id(&e.project);
        let Some(third) = self.done_receipt(&r1).and_then(check_of) else {
            return Some((Quorum::Disputed, receipt));
        };
        // The third execution sides with the one it differs from on fewer parts: pages that
        // changed between fetches leave no two alike, but one of them still stands apart.
        let t = (third.result, third.parts);
        let to_producer = compare(urls, p, t, &policy).differ;
        let to_first = compare(urls, (first.result, first.parts), t, &policy).differ;
        Some(match to_producer.cmp(&to_first) {
            std::cmp::Ordering::Less => (Quorum::Upheld, receipt),
            std::cmp::Ordering::Greater => (Quorum::Overturned, r0_receipt),
            std::cmp::Ordering::Equal => (Quorum::Split, receipt),
        })
    }

    /// How `item`'s accepted result stands ([`Quorum::Unchecked`] for anything not a finished
    /// crawl chunk).
    pub fn quorum(&self, item: &ItemId) -> Quorum {
        self.quorum_of(item).map_or(Quorum::Unchecked, |(q, _)| q)
    }

    /// The result kept for finished crawl chunk `item`: the producer's, or the first
    /// checker's when a quorum overturned it. `(who made it, its result, its size)`.
    pub fn kept(&self, item: &ItemId) -> Option<(NodeId, Digest, u64)> {
        let (_, receipt) = self.quorum_of(item)?;
        let (r, _) = receipt_parts(receipt)?;
        Some((receipt.signer().node_id(), r.result, r.size))
    }

    /// The receipt kept as finished crawl chunk `item`'s result (see [`Engine::kept`]).
    pub(super) fn kept_receipt(&self, item: &ItemId) -> Option<&Signed<Receipt>> {
        self.quorum_of(item).map(|(_, r)| r)
    }

    /// The item whose receipt is kept as finished crawl chunk `item`'s result: `item` itself,
    /// or its round-0 check when a quorum overturned the producer.
    pub fn kept_item(&self, item: &ItemId) -> Option<ItemId> {
        let receipt = self.kept_receipt(item)?;
        let (_, c) = receipt_parts(receipt)?;
        Some(c.item)
    }

    /// Whether `e` is a spot-check.
    pub(super) fn is_check(e: &super::ItemEntry) -> bool {
        matches!(&*e.work, WorkItem::Verify { .. })
    }

    /// Per project (or all), how its checked results stand.
    pub fn verify_counts(&self, project: Option<ProjectId>) -> VerifyCounts {
        let mut c = VerifyCounts::default();
        for (id, _) in
            self.finished_chunks().filter(|(_, e)| project.is_none_or(|p| p == e.project))
        {
            c.count(self.quorum(id));
        }
        c
    }

    /// How the checked results of every project stand, in one pass over the items (for a
    /// status view, not for every message).
    pub fn verify_counts_by_project(&self) -> BTreeMap<ProjectId, VerifyCounts> {
        let mut out: BTreeMap<ProjectId, VerifyCounts> = BTreeMap::new();
        for (id, e) in self.finished_chunks() {
            out.entry(e.project).or_default().count(self.quorum(id));
        }
        out
    }

    fn finished_chunks(&self) -> impl Iterator<Item = (&ItemId, &super::ItemEntry)> {
        self.items.iter().filter(|(_, e)| {
            matches!(&*e.work, WorkItem::CrawlChunk { .. }) && matches!(e.phase, Phase::Done { .. })
        })
    }

    /// After crawl chunk `source` got accepted result `r` from `producer`: derives its
    /// round-0 check if the result is sampled or its producer is marked.
    pub(super) fn derive_check(
        &mut self,
        source: ItemId,
        project: ProjectId,
        r: &Receipt,
        producer: NodeId,
        now: u64,
    ) -> bool {
        let sample = self.policy(&project).sample_milli;
        if !sampled(&source, &r.result, sample) && !self.is_marked(&project, &producer) {
            return false;
        }
        let work = Self::duty(source, r.result, 0, vec![producer]);
        let id = work.id(&project);
        self.insert_item(id, project, WorkRef::Own(Arc::new(work)), now);
        self.items.contains_key(&id)
    }

    /// Whether `node` may not hold `e`: a check of its own result (or, in round 1, of the
    /// result it checked first).
    pub(super) fn barred(&self, e: &super::ItemEntry, node: &NodeId) -> bool {
        matches!(&*e.work, WorkItem::Verify { exclude, .. } if exclude.contains(node))
    }

    /// Drops the checks of `source`'s replaced result `old`, done or not, and the strikes they
    /// gave: a quorum is about the result an item has, and nodes that never saw the replaced
    /// one (the other side of a partition) never derived its checks. Their receipts, should
    /// they come again, find no item and are parked like any receipt of an unknown item.
    pub(super) fn drop_checks(
        &mut self,
        source: ItemId,
        project: ProjectId,
        old: &Signed<Receipt>,
    ) {
        let Some(producer) = check_of(old) else { return };
        let r0 = Self::duty(source, *producer.result, 0, vec![producer.node]);
        let first = self.done_receipt(&r0.id(&project)).map(|r| r.signer().node_id());
        let mut ids = vec![r0.id(&project)];
        if let Some(first) = first {
            ids.push(
                Self::duty(source, *producer.result, 1, vec![producer.node, first]).id(&project),
            );
        }
        for id in ids {
            if !self.items.contains_key(&id) {
                continue;
            }
            self.drop_local(id, super::CancelReason::Replaced);
            // Folded out while it is still there: it counts in its source's bucket.
            self.forget_item(id);
        }
        self.unstrike(project, source);
    }

    /// Forgets the strikes `source`'s quorum gave (a node left below the project's strikes
    /// is no longer marked).
    fn unstrike(&mut self, project: ProjectId, source: ItemId) {
        self.strikes.by_node.retain(|(p, _), set| {
            if *p == project {
                set.remove(&source);
            }
            !set.is_empty()
        });
    }

    /// A check finished: settles its source's quorum as far as it goes, deriving the third
    /// execution after a disagreement, striking the loser, and swapping copies when the
    /// result is overturned.
    /// Returns whether it derived an item.
    pub(super) fn settle_check(&mut self, check: &WorkItem, project: ProjectId, now: u64) -> bool {
        let WorkItem::Verify { source, result, round, .. } = check else { return false };
        let Some(e) = self.items.get(source) else { return false };
        let Phase::Done { receipt } = &e.phase else { return false };
        let Some((r, _)) = receipt_parts(receipt) else { return false };
        if r.result != *result {
            // The source's result changed since: this check is moot.
            return false;
        }
        let producer = receipt.signer().node_id();
        match (round, self.quorum(source)) {
            (0, Quorum::Disputed) => {
                let r0 = Self::duty(*source, *result, 0, vec![producer]).id(&project);
                let Some(first) = self.done_receipt(&r0).map(|r| r.signer().node_id()) else {
                    return false;
                };
                let work = Self::duty(*source, *result, 1, vec![producer, first]);
                let id = work.id(&project);
                self.insert_item(id, project, WorkRef::Own(Arc::new(work)), now);
                self.items.contains_key(&id)
            }
            (1, q @ (Quorum::Upheld | Quorum::Overturned)) => {
                let r0 = Self::duty(*source, *result, 0, vec![producer]).id(&project);
                let Some(first) = self.done_receipt(&r0).cloned() else { return false };
                let Some(urls) = self.crawl_urls(source) else { return false };
                let policy = self.policy(&project);
                let receipt = receipt.clone();
                let (Some(p), Some(f)) = (check_of(&receipt), check_of(&first)) else {
                    return false;
                };
                let c = compare(&urls, (p.result, p.parts), (f.result, f.parts), &policy);
                let loser = if q == Quorum::Upheld { f.node } else { p.node };
                if c.major() {
                    self.strike(project, loser, *source, now);
                }
                if q == Quorum::Overturned {
                    self.stats.overturned += 1;
                    self.drop_seed_duties(*source, project, &receipt);
                    if let Some((fr, _)) = receipt_parts(&first) {
                        let fr = fr.clone();
                        // The kept result's copies: a first checker's result is the source
                        // of its own duties, so holders fetch it from the checker.
                        self.derive_seed_duties(r0, project, &fr, now);
                    }
                }
                false
            }
            _ => false,
        }
    }

    /// The URLs of crawl chunk `id`.
    pub(super) fn crawl_urls(&self, id: &ItemId) -> Option<Vec<String>> {
        match &*self.items.get(id)?.work {
            WorkItem::CrawlChunk { urls } => Some(urls.clone()),
            _ => None,
        }
    }

    /// `node` lost the quorum on `source`: one strike; at the project's `verify.strikes` it is
    /// marked, and every result of it known here is checked.
    fn strike(&mut self, project: ProjectId, node: NodeId, source: ItemId, now: u64) {
        let need = self.strikes_needed(&project);
        let set = self.strikes.by_node.entry((project, node)).or_default();
        // Only the strike that makes the mark acts: later ones are evidence, kept.
        if !set.insert(source) || set.len() != need {
            return;
        }
        self.stats.marked += 1;
        let theirs: Vec<(ItemId, Receipt)> = self
            .items
            .iter()
            .filter(|(_, e)| {
                e.project == project && matches!(&*e.work, WorkItem::CrawlChunk { .. })
            })
            .filter_map(|(id, e)| match &e.phase {
                Phase::Done { receipt } if receipt.signer().node_id() == node => {
                    receipt_parts(receipt).map(|(r, _)| (*id, r.clone()))
                }
                _ => None,
            })
            .collect();
        for (id, r) in theirs {
            self.derive_check(id, project, &r, node, now);
        }
    }
}
