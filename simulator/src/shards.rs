//! Neighbourhoods in the world: the owner moving a split project's depth as its node count
//! changes (`[shards] recheck_ms`), and each node following its engine's shards from topic to
//! topic.
//!
//! A node takes a new depth in with the owner's manifest and joins its new shard's topic at
//! once; it stays in the old one for [`SHARD_BRIDGE_MS`], so that what nodes still at the old
//! depth send there reaches it while the manifest spreads. On joining it syncs with a member
//! of the new shard, as a node does with a peer it links to, to learn the items it takes on;
//! after a merge, with members of each part it merged with, and again as it leaves its old
//! shard's topic (see `World::merge_sync`).

use rand::Rng;
use starling_protocol::engine::SYNC_SESSIONS_MAX;
use starling_protocol::shard::{Shard, next_depth};
use starling_protocol::wire::decode;
use starling_protocol::{Envelope, Input, ProjectManifest, Signed};

use crate::gossip::Reach;
use crate::world::{Event, World};

/// Members of each shard a node merges with that it syncs with on the merge: one may be the
/// shard's only member that missed some of its items' news, or fail to answer.
pub(crate) const MERGE_SYNC_PEERS: usize = 2;

/// How long a node stays in the topic of a shard it left by a change of depth.
pub(crate) const SHARD_BRIDGE_MS: u64 = 10_000;

impl World {
    /// The owner of project `p` counts its nodes that are up and, when
    /// [`next_depth`] says so, publishes a manifest of a new version at the new depth.
    pub(crate) fn on_recheck(&mut self, p: u32) {
        let members = self.s.shards.members;
        let next = self.now + self.s.shards.recheck_ms;
        if next <= self.s.duration_ms {
            self.push(next, Event::Recheck { project: p });
        }
        let live = self.overlay.subscribers(p).iter().filter(|n| self.up[**n as usize]).count();
        let Some(rec) = self.ledger.projects.get(p as usize) else { return };
        let depth = next_depth(rec.depth, live as u64, members);
        if depth == rec.depth {
            return;
        }
        let Envelope::Manifest(old) = &rec.manifest else { return };
        let Ok(mut m) = decode::<ProjectManifest>(old.body(), 1 << 20) else { return };
        m.version = rec.version + 1;
        m.shard_depth = depth;
        let env = Envelope::Manifest(Signed::sign(&rec.key, &m));
        self.ledger.set_depth(p, depth, env.clone(), m.version);
        self.stats.reshards += 1;
        let gateway = self.overlay.subscribers(p).iter().copied().find(|n| {
            let node = &self.nodes[*n as usize];
            node.up() && !node.byz
        });
        if let Some(g) = gateway {
            self.record("reshard", g, u32::MAX, u64::from(depth));
            self.drive(g, Input::Publish(env));
        }
    }

    /// Brings node `n`'s shard topics in line with its engine's shards: joins the new ones
    /// (and syncs with a member there), and leaves the old ones after [`SHARD_BRIDGE_MS`].
    pub(crate) fn follow_shards(&mut self, n: u32) {
        let Some(engine) = self.nodes[n as usize].engine.as_ref() else { return };
        let want: Vec<u32> = engine
            .shards()
            .filter_map(|(pid, s)| {
                let p = *self.ledger.project_index.get(&pid)?;
                Some(self.ledger.shard_topic(p, s))
            })
            .filter(|t| self.ledger.project_of_topic(*t) != Some(*t))
            .collect();
        let projects = self.ledger.projects.len() as u32;
        let have: Vec<u32> =
            self.overlay.topics(n).iter().copied().filter(|t| *t >= projects).collect();
        let inc = self.nodes[n as usize].inc;
        for t in have.iter().filter(|t| !want.contains(t)) {
            self.push(self.now + SHARD_BRIDGE_MS, Event::LeaveTopic { node: n, inc, topic: *t });
        }
        for t in want.into_iter().filter(|t| !have.contains(t)) {
            let reach = Reach { net: &self.net, up: &self.up };
            self.overlay.join(n, t, &reach, &mut self.rng);
            self.record("join-shard", n, u32::MAX, u64::from(t));
            let Ok(ti) = self.overlay.topics(n).binary_search(&t) else { continue };
            if !self.up[n as usize] {
                continue;
            }
            // A merge: the new shard's items this node did not hold are known to the members of
            // the other shards it merged with. It syncs with a few of each (see
            // `MERGE_SYNC_PEERS`), as with a peer it links to, before it may claim them (see
            // the engine's reshard). They are looked for among the project's nodes it can
            // reach, not only on the new shard's topic: a node that hears of the merge first
            // finds none of them there yet.
            let old: Vec<Shard> =
                have.iter().filter_map(|o| self.ledger.topic_shard(*o)).map(|x| x.1).collect();
            let Some((p, new)) = self.ledger.topic_shard(t) else { continue };
            let mut asked = false;
            for was in old.iter().filter(|o| o.depth > new.depth && new.covers(o)) {
                asked |= self.merge_sync(n, p, new, *was);
            }
            // Otherwise (a split, or a first shard): one member, as with a peer it links to.
            let peers = &self.overlay.mesh(n)[ti];
            if !asked && !peers.is_empty() {
                let peer = peers[self.rng.random_range(0..peers.len())];
                self.start_sync(n, Some(peer));
            }
        }
    }

