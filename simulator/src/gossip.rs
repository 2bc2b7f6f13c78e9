//! The gossip overlay: one topic per project, and one per shard of a split project (a node is
//! in its own shard's, and joins and leaves them as the depth moves), each subscriber keeping a
//! mesh of about D peers in each of its topics (shaped like gossipsub), the nodes' seen-caches
//! of message ids, and what the driver learnt of the envelopes sync responses hand out.
//!
//! [`Overlay`] owns that state and nothing else. It is handed what it needs — which nodes are
//! up and reachable ([`Reach`]), the network and the run's random source to send through
//! ([`Wire`]), each node's incarnation — and hands back what it decided: the copies of a
//! message to deliver, and what they cost. The world (`delivery.rs`) carries those out as
//! events and feeds what arrives to the engines; this file knows nothing of the world.
//!
//! A new message is validated by the engine and forwarded once to the mesh, and message ids
//! (content hashes) are remembered so copies are dropped before they reach the engine (the
//! seen-caches, kept as described at [`SeenIds`]). A copy in flight to a node that crashes or
//! leaves is lost with its connection, even if the node is back by the time it would have
//! arrived.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use starling_protocol::Envelope;

use crate::hash::IdBuild;
use crate::net::{Net, mix64};
use crate::scenario::{NetworkSpec, Sabotage};

/// Envelopes [`EnvCache`] remembers at once.
const ENV_CACHE_MAX: usize = 16_384;
/// Messages [`SeenIds`] holds before its first sweep.
const SEEN_IDS_SWEEP_MIN: usize = 4_096;

/// Which subscribers a sync envelope is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everyone (presence, relay requests).
    Every,
    /// The subscribers of one project.
    Project(u32),
    /// Nobody the driver knows of (another project's item, or undecodable).
    Nowhere,
}

/// What one envelope costs on the wire and whom it is for.
#[derive(Debug)]
pub(crate) struct EnvFacts {
    pub env: Envelope,
    pub bytes: u32,
    /// `None` when it had to be asked of the responder's engine (an item the driver has not
    /// registered yet), which is not remembered.
    pub scope: Option<Scope>,
}

/// The encoded size and scope of envelopes handed out in sync responses.
///
/// A response carries the proof of every item in each bucket that differs, so the same few
/// thousand envelopes go out again and again; encoding each one just to count its bytes (and
/// decoding it to find its project) was most of the driver's cost of a response. Keyed by the
/// address of the envelope's shared body: the cache holds a clone of every envelope it
/// remembers, so no other live envelope can have that address, and a hit is also confirmed by
/// equality (a pointer compare). An answer is therefore always that of the envelope asked
/// about. Addresses differ between runs, so which look-ups hit may too, but never what they
/// return. Bounded: past [`ENV_CACHE_MAX`] envelopes the oldest is forgotten.
#[derive(Debug, Default)]
struct EnvCache {
    facts: HashMap<u64, EnvFacts, IdBuild>,
    /// Keys in the order they were added, to forget the oldest.
    order: VecDeque<u64>,
}

impl EnvCache {
    /// The key of an envelope: its body's address, mixed so the table's low bits vary.
    fn key(env: &Envelope) -> u64 {
        let body = match env {
            Envelope::Manifest(s) => s.body(),
            Envelope::Batch(s) => s.body(),
            Envelope::Presence(s) => s.body(),
            Envelope::Claim(s) => s.body(),
            Envelope::Release(s) => s.body(),
            Envelope::Receipt(s) => s.body(),
            Envelope::Failure(s) => s.body(),
            Envelope::RelayRequest(s) => s.body(),
            Envelope::Directory(s) => s.body(),
            Envelope::Progress(s) => s.body(),
        };
        mix64(body.as_ptr() as u64)
    }

    /// The remembered facts about `env`, if any.
    fn get(&self, env: &Envelope) -> Option<&EnvFacts> {
        self.facts.get(&Self::key(env)).filter(|f| f.env == *env)
    }

    /// Remembers (or updates) the facts about an envelope.
    fn put(&mut self, facts: EnvFacts) {
        let key = Self::key(&facts.env);
        if self.facts.insert(key, facts).is_none() {
            self.order.push_back(key);
            if self.order.len() > ENV_CACHE_MAX
                && let Some(old) = self.order.pop_front()
            {
                self.facts.remove(&old);
            }
        }
    }
}

/// The messages the nodes' seen-caches may still need, by id.
///
/// A node's seen-cache holds the ids of the last `seen_max` messages it took in or published
/// (first in, first out; emptied when it comes back up). It is kept without a set per node,
/// whose inserts and removals were cache misses across thousands of nodes: each node counts
/// the ids it adds ([`SeenCache::count`]), and a message's copy list records
/// at which count each node added its id ([`Copies::seq`]), so whether a node holds the id is
/// whether that count is among its last `seen_max`. A copy of a message the node has not taken
/// in can only find the id there if another message with the same id (the same bytes, so rare)
/// put it there; such messages are marked [`Msg::shared`], and only for them are the others
/// looked up here. The answers are exactly those of a per-node set.
///
/// A message is held here while a copy of it is in flight; after that only the nodes whose
/// seen-cache still holds its id through it are (as [`Held::Past`]), and once there are none,
/// nothing. Sweeps do this whenever a quarter as many messages as are held have been added
/// since the last, so it holds little more than the messages in flight and the caches'
/// entries.
#[derive(Debug, Default)]
struct SeenIds {
    /// What is held of the first message published with each id.
    first: HashMap<u64, Held, IdBuild>,
    /// Later messages with the same id as an earlier one.
    more: HashMap<u64, Vec<Held>, IdBuild>,
    /// Messages added since the last sweep.
    added: usize,
}

