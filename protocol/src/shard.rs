//! Neighbourhoods: a project's item space split into `2^depth` shards by item id prefix, each
//! node a member of one shard of every sharded project, chosen from its id.
//!
//! A node takes in, ranks, claims and checks only the items of its own shard, and hears only
//! its shard's topic, so what it spends on coordination follows the shard's size, not the
//! project's. The depth is the project owner's, in the signed manifest
//! ([`crate::ProjectManifest::shard_depth`]), so every node that holds the same manifest
//! version computes the same shard of every item and of every node: a shard count worked out
//! by each node from the peers it happens to hear would differ between nodes near a boundary,
//! and two nodes that disagree on an item's shard do not hear each other's claims on it. The
//! owner raises the depth with a new manifest version as the project grows ([`depth_for`]).
//!
//! Shards nest: the shard of an item (or of a node) at depth `d + 1` is one of the two halves
//! of its shard at depth `d`. When the depth goes up by one, every shard's items and members
//! split between the same two halves, so every item keeps members that held it before and no
//! member is asked to take on items it never had; when it goes down, two sibling shards merge
//! and each member learns the other half's items from the batches it already keeps.
//!
//! Which items are sharded: crawl chunks and torrents by their own id; seeding duties and
//! spot-checks by their source's id, so they live in the shard that saw the source's receipt.
//! Host lanes and relay slots serve the whole mesh and are never sharded ([`shard_key`]).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::ids::{ItemId, NodeId};
use crate::item::WorkItem;

/// Deepest split: 4,096 shards.
pub const SHARD_DEPTH_MAX: u8 = 12;

/// Members per shard [`depth_for`] aims at by default: the depth is the deepest that leaves
/// at least this many live nodes in a shard on average.
pub const SHARD_MEMBERS_DEFAULT: u32 = 12;

/// One shard: the items (and members) whose key starts with the `depth` bits of `prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// How many leading bits select the shard (0: the whole project is one shard).
    pub depth: u8,
    /// Those bits, as a number below `2^depth`.
    pub prefix: u16,
}

/// The first `depth` bits of `key`, as a number.
fn prefix_bits(key: &[u8; 32], depth: u8) -> u16 {
    let depth = depth.min(SHARD_DEPTH_MAX);
    if depth == 0 {
        return 0;
    }
    let top = u16::from_be_bytes([key[0], key[1]]);
    top >> (16 - u32::from(depth))
}

