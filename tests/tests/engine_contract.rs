//! The claim engine's sans-IO contract, as a driver (the node's actor, the simulator's world)
//! relies on it: `handle` takes one input at a time the driver chooses, `poll_output` hands
//! out what the engine wants done in order until it has nothing, and `next_wakeup` says when
//! to tick it next. Same inputs at the same times give the same outputs; two engines that
//! hand each other their published envelopes, and run the work they are told to, end up
//! agreeing on every item.

use std::collections::VecDeque;

use starling_protocol::engine::test_keypair;
use starling_protocol::{
    Digest, Engine, EngineConfig, Envelope, Input, ItemBatch, ItemId, ItemState, Keypair, Output,
    ProjectManifest, Signed, WorkItem, WorkResult,
};

/// Where the engines' clocks start (any time well past zero).
const T0: u64 = 1_000_000;
/// How long one piece of work takes in these tests.
const WORK_MS: u64 = 250;
/// Crawl items in the test project.
const ITEMS: usize = 6;

/// A signed manifest and one batch of [`ITEMS`] crawl chunks, and the items' ids.
fn project(owner: &Keypair) -> (Envelope, Envelope, Vec<ItemId>) {
    let m = ProjectManifest {
        name: "contract".into(),
        description: String::new(),
        version: 1,
        owner: owner.public(),
        rate: Default::default(),
        lease_ms: 20_000,
        replication: 0,
        scope: Vec::new(),
        user_agent: "starling-tests".into(),
        robots: Default::default(),
        caps: Default::default(),
        verify: Default::default(),
        shard_depth: 0,
    };
    let pid = m.id();
    let works: Vec<WorkItem> = (0..ITEMS)
        .map(|i| WorkItem::CrawlChunk { urls: vec![format!("https://contract.test/{i}")] })
        .collect();
    let ids = works.iter().map(|w| w.id(&pid)).collect();
    let batch = ItemBatch { project: pid, seq: 0, items: works };
    (Envelope::Manifest(Signed::sign(owner, &m)), Envelope::Batch(Signed::sign(owner, &batch)), ids)
}

fn engine(key: u64, owner: &Keypair, seed: u64) -> Engine {
    Engine::new(EngineConfig::default(), test_keypair(key), [owner.public()], seed)
}

/// Everything the engine has to say now, in order.
fn drain(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

/// The result a runner reports for `item`, the same on every node.
fn result_of(item: ItemId, epoch: u32) -> WorkResult {
    WorkResult {
        item,
        epoch,
        result: Digest::of(item.as_bytes()),
        size: 1_000,
        ok: 1,
        failed: 0,
        parts: Vec::new(),
    }
}

#[test]
fn outputs_wait_in_order_until_polled_and_a_wakeup_is_asked_for() {
    let owner = test_keypair(1);
    let (manifest, batch, _) = project(&owner);
    let mut e = engine(10, &owner, 1);
    assert_eq!(e.poll_output(), None, "nothing happens before an input");
    e.handle(Input::Publish(manifest.clone()), T0).expect("the owner's manifest is taken");
    e.handle(Input::Publish(batch.clone()), T0).expect("and its batch");
    let outs = drain(&mut e);
    let published: Vec<&Envelope> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Publish(env) => Some(env),
            _ => None,
        })
        .collect();
    let at = |env: &Envelope| published.iter().position(|p| *p == env);
    let (m, b) = (at(&manifest), at(&batch));
    assert!(m.is_some() && b.is_some(), "what an operator publishes goes to the mesh");
    assert!(m < b, "in the order it was handed in");
    assert_eq!(e.poll_output(), None, "drained");
    assert!(e.next_wakeup().is_some(), "an engine with items to claim asks to be ticked");
}

#[test]
fn the_same_inputs_at_the_same_times_give_the_same_outputs() {
    let owner = test_keypair(1);
    let (manifest, batch, _) = project(&owner);
    let run = || {
        let mut e = engine(10, &owner, 7);
        let mut log = Vec::new();
        let mut t = T0;
        for input in [Input::Publish(manifest.clone()), Input::Publish(batch.clone())] {
            let r = e.handle(input, t);
            log.push((t, format!("{r:?}"), drain(&mut e), e.next_wakeup()));
        }
        // Tick at every wakeup asked for, and finish every piece of work it starts.
        for _ in 0..50 {
            let Some(w) = e.next_wakeup() else { break };
            t = t.max(w);
            let r = e.handle(Input::Tick, t);
            let outs = drain(&mut e);
            for o in &outs {
                if let Output::StartWork { item, epoch, .. } = o {
                    let _ = e.handle(Input::WorkDone(result_of(*item, *epoch)), t + WORK_MS);
                }
            }
            log.push((t, format!("{r:?}"), outs, e.next_wakeup()));
            log.push((t + WORK_MS, String::new(), drain(&mut e), e.next_wakeup()));
            t += WORK_MS;
        }
        log
    };
    let first = run();
    assert!(first.iter().any(|(_, _, outs, _)| !outs.is_empty()));
    assert_eq!(first, run());
}