/// What [`SeenIds`] holds of one message.
#[derive(Debug)]
enum Held {
    /// The message, while copies of it may be in flight.
    Msg(Rc<Msg>),
    /// After that: the nodes (with incarnation and count, as in [`Copies`]) whose seen-cache
    /// held its id through it when last swept.
    Past(Box<[(u32, u32, u32)]>),
}

impl Held {
    /// The count at which node `n` in incarnation `inc` added the id through this message,
    /// if above `low` (else 0).
    fn seen_at(&self, n: u32, inc: u32, low: u32) -> u32 {
        let hit = |node: u32, i: u32, seq: u32| node == n && i == inc && seq > low;
        match self {
            Held::Msg(m) => m
                .copies
                .borrow()
                .iter()
                .filter(|c| hit(c.node, c.inc, c.seq))
                .map(|c| c.seq)
                .max()
                .unwrap_or(0),
            Held::Past(v) => v
                .iter()
                .filter(|&&(node, i, seq)| hit(node, i, seq))
                .map(|e| e.2)
                .max()
                .unwrap_or(0),
        }
    }

    /// Brings this up to date; `false` if nothing of it is needed any more.
    fn sweep(&mut self, seen: &[SeenCache], cap: u32, incs: &impl Fn(u32) -> u32) -> bool {
        let holds = |node: u32, inc: u32, seq: u32| {
            seq > 0 && inc == incs(node) && seq > seen[node as usize].low(cap)
        };
        let past: Box<[(u32, u32, u32)]> = match self {
            Held::Msg(m) if Rc::strong_count(m) > 1 => return true,
            Held::Msg(m) => m
                .copies
                .borrow()
                .iter()
                .filter(|c| holds(c.node, c.inc, c.seq))
                .map(|c| (c.node, c.inc, c.seq))
                .collect(),
            Held::Past(v) => v.iter().copied().filter(|&(n, i, s)| holds(n, i, s)).collect(),
        };
        let needed = !past.is_empty();
        *self = Held::Past(past);
        needed
    }
}

impl SeenIds {
    /// Adds a message; marks it and the others with its id shared if there are others.
    fn add(&mut self, msg: &Rc<Msg>) {
        self.added += 1;
        let Some(first) = self.first.get(&msg.id) else {
            self.first.insert(msg.id, Held::Msg(Rc::clone(msg)));
            return;
        };
        if let Held::Msg(m) = first {
            m.shared.set(true);
        }
        msg.shared.set(true);
        let more = self.more.entry(msg.id).or_default();
        for h in more.iter() {
            if let Held::Msg(m) = h {
                m.shared.set(true);
            }
        }
        more.push(Held::Msg(Rc::clone(msg)));
    }

    /// Whether any message with id `id` is held.
    fn has(&self, id: u64) -> bool {
        self.first.contains_key(&id)
    }

    /// Everything held of the messages with id `id`.
    fn with_id(&self, id: u64) -> impl Iterator<Item = &Held> {
        let more = self.more.get(&id).map_or(&[][..], |v| &v[..]);
        self.first.get(&id).into_iter().chain(more)
    }

    /// Sweeps if a quarter as many messages as are held were added since the last sweep. An
    /// id is dropped once nothing of any message with it is needed; each is judged on its
    /// own, so the maps' order does not matter.
    fn sweep_if_due(&mut self, seen: &[SeenCache], cap: u32, incs: &impl Fn(u32) -> u32) {
        if self.added < (self.first.len() / 4).max(SEEN_IDS_SWEEP_MIN) {
            return;
        }
        self.added = 0;
        let mut dropped = Vec::new();
        for (id, h) in self.first.iter_mut() {
            let mut needed = h.sweep(seen, cap, incs);
            if let Some(more) = self.more.get_mut(id) {
                more.retain_mut(|h| h.sweep(seen, cap, incs));
                needed |= !more.is_empty();
            }
            if !needed {
                dropped.push(*id);
            }
        }
        for id in dropped {
            self.first.remove(&id);
            self.more.remove(&id);
        }
    }
}

/// One gossip message in flight, shared by every copy.
#[derive(Debug)]
pub(crate) struct Msg {
    pub env: Envelope,
    /// First 8 bytes of the content id.
    pub id: u64,
    pub origin_ms: u64,
    pub bytes: u32,
    /// Every node (in one incarnation) that published this message or was sent a copy of it.
    /// With [`Copies::seq`] it is also where the nodes' seen-caches are kept: see [`SeenIds`]
    /// and [`Overlay::forward`].
    pub copies: RefCell<Vec<Copies>>,
    /// Whether another message was published with the same id (the same bytes), so a node may
    /// have the id in its seen-cache without having taken in this message.
    pub shared: Cell<bool>,
}

