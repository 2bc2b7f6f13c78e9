//! The simulated world: nodes each owning a real [`Engine`], the event loop, and the driver that
//! turns engine outputs into network messages and work.
//!
//! This is the simulator's equivalent of the node's actor: `drive` feeds one input to one
//! engine at that node's clock, drains every output in order and re-arms the node's timer at
//! `next_wakeup`. Gossip and sync live in `gossip.rs`, faults and liars in `faults.rs`,
//! invariants in `check.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling_protocol::engine::test_keypair;
use starling_protocol::{
    CancelReason, Digest, Engine, EngineConfig, Envelope, Input, ItemBatch, ItemId, Keypair,
    NodeId, Output, ProjectId, ProjectManifest, PublicKey, Reject, Signed, Snapshot, SyncDelta,
    SyncDigest, WorkItem,
};

use crate::net::{Net, mix64};
use crate::queue::EventQueue;
use crate::report::{ChurnCounts, Histogram, Trace, TraceRec};
use crate::scenario::Scenario;

/// A fast hasher for keys that are already uniformly random (message ids, item and project
/// ids): folds 8-byte words with a multiply. Deterministic (no per-process seed), and used only
/// for look-ups, never for iteration order.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Build-hasher for [`IdHasher`].
pub(crate) type IdBuild = BuildHasherDefault<IdHasher>;

/// Duplicate completions described in the report.
pub(crate) const DUP_EXAMPLES_MAX: usize = 5;
/// How often nodes repair their gossip mesh (gossipsub's heartbeat).
pub(crate) const MESH_HEARTBEAT_MS: u64 = 1_000;
/// Sync rounds one exchange may take while the peer says there is more.
pub(crate) const SYNC_ROUNDS_MAX: u8 = 8;
/// A sync request unanswered this long has failed (request-response's timeout), and is tried
/// again with another peer.
pub(crate) const SYNC_TIMEOUT_MS: u64 = 2_000;
/// Tries of one sync exchange before waiting for the next periodic one.
pub(crate) const SYNC_TRIES_MAX: u8 = 3;
/// Outputs drained per `drive` before giving up (an engine bug would otherwise spin).
const OUTPUTS_PER_DRIVE_MAX: usize = 1_000_000;

/// One gossip message in flight, shared by every copy.
#[derive(Debug)]
pub(crate) struct Msg {
    pub env: Envelope,
    /// First 8 bytes of the content id.
    pub id: u64,
    pub origin_ms: u64,
    pub bytes: u32,
    /// Every node (in one incarnation) that published this message or was sent a copy of it.
    /// With [`Copies::seq`] it is also where the nodes' seen-caches are kept: see
    /// [`crate::gossip::SeenIds`] and `World::forward`.
    pub copies: std::cell::RefCell<Vec<Copies>>,
    /// Whether another message was published with the same id (the same bytes), so a node may
    /// have the id in its seen-cache without having taken in this message.
    pub shared: std::cell::Cell<bool>,
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
    /// The node's [`SimNode::seen_count`] when taking this message in (or publishing it) added
    /// the id to its seen-cache; 0 when that did not add it (it was there already).
    pub seq: u32,
}

/// Something scheduled to happen.
#[derive(Debug)]
pub(crate) enum Event {
    Boot {
        node: u32,
    },
    Wake {
        node: u32,
        inc: u32,
    },
    /// A gossip copy for node `to` in incarnation `inc`: a node that crashed or left since
    /// lost its connections, and the copy with them.
    Deliver {
        to: u32,
        inc: u32,
        from: u32,
        topic: u32,
        msg: Rc<Msg>,
    },
    SyncReq {
        to: u32,
        from: u32,
        round: u8,
        digest: Rc<SyncDigest>,
    },
    SyncResp {
        to: u32,
        from: u32,
        round: u8,
        inc: u32,
        delta: Rc<SyncDelta>,
    },
    SyncTimer {
        node: u32,
        inc: u32,
    },
    SyncRetry {
        node: u32,
        inc: u32,
        token: u64,
        tries: u8,
    },
    WorkDone {
        node: u32,
        item: u32,
        token: u64,
        epoch: u32,
    },
    Publish {
        project: u32,
    },
    Fault {
        index: u32,
    },
    Churn,
    Revive {
        node: u32,
        fresh: bool,
    },
    Liar {
        node: u32,
        inc: u32,
    },
    Flood {
        node: u32,
        inc: u32,
    },
    Check,
    Heartbeat,
    /// A node's own fault (`node_fault`) clears.
    FaultEnd {
        node: u32,
    },
}

