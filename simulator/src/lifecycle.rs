//! Node lifecycle: boot, crash (snapshot kept), graceful leave (`Input::Shutdown`), restart
//! from the snapshot or a fresh rejoin, and the owners publishing their projects through a
//! gateway node.

use rand::Rng;
use starling_protocol::{Engine, Input};

use crate::net::mix64;
use crate::world::{Event, World};

/// How long after a curator's directory the projects' manifests are published.
const DIRECTORY_LEAD_MS: u64 = 2_000;

impl World {
    /// An honest up node subscribed to `topic`, to publish through.
    fn gateway(&self, topic: u32) -> Option<u32> {
        self.overlay.subscribers(topic).iter().copied().find(|n| {
            let node = &self.nodes[*n as usize];
            node.up() && !node.byz
        })
    }

    pub(crate) fn on_publish(&mut self, p: u32) {
        if self.ledger.projects.get(p as usize).is_none() {
            return;
        }
        let gateway = self.gateway(p);
        let Some(g) = gateway else {
            // Nobody to publish through yet; try again shortly.
            self.push(self.now + 1_000, Event::Publish { project: p });
            return;
        };
        // A curator's directory goes out first, once, and the manifests a moment later, so
        // they reach nodes that already follow a listing that vouches for them.
        if let Some((_, dir)) = &self.ledger.curator {
            let ready_at = match self.directory_at {
                Some(at) => at + DIRECTORY_LEAD_MS,
                None => {
                    let dir = dir.clone();
                    self.directory_at = Some(self.now);
                    self.record("publish-directory", g, u32::MAX, 0);
                    self.drive(g, Input::Publish(dir));
                    self.now + DIRECTORY_LEAD_MS
                }
            };
            if self.now < ready_at {
                self.push(ready_at, Event::Publish { project: p });
                return;
            }
        }
        let Some(proj) = self.ledger.projects.get(p as usize) else { return };
        let manifest = proj.manifest.clone();
        // Each batch through a node of its topic (a split project's shard), which is given
        // the manifest first so that it can take the batch in and pass it on.
        let batches: Vec<(u32, starling_protocol::Envelope)> =
            proj.batch_topics.iter().copied().zip(proj.batches.iter().cloned()).collect();
        self.record("publish", g, u32::MAX, u64::from(p));
        self.drive(g, Input::Publish(manifest.clone()));
        let mut unsent = false;
        for (topic, batch) in batches {
            let via = if topic == p { Some(g) } else { self.gateway(topic) };
            let Some(via) = via else {
                unsent = true;
                continue;
            };
            if via != g {
                self.drive(via, Input::Publish(manifest.clone()));
            }
            self.drive(via, Input::Publish(batch));
        }
        if unsent {
            // A shard with no member up: the owner publishes again shortly, as it does when
            // the project has none (what was sent already is refused as a duplicate).
            self.push(self.now + 1_000, Event::Publish { project: p });
        }
        self.convergence.wait_from(self.now);
    }

    /// Brings a node up: fresh (boot, rejoin) or from its crash snapshot.
    pub(crate) fn revive(&mut self, n: u32, fresh: bool, boot: bool) {
        let now = self.now;
        let cfg = self.cfg.clone();
        // A node of a curated scenario trusts no owner: it follows the curator.
        let curator = self.ledger.curator.as_ref().map(|(k, _)| k.public());
        let trusted = match curator {
            Some(_) => Vec::new(),
            None => crate::world::trusted(self.overlay.topics(n), &self.ledger.projects),
        };
        let node = &mut self.nodes[n as usize];
        if node.up() {
            return;
        }
        let seed = mix64(self.seed ^ (u64::from(n) << 20) ^ u64::from(node.inc));
        let t = crate::world::node_clock(now, node.clock_offset_ms);
        let engine = match node.saved.take() {
            Some(snap) if !fresh => Engine::restore(cfg, node.key.clone(), snap, seed, t),
            _ => Engine::new(cfg, node.key.clone(), trusted, seed),
        };
        node.engine = Some(engine);
        self.up[n as usize] = true;
        node.up_since = now;
        node.wake_at = None;
        let inc = node.inc;
        let byz = node.byz;
        self.overlay.clear_seen(n);
        self.record(if fresh { "join" } else { "restart" }, n, u32::MAX, 0);
        // Back from a snapshot: in the shards its engine knows, which may have moved.
        if !fresh && self.s.shards.members > 0 {
            self.follow_shards(n);
        }
        if !boot {
            if fresh {
                self.stats.churn.joins += 1;
            } else {
                self.stats.churn.restarts += 1;
            }
            self.graft(n);
            self.fault_healed();
        }
        if let Some(curator) = curator {
            self.drive(n, Input::Follow(curator));
        }
        self.drive(n, Input::Tick);
        // A node that comes back while its own fault lasts finds it again at once.
        if self.in_fault(n) {
            self.tell_fault(n, true);
        }
        if !boot {
            // As the node does on every new connection: a session with each peer it links to
            // (at most the policy's session count).
            for p in self.sync_peers(n) {
                self.start_sync(n, Some(p));
            }
        }
        if self.s.network.sync_interval_ms > 0 {
            let at = now + self.rng.random_range(1..=self.s.network.sync_interval_ms);
            self.push(at, Event::SyncTimer { node: n, inc });
        }
        if byz {
            let at = now + self.rng.random_range(1..=self.s.byzantine.action_interval_ms.max(1));
            self.push(at, Event::Liar { node: n, inc });
            if self.s.byzantine.flood_per_s > 0 {
                self.push(now + 1, Event::Flood { node: n, inc });
            }
        }
    }

    /// Takes a node down; with `graceful`, it first gives back its work (Input::Shutdown).
    pub(crate) fn take_down(&mut self, n: u32, graceful: bool) {
        if !self.nodes[n as usize].up() {
            return;
        }
        if graceful {
            self.drive(n, Input::Shutdown);
        }
        let node = &mut self.nodes[n as usize];
        let engine = node.engine.take();
        self.up[n as usize] = false;
        node.saved = if graceful { None } else { engine.map(|e| e.snapshot()) };
        node.inc += 1;
        node.sync.clear();
        node.wake_at = None;
        let running: Vec<u32> = node.running.keys().copied().collect();
        self.crawl_down(n, !graceful);
        for idx in running {
            self.stop_work(n, idx, crate::parts::End::Churn);
        }
        self.record(if graceful { "leave" } else { "crash" }, n, u32::MAX, 0);
        if graceful {
            self.stats.churn.leaves += 1;
        } else {
            self.stats.churn.crashes += 1;
        }
        self.faults.had_fault = true;
        self.prune(n);
    }
}