/// The copies of one message bound for one node in one incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copies {
    pub node: u32,
    pub inc: u32,
    /// When the earliest copy sent to it arrives (when it published the message, for its
    /// publisher).
    pub first_at: u64,
    /// Whether it has taken the message in (or published it), so its seen-cache holds the id.
    pub taken: bool,
    /// The node's [`SeenCache::count`] when taking this message in (or publishing it) added
    /// the id to its seen-cache; 0 when that did not add it (it was there already).
    pub seq: u32,
}

/// One node's seen-cache, as counts (see [`SeenIds`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenCache {
    /// Ids added to this node's seen-cache in this incarnation. The cache holds the last
    /// `seen_max` ids added (first in, first out): the id a message added at [`Copies::seq`]
    /// `s` is in it while `s > max(count - seen_max, floor)`.
    pub count: u32,
    /// Ids at or below this count have left the cache early (see [`Overlay::remember`]).
    pub floor: u32,
}

impl SeenCache {
    /// The cache holds the ids added at counts above this.
    fn low(&self, cap: u32) -> u32 {
        self.count.saturating_sub(cap).max(self.floor)
    }
}

/// Which nodes are up and which can reach which: what the mesh is repaired by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reach<'a> {
    pub net: &'a Net,
    /// Whether each node is up.
    pub up: &'a [bool],
}

impl Reach<'_> {
    fn up(&self, n: u32) -> bool {
        self.up[n as usize]
    }

    /// Whether `a` and `b` can talk both ways (a one-way link fails keepalives too).
    fn connected(&self, a: u32, b: u32) -> bool {
        self.net.reachable(a as usize, b as usize) && self.net.reachable(b as usize, a as usize)
    }
}

/// What a fan-out sends through: the network, the run's random source, which nodes are up, and
/// the time.
#[derive(Debug)]
pub(crate) struct Wire<'a> {
    pub net: &'a mut Net,
    pub rng: &'a mut ChaCha8Rng,
    pub up: &'a [bool],
    pub now: u64,
}

/// One step of a message through the mesh: from a node, in a topic, to every mesh peer but
/// one (the one it came from; `u32::MAX` for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub from: u32,
    pub topic: u32,
    pub except: u32,
}

/// What one fan-out cost, for the report's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Copies sent.
    pub messages: u64,
    pub bytes: u64,
    /// Copies lost or blocked.
    pub dropped: u64,
    /// Copies that arrive (or would) at a node that has the message already.
    pub dup_deliveries: u64,
    /// Copies whose arrival was settled when they were sent, so they need no event.
    pub settled_at_send: u64,
}

/// A copy to deliver: to node `to` in incarnation `inc`, at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub at: u64,
    pub to: u32,
    pub inc: u32,
}

/// What a copy arriving at a node finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// No copy was sent to the node in this incarnation (it cannot be this copy's).
    Unlisted,
    /// The node has the id in its seen-cache: a duplicate.
    Duplicate,
    /// New to the node, now taken in (its id added to the seen-cache).
    Fresh,
}

/// The gossip overlay: the mesh, the seen-caches and the envelope facts (see the module docs).
#[derive(Debug)]
pub(crate) struct Overlay {
    /// Per node, the topics it subscribes to, sorted: the projects it trusts (by index), and
    /// its shards of the split ones.
    topics: Vec<Vec<u32>>,
    /// Per node, mesh peers per topic, aligned with `topics`.
    mesh: Vec<Vec<Vec<u32>>>,
    /// Per topic, its subscribers in node order.
    subscribers: Vec<Vec<u32>>,
    /// Per node, its seen-cache.
    seen: Vec<SeenCache>,
    /// Messages by id, for the seen-caches.
    seen_ids: SeenIds,
    /// Sizes and projects of envelopes sent in sync responses.
    env_cache: EnvCache,
    /// While a heal regrows the mesh: the pairs of nodes linked anew, which sync from each
    /// other as nodes do when a connection is established.
    new_links: Option<Vec<(u32, u32)>>,
    /// D: the mesh degree grafting aims at.
    degree: usize,
    /// D_low: below this a node grafts at the heartbeat.
    degree_low: usize,
    /// Ids a seen-cache holds.
    pub(crate) seen_max: usize,
    /// The sabotaged deaf node and when it goes deaf.
    deaf: Option<(u32, u64)>,
}

impl Overlay {
    /// An overlay with no mesh yet, for nodes subscribed to `topics` (per node, sorted) among
    /// `count` topics.
    pub(crate) fn new(
        topics: Vec<Vec<u32>>,
        count: u32,
        network: &NetworkSpec,
        sabotage: &Sabotage,
    ) -> Self {
        let subscribers = (0..count)
            .map(|p| {
                (0..topics.len() as u32).filter(|n| topics[*n as usize].contains(&p)).collect()
            })
            .collect();
        Overlay {
            mesh: topics.iter().map(|t| vec![Vec::new(); t.len()]).collect(),
            seen: vec![SeenCache::default(); topics.len()],
            topics,
            subscribers,
            seen_ids: SeenIds::default(),
            env_cache: EnvCache::default(),
            new_links: None,
            degree: network.mesh_degree as usize,
            degree_low: network.mesh_degree_low as usize,
            seen_max: network.seen_max,
            deaf: sabotage.deaf_node.map(|n| (n, sabotage.deaf_from_ms)),
        }
    }

