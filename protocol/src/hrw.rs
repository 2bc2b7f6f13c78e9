//! Rendezvous (highest random weight) scores.
//!
//! `score(item, node)` is pairwise, so any two nodes' claims on an item can be ranked without a
//! shared view of who is in the mesh.

use std::sync::OnceLock;

use crate::ids::{ItemId, NodeId};

/// A derive-key hasher for `context` whose context key is worked out once, so each call skips
/// hashing the context string again (same output as `Hasher::new_derive_key(context)`).
fn keyed(cell: &'static OnceLock<[u8; 32]>, context: &str) -> blake3::Hasher {
    use blake3::hazmat::HasherExt;
    let key = cell.get_or_init(|| blake3::hazmat::hash_derive_key_context(context));
    blake3::Hasher::new_from_context_key(key)
}

/// A remembered score.
#[derive(Clone, Copy)]
struct MemoSlot {
    item: ItemId,
    node: NodeId,
    score: u64,
    filled: bool,
}

thread_local! {
    /// Scores worked out on this thread, direct-mapped; empty (and unused) unless turned on
    /// with [`memo_scores`].
    static MEMO: std::cell::RefCell<Vec<MemoSlot>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Remembers the scores worked out on this thread in a table of `slots` entries (rounded down
/// to a power of two; 0 turns it off), 80 bytes each. A process that runs many engines on one
/// thread, such as the simulator, ranks each (item, node) pair once per engine; with this
/// the engines after the first find it here. It changes no score, only the time taken. Off
/// by default: a node ranks each pair once, and gains nothing from it.
pub fn memo_scores(slots: usize) {
    let slots = if slots == 0 { 0 } else { 1 << slots.ilog2() };
    let empty = MemoSlot { item: ItemId([0; 32]), node: NodeId([0; 32]), score: 0, filled: false };
    MEMO.with(|m| *m.borrow_mut() = vec![empty; slots]);
}

/// The rendezvous score of `node` for `item`; higher ranks first.
pub fn score(item: &ItemId, node: &NodeId) -> u64 {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.is_empty() {
            return compute_score(item, node);
        }
        // Ids are uniform already: a few of their bytes pick the slot.
        let word = |b: &[u8; 32]| u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let at = (word(item.as_bytes()) ^ word(node.as_bytes()).rotate_left(29)) as usize;
        let mask = m.len() - 1;
        let slot = &mut m[at & mask];
        if slot.filled && slot.item == *item && slot.node == *node {
            return slot.score;
        }
        let score = compute_score(item, node);
        *slot = MemoSlot { item: *item, node: *node, score, filled: true };
        score
    })
}

fn compute_score(item: &ItemId, node: &NodeId) -> u64 {
    static HRW: OnceLock<[u8; 32]> = OnceLock::new();
    // One 64-byte block, handed over in one piece: a single compression, without the
    // hasher's buffering of two halves.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(item.as_bytes());
    block[32..].copy_from_slice(node.as_bytes());
    let mut h = keyed(&HRW, "starling/v1/hrw");
    h.update(&block);
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The key an item is ranked by on its attempt after `failures` failures: the item itself at
/// first, then a fresh draw per failure, the same on every node.
pub fn attempt_key(item: &ItemId, failures: u8) -> ItemId {
    if failures == 0 {
        return *item;
    }
    static ATTEMPT: OnceLock<[u8; 32]> = OnceLock::new();
    let mut h = keyed(&ATTEMPT, "starling/v1/hrw-attempt");
    h.update(item.as_bytes());
    h.update(&[failures]);
    ItemId(*h.finalize().as_bytes())
}

/// The rank (0 = first) of `me` for `item` among `me` and `others`.
pub fn rank<'a>(item: &ItemId, me: &NodeId, others: impl IntoIterator<Item = &'a NodeId>) -> u32 {
    let mut others: Vec<NodeId> = others.into_iter().copied().collect();
    others.sort_unstable();
    others.dedup();
    let mut scan = RankScan::start(item, me);
    match scan.advance(item, me, &others, u32::MAX) {
        Ok(rank) | Err(rank) => rank,
    }
}