/// The key a node's membership is read from: its id hashed under its own context, so the
/// shard a node lands in is unrelated to its HRW scores.
fn member_key(node: &NodeId) -> [u8; 32] {
    static CONTEXT: OnceLock<[u8; 32]> = OnceLock::new();
    use blake3::hazmat::HasherExt;
    let key = CONTEXT.get_or_init(|| blake3::hazmat::hash_derive_key_context("starling/v1/shard"));
    let mut h = blake3::Hasher::new_from_context_key(key);
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// The bits a node's shards are read from: the first 16 of its membership key, enough for
/// [`SHARD_DEPTH_MAX`]. One hash per node: holders of many nodes' ids (a peer table) keep it
/// and compare with [`Shard::of_bits`] rather than hash again.
pub fn member_bits(node: &NodeId) -> u16 {
    let key = member_key(node);
    u16::from_be_bytes([key[0], key[1]])
}

impl Shard {
    /// The whole project, unsplit.
    pub const WHOLE: Shard = Shard { depth: 0, prefix: 0 };

    /// The shard whose items start with `key` at `depth` (capped at [`SHARD_DEPTH_MAX`]).
    pub fn of_key(key: &ItemId, depth: u8) -> Shard {
        let depth = depth.min(SHARD_DEPTH_MAX);
        Shard { depth, prefix: prefix_bits(key.as_bytes(), depth) }
    }

    /// The shard `node` is a member of at `depth`.
    pub fn of_node(node: &NodeId, depth: u8) -> Shard {
        Shard::of_bits(member_bits(node), depth)
    }

    /// The shard at `depth` of the node whose [`member_bits`] are `bits`.
    pub fn of_bits(bits: u16, depth: u8) -> Shard {
        let depth = depth.min(SHARD_DEPTH_MAX);
        let prefix = if depth == 0 { 0 } else { bits >> (16 - u32::from(depth)) };
        Shard { depth, prefix }
    }

    /// Whether `other` lies inside this shard (is it, or one of its halves, at any depth).
    pub fn covers(&self, other: &Shard) -> bool {
        other.depth >= self.depth
            && u32::from(other.prefix) >> u32::from(other.depth - self.depth)
                == u32::from(self.prefix)
    }

    /// The shard this one is a half of; the whole project for itself.
    pub fn parent(&self) -> Shard {
        match self.depth {
            0 => *self,
            d => Shard { depth: d - 1, prefix: self.prefix >> 1 },
        }
    }

    /// The shard's name in topic names, logs and the API: `depth/prefix` in hex, so
    /// `0/0` for an unsplit project and `3/5` for the sixth of eight shards.
    pub fn name(&self) -> String {
        format!("{}/{:x}", self.depth, self.prefix)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The id an item is sharded by, or `None` for items every node of the project takes in
/// (host lanes, relay slots).
pub fn shard_key(id: &ItemId, work: &WorkItem) -> Option<ItemId> {
    match work {
        WorkItem::HostLane { .. } | WorkItem::RelaySlot { .. } => None,
        WorkItem::SeedDuty { source, .. } | WorkItem::Verify { source, .. } => Some(*source),
        WorkItem::CrawlChunk { .. } | WorkItem::Torrent { .. } => Some(*id),
    }
}

/// The depth an owner would pick for `live` nodes so that a shard keeps about `members` of
/// them or more: the deepest `d` with `live / 2^d >= members` (0 when `live < 2 * members`),
/// at most [`SHARD_DEPTH_MAX`].
pub fn depth_for(live: u64, members: u32) -> u8 {
    let members = u64::from(members.max(1));
    let mut d = 0u8;
    while d < SHARD_DEPTH_MAX && live >> (d + 1) >= members {
        d += 1;
    }
    d
}

/// The depth an owner moves a project at `current` depth to with `live` nodes: deeper as soon
/// as [`depth_for`] says so, shallower only once a shard averages under half of `members`, so
/// a count hovering at a boundary does not split and merge the shards over and over. Shards
/// then average between `members / 2` and `2 * members` nodes.
pub fn next_depth(current: u8, live: u64, members: u32) -> u8 {
    let want = depth_for(live, members);
    let members = u64::from(members.max(1));
    if want > current || live.saturating_mul(2) < members << current.min(SHARD_DEPTH_MAX) {
        want
    } else {
        current.min(SHARD_DEPTH_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(b: [u8; 32]) -> ItemId {
        ItemId(b)
    }

    #[test]
    fn depth_zero_is_one_shard_for_everything() {
        let a = Shard::of_key(&item([0xff; 32]), 0);
        let b = Shard::of_key(&item([0; 32]), 0);
        assert_eq!(a, Shard::WHOLE);
        assert_eq!(b, Shard::WHOLE);
        assert_eq!(Shard::of_node(&NodeId([7; 32]), 0), Shard::WHOLE);
    }

    #[test]
    fn the_prefix_is_the_leading_bits() {
        let mut b = [0u8; 32];
        b[0] = 0b1010_0000;
        assert_eq!(Shard::of_key(&item(b), 1), Shard { depth: 1, prefix: 1 });
        assert_eq!(Shard::of_key(&item(b), 3), Shard { depth: 3, prefix: 0b101 });
        b[1] = 0b1100_0000;
        assert_eq!(Shard::of_key(&item(b), 10), Shard { depth: 10, prefix: 0b10_1000_0011 });
        assert_eq!(Shard::of_key(&item(b), 40).depth, SHARD_DEPTH_MAX);
        assert_eq!(Shard { depth: 3, prefix: 5 }.name(), "3/5");
    }

    #[test]
    fn depth_for_keeps_each_shard_at_or_above_the_target() {
        assert_eq!(depth_for(0, 12), 0);
        assert_eq!(depth_for(23, 12), 0);
        assert_eq!(depth_for(24, 12), 1);
        assert_eq!(depth_for(50, 12), 2);
        assert_eq!(depth_for(500, 12), 5);
        assert_eq!(depth_for(10_000, 12), 9);
        assert_eq!(depth_for(u64::MAX, 12), SHARD_DEPTH_MAX);
        assert_eq!(depth_for(5, 0), 2);
        for live in [1u64, 49, 50, 777, 2_000, 10_000] {
            let d = depth_for(live, 12);
            assert!(d == 0 || live >> d >= 12, "{live} nodes at depth {d}");
            assert!(d == SHARD_DEPTH_MAX || live >> (d + 1) < 12, "{live} at {d}");
        }
    }

    #[test]
    fn the_owner_splits_at_once_and_merges_only_well_below_the_target() {
        // 50 nodes at 12 a shard: 4 shards.
        assert_eq!(next_depth(0, 50, 12), 2);
        // Down to 40: 10 a shard, under the target but over half of it: no merge.
        assert_eq!(next_depth(2, 40, 12), 2);
        assert_eq!(next_depth(2, 24, 12), 2);
        // 23 nodes: under 6 a shard, merged to what the count wants.
        assert_eq!(next_depth(2, 23, 12), 0);
        // Up again to 96: 8 shards.
        assert_eq!(next_depth(2, 96, 12), 3);
        assert_eq!(next_depth(3, 95, 12), 3);
        assert_eq!(next_depth(40, 10_000, 12), 9);
    }

    #[test]
    fn lanes_and_relay_slots_are_never_sharded_and_derived_items_follow_their_source() {
        let src = item([9; 32]);
        let lane = WorkItem::HostLane { host: "example.org".into(), lane: 0 };
        assert_eq!(shard_key(&item([1; 32]), &lane), None);
        let duty = WorkItem::SeedDuty {
            source: src,
            result: crate::ids::Digest([0; 32]),
            size: 1,
            replica: 0,
        };
        assert_eq!(shard_key(&item([2; 32]), &duty), Some(src));
    }

    proptest! {
        /// Every shard at depth d+1 lies in exactly the shard at depth d its key gave, for
        /// items and nodes alike: a split hands each item and member to one half of the
        /// shard it was in, so no item is left without the members that held it.
        #[test]
        fn shards_nest_across_depths(key in any::<[u8; 32]>(), d in 0u8..SHARD_DEPTH_MAX) {
            let it = item(key);
            let (upper, lower) = (Shard::of_key(&it, d), Shard::of_key(&it, d + 1));
            prop_assert!(upper.covers(&lower));
            prop_assert_eq!(lower.parent(), upper);
            let node = NodeId(key);
            let (upper, lower) = (Shard::of_node(&node, d), Shard::of_node(&node, d + 1));
            prop_assert!(upper.covers(&lower));
            prop_assert_eq!(lower.parent(), upper);
        }

        /// At any depth, exactly one shard of the 2^d covers an item: the shards split the
        /// item space without overlap or gap.
        #[test]
        fn exactly_one_shard_covers_an_item(key in any::<[u8; 32]>(), d in 0u8..=6) {
            let own = Shard::of_key(&item(key), SHARD_DEPTH_MAX);
            let covering = (0..1u16 << d)
                .filter(|p| Shard { depth: d, prefix: *p }.covers(&own))
                .count();
            prop_assert_eq!(covering, 1);
        }
    }

    /// Members spread evenly: 2,000 node ids at depth 5 (32 shards, 62.5 each on average)
    /// leave no shard with fewer than half the mean or more than twice it.
    #[test]
    fn members_spread_evenly_over_the_shards() {
        let mut counts = [0u32; 32];
        for i in 0..2_000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            counts[Shard::of_node(&NodeId(b), 5).prefix as usize] += 1;
        }
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*lo >= 31 && *hi <= 125, "shard sizes {lo}..{hi}");
    }
}