    /// The topics node `n` subscribes to, sorted.
    pub(crate) fn topics(&self, n: u32) -> &[u32] {
        &self.topics[n as usize]
    }

    /// Node `n`'s mesh peers per topic, aligned with [`Overlay::topics`].
    pub(crate) fn mesh(&self, n: u32) -> &[Vec<u32>] {
        &self.mesh[n as usize]
    }

    /// The subscribers of `topic`, in node order.
    pub(crate) fn subscribers(&self, topic: u32) -> &[u32] {
        self.subscribers.get(topic as usize).map_or(&[], |s| &s[..])
    }

    /// Whether the sabotaged deaf node is deaf at `t`; once it is, it stays so.
    pub(crate) fn deaf_at(&self, n: u32, t: u64) -> bool {
        self.deaf.is_some_and(|(d, from)| d == n && t >= from)
    }

    // --- seen-caches ---

    /// The seen-cache's capacity.
    fn seen_cap(&self) -> u32 {
        self.seen_max.clamp(1, u32::MAX as usize) as u32
    }

    /// Node `n` came up: its seen-cache starts empty.
    pub(crate) fn clear_seen(&mut self, n: u32) {
        self.seen[n as usize] = SeenCache::default();
    }

    /// The count at which `id` was added to node `n`'s seen-cache (in incarnation `inc`), if
    /// it is there (else 0), given that it can only be there if some message with that id is
    /// in [`SeenIds`].
    fn seen_at(&self, n: u32, inc: u32, id: u64) -> u32 {
        let low = self.seen[n as usize].low(self.seen_cap());
        self.seen_ids.with_id(id).map(|h| h.seen_at(n, inc, low)).max().unwrap_or(0)
    }

    /// Whether node `n` (in incarnation `inc`) has `id` in its seen-cache.
    #[cfg(test)]
    pub(crate) fn has_seen(&self, n: u32, inc: u32, id: u64) -> bool {
        self.seen_ids.has(id) && self.seen_at(n, inc, id) > 0
    }

    /// Adds an id that is not there to node `n`'s seen-cache (forgetting the oldest if it is
    /// full); returns the count it was added at.
    fn see(&mut self, n: u32) -> u32 {
        let seen = &mut self.seen[n as usize];
        seen.count = seen
            .count
            .checked_add(1)
            .expect("fewer than 2^32 messages taken in by one node in one incarnation");
        seen.count
    }

    /// What a node publishing a message does to its seen-cache, `at` being the count at which
    /// the id is already there (0 if it is not): if the cache is full the oldest id is
    /// forgotten to make room, and then the id is added unless it is there. Returns the count
    /// at which it was added, 0 if it was not.
    fn remember(&mut self, n: u32, at: u32) -> u32 {
        let cap = self.seen_cap();
        let seen = &mut self.seen[n as usize];
        let low = seen.low(cap);
        let full = seen.count - low >= cap;
        if at == 0 || (full && at == low + 1) {
            // Not there, or it was the oldest, forgotten and then added again.
            return self.see(n);
        }
        if full {
            // The oldest is forgotten and nothing is added: until the next id is added the
            // cache holds one fewer.
            seen.floor = low + 1;
        }
        0
    }

    /// Node `n` (in incarnation `inc`) publishes a message with id `id`: its seen-cache as
    /// [`Overlay::remember`] leaves it; returns the count the id was added at, 0 if it was not.
    pub(crate) fn remember_published(&mut self, n: u32, inc: u32, id: u64) -> u32 {
        let have = if self.seen_ids.has(id) { self.seen_at(n, inc, id) } else { 0 };
        self.remember(n, have)
    }

    /// Holds a new message for the seen-caches (sweeping first if it is time); `incs` gives
    /// each node's incarnation.
    pub(crate) fn hold(&mut self, msg: &Rc<Msg>, incs: impl Fn(u32) -> u32) {
        let cap = self.seen_cap();
        self.seen_ids.sweep_if_due(&self.seen, cap, &incs);
        self.seen_ids.add(msg);
    }

    /// Sweeps the messages held if it is time; whether it swept.
    #[cfg(test)]
    pub(crate) fn sweep_if_due(&mut self, incs: impl Fn(u32) -> u32) -> bool {
        let cap = self.seen_cap();
        self.seen_ids.sweep_if_due(&self.seen, cap, &incs);
        self.seen_ids.added == 0
    }

    /// A copy of `msg` arrives at node `to` in incarnation `inc` (up and listening): whether it
    /// is new to the node, and if so the node takes it in.
    pub(crate) fn arrive(&mut self, to: u32, inc: u32, msg: &Msg) -> Arrival {
        let copies = msg.copies.borrow();
        let Some(i) = copies.iter().position(|c| c.node == to && c.inc == inc) else {
            return Arrival::Unlisted; // every copy sent is listed
        };
        let taken = copies[i].taken;
        drop(copies);
        if taken || (msg.shared.get() && self.seen_at(to, inc, msg.id) > 0) {
            return Arrival::Duplicate;
        }
        let seq = self.see(to);
        let mut copies = msg.copies.borrow_mut();
        copies[i].taken = true;
        copies[i].seq = seq;
        Arrival::Fresh
    }