/// One simulated node.
#[derive(Debug)]
pub(crate) struct SimNode {
    pub key: Keypair,
    pub id: NodeId,
    /// `None` while the node is down.
    pub engine: Option<Engine>,
    /// Snapshot taken at a crash, restored at restart.
    pub saved: Option<Snapshot>,
    /// Bumped at every crash or leave, so stale timers are ignored.
    pub inc: u32,
    pub byz: bool,
    pub slow: bool,
    /// Project indices this node trusts and subscribes to.
    pub topics: Vec<u32>,
    /// Mesh peers per topic, aligned with `topics`.
    pub mesh: Vec<Vec<u32>>,
    /// This node's clock against the simulation's (negative: behind).
    pub clock_offset_ms: i64,
    /// While a `node_fault` lasts, when it ends.
    pub fault_until: Option<u64>,
    pub wake_at: Option<u64>,
    pub up_since: u64,
    /// Ids added to this node's seen-cache in this incarnation. The cache holds the last
    /// `seen_max` ids added (first in, first out): the id a message added at [`Copies::seq`]
    /// `s` is in it while `s > max(seen_count - seen_max, seen_floor)`.
    pub seen_count: u32,
    /// Ids at or below this count have left the cache early (see `World::remember`).
    pub seen_floor: u32,
    /// Work running here: item index to (token, epoch).
    pub running: BTreeMap<u32, (u64, u32)>,
    pub flood_seq: u64,
    /// The sync exchange waiting for its first answer, by token.
    pub sync_wait: Option<u64>,
}

impl SimNode {
    pub fn up(&self) -> bool {
        self.engine.is_some()
    }

    pub fn trusted(&self, projects: &[ProjectRec]) -> Vec<PublicKey> {
        self.topics
            .iter()
            .filter_map(|p| projects.get(*p as usize))
            .map(|p| p.key.public())
            .collect()
    }
}

/// One project and its owner.
#[derive(Debug)]
pub(crate) struct ProjectRec {
    /// The project's id (its manifest's), kept so hot paths compare ids without hashing.
    pub id: ProjectId,
    pub key: Keypair,
    pub manifest: Envelope,
    pub batches: Vec<Envelope>,
    pub subscribers: Vec<u32>,
}

/// What the driver knows about one item.
#[derive(Debug, Clone)]
pub(crate) struct ItemRec {
    pub id: ItemId,
    pub project: u32,
    pub crawl: bool,
    pub starts: u32,
    pub completions: u32,
    /// Honest nodes executing it now, with when they started.
    pub executing: Vec<(u32, u64)>,
    pub done: bool,
    /// Last time any honest node applied a state change for it.
    pub touched_at: u64,
    /// How the last honest execution of it ended.
    pub last_end: End,
}

/// How an execution ended, to tell a rerun the protocol could not avoid from a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// No execution has ended yet.
    None,
    /// Its node crashed or left (graceful leave gives the work back).
    Churn,
    /// The engine cancelled it: another node won the claim or finished first.
    Cancelled,
    /// It ran to the end and reported a result.
    Completed,
    /// It ran to the end and reported a failure.
    Failed,
}

/// Counters for the report.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub messages: u64,
    pub bytes: u64,
    pub sync_messages: u64,
    pub sync_bytes: u64,
    pub dropped: u64,
    pub dup_deliveries: u64,
    /// Copies whose arrival was settled when they were sent (a duplicate, or one arriving at a
    /// deaf node), so they never became queue events.
    pub settled_at_send: u64,
    /// Inputs handed to engines.
    pub engine_inputs: u64,
    /// Signatures made on this thread before the world was built (see `signatures`).
    pub signatures_before: u64,
    /// Crawl executions by honest nodes that reran an item whose last execution was cut short
    /// by its node crashing or leaving, with nobody else working on it and no result yet.
    pub reruns: u64,
    pub faults: u64,
    pub churn: ChurnCounts,
    pub rejected: [u64; Reject::ALL.len()],
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// The run's seed.
    pub seed: u64,
    /// When it was detected.
    pub at_ms: u64,
    /// What exactly.
    pub detail: String,
    /// The events just before it.
    pub trace: Vec<String>,
}