    /// Node `n` leaves a shard topic it bridged, unless its engine is back in that shard.
    pub(crate) fn leave_topic(&mut self, n: u32, inc: u32, topic: u32) {
        let node = &self.nodes[n as usize];
        if node.inc != inc {
            return;
        }
        let wanted = node.engine.as_ref().is_some_and(|e| {
            e.shards().any(|(pid, s)| {
                self.ledger
                    .project_index
                    .get(&pid)
                    .is_some_and(|p| self.ledger.shard_topic(*p, s) == topic)
            })
        });
        if !wanted {
            let reach = Reach { net: &self.net, up: &self.up };
            self.overlay.leave(n, topic, &reach, &mut self.rng);
            self.record("leave-shard", n, u32::MAX, u64::from(topic));
            // Leaving a part it merged from: a second round of the merge's sync, with other
            // members of the other parts, for the states the first round missed (a part's
            // only member asked may not have answered, or sessions ran out).
            let Some((p, was)) = self.ledger.topic_shard(topic) else { return };
            let pid = self.ledger.projects.get(p as usize).map(|r| r.id);
            let cur = self.nodes[n as usize].engine.as_ref().and_then(|e| e.shard_of(&pid?));
            if let Some(new) = cur.filter(|s| s.depth < was.depth && s.covers(&was)) {
                self.merge_sync(n, p, new, was);
            }
        }
    }

    /// Node `n` merged from shard `was` into `new` of project `p`: the new shard's items it did
    /// not hold are known to the members of the other parts. It syncs with members of each, as
    /// with a peer it links to, before it may claim them (the engine holds them back a lease
    /// meanwhile, see its reshard): up to [`MERGE_SYNC_PEERS`] of each part, one of each part
    /// first, so that sessions running out leave no part unasked. Members are looked for among
    /// the project's nodes it can reach, not only on the new shard's topic: a node that hears
    /// of the merge first finds none of them there yet. Whether any sync started.
    fn merge_sync(&mut self, n: u32, p: u32, new: Shard, was: Shard) -> bool {
        let below = was.depth - new.depth;
        let mut parts: Vec<Vec<u32>> = (0..1u16 << below)
            .map(|low| Shard { depth: was.depth, prefix: (new.prefix << below) | low })
            .filter(|other| *other != was)
            .map(|other| {
                self.overlay
                    .subscribers(p)
                    .iter()
                    .copied()
                    .filter(|q| {
                        *q != n
                            && self.up[*q as usize]
                            && self.net.reachable(n as usize, *q as usize)
                            && Shard::of_node(&self.nodes[*q as usize].id, other.depth) == other
                    })
                    .collect()
            })
            .collect();
        let mut any = false;
        for _ in 0..MERGE_SYNC_PEERS {
            for members in parts.iter_mut().filter(|m| !m.is_empty()) {
                if self.nodes[n as usize].sync.len() >= SYNC_SESSIONS_MAX {
                    return any;
                }
                let peer = members.swap_remove(self.rng.random_range(0..members.len()));
                self.start_sync(n, Some(peer));
                any = true;
            }
        }
        any
    }
}