    // --- fan-out ---

    /// Sends a copy of `msg` from node `hop.from` to each of its mesh peers in `hop.topic` but
    /// `hop.except` that is up, into `out`; `incs` gives each node's incarnation.
    ///
    /// What the receiver would do with a copy is decided here where it is certain, so the copy
    /// needs no event: one arriving deaf is ignored (deafness, once it starts, lasts); one for
    /// a node that has taken the message in is a duplicate whenever it arrives (if it is not
    /// lost); and one arriving no earlier than another copy already bound for the same node in
    /// the same incarnation is a duplicate too, since that one arrives first and leaves the id
    /// in the node's seen-cache (or finds it there, and then this copy is counted a duplicate
    /// even if the count-bounded cache would have forgotten the id in between, as a
    /// time-bounded gossipsub seen-cache would not).
    pub(crate) fn forward(
        &self,
        Hop { from: n, topic, except }: Hop,
        msg: &Msg,
        wire: &mut Wire<'_>,
        incs: impl Fn(u32) -> u32,
        out: &mut Vec<Delivery>,
    ) -> Tally {
        let mut tally = Tally::default();
        let Some(ti) = self.topics[n as usize].iter().position(|t| *t == topic) else {
            return tally;
        };
        for &p in &self.mesh[n as usize][ti] {
            if p == except || !wire.up[p as usize] {
                continue;
            }
            self.send_copy(n, p, msg, wire, &incs, out, &mut tally);
        }
        tally
    }

    /// Publishes `msg` from node `n` into `topic`, which `n` is not in, as gossipsub's
    /// fanout does: to up to D of the topic's subscribers that are up and reachable, drawn at
    /// random. A node finishing work of a shard it left by a change of depth reports it so.
    pub(crate) fn fanout(
        &self,
        n: u32,
        topic: u32,
        msg: &Msg,
        wire: &mut Wire<'_>,
        incs: impl Fn(u32) -> u32,
        out: &mut Vec<Delivery>,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut peers: Vec<u32> = self
            .subscribers(topic)
            .iter()
            .copied()
            .filter(|&p| {
                p != n && wire.up[p as usize] && wire.net.reachable(n as usize, p as usize)
            })
            .collect();
        while peers.len() > self.degree {
            let k = wire.rng.random_range(0..peers.len());
            peers.swap_remove(k);
        }
        for p in peers {
            self.send_copy(n, p, msg, wire, &incs, out, &mut tally);
        }
        tally
    }

    /// Sends one copy of `msg` from `n` to `p`, settling it at once where its fate is
    /// certain (see [`Overlay::forward`]).
    #[allow(clippy::too_many_arguments)]
    fn send_copy(
        &self,
        n: u32,
        p: u32,
        msg: &Msg,
        wire: &mut Wire<'_>,
        incs: &impl Fn(u32) -> u32,
        out: &mut Vec<Delivery>,
        tally: &mut Tally,
    ) {
        {
            tally.messages += 1;
            tally.bytes += u64::from(msg.bytes);
            let inc = incs(p);
            let mut copies = msg.copies.borrow_mut();
            let known = copies.iter().position(|c| c.node == p && c.inc == inc);
            let (from, to, bytes) = (n as usize, p as usize, msg.bytes as usize);
            if known.is_some_and(|i| copies[i].taken) && self.deaf.is_none_or(|(d, _)| d != p) {
                // Only whether it is lost matters, not when it would arrive.
                if wire.net.gets_through(wire.rng, from, to, bytes, wire.now) {
                    tally.dup_deliveries += 1;
                    tally.settled_at_send += 1;
                } else {
                    tally.dropped += 1;
                }
                return;
            }
            let Some(at) = wire.net.send(wire.rng, from, to, bytes, wire.now) else {
                tally.dropped += 1;
                return;
            };
            if self.deaf_at(p, at) {
                tally.settled_at_send += 1;
                return;
            }
            match known.map(|i| &mut copies[i]) {
                Some(c) if c.taken || c.first_at <= at => {
                    tally.dup_deliveries += 1;
                    tally.settled_at_send += 1;
                    return;
                }
                Some(c) => c.first_at = at,
                None => copies.push(Copies { node: p, inc, first_at: at, taken: false, seq: 0 }),
            }
            out.push(Delivery { at, to: p, inc });
        }
    }

    // --- envelope facts ---

    /// The size and, if known for good, the scope remembered for `env`.
    pub(crate) fn env_facts(&self, env: &Envelope) -> Option<(u32, Option<Scope>)> {
        self.env_cache.get(env).map(|f| (f.bytes, f.scope))
    }

    /// Remembers the size of `env` and, if it holds for good, its scope.
    pub(crate) fn put_env_facts(&mut self, env: &Envelope, bytes: u32, scope: Option<Scope>) {
        self.env_cache.put(EnvFacts { env: env.clone(), bytes, scope });
    }

    // --- the mesh ---

    /// From now until [`Overlay::take_new_links`], pairs linked anew are recorded.
    pub(crate) fn record_new_links(&mut self) {
        self.new_links = Some(Vec::new());
    }

    /// The pairs linked since [`Overlay::record_new_links`], sorted, each once; recording
    /// stops.
    pub(crate) fn take_new_links(&mut self) -> Vec<(u32, u32)> {
        let mut links = self.new_links.take().unwrap_or_default();
        links.sort_unstable();
        links.dedup();
        links
    }