/// The invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ViolationKind {
    /// Two honest nodes of one settled component both work on an item.
    Safety,
    /// An item not done at the end while an honest node is up.
    LostItem,
    /// Honest nodes still disagree too long after the last fault healed.
    Convergence,
    /// The simulator itself could not go on (queue full).
    Simulator,
    /// An honest node accepted a liar's result for an epoch the liar never held.
    ForgedResult,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:?} violation at t={}ms (seed {}): {}",
            self.kind, self.at_ms, self.seed, self.detail
        )?;
        writeln!(f, "trace before it (oldest first):")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(f, "reproduce with: starling sim --scenario <same> --seed {}", self.seed)
    }
}

/// Where every engine clock starts: an hour in, so a clock set behind the simulation's
/// (a `clock` fault with a negative offset) still reads a time.
pub(crate) const CLOCK_BASE_MS: u64 = 3_600_000;

/// Node clock at simulated time `now` for a clock `offset_ms` off.
pub(crate) fn node_clock(now: u64, offset_ms: i64) -> u64 {
    (now + CLOCK_BASE_MS).saturating_add_signed(offset_ms)
}

/// Simulated time of node clock reading `t` for a clock `offset_ms` off.
pub(crate) fn sim_time(t: u64, offset_ms: i64) -> u64 {
    t.saturating_add_signed(offset_ms.saturating_neg()).saturating_sub(CLOCK_BASE_MS)
}

/// The whole simulated world.
#[derive(Debug)]
pub struct World {
    pub(crate) s: Scenario,
    pub(crate) seed: u64,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: u64,
    pub(crate) queue: EventQueue<Event>,
    pub(crate) nodes: Vec<SimNode>,
    /// Whether each node is up (its engine runs), kept dense for the gossip fan-out.
    pub(crate) up: Vec<bool>,
    pub(crate) projects: Vec<ProjectRec>,
    pub(crate) project_index: HashMap<ProjectId, u32, IdBuild>,
    pub(crate) items: Vec<ItemRec>,
    pub(crate) item_index: HashMap<ItemId, u32, IdBuild>,
    pub(crate) contended: BTreeSet<u32>,
    pub(crate) net: Net,
    pub(crate) cfg: EngineConfig,
    pub(crate) stats: Counters,
    pub(crate) trace: Trace,
    pub(crate) hist: Histogram,
    pub(crate) token_seq: u64,
    /// While a heal regrows the mesh: the pairs of nodes linked anew, which sync from each
    /// other as nodes do when a connection is established.
    pub(crate) new_links: Option<Vec<(u32, u32)>>,
    pub(crate) crawl_total: u64,
    /// While a `site_down` lasts: the share of items on the site, and when it ends.
    pub(crate) site_down: Option<(f64, u64)>,
    pub(crate) done_count: u64,
    pub(crate) all_done_at: Option<u64>,
    /// Last partition change (partition, isolate, heal), for settledness.
    pub(crate) topo_changed_at: u64,
    /// Waiting for all honest nodes to agree since this time.
    pub(crate) converge_from: Option<u64>,
    pub(crate) convergence_ms: Option<u64>,
    /// The order the convergence check reads nodes in: a permutation of the node indices,
    /// those of recent disagreements first. Only saves work; never changes an outcome.
    pub(crate) check_order: Vec<u32>,
    pub(crate) had_fault: bool,
    pub(crate) violations: Vec<Violation>,
    pub(crate) events: u64,
    /// The first few items completed more than once, for the report.
    pub(crate) dup_examples: Vec<String>,
    /// What the result and same-view overlap checks have learnt (see `results.rs`).
    pub(crate) watch: crate::results::Watch,
    /// Scheduled faults that have not happened yet: a run does not end before they have.
    pub(crate) faults_pending: u32,
    /// `final_item_counts` as of the end of the run, once known.
    pub(crate) end_counts: Option<(u64, u64, u64)>,
    /// Sizes and projects of envelopes sent in sync responses.
    pub(crate) env_cache: crate::gossip::EnvCache,
    /// Messages by id, for the seen-caches.
    pub(crate) seen_ids: crate::gossip::SeenIds,
    out_buf: Vec<Output>,
}

