//! Rendezvous (highest random weight) scores.
//!
//! `score(item, node)` is pairwise, so any two nodes' claims on an item can be ranked without a
//! shared view of who is in the mesh.

use crate::ids::{ItemId, NodeId};

/// The rendezvous score of `node` for `item`; higher ranks first.
pub fn score(item: &ItemId, node: &NodeId) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("starling/v1/hrw");
    h.update(item.as_bytes());
    h.update(node.as_bytes());
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
    let mut h = blake3::Hasher::new_derive_key("starling/v1/hrw-attempt");
    h.update(item.as_bytes());
    h.update(&[failures]);
    ItemId(*h.finalize().as_bytes())
}

/// The rank (0 = first) of `me` for `item` among `me` and `others`.
pub fn rank<'a>(item: &ItemId, me: &NodeId, others: impl IntoIterator<Item = &'a NodeId>) -> u32 {
    let mine = (score(item, me), *me);
    let mut rank = 0u32;
    for other in others {
        if other != me && (score(item, other), *other) > mine {
            rank += 1;
        }
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_a_permutation() {
        let nodes: Vec<NodeId> = (0..10u8).map(|i| NodeId([i; 32])).collect();
        let item = ItemId([42; 32]);
        let mut ranks: Vec<u32> = nodes.iter().map(|n| rank(&item, n, &nodes)).collect();
        ranks.sort_unstable();
        assert_eq!(ranks, (0..10).collect::<Vec<_>>());
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