    fn degree(&self, n: u32, topic: u32) -> Option<usize> {
        let topics = &self.topics[n as usize];
        topics.iter().position(|t| *t == topic).map(|ti| self.mesh[n as usize][ti].len())
    }

    fn linked(&self, a: u32, b: u32, topic: u32) -> bool {
        let topics = &self.topics[a as usize];
        topics
            .iter()
            .position(|t| *t == topic)
            .is_some_and(|ti| self.mesh[a as usize][ti].contains(&b))
    }

    fn link(&mut self, a: u32, b: u32, topic: u32) {
        if let Some(links) = self.new_links.as_mut() {
            links.push((a.min(b), a.max(b)));
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(ti) = self.topics[x as usize].iter().position(|t| *t == topic) {
                self.mesh[x as usize][ti].push(y);
            }
        }
    }

    fn unlink(&mut self, a: u32, b: u32, topic: u32) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(ti) = self.topics[x as usize].iter().position(|t| *t == topic) {
                self.mesh[x as usize][ti].retain(|z| *z != y);
            }
        }
    }

    /// Whether `q` may be grafted to `n` in `topic`: another node, not yet a mesh peer, below
    /// the degree cap and (with `need_up`) up and connected.
    fn may_graft(&self, n: u32, q: u32, topic: u32, reach: Option<&Reach<'_>>) -> bool {
        let d_hi = 2 * self.degree;
        q != n
            && !self.linked(n, q, topic)
            && reach.is_none_or(|r| r.up(q) && r.connected(n, q))
            && self.degree(q, topic).unwrap_or(usize::MAX) < d_hi
    }

    /// Tries to add one mesh peer for `n` in `topic` among subscribers (live and connected ones
    /// when `reach` is given).
    fn graft_one(
        &mut self,
        n: u32,
        topic: u32,
        reach: Option<&Reach<'_>>,
        rng: &mut ChaCha8Rng,
    ) -> bool {
        let subs = self.subscribers[topic as usize].len();
        if subs < 2 {
            return false;
        }
        for _ in 0..8 {
            let q = self.subscribers[topic as usize][rng.random_range(0..subs)];
            if self.may_graft(n, q, topic, reach) {
                self.link(n, q, topic);
                return true;
            }
        }
        false
    }

    /// Whether [`Overlay::graft_one`] has anyone to pick.
    fn graftable(&self, n: u32, topic: u32, reach: Option<&Reach<'_>>) -> bool {
        self.subscribers[topic as usize].iter().any(|&q| self.may_graft(n, q, topic, reach))
    }

    /// Grafts `n` in `topic` until it has `d` mesh peers, in at most `4·d` tries of
    /// [`Overlay::graft_one`]. Stops at the first try that finds nobody when there is nobody
    /// to find (a topic with fewer than `d + 1` subscribers, or a partition): the tries left
    /// could only draw random numbers, so the mesh comes out the same.
    fn graft_up_to(&mut self, n: u32, topic: u32, reach: Option<&Reach<'_>>, rng: &mut ChaCha8Rng) {
        let d = self.degree;
        let mut tries = 0;
        while self.degree(n, topic).unwrap_or(d) < d && tries < 4 * d {
            if !self.graft_one(n, topic, reach, rng) && !self.graftable(n, topic, reach) {
                break;
            }
            tries += 1;
        }
    }

    /// Builds the initial mesh of every topic, before any node is up.
    pub(crate) fn build(&mut self, rng: &mut ChaCha8Rng) {
        for topic in 0..self.subscribers.len() as u32 {
            for k in 0..self.subscribers[topic as usize].len() {
                let n = self.subscribers[topic as usize][k];
                self.graft_up_to(n, topic, None, rng);
            }
        }
    }

    /// A node coming back joins the mesh of each of its topics.
    pub(crate) fn graft(&mut self, n: u32, reach: &Reach<'_>, rng: &mut ChaCha8Rng) {
        for k in 0..self.topics[n as usize].len() {
            let topic = self.topics[n as usize][k];
            self.graft_up_to(n, topic, Some(reach), rng);
        }
    }

    /// Node `n` subscribes to `topic` (a shard's, after a change of depth) and, when up,
    /// grafts into its mesh; a topic numbered past the known ones is added.
    pub(crate) fn join(&mut self, n: u32, topic: u32, reach: &Reach<'_>, rng: &mut ChaCha8Rng) {
        if self.subscribers.len() <= topic as usize {
            self.subscribers.resize(topic as usize + 1, Vec::new());
        }
        let subs = &mut self.subscribers[topic as usize];
        if let Err(at) = subs.binary_search(&n) {
            subs.insert(at, n);
        }
        let topics = &mut self.topics[n as usize];
        if let Err(at) = topics.binary_search(&topic) {
            topics.insert(at, topic);
            self.mesh[n as usize].insert(at, Vec::new());
        }
        if reach.up(n) {
            self.graft_up_to(n, topic, Some(reach), rng);
        }
    }

    /// Node `n` leaves `topic`: its mesh peers there drop it and graft another when left
    /// short, as when a node goes down.
    pub(crate) fn leave(&mut self, n: u32, topic: u32, reach: &Reach<'_>, rng: &mut ChaCha8Rng) {
        let Ok(ti) = self.topics[n as usize].binary_search(&topic) else { return };
        let peers = std::mem::take(&mut self.mesh[n as usize][ti]);
        self.topics[n as usize].remove(ti);
        self.mesh[n as usize].remove(ti);
        if let Some(subs) = self.subscribers.get_mut(topic as usize) {
            subs.retain(|x| *x != n);
        }
        for m in peers {
            if let Ok(mi) = self.topics[m as usize].binary_search(&topic) {
                self.mesh[m as usize][mi].retain(|x| *x != n);
                if self.mesh[m as usize][mi].len() < self.degree_low && reach.up(m) {
                    self.graft_one(m, topic, Some(reach), rng);
                }
            }
        }
    }

    /// The gossipsub heartbeat: every node drops mesh peers it cannot reach and, when left
    /// with fewer than D_low, grafts reachable subscribers back up to D. With `regrow` (after
    /// a heal) every node grafts up to D, so the healed halves link up again.
    pub(crate) fn heartbeat(&mut self, regrow: bool, reach: &Reach<'_>, rng: &mut ChaCha8Rng) {
        let (d, low) = (self.degree, self.degree_low);
        for n in 0..self.topics.len() as u32 {
            if !reach.up(n) {
                continue;
            }
            for ti in 0..self.topics[n as usize].len() {
                let topic = self.topics[n as usize][ti];
                // From the back, so unlinking (which keeps the order of the rest) never moves a
                // peer not yet looked at.
                let mut k = self.mesh[n as usize][ti].len();
                while k > 0 {
                    k -= 1;
                    let p = self.mesh[n as usize][ti][k];
                    if !reach.up(p) || !reach.connected(n, p) {
                        self.unlink(n, p, topic);
                    }
                }
                let len = self.mesh[n as usize][ti].len();
                // Linked to every other subscriber already: nobody is left to graft.
                let full = len + 1 >= self.subscribers[topic as usize].len();
                if !full && (len < low || (regrow && len < d)) {
                    self.graft_up_to(n, topic, Some(reach), rng);
                }
            }
        }
    }

    /// After a heal, every node whose mesh has no peer from another side of the partition (by
    /// `before`, each node's component before the heal) links to one such subscriber, if one is
    /// up and below the degree cap: a node reconnects to peers across a healed cut, and
    /// gossipsub keeps meshing with them. Without it, sides whose meshes filled up during the
    /// partition stay apart in the mesh after it: claims made after the heal did not cross
    /// (`fault-50` seed 137, two holders of one epoch for 13 s).
    pub(crate) fn link_across(&mut self, before: &[u32], reach: &Reach<'_>, rng: &mut ChaCha8Rng) {
        let side = |x: u32| before.get(x as usize).copied();
        for n in 0..self.topics.len() as u32 {
            if !reach.up(n) {
                continue;
            }
            for ti in 0..self.topics[n as usize].len() {
                let topic = self.topics[n as usize][ti];
                if self.mesh[n as usize][ti].iter().any(|p| side(*p) != side(n)) {
                    continue;
                }
                let across: Vec<u32> = self.subscribers[topic as usize]
                    .iter()
                    .copied()
                    .filter(|&q| side(q) != side(n) && self.may_graft(n, q, topic, Some(reach)))
                    .collect();
                if !across.is_empty() {
                    let q = across[rng.random_range(0..across.len())];
                    self.link(n, q, topic);
                }
            }
        }
    }

    /// A node going down leaves every mesh; peers left short graft a replacement.
    pub(crate) fn prune(&mut self, n: u32, reach: &Reach<'_>, rng: &mut ChaCha8Rng) {
        let low = self.degree_low;
        for ti in 0..self.topics[n as usize].len() {
            let topic = self.topics[n as usize][ti];
            let peers = std::mem::take(&mut self.mesh[n as usize][ti]);
            for m in peers {
                if let Some(mi) = self.topics[m as usize].iter().position(|t| *t == topic) {
                    self.mesh[m as usize][mi].retain(|x| *x != n);
                    if self.mesh[m as usize][mi].len() < low && reach.up(m) {
                        self.graft_one(m, topic, Some(reach), rng);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// An overlay of `nodes` nodes all in one topic, with its network.
    fn overlay(nodes: u32) -> (Overlay, Net) {
        let spec = NetworkSpec::default();
        let net = Net::new(spec.clone(), nodes as usize, 7);
        (Overlay::new(vec![vec![0]; nodes as usize], 1, &spec, &Sabotage::default()), net)
    }

    #[test]
    fn the_mesh_is_symmetric_and_within_its_degree_cap() {
        let (mut o, net) = overlay(40);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        o.build(&mut rng);
        let up = vec![true; 40];
        o.heartbeat(false, &Reach { net: &net, up: &up }, &mut rng);
        for n in 0..40 {
            let peers = &o.mesh(n)[0];
            assert!(peers.len() >= o.degree_low && peers.len() <= 2 * o.degree, "node {n}");
            assert!(!peers.contains(&n), "no node meshes with itself");
            for &p in peers {
                assert!(o.mesh(p)[0].contains(&n), "{n} and {p} link both ways");
            }
        }
    }

    #[test]
    fn a_pruned_node_leaves_every_mesh_and_peers_refill() {
        let (mut o, net) = overlay(20);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        o.build(&mut rng);
        let mut up = vec![true; 20];
        up[3] = false;
        o.prune(3, &Reach { net: &net, up: &up }, &mut rng);
        assert!(o.mesh(3)[0].is_empty());
        assert!((0..20).all(|n| !o.mesh(n)[0].contains(&3)));
        assert!((0..20).filter(|n| *n != 3).all(|n| o.mesh(n)[0].len() >= o.degree_low));
    }

    #[test]
    fn new_links_are_recorded_only_while_asked() {
        let (mut o, net) = overlay(10);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let up = vec![true; 10];
        o.graft(0, &Reach { net: &net, up: &up }, &mut rng);
        assert!(o.take_new_links().is_empty(), "not recording");
        o.record_new_links();
        o.graft(1, &Reach { net: &net, up: &up }, &mut rng);
        let links = o.take_new_links();
        assert!(!links.is_empty() && links.iter().all(|(a, b)| a < b && (*a == 1 || *b == 1)));
    }

    #[test]
    fn a_seen_cache_forgets_its_oldest_id_when_full() {
        let (mut o, _) = overlay(2);
        o.seen_max = 2;
        for _ in 0..3 {
            o.see(0);
        }
        assert_eq!(o.seen[0], SeenCache { count: 3, floor: 0 });
        assert_eq!(o.seen[0].low(2), 1, "the first id is gone");
        // Publishing an id already there (at 3) into a full cache forgets the oldest only.
        assert_eq!(o.remember(0, 3), 0);
        assert_eq!(o.seen[0].low(2), 2);
        o.clear_seen(0);
        assert_eq!(o.seen[0], SeenCache::default());
    }

    #[test]
    fn a_fan_out_delivers_once_per_peer_and_settles_the_rest() {
        let (mut o, mut net) = overlay(12);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        o.build(&mut rng);
        let up = vec![true; 12];
        let env = Envelope::Presence(starling_protocol::Signed::sign(
            &starling_protocol::engine::test_keypair(3),
            &starling_protocol::message::Presence {
                seq: 1,
                at_ms: 1,
                capacity: 1,
                free: 1,
                roles: starling_protocol::Roles::CRAWL,
                projects: Vec::new(),
            },
        ));
        let published = Copies { node: 0, inc: 0, first_at: 0, taken: true, seq: 1 };
        let msg = Msg {
            env,
            id: 9,
            origin_ms: 0,
            bytes: 50,
            copies: RefCell::new(vec![published]),
            shared: Cell::new(false),
        };
        let peers = o.mesh(0)[0].clone();
        let hop = Hop { from: 0, topic: 0, except: u32::MAX };
        let mut out = Vec::new();
        let mut wire = Wire { net: &mut net, rng: &mut rng, up: &up, now: 0 };
        let first = o.forward(hop, &msg, &mut wire, |_| 0, &mut out);
        assert_eq!((first.messages, first.bytes), (peers.len() as u64, 50 * peers.len() as u64));
        assert_eq!(out.len(), peers.len(), "a loss-free net delivers one copy to each peer");
        // The same fan-out again: a copy arriving no earlier than the first to its peer is a
        // duplicate settled now; only one overtaking it becomes a delivery.
        let mut again = Vec::new();
        let second = o.forward(hop, &msg, &mut wire, |_| 0, &mut again);
        assert_eq!(second.dup_deliveries, second.settled_at_send);
        assert_eq!(again.len() as u64 + second.dup_deliveries, second.messages);
        for d in &again {
            let earlier = out.iter().find(|e| e.to == d.to).expect("the first copy");
            assert!(d.at < earlier.at, "only an overtaking copy is delivered");
        }
        // The first copy to a peer is taken in once; a node sent nothing finds nothing.
        let p = out[0].to;
        assert_eq!(o.arrive(p, 0, &msg), Arrival::Fresh);
        assert_eq!(o.arrive(p, 0, &msg), Arrival::Duplicate);
        assert_eq!(o.arrive(p, 1, &msg), Arrival::Unlisted, "another incarnation");
    }

    #[test]
    fn the_envelope_cache_is_bounded() {
        let key = starling_protocol::engine::test_keypair(9);
        let mut cache = EnvCache::default();
        let mut envs = Vec::new();
        for seq in 0..ENV_CACHE_MAX as u64 + 50 {
            let p = starling_protocol::message::Presence {
                seq,
                at_ms: seq,
                capacity: 1,
                free: 1,
                roles: starling_protocol::Roles::CRAWL,
                projects: Vec::new(),
            };
            let env = Envelope::Presence(starling_protocol::Signed::sign(&key, &p));
            cache.put(EnvFacts { env: env.clone(), bytes: 7, scope: Some(Scope::Every) });
            envs.push(env);
        }
        assert_eq!(cache.facts.len(), ENV_CACHE_MAX);
        assert_eq!(cache.order.len(), ENV_CACHE_MAX);
        assert!(cache.get(&envs[0]).is_none(), "the oldest is forgotten");
        assert_eq!(cache.get(envs.last().expect("some")).map(|f| f.bytes), Some(7));
    }
}
