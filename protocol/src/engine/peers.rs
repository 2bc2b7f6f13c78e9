//! The live peers this node knows from their signed heartbeats, indexed the ways the engine
//! asks: by when each runs out, by the projects each works on, and as the lists an item's HRW
//! rank is counted among. Every change of the live set is numbered (`version`) and logged, so
//! that a rank cached against an older set can take in the changes since rather than start
//! afresh (see `RankMemo`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::hrw;
use crate::ids::{ItemId, NodeId, ProjectId};
use crate::message::{Presence, Roles};
use crate::shard::Shard;
use crate::signed::Signed;

use super::{Reject, relay_project};

/// Peer-set changes kept for cached rankings to catch up with; a ranking older than the log
/// starts afresh.
pub(super) const PEER_LOG_MAX: usize = 64;

/// Rank lists kept at once; more (project, role) pairs than this in play just list again.
const RANK_LISTS_MAX: usize = 16;

/// A live peer, from its last heartbeat.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) seq: u64,
    pub(super) projects: Vec<ProjectId>,
    pub(super) expires_at: u64,
    pub(super) roles: Roles,
    pub(super) free: u16,
    pub(super) capacity: u16,
    pub(super) presence: Signed<Presence>,
    /// Its [`crate::shard::member_bits`], hashed once.
    pub(super) bits: u16,
}

/// How far ranking this node for an item's attempt `failures` had got as of the peer-set
/// version `version` (its low 32 bits: a memo is carried forward over at most `PEER_LOG_MAX`
/// changes, and is 32 bytes in all).
#[derive(Debug, Clone, Copy)]
pub(super) struct RankMemo {
    pub(super) version: u32,
    pub(super) failures: u8,
    pub(super) scan: hrw::RankScan,
}

/// One change of the live peer set, logged so cached rankings can take it in: `node` joined
/// or left the lists it ranks in, given by its `roles` and `projects` at the time.
#[derive(Debug, Clone)]
struct PeerChange {
    node: NodeId,
    joined: bool,
    roles: Roles,
    projects: Box<[ProjectId]>,
    /// Its [`crate::shard::member_bits`].
    bits: u16,
}

impl PeerChange {
    /// Whether the node counts in the ranking of items of `project` that need `role`, as
    /// [`PeerTable::rank_list`] lists them.
    fn ranks_in(&self, project: &ProjectId, role: Roles, shard: Option<Shard>) -> bool {
        shard.is_none_or(|s| Shard::of_bits(self.bits, s.depth) == s)
            && self.roles.contains(role)
            && (*project == relay_project()
                || self.projects.is_empty()
                || self.projects.contains(project))
    }
}

/// The live peers and their indexes.
#[derive(Debug, Default)]
pub(super) struct PeerTable {
    peers: BTreeMap<NodeId, Peer>,
    /// (presence runs out, peer), soonest first.
    expiry: BTreeSet<(u64, NodeId)>,
    /// Live peers by the projects their presence lists; peers listing none work on all.
    by_project: BTreeMap<ProjectId, BTreeSet<NodeId>>,
    any_project: BTreeSet<NodeId>,
    /// Bumped whenever the live peer set (or a peer's roles or projects) changes.
    version: u64,
    /// The latest changes of the peer set, one per version, oldest first.
    log: VecDeque<PeerChange>,
    /// The peers an item of (project, role) is ranked among, as of `rank_lists_version`.
    rank_lists: BTreeMap<(ProjectId, u8, Option<Shard>), Arc<[NodeId]>>,
    rank_lists_version: u64,
}