impl World {
    /// Builds the world for `s` and `seed`: keys, projects, trust, mesh and the first events.
    pub fn new(s: &Scenario, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = s.nodes as usize;
        let mut net = Net::new(s.network.clone(), n, rng.random());
        let byz_from = s.nodes - s.byzantine.nodes;
        let skew = s.nodes_spec.skew_max_ms;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..s.nodes {
            let key = test_keypair(mix64(seed ^ 0x6e6f_6465) ^ u64::from(i));
            let id = key.node_id();
            let slow = rng.random_bool(s.nodes_spec.slow_share.clamp(0.0, 1.0));
            if slow {
                net.set_inbound_delay(i as usize, s.nodes_spec.slow_delay_ms);
            }
            let mut topics = vec![i % s.projects];
            while topics.len() < s.projects_per_node as usize {
                let p = rng.random_range(0..s.projects);
                if !topics.contains(&p) {
                    topics.push(p);
                }
            }
            topics.sort_unstable();
            nodes.push(SimNode {
                key,
                id,
                engine: None,
                saved: None,
                inc: 0,
                byz: i >= byz_from,
                slow,
                mesh: vec![Vec::new(); topics.len()],
                topics,
                clock_offset_ms: if skew > 0 { rng.random_range(0..=2 * skew) as i64 } else { 0 },
                fault_until: None,
                wake_at: None,
                up_since: 0,
                seen_count: 0,
                seen_floor: 0,
                running: BTreeMap::new(),
                flood_seq: 0,
                sync_wait: None,
            });
        }
        let watch = crate::results::Watch::new(nodes.iter().map(|n: &SimNode| n.id));
        let mut world = World {
            s: s.clone(),
            seed,
            rng,
            now: 0,
            queue: EventQueue::default(),
            up: vec![false; nodes.len()],
            nodes,
            projects: Vec::new(),
            project_index: HashMap::default(),
            items: Vec::new(),
            item_index: HashMap::default(),
            contended: BTreeSet::new(),
            net,
            cfg: s.engine.clone(),
            stats: Counters {
                signatures_before: starling_protocol::signed::signatures_made(),
                ..Counters::default()
            },
            trace: Trace::default(),
            hist: Histogram::default(),
            token_seq: 0,
            new_links: None,
            crawl_total: 0,
            done_count: 0,
            all_done_at: None,
            topo_changed_at: 0,
            converge_from: None,
            convergence_ms: None,
            check_order: Vec::new(),
            had_fault: false,
            site_down: None,
            violations: Vec::new(),
            events: 0,
            dup_examples: Vec::new(),
            watch,
            faults_pending: 0,
            end_counts: None,
            env_cache: Default::default(),
            seen_ids: Default::default(),
            out_buf: Vec::new(),
        };
        world.build_projects();
        world.build_mesh();
        world.schedule_start();
        world
    }

    fn build_projects(&mut self) {
        let s = &self.s;
        let per = s.items / s.projects;
        let extra = s.items % s.projects;
        for p in 0..s.projects {
            let key = test_keypair(mix64(self.seed ^ 0x7072_6f6a) ^ u64::from(p));
            let m = ProjectManifest {
                name: format!("sim-{p}"),
                description: String::new(),
                version: 1,
                owner: key.public(),
                rate: Default::default(),
                lease_ms: s.lease_ms,
                replication: s.replication,
                scope: Vec::new(),
                user_agent: "starling-sim".into(),
                robots: Default::default(),
                caps: Default::default(),
            };
            let pid = m.id();
            let count = per + u32::from(p < extra);
            let mut batches = Vec::new();
            let mut works = Vec::with_capacity(s.batch_items as usize);
            for i in 0..count {
                let work = WorkItem::CrawlChunk { urls: vec![format!("https://p{p}.example/{i}")] };
                let id = work.id(&pid);
                self.item_index.insert(id, self.items.len() as u32);
                self.items.push(ItemRec {
                    id,
                    project: p,
                    crawl: true,
                    starts: 0,
                    completions: 0,
                    executing: Vec::new(),
                    done: false,
                    touched_at: 0,
                    last_end: End::None,
                });
                works.push(work);
                if works.len() == s.batch_items as usize || i + 1 == count {
                    let b = ItemBatch {
                        project: pid,
                        seq: batches.len() as u64,
                        items: std::mem::take(&mut works),
                    };
                    batches.push(Envelope::Batch(Signed::sign(&key, &b)));
                }
            }
            self.crawl_total += u64::from(count);
            self.project_index.insert(pid, p);
            let subscribers =
                (0..s.nodes).filter(|n| self.nodes[*n as usize].topics.contains(&p)).collect();
            self.projects.push(ProjectRec {
                id: pid,
                manifest: Envelope::Manifest(Signed::sign(&key, &m)),
                key,
                batches,
                subscribers,
            });
        }
    }

