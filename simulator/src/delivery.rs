//! The world's side of gossip and sync: publishing an engine's envelope through the
//! [`Overlay`](crate::gossip::Overlay), carrying out the copies it decides on as events,
//! handing what arrives to the engines, and request-response state sync.
//!
//! Presence heartbeats go to every topic a node is in. Sync is a digest request answered with
//! a delta in sessions run by the engine's policy ([`SyncSessions`](starling_protocol::engine::SyncSessions)), applied through the ordinary message path; the
//! responder leaves out projects the requester is not subscribed to.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use rand::Rng;
use starling_protocol::engine::SyncRequest;
use starling_protocol::{Envelope, ItemBatch, ProjectManifest, Reject, SyncDelta, SyncDigest};

use crate::gossip::{Arrival, Copies, Hop, Msg, Reach, Scope, Wire};
use crate::world::{Event, World, env_item};

impl World {
    /// Whether the sabotaged deaf node is deaf now.
    fn deaf(&self, n: u32) -> bool {
        self.overlay.deaf_at(n, self.now)
    }

    /// The topics node `n` sends an envelope it publishes on, as its engine routes it
    /// ([`starling_protocol::Engine::route`]): a shard's topic, a project's, or for a
    /// heartbeat every topic the node is in but those of split projects as a whole.
    fn publish_topics(&self, n: u32, env: &Envelope) -> Vec<u32> {
        use starling_protocol::Route;
        let route = self.nodes.get(n as usize).and_then(|x| x.engine.as_ref()?.route(env));
        let project = |pid| self.ledger.project_index.get(&pid).copied();
        let mine = self.overlay.topics(n);
        let one = |t: Option<u32>| match t {
            Some(t) => vec![t],
            None => mine.to_vec(),
        };
        match route {
            Some(Route::Shard(pid, shard)) => match project(pid) {
                Some(p) => vec![self.ledger.shard_topic(p, shard)],
                None => mine.to_vec(),
            },
            Some(Route::Project(pid)) => one(project(pid)),
            Some(Route::Presence) => {
                mine.iter().copied().filter(|t| !self.ledger.split_project_topic(*t)).collect()
            }
            Some(Route::Everyone) => mine.to_vec(),
            // An item the engine does not know (a liar's forgery): its project's topic, as
            // the driver's table has it.
            None => one(self.project_of(n, env)),
        }
    }

    /// The project (topic) an envelope belongs to; `None` for presence (every topic).
    fn project_of(&self, n: u32, env: &Envelope) -> Option<u32> {
        use starling_protocol::wire::decode;
        match env {
            // A curator's directory is for every node (the curated scenario's nodes all follow
            // the one curator), like presence.
            Envelope::Presence(_) | Envelope::RelayRequest(_) | Envelope::Directory(_) => None,
            Envelope::Manifest(s) => decode::<ProjectManifest>(s.body(), 1 << 20)
                .ok()
                .and_then(|m| self.ledger.project_index.get(&m.id()).copied()),
            Envelope::Batch(s) => decode::<ItemBatch>(s.body(), 8 << 20)
                .ok()
                .and_then(|b| self.ledger.project_index.get(&b.project).copied()),
            Envelope::Progress(s) => s
                .verified_ref()
                .ok()
                .and_then(|p| self.ledger.project_index.get(&p.project).copied()),
            _ => {
                let (item, _) = env_item(env)?;
                if let Some(p) = self.ledger.known_project(&item) {
                    return Some(p);
                }
                let engine = self.nodes.get(n as usize)?.engine.as_ref()?;
                let (pid, _) = engine.item_work(&item)?;
                self.ledger.project_index.get(&pid).copied()
            }
        }
    }

