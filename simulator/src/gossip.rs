//! The gossip overlay and request-response state sync.
//!
//! Shaped like gossipsub: one topic per project, each subscriber keeps a mesh of about D peers
//! in each of its topics, a new message is validated by the engine and forwarded once to the
//! mesh, and message ids (content hashes) are remembered so copies are dropped before they
//! reach the engine (the seen-caches, kept as described at [`SeenIds`]). A copy in flight to a node that crashes or leaves is lost with its
//! connection, even if the node is back by the time it would have arrived. Presence
//! heartbeats go to every topic a node is in. Sync is a digest request answered with a delta
//! (at most [`crate::world::SYNC_ROUNDS_MAX`] rounds), applied through the ordinary message
//! path; the responder leaves out projects the requester is not subscribed to.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use rand::Rng;
use starling_protocol::{Envelope, ItemBatch, ProjectManifest, Reject, SyncDelta};

use crate::net::mix64;
use crate::world::{Copies, Event, IdBuild, Msg, SYNC_TIMEOUT_MS, SYNC_TRIES_MAX, World, env_item};

/// Envelopes [`EnvCache`] remembers at once.
const ENV_CACHE_MAX: usize = 16_384;
/// Messages [`SeenIds`] holds before its first sweep.
const SEEN_IDS_SWEEP_MIN: usize = 4_096;

/// Which subscribers a sync envelope is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everyone (presence, relay requests).
    Every,
    /// The subscribers of one project.
    Project(u32),
    /// Nobody the driver knows of (another project's item, or undecodable).
    Nowhere,
}

