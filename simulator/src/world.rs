//! The simulated world: nodes each owning a real [`Engine`], the event loop, and the driver that
//! turns engine outputs into network messages and work.
//!
//! This is the simulator's equivalent of the node's actor: `drive` feeds one input to one
//! engine at that node's clock, drains every output in order and re-arms the node's timer at
//! `next_wakeup`.
//!
//! The world's state is in named parts: the gossip [`Overlay`] (`gossip.rs`, which knows
//! nothing of the world), the [`Ledger`] of ground truth, the [`FaultState`] and the
//! [`Convergence`] check's state (`parts.rs`). The world's handlers are spread by concern:
//! publishing, delivery and sync in `delivery.rs`, faults and liars in `faults.rs`, boot,
//! crash and leave in `lifecycle.rs`, work in `work.rs`, invariants in `check.rs` and
//! `results.rs`.

use std::collections::BTreeMap;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling_protocol::engine::test_keypair;
use starling_protocol::{
    CancelReason, Digest, Engine, EngineConfig, Envelope, Input, ItemId, Keypair, NodeId, Output,
    PublicKey, Reject, Signed, Snapshot, SyncDelta, SyncDigest,
};

use crate::gossip::{Delivery, Msg, Overlay, Tally};
use crate::net::{Net, mix64};
use crate::parts::{Convergence, End, FaultState, Ledger, ProjectRec};
use crate::queue::EventQueue;
use crate::report::{ChurnCounts, Histogram, Trace, TraceRec};
use crate::scenario::Scenario;

