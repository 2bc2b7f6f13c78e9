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

/// The rendezvous score of `node` for `item`; higher ranks first.
pub fn score(item: &ItemId, node: &NodeId) -> u64 {
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
    let others: Vec<NodeId> = others.into_iter().copied().collect();
    match rank_up_to(item, me, &others, RankScan::default(), u32::MAX) {
        Ok(rank) | Err(RankScan { above: rank, .. }) => rank,
    }
}

/// How far a bounded ranking got: the peers scored so far (a prefix of the list) and how
/// many of them rank above `me`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RankScan {
    pub scored: u32,
    pub above: u32,
}

/// The rank of `me` for `item` among `me` and `others` if it is at most `limit`: `Ok(rank)`.
/// Otherwise `Err(scan)`, with `scan.above = limit + 1` a lower bound on the rank, found
/// without scoring the peers after `scan.scored`; passing `scan` back with a higher limit
/// carries on from there, so a ranking finished in steps scores each peer once. A node far
/// down the ranking learns that it may not claim yet from a few peers instead of all of them.
pub fn rank_up_to(
    item: &ItemId,
    me: &NodeId,
    others: &[NodeId],
    from: RankScan,
    limit: u32,
) -> Result<u32, RankScan> {
    let mine = (score(item, me), *me);
    let mut scan = from;
    if scan.above > limit {
        return Err(scan);
    }
    let start = (scan.scored as usize).min(others.len());
    for other in &others[start..] {
        scan.scored += 1;
        if other != me && (score(item, other), *other) > mine {
            scan.above += 1;
            if scan.above > limit && (scan.scored as usize) < others.len() {
                return Err(scan);
            }
        }
    }
    if scan.above > limit { Err(scan) } else { Ok(scan.above) }
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
                let mut scan = RankScan::default();
                for limit in 0..12 {
                    match rank_up_to(&item, me, &nodes, scan, limit) {
                        Ok(rank) => {
                            assert!(exact <= limit);
                            assert_eq!(rank, exact);
                            break;
                        }
                        Err(s) => {
                            assert!(exact > limit, "rank {exact} is within {limit}");
                            assert!(s.above > limit && s.above <= exact);
                            assert!(s.scored >= scan.scored, "a scan never goes back");
                            scan = s;
                        }
                    }
                }
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