/// Two engines wired together by a driver that hands each one's published envelopes to the
/// other, runs the work it is told to (each piece taking [`WORK_MS`]) and ticks each at its
/// wakeups.
struct Pair {
    engines: [Engine; 2],
    now: u64,
    /// Envelopes on their way: (to, envelope).
    wire: VecDeque<(usize, Envelope)>,
    /// Work running: (node, item, epoch, done at).
    running: Vec<(usize, ItemId, u32, u64)>,
    /// Work started, by node.
    started: [u32; 2],
}

impl Pair {
    /// Carries out node `n`'s outputs.
    fn carry_out(&mut self, n: usize) {
        for o in drain(&mut self.engines[n]) {
            match o {
                Output::Publish(env) => self.wire.push_back((1 - n, env)),
                Output::StartWork { item, epoch, .. } => {
                    self.started[n] += 1;
                    self.running.push((n, item, epoch, self.now + WORK_MS));
                }
                Output::CancelWork { item, .. } => {
                    self.running.retain(|r| !(r.0 == n && r.1 == item));
                }
                _ => {}
            }
        }
    }

    fn input(&mut self, n: usize, input: Input) {
        let _ = self.engines[n].handle(input, self.now);
        self.carry_out(n);
    }

    /// Delivers everything on the wire, then moves time to the next wakeup or work done.
    fn step(&mut self) {
        while let Some((to, env)) = self.wire.pop_front() {
            self.input(to, Input::Message(env));
        }
        let wakeups = self.engines.iter().filter_map(Engine::next_wakeup);
        let work = self.running.iter().map(|r| r.3);
        let Some(next) = wakeups.chain(work).min() else { return };
        self.now = self.now.max(next);
        let due: Vec<_> = self.running.iter().copied().filter(|r| r.3 <= self.now).collect();
        self.running.retain(|r| r.3 > self.now);
        for (n, item, epoch, _) in due {
            self.input(n, Input::WorkDone(result_of(item, epoch)));
        }
        for n in 0..2 {
            if self.engines[n].next_wakeup().is_some_and(|w| w <= self.now) {
                self.input(n, Input::Tick);
            }
        }
    }

    fn all_done(&self, ids: &[ItemId]) -> bool {
        self.engines
            .iter()
            .all(|e| ids.iter().all(|id| matches!(e.item_state(id), Some(ItemState::Done { .. }))))
    }
}

#[test]
fn two_engines_exchanging_their_outputs_finish_every_item_and_agree() {
    let owner = test_keypair(1);
    let (manifest, batch, ids) = project(&owner);
    let mut pair = Pair {
        engines: [engine(10, &owner, 1), engine(11, &owner, 2)],
        now: T0,
        wire: VecDeque::new(),
        running: Vec::new(),
        started: [0, 0],
    };
    // Each learns of the other from its heartbeats before the project is published.
    pair.input(0, Input::Tick);
    pair.input(1, Input::Tick);
    pair.step();
    pair.input(0, Input::Publish(manifest));
    pair.input(0, Input::Publish(batch));
    // Heartbeats never stop, so the wire is never empty for long: the bound is on steps.
    let mut steps = 0;
    while !pair.all_done(&ids) {
        pair.step();
        steps += 1;
        assert!(steps < 10_000, "not done after {steps} steps, at t={}", pair.now);
    }
    let [a, b] = &pair.engines;
    for id in &ids {
        let (sa, sb) = (a.item_state(id), b.item_state(id));
        assert_eq!(sa, sb, "both views of {id:?} agree");
        let Some(ItemState::Done { result, holder, .. }) = sa else { unreachable!() };
        assert_eq!(result, Digest::of(id.as_bytes()), "the result a runner reported");
        assert!(holder == a.node_id() || holder == b.node_id());
    }
    assert!(pair.started.iter().sum::<u32>() >= ITEMS as u32, "every item was worked on");
}