    /// Sends an envelope from node `n` to its mesh as a new message.
    pub(crate) fn publish(&mut self, n: u32, env: Envelope) {
        let topics = self.publish_topics(n, &env);
        let bytes = env.to_bytes();
        let hash = blake3::hash(&bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        let id = u64::from_le_bytes(first);
        let inc = self.nodes[n as usize].inc;
        let seq = self.overlay.remember_published(n, inc, id);
        let copies = Copies { node: n, inc, first_at: self.now, taken: true, seq };
        // What a node publishes is what its engine and its peers' hand out in sync responses
        // later: remember its size now that it is known.
        if self.overlay.env_facts(&env).is_none() {
            self.overlay.put_env_facts(&env, bytes.len() as u32, None);
        }
        let msg = Rc::new(Msg {
            env,
            id,
            origin_ms: self.now,
            bytes: bytes.len() as u32,
            copies: RefCell::new(vec![copies]),
            shared: Cell::new(false),
        });
        let nodes = &self.nodes;
        self.overlay.hold(&msg, |x| nodes[x as usize].inc);
        self.record("send", n, u32::MAX, id);
        let projects = self.ledger.projects.len() as u32;
        for t in topics {
            if t >= projects && self.overlay.topics(n).binary_search(&t).is_err() {
                self.fan_out(n, t, &msg);
            } else {
                self.forward(n, t, &msg, u32::MAX);
            }
        }
    }

    /// Forwards `msg` from node `n` to its mesh peers in `topic` but `except`, through
    /// [`crate::gossip::Overlay::forward`]: the copies it sends become delivery events.
    pub(crate) fn forward(&mut self, n: u32, topic: u32, msg: &Rc<Msg>, except: u32) {
        let mut out = std::mem::take(&mut self.deliveries);
        let mut wire = Wire { net: &mut self.net, rng: &mut self.rng, up: &self.up, now: self.now };
        let nodes = &self.nodes;
        let hop = Hop { from: n, topic, except };
        let tally = self.overlay.forward(hop, msg, &mut wire, |p| nodes[p as usize].inc, &mut out);
        self.stats.add_fanout(&tally);
        for d in out.drain(..) {
            let msg = Rc::clone(msg);
            self.push(d.at, Event::Deliver { to: d.to, inc: d.inc, from: n, topic, msg });
        }
        self.deliveries = out;
    }

    /// Sends `msg` from node `n` into a shard topic it is not in, through
    /// [`crate::gossip::Overlay::fanout`]; receivers forward it in the topic as usual.
    fn fan_out(&mut self, n: u32, topic: u32, msg: &Rc<Msg>) {
        let mut out = std::mem::take(&mut self.deliveries);
        let mut wire = Wire { net: &mut self.net, rng: &mut self.rng, up: &self.up, now: self.now };
        let nodes = &self.nodes;
        let tally =
            self.overlay.fanout(n, topic, msg, &mut wire, |p| nodes[p as usize].inc, &mut out);
        self.stats.add_fanout(&tally);
        for d in out.drain(..) {
            let msg = Rc::clone(msg);
            self.push(d.at, Event::Deliver { to: d.to, inc: d.inc, from: n, topic, msg });
        }
        self.deliveries = out;
    }

    pub(crate) fn on_deliver(&mut self, to: u32, inc: u32, from: u32, topic: u32, msg: Rc<Msg>) {
        if !self.up[to as usize] || self.nodes[to as usize].inc != inc || self.deaf(to) {
            return;
        }
        match self.overlay.arrive(to, inc, &msg) {
            Arrival::Unlisted => return,
            Arrival::Duplicate => {
                self.stats.dup_deliveries += 1;
                return;
            }
            Arrival::Fresh => {}
        }
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
                    self.ledger.touch(&item, self.now);
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

    /// Builds the initial mesh of every topic.
    pub(crate) fn build_mesh(&mut self) {
        self.overlay.build(&mut self.rng);
    }

    /// A node coming back joins the mesh of each of its topics.
    pub(crate) fn graft(&mut self, n: u32) {
        let reach = Reach { net: &self.net, up: &self.up };
        self.overlay.graft(n, &reach, &mut self.rng);
    }

    /// The gossipsub heartbeat (see [`crate::gossip::Overlay::heartbeat`]).
    pub(crate) fn mesh_heartbeat(&mut self, regrow: bool) {
        let reach = Reach { net: &self.net, up: &self.up };
        self.overlay.heartbeat(regrow, &reach, &mut self.rng);
    }

    /// After a heal, nodes link across the healed cut (see
    /// [`crate::gossip::Overlay::link_across`]).
    pub(crate) fn link_across(&mut self, before: &[u32]) {
        let reach = Reach { net: &self.net, up: &self.up };
        self.overlay.link_across(before, &reach, &mut self.rng);
    }

    /// A node going down leaves every mesh; peers left short graft a replacement.
    pub(crate) fn prune(&mut self, n: u32) {
        let reach = Reach { net: &self.net, up: &self.up };
        self.overlay.prune(n, &reach, &mut self.rng);
    }

    /// Opens a sync session from `n` with `partner` (or a random mesh peer), by the engine's
    /// session policy ([`SyncSessions`](starling_protocol::engine::SyncSessions)).
    pub(crate) fn start_sync(&mut self, n: u32, partner: Option<u32>) {
        let peers = match partner {
            Some(_) => Vec::new(),
            None => self.sync_peers(n),
        };
        let now = self.now;
        let (node, rng) = (&mut self.nodes[n as usize], &mut self.rng);
        if let Some(req) = node.sync.open(now, partner, &peers, &mut |k| rng.random_range(0..k)) {
            self.send_sync(n, req);
        }
    }

    /// The mesh peers of `n` that are up and reachable: those it holds a connection to.
    pub(crate) fn sync_peers(&self, n: u32) -> Vec<u32> {
        // A split project's own topic links to members of other shards, whose state is not
        // this node's: its shard's topic is where its sync peers are.
        let topics = self.overlay.topics(n);
        self.overlay
            .mesh(n)
            .iter()
            .zip(topics)
            .filter(|(_, t)| !self.ledger.split_project_topic(**t))
            .flat_map(|(m, _)| m)
            .copied()
            .filter(|p| self.nodes[*p as usize].up() && self.net.reachable(n as usize, *p as usize))
            .collect()
    }

    /// Sends one request of a sync session, with a timer for its deadline.
    fn send_sync(&mut self, n: u32, req: SyncRequest<u32>) {
        let Some(engine) = self.nodes[n as usize].engine.as_ref() else { return };
        let digest = engine.sync_digest();
        let inc = self.nodes[n as usize].inc;
        self.push(req.deadline, Event::SyncRetry { node: n, inc });
        let bytes = digest.to_bytes().len();
        self.stats.sync_messages += 1;
        self.stats.sync_bytes += bytes as u64;
        self.record("sync-req", n, req.peer, u64::from(req.round));
        match self.net.send(&mut self.rng, n as usize, req.peer as usize, bytes, self.now) {
            Some(at) => self.push(
                at,
                Event::SyncReq {
                    to: req.peer,
                    from: n,
                    req: (req.session, req.seq),
                    digest: Rc::new(digest),
                },
            ),
            None => self.stats.dropped += 1,
        }
    }

    /// Whom a sync envelope is for, and whether that holds for good (see
    /// [`crate::gossip::EnvFacts`]).
    fn scope(&self, responder: u32, env: &Envelope) -> (Scope, bool) {
        let project = |p: Option<u32>| p.map_or(Scope::Nowhere, Scope::Project);
        match env {
            Envelope::Presence(_) | Envelope::RelayRequest(_) | Envelope::Directory(_) => {
                (Scope::Every, true)
            }
            Envelope::Manifest(_) | Envelope::Batch(_) => {
                let owner = env.signer();
                let p = self.ledger.projects.iter().position(|p| p.key.node_id() == owner);
                (project(p.map(|p| p as u32)), true)
            }
            _ => {
                // An item in the driver's table keeps its project; one it has not registered
                // yet is looked up in the responder's engine by `topic_of`.
                let known = env_item(env)
                    .is_none_or(|(item, _)| self.ledger.known_project(&item).is_some());
                (project(self.project_of(responder, env)), known)
            }
        }
    }

    /// The encoded size of a sync envelope and whether `requester` is subscribed to what it
    /// is about, through the overlay's envelope facts.
    fn sync_facts(&mut self, requester: u32, responder: u32, env: &Envelope) -> (usize, bool) {
        let (bytes, scope) = match self.overlay.env_facts(env) {
            Some((bytes, Some(scope))) => (bytes as usize, scope),
            hit => {
                let bytes = match hit {
                    Some((bytes, _)) => bytes as usize,
                    None => env.to_bytes().len(),
                };
                let (scope, lasting) = self.scope(responder, env);
                self.overlay.put_env_facts(env, bytes as u32, lasting.then_some(scope));
                (bytes, scope)
            }
        };
        let wanted = match scope {
            Scope::Every => true,
            Scope::Project(p) => self.overlay.topics(requester).contains(&p),
            Scope::Nowhere => false,
        };
        (bytes, wanted)
    }

    pub(crate) fn on_sync_req(&mut self, to: u32, from: u32, req: (u32, u32), digest: &SyncDigest) {
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
            Some(at) => self.push(at, Event::SyncResp { to: from, from: to, req, inc, delta }),
            None => self.stats.dropped += 1,
        }
    }

    pub(crate) fn on_sync_resp(
        &mut self,
        to: u32,
        from: u32,
        (session, seq): (u32, u32),
        inc: u32,
        delta: &SyncDelta,
    ) {
        let node = &self.nodes[to as usize];
        if node.inc != inc || !node.up() || self.deaf(to) {
            return;
        }
        self.record("sync-apply", to, from, delta.envelopes.len() as u64);
        for env in &delta.envelopes {
            let _ = self.take_message(to, env);
        }
        let now = self.now;
        if let Some(next) =
            self.nodes[to as usize].sync.answered(now, session, seq, from, delta.more)
        {
            self.send_sync(to, next);
        }
    }

    /// A sync request's deadline: sessions whose request went unanswered ask another peer.
    pub(crate) fn on_sync_retry(&mut self, n: u32, inc: u32) {
        let node = &self.nodes[n as usize];
        if node.inc != inc || !node.up() || node.sync.next_deadline().is_none_or(|t| t > self.now) {
            return;
        }
        let peers = self.sync_peers(n);
        let now = self.now;
        let (node, rng) = (&mut self.nodes[n as usize], &mut self.rng);
        for req in node.sync.expire(now, &peers, &mut |k| rng.random_range(0..k)) {
            self.send_sync(n, req);
        }
    }

    pub(crate) fn on_sync_timer(&mut self, n: u32, inc: u32) {
        let node = &self.nodes[n as usize];
        if node.inc != inc || !node.up() {
            return;
        }
        self.start_sync(n, None);
        let at = self.now + self.s.network.sync_interval_ms;
        self.push(at, Event::SyncTimer { node: n, inc });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

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
        let env = world.ledger.projects[0].manifest.clone();
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
        let across = |w: &World, n: u32| w.overlay.mesh(n)[0].iter().any(|p| side(*p) != side(n));
        assert!((0..30).all(|n| !across(&w, n)), "the partition cut every mesh link across");
        let before: Vec<u32> = (0..30).map(|i| w.net.component(i)).collect();
        w.net.heal();
        w.mesh_heartbeat(true);
        // Each side's meshes filled up during the partition: regrowing alone leaves some apart.
        assert!((0..30).any(|n| !across(&w, n)));
        w.link_across(&before);
        assert!((0..30).all(|n| across(&w, n)), "every node has a mesh peer across");
        let d_hi = 2 * w.s.network.mesh_degree as usize;
        assert!((0..30).all(|n| w.overlay.mesh(n)[0].len() <= d_hi));
    }

    #[test]
    fn a_restarted_node_syncs_with_each_mesh_peer_and_asks_again_when_unanswered() {
        use starling_protocol::engine::{SYNC_SESSIONS_MAX, SYNC_TIMEOUT_MS};
        let mut w = booted_with(30, 5);
        w.take_down(1, false);
        w.revive(1, false, false);
        let peers = w.sync_peers(1);
        let open = w.nodes[1].sync.len();
        assert!(open > 1, "{peers:?}");
        assert_eq!(open, peers.len().min(SYNC_SESSIONS_MAX));
        assert!(peers.iter().take(open).all(|p| w.nodes[1].sync.asking(*p)));
        // Nothing is answered (the queue does not run): at the deadline each session asks again.
        let sent = w.stats.sync_messages;
        w.now += SYNC_TIMEOUT_MS;
        let inc = w.nodes[1].inc;
        w.on_sync_retry(1, inc);
        assert_eq!(w.stats.sync_messages, sent + open as u64);
        assert_eq!(w.nodes[1].sync.len(), open);
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
        w.overlay.seen_max = 3;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // The per-node set this replaced, with its publishing quirk.
        let (mut set, mut fifo) = (std::collections::HashSet::new(), VecDeque::new());
        let mut sweeps = 0;
        for step in 0..9_000 {
            let id = rng.random_range(1..8u64);
            let inc = w.nodes[1].inc;
            let incs: Vec<u32> = w.nodes.iter().map(|n| n.inc).collect();
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
                let seq = w.overlay.remember_published(1, inc, id);
                let c = Copies { node: 1, inc, first_at: w.now, taken: true, seq };
                let mut m = msg(&w, vec![c]);
                Rc::get_mut(&mut m).expect("new").id = id;
                w.overlay.hold(&m, |x| incs[x as usize]);
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
                w.overlay.hold(&m, |x| incs[x as usize]);
                let dups = w.stats.dup_deliveries;
                w.on_deliver(1, inc, 0, 0, Rc::clone(&m));
                assert_eq!(w.stats.dup_deliveries == dups, fresh, "step {step}, id {id}");
            }
            for id in 1..8 {
                assert_eq!(
                    w.overlay.has_seen(1, inc, id),
                    set.contains(&id),
                    "step {step}, id {id}"
                );
            }
            sweeps += usize::from(w.overlay.sweep_if_due(|x| incs[x as usize]));
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
        let mesh = w.overlay.mesh(0)[0].clone();
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
        let (manifest, other) =
            (w.ledger.projects[0].manifest.clone(), w.ledger.projects[0].batches[0].clone());
        w.overlay.put_env_facts(&other, 1, None);
        assert_ne!(w.overlay.env_facts(&manifest).map(|f| f.0), Some(1));
    }
}