/// How far ranking `me` for one item has got: `me`'s own score, and how many of the peers
/// scored so far rank above it. Peers are scored in id order, so "scored so far" is every
/// peer whose id begins below a mark, which stays true when peers come and go: a change to
/// the list is taken into account with one score ([`RankScan::on_change`]) instead of ranking
/// afresh. The mark is the first 8 bytes of an id, so a scan is 24 bytes; it only ever stops
/// between peers whose ids differ in those bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankScan {
    mine: u64,
    /// Every peer whose id begins (in its first 8 bytes, big-endian) below this is scored.
    next: u64,
    above: u32,
    /// Every peer is scored.
    complete: bool,
}

/// The first 8 bytes of an id as a number, ordered as the ids are.
fn mark(id: &NodeId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

impl RankScan {
    /// A ranking of `me` for `item` with no peer scored yet.
    pub fn start(item: &ItemId, me: &NodeId) -> Self {
        Self { mine: score(item, me), next: 0, above: 0, complete: false }
    }

    /// How many of the peers scored so far rank above `me`: the rank once every peer is
    /// scored, a lower bound on it before.
    pub fn above(&self) -> u32 {
        self.above
    }

    /// Whether every peer has been scored, so [`RankScan::above`] is the rank.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Takes in that `node` joined (`joined`) or left the list ranked over. A node not scored
    /// yet changes nothing now: it is scored when the scan gets to it.
    pub fn on_change(&mut self, item: &ItemId, me: &NodeId, node: &NodeId, joined: bool) {
        if node == me || !(self.complete || mark(node) < self.next) {
            return;
        }
        if (score(item, node), *node) > (self.mine, *me) {
            self.above = if joined { self.above + 1 } else { self.above.saturating_sub(1) };
        }
    }

    /// Scores the peers of `sorted` (ascending ids, no repeats) not scored yet, stopping once
    /// more than `limit` of them rank above `me`. `Ok(rank)` if `me`'s rank is at most `limit`;
    /// otherwise `Err(bound)`, a lower bound on the rank above `limit`, found without scoring
    /// the peers after the one that settled it. Calling again with a higher limit carries on
    /// from there, so a ranking finished in steps scores each peer once. A node far down the
    /// ranking learns that it may not claim yet from a few peers instead of all of them.
    pub fn advance(
        &mut self,
        item: &ItemId,
        me: &NodeId,
        sorted: &[NodeId],
        limit: u32,
    ) -> Result<u32, u32> {
        if !self.complete {
            let start = sorted.partition_point(|p| mark(p) < self.next);
            let mine = (self.mine, *me);
            for (i, other) in sorted[start..].iter().enumerate() {
                if other != me && (score(item, other), *other) > mine {
                    self.above += 1;
                }
                if self.above > limit {
                    // Stop only where the mark can tell the peers scored from the rest.
                    match sorted.get(start + i + 1).map(mark) {
                        Some(next) if next > mark(other) => {
                            self.next = next;
                            return Err(self.above);
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            self.complete = true;
        }
        if self.above > limit { Err(self.above) } else { Ok(self.above) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_hasher_gives_the_plain_derive_key_hash() {
        let (item, node) = (ItemId([7; 32]), NodeId([9; 32]));
        let mut h = blake3::Hasher::new_derive_key("starling/v1/hrw");
        h.update(item.as_bytes());
        h.update(node.as_bytes());
        let want = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap());
        assert_eq!(score(&item, &node), want);
        assert_eq!(score(&item, &node), want, "the second call reuses the set-up hasher");
    }

    #[test]
    fn remembered_scores_are_the_scores() {
        let pairs: Vec<(ItemId, NodeId)> = (0..300u32)
            .map(|i| {
                let h =
                    |tag: u8| *blake3::hash(&[&i.to_le_bytes()[..], &[tag]].concat()).as_bytes();
                (ItemId(h(0)), NodeId(h(1)))
            })
            .collect();
        let plain: Vec<u64> = pairs.iter().map(|(i, n)| score(i, n)).collect();
        // A table far smaller than the pairs, so slots are taken over and looked up again.
        memo_scores(64);
        for _ in 0..3 {
            let memo: Vec<u64> = pairs.iter().map(|(i, n)| score(i, n)).collect();
            assert_eq!(memo, plain);
        }
        memo_scores(0);
        assert_eq!(pairs.iter().map(|(i, n)| score(i, n)).collect::<Vec<_>>(), plain);
    }

    #[test]
    fn ranks_are_a_permutation() {
        let nodes: Vec<NodeId> = (0..10u8).map(|i| NodeId([i; 32])).collect();
        let item = ItemId([42; 32]);
        let mut ranks: Vec<u32> = nodes.iter().map(|n| rank(&item, n, &nodes)).collect();
        ranks.sort_unstable();
        assert_eq!(ranks, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_bounded_rank_is_exact_up_to_its_limit_and_a_lower_bound_above_it() {
        let nodes: Vec<NodeId> = (0..12u8).map(|i| NodeId([i; 32])).collect();
        for seed in 0..20u8 {
            let item = ItemId([seed; 32]);
            for me in &nodes {
                let exact = rank(&item, me, &nodes);
                let mut scan = RankScan::start(&item, me);
                for limit in 0..12 {
                    let before = scan;
                    match scan.advance(&item, me, &nodes, limit) {
                        Ok(rank) => {
                            assert!(exact <= limit);
                            assert_eq!(rank, exact);
                            assert!(scan.complete());
                            break;
                        }
                        Err(bound) => {
                            assert!(exact > limit, "rank {exact} is within {limit}");
                            assert!(bound > limit && bound <= exact);
                            assert!(scan.above() >= before.above(), "a scan never goes back");
                        }
                    }
                }
            }
        }
    }

    /// A scan carried across joins and leaves, at every stage of completion, ends with the
    /// same rank as ranking the final list afresh.
    #[test]
    fn a_scan_kept_across_changes_to_the_list_ranks_as_a_fresh_one() {
        let id = |i: u8| NodeId(*blake3::hash(&[i]).as_bytes());
        let me = id(0);
        for seed in 0..30u8 {
            let item = ItemId(*blake3::hash(&[seed, 1]).as_bytes());
            for first_limit in 0..6 {
                let mut list: Vec<NodeId> = (1..12).map(id).collect();
                list.sort_unstable();
                let mut scan = RankScan::start(&item, &me);
                let _ = scan.advance(&item, &me, &list, first_limit);
                // Three leave and four join, some below the scan's place and some above.
                for (k, node) in [id(3), id(7), id(11)].into_iter().enumerate() {
                    list.retain(|n| *n != node);
                    scan.on_change(&item, &me, &node, false);
                    let _ = scan.advance(&item, &me, &list, first_limit + k as u32);
                }
                for node in (20..24).map(id) {
                    list.push(node);
                    list.sort_unstable();
                    scan.on_change(&item, &me, &node, true);
                }
                let want = rank(&item, &me, &list);
                assert_eq!(scan.advance(&item, &me, &list, u32::MAX), Ok(want), "seed {seed}");
            }
        }
    }

    /// Ids that share their first 8 bytes are scored together, so the scan's mark still
    /// tells scored peers from the rest, and ranks come out exact.
    #[test]
    fn peers_sharing_the_first_bytes_of_their_ids_rank_exactly() {
        let id = |hi: u8, lo: u8| {
            let mut b = [0u8; 32];
            b[0] = hi;
            b[31] = lo;
            NodeId(b)
        };
        let mut nodes: Vec<NodeId> =
            (0..8u8).flat_map(|hi| (0..4u8).map(move |lo| id(hi, lo))).collect();
        nodes.sort_unstable();
        for seed in 0..20u8 {
            let item = ItemId([seed; 32]);
            for me in &nodes {
                let exact = rank(&item, me, &nodes);
                let mut scan = RankScan::start(&item, me);
                let mut limit = 0;
                let got = loop {
                    match scan.advance(&item, me, &nodes, limit) {
                        Ok(rank) => break rank,
                        Err(bound) => assert!(bound <= exact),
                    }
                    // A peer sharing a mark with scored ones leaves, and comes back.
                    let gone = nodes[(seed as usize + limit as usize) % nodes.len()];
                    if gone != *me {
                        let rest: Vec<NodeId> =
                            nodes.iter().copied().filter(|n| *n != gone).collect();
                        scan.on_change(&item, me, &gone, false);
                        let _ = scan.advance(&item, me, &rest, limit);
                        scan.on_change(&item, me, &gone, true);
                    }
                    limit += 1;
                };
                assert_eq!(got, exact);
            }
        }
    }

    #[test]
    fn scores_spread_items_across_nodes() {
        let nodes: Vec<NodeId> = (0..5u8).map(|i| NodeId([i; 32])).collect();
        let mut wins = [0u32; 5];
        for i in 0..1000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            let item = ItemId(b);
            let best = (0..5).max_by_key(|&n| score(&item, &nodes[n])).unwrap();
            wins[best] += 1;
        }
        assert!(wins.iter().all(|&w| (120..=280).contains(&w)), "{wins:?}");
    }
}
