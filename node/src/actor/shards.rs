//! Which gossip topics the node is in and sends on, by the engine's routes
//! ([`Engine::route`](starling_protocol::Engine::route)).
//!
//! - A split project's item messages and batches go on their shard's topic
//!   ([`net::shard_topic`]); the node joins the topic of its own shard of each split project
//!   and stays in a topic it no longer needs for [`SHARD_BRIDGE`], so messages in flight when
//!   the owner changed the depth still pass through it.
//! - Manifests, host lanes and the item messages of a whole project go on its owner's topic.
//! - Heartbeats go to each group of peers that ranks this node: the shard topic of each split
//!   project it works on, the owner topic of each whole one, and the mesh-wide topic only when
//!   it offers relay slots (relays rank among all relays) or works on no project yet. So a
//!   volunteer in a project split for ten thousand nodes hears a dozen heartbeats, not ten
//!   thousand.
//!
//! Members of a shard find each other through a DHT provider record per shard topic, looked up
//! again while few connected peers are in the topic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use libp2p::gossipsub::IdentTopic;
use libp2p::{PeerId, kad};
use starling_protocol::message::Roles;
use starling_protocol::shard::Shard;
use starling_protocol::{Envelope, ProjectId, Route};

use super::Actor;
use crate::clock::now_ms;
use crate::net;

/// How long the node stays in a shard topic after the owner's new depth moved it elsewhere.
pub const SHARD_BRIDGE: Duration = Duration::from_secs(10);
/// Connected peers in its shard's topic below which the node looks for more members in the
/// DHT and dials them.
pub const SHARD_PEERS_WANT: usize = 6;
/// Members of each merged part a node syncs with after a merge.
pub const MERGE_SYNC_PER_PART: usize = 2;
/// How often a thin shard is looked up again.
pub const SHARD_LOOKUP_EVERY: Duration = Duration::from_secs(30);

/// The shard topics the node is in.
#[derive(Debug, Default)]
pub(super) struct ShardTopics {
    /// Joined topics, and when to leave those no longer wanted (`None`: still wanted).
    joined: BTreeMap<(ProjectId, Shard), Option<Instant>>,
    /// The shards the engine named last time, to skip work when nothing changed.
    wanted: Vec<(ProjectId, Shard)>,
    /// DHT provider lookups in flight, by the shard they look for.
    lookups: HashMap<kad::QueryId, (ProjectId, Shard)>,
    /// When each wanted shard was last looked up.
    looked_up: BTreeMap<(ProjectId, Shard), Instant>,
}

/// A shard's DHT record key: its topic's name.
fn record_key(project: &ProjectId, shard: Shard) -> kad::RecordKey {
    kad::RecordKey::new(&net::shard_topic(project, shard).to_string())
}

impl Actor {
    /// Joins the topic of each shard the engine now puts this node in, and marks those it no
    /// longer does for leaving after [`SHARD_BRIDGE`]. Cheap when nothing changed.
    pub(super) fn tend_shards(&mut self) {
        // Called after every batch of engine outputs: nothing is allocated unless it changed.
        if self.engine.shards().eq(self.shards.wanted.iter().copied()) {
            return;
        }
        let wanted: Vec<(ProjectId, Shard)> = self.engine.shards().collect();
        // A project merged whole again: no shard of it is wanted any more.
        let whole: BTreeSet<(ProjectId, u8)> = self
            .shards
            .joined
            .iter()
            .filter(|((p, _), until)| until.is_none() && !wanted.iter().any(|(w, _)| w == p))
            .filter(|((p, _), _)| self.engine.projects().any(|(id, _)| id == *p))
            .map(|((p, s), _)| (*p, s.depth))
            .collect();
        let leave_at = Instant::now() + SHARD_BRIDGE;
        let set: BTreeSet<_> = wanted.iter().copied().collect();
        for (key, until) in &mut self.shards.joined {
            if !set.contains(key) && until.is_none() {
                tracing::info!(project = %key.0, shard = %key.1, "leaving a shard (the owner changed the depth)");
                *until = Some(leave_at);
            }
        }
        let mut merged: Vec<(ProjectId, Shard, u8)> =
            whole.into_iter().map(|(p, depth)| (p, Shard::WHOLE, depth)).collect();
        for &(project, shard) in &wanted {
            let topic = net::shard_topic(&project, shard);
            match self.shards.joined.get_mut(&(project, shard)) {
                Some(until) => *until = None,
                None => {
                    // A shallower shard than one joined before: the owner merged shards.
                    let old = self
                        .shards
                        .joined
                        .keys()
                        .filter(|(p, s)| *p == project && s.depth > shard.depth);
                    if let Some(depth) = old.map(|(_, s)| s.depth).max() {
                        merged.push((project, shard, depth));
                    }
                    if let Err(e) = net::join(&mut self.swarm.behaviour_mut().gossipsub, &topic) {
                        tracing::warn!(error = %e, "cannot join a shard's topic");
                        continue;
                    }
                    tracing::info!(project = %project, shard = %shard, "joined a shard");
                    self.shards.joined.insert((project, shard), None);
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    if let Err(e) = kad.start_providing(record_key(&project, shard)) {
                        tracing::debug!(error = %e, "cannot provide a shard record");
                    }
                }
            }
        }
        self.shards.looked_up.retain(|k, _| set.contains(k));
        self.shards.wanted = wanted;
        self.look_up_thin_shards();
        for (project, shard, depth) in merged {
            self.merge_sync(&project, shard, depth);
        }
    }