    fn schedule_start(&mut self) {
        for n in 0..self.s.nodes {
            let at = self.rng.random_range(0..1_000);
            self.push(at, Event::Boot { node: n });
        }
        for p in 0..self.s.projects {
            self.push(self.s.publish_at_ms, Event::Publish { project: p });
        }
        for (i, f) in self.s.faults.clone().iter().enumerate() {
            if f.at_ms <= self.s.duration_ms {
                self.faults_pending += 1;
            }
            self.push(f.at_ms, Event::Fault { index: i as u32 });
        }
        if self.s.churn.per_min > 0.0 {
            let at = self.s.churn.from_ms + self.churn_gap();
            self.push(at, Event::Churn);
        }
        self.push(self.s.check.interval_ms, Event::Check);
        self.push(MESH_HEARTBEAT_MS, Event::Heartbeat);
    }

    /// Schedules an event; a full queue is recorded as a violation of the simulator itself.
    pub(crate) fn push(&mut self, at: u64, ev: Event) {
        if self.queue.push(at.max(self.now), ev).is_err() {
            self.violate(ViolationKind::Simulator, "event queue full".into());
        }
    }

    pub(crate) fn violate(&mut self, kind: ViolationKind, detail: String) {
        self.trace.mix(0xdead_0000 | kind as u64);
        self.violations.push(Violation {
            kind,
            seed: self.seed,
            at_ms: self.now,
            detail,
            trace: self.trace.tail(),
        });
    }

    pub(crate) fn record(&mut self, what: &'static str, node: u32, peer: u32, extra: u64) {
        self.trace.record(TraceRec { t: self.now, what, node, peer, extra });
    }

    /// Runs until the scenario ends, every item is done and drained, or an invariant breaks.
    /// `progress` is called now and then with (simulated now, end).
    pub fn run(&mut self, mut progress: impl FnMut(u64, u64)) {
        let end = self.s.duration_ms;
        let mut next_progress = 0u64;
        while let Some((t, ev)) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            self.events += 1;
            self.dispatch(ev);
            if !self.violations.is_empty() {
                return;
            }
            if self.events >= next_progress {
                progress(self.now, end);
                next_progress = self.events + 100_000;
            }
            // Done, drained, and past every scheduled fault and the convergence after it.
            if let Some(done) = self.all_done_at
                && self.now >= done + self.s.drain_ms
                && self.converge_from.is_none()
                && self.faults_pending == 0
                && !self.net.partitioned()
            {
                // A result can be withdrawn after the item was first done (evidence showed its
                // claim never held its epoch): wait another drain while any item is open again.
                let (done, _, _) = self.final_item_counts();
                if done < self.crawl_total {
                    self.all_done_at = Some(self.now);
                    continue;
                }
                break;
            }
        }
        self.final_checks();
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Boot { node } => self.revive(node, true, true),
            Event::Wake { node, inc } => self.on_wake(node, inc),
            Event::Deliver { to, inc, from, topic, msg } => {
                self.on_deliver(to, inc, from, topic, msg)
            }
            Event::SyncReq { to, from, round, digest } => {
                self.on_sync_req(to, from, round, &digest)
            }
            Event::SyncResp { to, from, round, inc, delta } => {
                self.on_sync_resp(to, from, round, inc, &delta)
            }
            Event::SyncTimer { node, inc } => self.on_sync_timer(node, inc),
            Event::SyncRetry { node, inc, token, tries } => {
                self.on_sync_retry(node, inc, token, tries)
            }
            Event::WorkDone { node, item, token, epoch } => {
                self.on_work_done(node, item, token, epoch)
            }
            Event::Publish { project } => self.on_publish(project),
            Event::Fault { index } => self.on_fault(index),
            Event::Churn => self.on_churn(),
            Event::Revive { node, fresh } => self.revive(node, fresh, false),
            Event::Liar { node, inc } => self.on_liar(node, inc),
            Event::Flood { node, inc } => self.on_flood(node, inc),
            Event::FaultEnd { node } => self.on_fault_end(node),
            Event::Check => self.on_check(),
            Event::Heartbeat => {
                self.mesh_heartbeat(false);
                self.push(self.now + MESH_HEARTBEAT_MS, Event::Heartbeat);
            }
        }
    }

    /// Feeds one input to node `n`'s engine and carries out every output. `None` if it is down.
    pub(crate) fn drive(&mut self, n: u32, input: Input) -> Option<Result<(), Reject>> {
        let node = self.nodes.get_mut(n as usize)?;
        let engine = node.engine.as_mut()?;
        self.stats.engine_inputs += 1;
        let result = engine.handle(input, node_clock(self.now, node.clock_offset_ms));
        let mut outs = std::mem::take(&mut self.out_buf);
        while let Some(o) = engine.poll_output() {
            outs.push(o);
            if outs.len() >= OUTPUTS_PER_DRIVE_MAX {
                break;
            }
        }
        let wake = engine.next_wakeup();
        let offset = node.clock_offset_ms;
        for o in outs.drain(..) {
            self.on_output(n, o);
        }
        self.out_buf = outs;
        if let Some(w) = wake {
            self.arm_wake(n, sim_time(w, offset));
        }
        Some(result)
    }

    fn arm_wake(&mut self, n: u32, at: u64) {
        let at = at.max(self.now);
        let Some(node) = self.nodes.get_mut(n as usize) else { return };
        if node.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        node.wake_at = Some(at);
        let inc = node.inc;
        self.push(at, Event::Wake { node: n, inc });
    }

    fn on_wake(&mut self, n: u32, inc: u32) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(n as usize) else { return };
        if node.inc != inc || node.wake_at != Some(now) || !node.up() {
            return;
        }
        node.wake_at = None;
        self.record("tick", n, u32::MAX, 0);
        self.drive(n, Input::Tick);
        // A wakeup that is still due now would spin; look again a millisecond later.
        if let Some(node) = self.nodes.get_mut(n as usize)
            && node.wake_at == Some(now)
        {
            node.wake_at = None;
            self.arm_wake(n, now + 1);
        }
    }

    fn on_output(&mut self, n: u32, o: Output) {
        match o {
            Output::Publish(env) => {
                let byz = self.nodes[n as usize].byz;
                if byz
                    && self.s.byzantine.never_work
                    && let Some((_, true)) = env_item(&env)
                {
                    return; // claim-and-never-work liars let their leases run out
                }
                if !byz
                    && let Envelope::Receipt(_) = &env
                    && let Some((item, _)) = env_item(&env)
                {
                    self.mark_done(item);
                }
                self.publish(n, env);
            }
            Output::Persist(Envelope::Receipt(r)) => self.receipt_persisted(n, &r),
            Output::StartWork { item, epoch, project, work } => {
                self.start_work(n, item, epoch, project, &work)
            }
            Output::CancelWork { item, reason, .. } => {
                let honest = !self.nodes[n as usize].byz;
                // A liar's engine may take a liar's false result; only an honest node's
                // word that the item is finished counts.
                if honest && reason == CancelReason::Finished {
                    self.mark_done(item);
                }
                if honest && self.s.sabotage.ignore_cancel && reason == CancelReason::Lost {
                    return;
                }
                if let Some(&idx) = self.item_index.get(&item) {
                    let end = match reason {
                        CancelReason::Shutdown => End::Churn,
                        _ => End::Cancelled,
                    };
                    self.stop_work(n, idx, end);
                }
            }
            _ => {}
        }
    }
}