impl PeerTable {
    /// The live peers in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Peer)> + '_ {
        self.peers.iter()
    }

    /// The version of the live set: bumped by every change that can move a rank.
    pub(super) fn version(&self) -> u64 {
        self.version
    }

    /// When the next peer's presence runs out.
    pub(super) fn next_expiry(&self) -> Option<u64> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Forgets every peer whose presence has run out by `now`.
    pub(super) fn expire(&mut self, now: u64) {
        while let Some(&(t, node)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expiry.pop_first();
            self.forget(&node);
        }
    }

    /// Takes in `node`'s verified heartbeat `p` (signed: `s`), which keeps it live until
    /// `expires_at`. A heartbeat no newer than the last is a duplicate; a new peer past
    /// `peers_max` makes room by dropping the peer closest to expiry.
    pub(super) fn heard(
        &mut self,
        node: NodeId,
        p: &Presence,
        s: Signed<Presence>,
        expires_at: u64,
        peers_max: usize,
    ) -> Result<(), Reject> {
        // The peer's shard bits: kept from its first heartbeat, hashed once.
        let bits = match self.peers.get(&node) {
            Some(old) => old.bits,
            None => crate::shard::member_bits(&node),
        };
        if let Some(old) = self.peers.get_mut(&node) {
            if old.seq >= p.seq {
                return Err(Reject::Duplicate);
            }
            let old_expiry = old.expires_at;
            if old.projects == p.projects && old.roles == p.roles {
                // Most heartbeats change nothing but the lease on life: updated in place, with
                // the indexes (and the ranks cached against them) left as they are.
                (old.seq, old.expires_at, old.free, old.capacity) =
                    (p.seq, expires_at, p.free, p.capacity);
                old.presence = s;
                self.expiry.remove(&(old_expiry, node));
                self.expiry.insert((expires_at, node));
                return Ok(());
            }
            self.expiry.remove(&(old_expiry, node));
            self.forget(&node);
            self.index(node, p.roles, &p.projects, bits);
        } else {
            if self.peers.len() >= peers_max {
                match self.expiry.pop_first() {
                    Some((_, evicted)) => self.forget(&evicted),
                    None => return Err(Reject::Full),
                }
            }
            self.index(node, p.roles, &p.projects, bits);
        }
        self.expiry.insert((expires_at, node));
        let peer = Peer {
            seq: p.seq,
            projects: p.projects.clone(),
            expires_at,
            roles: p.roles,
            free: p.free,
            capacity: p.capacity,
            presence: s,
            bits,
        };
        self.peers.insert(node, peer);
        Ok(())
    }

    /// The peers an item of `project` that needs `role` is ranked among, in id order (as
    /// cached rankings score them, see `hrw::RankScan`): listed once per change of the peer
    /// set rather than looked up per item. Within `shard` for an item of a split project:
    /// only the shard's members rank for it.
    pub(super) fn rank_list(
        &mut self,
        project: &ProjectId,
        role: Roles,
        shard: Option<Shard>,
    ) -> Arc<[NodeId]> {
        if self.rank_lists_version != self.version || self.rank_lists.len() >= RANK_LISTS_MAX {
            self.rank_lists.clear();
            self.rank_lists_version = self.version;
        }
        let key = (*project, role.0, shard);
        if let Some(list) = self.rank_lists.get(&key) {
            return Arc::clone(list);
        }
        let list: Arc<[NodeId]> =
            self.ranked_among(project, role, shard).collect::<Vec<_>>().into();
        self.rank_lists.insert(key, Arc::clone(&list));
        list
    }

    /// Live peers of `project` (listing it, or every project) in `shard`, whatever their roles.
    pub(super) fn members(&self, project: &ProjectId, shard: Shard) -> usize {
        self.ranked_among(project, Roles(0), Some(shard)).count()
    }

    /// The peers counted in the ranking of items of `project` that need `role`, in id order.
    fn ranked_among(
        &self,
        project: &ProjectId,
        role: Roles,
        shard: Option<Shard>,
    ) -> impl Iterator<Item = NodeId> {
        let in_shard = move |n: &NodeId| {
            shard.is_none_or(|s| {
                self.peers.get(n).is_some_and(|p| Shard::of_bits(p.bits, s.depth) == s)
            })
        };
        let has_role =
            |n: &NodeId| in_shard(n) && self.peers.get(n).is_some_and(|p| p.roles.contains(role));
        let list: Vec<NodeId> = if *project == relay_project() {
            self.peers.keys().filter(|n| has_role(n)).copied().collect()
        } else {
            let listed = self.by_project.get(project).into_iter().flatten();
            let mut list: Vec<NodeId> =
                listed.chain(self.any_project.iter()).copied().filter(has_role).collect();
            list.sort_unstable();
            list
        };
        list.into_iter()
    }

    /// `me`'s HRW rank for `item` among the peers it is ranked among (a fresh ranking).
    #[cfg(test)]
    pub(super) fn rank_of(
        &self,
        item: &ItemId,
        me: &NodeId,
        project: &ProjectId,
        role: Roles,
    ) -> u32 {
        let others: Vec<NodeId> = self.ranked_among(project, role, None).collect();
        hrw::rank(item, me, others.iter())
    }

    /// Whether `node` is indexed as working on `project` by name.
    #[cfg(test)]
    pub(super) fn lists(&self, project: &ProjectId, node: &NodeId) -> bool {
        self.by_project.get(project).is_some_and(|s| s.contains(node))
    }

    /// Brings a ranking of `me` for attempt `key` cached at `memo.version` up to the current
    /// peer set by taking in each change since that touches the list it ranks over. `None` if
    /// the log no longer reaches back that far, and the ranking must start afresh.
    pub(super) fn catch_up(
        &self,
        mut memo: RankMemo,
        key: &ItemId,
        me: &NodeId,
        project: &ProjectId,
        role: Roles,
        shard: Option<Shard>,
    ) -> Option<hrw::RankScan> {
        // The log holds the last changes, one per version; versions are compared in the low 32
        // bits that memos keep.
        let behind = (self.version as u32).wrapping_sub(memo.version) as usize;
        if behind == 0 {
            return Some(memo.scan);
        }
        if behind > self.log.len() {
            return None;
        }
        for change in self.log.iter().skip(self.log.len() - behind) {
            if change.ranks_in(project, role, shard) {
                memo.scan.on_change(key, me, &change.node, change.joined);
            }
        }
        Some(memo.scan)
    }

    /// Counts one change of the peer set and logs it for cached rankings.
    fn log_change(
        &mut self,
        node: NodeId,
        joined: bool,
        roles: Roles,
        projects: Box<[ProjectId]>,
        bits: u16,
    ) {
        self.version += 1;
        if self.log.len() >= PEER_LOG_MAX {
            self.log.pop_front();
        }
        self.log.push_back(PeerChange { node, joined, roles, projects, bits });
    }

    /// Drops `node` from the live set (its expiry entry, if any, is the caller's).
    pub(super) fn forget(&mut self, node: &NodeId) {
        if let Some(p) = self.peers.remove(node) {
            if p.projects.is_empty() {
                self.any_project.remove(node);
            }
            for project in &p.projects {
                if let Some(set) = self.by_project.get_mut(project) {
                    set.remove(node);
                    if set.is_empty() {
                        self.by_project.remove(project);
                    }
                }
            }
            self.log_change(*node, false, p.roles, p.projects.into(), p.bits);
        }
    }

    fn index(&mut self, node: NodeId, roles: Roles, projects: &[ProjectId], bits: u16) {
        self.log_change(node, true, roles, projects.into(), bits);
        if projects.is_empty() {
            self.any_project.insert(node);
        }
        for project in projects {
            self.by_project.entry(*project).or_default().insert(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_keypair;

    fn heartbeat(
        k: u64,
        seq: u64,
        roles: Roles,
        projects: &[ProjectId],
    ) -> (NodeId, Presence, Signed<Presence>) {
        let key = test_keypair(k);
        let p =
            Presence { seq, at_ms: seq, capacity: 4, free: 4, roles, projects: projects.to_vec() };
        let s = Signed::sign(&key, &p);
        (key.node_id(), p, s)
    }

    fn hear(
        t: &mut PeerTable,
        k: u64,
        seq: u64,
        roles: Roles,
        projects: &[ProjectId],
        until: u64,
    ) -> Result<(), Reject> {
        let (node, p, s) = heartbeat(k, seq, roles, projects);
        t.heard(node, &p, s, until, 8)
    }

    const A: ProjectId = ProjectId([1; 32]);
    const B: ProjectId = ProjectId([2; 32]);

    #[test]
    fn heartbeats_index_peers_and_only_changes_move_the_version() {
        let mut t = PeerTable::default();
        hear(&mut t, 1, 1, Roles::CRAWL, &[A], 100).unwrap();
        assert!(t.lists(&A, &test_keypair(1).node_id()));
        assert_eq!(t.version(), 1);
        // A newer heartbeat that changes nothing but the expiry leaves the version.
        hear(&mut t, 1, 2, Roles::CRAWL, &[A], 200).unwrap();
        assert_eq!((t.version(), t.next_expiry()), (1, Some(200)));
        assert_eq!(hear(&mut t, 1, 2, Roles::CRAWL, &[A], 300), Err(Reject::Duplicate));
        // Another project: left A's list and joined B's, two changes.
        hear(&mut t, 1, 3, Roles::CRAWL, &[B], 300).unwrap();
        assert_eq!(t.version(), 3);
        assert!(
            !t.lists(&A, &test_keypair(1).node_id()) && t.lists(&B, &test_keypair(1).node_id())
        );
    }

    #[test]
    fn peers_expire_in_time_and_the_closest_to_expiry_makes_room() {
        let mut t = PeerTable::default();
        for k in 0..8 {
            hear(&mut t, k, 1, Roles::CRAWL, &[], 100 + k).unwrap();
        }
        // Full: the one that runs out first goes.
        hear(&mut t, 8, 1, Roles::CRAWL, &[], 500).unwrap();
        assert!(t.iter().all(|(n, _)| *n != test_keypair(0).node_id()));
        assert_eq!(t.next_expiry(), Some(101));
        t.expire(104);
        assert_eq!(t.iter().count(), 4);
        assert_eq!(t.next_expiry(), Some(105));
    }

    #[test]
    fn rank_lists_hold_the_peers_of_the_project_with_the_role_in_id_order() {
        let mut t = PeerTable::default();
        hear(&mut t, 1, 1, Roles::CRAWL, &[A], 100).unwrap();
        hear(&mut t, 2, 1, Roles::CRAWL, &[], 100).unwrap();
        hear(&mut t, 3, 1, Roles::CRAWL, &[B], 100).unwrap();
        hear(&mut t, 4, 1, Roles::SEED, &[A], 100).unwrap();
        let list = t.rank_list(&A, Roles::CRAWL, None);
        let mut want = [test_keypair(1).node_id(), test_keypair(2).node_id()];
        want.sort_unstable();
        assert_eq!(&*list, &want[..]);
        // Relay slots rank among every peer with the role, whatever its projects.
        assert_eq!(t.rank_list(&relay_project(), Roles::CRAWL, None).len(), 3);
        // A change of the peer set lists again.
        t.forget(&test_keypair(2).node_id());
        assert_eq!(t.rank_list(&A, Roles::CRAWL, None).len(), 1);
    }

    #[test]
    fn a_cached_rank_catches_up_only_while_the_log_reaches_back() {
        let mut t = PeerTable::default();
        let (me, item) = (test_keypair(99).node_id(), ItemId([5; 32]));
        let memo = RankMemo { version: 0, failures: 0, scan: hrw::RankScan::start(&item, &me) };
        hear(&mut t, 1, 1, Roles::CRAWL, &[], 100).unwrap();
        let caught = t.catch_up(memo, &item, &me, &A, Roles::CRAWL, None).expect("in the log");
        let others = t.rank_list(&A, Roles::CRAWL, None);
        let fresh = hrw::RankScan::start(&item, &me).advance(&item, &me, &others, u32::MAX);
        let mut caught = caught;
        assert_eq!(caught.advance(&item, &me, &others, u32::MAX), fresh);
        for k in 2..(PEER_LOG_MAX as u64 + 2) {
            hear(&mut t, k, 1, Roles::CRAWL, &[], 100).unwrap_or(());
            t.forget(&test_keypair(k).node_id());
        }
        assert!(t.catch_up(memo, &item, &me, &A, Roles::CRAWL, None).is_none());
    }

    /// In a split project an item ranks among its shard's members only, and a cached rank
    /// takes in only the changes of members of that shard.
    #[test]
    fn a_shards_rank_list_holds_its_members_only_and_catches_up_with_them_alone() {
        let mut t = PeerTable::default();
        let (me, item) = (test_keypair(99).node_id(), ItemId([5; 32]));
        let shard = Shard::of_node(&me, 2);
        let memo = RankMemo { version: 0, failures: 0, scan: hrw::RankScan::start(&item, &me) };
        let mut members = Vec::new();
        for k in 1..=24u64 {
            let (n, p, signed) = heartbeat(k, 1, Roles::CRAWL, &[A]);
            t.heard(n, &p, signed, 100, 64).unwrap();
            if Shard::of_node(&n, 2) == shard {
                members.push(n);
            }
        }
        members.sort_unstable();
        assert!(!members.is_empty() && members.len() < 24, "{} members", members.len());
        let list = t.rank_list(&A, Roles::CRAWL, Some(shard));
        assert_eq!(&*list, &members[..]);
        assert_eq!(t.rank_list(&A, Roles::CRAWL, None).len(), 24);
        let mut caught = t.catch_up(memo, &item, &me, &A, Roles::CRAWL, Some(shard)).unwrap();
        let fresh = hrw::RankScan::start(&item, &me).advance(&item, &me, &list, u32::MAX);
        assert_eq!(caught.advance(&item, &me, &list, u32::MAX), fresh);
    }
}