    /// After a merge into `shard`, syncs with up to [`MERGE_SYNC_PER_PART`] connected members
    /// of each part it merged (its shards at the old `depth`), one of each part first: each
    /// part's members hold only their part's item states, and the merged items wait a lease
    /// for them (see `Engine::reshard`). Done again as the old topic is left, when more of
    /// them have heard of the merge.
    fn merge_sync(&mut self, project: &ProjectId, shard: Shard, depth: u8) {
        let extra =
            depth.saturating_sub(shard.depth).min(starling_protocol::shard::SHARD_DEPTH_MAX);
        let parts = 1u16 << extra;
        let mut by_part: BTreeMap<Shard, Vec<PeerId>> = BTreeMap::new();
        for peer in self.swarm.connected_peers() {
            let Some(node) = net::node_id_of(peer) else { continue };
            let part = Shard::of_node(&node, depth);
            if shard.covers(&part) {
                by_part.entry(part).or_default().push(*peer);
            }
        }
        tracing::info!(
            project = %project, shard = %shard, parts, reached = by_part.len(),
            "merged shards: syncing with members of each part"
        );
        for round in 0..MERGE_SYNC_PER_PART {
            let peers: Vec<PeerId> =
                by_part.values().filter_map(|v| v.get(round)).copied().collect();
            for peer in peers {
                self.start_sync(peer);
            }
        }
    }