/// The first 8 bytes of an id, for traces.
pub(crate) fn id64(id: &ItemId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The result every honest execution of `item` produces.
pub(crate) fn honest_result(item: &ItemId) -> Digest {
    Digest::of(item.as_bytes())
}

/// The item an envelope is about and whether it is a renewal, read without verifying (but from
/// the envelope's shared checked body when it has one, which costs no decoding and, borrowed,
/// no reference counting).
pub(crate) fn env_item(env: &Envelope) -> Option<(ItemId, bool)> {
    use starling_protocol::message::{Claim, Failure, Receipt, Release};
    use starling_protocol::wire::decode;
    let claim = |s: &Signed<Claim>| match s.verified_ref() {
        Ok(c) => Some((c.item, c.is_renewal())),
        Err(_) => decode::<Claim>(s.body(), 4_096).ok().map(|c| (c.item, c.is_renewal())),
    };
    let inner = |s: &Signed<Claim>| claim(s).map(|(item, _)| (item, false));
    match env {
        Envelope::Claim(s) => claim(s),
        Envelope::Release(s) => match s.verified_ref() {
            Ok(r) => Some((r.item, false)),
            Err(_) => decode::<Release>(s.body(), 4_096).ok().map(|r| (r.item, false)),
        },
        Envelope::Receipt(s) => match s.verified_ref() {
            Ok(r) => inner(&r.claim),
            Err(_) => inner(&decode::<Receipt>(s.body(), 8_192).ok()?.claim),
        },
        Envelope::Failure(s) => match s.verified_ref() {
            Ok(f) => inner(&f.claim),
            Err(_) => inner(&decode::<Failure>(s.body(), 8_192).ok()?.claim),
        },
        _ => None,
    }
}