/// How often nodes repair their gossip mesh (gossipsub's heartbeat).
pub(crate) const MESH_HEARTBEAT_MS: u64 = 1_000;
/// Outputs drained per `drive` before giving up (an engine bug would otherwise spin).
const OUTPUTS_PER_DRIVE_MAX: usize = 1_000_000;

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
    /// `req` is the sync session and the number of its request.
    SyncReq {
        to: u32,
        from: u32,
        req: (u32, u32),
        digest: Rc<SyncDigest>,
    },
    SyncResp {
        to: u32,
        from: u32,
        req: (u32, u32),
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
    /// The owner of `project` counts its nodes and moves the shard depth if it must.
    Recheck {
        project: u32,
    },
    /// Node `node` (in incarnation `inc`) leaves `topic`, a shard topic it bridged over a
    /// change of depth.
    LeaveTopic {
        node: u32,
        inc: u32,
        topic: u32,
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
    /// Node `node` (in incarnation `inc`) looks at crawl host `host` (`[hosts]` only).
    Fetch {
        node: u32,
        inc: u32,
        host: u32,
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
    /// This node's clock against the simulation's (negative: behind).
    pub clock_offset_ms: i64,
    /// Since when a `clock` fault has set this node's clock beyond the skew margin.
    pub clock_off_since: Option<u64>,
    /// While a `node_fault` lasts, when it ends.
    pub fault_until: Option<u64>,
    pub wake_at: Option<u64>,
    pub up_since: u64,
    /// Work running here: item index to (token, epoch).
    pub running: BTreeMap<u32, (u64, u32)>,
    pub flood_seq: u64,
    /// Its open sync sessions (the engine's policy).
    pub sync: starling_protocol::engine::SyncSessions<u32>,
    /// The results it has a copy of (its own, and those its seeding duties stored), when the
    /// scenario replicates results; kept across crashes, as a disk is.
    pub copies: std::collections::BTreeSet<Digest>,
}

impl SimNode {
    pub fn up(&self) -> bool {
        self.engine.is_some()
    }
}

/// The owners' keys of the projects `topics` (what a node subscribed to them trusts).
pub(crate) fn trusted(topics: &[u32], projects: &[ProjectRec]) -> Vec<PublicKey> {
    topics.iter().filter_map(|p| projects.get(*p as usize)).map(|p| p.key.public()).collect()
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
    /// Spot-check executions started by honest nodes.
    pub checks_started: u64,
    /// Per liar, once an honest observer first saw it marked: when, and how many false results
    /// of it that observer had accepted by then.
    pub caught: std::collections::BTreeMap<u32, (u64, u64)>,
    /// The longest an honest observer saw a seeding duty held by a node without its copy.
    pub copyless_held_ms_max: u64,
    pub faults: u64,
    pub churn: ChurnCounts,
    pub rejected: [u64; Reject::ALL.len()],
    /// Changes of depth the owners published (`[shards] recheck_ms`).
    pub reshards: u64,
}

impl Counters {
    /// Adds what one gossip fan-out cost.
    pub(crate) fn add_fanout(&mut self, t: &Tally) {
        self.messages += t.messages;
        self.bytes += t.bytes;
        self.dropped += t.dropped;
        self.dup_deliveries += t.dup_deliveries;
        self.settled_at_send += t.settled_at_send;
    }
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
    /// A host got more requests in a second than its rate plus burst, from all nodes together.
    SiteRate,
    /// A node sent a host a request inside the host's `Retry-After` window, past the margin.
    RetryAfter,
    /// More engines let their nodes fetch from a host at once than the host has lanes.
    LaneHolders,
    /// Every chunk is done but a URL of one was never fetched.
    LostUrl,
    /// An honest node whose clock a `clock` fault set beyond the skew margin started work
    /// after it had a heartbeat's life to find out.
    OffClockWork,
    /// An honest engine marked an honest node for a project (spot-check quorums).
    HonestMarked,
    /// A seeding duty was held by a node without its copy longer than storage proofs allow.
    CopylessHeld,
    /// An honest node was challenged for a copy it did not have (its grace was too short).
    HonestUnproven,
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
    pub(crate) net: Net,
    /// The gossip mesh, seen-caches and envelope facts.
    pub(crate) overlay: Overlay,
    /// Ground truth: projects, items, executions, what is done.
    pub(crate) ledger: Ledger,
    pub(crate) faults: FaultState,
    pub(crate) convergence: Convergence,
    /// What the result and same-view overlap checks have learnt (see `results.rs`).
    pub(crate) watch: crate::results::Watch,
    pub(crate) cfg: EngineConfig,
    pub(crate) stats: Counters,
    pub(crate) trace: Trace,
    pub(crate) hist: Histogram,
    pub(crate) token_seq: u64,
    pub(crate) violations: Vec<Violation>,
    pub(crate) events: u64,
    out_buf: Vec<Output>,
    /// The copies of one fan-out, reused.
    pub(crate) deliveries: Vec<Delivery>,
    /// When the curator's directory was published (curated scenarios only).
    pub(crate) directory_at: Option<u64>,
    /// Crawl hosts and what they saw (scenarios with `[hosts]` only).
    pub(crate) hosts: Option<Box<crate::hosts::Hosts>>,
    /// Seeding duties an honest observer sees held by a node without the copy (see
    /// `proofs.rs`).
    pub(crate) copyless: crate::proofs::Copyless,
}

impl World {
    /// Builds the world for `s` and `seed`: keys, projects, trust, mesh and the first events.
    pub fn new(s: &Scenario, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = Net::new(s.network.clone(), s.nodes as usize, rng.random());
        let (nodes, mut topics) = make_nodes(s, seed, &mut rng, &mut net);
        let watch = crate::results::Watch::new(nodes.iter().map(|n: &SimNode| n.id));
        let mut ledger = Ledger::build(s, seed);
        // A node of a split project is also in its own shard's topic.
        for (node, topics) in nodes.iter().zip(&mut topics) {
            let shards: Vec<u32> = topics
                .iter()
                .filter_map(|p| {
                    let depth = ledger.projects.get(*p as usize)?.depth;
                    let shard = starling_protocol::Shard::of_node(&node.id, depth);
                    (depth > 0).then(|| ledger.shard_topic(*p, shard))
                })
                .collect();
            topics.extend(shards);
            topics.sort_unstable();
        }
        let hosts = s.hosts.as_ref().map(|spec| {
            let chunks = ledger.crawl_total as u32;
            let h = crate::hosts::Hosts::new(spec, ledger.projects[0].id, s.nodes, chunks);
            // Lanes are items too: the agreement check leaves them out while they change.
            let mut lanes: Vec<ItemId> = h.lane_of.keys().copied().collect();
            lanes.sort_unstable();
            for id in lanes {
                ledger.register(id, h.project, None, starling_protocol::WorkKind::Lane, false, 0);
            }
            Box::new(h)
        });
        let mut world = World {
            s: s.clone(),
            seed,
            rng,
            now: 0,
            queue: EventQueue::default(),
            up: vec![false; nodes.len()],
            nodes,
            net,
            overlay: Overlay::new(topics, ledger.topic_count, &s.network, &s.sabotage),
            ledger,
            faults: FaultState::default(),
            convergence: Convergence::default(),
            watch,
            // Only a run with a host model fetches under lanes (its driver asks for them).
            cfg: EngineConfig {
                lanes_with_chunks: s.engine.lanes_with_chunks && s.hosts.is_some(),
                ..s.engine.clone()
            },
            stats: Counters {
                signatures_before: starling_protocol::signed::signatures_made(),
                ..Counters::default()
            },
            trace: Trace::default(),
            hist: Histogram::default(),
            token_seq: 0,
            violations: Vec::new(),
            events: 0,
            out_buf: Vec::new(),
            deliveries: Vec::new(),
            directory_at: None,
            hosts,
            copyless: Default::default(),
        };
        world.build_mesh();
        world.schedule_start();
        world
    }

    fn schedule_start(&mut self) {
        let late = self.s.nodes_spec.late_share;
        for n in 0..self.s.nodes {
            let at = self.rng.random_range(0..1_000);
            if late > 0.0 && self.rng.random_bool(late) {
                // Joins the running mesh later, as a new node does: grafted in, and synced.
                let spec = &self.s.nodes_spec;
                let at = self.rng.random_range(spec.late_from_ms..=spec.late_until_ms);
                self.push(at, Event::Revive { node: n, fresh: true });
                continue;
            }
            self.push(at, Event::Boot { node: n });
        }
        if self.s.shards.recheck_ms > 0 && self.s.shards.members > 0 {
            for p in 0..self.s.projects {
                self.push(
                    self.s.publish_at_ms + self.s.shards.recheck_ms,
                    Event::Recheck { project: p },
                );
            }
        }
        for p in 0..self.s.projects {
            self.push(self.s.publish_at_ms, Event::Publish { project: p });
        }
        for (i, f) in self.s.faults.clone().iter().enumerate() {
            if f.at_ms <= self.s.duration_ms {
                self.faults.pending += 1;
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
            if let Some(done) = self.ledger.all_done_at
                && self.now >= done + self.s.drain_ms
                && self.convergence.from.is_none()
                && self.faults.pending == 0
                && !self.net.partitioned()
            {
                // A result can be withdrawn after the item was first done (evidence showed its
                // claim never held its epoch): wait another drain while any item is open again.
                let (done, _, _) = self.final_item_counts();
                if done < self.ledger.crawl_total {
                    self.ledger.all_done_at = Some(self.now);
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
            Event::Recheck { project } => self.on_recheck(project),
            Event::LeaveTopic { node, inc, topic } => self.leave_topic(node, inc, topic),
            Event::Wake { node, inc } => self.on_wake(node, inc),
            Event::Deliver { to, inc, from, topic, msg } => {
                self.on_deliver(to, inc, from, topic, msg)
            }
            Event::SyncReq { to, from, req, digest } => self.on_sync_req(to, from, req, &digest),
            Event::SyncResp { to, from, req, inc, delta } => {
                self.on_sync_resp(to, from, req, inc, &delta)
            }
            Event::SyncTimer { node, inc } => self.on_sync_timer(node, inc),
            Event::SyncRetry { node, inc } => self.on_sync_retry(node, inc),
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
            Event::Fetch { node, inc, host } => self.on_fetch(node, inc, host),
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
        // A manifest may move a split project's depth, and the node to another shard's topic.
        let manifest = matches!(
            input,
            Input::Message(Envelope::Manifest(_)) | Input::Publish(Envelope::Manifest(_))
        );
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
        if manifest && result.is_ok() && self.s.shards.members > 0 {
            self.follow_shards(n);
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
        if self.hosts.is_some() && self.crawl_output(n, &o) {
            return;
        }
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
            Output::ProofDue { item, epoch, slot, result, .. } => {
                self.answer_proof(n, item, epoch, slot, result)
            }
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
                if let Some(&idx) = self.ledger.item_index.get(&item) {
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

/// The nodes of `s`, with their keys drawn from `seed`, and the topics each subscribes to
/// (its own project and random others, sorted). Draws from `rng` (slow nodes, topics, clock
/// skew) in node order, and slows the slow nodes' inbound links in `net`.
fn make_nodes(
    s: &Scenario,
    seed: u64,
    rng: &mut ChaCha8Rng,
    net: &mut Net,
) -> (Vec<SimNode>, Vec<Vec<u32>>) {
    let byz_from = s.nodes - s.byzantine.nodes;
    let skew = s.nodes_spec.skew_max_ms;
    let mut nodes = Vec::with_capacity(s.nodes as usize);
    let mut all_topics = Vec::with_capacity(s.nodes as usize);
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
        all_topics.push(topics);
        nodes.push(SimNode {
            key,
            id,
            engine: None,
            saved: None,
            inc: 0,
            byz: i >= byz_from,
            slow,
            clock_offset_ms: if skew > 0 { rng.random_range(0..=2 * skew) as i64 } else { 0 },
            clock_off_since: None,
            fault_until: None,
            wake_at: None,
            up_since: 0,
            running: BTreeMap::new(),
            flood_seq: 0,
            sync: Default::default(),
            copies: Default::default(),
        });
    }
    (nodes, all_topics)
}

/// The first 8 bytes of an id, for traces.
pub(crate) fn id64(id: &ItemId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// Bytes of every simulated result: three BLAKE3 chunks, the last one short, so storage
/// proofs go through a real hash tree.
pub(crate) const RESULT_BYTES: usize = 3_000;

/// The bytes of the result an execution of `item` produces: the honest one, or a liar's.
pub(crate) fn result_blob(item: &ItemId, honest: bool) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(if honest { b"starling-sim/result" } else { b"starling-sim/bogus!" });
    h.update(item.as_bytes());
    let mut out = vec![0; RESULT_BYTES];
    h.finalize_xof().fill(&mut out);
    out
}

/// The result every honest execution of `item` produces.
pub(crate) fn honest_result(item: &ItemId) -> Digest {
    Digest::of(&result_blob(item, true))
}

/// A liar's false result for `item`: never the honest one.
pub(crate) fn bogus_result(item: &ItemId) -> Digest {
    Digest::of(&result_blob(item, false))
}

/// URL `j` of chunk `i` of project `p` when chunks have several pages (`[verify]`): a share
/// `changing_share` of them, chosen by a hash, live under `/changing/` and get a new version
/// every `change_every_ms`.
pub(crate) fn page_url(p: u32, i: u32, j: u32, v: &crate::scenario::VerifySpec) -> String {
    let h = crate::net::mix64((u64::from(p) << 42) ^ (u64::from(i) << 12) ^ u64::from(j));
    let changing = (h % 1_000_000) as f64 / 1_000_000.0 < v.changing_share;
    let dir = if changing { "changing/" } else { "" };
    format!("https://p{p}.example/{dir}{i}/{j}")
}

/// The parts an execution of a chunk of `urls` reports at `now`: each page's digest, the
/// version of a changing page being the one live then; `liar` pages are all false.
pub(crate) fn page_parts(
    target: &ItemId,
    urls: &[String],
    now: u64,
    change_every_ms: u64,
    liar: bool,
) -> Vec<starling_protocol::message::PartOutcome> {
    urls.iter()
        .enumerate()
        .map(|(j, u)| {
            let version = if u.contains("/changing/") { now / change_every_ms.max(1) } else { 0 };
            let mut bytes = target.as_bytes().to_vec();
            bytes.extend_from_slice(&(j as u64).to_le_bytes());
            bytes.extend_from_slice(&version.to_le_bytes());
            if liar {
                bytes.extend_from_slice(b"bogus");
            }
            starling_protocol::message::PartOutcome::archived(200, Digest::of(&bytes))
        })
        .collect()
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
#[cfg(test)]
mod size {
    /// The queue holds millions of events in the large scenarios: a field that widens every
    /// event (a sync request's session number was a u64 for a while) shows in peak memory.
    #[test]
    fn an_event_stays_32_bytes() {
        assert_eq!(std::mem::size_of::<super::Event>(), 32);
    }
}
