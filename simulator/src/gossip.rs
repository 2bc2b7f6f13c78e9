//! The gossip overlay and request-response state sync.
//!
//! Shaped like gossipsub: one topic per project, each subscriber keeps a mesh of about D peers
//! in each of its topics, a new message is validated by the engine and forwarded once to the
//! mesh, and message ids (content hashes) are remembered so copies are dropped before they
//! reach the engine. Presence heartbeats go to every topic a node is in. Sync is a digest
//! request answered with a delta (at most [`crate::world::SYNC_ROUNDS_MAX`] rounds), applied
//! through the ordinary message path; the responder leaves out projects the requester is not
//! subscribed to.

use std::rc::Rc;

use rand::Rng;
use starling_protocol::{Envelope, Input, ItemBatch, ProjectManifest, Reject, SyncDelta};

use crate::world::{Event, Msg, SYNC_TIMEOUT_MS, SYNC_TRIES_MAX, World, env_item};

impl World {
    /// Whether the sabotaged deaf node is deaf now.
    fn deaf(&self, n: u32) -> bool {
        self.s.sabotage.deaf_node == Some(n) && self.now >= self.s.sabotage.deaf_from_ms
    }

    fn remember(&mut self, n: u32, id: u64) {
        let cap = self.s.network.seen_max.max(1);
        let node = &mut self.nodes[n as usize];
        if node.seen_fifo.len() >= cap
            && let Some(old) = node.seen_fifo.pop_front()
        {
            node.seen.remove(&old);
        }
        if node.seen.insert(id) {
            node.seen_fifo.push_back(id);
        }
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
        let receivers = std::cell::RefCell::new(vec![(n, self.nodes[n as usize].inc)]);
        let msg =
            Rc::new(Msg { env, id, origin_ms: self.now, bytes: bytes.len() as u32, receivers });
        self.remember(n, id);
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
            match self.net.send(&mut self.rng, n as usize, p as usize, msg.bytes as usize, self.now)
            {
                // A copy for a peer that already has the message would only be counted and
                // dropped by its seen-cache on arrival: count it now and spare the event.
                Some(_) if msg.reached(p, self.nodes[p as usize].inc) => {
                    self.stats.dup_deliveries += 1
                }
                Some(at) => {
                    self.push(at, Event::Deliver { to: p, from: n, topic, msg: Rc::clone(msg) })
                }
                None => self.stats.dropped += 1,
            }
        }
    }

    pub(crate) fn on_deliver(&mut self, to: u32, from: u32, topic: u32, msg: Rc<Msg>) {
        if !self.up[to as usize] || self.deaf(to) {
            return;
        }
        let inc = self.nodes[to as usize].inc;
        if msg.reached(to, inc) || self.nodes[to as usize].seen.contains(&msg.id) {
            self.stats.dup_deliveries += 1;
            return;
        }
        msg.receivers.borrow_mut().push((to, inc));
        self.remember(to, msg.id);
        self.hist.record(self.now.saturating_sub(msg.origin_ms));
        self.record("recv", to, from, msg.id);
        let Some(result) = self.drive(to, Input::Message(msg.env.clone())) else { return };
        self.after_apply(to, &msg.env, result);
        let forward = match result {
            Ok(()) => true,
            Err(r) => matches!(r, Reject::UnknownItem | Reject::UnknownProject),
        };
        if forward {
            self.forward(to, topic, &msg, from);
        }
    }

    /// Bookkeeping after an engine took in a message: rejections, and when items last changed.
    fn after_apply(&mut self, n: u32, env: &Envelope, result: Result<(), Reject>) {
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

    /// Whether a sync envelope belongs to a project the requester is subscribed to.
    fn wanted(&self, requester: u32, responder: u32, env: &Envelope) -> bool {
        let topics = &self.nodes[requester as usize].topics;
        match env {
            Envelope::Presence(_) | Envelope::RelayRequest(_) => true,
            Envelope::Manifest(_) | Envelope::Batch(_) => {
                let owner = env.signer();
                self.projects
                    .iter()
                    .position(|p| p.key.node_id() == owner)
                    .is_some_and(|p| topics.contains(&(p as u32)))
            }
            _ => self.topic_of(responder, env).is_some_and(|p| topics.contains(&p)),
        }
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
        let envelopes: Vec<Envelope> =
            delta.envelopes.into_iter().filter(|e| self.wanted(from, to, e)).collect();
        let bytes: usize = 16 + envelopes.iter().map(|e| e.to_bytes().len()).sum::<usize>();
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
            if let Some(result) = self.drive(to, Input::Message(env.clone())) {
                self.after_apply(to, env, result);
            }
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

    /// Builds the initial mesh of every topic.
    pub(crate) fn build_mesh(&mut self) {
        let d = self.s.network.mesh_degree as usize;
        for topic in 0..self.projects.len() as u32 {
            let subs = self.projects[topic as usize].subscribers.clone();
            for n in subs {
                let mut tries = 0;
                while self.degree(n, topic).unwrap_or(d) < d && tries < 4 * d {
                    self.graft_one(n, topic, false);
                    tries += 1;
                }
            }
        }
    }

    /// A node coming back joins the mesh of each of its topics.
    pub(crate) fn graft(&mut self, n: u32) {
        let d = self.s.network.mesh_degree as usize;
        let topics = self.nodes[n as usize].topics.clone();
        for topic in topics {
            let mut tries = 0;
            while self.degree(n, topic).unwrap_or(d) < d && tries < 4 * d {
                self.graft_one(n, topic, true);
                tries += 1;
            }
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
                let peers = self.nodes[n as usize].mesh[ti].clone();
                for p in peers {
                    if !self.nodes[p as usize].up() || !self.connected(n, p) {
                        self.unlink(n, p, topic);
                    }
                }
                let len = self.nodes[n as usize].mesh[ti].len();
                if len < low || (regrow && len < d) {
                    let mut tries = 0;
                    while self.degree(n, topic).unwrap_or(d) < d && tries < 4 * d {
                        self.graft_one(n, topic, true);
                        tries += 1;
                    }
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