/// What one envelope costs on the wire and whom it is for.
#[derive(Debug)]
struct EnvFacts {
    env: Envelope,
    bytes: u32,
    /// `None` when it had to be asked of the responder's engine (an item the driver has not
    /// registered yet), which is not remembered.
    scope: Option<Scope>,
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
pub(crate) struct EnvCache {
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
/// the ids it adds ([`crate::world::SimNode::seen_count`]), and a message's copy list records
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
pub(crate) struct SeenIds {
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
    fn sweep(&mut self, nodes: &[crate::world::SimNode], cap: u32) -> bool {
        let holds = |node: u32, inc: u32, seq: u32| {
            let x = &nodes[node as usize];
            seq > 0 && inc == x.inc && seq > seen_low(x, cap)
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
    fn sweep_if_due(&mut self, nodes: &[crate::world::SimNode], cap: u32) {
        if self.added < (self.first.len() / 4).max(SEEN_IDS_SWEEP_MIN) {
            return;
        }
        self.added = 0;
        let mut dropped = Vec::new();
        for (id, h) in self.first.iter_mut() {
            let mut needed = h.sweep(nodes, cap);
            if let Some(more) = self.more.get_mut(id) {
                more.retain_mut(|h| h.sweep(nodes, cap));
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

/// The seen-cache of `node` holds the ids added at counts above this.
fn seen_low(node: &crate::world::SimNode, cap: u32) -> u32 {
    node.seen_count.saturating_sub(cap).max(node.seen_floor)
}

impl World {
    /// The seen-cache's capacity.
    fn seen_cap(&self) -> u32 {
        self.s.network.seen_max.clamp(1, u32::MAX as usize) as u32
    }

    /// The count at which `id` was added to node `n`'s seen-cache, if it is there (else 0),
    /// given that it can only be there if some message with that id is in [`SeenIds`].
    fn seen_at(&self, n: u32, id: u64) -> u32 {
        let node = &self.nodes[n as usize];
        let (low, inc) = (seen_low(node, self.seen_cap()), node.inc);
        self.seen_ids.with_id(id).map(|h| h.seen_at(n, inc, low)).max().unwrap_or(0)
    }

    /// Adds an id that is not there to node `n`'s seen-cache (forgetting the oldest if it is
    /// full); returns the count it was added at.
    fn see(&mut self, n: u32) -> u32 {
        let node = &mut self.nodes[n as usize];
        node.seen_count = node
            .seen_count
            .checked_add(1)
            .expect("fewer than 2^32 messages taken in by one node in one incarnation");
        node.seen_count
    }

    /// What a node publishing a message does to its seen-cache, `at` being the count at which
    /// the id is already there (0 if it is not): if the cache is full the oldest id is
    /// forgotten to make room, and then the id is added unless it is there. Returns the count
    /// at which it was added, 0 if it was not.
    fn remember(&mut self, n: u32, at: u32) -> u32 {
        let cap = self.seen_cap();
        let node = &mut self.nodes[n as usize];
        let low = seen_low(node, cap);
        let full = node.seen_count - low >= cap;
        if at == 0 || (full && at == low + 1) {
            // Not there, or it was the oldest, forgotten and then added again.
            return self.see(n);
        }
        if full {
            // The oldest is forgotten and nothing is added: until the next id is added the
            // cache holds one fewer.
            node.seen_floor = low + 1;
        }
        0
    }

    /// Whether the sabotaged deaf node is deaf now.
    fn deaf(&self, n: u32) -> bool {
        self.deaf_at(n, self.now)
    }

    /// Whether the sabotaged deaf node is deaf at `t`; once it is, it stays so.
    fn deaf_at(&self, n: u32, t: u64) -> bool {
        self.s.sabotage.deaf_node == Some(n) && t >= self.s.sabotage.deaf_from_ms
    }

    /// The project (topic) an envelope belongs to; `None` for presence (every topic).
    fn topic_of(&self, n: u32, env: &Envelope) -> Option<u32> {
        use starling_protocol::wire::decode;
        match env {
            Envelope::Presence(_) | Envelope::RelayRequest(_) => None,
            Envelope::Manifest(s) => decode::<ProjectManifest>(s.body(), 1 << 20)
                .ok()
                .and_then(|m| self.project_index.get(&m.id()).copied()),
            Envelope::Batch(s) => decode::<ItemBatch>(s.body(), 8 << 20)
                .ok()
                .and_then(|b| self.project_index.get(&b.project).copied()),
            _ => {
                let (item, _) = env_item(env)?;
                if let Some(&i) = self.item_index.get(&item) {
                    let p = self.items[i as usize].project;
                    if p != u32::MAX {
                        return Some(p);
                    }
                }
                let engine = self.nodes.get(n as usize)?.engine.as_ref()?;
                let (pid, _) = engine.item_work(&item)?;
                self.project_index.get(&pid).copied()
            }
        }
    }

    /// Sends an envelope from node `n` to its mesh as a new message.
    pub(crate) fn publish(&mut self, n: u32, env: Envelope) {
        let topic = self.topic_of(n, &env);
        let bytes = env.to_bytes();
        let hash = blake3::hash(&bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        let id = u64::from_le_bytes(first);
        let inc = self.nodes[n as usize].inc;
        let have = if self.seen_ids.has(id) { self.seen_at(n, id) } else { 0 };
        let seq = self.remember(n, have);
        let copies = Copies { node: n, inc, first_at: self.now, taken: true, seq };
        // What a node publishes is what its engine and its peers' hand out in sync responses
        // later: remember its size now that it is known.
        if self.env_cache.get(&env).is_none() {
            self.env_cache.put(EnvFacts {
                env: env.clone(),
                bytes: bytes.len() as u32,
                scope: None,
            });
        }
        let msg = Rc::new(Msg {
            env,
            id,
            origin_ms: self.now,
            bytes: bytes.len() as u32,
            copies: RefCell::new(vec![copies]),
            shared: Cell::new(false),
        });
        let cap = self.seen_cap();
        self.seen_ids.sweep_if_due(&self.nodes, cap);
        self.seen_ids.add(&msg);
        self.record("send", n, u32::MAX, id);
        match topic {
            Some(t) => self.forward(n, t, &msg, u32::MAX),
            None => {
                for k in 0..self.nodes[n as usize].topics.len() {
                    let t = self.nodes[n as usize].topics[k];
                    self.forward(n, t, &msg, u32::MAX);
                }
            }
        }
    }

    fn forward(&mut self, n: u32, topic: u32, msg: &Rc<Msg>, except: u32) {
        let Some(ti) = self.nodes[n as usize].topics.iter().position(|t| *t == topic) else {
            return;
        };
        let len = self.nodes[n as usize].mesh[ti].len();
        for k in 0..len {
            let p = self.nodes[n as usize].mesh[ti][k];
            if p == except || !self.up[p as usize] {
                continue;
            }
            self.stats.messages += 1;
            self.stats.bytes += u64::from(msg.bytes);
            // What `on_deliver` would do with this copy, decided now where it is certain, so
            // the copy needs no event: one arriving deaf is ignored (deafness, once it starts,
            // lasts); one for a node that has taken the message in is a duplicate whenever it
            // arrives (if it is not lost); and one arriving no earlier
            // than another copy already bound for the same node in the same incarnation is a
            // duplicate too, since that one arrives first and leaves the id in the node's
            // seen-cache (or finds it there, and then this copy is counted a duplicate even if
            // the count-bounded cache would have forgotten the id in between, as a
            // time-bounded gossipsub seen-cache would not).
            let inc = self.nodes[p as usize].inc;
            let mut copies = msg.copies.borrow_mut();
            let known = copies.iter().position(|c| c.node == p && c.inc == inc);
            let (from, to, bytes) = (n as usize, p as usize, msg.bytes as usize);
            if known.is_some_and(|i| copies[i].taken) && self.s.sabotage.deaf_node != Some(p) {
                // Only whether it is lost matters, not when it would arrive.
                if self.net.gets_through(&mut self.rng, from, to, bytes, self.now) {
                    self.stats.dup_deliveries += 1;
                    self.stats.settled_at_send += 1;
                } else {
                    self.stats.dropped += 1;
                }
                continue;
            }
            let Some(at) = self.net.send(&mut self.rng, from, to, bytes, self.now) else {
                self.stats.dropped += 1;
                continue;
            };
            if self.deaf_at(p, at) {
                self.stats.settled_at_send += 1;
                continue;
            }
            match known.map(|i| &mut copies[i]) {
                Some(c) if c.taken || c.first_at <= at => {
                    self.stats.dup_deliveries += 1;
                    self.stats.settled_at_send += 1;
                    continue;
                }
                Some(c) => c.first_at = at,
                None => copies.push(Copies { node: p, inc, first_at: at, taken: false, seq: 0 }),
            }
            drop(copies);
            self.push(at, Event::Deliver { to: p, inc, from: n, topic, msg: Rc::clone(msg) });
        }
    }

    pub(crate) fn on_deliver(&mut self, to: u32, inc: u32, from: u32, topic: u32, msg: Rc<Msg>) {
        if !self.up[to as usize] || self.nodes[to as usize].inc != inc || self.deaf(to) {
            return;
        }
        let copies = msg.copies.borrow();
        let Some(i) = copies.iter().position(|c| c.node == to && c.inc == inc) else {
            return; // every copy sent is listed
        };
        let taken = copies[i].taken;
        drop(copies);
        if taken || (msg.shared.get() && self.seen_at(to, msg.id) > 0) {
            self.stats.dup_deliveries += 1;
            return;
        }
        let seq = self.see(to);
        let mut copies = msg.copies.borrow_mut();
        copies[i].taken = true;
        copies[i].seq = seq;
        drop(copies);
        self.hist.record(self.now.saturating_sub(msg.origin_ms));
        self.record("recv", to, from, msg.id);
        let Some(result) = self.take_message(to, &msg.env) else { return };
        let forward = match result {
            Ok(()) => true,
            Err(r) => matches!(r, Reject::UnknownItem | Reject::UnknownProject),
        };
        if forward {
            self.forward(to, topic, &msg, from);
        }
    }

    /// Bookkeeping after an engine took in a message: rejections, and when items last changed.
    pub(crate) fn after_apply(&mut self, n: u32, env: &Envelope, result: Result<(), Reject>) {
        match result {
            Ok(()) => {
                if let Some((item, false)) = env_item(env) {
                    if let Some(&i) = self.item_index.get(&item) {
                        self.items[i as usize].touched_at = self.now;
                    }
                    if matches!(env, Envelope::Receipt(_)) && !self.nodes[n as usize].byz {
                        self.mark_done(item);
                    }
                }
            }
            Err(r) => {
                if !self.nodes[n as usize].byz
                    && let Some(i) = Reject::ALL.iter().position(|x| *x == r)
                {
                    self.stats.rejected[i] += 1;
                }
            }
        }
    }

    /// Starts a sync exchange from `n` with `partner` (or a random mesh peer).
    pub(crate) fn start_sync(&mut self, n: u32, partner: Option<u32>, round: u8) {
        self.start_sync_try(n, partner, round, 0);
    }

    /// [`World::start_sync`], the `tries`-th time. A first round that gets no answer within
    /// [`SYNC_TIMEOUT_MS`] (request or response lost) is tried again with another peer, as a
    /// request-response client does on a timeout.
    fn start_sync_try(&mut self, n: u32, partner: Option<u32>, round: u8, tries: u8) {
        let partner = match partner {
            Some(p) => p,
            None => {
                let node = &self.nodes[n as usize];
                let peers: Vec<u32> = node
                    .mesh
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|p| {
                        self.nodes[*p as usize].up() && self.net.reachable(n as usize, *p as usize)
                    })
                    .collect();
                if peers.is_empty() {
                    return;
                }
                peers[self.rng.random_range(0..peers.len())]
            }
        };
        let Some(engine) = self.nodes[n as usize].engine.as_ref() else { return };
        let digest = engine.sync_digest();
        if round == 0 {
            self.token_seq += 1;
            let token = self.token_seq;
            let node = &mut self.nodes[n as usize];
            node.sync_wait = Some(token);
            let inc = node.inc;
            self.push(self.now + SYNC_TIMEOUT_MS, Event::SyncRetry { node: n, inc, token, tries });
        }
        let bytes = digest.to_bytes().len();
        self.stats.sync_messages += 1;
        self.stats.sync_bytes += bytes as u64;
        self.record("sync-req", n, partner, u64::from(round));
        match self.net.send(&mut self.rng, n as usize, partner as usize, bytes, self.now) {
            Some(at) => self
                .push(at, Event::SyncReq { to: partner, from: n, round, digest: Rc::new(digest) }),
            None => self.stats.dropped += 1,
        }
    }

    /// Whom a sync envelope is for, and whether that holds for good (see [`EnvFacts`]).
    fn scope(&self, responder: u32, env: &Envelope) -> (Scope, bool) {
        let project = |p: Option<u32>| p.map_or(Scope::Nowhere, Scope::Project);
        match env {
            Envelope::Presence(_) | Envelope::RelayRequest(_) => (Scope::Every, true),
            Envelope::Manifest(_) | Envelope::Batch(_) => {
                let owner = env.signer();
                let p = self.projects.iter().position(|p| p.key.node_id() == owner);
                (project(p.map(|p| p as u32)), true)
            }
            _ => {
                // An item in the driver's table keeps its project; one it has not registered
                // yet is looked up in the responder's engine by `topic_of`.
                let known = env_item(env).is_none_or(|(item, _)| {
                    self.item_index
                        .get(&item)
                        .is_some_and(|&i| self.items[i as usize].project != u32::MAX)
                });
                (project(self.topic_of(responder, env)), known)
            }
        }
    }

    /// The encoded size of a sync envelope and whether `requester` is subscribed to what it
    /// is about, through the [`EnvCache`].
    fn sync_facts(&mut self, requester: u32, responder: u32, env: &Envelope) -> (usize, bool) {
        let (bytes, scope) = match self.env_cache.get(env) {
            Some(EnvFacts { bytes, scope: Some(scope), .. }) => (*bytes as usize, *scope),
            hit => {
                let bytes = match hit {
                    Some(f) => f.bytes as usize,
                    None => env.to_bytes().len(),
                };
                let (scope, lasting) = self.scope(responder, env);
                self.env_cache.put(EnvFacts {
                    env: env.clone(),
                    bytes: bytes as u32,
                    scope: lasting.then_some(scope),
                });
                (bytes, scope)
            }
        };
        let wanted = match scope {
            Scope::Every => true,
            Scope::Project(p) => self.nodes[requester as usize].topics.contains(&p),
            Scope::Nowhere => false,
        };
        (bytes, wanted)
    }

    pub(crate) fn on_sync_req(
        &mut self,
        to: u32,
        from: u32,
        round: u8,
        digest: &starling_protocol::SyncDigest,
    ) {
        if self.deaf(to) {
            return;
        }
        let Some(engine) = self.nodes[to as usize].engine.as_ref() else { return };
        let delta = engine.sync_delta(digest);
        let mut bytes = 16usize;
        let mut envelopes = Vec::with_capacity(delta.envelopes.len());
        for env in delta.envelopes {
            let (size, wanted) = self.sync_facts(from, to, &env);
            if wanted {
                bytes += size;
                envelopes.push(env);
            }
        }
        self.stats.sync_messages += 1;
        self.stats.sync_bytes += bytes as u64;
        self.record("sync-resp", to, from, envelopes.len() as u64);
        let inc = self.nodes[from as usize].inc;
        let delta = Rc::new(SyncDelta { envelopes, more: delta.more });
        match self.net.send(&mut self.rng, to as usize, from as usize, bytes, self.now) {
            Some(at) => self.push(at, Event::SyncResp { to: from, from: to, round, inc, delta }),
            None => self.stats.dropped += 1,
        }
    }

    pub(crate) fn on_sync_resp(
        &mut self,
        to: u32,
        from: u32,
        round: u8,
        inc: u32,
        delta: &SyncDelta,
    ) {
        let node = &self.nodes[to as usize];
        if node.inc != inc || !node.up() || self.deaf(to) {
            return;
        }
        self.record("sync-apply", to, from, delta.envelopes.len() as u64);
        self.nodes[to as usize].sync_wait = None;
        for env in &delta.envelopes {
            let _ = self.take_message(to, env);
        }
        if delta.more && round + 1 < crate::world::SYNC_ROUNDS_MAX {
            self.start_sync(to, Some(from), round + 1);
        }
    }

    pub(crate) fn on_sync_retry(&mut self, n: u32, inc: u32, token: u64, tries: u8) {
        let node = &self.nodes[n as usize];
        if node.inc != inc || !node.up() || node.sync_wait != Some(token) {
            return;
        }
        if tries + 1 < SYNC_TRIES_MAX {
            self.start_sync_try(n, None, 0, tries + 1);
        }
    }

    pub(crate) fn on_sync_timer(&mut self, n: u32, inc: u32) {
        let node = &self.nodes[n as usize];
        if node.inc != inc || !node.up() {
            return;
        }
        self.start_sync(n, None, 0);
        let at = self.now + self.s.network.sync_interval_ms;
        self.push(at, Event::SyncTimer { node: n, inc });
    }

    fn degree(&self, n: u32, topic: u32) -> Option<usize> {
        let node = &self.nodes[n as usize];
        node.topics.iter().position(|t| *t == topic).map(|ti| node.mesh[ti].len())
    }

    fn linked(&self, a: u32, b: u32, topic: u32) -> bool {
        let node = &self.nodes[a as usize];
        node.topics.iter().position(|t| *t == topic).is_some_and(|ti| node.mesh[ti].contains(&b))
    }

    fn link(&mut self, a: u32, b: u32, topic: u32) {
        if let Some(links) = self.new_links.as_mut() {
            links.push((a.min(b), a.max(b)));
        }
        for (x, y) in [(a, b), (b, a)] {
            let node = &mut self.nodes[x as usize];
            if let Some(ti) = node.topics.iter().position(|t| *t == topic) {
                node.mesh[ti].push(y);
            }
        }
    }

    /// Tries to add one mesh peer for `n` in `topic` among live subscribers.
    fn graft_one(&mut self, n: u32, topic: u32, need_up: bool) -> bool {
        let d_hi = 2 * self.s.network.mesh_degree as usize;
        let subs = self.projects[topic as usize].subscribers.len();
        if subs < 2 {
            return false;
        }
        for _ in 0..8 {
            let q = self.projects[topic as usize].subscribers[self.rng.random_range(0..subs)];
            if q == n || self.linked(n, q, topic) {
                continue;
            }
            if need_up && !(self.nodes[q as usize].up() && self.connected(n, q)) {
                continue;
            }
            if self.degree(q, topic).unwrap_or(usize::MAX) >= d_hi {
                continue;
            }
            self.link(n, q, topic);
            return true;
        }
        false
    }

    /// Whether [`World::graft_one`] has anyone to pick: a subscriber of `topic` other than `n`,
    /// not yet its mesh peer, below the degree cap and (with `need_up`) up and connected.
    fn graftable(&self, n: u32, topic: u32, need_up: bool) -> bool {
        let d_hi = 2 * self.s.network.mesh_degree as usize;
        self.projects[topic as usize].subscribers.iter().any(|&q| {
            q != n
                && !self.linked(n, q, topic)
                && (!need_up || (self.nodes[q as usize].up() && self.connected(n, q)))
                && self.degree(q, topic).unwrap_or(usize::MAX) < d_hi
        })
    }

    /// Grafts `n` in `topic` until it has `d` mesh peers, in at most `4·d` tries of
    /// [`World::graft_one`]. Stops at the first try that finds nobody when there is nobody to
    /// find (a topic with fewer than `d + 1` subscribers, or a partition): the tries left could
    /// only draw random numbers, so the mesh comes out the same.
    fn graft_up_to(&mut self, n: u32, topic: u32, d: usize, need_up: bool) {
        let mut tries = 0;
        while self.degree(n, topic).unwrap_or(d) < d && tries < 4 * d {
            if !self.graft_one(n, topic, need_up) && !self.graftable(n, topic, need_up) {
                break;
            }
            tries += 1;
        }
    }

    /// Builds the initial mesh of every topic.
    pub(crate) fn build_mesh(&mut self) {
        let d = self.s.network.mesh_degree as usize;
        for topic in 0..self.projects.len() as u32 {
            let subs = self.projects[topic as usize].subscribers.clone();
            for n in subs {
                self.graft_up_to(n, topic, d, false);
            }
        }
    }

    /// A node coming back joins the mesh of each of its topics.
    pub(crate) fn graft(&mut self, n: u32) {
        let d = self.s.network.mesh_degree as usize;
        let topics = self.nodes[n as usize].topics.clone();
        for topic in topics {
            self.graft_up_to(n, topic, d, true);
        }
    }

    /// Whether `a` and `b` can talk both ways (a one-way link fails keepalives too).
    fn connected(&self, a: u32, b: u32) -> bool {
        self.net.reachable(a as usize, b as usize) && self.net.reachable(b as usize, a as usize)
    }

    /// The gossipsub heartbeat: every node drops mesh peers it cannot reach and, when left
    /// with fewer than D_low, grafts reachable subscribers back up to D. With `regrow` (after
    /// a heal) every node grafts up to D, so the healed halves link up again.
    pub(crate) fn mesh_heartbeat(&mut self, regrow: bool) {
        let d = self.s.network.mesh_degree as usize;
        let low = self.s.network.mesh_degree_low as usize;
        for n in 0..self.nodes.len() as u32 {
            if !self.nodes[n as usize].up() {
                continue;
            }
            for ti in 0..self.nodes[n as usize].topics.len() {
                let topic = self.nodes[n as usize].topics[ti];
                // From the back, so unlinking (which keeps the order of the rest) never moves a
                // peer not yet looked at.
                let mut k = self.nodes[n as usize].mesh[ti].len();
                while k > 0 {
                    k -= 1;
                    let p = self.nodes[n as usize].mesh[ti][k];
                    if !self.nodes[p as usize].up() || !self.connected(n, p) {
                        self.unlink(n, p, topic);
                    }
                }
                let len = self.nodes[n as usize].mesh[ti].len();
                // Linked to every other subscriber already: nobody is left to graft.
                let full = len + 1 >= self.projects[topic as usize].subscribers.len();
                if !full && (len < low || (regrow && len < d)) {
                    self.graft_up_to(n, topic, d, true);
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
    pub(crate) fn link_across(&mut self, before: &[u32]) {
        let d_hi = 2 * self.s.network.mesh_degree as usize;
        let side = |x: u32| before.get(x as usize).copied();
        for n in 0..self.nodes.len() as u32 {
            if !self.nodes[n as usize].up() {
                continue;
            }
            for ti in 0..self.nodes[n as usize].topics.len() {
                let topic = self.nodes[n as usize].topics[ti];
                if self.nodes[n as usize].mesh[ti].iter().any(|p| side(*p) != side(n)) {
                    continue;
                }
                let across: Vec<u32> = self.projects[topic as usize]
                    .subscribers
                    .iter()
                    .copied()
                    .filter(|&q| {
                        side(q) != side(n)
                            && self.nodes[q as usize].up()
                            && self.connected(n, q)
                            && !self.linked(n, q, topic)
                            && self.degree(q, topic).unwrap_or(usize::MAX) < d_hi
                    })
                    .collect();
                if !across.is_empty() {
                    let q = across[self.rng.random_range(0..across.len())];
                    self.link(n, q, topic);
                }
            }
        }
    }

    fn unlink(&mut self, a: u32, b: u32, topic: u32) {
        for (x, y) in [(a, b), (b, a)] {
            let node = &mut self.nodes[x as usize];
            if let Some(ti) = node.topics.iter().position(|t| *t == topic) {
                node.mesh[ti].retain(|z| *z != y);
            }
        }
    }

    /// A node going down leaves every mesh; peers left short graft a replacement.
    pub(crate) fn prune(&mut self, n: u32) {
        let low = self.s.network.mesh_degree_low as usize;
        let topics = self.nodes[n as usize].topics.clone();
        for (ti, topic) in topics.into_iter().enumerate() {
            let peers = std::mem::take(&mut self.nodes[n as usize].mesh[ti]);
            for m in peers {
                let node = &mut self.nodes[m as usize];
                if let Some(mi) = node.topics.iter().position(|t| *t == topic) {
                    node.mesh[mi].retain(|x| *x != n);
                    if node.mesh[mi].len() < low && node.up() {
                        self.graft_one(m, topic, true);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Overrides, Scenario};

    /// A small loss-free world with every node up and meshed.
    fn booted() -> World {
        booted_with(8, 2)
    }

    /// [`booted`] with `nodes` nodes and `seed`.
    fn booted_with(nodes: u32, seed: u64) -> World {
        let mut s = Scenario::load("steady").expect("built-in scenario loads");
        let small = Overrides { nodes: Some(nodes), items: Some(20), ..Default::default() };
        s.apply_overrides(&small).expect("small override is valid");
        s.duration_ms = 3_000;
        s.check.no_loss = false;
        let mut world = World::new(&s, seed);
        world.run(|_, _| {});
        assert!(world.nodes.iter().all(|n| n.up()) && world.violations.is_empty());
        world
    }

    fn msg(world: &World, copies: Vec<Copies>) -> Rc<Msg> {
        let env = world.projects[0].manifest.clone();
        Rc::new(Msg {
            env,
            id: 42,
            origin_ms: world.now,
            bytes: 100,
            copies: RefCell::new(copies),
            shared: Cell::new(false),
        })
    }

    #[test]
    fn a_heal_links_every_node_across_the_cut() {
        let mut w = booted_with(30, 5);
        w.net.partition(15, true);
        for _ in 0..3 {
            w.mesh_heartbeat(false);
        }
        let side = |n: u32| u32::from(n >= 15);
        let across =
            |w: &World, n: u32| w.nodes[n as usize].mesh[0].iter().any(|p| side(*p) != side(n));
        assert!((0..30).all(|n| !across(&w, n)), "the partition cut every mesh link across");
        let before: Vec<u32> = (0..30).map(|i| w.net.component(i)).collect();
        w.net.heal();
        w.mesh_heartbeat(true);
        // Each side's meshes filled up during the partition: regrowing alone leaves some apart.
        assert!((0..30).any(|n| !across(&w, n)));
        w.link_across(&before);
        assert!((0..30).all(|n| across(&w, n)), "every node has a mesh peer across");
        let d_hi = 2 * w.s.network.mesh_degree as usize;
        assert!(w.nodes.iter().all(|n| n.mesh[0].len() <= d_hi));
    }

    #[test]
    fn a_copy_dies_with_its_receivers_connections() {
        let mut w = booted();
        let old = w.nodes[1].inc;
        let m = msg(&w, vec![Copies { node: 1, inc: old, first_at: w.now, taken: false, seq: 0 }]);
        w.take_down(1, false);
        w.revive(1, false, false);
        let (dups, samples) = (w.stats.dup_deliveries, w.hist.percentiles().samples);
        w.on_deliver(1, old, 0, 0, Rc::clone(&m));
        assert_eq!((w.stats.dup_deliveries, w.hist.percentiles().samples), (dups, samples));
        assert!(!m.copies.borrow()[0].taken, "the stale copy was not taken in");
        // The same copy sent to the node as it is now is taken in, once.
        let inc = w.nodes[1].inc;
        m.copies.borrow_mut().push(Copies { node: 1, inc, first_at: w.now, taken: false, seq: 0 });
        w.on_deliver(1, inc, 0, 0, Rc::clone(&m));
        assert_eq!(w.hist.percentiles().samples, samples + 1);
        assert!(m.copies.borrow()[1].taken);
        w.on_deliver(1, inc, 0, 0, m);
        assert_eq!(w.stats.dup_deliveries, dups + 1);
    }

    #[test]
    fn seen_caches_answer_as_a_set_would() {
        use rand::SeedableRng;
        let mut w = booted();
        w.s.network.seen_max = 3;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // The per-node set this replaced, with its publishing quirk.
        let (mut set, mut fifo) = (std::collections::HashSet::new(), VecDeque::new());
        let mut sweeps = 0;
        for step in 0..9_000 {
            let id = rng.random_range(1..8u64);
            let inc = w.nodes[1].inc;
            if rng.random_bool(0.3) {
                // Node 1 publishes a message with this id.
                if fifo.len() >= 3
                    && let Some(old) = fifo.pop_front()
                {
                    set.remove(&old);
                }
                if set.insert(id) {
                    fifo.push_back(id);
                }
                let have = if w.seen_ids.has(id) { w.seen_at(1, id) } else { 0 };
                let seq = w.remember(1, have);
                let c = Copies { node: 1, inc, first_at: w.now, taken: true, seq };
                let mut m = msg(&w, vec![c]);
                Rc::get_mut(&mut m).expect("new").id = id;
                w.seen_ids.add(&m);
            } else {
                // A copy of a new message with this id reaches node 1.
                let fresh = set.insert(id);
                if fresh {
                    if fifo.len() >= 3
                        && let Some(old) = fifo.pop_front()
                    {
                        set.remove(&old);
                    }
                    fifo.push_back(id);
                }
                let c = Copies { node: 1, inc, first_at: w.now, taken: false, seq: 0 };
                let mut m = msg(&w, vec![c]);
                Rc::get_mut(&mut m).expect("new").id = id;
                w.seen_ids.add(&m);
                let dups = w.stats.dup_deliveries;
                w.on_deliver(1, inc, 0, 0, Rc::clone(&m));
                assert_eq!(w.stats.dup_deliveries == dups, fresh, "step {step}, id {id}");
            }
            for id in 1..8 {
                assert_eq!(w.seen_at(1, id) > 0, set.contains(&id), "step {step}, id {id}");
            }
            w.seen_ids.sweep_if_due(&w.nodes, 3);
            sweeps += usize::from(w.seen_ids.added == 0);
        }
        assert!(sweeps > 0, "swept (and answered the same after)");
    }

    #[test]
    fn later_copies_to_a_node_are_counted_at_once() {
        let mut w = booted();
        let m = msg(
            &w,
            vec![Copies { node: 0, inc: w.nodes[0].inc, first_at: w.now, taken: true, seq: 0 }],
        );
        let mesh = w.nodes[0].mesh[0].clone();
        let peers = mesh.len();
        assert!(peers > 0);
        for round in 0..3 {
            let (events, dups) = (w.queue.len(), w.stats.dup_deliveries);
            w.forward(0, 0, &m, u32::MAX);
            let scheduled = w.queue.len() - events;
            let counted = (w.stats.dup_deliveries - dups) as usize;
            // Every copy is either an event or a duplicate; only one that arrives before all
            // earlier copies to its node is an event.
            assert_eq!(scheduled + counted, peers, "round {round}");
            if round == 0 {
                assert_eq!(scheduled, peers);
            }
            let copies = m.copies.borrow();
            for &p in &mesh {
                let c: Vec<_> = copies.iter().filter(|c| c.node == p).collect();
                assert_eq!(c.len(), 1, "one entry per node and incarnation");
                assert!(!c[0].taken && c[0].first_at > w.now);
            }
        }
        // The earliest copy to each peer arrives first and is taken in; the rest are counted.
        let dups = w.stats.dup_deliveries;
        let events_before = w.events;
        w.s.duration_ms = w.now + 20_000;
        w.run(|_, _| {});
        assert!(w.events > events_before && w.violations.is_empty());
        for &p in &mesh {
            assert!(m.copies.borrow().iter().any(|c| c.node == p && c.taken), "peer {p}");
        }
        assert!(w.stats.dup_deliveries >= dups);
    }

    #[test]
    fn sync_sizes_and_scopes_are_exact() {
        let mut w = booted();
        let blank = starling_protocol::Engine::new(w.cfg.clone(), w.nodes[2].key.clone(), [], 1);
        let engine = w.nodes[3].engine.as_ref().expect("up");
        let delta = engine.sync_delta(&blank.sync_digest());
        assert!(delta.envelopes.len() > 3, "a blank digest gets everything");
        for _ in 0..2 {
            for env in &delta.envelopes {
                let (bytes, wanted) = w.sync_facts(2, 3, env);
                assert_eq!(bytes, env.to_bytes().len());
                assert!(wanted, "every node is in the only project");
                let (scope, _) = w.scope(3, env);
                assert_ne!(scope, Scope::Nowhere);
            }
        }
        // A different envelope is never mistaken for a remembered one.
        let other = w.projects[0].batches[0].clone();
        w.env_cache.put(EnvFacts { env: other.clone(), bytes: 1, scope: None });
        assert!(w.env_cache.get(&w.projects[0].manifest).is_none_or(|f| f.env != other));
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