    /// Leaves the shard topics whose bridge time ran out, and looks up members of shards
    /// whose topic few connected peers are in.
    pub(super) fn tend_shard_topics(&mut self) {
        let now = Instant::now();
        let gone: Vec<_> = self
            .shards
            .joined
            .iter()
            .filter(|(_, until)| until.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for (project, shard) in gone {
            self.shards.joined.remove(&(project, shard));
            // Left after a merge: a second round with the parts' members.
            let into = match self.shards.wanted.iter().find(|(p, _)| *p == project) {
                Some(&(_, s)) => Some(s).filter(|s| s.depth < shard.depth && s.covers(&shard)),
                None => self.engine.projects().any(|(id, _)| id == project).then_some(Shard::WHOLE),
            };
            if let Some(into) = into {
                self.merge_sync(&project, into, shard.depth);
            }
            let topic = net::shard_topic(&project, shard);
            self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
            self.swarm.behaviour_mut().kad.stop_providing(&record_key(&project, shard));
        }
        self.look_up_thin_shards();
    }

    /// Looks up, in the DHT, more members of each wanted shard whose topic fewer than
    /// [`SHARD_PEERS_WANT`] connected peers are in, at most every [`SHARD_LOOKUP_EVERY`].
    fn look_up_thin_shards(&mut self) {
        let now = Instant::now();
        for &(project, shard) in &self.shards.wanted {
            let due = self
                .shards
                .looked_up
                .get(&(project, shard))
                .is_none_or(|t| now.duration_since(*t) >= SHARD_LOOKUP_EVERY);
            if !due || self.shard_peers(&project, shard) >= SHARD_PEERS_WANT {
                continue;
            }
            self.shards.looked_up.insert((project, shard), now);
            let q = self.swarm.behaviour_mut().kad.get_providers(record_key(&project, shard));
            self.shards.lookups.insert(q, (project, shard));
        }
    }

    /// The peers a periodic sync draws from: when every project this node works on is split,
    /// the connected members of its shards (a peer of another shard would answer with the
    /// manifests alone); otherwise, or while it has none connected, every connected peer.
    pub(super) fn sync_candidates(&self) -> Vec<PeerId> {
        let all = || self.swarm.connected_peers().copied().collect();
        let whole = self
            .engine
            .projects()
            .any(|(id, _)| self.engine.is_subscribed(&id) && self.engine.shard_of(&id).is_none());
        if whole || self.shards.wanted.is_empty() {
            return all();
        }
        let hashes: Vec<_> =
            self.shards.wanted.iter().map(|(p, s)| net::shard_topic(p, *s).hash()).collect();
        let g = &self.swarm.behaviour().gossipsub;
        let members: Vec<PeerId> = g
            .all_peers()
            .filter(|(_, topics)| topics.iter().any(|t| hashes.contains(t)))
            .map(|(p, _)| *p)
            .filter(|p| self.swarm.is_connected(p))
            .collect();
        if members.is_empty() { all() } else { members }
    }

    /// Connected peers that are in the shard's topic.
    fn shard_peers(&self, project: &ProjectId, shard: Shard) -> usize {
        let hash = net::shard_topic(project, shard).hash();
        let g = &self.swarm.behaviour().gossipsub;
        g.all_peers().filter(|(_, topics)| topics.contains(&&hash)).count()
    }

    /// Providers a shard lookup found: dialled while the shard's topic is thin, whatever the
    /// node's other connections. Returns false for a lookup that is not a shard's.
    pub(super) fn shard_providers_found(
        &mut self,
        query: kad::QueryId,
        providers: &std::collections::HashSet<PeerId>,
        last: bool,
    ) -> bool {
        let Some(&(project, shard)) = self.shards.lookups.get(&query) else { return false };
        if last {
            self.shards.lookups.remove(&query);
        }
        let me = *self.swarm.local_peer_id();
        let mut have = self.shard_peers(&project, shard);
        for peer in providers {
            if have >= SHARD_PEERS_WANT {
                break;
            }
            if *peer != me && !self.swarm.is_connected(peer) {
                let _ = self.swarm.dial(*peer);
                have += 1;
            }
        }
        true
    }

    /// This node's shard of `project` for the views, `None` for a whole project.
    pub(super) fn shard_info(&self, project: &ProjectId) -> Option<crate::views::ShardInfo> {
        let view = self.engine.shard_views().into_iter().find(|v| v.project == *project)?;
        let progress = self.engine.project_progress(project, now_ms()).unwrap_or_default();
        Some(crate::views::ShardInfo {
            name: view.shard.name(),
            depth: view.shard.depth,
            members: view.members,
            topic_peers: self.shard_peers(project, view.shard),
            project_items: progress.items,
            shards_heard: progress.shards_heard,
        })
    }

    /// A lookup that ended without (more) providers.
    pub(super) fn shard_lookup_ended(&mut self, query: kad::QueryId) {
        self.shards.lookups.remove(&query);
    }

    /// The topics `env` goes on, first the one it is published on as it is; a heartbeat for
    /// more than one group of peers is published once per further topic as a fresh copy
    /// ([`starling_protocol::Engine::presence_copy`]).
    pub(super) fn topics_of(&self, env: &Envelope) -> Vec<IdentTopic> {
        let owner_of = |project: &ProjectId| {
            self.engine.projects().find(|(id, _)| id == project).map(|(_, m)| m.owner)
        };
        let topic = match self.engine.route(env) {
            Some(Route::Shard(project, shard)) => net::shard_topic(&project, shard),
            Some(Route::Presence) => return self.presence_topics(),
            Some(Route::Project(project)) => {
                // A manifest or batch goes to its signer's topic even before the project is
                // known here (an owner's node publishing its first manifest).
                let owner = match env {
                    Envelope::Manifest(s) => Some(s.signer()),
                    Envelope::Batch(s) => Some(s.signer()),
                    _ => owner_of(&project),
                };
                owner.map_or_else(net::presence_topic, |o| net::owner_topic(&o))
            }
            // A directory goes to its curator's topic, which the curator's followers are in.
            Some(Route::Everyone) => match env {
                Envelope::Directory(s) => net::owner_topic(&s.signer()),
                _ => net::presence_topic(),
            },
            // An item this node does not know: the mesh-wide topic, as before there were
            // shards.
            None => net::presence_topic(),
        };
        vec![topic]
    }

    /// Where this node's heartbeat goes: see the module's documentation.
    fn presence_topics(&self) -> Vec<IdentTopic> {
        let mut topics: BTreeMap<String, IdentTopic> = BTreeMap::new();
        for (id, m) in self.engine.projects() {
            if !self.engine.is_subscribed(&id) {
                continue;
            }
            let t = match self.engine.shard_of(&id) {
                Some(shard) => net::shard_topic(&id, shard),
                None => net::owner_topic(&m.owner),
            };
            topics.insert(t.to_string(), t);
        }
        if topics.is_empty() || self.engine.config().roles.contains(Roles::RELAY) {
            let t = net::presence_topic();
            topics.insert(t.to_string(), t);
        }
        topics.into_values().collect()
    }

    /// Publishes `env` on each of its topics: itself on the first, and for a heartbeat a
    /// fresh copy on each further one (gossipsub takes the same bytes twice for a duplicate).
    pub(super) fn publish_routed(&mut self, env: &Envelope) {
        let topics = self.topics_of(env);
        for (n, topic) in topics.into_iter().enumerate() {
            let copy;
            let env = if n == 0 {
                env
            } else if matches!(env, Envelope::Presence(_)) {
                copy = self.engine.presence_copy(now_ms());
                &copy
            } else {
                break;
            };
            self.publish_on(topic, env);
        }
    }
}
