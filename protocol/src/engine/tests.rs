//! Engine tests, with an in-memory harness in the shape of quinn-proto's `Pair`: several
//! engines, a simulated clock, a message queue with fixed latency, and a work runner that
//! finishes each started item after a fixed time.

use std::collections::BTreeMap;

use super::*;
use crate::item::ItemBatch;
use crate::manifest::{ProjectManifest, RatePolicy, RobotsPolicy, SizeCaps};
use crate::message::{Claim, Envelope};

pub(super) fn manifest(owner: &Keypair, lease_ms: u64, replication: u8) -> ProjectManifest {
    ProjectManifest {
        name: "test".into(),
        description: String::new(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy::default(),
        lease_ms,
        replication,
        scope: vec![],
        user_agent: "starling-test".into(),
        robots: RobotsPolicy::Obey,
        caps: SizeCaps::default(),
        verify: Default::default(),
        shard_depth: 0,
    }
}

pub(super) fn batch(owner: &Keypair, m: &ProjectManifest, n: usize) -> Signed<ItemBatch> {
    let items = (0..n)
        .map(|i| WorkItem::CrawlChunk { urls: vec![format!("http://example.test/{i}")] })
        .collect();
    Signed::sign(owner, &ItemBatch { project: m.id(), seq: 1, items })
}

fn fast_config() -> EngineConfig {
    EngineConfig {
        capacity: 4,
        settle_ms: 50,
        claim_settle_ms: 100,
        warmup_ms: 500,
        presence_interval_ms: 200,
        presence_ttl_ms: 700,
        skew_margin_ms: 100,
        widen_ms: 300,
        // This network's workers never ask for lanes (the lane tests ask for themselves).
        lanes_with_chunks: false,
        ..EngineConfig::default()
    }
}

/// Engines joined by a lossless network with fixed latency.
struct Net {
    engines: Vec<Engine>,
    now: u64,
    seq: u64,
    latency_ms: u64,
    work_ms: u64,
    /// (deliver_at, seq) -> (to, envelope)
    queue: BTreeMap<(u64, u64), (usize, Envelope)>,
    /// (finish_at, seq) -> (node, item, epoch)
    work: BTreeMap<(u64, u64), (usize, ItemId, u32)>,
    executions: BTreeMap<ItemId, u32>,
    /// Every start, in order: (node, item).
    starts: Vec<(usize, ItemId)>,
    /// Nodes whose outgoing messages are dropped (crashed or cut off).
    silenced: Vec<bool>,
    /// Host cooldowns told to each node: (node, until).
    cooldowns: Vec<(usize, u64)>,
    /// What each node reports for the work it does (see [`Net::result_of`]).
    liars: Vec<Lies>,
    /// Nodes that lost their copies: they answer every storage challenge with nothing.
    copies_lost: Vec<bool>,
    /// Whether a message goes only where [`Engine::route`] says (a shard's members, a
    /// heartbeat to those sharing a topic) rather than to every node.
    routed: bool,
}

/// What a node of the harness reports for its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lies {
    /// The truth: a chunk's result is `Digest::of(item)`, a check reports its source's.
    Never,
    /// A false result for every chunk it crawls; honest checks.
    Results,
    /// Honest chunks; every check it runs disagrees.
    Checks,
}

impl Net {
    fn new(n: usize, owner: &Keypair, cfg: EngineConfig) -> Self {
        let engines = (0..n)
            .map(|i| {
                Engine::new(cfg.clone(), test_keypair(1000 + i as u64), [owner.public()], i as u64)
            })
            .collect();
        Self {
            engines,
            now: 0,
            seq: 0,
            latency_ms: 20,
            work_ms: 150,
            queue: BTreeMap::new(),
            work: BTreeMap::new(),
            executions: BTreeMap::new(),
            starts: Vec::new(),
            silenced: vec![false; n],
            cooldowns: Vec::new(),
            liars: vec![Lies::Never; n],
            copies_lost: vec![false; n],
            routed: false,
        }
    }

    /// Whether a message `from` published reaches `to`, as its route says when the net is
    /// routed: a shard's message to that shard's members, a heartbeat to the nodes that share
    /// a topic with the sender (everyone, for a project that is not split).
    fn reaches(&self, from: usize, to: usize, env: &Envelope) -> bool {
        if !self.routed {
            return true;
        }
        let (a, b) = (&self.engines[from], &self.engines[to]);
        match a.route(env) {
            Some(Route::Shard(p, s)) => b.shard_of(&p) == Some(s),
            Some(Route::Presence) => {
                let mine: Vec<_> = a.shards().collect();
                mine.is_empty() || mine.iter().any(|(p, s)| b.shard_of(p) == Some(*s))
            }
            _ => true,
        }
    }

    /// `node`'s answer to a storage challenge for duty `item`: a result's copy is its source's
    /// id (the bytes whose digest an honest chunk reports), unless the node lost its copies.
    fn prove(&self, node: usize, item: &ItemId, slot: u64) -> Option<crate::proof::StorageProof> {
        let Some((_, WorkItem::SeedDuty { source, .. })) = self.engines[node].item_work(item)
        else {
            return None;
        };
        let lost = self.copies_lost.get(node).copied().unwrap_or(false);
        (!lost).then(|| crate::proof::prove_from_blob(item, source.as_bytes(), slot))
    }

    /// The result `node` reports for `item`: the truth is the digest of the chunk's id (for a
    /// check, of its source's id), and a liar reports something else.
    fn result_of(&self, node: usize, item: &ItemId) -> Digest {
        let (source, check) = match self.engines[node].item_work(item) {
            Some((_, WorkItem::Verify { source, .. })) => (*source, true),
            _ => (*item, false),
        };
        match (self.liars.get(node).copied().unwrap_or(Lies::Never), check) {
            (Lies::Results, false) | (Lies::Checks, true) => {
                Digest::of(&[&b"bogus"[..], item.as_bytes()].concat())
            }
            _ => Digest::of(source.as_bytes()),
        }
    }

    fn input(&mut self, node: usize, input: Input) -> Result<(), Reject> {
        let r = self.engines[node].handle(input, self.now);
        self.drain(node);
        r
    }

    fn drain(&mut self, node: usize) {
        while let Some(out) = self.engines[node].poll_output() {
            match out {
                Output::Publish(env) => {
                    if self.silenced[node] {
                        continue;
                    }
                    for to in 0..self.engines.len() {
                        if to != node && self.reaches(node, to, &env) {
                            self.seq += 1;
                            self.queue
                                .insert((self.now + self.latency_ms, self.seq), (to, env.clone()));
                        }
                    }
                }
                Output::StartWork { item, work: WorkItem::HostLane { .. }, .. } => {
                    self.starts.push((node, item));
                }
                Output::StartWork { item, epoch, .. } => {
                    *self.executions.entry(item).or_default() += 1;
                    self.starts.push((node, item));
                    self.seq += 1;
                    self.work.insert((self.now + self.work_ms, self.seq), (node, item, epoch));
                }
                Output::CancelWork { item, epoch, .. } => {
                    self.work.retain(|_, w| !(w.0 == node && w.1 == item && w.2 == epoch));
                }
                Output::Persist(_) => {}
                Output::HostCooldown { until_ms, .. } => self.cooldowns.push((node, until_ms)),
                Output::ProofDue { item, epoch, slot, .. } => {
                    let proof = self.prove(node, &item, slot);
                    let _ = self.input(node, Input::StorageProof { item, epoch, slot, proof });
                }
            }
        }
    }

    /// Advances to the next event and handles it; false when nothing is left before `until`.
    fn step(&mut self, until: u64) -> bool {
        let next_msg = self.queue.keys().next().map(|k| k.0);
        let next_work = self.work.keys().next().map(|k| k.0);
        let next_timer = self.engines.iter().filter_map(Engine::next_wakeup).min();
        let Some(t) = [next_msg, next_work, next_timer].into_iter().flatten().min() else {
            return false;
        };
        if t > until {
            return false;
        }
        self.now = self.now.max(t);
        if next_msg == Some(t) {
            let (_, (to, env)) = self.queue.pop_first().expect("queue has an entry at t");
            let _ = self.input(to, Input::Message(env));
        } else if next_work == Some(t) {
            let (_, (node, item, epoch)) = self.work.pop_first().expect("work has an entry at t");
            let result = self.result_of(node, &item);
            let _ = self.input(
                node,
                Input::WorkDone(WorkResult {
                    item,
                    epoch,
                    result,
                    // An honest result's bytes are its item's id (see `Net::prove`).
                    size: 32,
                    ok: 1,
                    failed: 0,
                    parts: vec![],
                }),
            );
        } else {
            for i in 0..self.engines.len() {
                if self.engines[i].next_wakeup().is_some_and(|w| w <= t) {
                    let _ = self.input(i, Input::Tick);
                }
            }
        }
        true
    }

    fn run_until(&mut self, until: u64, mut done: impl FnMut(&Net) -> bool) -> bool {
        while self.step(until) {
            if done(self) {
                return true;
            }
        }
        done(self)
    }

    fn all_done(&self, items: &[ItemId]) -> bool {
        self.engines
            .iter()
            .all(|e| items.iter().all(|i| matches!(e.item_state(i), Some(ItemState::Done { .. }))))
    }
}

fn publish_project(net: &mut Net, owner: &Keypair, lease_ms: u64, n: usize) -> Vec<ItemId> {
    let m = manifest(owner, lease_ms, 0);
    let b = batch(owner, &m, n);
    let ids = b.verify().unwrap().items.iter().map(|w| w.id(&m.id())).collect();
    net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(owner, &m)))).unwrap();
    net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
    ids
}

#[test]
fn five_engines_share_500_items_with_no_duplicate_execution() {
    let owner = test_keypair(1);
    let mut net = Net::new(5, &owner, fast_config());
    let ids = publish_project(&mut net, &owner, 5_000, 500);
    let finished = net.run_until(600_000, |n| n.all_done(&ids));
    assert!(finished, "not all items finished by t={}", net.now);
    let dups: u32 = net.executions.values().map(|c| c - 1).sum();
    // Every chunk once, and each sampled result's check once (the default sample, 10 %).
    let listed = net.executions.keys().filter(|i| ids.contains(i)).count();
    let checks = net.executions.len() - listed;
    assert_eq!(listed, 500);
    assert!((20..=90).contains(&checks), "{checks} checks of 500 results");
    assert_eq!(dups, 0, "duplicate executions: {dups}");
    // Work was spread: every engine did some.
    for e in &net.engines {
        assert!(e.stats().finished > 40, "engine did {} items", e.stats().finished);
    }
    // Every engine agrees on every item's final state.
    for id in &ids {
        let first = net.engines[0].item_state(id);
        assert!(net.engines.iter().all(|e| e.item_state(id) == first));
    }
}

#[test]
fn an_expired_lease_is_reclaimed_at_the_next_epoch_and_the_old_result_is_fenced() {
    let owner = test_keypair(1);
    let mut net = Net::new(3, &owner, fast_config());
    net.work_ms = 60_000; // longer than the lease: the holder must renew to keep it.
    let ids = publish_project(&mut net, &owner, 2_000, 1);
    let item = ids[0];
    net.run_until(5_000, |n| n.engines.iter().any(|e| e.holds(&item)));
    let a = (0..3).find(|&i| net.engines[i].holds(&item)).expect("someone claimed");
    let ItemState::Held { epoch: 1, .. } = net.engines[a].item_state(&item).unwrap() else {
        panic!("expected epoch 1");
    };
    // The holder stalls (a frozen process, say): the lease it last signed is all anyone,
    // itself included, will ever show for epoch 1.
    let lapsed_claim = net.engines[a].current_claim(&item, 1).unwrap();
    net.silenced[a] = true;
    let b_took = net.run_until(60_000, |n| {
        (0..3).any(|i| i != a && matches!(n.engines[i].item_state(&item), Some(ItemState::Held { epoch: 2, holder, .. }) if holder != n.engines[a].node_id()))
    });
    assert!(b_took, "item not reclaimed at epoch 2");
    // Let the epoch-2 claim reach everyone.
    let settle = net.now + 100;
    net.run_until(settle, |_| false);
    // The old holder wakes and reports a result under its lapsed lease: not accepted as the
    // item's result, by the node now holding epoch 2 or by anyone else.
    let receipt = Receipt {
        claim: lapsed_claim,
        result: Digest([9; 32]),
        size: 1,
        ok: 1,
        failed: 0,
        at_ms: net.now,
        parts: vec![],
    };
    let key = test_keypair(1000 + a as u64);
    let env = Envelope::Receipt(Signed::sign(&key, &receipt));
    for b in (0..3).filter(|&i| i != a) {
        assert_eq!(net.input(b, Input::Message(env.clone())), Err(Reject::Stale));
        assert!(matches!(net.engines[b].item_state(&item), Some(ItemState::Held { epoch: 2, .. })));
    }
}

#[test]
fn a_too_early_next_epoch_claim_is_rejected() {
    let owner = test_keypair(1);
    let mut net = Net::new(2, &owner, fast_config());
    let ids = publish_project(&mut net, &owner, 10_000, 1);
    let item = ids[0];
    net.work_ms = 1_000_000;
    net.run_until(5_000, |n| n.engines.iter().any(|e| e.holds(&item)));
    let holder = (0..2).find(|&i| net.engines[i].holds(&item)).unwrap();
    let other = 1 - holder;
    let rogue = test_keypair(1000 + other as u64);
    let claim = Claim {
        item,
        epoch: 2,
        at_ms: net.now,
        lease_until_ms: net.now + 5_000,
        since_ms: net.now,
        proof: None,
    };
    let env = Envelope::Claim(Signed::sign(&rogue, &claim));
    assert_eq!(net.input(holder, Input::Message(env)), Err(Reject::EpochRuleBroken));
    assert!(Reject::EpochRuleBroken.penalize());
    assert!(net.engines[holder].holds(&item));
    assert_eq!(net.engines[holder].stats().rejected_for(Reject::EpochRuleBroken), 1);
}

#[test]
fn lease_longer_than_the_project_allows_is_rejected() {
    let owner = test_keypair(1);
    let mut net = Net::new(1, &owner, fast_config());
    let ids = publish_project(&mut net, &owner, 10_000, 1);
    let rogue = test_keypair(77);
    let claim = Claim {
        item: ids[0],
        epoch: 1,
        at_ms: 0,
        lease_until_ms: 1_000_000,
        since_ms: 0,
        proof: None,
    };
    let env = Envelope::Claim(Signed::sign(&rogue, &claim));
    assert_eq!(net.input(0, Input::Message(env)), Err(Reject::LeaseTooLong));
}

#[test]
fn forged_and_untrusted_messages_are_rejected_and_not_applied() {
    let owner = test_keypair(1);
    let stranger = test_keypair(2);
    let mut net = Net::new(1, &owner, fast_config());
    let m = manifest(&stranger, 5_000, 0);
    let env = Envelope::Manifest(Signed::sign(&stranger, &m));
    assert_eq!(net.input(0, Input::Message(env)), Err(Reject::UntrustedProject));
    assert_eq!(net.engines[0].projects().count(), 0);

    let ids = publish_project(&mut net, &owner, 5_000, 1);
    // A claim whose body was changed after signing.
    let rogue = test_keypair(77);
    let claim =
        Claim { item: ids[0], epoch: 1, at_ms: 0, lease_until_ms: 1_000, since_ms: 0, proof: None };
    let signed = Signed::sign(&rogue, &claim);
    let mut bytes = Envelope::Claim(signed).to_bytes();
    let last = bytes.len() - 70; // inside the body, before the signature
    bytes[last] ^= 1;
    if let Ok(env) = Envelope::from_bytes(&bytes) {
        let r = net.input(0, Input::Message(env));
        assert!(matches!(r, Err(Reject::BadSignature | Reject::Malformed)), "{r:?}");
    }
    assert_eq!(net.engines[0].item_state(&ids[0]), Some(ItemState::Open { epoch: 0 }));
    // A batch for the trusted project signed by someone else.
    let forged = batch(&stranger, &manifest(&owner, 5_000, 0), 3);
    let r = net.input(0, Input::Message(Envelope::Batch(forged)));
    assert_eq!(r, Err(Reject::UntrustedProject));
    // The one chunk and its host's lane.
    assert_eq!(net.engines[0].item_count(), 2);
}

#[test]
fn same_epoch_conflict_is_won_by_the_higher_hrw_score_whatever_the_order() {
    let owner = test_keypair(1);
    let m = manifest(&owner, 5_000, 0);
    let b = batch(&owner, &m, 1);
    let item = b.verify().unwrap().items[0].id(&m.id());
    let nodes: Vec<Keypair> = (0..4).map(|i| test_keypair(500 + i)).collect();
    let claims: Vec<Envelope> = nodes
        .iter()
        .map(|k| {
            let c = Claim {
                item,
                epoch: 1,
                at_ms: 10,
                lease_until_ms: 4_000,
                since_ms: 10,
                proof: None,
            };
            Envelope::Claim(Signed::sign(k, &c))
        })
        .collect();
    let winner =
        nodes.iter().map(|k| (hrw::score(&item, &k.node_id()), k.node_id())).max().unwrap().1;
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
        let mut e = Engine::new(fast_config(), test_keypair(9), [owner.public()], 0);
        e.handle(Input::Message(Envelope::Manifest(Signed::sign(&owner, &m))), 0).unwrap();
        e.handle(Input::Message(Envelope::Batch(b.clone())), 0).unwrap();
        for i in order {
            let _ = e.handle(Input::Message(claims[i].clone()), 20);
        }
        let Some(ItemState::Held { holder, .. }) = e.item_state(&item) else { panic!() };
        assert_eq!(holder, winner);
    }
}

#[test]
fn the_losing_claimant_yields_before_starting_work() {
    let owner = test_keypair(1);
    let m = manifest(&owner, 5_000, 0);
    let b = batch(&owner, &m, 1);
    let item = b.verify().unwrap().items[0].id(&m.id());
    let mut e = Engine::new(fast_config(), test_keypair(9), [owner.public()], 0);
    e.handle(Input::Message(Envelope::Manifest(Signed::sign(&owner, &m))), 0).unwrap();
    e.handle(Input::Message(Envelope::Batch(b)), 0).unwrap();
    // No peers known: after warmup and settle, this engine claims.
    e.handle(Input::Tick, 10_000).unwrap();
    assert!(e.holds(&item));
    let me = e.node_id();
    // A rival claim at the same epoch with a higher score arrives before work starts.
    let rival = (0..100)
        .map(|i| test_keypair(600 + i))
        .find(|k| (hrw::score(&item, &k.node_id()), k.node_id()) > (hrw::score(&item, &me), me))
        .unwrap();
    let c = Claim {
        item,
        epoch: 1,
        at_ms: 10_000,
        lease_until_ms: 14_000,
        since_ms: 10_000,
        proof: None,
    };
    e.handle(Input::Message(Envelope::Claim(Signed::sign(&rival, &c))), 10_010).unwrap();
    assert!(!e.holds(&item));
    e.handle(Input::Tick, 20_000).unwrap();
    let mut started = false;
    while let Some(o) = e.poll_output() {
        started |= matches!(o, Output::StartWork { .. });
    }
    assert!(!started, "work started although the claim was lost");
}

#[test]
fn a_slot_lost_to_a_rival_is_filled_at_once() {
    let owner = test_keypair(1);
    let cfg = EngineConfig { capacity: 1, ..fast_config() };
    let (mut e, _, ids) = knowing(&owner, cfg, 5_000, 2);
    // No peers known: after warmup and settle both items may be claimed; one slot takes one.
    e.handle(Input::Tick, 10_000).unwrap();
    let (held, waiting) = if e.holds(&ids[0]) { (ids[0], ids[1]) } else { (ids[1], ids[0]) };
    assert!(e.holds(&held) && !e.holds(&waiting));
    while e.poll_output().is_some() {}
    let me = e.node_id();
    let rival = (0..100)
        .map(|i| test_keypair(600 + i))
        .find(|k| (hrw::score(&held, &k.node_id()), k.node_id()) > (hrw::score(&held, &me), me))
        .unwrap();
    let c = Claim {
        item: held,
        epoch: 1,
        at_ms: 10_000,
        lease_until_ms: 14_000,
        since_ms: 10_000,
        proof: None,
    };
    e.handle(Input::Message(Envelope::Claim(Signed::sign(&rival, &c))), 10_010).unwrap();
    assert!(!e.holds(&held), "the rival's claim wins");
    assert!(e.holds(&waiting), "the freed slot takes the waiting item without waiting for a tick");
    let claimed = std::iter::from_fn(|| e.poll_output()).any(|o| match o {
        Output::Publish(Envelope::Claim(s)) => s.verify().unwrap().item == waiting,
        _ => false,
    });
    assert!(claimed, "and the claim is published");
}

/// Found by the simulator (fault-50): R claims an item at epoch 1 on one side of a partition,
/// crashes, and its lease lapses. After the heal, E, which never heard of R's claim, claims the
/// item at epoch 1 too; R, back, claims epoch 2. E holds epoch 2 to be early (its own lease
/// runs), while everyone else refuses E's claim, outranked by R's: both work the item. A sync
/// delta from anyone who holds epoch 2 carries R's epoch-1 claim before it, so E yields.
#[test]
fn a_sync_delta_carries_what_ended_the_previous_epoch() {
    let owner = test_keypair(1);
    let lease = 30_000;
    let (mut e, item) = claimer(&owner, lease);
    e.handle(Input::Tick, 10_200).unwrap();
    let started = std::iter::from_fn(|| e.poll_output())
        .any(|o| matches!(o, Output::StartWork { epoch: 1, .. }));
    assert!(started);
    // A peer's view: R's epoch-1 claim from long ago, lapsed, then R's epoch-2 claim.
    let r = test_keypair(77);
    let (mut peer, _) = observer(&owner, lease);
    let old = claim_env(&r, item, 1, 1_000, 1_000, 6_000);
    peer.handle(Input::Message(Envelope::Claim(old.clone())), 1_000).unwrap();
    let next = claim_env(&r, item, 2, 10_400, 10_400, 40_000);
    peer.handle(Input::Message(Envelope::Claim(next.clone())), 10_400).unwrap();
    assert!(matches!(peer.item_state(&item), Some(ItemState::Held { epoch: 2, .. })));

    // By gossip, E refuses R's epoch-2 claim as early, and goes on working.
    let got = e.handle(Input::Message(Envelope::Claim(next.clone())), 10_450);
    assert_eq!(got, Err(Reject::EpochRuleBroken));
    assert!(e.holds(&item));

    // The peer's delta holds the lapsed claim first, then the one after it.
    let delta = peer.sync_delta(&e.sync_digest());
    let claims: Vec<Signed<Claim>> = delta
        .envelopes
        .iter()
        .filter_map(|env| match env {
            Envelope::Claim(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(claims, vec![old, next]);
    while e.poll_output().is_some() {}
    for env in delta.envelopes {
        let _ = e.handle(Input::Message(env), 10_600);
    }
    assert!(!e.holds(&item), "E yields its epoch-1 claim");
    assert!(matches!(e.item_state(&item), Some(ItemState::Held { epoch: 2, .. })));
    let cancelled = std::iter::from_fn(|| e.poll_output())
        .any(|o| matches!(o, Output::CancelWork { epoch: 1, reason: CancelReason::Lost, .. }));
    assert!(cancelled, "and stops working it");
}

#[test]
fn snapshot_restore_keeps_state_and_resumes_only_live_leases() {
    let owner = test_keypair(1);
    let mut net = Net::new(2, &owner, fast_config());
    net.work_ms = 1_000_000;
    let ids = publish_project(&mut net, &owner, 3_000, 20);
    net.run_until(5_000, |n| n.engines[0].local_work().count() > 0);
    let held: Vec<ItemId> = net.engines[0].local_work().map(|l| l.item).collect();
    assert!(!held.is_empty());
    let snap = net.engines[0].snapshot();
    let key = test_keypair(1000);
    // Restored soon: leases still run, so they resume.
    let mut soon = Engine::restore(fast_config(), key.clone(), snap.clone(), 7, net.now + 100);
    assert_eq!(soon.item_count(), 21, "20 chunks and their host's lane");
    for id in &held {
        assert!(soon.holds(id));
    }
    soon.handle(Input::Tick, net.now + 1_000).unwrap();
    let mut restarted = 0;
    while let Some(o) = soon.poll_output() {
        restarted += usize::from(matches!(o, Output::StartWork { .. }));
    }
    assert_eq!(restarted, held.len());
    // Restored after the leases ran out: nothing resumes.
    let late = Engine::restore(fast_config(), key, snap, 7, net.now + 60_000);
    assert_eq!(late.local_work().count(), 0);
    assert_eq!(late.items().count(), ids.len() + 1, "the chunks and their host's lane");
}

#[test]
fn a_late_joiner_catches_up_by_sync() {
    let owner = test_keypair(1);
    let mut net = Net::new(3, &owner, fast_config());
    let ids = publish_project(&mut net, &owner, 5_000, 50);
    assert!(net.run_until(600_000, |n| n.all_done(&ids)));
    let mut joiner = Engine::new(fast_config(), test_keypair(42), [owner.public()], 3);
    let mut rounds = 0;
    loop {
        rounds += 1;
        let delta = net.engines[1].sync_delta(&joiner.sync_digest());
        let delta = SyncDeltaRoundTrip::round_trip(delta);
        for env in delta.envelopes {
            let _ = joiner.handle(Input::Message(env), net.now);
        }
        if !delta.more || rounds > 10 {
            break;
        }
    }
    // Results whose claims are younger than the settle time (this world's items take 150 ms)
    // are held back and taken in once they have settled.
    joiner.handle(Input::Tick, net.now + RESULT_SETTLE_MS).unwrap();
    for id in &ids {
        assert_eq!(joiner.item_state(id), net.engines[1].item_state(id));
    }
    assert_eq!(joiner.sync_digest().projects, net.engines[1].sync_digest().projects);
}

struct SyncDeltaRoundTrip;
impl SyncDeltaRoundTrip {
    fn round_trip(d: crate::message::SyncDelta) -> crate::message::SyncDelta {
        crate::message::SyncDelta::from_bytes(&d.to_bytes()).expect("delta decodes")
    }
}

/// Ticks a lone engine until it holds `item`, at most `bound` ms; returns the time.
fn tick_until_held(e: &mut Engine, item: &ItemId, mut now: u64, bound: u64) -> u64 {
    let end = now + bound;
    while !e.holds(item) {
        assert!(now < end, "{item:?} not claimed again within {bound} ms");
        now = e.next_wakeup().unwrap_or(now + 100).max(now + 1);
        e.handle(Input::Tick, now).unwrap();
    }
    now
}

/// A failure of `item` at `epoch` by another node `key`: its claim, then the failure.
fn foreign_failure(
    key: &Keypair,
    item: ItemId,
    epoch: u32,
    at: u64,
    retryable: bool,
) -> [Envelope; 2] {
    let claim = claim_env(key, item, epoch, at, at, at + 5_000);
    let f = Failure { claim: claim.clone(), reason: "gone".into(), retryable };
    [Envelope::Claim(claim), Envelope::Failure(Signed::sign(key, &f))]
}

#[test]
fn retryable_failures_back_off_and_never_end_an_item() {
    let owner = test_keypair(1);
    let (mut e, item) = claimer(&owner, 5_000);
    let mut now = 10_000;
    let mut gaps = Vec::new();
    for epoch in 1..=6u32 {
        assert!(e.holds(&item));
        let input = Input::WorkFailed { item, epoch, reason: "503".into(), retryable: true };
        e.handle(input, now).unwrap();
        assert_eq!(e.item_state(&item), Some(ItemState::Open { epoch }), "epoch {epoch}");
        let again = tick_until_held(&mut e, &item, now, 400_000);
        gaps.push(again - now);
        now = again + 500;
    }
    // Each backoff is twice the one before (widen_ms = 300 ms, then 600, 1200, ...) on top of
    // the same settle time and the wait of a node that failed the item itself.
    let growth: Vec<u64> = gaps.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(growth.windows(2).all(|g| g[1] == 2 * g[0]), "backoff did not double: {gaps:?}");
    assert!(gaps[0] >= 300, "retried at once: {gaps:?}");
}

#[test]
fn final_failures_end_an_item_only_from_two_different_nodes() {
    let owner = test_keypair(1);
    let (mut e, item) = claimer(&owner, 5_000);
    let mut now = 10_000;
    for epoch in 1..=3u32 {
        let input = Input::WorkFailed { item, epoch, reason: "too big".into(), retryable: false };
        e.handle(input, now).unwrap();
        assert_eq!(e.item_state(&item), Some(ItemState::Open { epoch }), "one node ended it");
        now = tick_until_held(&mut e, &item, now, 60_000) + 100;
    }
    // Another node gets its turn and finds the item broken too: now it has failed for all,
    // and this node's own work on it stops.
    let other = test_keypair(77);
    e.handle(Input::Shutdown, now).unwrap();
    let mut e2 = {
        let snap = e.snapshot();
        Engine::restore(fast_config(), test_keypair(9), snap, 0, now)
    };
    now += 100;
    e2.handle(Input::Tick, now).unwrap();
    let epoch = match e2.item_state(&item) {
        Some(ItemState::Open { epoch }) => epoch + 1,
        other => panic!("{other:?}"),
    };
    for env in foreign_failure(&other, item, epoch, now, false) {
        e2.handle(Input::Message(env), now).unwrap();
    }
    assert_eq!(e2.item_state(&item), Some(ItemState::Failed { epoch }));
    // The verdict survives a restart and reaches a node that learns the item by sync.
    let snap = e2.snapshot();
    let e3 = Engine::restore(fast_config(), test_keypair(9), snap, 0, now + 1_000);
    assert_eq!(e3.item_state(&item), Some(ItemState::Failed { epoch }), "lost on restart");
    let (mut fresh, _) = observer(&owner, 5_000);
    let delta = e3.sync_delta(&fresh.sync_digest());
    for env in SyncDeltaRoundTrip::round_trip(delta).envelopes {
        let _ = fresh.handle(Input::Message(env), now + 1_000);
    }
    assert_eq!(fresh.item_state(&item), Some(ItemState::Failed { epoch }), "not synced");
}

#[test]
fn graceful_shutdown_releases_held_items() {
    let owner = test_keypair(1);
    let mut net = Net::new(2, &owner, fast_config());
    net.work_ms = 1_000_000;
    publish_project(&mut net, &owner, 5_000, 10);
    net.run_until(5_000, |n| n.engines[0].local_work().count() > 0);
    let held: Vec<ItemId> = net.engines[0].local_work().map(|l| l.item).collect();
    assert!(!held.is_empty(), "node 0 claimed nothing, so there is no release to check");
    net.input(0, Input::Shutdown).unwrap();
    let t = net.now + 100;
    net.run_until(t, |_| false);
    for id in &held {
        assert!(!net.engines[0].holds(id));
        assert!(
            !matches!(net.engines[1].item_state(id), Some(ItemState::Held { holder, .. }) if holder == net.engines[0].node_id())
        );
    }
}

#[test]
fn yielded_counts_only_work_that_had_started() {
    let owner = test_keypair(1);
    let mut net = Net::new(2, &owner, fast_config());
    net.work_ms = 1_000_000;
    publish_project(&mut net, &owner, 5_000, 10);
    net.run_until(5_000, |n| n.engines[0].local_work().any(|l| !l.started));
    let waiting: Vec<ItemId> =
        net.engines[0].local_work().filter(|l| !l.started).map(|l| l.item).collect();
    assert!(!waiting.is_empty(), "node 0 never held a claim whose work had not started");
    let e = &mut net.engines[0];
    let before = e.stats().yielded;
    for item in waiting {
        e.drop_local(item, CancelReason::Lost);
    }
    assert_eq!(e.stats().yielded, before, "a claim given up before its work started");

    // `drop_local` alone leaves the item held here with no local work, which the debug
    // invariant check refuses at the next input: the second half starts afresh.
    let mut net = Net::new(2, &owner, fast_config());
    net.work_ms = 1_000_000;
    publish_project(&mut net, &owner, 5_000, 10);
    net.run_until(10_000, |n| n.engines[0].local_work().any(|l| l.started));
    let before = net.engines[0].stats().yielded;
    let e = &mut net.engines[0];
    let started = e.local_work().find(|l| l.started).map(|l| l.item).expect("started work");
    e.drop_local(started, CancelReason::Lost);
    assert_eq!(e.stats().yielded, before + 1, "started work given up is yielded");
}

#[test]
fn seed_duties_are_derived_from_receipts_on_every_node() {
    let owner = test_keypair(1);
    let mut net = Net::new(3, &owner, fast_config());
    let m = manifest(&owner, 5_000, 2);
    let b = batch(&owner, &m, 5);
    net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
    net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
    net.run_until(60_000, |n| {
        n.engines.iter().all(|e| e.counts(None).done == 5 && e.item_count() == 16)
    });
    for e in &net.engines {
        assert_eq!(e.item_count(), 16, "5 chunks + 2 seed duties each + their host's lane");
    }
    // Seed duties are ongoing: they end up held and ready, not done.
    net.run_until(net.now + 30_000, |n| {
        n.engines.iter().all(|e| {
            e.items().filter(|(_, _, s)| matches!(s, ItemState::Held { ready: true, .. })).count()
                == 10
        })
    });
    let ready = net.engines[0]
        .items()
        .filter(|(_, _, s)| matches!(s, ItemState::Held { ready: true, .. }))
        .count();
    assert_eq!(ready, 10);
    // Counted by kind, the crawl is complete and the copies are held apart from it.
    let by_kind = net.engines[0].counts_by_kind(&m.id());
    assert_eq!(by_kind[&WorkKind::Crawl], ItemCounts { open: 0, held: 0, done: 5, failed: 0 });
    assert_eq!(by_kind[&WorkKind::Seed], ItemCounts { open: 0, held: 10, done: 0, failed: 0 });
}

#[test]
fn the_replicas_of_one_result_are_held_by_different_nodes() {
    let owner = test_keypair(1);
    let mut net = Net::new(4, &owner, fast_config());
    let m = manifest(&owner, 5_000, 3);
    let b = batch(&owner, &m, 12);
    net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
    net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
    let all_ready = |n: &Net| {
        n.engines.iter().all(|e| {
            e.items().filter(|(_, _, s)| matches!(s, ItemState::Held { ready: true, .. })).count()
                == 36
        })
    };
    assert!(net.run_until(300_000, all_ready), "not every duty ready by t={}", net.now);
    // Group the duties' holders by result: k distinct nodes each.
    let mut holders: BTreeMap<Digest, BTreeSet<NodeId>> = BTreeMap::new();
    for (id, _, state) in net.engines[0].items() {
        if let (Some((_, WorkItem::SeedDuty { result, .. })), ItemState::Held { holder, .. }) =
            (net.engines[0].item_work(&id), state)
        {
            holders.entry(*result).or_default().insert(holder);
        }
    }
    assert_eq!(holders.len(), 12);
    for (result, nodes) in &holders {
        assert_eq!(nodes.len(), 3, "replicas of {result:?} share a node: {nodes:?}");
    }
}

/// Found by the `copies-churn` scenario: the holder's ready receipt was neither in a snapshot
/// nor in a sync delta (only the claim was), so a restarted node, or one that missed the
/// receipt, saw the copy as never ready, for good.
#[test]
fn a_copy_ready_survives_a_restart_and_reaches_a_node_by_sync() {
    let owner = test_keypair(1);
    let mut net = Net::new(3, &owner, fast_config());
    // A lease long enough to outlast the sync rounds below, which run with no renewals.
    let m = manifest(&owner, 60_000, 2);
    let b = batch(&owner, &m, 4);
    net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
    net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
    let ready = |e: &Engine| {
        e.items().filter(|(_, _, s)| matches!(s, ItemState::Held { ready: true, .. })).count()
    };
    assert!(net.run_until(300_000, |n| n.engines.iter().all(|e| ready(e) == 8)));
    let now = net.now;
    let mut restored =
        Engine::restore(fast_config(), test_keypair(1000), net.engines[0].snapshot(), 0, now);
    // Results replayed without their claims settle first; their copies' records wait.
    restored.handle(Input::Tick, now + RESULT_SETTLE_MS + 1).unwrap();
    assert_eq!(ready(&restored), 8, "ready copies lost on restart");
    // A node that knows the project (no ready receipt yet) learns them by sync.
    let mut fresh = Engine::new(fast_config(), test_keypair(4242), [owner.public()], 9);
    for env in net.engines[0]
        .stored_records()
        .into_iter()
        .filter(|e| !matches!(e, Envelope::Receipt(_) | Envelope::Claim(_)))
    {
        let _ = fresh.handle(Input::Message(env), now);
    }
    for round in 0..4 {
        let delta = net.engines[0].sync_delta(&fresh.sync_digest());
        let at = now + round * RESULT_SETTLE_MS;
        for env in SyncDeltaRoundTrip::round_trip(delta).envelopes {
            let _ = fresh.handle(Input::Message(env), at);
        }
        fresh.handle(Input::Tick, at + RESULT_SETTLE_MS + 1).unwrap();
    }
    assert_eq!(ready(&fresh), 8, "ready copies not synced");
}

#[test]
fn a_relay_request_becomes_a_slot_held_by_a_relay_node_not_the_requester() {
    let owner = test_keypair(1);
    let relay_cfg = EngineConfig { roles: Roles::ALL, ..fast_config() };
    let mut net = Net::new(3, &owner, relay_cfg);
    net.work_ms = 1_000_000; // a relay slot stays up; its "work" never ends by itself
    // Engine 2 is behind NAT and asks for relay capacity.
    let requester = test_keypair(1002);
    let req = crate::message::RelayRequest { seq: 1, at_ms: 0 };
    let env = Envelope::RelayRequest(Signed::sign(&requester, &req));
    net.input(2, Input::Publish(env)).unwrap();
    let slot = WorkItem::RelaySlot { requester: requester.node_id(), seq: 1 }.id(&relay_project());
    let held = net.run_until(30_000, |n| {
        n.engines.iter().all(|e| matches!(e.item_state(&slot), Some(ItemState::Held { .. })))
    });
    assert!(held, "relay slot not claimed");
    let Some(ItemState::Held { holder, .. }) = net.engines[2].item_state(&slot) else { panic!() };
    assert_ne!(holder, requester.node_id());
    // A newer request replaces the slot everywhere.
    let req2 = crate::message::RelayRequest { seq: 2, at_ms: net.now };
    net.input(2, Input::Publish(Envelope::RelayRequest(Signed::sign(&requester, &req2)))).unwrap();
    let t = net.now + 1_000;
    net.run_until(t, |_| false);
    for e in &net.engines {
        assert!(e.item_state(&slot).is_none(), "old slot still tracked");
        assert!(!e.holds(&slot));
    }
}

#[test]
fn a_node_that_gains_the_relay_role_claims_waiting_relay_slots() {
    let owner = test_keypair(1);
    let crawl_only = EngineConfig { roles: Roles::CRAWL, ..fast_config() };
    let mut net = Net::new(2, &owner, crawl_only);
    net.work_ms = 1_000_000;
    let requester = test_keypair(1001);
    let req = crate::message::RelayRequest { seq: 1, at_ms: 0 };
    net.input(1, Input::Publish(Envelope::RelayRequest(Signed::sign(&requester, &req)))).unwrap();
    let slot = WorkItem::RelaySlot { requester: requester.node_id(), seq: 1 }.id(&relay_project());
    let t = net.now + 20_000;
    net.run_until(t, |_| false);
    assert!(
        matches!(net.engines[0].item_state(&slot), Some(ItemState::Open { .. })),
        "no node offers relaying yet"
    );
    // Engine 0 learns it is reachable and takes up relaying.
    net.input(0, Input::SetRoles(Roles(Roles::CRAWL.0 | Roles::RELAY.0))).unwrap();
    let held = net.run_until(net.now + 30_000, |n| {
        n.engines.iter().all(|e| {
            matches!(e.item_state(&slot), Some(ItemState::Held { holder, .. })
                if holder == n.engines[0].node_id())
        })
    });
    assert!(held, "the new relay did not claim the waiting slot");
}

#[test]
fn ranking_counts_only_peers_of_the_items_project() {
    let owner = test_keypair(1);
    let (mut e, m, ids) = knowing(&owner, fast_config(), 5_000, 200);
    // Many peers that work only on some other project.
    let elsewhere = ProjectId([0xee; 32]);
    for i in 0..20u64 {
        let p = Presence {
            seq: 1,
            at_ms: 0,
            capacity: 4,
            free: 4,
            roles: Roles::ALL,
            projects: vec![elsewhere],
        };
        e.handle(Input::Message(Envelope::Presence(Signed::sign(&test_keypair(300 + i), &p))), 0)
            .unwrap();
    }
    for id in &ids {
        assert_eq!(e.my_rank(id, &m.id(), WorkKind::Crawl), 0);
    }
    // The same peers listing this project (or no project at all) do count.
    let mut ranked_below = 0;
    for i in 0..20u64 {
        let p = Presence {
            seq: 2,
            at_ms: 0,
            capacity: 4,
            free: 4,
            roles: Roles::ALL,
            projects: if i % 2 == 0 { vec![m.id()] } else { vec![] },
        };
        e.handle(Input::Message(Envelope::Presence(Signed::sign(&test_keypair(300 + i), &p))), 0)
            .unwrap();
    }
    for id in &ids {
        let rank = e.my_rank(id, &m.id(), WorkKind::Crawl);
        ranked_below += u32::from(rank > 0);
        // The peer list cached per peer-set version ranks alike.
        let cached = e.rank_peers(&m.id(), Roles::CRAWL, None);
        assert_eq!(hrw::rank(id, &e.node_id(), cached.iter()), rank);
    }
    assert!(ranked_below > 150, "{ranked_below} of 200 items now rank below a peer");
}

/// An engine (key 9) with `cfg` that knows one project of `n` items; returns it, the
/// project's manifest and the item ids.
fn knowing(
    owner: &Keypair,
    cfg: EngineConfig,
    lease_ms: u64,
    n: usize,
) -> (Engine, ProjectManifest, Vec<ItemId>) {
    let m = manifest(owner, lease_ms, 0);
    let b = batch(owner, &m, n);
    let ids = b.verify().unwrap().items.iter().map(|w| w.id(&m.id())).collect();
    let mut e = Engine::new(cfg, test_keypair(9), [owner.public()], 0);
    e.handle(Input::Message(Envelope::Manifest(Signed::sign(owner, &m))), 0).unwrap();
    e.handle(Input::Message(Envelope::Batch(b)), 0).unwrap();
    (e, m, ids)
}

/// An observer that knows one single-item project; returns it and the item id.
fn observer(owner: &Keypair, lease_ms: u64) -> (Engine, ItemId) {
    let (e, _, ids) = knowing(owner, fast_config(), lease_ms, 1);
    (e, ids[0])
}

/// An observer of a single-item project that has claimed the item: alone, it claims once its
/// warmup and the item's settle time are over (at 10 s).
fn claimer(owner: &Keypair, lease_ms: u64) -> (Engine, ItemId) {
    let (mut e, item) = observer(owner, lease_ms);
    e.handle(Input::Tick, 10_000).unwrap();
    assert!(e.holds(&item), "a lone engine claims the item");
    (e, item)
}

fn claim_env(
    key: &Keypair,
    item: ItemId,
    epoch: u32,
    since: u64,
    at: u64,
    until: u64,
) -> Signed<Claim> {
    Signed::sign(
        key,
        &Claim { item, epoch, at_ms: at, lease_until_ms: until, since_ms: since, proof: None },
    )
}

fn receipt_env(key: &Keypair, claim: Signed<Claim>, at: u64, tag: u8) -> Envelope {
    let r = Receipt {
        claim,
        result: Digest([tag; 32]),
        size: 1,
        ok: 1,
        failed: 0,
        at_ms: at,
        parts: vec![],
    };
    Envelope::Receipt(Signed::sign(key, &r))
}

/// Two keys for an item: (lower HRW score, higher HRW score).
fn low_high(item: &ItemId) -> (Keypair, Keypair) {
    let a = test_keypair(700);
    let b = test_keypair(701);
    if (hrw::score(item, &a.node_id()), a.node_id()) < (hrw::score(item, &b.node_id()), b.node_id())
    {
        (a, b)
    } else {
        (b, a)
    }
}

#[test]
fn a_late_same_epoch_claim_cannot_take_a_held_item_nor_finish_it() {
    let owner = test_keypair(1);
    let (mut e, item) = observer(&owner, 30_000);
    let (h, l) = low_high(&item); // the late claimant outscores the holder
    let hc = claim_env(&h, item, 1, 10_000, 10_000, 40_000);
    e.handle(Input::Message(Envelope::Claim(hc)), 10_000).unwrap();
    let late = claim_env(&l, item, 1, 25_000, 25_000, 55_000);
    assert_eq!(e.handle(Input::Message(Envelope::Claim(late.clone())), 25_000), Err(Reject::Lost));
    let bogus = receipt_env(&l, late, 25_100, 0xbb);
    assert_eq!(e.handle(Input::Message(bogus), 25_100), Err(Reject::Fenced));
    assert!(
        matches!(e.item_state(&item), Some(ItemState::Held { holder, .. }) if holder == h.node_id())
    );
}

#[test]
fn a_receipt_whose_claim_broke_the_epoch_rule_never_replaces_the_result() {
    let owner = test_keypair(1);
    let (mut e, item) = observer(&owner, 30_000);
    let h = test_keypair(710);
    let p = test_keypair(711);
    e.handle(
        Input::Message(Envelope::Claim(claim_env(&h, item, 1, 10_000, 10_000, 40_000))),
        10_000,
    )
    .unwrap();
    let renewal = claim_env(&h, item, 1, 10_000, 20_000, 50_000);
    e.handle(Input::Message(Envelope::Claim(renewal.clone())), 20_000).unwrap();
    let early = claim_env(&p, item, 2, 41_500, 41_500, 71_500);
    assert_eq!(
        e.handle(Input::Message(Envelope::Claim(early.clone())), 41_500),
        Err(Reject::EpochRuleBroken)
    );
    e.handle(Input::Message(receipt_env(&h, renewal, 45_000, 0xaa)), 45_000).unwrap();
    let r = e.handle(Input::Message(receipt_env(&p, early, 46_000, 0xbb)), 46_000);
    assert_eq!(r, Err(Reject::Stale));
    assert!(
        matches!(e.item_state(&item), Some(ItemState::Done { holder, result, .. }) if holder == h.node_id() && result == Digest([0xaa; 32]))
    );
}

#[test]
fn a_late_result_is_fenced_out_by_the_next_epoch_in_any_order() {
    let owner = test_keypair(1);
    let h = test_keypair(720);
    let p = test_keypair(721);
    // H claims with a lease to 40 s and never renews; P reclaims at epoch 2 after it lapsed.
    let (mut first, item) = observer(&owner, 30_000);
    let hc = claim_env(&h, item, 1, 10_000, 10_000, 40_000);
    let pc = claim_env(&p, item, 2, 42_000, 42_000, 72_000);
    let h_late = receipt_env(&h, hc.clone(), 45_000, 0xaa);
    let p_done = receipt_env(&p, pc.clone(), 50_000, 0xbb);
    // Observer 1: claims, then H's late result (stale), then P's.
    first.handle(Input::Message(Envelope::Claim(hc.clone())), 10_000).unwrap();
    first.handle(Input::Message(Envelope::Claim(pc)), 42_000).unwrap();
    assert_eq!(first.handle(Input::Message(h_late.clone()), 45_000), Err(Reject::Stale));
    first.handle(Input::Message(p_done.clone()), 50_000).unwrap();
    // Observer 2: only the two results, the late one first.
    let (mut second, _) = observer(&owner, 30_000);
    second.handle(Input::Message(h_late), 50_000).unwrap();
    second.handle(Input::Message(p_done), 50_000).unwrap();
    for e in [&first, &second] {
        assert!(
            matches!(e.item_state(&item), Some(ItemState::Done { holder, epoch: 2, .. }) if holder == p.node_id())
        );
    }
}

#[test]
fn after_a_partition_both_sides_settle_on_the_result_produced_within_its_lease() {
    let owner = test_keypair(1);
    let h = test_keypair(730);
    let p = test_keypair(731);
    let (mut near, item) = observer(&owner, 30_000); // saw H's renewal
    let (mut far, _) = observer(&owner, 30_000); // cut off from H: missed the renewal
    let hc = claim_env(&h, item, 1, 10_000, 10_000, 40_000);
    let renewal = claim_env(&h, item, 1, 10_000, 30_000, 60_000);
    let pc = claim_env(&p, item, 2, 42_000, 42_000, 72_000);
    for e in [&mut near, &mut far] {
        e.handle(Input::Message(Envelope::Claim(hc.clone())), 10_000).unwrap();
    }
    near.handle(Input::Message(Envelope::Claim(renewal.clone())), 30_000).unwrap();
    assert_eq!(
        near.handle(Input::Message(Envelope::Claim(pc.clone())), 42_000),
        Err(Reject::EpochRuleBroken)
    );
    far.handle(Input::Message(Envelope::Claim(pc.clone())), 42_000).unwrap();
    // The partition heals: H's result (made within its renewed lease) and later P's.
    let h_done = receipt_env(&h, renewal, 50_000, 0xaa);
    let p_done = receipt_env(&p, pc, 55_000, 0xbb);
    for e in [&mut near, &mut far] {
        e.handle(Input::Message(h_done.clone()), 56_000).unwrap();
        assert_eq!(e.handle(Input::Message(p_done.clone()), 56_000), Err(Reject::Stale));
        assert!(
            matches!(e.item_state(&item), Some(ItemState::Done { holder, epoch: 1, .. }) if holder == h.node_id())
        );
    }
}

/// The claim inside a node's own receipt or failure was checked when the work began; however
/// long ago that was, taking in the receipt or failure checks no signature strictly again.
#[test]
fn own_receipts_and_failures_do_not_check_the_embedded_claim_again() {
    let owner = test_keypair(1);
    for fail in [false, true] {
        let (mut e, item) = claimer(&owner, 30_000);
        while e.poll_output().is_some() {}
        // As if a great many other signatures had gone through the cache since the claim.
        crate::signed::clear_verified_cache();
        let before = crate::signed::strict_checks();
        let input = if fail {
            Input::WorkFailed { item, epoch: 1, reason: "gone".into(), retryable: true }
        } else {
            Input::WorkDone(WorkResult {
                item,
                epoch: 1,
                result: Digest([1; 32]),
                size: 9,
                ok: 1,
                failed: 0,
                parts: vec![],
            })
        };
        e.handle(input, 11_000).unwrap();
        let published = std::iter::from_fn(|| e.poll_output())
            .any(|o| matches!(o, Output::Publish(Envelope::Receipt(_) | Envelope::Failure(_))));
        assert!(published, "the receipt or failure was taken in and published");
        assert_eq!(crate::signed::strict_checks(), before, "failure: {fail}");
    }
}

#[test]
fn a_receipt_carries_each_parts_outcome_within_bounds() {
    let owner = test_keypair(1);
    let (mut e, item) = claimer(&owner, 30_000);
    while e.poll_output().is_some() {}
    let long = "x".repeat(1_000);
    let parts = vec![
        crate::message::PartOutcome::ok(200),
        crate::message::PartOutcome {
            status: 0,
            failure: Some(crate::message::PartFailure {
                class: crate::message::PartClass::Disallowed,
                reason: long,
            }),
            payload: None,
        },
    ];
    let done = Input::WorkDone(WorkResult {
        item,
        epoch: 1,
        result: Digest([1; 32]),
        size: 9,
        ok: 1,
        failed: 1,
        parts,
    });
    e.handle(done, 11_000).unwrap();
    let receipt = std::iter::from_fn(|| e.poll_output())
        .find_map(|o| match o {
            Output::Publish(Envelope::Receipt(r)) => Some(r),
            _ => None,
        })
        .expect("a receipt was published");
    let bytes = Envelope::Receipt(receipt).to_bytes();
    let Envelope::Receipt(back) = Envelope::from_bytes(&bytes).unwrap() else { panic!() };
    let r = back.verify().unwrap();
    assert_eq!(r.parts.len(), 2);
    assert_eq!(r.parts[0].failure, None);
    let failure = r.parts[1].failure.as_ref().unwrap();
    assert_eq!(failure.reason.len(), crate::message::PART_REASON_MAX);
    assert_eq!(failure.class, crate::message::PartClass::Disallowed, "the class survives the cut");
}

#[test]
fn after_a_failure_the_item_moves_on_to_another_node() {
    let owner = test_keypair(1);
    let mut net = Net::new(4, &owner, EngineConfig { capacity: 40, ..fast_config() });
    net.work_ms = 1_000_000; // nothing finishes by itself; the test fails items by hand
    let ids = publish_project(&mut net, &owner, 30_000, 40);
    net.run_until(10_000, |n| ids.iter().all(|i| n.engines.iter().any(|e| e.holds(i))));
    let holder_of = |net: &Net, item: &ItemId| (0..4).find(|&i| net.engines[i].holds(item));
    let first: Vec<usize> = ids.iter().map(|i| holder_of(&net, i).expect("held")).collect();
    for (item, &node) in ids.iter().zip(&first) {
        let fail =
            Input::WorkFailed { item: *item, epoch: 1, reason: "refused".into(), retryable: true };
        net.input(node, fail).unwrap();
    }
    let t = net.now + 20_000;
    net.run_until(t, |n| ids.iter().all(|i| n.engines.iter().any(|e| e.holds(i))));
    let moved = ids
        .iter()
        .zip(&first)
        .filter(|(item, node)| holder_of(&net, item).is_some_and(|h| h != **node))
        .count();
    // A node that failed an item goes behind every other node's turn for it: every failed
    // item changes hands (the same node would keep every one if the ranking stayed put, and
    // with only a fresh ranking per attempt about 1 in 4 would stay).
    assert_eq!(moved, 40, "only {moved} of 40 failed items moved to another node");
}

/// The projects a node's presence heartbeat lists, read from the outputs of one tick at `now`.
fn presence_projects(e: &mut Engine, now: u64) -> Vec<ProjectId> {
    e.handle(Input::Tick, now).unwrap();
    let mut listed = None;
    while let Some(out) = e.poll_output() {
        if let Output::Publish(Envelope::Presence(p)) = out {
            listed = Some(p.verify().unwrap().projects);
        }
    }
    listed.expect("a presence heartbeat was due")
}

#[test]
fn a_presence_copy_is_a_newer_heartbeat_a_peer_takes_and_the_older_one_a_duplicate() {
    let owner = test_keypair(1);
    let mut net = Net::new(2, &owner, fast_config());
    let now = 10_000;
    net.engines[0].handle(Input::Tick, now).unwrap();
    let mut first = None;
    while let Some(out) = net.engines[0].poll_output() {
        if let Output::Publish(env @ Envelope::Presence(_)) = out {
            first = Some(env);
        }
    }
    let first = first.expect("a heartbeat was due");
    let copy = net.engines[0].presence_copy(now);
    let (Envelope::Presence(a), Envelope::Presence(b)) = (&first, &copy) else { unreachable!() };
    let (a, b) = (a.verify().unwrap(), b.verify().unwrap());
    assert!(b.seq > a.seq, "the copy's sequence number follows: {} then {}", a.seq, b.seq);
    assert_eq!((a.projects, a.roles, a.capacity), (b.projects, b.roles, b.capacity));
    assert_ne!(first.to_bytes(), copy.to_bytes(), "gossip must see two messages");
    // Heard copy first (another topic was faster), the original is an old heartbeat.
    let peer = &mut net.engines[1];
    peer.handle(Input::Message(copy), now).unwrap();
    assert_eq!(peer.handle(Input::Message(first), now), Err(Reject::Duplicate));
    assert!(!Reject::Duplicate.penalize());
    assert_eq!(peer.peers().count(), 1);
}

#[test]
fn an_unsubscribed_engine_claims_nothing_of_the_project_and_leaves_it_out_of_presence() {
    let owner = test_keypair(1);
    let pid = manifest(&owner, 5_000, 0).id();
    let mut net = Net::new(2, &owner, fast_config());
    // Chosen before the project is known: remembered, and applied when it arrives.
    net.input(1, Input::Subscribe { project: pid, subscribed: false }).unwrap();
    assert!(!net.engines[1].is_subscribed(&pid));
    assert!(net.engines[0].is_subscribed(&pid));
    let ids = publish_project(&mut net, &owner, 5_000, 60);
    assert!(net.run_until(600_000, |n| n.all_done(&ids)), "not all done by t={}", net.now);
    assert_eq!(net.engines[1].stats().claims, 0);
    assert!(net.starts.iter().all(|(node, _)| *node == 0));
    assert_eq!(net.engines[0].stats().finished, 60);
    // The unsubscribed engine still follows the project's state.
    assert_eq!(net.engines[1].counts(Some(pid)).done, 60);
    // Its heartbeats do not list the project, so the other engine ranks without it.
    let listed = presence_projects(&mut net.engines[1], net.now + 1_000);
    assert!(!listed.contains(&pid) && !listed.is_empty(), "{listed:?}");
    let other = net.engines[1].node_id();
    assert!(!net.engines[0].peers.lists(&pid, &other));
    // Subscribing again lists it again.
    net.engines[1].handle(Input::Subscribe { project: pid, subscribed: true }, net.now).unwrap();
    assert!(net.engines[1].is_subscribed(&pid));
    assert_eq!(presence_projects(&mut net.engines[1], net.now + 1_000), vec![pid]);
}

#[test]
fn resubscribing_takes_items_again() {
    let owner = test_keypair(1);
    let pid = manifest(&owner, 5_000, 0).id();
    let mut net = Net::new(2, &owner, EngineConfig { capacity: 2, ..fast_config() });
    net.work_ms = 2_000;
    net.input(1, Input::Subscribe { project: pid, subscribed: false }).unwrap();
    let ids = publish_project(&mut net, &owner, 5_000, 40);
    net.run_until(5_000, |_| false);
    assert_eq!(net.engines[1].stats().claims, 0);
    net.input(1, Input::Subscribe { project: pid, subscribed: true }).unwrap();
    assert!(net.run_until(600_000, |n| n.all_done(&ids)), "not all done by t={}", net.now);
    assert!(net.engines[1].stats().claims > 5, "{}", net.engines[1].stats().claims);
    assert!(net.starts.iter().any(|(node, _)| *node == 1));
    let dups: u32 = net.executions.values().map(|c| c - 1).sum();
    assert_eq!(dups, 0);
}

#[test]
fn with_one_slot_the_higher_priority_projects_items_are_claimed_first() {
    let low_owner = test_keypair(1);
    let high_owner = test_keypair(2);
    let cfg = EngineConfig { capacity: 1, ..fast_config() };
    let mut e = Engine::new(cfg, test_keypair(9), [low_owner.public(), high_owner.public()], 0);
    let (low, high) = (manifest(&low_owner, 5_000, 0), manifest(&high_owner, 5_000, 0));
    e.handle(Input::SetPriority { project: high.id(), priority: 5 }, 0).unwrap();
    e.handle(Input::SetPriority { project: low.id(), priority: -1 }, 0).unwrap();
    assert_eq!((e.priority(&high.id()), e.priority(&low.id())), (5, -1));
    assert_eq!(e.priority(&ProjectId([3; 32])), 0);
    let mut net = Net { engines: vec![e], ..Net::new(0, &low_owner, fast_config()) };
    net.silenced = vec![false];
    // The low-priority project arrives first, so it would win on arrival order alone.
    let low_ids = publish_project(&mut net, &low_owner, 5_000, 5);
    let high_ids = publish_project(&mut net, &high_owner, 5_000, 5);
    let all: Vec<ItemId> = low_ids.iter().chain(&high_ids).copied().collect();
    assert!(net.run_until(600_000, |n| n.all_done(&all)), "not all done by t={}", net.now);
    let order: Vec<bool> = net.starts.iter().map(|(_, i)| high_ids.contains(i)).collect();
    assert_eq!(order, [vec![true; 5], vec![false; 5]].concat(), "high-priority items first");
    // Priority back to 0 is the default again.
    net.engines[0].handle(Input::SetPriority { project: high.id(), priority: 0 }, net.now).unwrap();
    assert_eq!(net.engines[0].priority(&high.id()), 0);
}

#[test]
fn an_item_the_top_ranks_pass_over_goes_to_the_next_rank_one_widening_step_each_later() {
    let owner = test_keypair(1);
    let cfg = fast_config();
    let (settle, widen) = (cfg.settle_ms, cfg.widen_ms);
    let mut net = Net::new(4, &owner, cfg);
    // Heartbeats go round and the warm-up ends: every engine ranks among all four.
    net.run_until(1_000, |_| false);
    let m = manifest(&owner, 5_000, 0);
    let b = batch(&owner, &m, 1);
    let item = b.verify().unwrap().items[0].id(&m.id());
    let ids: Vec<NodeId> = net.engines.iter().map(Engine::node_id).collect();
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by_key(|&i| hrw::rank(&item, &ids[i], &ids));
    // The two best-placed nodes are paused: ranks 0 and 1 pass the item over.
    net.input(order[0], Input::Pause(true)).unwrap();
    net.input(order[1], Input::Pause(true)).unwrap();
    let from = order[3];
    net.input(from, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
    let t0 = net.now;
    net.input(from, Input::Publish(Envelope::Batch(b))).unwrap();
    assert!(net.run_until(t0 + 10_000, |n| !n.starts.is_empty()), "nobody started");
    assert_eq!(net.starts, vec![(order[2], item)], "rank 2 takes it, and only rank 2");
    // Rank 2 may claim two widening steps after the item settled (then the claim settles).
    let eligible = t0 + net.latency_ms + settle + 2 * widen;
    assert!(net.now >= eligible && net.now < eligible + widen, "started at {}", net.now - t0);
}

#[test]
fn torrent_duties_go_only_to_nodes_that_seed_torrents() {
    use crate::item::TorrentSource;
    let owner = test_keypair(1);
    let plain = Roles(Roles::CRAWL.0 | Roles::SEED.0);
    let torrents = Roles(plain.0 | Roles::TORRENT.0);
    let engines = [plain, plain, plain, torrents]
        .into_iter()
        .enumerate()
        .map(|(i, roles)| {
            let cfg = EngineConfig { roles, ..fast_config() };
            Engine::new(cfg, test_keypair(2000 + i as u64), [owner.public()], i as u64)
        })
        .collect();
    let mut net = Net { engines, ..Net::new(0, &owner, fast_config()) };
    net.silenced = vec![false; 4];
    let m = manifest(&owner, 5_000, 0);
    let items: Vec<WorkItem> = (0..12u8)
        .map(|i| WorkItem::Torrent {
            info_hash: [i; 20],
            source: TorrentSource::Magnet(format!("magnet:?xt=urn:btih:{}", hex::encode([i; 20]))),
            replica: 0,
        })
        .collect();
    let b = Signed::sign(&owner, &ItemBatch { project: m.id(), seq: 1, items });
    let ids: Vec<ItemId> = b.verify().unwrap().items.iter().map(|w| w.id(&m.id())).collect();
    net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
    net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
    let held_by_3 = |n: &Net| {
        let me = n.engines[3].node_id();
        n.engines.iter().all(|e| {
            ids.iter().all(
                |i| matches!(e.item_state(i), Some(ItemState::Held { holder, .. }) if holder == me),
            )
        })
    };
    assert!(net.run_until(60_000, held_by_3), "not all held by the torrent node at {}", net.now);
    // Past the claim settle time, so every held duty has started.
    net.run_until(net.now + 1_000, |_| false);
    // Nobody else even tried, and no duty failed on a node that cannot run it.
    assert!(net.starts.iter().all(|(node, _)| *node == 3), "{:?}", net.starts);
    assert_eq!(net.starts.len(), 12);
    for e in &net.engines[..3] {
        assert_eq!(e.stats().claims, 0);
        assert_eq!(e.stats().failed, 0);
    }
    // The plain nodes rank torrent duties among torrent nodes only: the one there is.
    let third = net.engines[3].node_id();
    let role = Roles::for_work(&net.engines[0].items[&ids[0]].work);
    assert_eq!(role, Roles(Roles::SEED.0 | Roles::TORRENT.0));
    let ranked = net.engines[0].rank_peers(&m.id(), role, None);
    assert_eq!(&ranked[..], &[third]);
}

/// A presence for `key` at `at` (sequence `seq`) listing `projects`, with `roles`.
fn presence_env(
    key: &Keypair,
    seq: u64,
    at: u64,
    roles: Roles,
    projects: Vec<ProjectId>,
) -> Envelope {
    let p = Presence { seq, at_ms: at, capacity: 4, free: 4, roles, projects };
    Envelope::Presence(Signed::sign(key, &p))
}

#[test]
fn cached_ranks_carried_across_peer_changes_match_a_fresh_ranking() {
    let owner = test_keypair(1);
    let (mut e, m, ids) = knowing(&owner, fast_config(), 5_000, 120);
    // Each heard twice, so this node's clock is judged (claiming waits for that).
    for (i, seq) in (0..12u64).flat_map(|i| [(i, 1), (i, 2)]) {
        let env = presence_env(&test_keypair(300 + i), seq, 0, Roles::ALL, vec![m.id()]);
        e.handle(Input::Message(env), 0).unwrap();
    }
    // At the end of settling only rank 0 may claim: most rankings stop after a few peers.
    let base = fast_config().warmup_ms + fast_config().settle_ms;
    for id in &ids {
        e.on_item_timer(*id, base);
    }
    let partial = ids.iter().filter(|id| !e.items[*id].rank.unwrap().scan.complete()).count();
    assert!(partial > 60, "only {partial} of 120 rankings stopped early");
    let elsewhere = ProjectId([0xee; 32]);
    let now = base + 10;
    // Changes of every kind: peers moving to another project, losing the crawl role, joining
    // with this project, with no project at all, or only elsewhere, and leaving for good.
    let changes = [
        presence_env(&test_keypair(300), 3, now, Roles::ALL, vec![elsewhere]),
        presence_env(&test_keypair(301), 3, now, Roles::SEED, vec![m.id()]),
        presence_env(&test_keypair(302), 3, now, Roles::ALL, vec![]),
        presence_env(&test_keypair(400), 1, now, Roles::ALL, vec![m.id()]),
        presence_env(&test_keypair(401), 1, now, Roles::ALL, vec![]),
        presence_env(&test_keypair(402), 1, now, Roles::ALL, vec![elsewhere]),
        presence_env(&test_keypair(403), 1, now, Roles::SEED, vec![m.id(), elsewhere]),
    ];
    for env in changes {
        e.handle(Input::Message(env), now).unwrap();
    }
    e.peers.forget(&test_keypair(305).node_id());
    e.peers.forget(&test_keypair(306).node_id());
    for id in &ids {
        let fresh = e.my_rank(id, &m.id(), WorkKind::Crawl);
        assert_eq!(e.cached_rank(id), Some((fresh, true)), "item {id}");
    }
    // More changes than the log keeps: rankings start afresh, and still agree.
    for i in 0..70u64 {
        let env = presence_env(&test_keypair(500 + i), 1, now, Roles::ALL, vec![m.id()]);
        e.handle(Input::Message(env), now).unwrap();
    }
    for id in &ids {
        let fresh = e.my_rank(id, &m.id(), WorkKind::Crawl);
        assert_eq!(e.cached_rank(id), Some((fresh, false)), "item {id}");
    }
}

/// A node whose kept ranking has fallen behind a change of the peer set wakes no later than a
/// ranking started afresh would have it wake, so a turn that comes sooner (because peers above
/// it leave in the meantime) is not missed.
#[test]
fn after_peers_join_a_kept_ranking_wakes_when_a_fresh_one_would() {
    let owner = test_keypair(1);
    let cfg = fast_config();
    let (mut e, m, ids) = knowing(&owner, cfg.clone(), 5_000, 40);
    // Each heard twice, so this node's clock is judged (claiming waits for that).
    for (i, seq) in (0..12u64).flat_map(|i| [(i, 1), (i, 2)]) {
        let env = presence_env(&test_keypair(300 + i), seq, 0, Roles::ALL, vec![m.id()]);
        e.handle(Input::Message(env), 0).unwrap();
    }
    let base = cfg.warmup_ms + cfg.settle_ms;
    let step = |n: u64| base + n * cfg.widen_ms;
    // Three steps in, ranks up to 3 may claim and ranks up to 7 are scored in full.
    let id = *ids
        .iter()
        .find(|id| (4..=7).contains(&e.my_rank(id, &m.id(), WorkKind::Crawl)))
        .expect("an item ranked 4 to 7");
    let rank = e.my_rank(&id, &m.id(), WorkKind::Crawl);
    e.unschedule(id);
    e.on_item_timer(id, step(3));
    assert_eq!(e.items[&id].wake_at, Some(step(u64::from(rank))), "waits for its own step");
    // Ten peers that rank above this node join: it now ranks rank + 10.
    let mine = hrw::score(&id, &e.node_id());
    let above: Vec<Keypair> = (1000..)
        .map(test_keypair)
        .filter(|k| hrw::score(&id, &k.node_id()) > mine)
        .take(10)
        .collect();
    for k in &above {
        e.handle(Input::Message(presence_env(k, 1, 10, Roles::ALL, vec![m.id()])), 10).unwrap();
    }
    assert_eq!(e.my_rank(&id, &m.id(), WorkKind::Crawl), rank + 10);
    // At its step the kept ranking knows the rank exactly, but the node wakes when a fresh
    // ranking, which scores up to rank 2·limit + 1, would have it: at step 2·rank + 2.
    e.unschedule(id);
    e.on_item_timer(id, step(u64::from(rank)));
    let fresh = u64::from(2 * rank + 2).min(u64::from(rank + 10));
    assert_eq!(e.items[&id].wake_at, Some(step(fresh)));
    // By then most of the newcomers have gone, and the node takes its turn.
    for k in &above[..8] {
        e.peers.forget(&k.node_id());
    }
    assert!(e.my_rank(&id, &m.id(), WorkKind::Crawl) <= 2 * rank + 2);
    e.unschedule(id);
    e.on_item_timer(id, step(fresh));
    assert_eq!(e.items[&id].wake_at, None, "claimable now");
    assert!(e.ready.iter().any(|r| r.iter().any(|k| k.3 == id)));
}

/// Every item carries its kept ranking, so it stays small (it was 24 bytes before rankings
/// were carried across peer changes).
#[test]
fn a_kept_ranking_is_32_bytes() {
    assert!(std::mem::size_of::<Option<RankMemo>>() <= 32);
}

/// The sync digest buckets kept as items change are what a walk over the items gives, after
/// every kind of change: claim, failure (retried and final), result, release and a relay slot
/// replaced by a newer request.
#[test]
fn kept_digest_buckets_follow_every_change_of_an_item() {
    let owner = test_keypair(1);
    let cfg = EngineConfig { failures_max: 2, roles: Roles::ALL, ..fast_config() };
    let (mut e, m, ids) = knowing(&owner, cfg, 5_000, 3);
    let check = |e: &Engine, what: &str| {
        for p in [m.id(), relay_project()] {
            assert_eq!(e.kept_buckets(p), e.walk_buckets(p), "{what}");
        }
        e.kept_buckets(m.id()).iter().chain(&e.kept_buckets(relay_project())).any(|b| *b != [0; 8])
    };
    assert!(!check(&e, "unclaimed items add nothing"));
    let mut now = 10_000;
    for t in [now, now + 1_000] {
        e.handle(Input::Tick, t).unwrap();
    }
    now += 1_000;
    assert!(ids.iter().all(|id| e.holds(id)));
    assert!(check(&e, "claimed"));
    for attempt in 1..=2u32 {
        let failed = Input::WorkFailed {
            item: ids[0],
            epoch: attempt,
            reason: "boom".into(),
            retryable: attempt == 1,
        };
        e.handle(failed, now).unwrap();
        check(&e, "failed");
        if attempt == 1 {
            now = tick_until_held(&mut e, &ids[0], now, 60_000);
            check(&e, "claimed again");
        }
    }
    // Another node takes the next epoch and finds the item broken too: the quorum is made.
    for env in foreign_failure(&test_keypair(77), ids[0], 3, now, false) {
        e.handle(Input::Message(env), now).unwrap();
    }
    check(&e, "failed for the mesh");
    assert_eq!(e.item_state(&ids[0]), Some(ItemState::Failed { epoch: 3 }));
    let result = Digest([7; 32]);
    let done =
        WorkResult { item: ids[1], epoch: 1, result, size: 9, ok: 1, failed: 0, parts: vec![] };
    e.handle(Input::WorkDone(done), now).unwrap();
    assert!(matches!(e.item_state(&ids[1]), Some(ItemState::Done { .. })));
    check(&e, "done");
    // A relay slot, claimed, then replaced by the requester's newer request.
    let requester = test_keypair(50);
    for seq in 1..=2 {
        let req = crate::message::RelayRequest { seq, at_ms: now };
        e.handle(Input::Message(Envelope::RelayRequest(Signed::sign(&requester, &req))), now)
            .unwrap();
        check(&e, "relay request");
        for _ in 0..3 {
            now += 1_000;
            e.handle(Input::Tick, now).unwrap();
        }
        let slot = WorkItem::RelaySlot { requester: requester.node_id(), seq }.id(&relay_project());
        assert!(e.holds(&slot), "relay slot {seq} claimed");
        check(&e, "relay slot claimed");
    }
    e.handle(Input::Shutdown, now).unwrap();
    assert!(!e.holds(&ids[2]));
    check(&e, "released");
}

/// A node on the side that finished an item with the result that loses once a partition
/// heals passes the winning receipt on by gossip when it takes it, so the rest of its side
/// need not wait to learn it by sync one node at a time. A first result, or a losing one, is
/// not passed on by the engine.
#[test]
fn a_result_that_replaces_a_final_one_is_passed_on() {
    let owner = test_keypair(1);
    let h = test_keypair(730);
    let p = test_keypair(731);
    let (mut far, item) = observer(&owner, 30_000); // cut off from H: missed the renewal
    let hc = claim_env(&h, item, 1, 10_000, 10_000, 40_000);
    let renewal = claim_env(&h, item, 1, 10_000, 30_000, 60_000);
    let pc = claim_env(&p, item, 2, 42_000, 42_000, 72_000);
    far.handle(Input::Message(Envelope::Claim(hc)), 10_000).unwrap();
    far.handle(Input::Message(Envelope::Claim(pc.clone())), 42_000).unwrap();
    let published = |e: &mut Engine| -> Vec<Envelope> {
        std::iter::from_fn(|| e.poll_output())
            .filter_map(|o| match o {
                Output::Publish(env) => Some(env),
                _ => None,
            })
            .collect()
    };
    published(&mut far);
    // P's result arrives first and is final here, until H's (made within its lease) comes.
    let p_done = receipt_env(&p, pc, 55_000, 0xbb);
    far.handle(Input::Message(p_done.clone()), 55_000).unwrap();
    assert!(published(&mut far).is_empty(), "a first result is not passed on");
    let h_done = receipt_env(&h, renewal, 50_000, 0xaa);
    far.handle(Input::Message(h_done.clone()), 56_000).unwrap();
    assert!(
        matches!(far.item_state(&item), Some(ItemState::Done { holder, epoch: 1, .. }) if holder == h.node_id())
    );
    assert_eq!(published(&mut far), vec![h_done.clone()]);
    // The loser again, or the winner again, changes nothing and is not passed on.
    assert_eq!(far.handle(Input::Message(p_done), 57_000), Err(Reject::Stale));
    assert!(far.handle(Input::Message(h_done), 57_000).is_err());
    assert!(published(&mut far).is_empty());
}

/// A node that lost its state (a fresh start) and hears its own live claim back from a peer
/// gives the item back at once rather than leaving it held, unworked, until the lease ends; a
/// node that restored the claim from its own store works on, whatever copies come back.
#[test]
fn an_own_claim_heard_back_after_losing_state_is_given_back() {
    let owner = test_keypair(1);
    let (before, item) = claimer(&owner, 30_000);
    let own = before
        .snapshot()
        .records
        .into_iter()
        .find_map(|r| match r {
            Envelope::Claim(c) => Some(c),
            _ => None,
        })
        .expect("the held claim is in the snapshot");
    // The same key, started afresh: the claim comes back by sync.
    let (mut fresh, _) = observer(&owner, 30_000);
    while fresh.poll_output().is_some() {}
    fresh.handle(Input::Message(Envelope::Claim(own.clone())), 12_000).unwrap();
    assert!(!fresh.holds(&item), "given back");
    assert_eq!(fresh.item_state(&item), Some(ItemState::Open { epoch: 1 }));
    let outs: Vec<Output> = std::iter::from_fn(|| fresh.poll_output()).collect();
    assert!(outs.iter().any(|o| matches!(o, Output::Publish(Envelope::Release(_)))));
    assert!(!outs.iter().any(|o| matches!(o, Output::StartWork { .. })));
    // Restored from its own store, the node works on, and a copy heard back changes nothing.
    let mut restored =
        Engine::restore(fast_config(), test_keypair(9), before.snapshot(), 0, 12_000);
    assert!(restored.holds(&item));
    let _ = restored.handle(Input::Message(Envelope::Claim(own)), 12_100);
    assert!(restored.holds(&item));
    let outs: Vec<Output> = std::iter::from_fn(|| restored.poll_output()).collect();
    assert!(!outs.iter().any(|o| matches!(o, Output::Publish(Envelope::Release(_)))));
}

/// A node shown a renewal the others never saw (a holder can hand one out by sync only)
/// rejects the next epoch's result as early, but takes it in once the lease it knows of has
/// run out, instead of then taking the item for open and working it again. A bare early claim
/// is not kept: taken in late, it would outrank the claims made once the lease ran out.
#[test]
fn a_result_early_only_in_this_nodes_view_is_taken_in_when_the_lease_runs_out() {
    let owner = test_keypair(1);
    let (mut e, item) = observer(&owner, 30_000);
    let h = test_keypair(730);
    let p = test_keypair(731);
    let rogue = test_keypair(732);
    let hc = claim_env(&h, item, 1, 10_000, 10_000, 40_000);
    let renewal = claim_env(&h, item, 1, 10_000, 30_000, 60_000); // seen here only
    e.handle(Input::Message(Envelope::Claim(hc)), 10_000).unwrap();
    e.handle(Input::Message(Envelope::Claim(renewal)), 30_000).unwrap();
    // Elsewhere the lease ended at 40 s: P claims at epoch 2 and finishes.
    let pc = claim_env(&p, item, 2, 42_000, 42_000, 72_000);
    let early = claim_env(&rogue, item, 2, 41_000, 41_000, 71_000);
    assert_eq!(
        e.handle(Input::Message(Envelope::Claim(early)), 41_000),
        Err(Reject::EpochRuleBroken)
    );
    let p_done = receipt_env(&p, pc, 50_000, 0xbb);
    assert_eq!(e.handle(Input::Message(p_done), 50_000), Err(Reject::EpochRuleBroken));
    assert!(matches!(e.item_state(&item), Some(ItemState::Held { epoch: 1, .. })));
    let due = 60_000 - e.config().skew_margin_ms;
    assert!(e.next_wakeup().is_some_and(|t| t <= due), "wakes for the kept result");
    e.handle(Input::Tick, due).unwrap();
    assert!(
        matches!(e.item_state(&item), Some(ItemState::Done { holder, epoch: 2, .. }) if holder == p.node_id())
    );
    assert!(!e.holds(&item));
}

// ---- fencing: a result counts only under the claim the mesh agreed on for its epoch ----------

/// The keys of the fencing cases: H held epoch 1, P epoch 2, and L never held anything.
struct Fencing {
    owner: Keypair,
    h: Keypair,
    p: Keypair,
    l: Keypair,
}

impl Fencing {
    fn new() -> Self {
        Self {
            owner: test_keypair(1),
            h: test_keypair(740),
            p: test_keypair(741),
            l: test_keypair(742),
        }
    }

    /// H's claim of epoch 1 at 10 s (lease to 40 s, never renewed).
    fn hc(&self, item: ItemId) -> Signed<Claim> {
        claim_env(&self.h, item, 1, 10_000, 10_000, 40_000)
    }

    /// P's claim of epoch 2 at 42 s, after H's lease lapsed.
    fn pc(&self, item: ItemId) -> Signed<Claim> {
        claim_env(&self.p, item, 2, 42_000, 42_000, 72_000)
    }

    /// An observer that saw H hold epoch 1 and P take epoch 2 (and finish at 50 s if `done`).
    fn observer(&self, done: bool) -> (Engine, ItemId) {
        let (mut e, item) = observer(&self.owner, 30_000);
        e.handle(Input::Message(Envelope::Claim(self.hc(item))), 10_000).unwrap();
        e.handle(Input::Message(Envelope::Claim(self.pc(item))), 42_000).unwrap();
        if done {
            e.handle(Input::Message(receipt_env(&self.p, self.pc(item), 50_000, 0xbb)), 50_000)
                .unwrap();
        }
        (e, item)
    }
}

fn result_of(e: &Engine, item: &ItemId) -> Option<(NodeId, u32, Digest)> {
    match e.item_state(item) {
        Some(ItemState::Done { holder, epoch, result, .. }) => Some((holder, epoch, result)),
        _ => None,
    }
}

#[test]
fn a_peer_that_never_held_an_epoch_cannot_overwrite_a_finished_result() {
    let f = Fencing::new();
    let (mut e, item) = f.observer(true);
    // L's brand-new epoch-1 claim, made long after epoch 2 began, inside its own receipt.
    let forged = claim_env(&f.l, item, 1, 100_000, 100_000, 130_000);
    let r = e.handle(Input::Message(receipt_env(&f.l, forged, 100_000, 0xee)), 100_000);
    assert_eq!(r, Err(Reject::Fenced));
    assert!(Reject::Fenced.penalize(), "a fenced result costs its sender");
    assert_eq!(result_of(&e, &item), Some((f.p.node_id(), 2, Digest([0xbb; 32]))));
    let passed_on = std::iter::from_fn(|| e.poll_output())
        .any(|o| matches!(o, Output::Publish(Envelope::Receipt(r)) if r.signer() == f.l.public()));
    assert!(!passed_on, "the forged result is not passed on");
}

#[test]
fn a_peer_that_never_held_an_epoch_cannot_finish_an_item_held_at_a_later_one() {
    let f = Fencing::new();
    let (mut e, item) = f.observer(false);
    let forged = claim_env(&f.l, item, 1, 45_000, 45_000, 75_000);
    let r = e.handle(Input::Message(receipt_env(&f.l, forged, 45_000, 0xee)), 45_000);
    assert_eq!(r, Err(Reject::Fenced));
    assert!(
        matches!(e.item_state(&item), Some(ItemState::Held { holder, epoch: 2, .. }) if holder == f.p.node_id())
    );
}

#[test]
fn a_forged_claim_outranked_by_the_epochs_holder_is_fenced_on_every_node() {
    let f = Fencing::new();
    let (mut e, item) = f.observer(true);
    // Began before epoch 2 did, but after H's claim of the same epoch: H held epoch 1.
    let forged = claim_env(&f.l, item, 1, 20_000, 20_000, 50_000);
    let bogus = receipt_env(&f.l, forged, 35_000, 0xee);
    assert_eq!(e.handle(Input::Message(bogus.clone()), 55_000), Err(Reject::Fenced));
    // A node that learns the item by sync alone has the same evidence.
    let (mut late, _) = observer(&f.owner, 30_000);
    let delta = e.sync_delta(&late.sync_digest());
    for env in delta.envelopes {
        let _ = late.handle(Input::Message(env), 56_000);
    }
    assert_eq!(result_of(&late, &item), Some((f.p.node_id(), 2, Digest([0xbb; 32]))));
    assert_eq!(late.handle(Input::Message(bogus.clone()), 56_000), Err(Reject::Fenced));
    // And so does a node restored from its snapshot.
    let mut restored = Engine::restore(fast_config(), test_keypair(9), e.snapshot(), 0, 57_000);
    assert_eq!(restored.handle(Input::Message(bogus), 57_000), Err(Reject::Fenced));
    assert_eq!(result_of(&restored, &item), Some((f.p.node_id(), 2, Digest([0xbb; 32]))));
}

#[test]
fn a_same_epoch_result_with_a_later_since_is_fenced() {
    let f = Fencing::new();
    let (mut e, item) = observer(&f.owner, 30_000);
    e.handle(Input::Message(Envelope::Claim(f.hc(item))), 10_000).unwrap();
    e.handle(Input::Message(receipt_env(&f.h, f.hc(item), 30_000, 0xaa)), 30_000).unwrap();
    let forged = claim_env(&f.l, item, 1, 31_000, 31_000, 61_000);
    let r = e.handle(Input::Message(receipt_env(&f.l, forged, 32_000, 0xee)), 32_000);
    assert_eq!(r, Err(Reject::Fenced));
    assert_eq!(result_of(&e, &item), Some((f.h.node_id(), 1, Digest([0xaa; 32]))));
}

#[test]
fn replayed_and_late_receipts_change_nothing_and_are_not_blamed() {
    let f = Fencing::new();
    let (mut e, item) = f.observer(true);
    let p_done = receipt_env(&f.p, f.pc(item), 50_000, 0xbb);
    assert_eq!(e.handle(Input::Message(p_done), 60_000), Err(Reject::Duplicate));
    // H finished after its lease ran out and P had taken epoch 2: late, not lying.
    let h_late = receipt_env(&f.h, f.hc(item), 45_000, 0xaa);
    assert_eq!(e.handle(Input::Message(h_late), 60_000), Err(Reject::Stale));
    assert_eq!(result_of(&e, &item), Some((f.p.node_id(), 2, Digest([0xbb; 32]))));
}

#[test]
fn a_holder_that_released_its_epoch_cannot_finish_it() {
    let f = Fencing::new();
    for p_done in [false, true] {
        let (mut e, item) = observer(&f.owner, 30_000);
        e.handle(Input::Message(Envelope::Claim(f.hc(item))), 10_000).unwrap();
        let rel = Envelope::Release(Signed::sign(
            &f.h,
            &Release { item, epoch: 1, at_ms: 20_000, cooldown_until_ms: None, drain_ms: None },
        ));
        e.handle(Input::Message(rel), 20_000).unwrap();
        let pc = claim_env(&f.p, item, 2, 21_000, 21_000, 51_000);
        e.handle(Input::Message(Envelope::Claim(pc.clone())), 21_000).unwrap();
        if p_done {
            e.handle(Input::Message(receipt_env(&f.p, pc, 30_000, 0xbb)), 30_000).unwrap();
        }
        // H's result, dated inside its lease and before the release, after all.
        let r = e.handle(Input::Message(receipt_env(&f.h, f.hc(item), 19_000, 0xaa)), 31_000);
        assert_eq!(r, Err(Reject::Fenced), "P finished: {p_done}");
        let holder = match e.item_state(&item) {
            Some(ItemState::Held { holder, .. } | ItemState::Done { holder, .. }) => holder,
            other => panic!("unexpected state {other:?}"),
        };
        assert_eq!(holder, f.p.node_id());
    }
}

#[test]
fn an_honest_result_from_within_its_renewed_lease_still_beats_an_early_next_epoch() {
    // The fencing rule keeps what partitions need: H renewed (unseen by P's side), so P's
    // claim was early, and H's result from inside its lease stands.
    let f = Fencing::new();
    let (mut e, item) = f.observer(true);
    let renewal = claim_env(&f.h, item, 1, 10_000, 30_000, 60_000);
    e.handle(Input::Message(receipt_env(&f.h, renewal, 45_000, 0xaa)), 60_000).unwrap();
    assert_eq!(result_of(&e, &item), Some((f.h.node_id(), 1, Digest([0xaa; 32]))));
}

/// Every order of the same honest and forged messages, delivered twice (gossip, then a sync
/// that repeats them), leaves an observer with the agreed holder's result.
#[test]
fn any_order_of_honest_and_forged_results_ends_with_the_agreed_result() {
    let f = Fencing::new();
    let (_, item) = observer(&f.owner, 30_000);
    let msgs = [
        Envelope::Claim(f.hc(item)),
        Envelope::Claim(f.pc(item)),
        receipt_env(&f.p, f.pc(item), 50_000, 0xbb),
        receipt_env(&f.l, claim_env(&f.l, item, 1, 100_000, 100_000, 130_000), 100_000, 0xe1),
        receipt_env(&f.l, claim_env(&f.l, item, 1, 20_000, 20_000, 50_000), 35_000, 0xe2),
        receipt_env(&f.l, claim_env(&f.l, item, 1, 45_000, 45_000, 75_000), 46_000, 0xe3),
    ];
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    let mut seen = 0;
    // Heap's algorithm over all 720 orders.
    let mut c = vec![0usize; order.len()];
    let mut check = |order: &[usize]| {
        let (mut e, _) = observer(&f.owner, 30_000);
        for round in 0..2 {
            for &i in order {
                let _ = e.handle(Input::Message(msgs[i].clone()), 200_000 + round);
            }
        }
        assert_eq!(
            result_of(&e, &item),
            Some((f.p.node_id(), 2, Digest([0xbb; 32]))),
            "order {order:?}"
        );
        seen += 1;
    };
    check(&order);
    let mut i = 0;
    while i < order.len() {
        if c[i] < i {
            if i % 2 == 0 {
                order.swap(0, i)
            } else {
                order.swap(c[i], i)
            }
            check(&order);
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    assert_eq!(seen, 720);
}

#[test]
fn a_holder_cannot_claim_the_next_epoch_inside_its_own_lease_and_finish_it() {
    let f = Fencing::new();
    let (mut e, item) = observer(&f.owner, 30_000);
    // L held epoch 1 (lease to 40 s); P took epoch 2 after it lapsed.
    let lc = claim_env(&f.l, item, 1, 10_000, 10_000, 40_000);
    e.handle(Input::Message(Envelope::Claim(lc)), 10_000).unwrap();
    e.handle(Input::Message(Envelope::Claim(f.pc(item))), 42_000).unwrap();
    // Later, L shows a result at epoch... 2 is P's; so L forges epoch 2 early in its own lease.
    let early = claim_env(&f.l, item, 2, 25_000, 25_000, 55_000);
    let r = e.handle(Input::Message(receipt_env(&f.l, early, 26_000, 0xee)), 43_000);
    // Same epoch as P, an earlier start: the claim order alone would let it win.
    assert_eq!(r, Err(Reject::Fenced));
    assert!(
        matches!(e.item_state(&item), Some(ItemState::Held { holder, epoch: 2, .. }) if holder == f.p.node_id())
    );
}

#[test]
fn a_holder_cannot_skip_epochs_inside_its_own_lease_unless_an_epoch_between_is_known() {
    // `byzantine` seed 268: a liar renewed its lease to a few nodes only, and those took its
    // result under its own claim two epochs on, made while that lease still ran.
    let f = Fencing::new();
    let (mut e, item) = observer(&f.owner, 30_000);
    let l1 = claim_env(&f.l, item, 1, 10_000, 10_000, 40_000);
    e.handle(Input::Message(Envelope::Claim(l1.clone())), 10_000).unwrap();
    let l3 = claim_env(&f.l, item, 3, 30_000, 30_000, 60_000);
    let r = e.handle(Input::Message(receipt_env(&f.l, l3.clone(), 31_000, 0xee)), 45_000);
    assert_eq!(r, Err(Reject::Fenced), "sent after the lease it skipped ran out");
    assert!(result_of(&e, &item).is_none());
    // The honest case: L's view moved on through P's epoch 2 (taken and let go inside L's
    // lease); once that epoch is known here, the same result stands.
    let (mut e, item) = observer(&f.owner, 30_000);
    e.handle(Input::Message(Envelope::Claim(l1)), 10_000).unwrap();
    let p2 = claim_env(&f.p, item, 2, 20_000, 20_000, 35_000);
    e.handle(Input::Message(Envelope::Claim(p2)), 41_000).unwrap();
    e.handle(Input::Message(receipt_env(&f.l, l3, 31_000, 0xee)), 45_000).unwrap();
    assert_eq!(result_of(&e, &item), Some((f.l.node_id(), 3, Digest([0xee; 32]))));
}

#[test]
fn a_result_under_a_claim_first_heard_with_it_waits_for_rival_claims() {
    let f = Fencing::new();
    let (mut e, item) = observer(&f.owner, 30_000);
    // L's claim and result arrive together, before H's earlier claim of the same epoch.
    let lc = claim_env(&f.l, item, 1, 10_500, 10_500, 40_500);
    let bogus = receipt_env(&f.l, lc, 10_500, 0xee);
    assert_eq!(e.handle(Input::Message(bogus), 10_600), Err(Reject::Settling));
    assert!(!Reject::Settling.penalize(), "settling is no fault of the sender");
    assert!(result_of(&e, &item).is_none());
    // H's claim, made first, arrives within the settle time and outranks L's.
    e.handle(Input::Message(Envelope::Claim(f.hc(item))), 11_000).unwrap();
    e.handle(Input::Tick, 10_500 + RESULT_SETTLE_MS).unwrap();
    assert!(result_of(&e, &item).is_none(), "the held-back result is fenced");
    assert!(
        matches!(e.item_state(&item), Some(ItemState::Held { holder, epoch: 1, .. }) if holder == f.h.node_id())
    );
    // Without a rival, the same kind of result is taken in once it has settled.
    let (mut e, item) = observer(&f.owner, 30_000);
    let lc = claim_env(&f.l, item, 1, 10_500, 10_500, 40_500);
    assert_eq!(
        e.handle(Input::Message(receipt_env(&f.l, lc, 10_500, 0xee)), 10_600),
        Err(Reject::Settling)
    );
    e.handle(Input::Tick, 10_500 + RESULT_SETTLE_MS).unwrap();
    assert_eq!(result_of(&e, &item), Some((f.l.node_id(), 1, Digest([0xee; 32]))));
}

#[test]
fn evidence_that_comes_late_withdraws_a_result_and_hands_the_item_to_the_epochs_holder() {
    let f = Fencing::new();
    let (mut e, item) = observer(&f.owner, 30_000);
    let project = e.item_work(&item).map(|(p, _)| p).expect("item known");
    // L's claim and result arrive alone, and settle: this node takes L's result.
    let lc = claim_env(&f.l, item, 1, 12_000, 12_000, 42_000);
    let bogus = receipt_env(&f.l, lc, 12_000, 0xee);
    assert_eq!(e.handle(Input::Message(bogus), 12_100), Err(Reject::Settling));
    e.handle(Input::Tick, 12_000 + RESULT_SETTLE_MS).unwrap();
    assert_eq!(result_of(&e, &item), Some((f.l.node_id(), 1, Digest([0xee; 32]))));
    // H's claim of the same epoch, made first, arrives late: L never held the epoch.
    e.handle(Input::Message(Envelope::Claim(f.hc(item))), 15_000).unwrap_err();
    assert!(
        matches!(e.item_state(&item), Some(ItemState::Held { holder, epoch: 1, .. }) if holder == f.h.node_id()),
        "{:?}",
        e.item_state(&item)
    );
    assert_eq!(e.stats().withdrawn, 1);
    assert_eq!(e.kept_buckets(project), e.walk_buckets(project), "digest buckets follow");
    // H's result is then taken in.
    e.handle(Input::Message(receipt_env(&f.h, f.hc(item), 20_000, 0xaa)), 20_000).unwrap();
    assert_eq!(result_of(&e, &item), Some((f.h.node_id(), 1, Digest([0xaa; 32]))));
}

#[test]
fn a_node_with_a_local_fault_gives_its_items_back_and_resumes_when_it_clears() {
    let owner = test_keypair(1);
    let mut net = Net::new(3, &owner, fast_config());
    net.work_ms = 1_000_000;
    let ids = publish_project(&mut net, &owner, 5_000, 12);
    net.run_until(10_000, |n| n.engines[0].local_work().count() > 0);
    let held: Vec<ItemId> = net.engines[0].local_work().map(|l| l.item).collect();
    assert!(!held.is_empty());
    net.input(0, Input::LocalFault(true)).unwrap();
    assert!(net.engines[0].is_unfit());
    assert_eq!(net.engines[0].local_work().count(), 0, "held items kept through a fault");
    assert_eq!(net.engines[0].stats().gave_back, held.len() as u64);
    // Given back with releases: the others take every item at once, nothing failed.
    let t = net.now + 5_000;
    net.run_until(t, |n| held.iter().all(|i| n.engines[1].holds(i) || n.engines[2].holds(i)));
    for id in &ids {
        for e in &net.engines {
            assert!(!matches!(e.item_state(id), Some(ItemState::Failed { .. })));
        }
    }
    let t = net.now + 3_000;
    net.run_until(t, |_| false);
    assert_eq!(net.engines[0].local_work().count(), 0, "claimed while unfit");
    // Cleared: it claims again, here the items the others give back as they shut down
    // (some of them ones it gave back itself, within what was its lease).
    net.input(0, Input::LocalFault(false)).unwrap();
    net.input(1, Input::Shutdown).unwrap();
    net.input(2, Input::Shutdown).unwrap();
    let t = net.now + 10_000;
    assert!(net.run_until(t, |n| n.engines[0].local_work().count() == 4), "never claimed again");
}

#[test]
fn a_node_whose_clock_is_off_against_its_peers_stops_claiming_until_it_is_back() {
    let owner = test_keypair(1);
    let (mut e, item) = claimer(&owner, 60_000);
    let peers: Vec<Keypair> = (0..3).map(|i| test_keypair(500 + i)).collect();
    let heartbeats = |e: &mut Engine, seq: u64, at: u64, now: u64| {
        for k in &peers {
            let _ = e.handle(Input::Message(presence_env(k, seq, at, Roles::ALL, vec![])), now);
        }
    };
    // The peers' clocks run 30 s ahead of this node's: this one is off.
    let mut now = 10_100;
    for seq in 1..=2 {
        heartbeats(&mut e, seq, now + 30_000, now);
        now += 200;
    }
    now = e.next_wakeup().unwrap().max(now);
    e.handle(Input::Tick, now).unwrap();
    let clock = e.clock();
    assert_eq!(clock.peers, 3);
    assert!(clock.offset_ms.is_some_and(|o| o >= 29_000), "{clock:?}");
    assert!(clock.off);
    assert!(!e.holds(&item), "kept its item with a clock 30 s off");
    assert!(matches!(e.item_state(&item), Some(ItemState::Open { .. })), "given back");
    // Two peers, or peers within the margin, are not enough to call it off: its clock is
    // judged against the median.
    for seq in 3..=4 {
        heartbeats(&mut e, seq, now + 20, now);
        now += 200;
    }
    now = e.next_wakeup().unwrap().max(now);
    e.handle(Input::Tick, now).unwrap();
    assert!(!e.clock().off, "{:?}", e.clock());
    tick_until_held(&mut e, &item, now, 10_000);
}

/// The seeding duties of a result that is replaced go with it: every node drops the same
/// ones (those not done yet) and derives the new result's.
#[test]
fn a_replaced_results_seeding_duties_are_dropped() {
    let owner = test_keypair(1);
    let (h, p) = (test_keypair(730), test_keypair(731));
    let m = manifest(&owner, 30_000, 2);
    let b = batch(&owner, &m, 1);
    let item = b.verify().unwrap().items[0].id(&m.id());
    let mut far = Engine::new(fast_config(), test_keypair(9), [owner.public()], 0);
    far.handle(Input::Message(Envelope::Manifest(Signed::sign(&owner, &m))), 0).unwrap();
    far.handle(Input::Message(Envelope::Batch(b)), 0).unwrap();
    let hc = claim_env(&h, item, 1, 10_000, 10_000, 40_000);
    let renewal = claim_env(&h, item, 1, 10_000, 30_000, 60_000);
    let pc = claim_env(&p, item, 2, 42_000, 42_000, 72_000);
    far.handle(Input::Message(Envelope::Claim(hc)), 10_000).unwrap();
    far.handle(Input::Message(Envelope::Claim(pc.clone())), 42_000).unwrap();
    let duties = |e: &Engine| -> Vec<Digest> {
        let mut v: Vec<Digest> = e
            .items()
            .filter_map(|(id, _, _)| match e.item_work(&id) {
                Some((_, WorkItem::SeedDuty { result, .. })) => Some(*result),
                _ => None,
            })
            .collect();
        v.sort();
        v
    };
    far.handle(Input::Message(receipt_env(&p, pc, 55_000, 0xbb)), 55_000).unwrap();
    let first = duties(&far);
    assert_eq!(first.len(), 2, "k = 2 duties for the first result");
    far.handle(Input::Message(receipt_env(&h, renewal, 50_000, 0xaa)), 56_000).unwrap();
    let after = duties(&far);
    assert_eq!(after.len(), 2, "the replaced result's duties linger: {after:?}");
    assert!(after.iter().all(|d| !first.contains(d)), "{first:?} -> {after:?}");
    assert_eq!(far.stats().duties_dropped, 2);
    let m = m.id();
    assert_eq!(far.kept_buckets(m), far.walk_buckets(m));
}

#[test]
fn one_owner_cannot_fill_the_project_cap_for_every_other_owner() {
    let greedy = test_keypair(31);
    let other = test_keypair(32);
    let cfg = EngineConfig { projects_per_owner_max: 3, projects_max: 10, ..fast_config() };
    let mut e = Engine::new(cfg, test_keypair(9), [greedy.public(), other.public()], 0);
    let named = |owner: &Keypair, name: String| {
        let m = ProjectManifest { name, ..manifest(owner, 5_000, 0) };
        Input::Message(Envelope::Manifest(Signed::sign(owner, &m)))
    };
    for i in 0..3 {
        e.handle(named(&greedy, format!("g{i}")), 0).unwrap();
    }
    assert_eq!(e.handle(named(&greedy, "g3".into()), 0), Err(Reject::Full));
    // A newer version of a project already held is not a new project.
    let v2 = ProjectManifest { name: "g0".into(), version: 2, ..manifest(&greedy, 5_000, 0) };
    e.handle(Input::Message(Envelope::Manifest(Signed::sign(&greedy, &v2))), 0).unwrap();
    for i in 0..3 {
        e.handle(named(&other, format!("o{i}")), 0).unwrap();
    }
    assert_eq!(e.projects().count(), 6);
}

#[test]
fn engine_settings_have_ranges_and_the_defaults_are_within_them() {
    EngineConfig::default().validate().unwrap();
    fast_config().validate().unwrap();
    let huge = EngineConfig { warmup_ms: u64::MAX, ..EngineConfig::default() };
    let err = huge.validate().unwrap_err();
    assert_eq!(
        err,
        ConfigError::OutOfRange { name: "warmup_ms", value: u64::MAX, min: 0, max: 3_600_000 }
    );
    assert!(err.to_string().contains("warmup_ms = 18446744073709551615"), "{err}");
    for bad in [
        EngineConfig { presence_ttl_ms: u64::MAX, ..EngineConfig::default() },
        EngineConfig { settle_ms: u64::MAX, ..EngineConfig::default() },
        EngineConfig { presence_interval_ms: 0, ..EngineConfig::default() },
        EngineConfig { candidates: 0, ..EngineConfig::default() },
        EngineConfig { projects_per_owner_max: 2_000, ..EngineConfig::default() },
    ] {
        assert!(matches!(bad.validate(), Err(ConfigError::OutOfRange { .. })), "{bad:?}");
    }
    let inverted =
        EngineConfig { presence_interval_ms: 5_000, presence_ttl_ms: 5_000, ..Default::default() };
    assert!(matches!(inverted.validate(), Err(ConfigError::Order { .. })));
    // Every range's edges are accepted.
    for (name, _, min, max) in EngineConfig::default().ranges() {
        assert!(min <= max, "{name}");
    }
}

#[test]
fn huge_unchecked_durations_saturate_instead_of_wrapping_into_a_claim_at_once() {
    // A config that skipped `validate` (a simulator scenario, say): a warmup of u64::MAX ms
    // must mean "never", not wrap to the past and claim at once (nor panic in a debug build).
    let owner = test_keypair(1);
    let cfg = EngineConfig {
        warmup_ms: u64::MAX,
        settle_ms: u64::MAX,
        presence_ttl_ms: u64::MAX,
        skew_margin_ms: u64::MAX,
        ..fast_config()
    };
    let (mut e, _, ids) = knowing(&owner, cfg, 5_000, 2);
    for now in [1_000, 10_000, 1_000_000] {
        e.handle(Input::Tick, now).unwrap();
    }
    assert!(ids.iter().all(|i| !e.holds(i)), "claimed although the warmup never ends");
    assert!(e.next_wakeup().is_none_or(|t| t >= 1_000_000), "a deadline wrapped to the past");
}

/// An engine holding one item, with `plant` planted in its state; the next `handle` checks
/// the engine's invariants (debug builds only) and must panic.
#[cfg(debug_assertions)]
fn planted(plant: super::invariants::Plant) {
    let owner = test_keypair(1);
    let (mut e, item) = claimer(&owner, 30_000);
    // Untouched, the checks pass.
    e.handle(Input::Tick, 10_001).unwrap();
    e.plant(plant, &item);
    // An input that changes nothing else (a tick could tidy the ready set first).
    let _ = e.handle(Input::Trust(owner.public()), 10_002);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "is not held here")]
fn the_invariant_check_catches_local_work_not_held() {
    planted(super::invariants::Plant::LocalAtOtherEpoch);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "under a running lease but is no local work")]
fn the_invariant_check_catches_a_held_item_not_worked() {
    planted(super::invariants::Plant::HeldNotLocal);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "off the agenda")]
fn the_invariant_check_catches_a_wake_time_off_the_agenda() {
    planted(super::invariants::Plant::WakeOffAgenda);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "digest buckets of")]
fn the_invariant_check_catches_drifted_digest_buckets() {
    planted(super::invariants::Plant::BucketDrift);
}

#[test]
fn local_full_answers_are_counted_apart_from_rejected_messages() {
    let cfg = EngineConfig { projects_max: 1, ..fast_config() };
    let mut e = Engine::new(cfg, test_keypair(9), [], 0);
    let (a, b) = (ProjectId([1; 32]), ProjectId([2; 32]));
    e.handle(Input::SetPriority { project: a, priority: 1 }, 0).unwrap();
    let r = e.handle(Input::SetPriority { project: b, priority: 1 }, 0);
    assert_eq!(r, Err(Reject::Full));
    assert_eq!((e.stats().full, e.stats().rejected_for(Reject::Full)), (1, 0));
}

mod host_lanes {
    use super::*;
    use crate::manifest::RateScope;
    use std::collections::BTreeSet;

    const HOST: &str = "example.test";

    fn lane_project(net: &mut Net, owner: &Keypair, rate: RatePolicy) -> ProjectId {
        let mut m = manifest(owner, 30_000, 0);
        m.rate = rate;
        let b = batch(owner, &m, 3);
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(owner, &m)))).unwrap();
        net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
        // Warm up, so presence and the project reach everyone.
        net.run_until(1_000, |_| false);
        m.id()
    }

    /// `n` nodes on a default-rate lane project, node 0 wanting (and so holding) the lane,
    /// run on `ms` past the warm-up.
    fn held_by_node_0(n: usize, ms: u64) -> (Net, ProjectId) {
        let owner = test_keypair(1);
        let mut net = Net::new(n, &owner, fast_config());
        let p = lane_project(&mut net, &owner, RatePolicy::default());
        want(&mut net, 0, p, true);
        let until = net.now + ms;
        net.run_until(until, |_| false);
        (net, p)
    }

    fn want(net: &mut Net, node: usize, project: ProjectId, wanted: bool) {
        let host = HOST.to_owned();
        net.input(node, Input::WantLane { project, host, wanted, drain_ms: LANE_DRAIN_MS })
            .unwrap();
    }

    /// The nodes whose lanes of the host have started and are held, in each node's own view.
    fn fetching(net: &Net, project: &ProjectId) -> Vec<usize> {
        (0..net.engines.len())
            .filter(|&i| net.engines[i].may_fetch(project, HOST, net.now))
            .collect()
    }

    /// Steps the network to `until`, checking after every step that no more than `lanes`
    /// nodes may fetch from the host at once; returns the most seen.
    fn run_checked(net: &mut Net, project: &ProjectId, lanes: usize, until: u64) -> usize {
        let mut most = 0;
        while net.step(until) {
            let now = fetching(net, project).len();
            assert!(now <= lanes, "{now} nodes fetch from one host with {lanes} lanes");
            most = most.max(now);
        }
        most
    }

    /// `n` nodes that all want the host's lanes, once the lanes have settled: each of the
    /// `rate.lanes` lanes has one fetching holder.
    fn contended(n: usize, rate: RatePolicy) -> (Net, ProjectId) {
        let owner = test_keypair(1);
        let mut net = Net::new(n, &owner, fast_config());
        let p = lane_project(&mut net, &owner, rate);
        for i in 0..n {
            want(&mut net, i, p, true);
        }
        let until = net.now + 3_000;
        let lanes = usize::from(rate.lanes);
        assert_eq!(run_checked(&mut net, &p, lanes, until), lanes, "every lane has a holder");
        (net, p)
    }

    #[test]
    fn lanes_are_derived_per_host_and_only_under_mesh_scope() {
        let owner = test_keypair(1);
        let mut net = Net::new(1, &owner, fast_config());
        let rate = RatePolicy { lanes: 3, ..RatePolicy::default() };
        let p = lane_project(&mut net, &owner, rate);
        assert_eq!(net.engines[0].lane_ids(&p, HOST).len(), 3);
        assert!(net.engines[0].lane_ids(&p, "other.test").is_empty());
        let c = net.engines[0].counts(Some(p));
        assert_eq!(c.open + c.held + c.done, 3, "lanes are not counted as work");
        assert_eq!(net.engines[0].rate_scope(&p), Some(RateScope::Mesh));

        let owner2 = test_keypair(2);
        let mut net = Net::new(1, &owner2, fast_config());
        let rate = RatePolicy { scope: RateScope::Node, ..RatePolicy::default() };
        let p = lane_project(&mut net, &owner2, rate);
        assert!(net.engines[0].lane_ids(&p, HOST).is_empty());
        assert_eq!(net.engines[0].rate_scope(&p), Some(RateScope::Node));
    }

    #[test]
    fn one_lane_has_one_fetching_holder_and_passes_on_when_its_demand_ends() {
        let (mut net, p) = contended(4, RatePolicy::default());
        // Each holder in turn finishes with the host; every node gets its turn, one at a time.
        let mut served = BTreeSet::new();
        for _ in 0..4 {
            let holder = fetching(&net, &p)[0];
            assert!(served.insert(holder), "node {holder} held the lane twice");
            want(&mut net, holder, p, false);
            let until = net.now + 2_000;
            run_checked(&mut net, &p, 1, until);
            if served.len() < 4 {
                assert_eq!(fetching(&net, &p).len(), 1, "the lane passed on");
            }
        }
        assert!(fetching(&net, &p).is_empty(), "nobody wants it: nobody holds it");
    }

    #[test]
    fn a_host_gets_at_most_lanes_holders_and_each_node_one_lane() {
        let (net, p) = contended(6, RatePolicy { lanes: 2, ..RatePolicy::default() });
        for e in &net.engines {
            let held = e.lane_ids(&p, HOST).iter().filter(|id| e.holds(id)).count();
            assert!(held <= 1, "a node holds {held} lanes of one host");
        }
    }

    #[test]
    fn a_refusal_holds_every_node_off_the_host_until_the_cooldown_ends() {
        let (mut net, p) = contended(3, RatePolicy::default());
        let holder = fetching(&net, &p)[0];
        let until_ms = net.now + 5_000;
        let host = HOST.to_owned();
        net.input(holder, Input::HostRefused { project: p, host, until_ms }).unwrap();
        // Everyone hears of the cooldown and nobody fetches or claims before it ends.
        let mut seen = 0;
        while net.step(until_ms) {
            assert!(fetching(&net, &p).is_empty(), "a node fetches inside the cooldown");
            seen = net.cooldowns.iter().filter(|(_, t)| *t == until_ms).count();
        }
        assert_eq!(seen, 2, "both other nodes were told of the cooldown");
        for e in &net.engines {
            assert_eq!(e.cooldown_of(&p, HOST), Some(until_ms));
        }
        // Then the lane is taken up again.
        let after = net.now + 2_000;
        assert_eq!(run_checked(&mut net, &p, 1, after), 1, "the host is worked again");
    }

    #[test]
    fn a_holder_cannot_hold_the_mesh_off_a_host_for_longer_than_the_cap() {
        let (mut net, p) = held_by_node_0(2, 2_000);
        assert!(net.engines[0].may_fetch(&p, HOST, net.now));
        // A liar (or a host) asks for a year: every node keeps ten minutes at most.
        let year = net.now + 365 * 24 * 3_600_000;
        // Its release, as a lying holder would sign it, taken in by the other node.
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        let Some(ItemState::Held { epoch, .. }) = net.engines[0].item_state(&lane) else {
            panic!("lane not held");
        };
        let lie = Release {
            item: lane,
            epoch,
            at_ms: net.now,
            cooldown_until_ms: Some(year),
            drain_ms: None,
        };
        let lie = Envelope::Release(Signed::sign(&test_keypair(1000), &lie));
        net.input(1, Input::Message(lie)).unwrap();
        let host = HOST.to_owned();
        net.input(0, Input::HostRefused { project: p, host, until_ms: year }).unwrap();
        let until = net.now + 1_000;
        net.run_until(until, |_| false);
        for e in &net.engines {
            let t = e.cooldown_of(&p, HOST).expect("cooldown known");
            assert!(t <= net.now + LANE_COOLDOWN_MAX_MS, "cooldown {t} past the cap");
        }
    }

    #[test]
    fn the_next_holder_starts_no_sooner_than_the_drain_after_a_release() {
        let (mut net, p) = held_by_node_0(2, 2_000);
        want(&mut net, 1, p, true);
        assert!(net.engines[0].may_fetch(&p, HOST, net.now));
        // Node 0 gives the lane back (early, say, with its last URLs still to send).
        want(&mut net, 0, p, false);
        let released = net.now;
        assert!(net.run_until(released + 5_000, |n| n.engines[1].may_fetch(&p, HOST, n.now)));
        assert!(
            net.now >= released + LANE_DRAIN_MS,
            "node 1 fetched {} ms after the release, inside the drain",
            net.now - released
        );
    }

    #[test]
    fn a_release_that_states_a_short_drain_lets_the_next_holder_start_sooner() {
        for (drain, at_least) in [(250, 250), (0, 100)] {
            let (mut net, p) = held_by_node_0(2, 2_000);
            want(&mut net, 1, p, true);
            assert!(net.engines[0].may_fetch(&p, HOST, net.now));
            // Node 0 has `drain` ms of requests left (none: it is done) when it gives back.
            let host = HOST.to_owned();
            net.input(0, Input::WantLane { project: p, host, wanted: false, drain_ms: drain })
                .unwrap();
            let released = net.now;
            assert!(net.run_until(released + 5_000, |n| n.engines[1].may_fetch(&p, HOST, n.now)));
            let waited = net.now - released;
            // No sooner than the drain stated (or the claim's settle), and well before the
            // whole protocol drain.
            assert!(
                (at_least..LANE_DRAIN_MS).contains(&waited),
                "drain {drain}: node 1 fetched {waited} ms after the release"
            );
        }
    }

    #[test]
    fn a_lanes_first_holder_waits_only_the_claims_settle_and_follows_nobody() {
        let owner = test_keypair(1);
        let cfg = fast_config();
        let settle = cfg.claim_settle_ms;
        let mut net = Net::new(2, &owner, cfg);
        let p = lane_project(&mut net, &owner, RatePolicy::default());
        want(&mut net, 0, p, true);
        let asked = net.now;
        assert!(net.run_until(asked + 5_000, |n| n.engines[0].may_fetch(&p, HOST, n.now)));
        let waited = net.now - asked;
        // Nobody fetched under epoch 1: the only requests it could meet are a rival
        // claimant's, which the claim's settle is for, so no drain.
        assert!((settle..LANE_DRAIN_MS).contains(&waited), "fetched {waited} ms after asking");
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        assert!(matches!(net.engines[0].item_state(&lane), Some(ItemState::Held { epoch: 1, .. })));
        assert!(!net.engines[0].lane_follows_another(&lane), "epoch 1 follows no holder");
    }

    /// Runs one node on a lane project until its first chunk starts; returns whether it may
    /// fetch from the host then, and the node's network.
    fn first_chunk_start(lanes_with_chunks: bool) -> (Net, ProjectId, bool) {
        let owner = test_keypair(1);
        let cfg = EngineConfig { lanes_with_chunks, ..fast_config() };
        let mut net = Net::new(1, &owner, cfg);
        net.work_ms = 1_000_000;
        let p = lane_project(&mut net, &owner, RatePolicy::default());
        let chunk_started =
            |n: &Net| n.engines[0].local_work().any(|l| l.kind == WorkKind::Crawl && l.started);
        assert!(net.run_until(net.now + 10_000, chunk_started), "a chunk starts");
        let may = net.engines[0].may_fetch(&p, HOST, net.now);
        (net, p, may)
    }

    #[test]
    fn a_chunks_host_lane_is_claimed_with_the_chunk_and_given_back_with_it() {
        // Before: the lane was claimed only once the chunk's tasks asked, a claim's settle
        // after the chunk started.
        let (_, _, may) = first_chunk_start(false);
        assert!(!may, "without lanes claimed with chunks, nothing may be fetched at once");
        let (mut net, p, may) = first_chunk_start(true);
        assert!(may, "the lane's claim settled with the chunk's: its first request may go");
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        assert!(net.engines[0].holds(&lane));
        // The tasks ask, then say they are done: the lane goes back with their drain.
        want(&mut net, 0, p, true);
        want(&mut net, 0, p, false);
        assert!(!net.engines[0].holds(&lane), "given back when the tasks are done");
        let again = net.now + 5_000;
        net.run_until(again, |_| false);
        assert!(
            !net.engines[0].holds(&lane),
            "not claimed again for the chunk its tasks spoke for"
        );
        // A chunk whose tasks never ask: its lane goes back when the chunk is no longer held.
        let chunks: Vec<ItemId> = net.engines[0]
            .local_work()
            .filter(|l| l.kind == WorkKind::Crawl)
            .map(|l| l.item)
            .collect();
        assert!(!chunks.is_empty());
        net.input(0, Input::Pause(true)).unwrap();
        for c in &chunks {
            let epoch = net.engines[0].local_work().find(|l| l.item == *c).unwrap().epoch;
            let failed = Input::WorkFailed {
                item: *c,
                epoch,
                reason: "test: given back".into(),
                retryable: true,
            };
            net.input(0, failed).unwrap();
        }
        assert!(net.engines[0].local_work().all(|l| l.kind != WorkKind::Crawl));
        assert!(!net.engines[0].holds(&lane), "no chunk, no lane");
    }

    #[test]
    fn a_lane_claim_not_wanted_before_it_settles_is_given_back_once_settled() {
        // Released before it settled, a claim a rival contests would end the epoch in the
        // views that never saw the rival's claim, while the rival (perhaps the holder) goes
        // on: seed 504 of host-lanes-crash had two nodes fetching one host that way.
        let owner = test_keypair(1);
        let cfg = fast_config();
        let settle = cfg.claim_settle_ms;
        let mut net = Net::new(2, &owner, cfg);
        let p = lane_project(&mut net, &owner, RatePolicy::default());
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        want(&mut net, 0, p, true);
        assert!(net.run_until(net.now + 1_000, |n| n.engines[0].holds(&lane)), "claimed");
        let claimed = net.now;
        want(&mut net, 0, p, false);
        assert!(net.engines[0].holds(&lane), "kept until its claim has settled");
        let held_by_0 = |n: &Net| {
            let me = n.engines[0].node_id();
            (0..2).all(|i| {
                matches!(n.engines[i].item_state(&lane), Some(ItemState::Held { holder, .. }) if holder == me)
            })
        };
        net.run_until(claimed + settle - 1, |_| false);
        assert!(held_by_0(&net), "no release before the settle: every node sees it held");
        net.run_until(claimed + settle + 50, |_| false);
        assert!(!net.engines[0].holds(&lane), "given back once settled");
        assert!(
            matches!(net.engines[1].item_state(&lane), Some(ItemState::Open { .. })),
            "and every node hears of it"
        );
        // Wanted again before its claim settled: kept, and started.
        want(&mut net, 0, p, true);
        assert!(net.run_until(net.now + 1_000, |n| n.engines[0].holds(&lane)), "claimed again");
        want(&mut net, 0, p, false);
        want(&mut net, 0, p, true);
        let asked = net.now;
        assert!(net.run_until(asked + 2_000, |n| n.engines[0].may_fetch(&p, HOST, n.now)));
        assert!(net.engines[0].holds(&lane));
    }

    #[test]
    fn a_node_taking_back_its_own_lane_waits_no_drain_but_one_taking_anothers_does() {
        let (mut net, p) = held_by_node_0(2, 2_000);
        let settle = fast_config().claim_settle_ms;
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        let host = HOST.to_owned();
        // Node 0 gives the lane back early with 800 ms of requests left, then its next chunk
        // of the host comes and it wants the lane again at once.
        let give_back = Input::WantLane { project: p, host, wanted: false, drain_ms: 800 };
        net.input(0, give_back).unwrap();
        want(&mut net, 0, p, true);
        let asked = net.now;
        assert!(net.run_until(asked + 5_000, |n| n.engines[0].may_fetch(&p, HOST, n.now)));
        let waited = net.now - asked;
        // Its own drain and its new hold share its own limiter: only the claim's settle.
        assert!((settle..800).contains(&waited), "fetched {waited} ms after asking again");
        assert!(!net.engines[0].lane_follows_another(&lane), "it follows its own release");
        // Node 1 takes the lane over from node 0: it waits the drain node 0 stated, and its
        // first request comes a full period after node 0's last.
        want(&mut net, 1, p, true);
        want(&mut net, 0, p, false);
        let released = net.now;
        assert!(net.run_until(released + 5_000, |n| n.engines[1].may_fetch(&p, HOST, n.now)));
        assert!(net.now >= released + LANE_DRAIN_MS, "inside node 0's drain");
        assert!(net.engines[1].lane_follows_another(&lane), "it follows node 0");
    }

    #[test]
    fn a_late_claim_waits_only_what_is_left_of_the_drain() {
        let (mut net, p) = held_by_node_0(2, 2_000);
        let settle = fast_config().claim_settle_ms;
        let host = HOST.to_owned();
        net.input(0, Input::WantLane { project: p, host, wanted: false, drain_ms: 800 }).unwrap();
        let released = net.now;
        // Node 1's chunk of the host comes 600 ms after the release: 200 ms of the drain are
        // left when it claims, less than the claim's settle.
        net.run_until(released + 600, |_| false);
        want(&mut net, 1, p, true);
        let asked = net.now;
        assert!(net.run_until(asked + 5_000, |n| n.engines[1].may_fetch(&p, HOST, n.now)));
        assert!(net.now >= released + 800, "inside node 0's drain");
        let waited = net.now - asked;
        assert!(waited < 800, "waited the whole drain again ({waited} ms after its claim)");
        assert!(waited >= settle, "started {waited} ms after its claim, inside the settle");
    }

    #[test]
    fn a_stated_drain_is_trusted_only_from_a_release_that_came_fresh() {
        // Taken in as it was sent: trusted however late the claim that follows it.
        let (mut net, p) = held_by_node_0(2, 2_000);
        let settle = fast_config().claim_settle_ms;
        let host = HOST.to_owned();
        net.input(0, Input::WantLane { project: p, host, wanted: false, drain_ms: 0 }).unwrap();
        let until = net.now + 3_000;
        net.run_until(until, |_| false);
        want(&mut net, 1, p, true);
        let asked = net.now;
        assert!(net.run_until(asked + 5_000, |n| n.engines[1].may_fetch(&p, HOST, n.now)));
        assert!(net.now - asked < LANE_DRAIN_MS, "fetched {} ms after asking", net.now - asked);
        assert!(net.now - asked >= settle);

        // Taken in 3 s after it was signed (node 1 missed it, and got it later): a view this
        // far behind may have missed later hand-offs, so it waits the whole drain all the same.
        let (mut net, p) = held_by_node_0(2, 2_000);
        let host = HOST.to_owned();
        let give_back = Input::WantLane { project: p, host, wanted: false, drain_ms: 0 };
        net.engines[0].handle(give_back, net.now).unwrap();
        let mut release = None;
        while let Some(out) = net.engines[0].poll_output() {
            if let Output::Publish(env @ Envelope::Release(_)) = out {
                release = Some(env);
            }
        }
        let until = net.now + 3_000;
        net.run_until(until, |_| false);
        net.input(1, Input::Message(release.expect("a release"))).unwrap();
        want(&mut net, 1, p, true);
        let asked = net.now;
        assert!(net.run_until(asked + 5_000, |n| n.engines[1].may_fetch(&p, HOST, n.now)));
        assert!(net.now >= asked + LANE_DRAIN_MS, "fetched {} ms after asking", net.now - asked);
    }

    #[test]
    fn a_release_stating_a_drain_past_the_protocols_is_refused() {
        let (mut net, p) = held_by_node_0(2, 2_000);
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        let ItemState::Held { epoch, .. } = net.engines[1].item_state(&lane).unwrap() else {
            panic!("node 0 holds the lane")
        };
        let long = Release {
            item: lane,
            epoch,
            at_ms: net.now,
            cooldown_until_ms: None,
            drain_ms: Some(LANE_DRAIN_MS + 1),
        };
        let env = Envelope::Release(Signed::sign(&test_keypair(1000), &long));
        let r = net.engines[1].handle(Input::Message(env), net.now);
        assert_eq!(r, Err(Reject::Malformed));
        assert!(matches!(net.engines[1].item_state(&lane), Some(ItemState::Held { .. })));
    }

    #[test]
    fn a_node_refused_while_draining_still_holds_the_next_holder_off() {
        let (mut net, p) = held_by_node_0(3, 2_000);
        want(&mut net, 1, p, true);
        // Node 0 gives the lane back early and node 1 takes it over.
        want(&mut net, 0, p, false);
        let until = net.now + 3_000;
        net.run_until(until, |_| false);
        assert_eq!(fetching(&net, &p), vec![1]);
        // A stranger to the lane cannot cool its host down.
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        let forged = Release {
            item: lane,
            epoch: 1,
            at_ms: net.now,
            cooldown_until_ms: Some(net.now + 60_000),
            drain_ms: None,
        };
        let forged = Envelope::Release(Signed::sign(&test_keypair(1002), &forged));
        assert_eq!(net.input(1, Input::Message(forged)), Err(Reject::NotHolder));
        assert_eq!(fetching(&net, &p), vec![1]);
        // Node 0, still draining, is told to wait: node 1 stops too.
        let until_ms = net.now + 4_000;
        let host = HOST.to_owned();
        net.input(0, Input::HostRefused { project: p, host, until_ms }).unwrap();
        let after = net.now + 500;
        net.run_until(after, |_| false);
        assert!(fetching(&net, &p).is_empty(), "the holder goes on inside the cooldown");
        assert!(net.cooldowns.iter().any(|(n, t)| *n == 1 && *t == until_ms));
    }

    #[test]
    fn a_claimant_that_missed_a_cooldown_is_told_it_and_holds_off() {
        // Node 2 hears nothing of node 0's release with the cooldown (back from a snapshot,
        // say: sync hands on the lane's state, not the cooldown). Its claim, once node 0's
        // lease has run out in its view, is answered with the cooldown and what shows that
        // node 0 held the epoch it released: it sends the host nothing before the cooldown
        // ends. Before, it fetched from about 9 s into a 30 s cooldown (as in seeds of
        // host-lanes-crash: a node back from its snapshot at 80 s).
        let (mut net, p) = held_by_node_0(3, 2_000);
        let until_ms = net.now + 30_000;
        let host = HOST.to_owned();
        net.input(0, Input::HostRefused { project: p, host, until_ms }).unwrap();
        net.queue.retain(|_, (to, _)| *to != 2);
        want(&mut net, 2, p, true);
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        let margin = fast_config().skew_margin_ms;
        let mut claimed = false;
        while net.step(until_ms - margin) {
            claimed |= net.engines[2].holds(&lane);
            assert!(
                !net.engines[2].may_fetch(&p, HOST, net.now),
                "node 2 may fetch {} ms into the cooldown",
                net.now - (until_ms - 30_000)
            );
        }
        assert!(claimed, "node 2 claimed the lane, not knowing the cooldown");
        assert!(net.cooldowns.iter().any(|(n, t)| *n == 2 && *t == until_ms), "told it");
    }

    #[test]
    fn a_lane_claim_that_overtakes_its_release_is_taken_in_when_the_release_comes() {
        let (mut net, p) = contended(3, RatePolicy::default());
        let a = fetching(&net, &p)[0];
        let lane = net.engines[a].lane_ids(&p, HOST)[0];
        let (b, c) = match a {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        // Only b still wants the lane after a; c hears a's release late, after b's claim.
        want(&mut net, c, p, false);
        want(&mut net, a, p, false);
        let late: Vec<_> = net
            .queue
            .iter()
            .filter(|(_, (to, env))| *to == c && matches!(env, Envelope::Release(_)))
            .map(|(k, _)| *k)
            .collect();
        assert!(!late.is_empty(), "a's release is on its way to c");
        for k in late {
            let m = net.queue.remove(&k).expect("queued");
            net.queue.insert((k.0 + 1_500, k.1), m);
        }
        want(&mut net, c, p, true);
        let until = net.now + 4_000;
        run_checked(&mut net, &p, 1, until);
        let holder = net.engines[b].node_id();
        for e in &net.engines {
            assert!(
                matches!(e.item_state(&lane), Some(ItemState::Held { holder: h, .. }) if h == holder),
                "every node has b holding the lane"
            );
        }
        assert_eq!(fetching(&net, &p), vec![b]);
    }

    #[test]
    fn a_node_far_behind_on_a_busy_lane_catches_up_by_sync() {
        let (mut net, p) = contended(2, RatePolicy::default());
        let lane = net.engines[0].lane_ids(&p, HOST)[0];
        // The lane changes hands 30 times, more epochs than other items may jump.
        for _ in 0..30 {
            let holder = fetching(&net, &p)[0];
            want(&mut net, holder, p, false);
            let until = net.now + 2_000;
            run_checked(&mut net, &p, 1, until);
            want(&mut net, holder, p, true);
        }
        let Some(ItemState::Held { epoch, .. }) = net.engines[0].item_state(&lane) else {
            panic!("lane not held");
        };
        assert!(epoch > EPOCH_JUMP_MAX + 1, "epoch {epoch}");
        let owner = test_keypair(1);
        let mut joiner = Engine::new(fast_config(), test_keypair(42), [owner.public()], 3);
        for _ in 0..10 {
            let delta = net.engines[0].sync_delta(&joiner.sync_digest());
            for env in delta.envelopes {
                let _ = joiner.handle(Input::Message(env), net.now);
            }
            if !delta.more {
                break;
            }
        }
        assert_eq!(joiner.item_state(&lane), net.engines[0].item_state(&lane));
    }

    #[test]
    fn a_dead_holders_lane_is_taken_over_after_its_short_lease() {
        let (mut net, p) = contended(3, RatePolicy::default());
        let dead = fetching(&net, &p)[0];
        net.silenced[dead] = true;
        let died_at = net.now;
        let others_fetch = |n: &Net| fetching(n, &p).iter().any(|&i| i != dead);
        assert!(net.run_until(died_at + 30_000, others_fetch), "the lane was not taken over");
        let idle = net.now - died_at;
        assert!(idle <= LANE_LEASE_MS + 1_000, "host idle {idle} ms after its holder died");
    }

    #[test]
    fn a_lane_gets_no_receipt() {
        let (mut net, p) = held_by_node_0(1, 1_000);
        let id = net.engines[0].lane_ids(&p, HOST)[0];
        let Some(ItemState::Held { epoch, .. }) = net.engines[0].item_state(&id) else {
            panic!("lane not held");
        };
        let done = WorkResult {
            item: id,
            epoch,
            result: Digest([1; 32]),
            size: 1,
            ok: 1,
            failed: 0,
            parts: vec![],
        };
        net.input(0, Input::WorkDone(done)).unwrap();
        assert!(net.engines[0].holds(&id), "the lane is still held, not finished");
    }
}

mod host_lanes_paused {
    use super::*;

    #[test]
    fn chunks_blocked_on_lanes_leave_their_slots_to_other_work_up_to_the_capacity() {
        let owner = test_keypair(1);
        let cfg = EngineConfig { capacity: 1, ..fast_config() };
        let mut net = Net::new(1, &owner, cfg);
        net.work_ms = 1_000_000;
        publish_project(&mut net, &owner, 30_000, 4);
        net.run_until(3_000, |_| false);
        let crawling =
            |n: &Net| n.engines[0].local_work().filter(|l| l.kind == WorkKind::Crawl).count();
        assert_eq!(crawling(&net), 1);
        net.input(0, Input::LaneBlocked { blocked: 1, finishing: 0 }).unwrap();
        let until = net.now + 2_000;
        net.run_until(until, |_| false);
        assert_eq!(crawling(&net), 2, "the blocked chunk's slot took another");
        // Blocked chunks never take it past twice the capacity, whatever the driver says.
        net.input(0, Input::LaneBlocked { blocked: 9, finishing: 0 }).unwrap();
        let until = net.now + 2_000;
        net.run_until(until, |_| false);
        assert_eq!(crawling(&net), 2);
        // A finishing chunk frees a slot of its own even then (the next chunk of its host is
        // claimed before it ends), up to the capacity again.
        net.input(0, Input::LaneBlocked { blocked: 9, finishing: 9 }).unwrap();
        let until = net.now + 2_000;
        net.run_until(until, |_| false);
        assert_eq!(crawling(&net), 3);
    }

    #[test]
    fn a_paused_node_still_takes_the_lanes_its_held_chunks_need() {
        let owner = test_keypair(1);
        let mut net = Net::new(1, &owner, fast_config());
        let m = manifest(&owner, 30_000, 0);
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        net.input(0, Input::Publish(Envelope::Batch(batch(&owner, &m, 1)))).unwrap();
        net.run_until(1_000, |_| false);
        net.input(0, Input::Pause(true)).unwrap();
        let (project, host) = (m.id(), "example.test".to_owned());
        net.input(0, Input::WantLane { project, host, wanted: true, drain_ms: 0 }).unwrap();
        let until = net.now + 1_000;
        net.run_until(until, |_| false);
        assert!(net.engines[0].may_fetch(&project, "example.test", net.now));
        // Shut down, it gives the lane back like everything else.
        net.input(0, Input::Shutdown).unwrap();
        assert!(!net.engines[0].may_fetch(&project, "example.test", net.now));
    }
}

mod host_aware_picking {
    use super::*;

    /// The hosts of the chunks one node of capacity 2 holds, on a project of eight chunks on
    /// host a and one on host b.
    fn hosts_held() -> Vec<String> {
        let owner = test_keypair(1);
        let cfg = EngineConfig { capacity: 2, ..fast_config() };
        let mut net = Net::new(1, &owner, cfg);
        net.work_ms = 1_000_000;
        let m = manifest(&owner, 30_000, 0);
        let mut items: Vec<WorkItem> = (0..8)
            .map(|i| WorkItem::CrawlChunk { urls: vec![format!("http://a.test/{i}")] })
            .collect();
        items.push(WorkItem::CrawlChunk { urls: vec!["http://b.test/0".into()] });
        let b = Signed::sign(&owner, &ItemBatch { project: m.id(), seq: 1, items });
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
        net.run_until(3_000, |_| false);
        let engine = &net.engines[0];
        let mut hosts: Vec<String> = engine
            .local_work()
            .filter(|l| l.kind == WorkKind::Crawl)
            .filter_map(|l| match engine.item_work(&l.item) {
                Some((_, WorkItem::CrawlChunk { urls })) => crate::item::url_host(&urls[0]),
                _ => None,
            })
            .collect();
        hosts.sort();
        hosts
    }

    #[test]
    fn a_second_slot_takes_a_quiet_hosts_chunk_before_another_of_a_busy_host() {
        assert_eq!(hosts_held(), vec!["a.test", "b.test"]);
    }
}

/// Spot-check quorums (`verify.rs`): liars' results overturned, liars marked, honest nodes
/// never, from the engines' own messages.
mod verify_quorums {
    use super::*;
    use crate::manifest::VerifyPolicy;
    use crate::message::PartOutcome;

    fn verified_project(
        net: &mut Net,
        owner: &Keypair,
        n: usize,
        verify: VerifyPolicy,
    ) -> (ProjectId, Vec<ItemId>) {
        let m = ProjectManifest { verify, ..manifest(owner, 5_000, 0) };
        let b = batch(owner, &m, n);
        let ids = b.verify().unwrap().items.iter().map(|w| w.id(&m.id())).collect();
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(owner, &m)))).unwrap();
        net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
        (m.id(), ids)
    }

    fn every_result(strikes: u8) -> VerifyPolicy {
        VerifyPolicy { sample_milli: 1_000, volatile: vec![], strikes, ..Default::default() }
    }

    /// Every honest engine has every item done and no check due or running.
    fn settled(net: &Net, ids: &[ItemId]) -> bool {
        net.all_done(ids)
            && net.engines.iter().enumerate().filter(|(i, _)| net.liars[*i] == Lies::Never).all(
                |(_, e)| {
                    let c = e.verify_counts(None);
                    c.pending == 0 && c.disputed == 0
                },
            )
    }

    fn honest(net: &Net) -> impl Iterator<Item = &Engine> {
        net.engines.iter().enumerate().filter(|(i, _)| net.liars[*i] == Lies::Never).map(|(_, e)| e)
    }

    #[test]
    fn a_liars_results_are_overturned_and_the_liar_marked_everywhere() {
        let owner = test_keypair(1);
        let mut net = Net::new(5, &owner, fast_config());
        net.liars[4] = Lies::Results;
        let liar = net.engines[4].node_id();
        let (pid, ids) = verified_project(&mut net, &owner, 80, every_result(2));
        assert!(net.run_until(600_000, |n| settled(n, &ids)), "not settled by t={}", net.now);
        for e in honest(&net) {
            for id in &ids {
                let (_, result, _) = e.kept(id).expect("a finished chunk has a kept result");
                assert_eq!(result, Digest::of(id.as_bytes()), "a bogus result kept for {id:?}");
            }
            assert!(e.is_marked(&pid, &liar), "the liar is marked on every honest engine");
            assert_eq!(e.marked(&pid).len(), 1, "no honest node is marked");
            let c = e.verify_counts(Some(pid));
            assert!(c.overturned >= 2, "{c:?}");
            assert_eq!(c.verified + c.overturned + c.split, 80, "{c:?}");
        }
        // Marked in its own engine's view too, the liar takes no more work there.
        assert!(net.engines[4].is_marked(&pid, &liar));
    }

    #[test]
    fn without_checks_a_liars_results_stand() {
        let owner = test_keypair(1);
        let mut net = Net::new(5, &owner, fast_config());
        net.liars[4] = Lies::Results;
        let none = VerifyPolicy { sample_milli: 0, ..VerifyPolicy::default() };
        let (pid, ids) = verified_project(&mut net, &owner, 80, none);
        assert!(net.run_until(600_000, |n| settled(n, &ids)));
        let e = &net.engines[0];
        let bogus = ids.iter().filter(|id| e.kept(id).unwrap().1 != Digest::of(id.as_bytes()));
        assert!(bogus.count() > 0, "the liar's results are kept when nothing is checked");
        assert_eq!(e.marked(&pid), vec![]);
    }

    #[test]
    fn a_checker_that_lies_loses_to_the_third_execution() {
        let owner = test_keypair(1);
        let mut net = Net::new(5, &owner, fast_config());
        net.liars[3] = Lies::Checks;
        let liar = net.engines[3].node_id();
        let (pid, ids) = verified_project(&mut net, &owner, 60, every_result(2));
        assert!(net.run_until(600_000, |n| settled(n, &ids)), "not settled by t={}", net.now);
        for e in honest(&net) {
            for id in &ids {
                assert_eq!(e.kept(id).unwrap().1, Digest::of(id.as_bytes()));
            }
            assert!(e.is_marked(&pid, &liar));
            let c = e.verify_counts(Some(pid));
            assert_eq!(c.overturned, 0, "honest results stand: {c:?}");
        }
    }

    #[test]
    fn nobody_checks_their_own_result() {
        let owner = test_keypair(1);
        let mut net = Net::new(4, &owner, fast_config());
        let (_, ids) = verified_project(&mut net, &owner, 40, every_result(3));
        assert!(net.run_until(600_000, |n| settled(n, &ids)));
        let e = &net.engines[0];
        for (node, item) in &net.starts {
            if let Some((_, WorkItem::Verify { exclude, .. })) = e.item_work(item) {
                assert!(
                    !exclude.contains(&net.engines[*node].node_id()),
                    "a producer checked itself"
                );
            }
        }
        // And a claim of a check by its producer is refused and costs the sender.
        let (id, producer) = ids
            .iter()
            .find_map(|id| {
                let (holder, ..) = e.kept(id)?;
                let check = e
                    .items()
                    .find(|(c, ..)| matches!(e.item_work(c), Some((_, WorkItem::Verify { source, .. })) if source == id))?
                    .0;
                Some((check, holder))
            })
            .expect("some result was checked");
        let key = (0..4).map(|i| test_keypair(1000 + i)).find(|k| k.public().node_id() == producer);
        let key = key.expect("the producer is one of the engines");
        let claim = Claim {
            item: id,
            epoch: 1,
            at_ms: net.now,
            lease_until_ms: net.now + 1_000,
            since_ms: net.now,
            proof: None,
        };
        let got = net.engines[0]
            .handle(Input::Message(Envelope::Claim(Signed::sign(&key, &claim))), net.now);
        assert_eq!(got, Err(Reject::Barred));
        assert!(Reject::Barred.penalize());
    }

    #[test]
    fn a_restarted_engine_finds_the_same_verdicts() {
        let owner = test_keypair(1);
        let mut net = Net::new(5, &owner, fast_config());
        net.liars[4] = Lies::Results;
        let liar = net.engines[4].node_id();
        let (pid, ids) = verified_project(&mut net, &owner, 60, every_result(2));
        assert!(net.run_until(600_000, |n| settled(n, &ids)));
        let e = &net.engines[1];
        let mut restored =
            Engine::restore(fast_config(), test_keypair(1001), e.snapshot(), 9, net.now);
        // Results whose claims are young, or that follow a lease still running in the
        // restored view, are judged once those settle or run out (the lease is 5 s), as after
        // any restart.
        let mut t = net.now;
        while let Some(w) = restored.next_wakeup().filter(|w| *w <= net.now + 20_000) {
            t = t.max(w);
            let _ = restored.handle(Input::Tick, t);
        }
        assert!(restored.is_marked(&pid, &liar));
        assert_eq!(restored.verify_counts(Some(pid)), e.verify_counts(Some(pid)));
        for id in &ids {
            assert_eq!(restored.kept(id), e.kept(id));
        }
    }

    #[test]
    fn the_checks_of_a_withdrawn_result_go_with_it() {
        // Found by partition-heal seed 3: a side took L's result and finished its check; the
        // evidence that L never held the epoch withdrew the result there, and the check stayed,
        // done, on that side only, so the two sides never agreed again.
        let f = Fencing::new();
        let (mut e, item) = observer(&f.owner, 30_000);
        let project = e.item_work(&item).map(|(p, _)| p).expect("item known");
        let m = ProjectManifest {
            version: 2,
            verify: every_result(3),
            ..manifest(&f.owner, 30_000, 0)
        };
        e.handle(Input::Message(Envelope::Manifest(Signed::sign(&f.owner, &m))), 1).unwrap();
        let lc = claim_env(&f.l, item, 1, 12_000, 12_000, 42_000);
        assert_eq!(
            e.handle(Input::Message(receipt_env(&f.l, lc, 12_000, 0xee)), 12_100),
            Err(Reject::Settling)
        );
        e.handle(Input::Tick, 12_000 + RESULT_SETTLE_MS).unwrap();
        let check = WorkItem::Verify {
            source: item,
            result: Digest([0xee; 32]),
            round: 0,
            exclude: vec![f.l.node_id()],
        }
        .id(&project);
        assert!(e.item_state(&check).is_some(), "L's result is checked");
        // H checks it (agreeing), and the check is done.
        let c = claim_env(&f.h, check, 1, 13_000, 13_000, 43_000);
        let _ = e.handle(Input::Message(receipt_env(&f.h, c, 14_000, 0xee)), 14_000);
        e.handle(Input::Tick, 14_000 + RESULT_SETTLE_MS).unwrap();
        assert!(matches!(e.item_state(&check), Some(ItemState::Done { .. })));
        assert_eq!(e.quorum(&item), Quorum::Confirmed);
        // H's earlier claim of the epoch arrives: L's result is withdrawn, and its check too.
        e.handle(Input::Message(Envelope::Claim(f.hc(item))), 15_000).unwrap_err();
        assert_eq!(e.stats().withdrawn, 1);
        assert_eq!(e.item_state(&check), None, "the check of a withdrawn result is dropped");
        assert_eq!(e.kept_buckets(project), e.walk_buckets(project), "digest buckets follow");
    }

    #[test]
    fn a_check_travels_in_its_sources_sync_bucket() {
        // fault-50 seeds 1-10: in a bucket of their own, checks a peer could not take in yet
        // (their source's result was in a later bucket) kept that bucket apart, answers were
        // cut short round after round, and 9 of 10 runs never converged after the heal.
        let owner = test_keypair(1);
        let mut net = Net::new(4, &owner, fast_config());
        let (pid, ids) = verified_project(&mut net, &owner, 40, every_result(3));
        assert!(net.run_until(600_000, |n| settled(n, &ids)));
        let e = &net.engines[0];
        assert_eq!(e.kept_buckets(pid), e.walk_buckets(pid));
        let mut apart = 0;
        for (check, _, _) in e.items() {
            let Some((_, WorkItem::Verify { source, .. })) = e.item_work(&check) else { continue };
            if sync::bucket_of(source) == sync::bucket_of(&check) {
                continue;
            }
            apart += 1;
            // A peer that differs only in the source's bucket is sent the check's receipt.
            let mut digest = e.sync_digest();
            let d = digest.projects.iter_mut().find(|d| d.project == pid).unwrap();
            d.buckets[sync::bucket_of(source)] = [0; 8];
            let delta = e.sync_delta(&digest);
            let sent = delta.envelopes.iter().any(|env| {
                matches!(env, Envelope::Receipt(r) if r.verify().is_ok_and(|r| r.claim.verify().is_ok_and(|c| c.item == check)))
            });
            assert!(sent, "the check of {source:?} travels with it");
        }
        assert!(apart > 0, "some check has an id in another bucket than its source's");
    }

    #[test]
    fn sampling_takes_about_the_share_asked_for() {
        let project = ProjectId::derive(&test_keypair(1).public(), "s");
        let result = Digest::of(b"r");
        let ids: Vec<ItemId> = (0..20_000u32)
            .map(|i| WorkItem::CrawlChunk { urls: vec![format!("http://a/{i}")] }.id(&project))
            .collect();
        for (milli, low, high) in [(0, 0, 0), (100, 1_800, 2_200), (500, 9_700, 10_300)] {
            let n = ids.iter().filter(|id| sampled(id, &result, milli)).count();
            assert!((low..=high).contains(&n), "{milli}: {n}");
        }
        assert!(ids.iter().all(|id| sampled(id, &result, 1_000)));
    }

    #[test]
    fn parts_compare_on_status_and_stable_payloads() {
        let urls: Vec<String> =
            ["http://a/1", "http://a/news/2", "http://a/3", "http://a/4"].map(String::from).into();
        let d = |b: &[u8]| Digest::of(b);
        let r = d(b"warc");
        let base: Vec<PartOutcome> =
            (0..4u8).map(|i| PartOutcome::archived(200, d(&[i]))).collect();
        let policy = VerifyPolicy { volatile: vec!["http://a/news/".into()], ..Default::default() };
        let same = compare(&urls, (&r, &base), (&d(b"other warc"), &base), &policy);
        assert!(same.agree(), "WARC bytes differ between fetches; pages do not");
        let mut news = base.clone();
        news[1] = PartOutcome::archived(200, d(b"changed"));
        assert!(compare(&urls, (&r, &base), (&r, &news), &policy).agree(), "volatile page");
        let mut one = base.clone();
        one[0] = PartOutcome::archived(200, d(b"changed"));
        let c = compare(&urls, (&r, &base), (&r, &one), &policy);
        assert!(!c.agree() && !c.major(), "one page of four changed: {c:?}");
        let mut gone = base.clone();
        gone[1] = PartOutcome::archived(404, d(b"x"));
        assert!(
            !compare(&urls, (&r, &base), (&r, &gone), &policy).agree(),
            "status counts even when volatile"
        );
        let forged: Vec<PartOutcome> =
            (0..4u8).map(|i| PartOutcome::archived(200, d(&[i, 9]))).collect();
        assert!(compare(&urls, (&r, &base), (&r, &forged), &policy).major());
        assert!(compare(&urls, (&r, &base), (&r, &base[..3]), &policy).major(), "a part missing");
        assert!(!compare(&[], (&r, &[]), (&d(b"x"), &[]), &policy).agree(), "no parts: results");
    }
}

/// Storage proofs: seeding holders show their copies at every slot, a holder without its copy
/// loses the duty to another node, and a renewal without a valid proof is refused everywhere.
mod storage_proofs {
    use super::*;
    use crate::proof::{self, StorageProof};

    const LEASE: u64 = 1_000;
    const EVERY: u64 = 60_000;

    fn proof_net(n: usize) -> (Net, ProjectManifest, Vec<ItemId>) {
        let owner = test_keypair(1);
        let mut net = Net::new(n, &owner, fast_config());
        let mut m = manifest(&owner, LEASE, 1);
        m.verify.sample_milli = 0;
        m.verify.proof_every_ms = EVERY;
        m.verify.proof_grace_ms = 0;
        let b = batch(&owner, &m, 4);
        let ids = b.verify().unwrap().items.iter().map(|w| w.id(&m.id())).collect();
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
        (net, m, ids)
    }

    fn duties(net: &Net) -> Vec<(ItemId, NodeId, u32)> {
        net.engines[0]
            .items()
            .filter(|(id, _, _)| {
                matches!(net.engines[0].item_work(id), Some((_, WorkItem::SeedDuty { .. })))
            })
            .filter_map(|(id, _, s)| match s {
                ItemState::Held { holder, epoch, .. } => Some((id, holder, epoch)),
                _ => None,
            })
            .collect()
    }

    fn index_of(net: &Net, node: NodeId) -> usize {
        (0..net.engines.len()).find(|&i| net.engines[i].node_id() == node).expect("a node")
    }

    fn unproven(net: &Net) -> u64 {
        net.engines
            .iter()
            .map(|e| e.stats().rejected.get(&Reject::Unproven).copied().unwrap_or(0))
            .sum()
    }

    #[test]
    fn holders_with_their_copies_prove_every_slot_and_keep_their_duties() {
        let (mut net, _, _) = proof_net(3);
        net.run_until(4 * EVERY + 5_000, |_| false);
        let held = duties(&net);
        assert_eq!(held.len(), 4, "every result has its copy held");
        assert!(held.iter().all(|(_, _, epoch)| *epoch == 1), "nobody lost a duty: {held:?}");
        let proofs: u64 = net.engines.iter().map(|e| e.stats().proofs).sum();
        // Each duty renews several times in each of the four zones it lived through.
        assert!(proofs >= 4 * 3, "{proofs} renewals carried proofs");
        assert_eq!(unproven(&net), 0, "an honest proof was refused");
        assert!(net.engines.iter().all(|e| e.stats().unproven == 0));
    }

    #[test]
    fn a_holder_that_lost_its_copy_gives_the_duty_to_another_node() {
        let (mut net, _, _) = proof_net(3);
        net.run_until(EVERY + 5_000, |_| false);
        let (duty, holder, _) = duties(&net)[0];
        let h = index_of(&net, holder);
        net.copies_lost[h] = true;
        let moved = net.run_until(3 * EVERY, |n| {
            n.engines.iter().all(|e| {
                matches!(e.item_state(&duty), Some(ItemState::Held { holder: x, ready: true, .. }) if x != holder)
            })
        });
        assert!(
            moved,
            "the duty stayed with the node without a copy: {:?}",
            net.engines[0].item_state(&duty)
        );
        // It gave back every duty it held (all its copies are gone), and claims them no more.
        let gave_back = net.engines[h].stats().unproven;
        assert!(gave_back >= 1);
        net.run_until(6 * EVERY, |_| false);
        let now_held = net.engines[0].item_state(&duty);
        assert!(
            matches!(now_held, Some(ItemState::Held { holder: x, .. }) if x != holder),
            "{now_held:?}"
        );
        assert_eq!(net.engines[h].stats().unproven, gave_back);
        assert_eq!(unproven(&net), 0, "the engine signed a renewal its peers refused");
    }

    #[test]
    fn renewals_without_a_valid_proof_are_refused_and_cost_the_sender() {
        let (mut net, m, _) = proof_net(3);
        net.run_until(2 * EVERY + 5_000, |_| false);
        let (duty, holder, epoch) = duties(&net)[0];
        let h = index_of(&net, holder);
        let other = (h + 1) % 3;
        let key = test_keypair(1000 + h as u64);
        let Some((_, work)) = net.engines[other].item_work(&duty) else { panic!() };
        let work = work.clone();
        let WorkItem::SeedDuty { source, .. } = work else { panic!() };
        let since = net.engines[other]
            .stored_records()
            .iter()
            .find_map(|env| match env {
                Envelope::Claim(s) => {
                    let c = s.verify().ok()?;
                    (c.item == duty && c.epoch == epoch).then_some(c.since_ms)
                }
                _ => None,
            })
            .expect("the holder's claim is kept");
        // In the zone of the next slot, past the grace.
        net.now = 3 * EVERY + 10;
        let renewal = |proof: Option<StorageProof>| {
            let c = Claim {
                item: duty,
                epoch,
                at_ms: 3 * EVERY + 10,
                lease_until_ms: 3 * EVERY + 10 + LEASE,
                since_ms: since,
                proof,
            };
            Envelope::Claim(Signed::sign(&key, &c))
        };
        let slot = 3;
        let good = proof::prove_from_blob(&duty, source.as_bytes(), slot);
        let mut flipped = good.clone();
        let last = flipped.slice.len() - 1;
        flipped.slice[last] ^= 1;
        let wrong_copy =
            proof::prove_from_blob(&duty, b"not the copy, but as long as it: 32b", slot);
        let wrong_slot = proof::prove_from_blob(&duty, source.as_bytes(), slot + 1);
        for (what, p) in [
            ("none", None),
            ("flipped", Some(flipped)),
            ("another copy", Some(wrong_copy)),
            ("another slot", Some(wrong_slot)),
        ] {
            let r = net.engines[other].handle(Input::Message(renewal(p)), net.now);
            assert_eq!(r, Err(Reject::Unproven), "{what}");
        }
        assert!(Reject::Unproven.penalize());
        assert_eq!(net.engines[other].handle(Input::Message(renewal(Some(good))), net.now), Ok(()));
        let _ = m;
    }
}

/// Split projects (see `crate::shard`): each shard's members take in, claim and settle its
/// items alone, on a net that delivers each message only where [`Engine::route`] sends it.
mod shards {
    use super::*;
    use crate::shard::Shard;

    /// A project split `depth` deep, with `n` items in one batch, published by node 0.
    fn publish_split(
        net: &mut Net,
        owner: &Keypair,
        depth: u8,
        n: usize,
    ) -> (ProjectId, Vec<ItemId>) {
        let m = ProjectManifest { shard_depth: depth, ..manifest(owner, 5_000, 0) };
        let b = batch(owner, &m, n);
        let ids = b.verify().unwrap().items.iter().map(|w| w.id(&m.id())).collect();
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(owner, &m)))).unwrap();
        net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
        (m.id(), ids)
    }

    fn shard_of_item(id: &ItemId, depth: u8) -> Shard {
        Shard::of_key(id, depth)
    }

    /// Whether each of the item's shard's members sees it done.
    fn done_in_shard(net: &Net, project: &ProjectId, id: &ItemId, depth: u8) -> bool {
        let s = shard_of_item(id, depth);
        net.engines
            .iter()
            .filter(|e| e.shard_of(project) == Some(s))
            .all(|e| matches!(e.item_state(id), Some(ItemState::Done { .. })))
    }

    #[test]
    fn each_shard_works_its_own_items_once_and_hears_nothing_of_the_others() {
        let owner = test_keypair(1);
        let mut net = Net::new(16, &owner, fast_config());
        net.routed = true;
        let depth = 2;
        let (project, ids) = publish_split(&mut net, &owner, depth, 120);
        // Every one of the four shards has members among these sixteen keys.
        let mut sizes = [0usize; 4];
        for e in &net.engines {
            sizes[Shard::of_node(&e.node_id(), depth).prefix as usize] += 1;
        }
        assert!(sizes.iter().all(|n| *n >= 1), "shard sizes {sizes:?}");
        let finished =
            net.run_until(600_000, |n| ids.iter().all(|i| done_in_shard(n, &project, i, depth)));
        assert!(finished, "not all items finished by t={}", net.now);
        for id in &ids {
            assert_eq!(net.executions.get(id), Some(&1), "{id:?} ran other than once");
        }
        for (node, item) in &net.starts {
            let e = &net.engines[*node];
            let Some((_, work)) = e.item_work(item) else { continue };
            if let Some(key) = crate::shard::shard_key(item, work) {
                assert_eq!(Some(Shard::of_key(&key, depth)), e.shard_of(&project));
            }
        }
        // Each node counts its shard's members, itself included, and no one else.
        for e in &net.engines {
            let views = e.shard_views();
            let mine = e.shard_of(&project).unwrap();
            assert_eq!(views.len(), 1);
            assert_eq!((views[0].project, views[0].shard), (project, mine));
            assert_eq!(views[0].members, sizes[mine.prefix as usize], "{views:?}");
        }
        // No node keeps (or ever heard of) an item of another shard.
        for e in &net.engines {
            let mine = e.shard_of(&project).unwrap();
            for id in &ids {
                assert_eq!(e.item_state(id).is_some(), shard_of_item(id, depth) == mine);
            }
            let other = Reject::OtherShard;
            assert_eq!(e.stats().rejected.get(&other), None, "{:?}", e.stats().rejected);
        }
    }

    #[test]
    fn every_node_of_a_split_project_learns_its_progress_from_one_count_per_shard() {
        use crate::engine::{PROGRESS_INTERVAL_MS, ProjectProgress};
        let owner = test_keypair(1);
        let mut net = Net::new(16, &owner, fast_config());
        net.routed = true;
        let depth = 2;
        let (project, ids) = publish_split(&mut net, &owner, depth, 120);
        assert!(
            net.run_until(600_000, |n| ids.iter().all(|i| done_in_shard(n, &project, i, depth)))
        );
        // Each node holds only its shard's items; after a counting round it knows them all.
        let whole = |n: &Net| {
            n.engines.iter().all(|e| {
                let p = e.project_progress(&project, n.now);
                p.is_some_and(|p| p.items.done == 120 && p.shards_heard == 4)
            })
        };
        let until = net.now + 3 * PROGRESS_INTERVAL_MS;
        assert!(net.run_until(until, whole), "progress never added up by t={}", net.now);
        let e = &net.engines[3];
        assert!(e.counts(Some(project)).done < 120, "a node holds only its shard's items");
        let p = e.project_progress(&project, net.now).unwrap();
        assert_eq!(p, ProjectProgress { items: p.items, shards_heard: 4, shards: 4 });
        assert_eq!((p.items.open, p.items.held, p.items.failed), (0, 0, 0));
        // A whole project has no such view: every node holds all of it.
        let m = ProjectManifest { name: "whole".into(), ..manifest(&owner, 5_000, 0) };
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        assert_eq!(net.engines[0].project_progress(&m.id(), net.now), None);
    }

    #[test]
    fn a_deep_split_counts_each_shard_less_often_so_the_project_sends_a_bounded_number() {
        use crate::engine::{
            PROGRESS_INTERVAL_MS, PROGRESS_SHARDS_PER_INTERVAL, progress_interval_ms,
        };
        for depth in 0..=crate::shard::SHARD_DEPTH_MAX {
            let every = progress_interval_ms(depth);
            assert_eq!(every % PROGRESS_INTERVAL_MS, 0);
            // Counts the whole project sends per PROGRESS_INTERVAL_MS.
            let per_interval = (1u64 << depth) * PROGRESS_INTERVAL_MS / every;
            assert!(per_interval <= PROGRESS_SHARDS_PER_INTERVAL, "depth {depth}: {per_interval}");
            assert!(depth > 4 || every == PROGRESS_INTERVAL_MS);
        }
        assert_eq!(progress_interval_ms(9), 32 * PROGRESS_INTERVAL_MS);
    }

    #[test]
    fn a_shard_count_is_taken_only_from_a_member_at_the_projects_depth_and_newer() {
        use crate::message::ShardProgress;
        let owner = test_keypair(1);
        let mut net = Net::new(1, &owner, fast_config());
        let m = ProjectManifest { shard_depth: 2, ..manifest(&owner, 5_000, 0) };
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        let mine = net.engines[0].shard_of(&m.id()).unwrap();
        let other = Shard { depth: 2, prefix: (mine.prefix + 1) % 4 };
        let key_in = |s: Shard| {
            (100..).map(test_keypair).find(|k| Shard::of_node(&k.node_id(), s.depth) == s).unwrap()
        };
        let count = |shard: Shard, at_ms: u64, done: u64| ShardProgress {
            project: m.id(),
            shard,
            at_ms,
            open: 0,
            held: 0,
            done,
            failed: 0,
        };
        let send = |net: &mut Net, k: &Keypair, c: &ShardProgress| {
            net.engines[0].handle(Input::Message(Envelope::Progress(Signed::sign(k, c))), 1_000)
        };
        let member = key_in(other);
        assert_eq!(send(&mut net, &member, &count(other, 900, 7)), Ok(()));
        // Newer counts replace older ones; an older or equal one is a duplicate.
        assert_eq!(send(&mut net, &member, &count(other, 900, 8)), Err(Reject::Duplicate));
        assert_eq!(send(&mut net, &member, &count(other, 950, 9)), Ok(()));
        // Someone outside the shard cannot count it (a made-up count, penalised).
        let outsider = key_in(mine);
        assert_eq!(send(&mut net, &outsider, &count(other, 990, 500)), Err(Reject::NotHolder));
        assert!(Reject::NotHolder.penalize());
        // A count at another depth than the manifest's is not comparable.
        let shallow = Shard { depth: 1, prefix: other.prefix >> 1 };
        assert_eq!(send(&mut net, &key_in(shallow), &count(shallow, 990, 5)), Err(Reject::Stale));
        // Of a project this node does not know, or from the future.
        let unknown = ShardProgress { project: ProjectId([9; 32]), ..count(other, 990, 1) };
        assert_eq!(send(&mut net, &member, &unknown), Err(Reject::UnknownProject));
        assert_eq!(send(&mut net, &member, &count(other, 999_999, 1)), Err(Reject::FromTheFuture));
        let p = net.engines[0].project_progress(&m.id(), 1_000).unwrap();
        assert_eq!((p.items.done, p.shards_heard, p.shards), (9, 2, 4));
        // A shard that does not exist at its depth is malformed.
        let bad = count(Shard { depth: 2, prefix: 4 }, 990, 1);
        assert!(Envelope::Progress(Signed::sign(&member, &bad)).verify().is_err());
        assert_eq!(send(&mut net, &member, &bad), Err(Reject::Malformed));
    }

    #[test]
    fn a_batch_of_another_shard_is_refused_but_its_publisher_passes_it_on() {
        let owner = test_keypair(1);
        let mut net = Net::new(1, &owner, fast_config());
        let m = ProjectManifest { shard_depth: 3, ..manifest(&owner, 5_000, 0) };
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        let mine = net.engines[0].shard_of(&m.id()).unwrap();
        // Items of one shard other than this node's, as an owner sorts them into batches.
        let items: Vec<WorkItem> = (0..400)
            .map(|i| WorkItem::CrawlChunk { urls: vec![format!("http://example.test/{i}")] })
            .filter(|w| {
                let s = Shard::of_key(&w.id(&m.id()), 3);
                s != mine && s.prefix == (mine.prefix + 1) % 8
            })
            .collect();
        assert!(!items.is_empty());
        let b = Signed::sign(&owner, &ItemBatch { project: m.id(), seq: 7, items });
        let foreign = Envelope::Batch(b);
        assert_eq!(
            net.engines[0].handle(Input::Message(foreign.clone()), 0),
            Err(Reject::OtherShard)
        );
        assert!(!Reject::OtherShard.penalize());
        assert_eq!(net.engines[0].item_count(), 0);
        let route = net.engines[0].route(&foreign);
        assert!(matches!(route, Some(Route::Shard(_, s)) if s != mine), "{route:?}");
        // Published here (an owner's node sends every shard its batches): passed on, not kept.
        net.engines[0].handle(Input::Publish(foreign.clone()), 0).unwrap();
        let out: Vec<Output> = std::iter::from_fn(|| net.engines[0].poll_output()).collect();
        assert!(out.iter().any(|o| matches!(o, Output::Publish(e) if *e == foreign)));
        assert_eq!(net.engines[0].item_count(), 0);
    }

    #[test]
    fn a_new_depth_splits_a_nodes_items_and_an_older_one_merges_them_back() {
        let owner = test_keypair(1);
        let mut net = Net::new(1, &owner, fast_config());
        let (project, ids) = publish_split(&mut net, &owner, 1, 200);
        let held = |e: &Engine| ids.iter().filter(|i| e.item_state(i).is_some()).count();
        let at = |d: u8| {
            let me = Shard::of_node(&net.engines[0].node_id(), d);
            ids.iter().filter(|i| Shard::of_key(i, d) == me).count()
        };
        let (at1, at3) = (at(1), at(3));
        assert_eq!(held(&net.engines[0]), at1);
        let bump = |depth: u8, version: u64| {
            let m = ProjectManifest { shard_depth: depth, version, ..manifest(&owner, 5_000, 0) };
            Input::Message(Envelope::Manifest(Signed::sign(&owner, &m)))
        };
        net.input(0, bump(3, 2)).unwrap();
        assert_eq!(held(&net.engines[0]), at3);
        assert!(at3 < at1);
        // Merged back to one shard: every item again, from the batch the node kept.
        net.input(0, bump(0, 3)).unwrap();
        assert_eq!(held(&net.engines[0]), ids.len());
        assert_eq!(net.engines[0].shard_of(&project), None);
        assert_eq!(net.engines[0].stats().reshards, 2);
    }

    #[test]
    fn sync_hands_a_member_its_own_shards_work_only() {
        let owner = test_keypair(1);
        let mut net = Net::new(16, &owner, fast_config());
        net.routed = true;
        let depth = 1;
        let (project, ids) = publish_split(&mut net, &owner, depth, 60);
        net.run_until(600_000, |n| ids.iter().all(|i| done_in_shard(n, &project, i, depth)));
        let shard = |i: usize| net.engines[i].shard_of(&project).unwrap();
        let same = (1..16).find(|i| shard(*i) == shard(0)).unwrap();
        let other = (1..16).find(|i| shard(*i) != shard(0)).unwrap();
        for (asker, expect_items) in [(same, true), (other, false)] {
            // The asker as if it had just joined: a digest of its shard with no item states.
            let mut digest = net.engines[asker].sync_digest();
            for d in &mut digest.projects {
                d.buckets = [[0; 8]; crate::message::SYNC_BUCKETS];
            }
            let delta = net.engines[0].sync_delta(&digest);
            let items: Vec<ItemId> = delta.envelopes.iter().filter_map(Envelope::item).collect();
            assert_eq!(!items.is_empty(), expect_items);
            for i in &items {
                let key =
                    net.engines[0].item_work(i).and_then(|(_, w)| crate::shard::shard_key(i, w));
                assert!(key.is_none_or(|k| Shard::of_key(&k, depth) == shard(asker)));
            }
        }
        // A heartbeat of the other shard that reached engine 0 anyway (relayed, or from
        // before the split) is handed on to a member of that shard only: passed to its own
        // shard's members, it would keep every node of the mesh live in their tables.
        let mine = shard(0);
        let beat = net.engines[other].presence_copy(net.now);
        net.engines[0].handle(Input::Message(beat), net.now).unwrap();
        let heartbeats = |net: &Net, asker: usize| -> Vec<NodeId> {
            let delta = net.engines[0].sync_delta(&net.engines[asker].sync_digest());
            let beats = delta.envelopes.iter().filter_map(|e| match e {
                Envelope::Presence(p) => Some(p.signer().node_id()),
                _ => None,
            });
            beats.collect()
        };
        let other_id = net.engines[other].node_id();
        assert!(!heartbeats(&net, same).contains(&other_id));
        assert!(heartbeats(&net, other).contains(&other_id));
        assert!(heartbeats(&net, same).iter().all(|n| Shard::of_node(n, depth) == mine));
    }

    /// A peer that does not know the split, or is in another shard, is sent the manifest and
    /// nothing else: items taken in bare from a batch, without their states, would look open
    /// and be claimed a second time (`shards-grow` seeds 5–8 before this).
    #[test]
    fn sync_hands_no_bare_work_to_a_peer_outside_the_shard_or_behind_the_split() {
        let owner = test_keypair(1);
        let mut net = Net::new(16, &owner, fast_config());
        net.routed = true;
        let (project, ids) = publish_split(&mut net, &owner, 1, 60);
        net.run_until(600_000, |n| ids.iter().all(|i| done_in_shard(n, &project, i, 1)));
        let mine = net.engines[0].shard_of(&project).unwrap();
        let other = (1..16).find(|i| net.engines[*i].shard_of(&project) != Some(mine)).unwrap();
        let work = |d: &crate::message::SyncDelta| {
            d.envelopes
                .iter()
                .filter(|e| matches!(e, Envelope::Batch(_)) || e.item().is_some())
                .count()
        };
        // Another shard's member: neither its batches nor any item.
        let delta = net.engines[0].sync_delta(&net.engines[other].sync_digest());
        assert_eq!(work(&delta), 0);
        // A node that has not heard of the project: the manifest alone.
        let fresh = Engine::new(fast_config(), test_keypair(77), [owner.public()], 9);
        let delta = net.engines[0].sync_delta(&fresh.sync_digest());
        assert!(delta.envelopes.iter().any(|e| matches!(e, Envelope::Manifest(_))));
        assert_eq!(work(&delta), 0);
        // A member of the same shard: its batches and items.
        let same = (1..16).find(|i| net.engines[*i].shard_of(&project) == Some(mine)).unwrap();
        let mut digest = net.engines[same].sync_digest();
        for d in &mut digest.projects {
            d.buckets = [[0; 8]; crate::message::SYNC_BUCKETS];
            d.batches = [0; 8];
        }
        assert!(work(&net.engines[0].sync_delta(&digest)) > 0);
    }

    /// After a merge a node holds items whose states only the other half's members know: it
    /// claims none of them before its warm-up, in which sync brings them.
    #[test]
    fn items_that_come_in_by_a_merge_wait_the_warm_up_before_any_claim() {
        let owner = test_keypair(1);
        let mut net = Net::new(1, &owner, fast_config());
        let (_, ids) = publish_split(&mut net, &owner, 2, 200);
        net.run_until(5_000, |_| false);
        let before = net.starts.len();
        assert!(before > 0);
        let merged = ProjectManifest { version: 2, shard_depth: 0, ..manifest(&owner, 5_000, 0) };
        net.input(0, Input::Message(Envelope::Manifest(Signed::sign(&owner, &merged)))).unwrap();
        let at = net.now;
        net.run_until(at + fast_config().warmup_ms, |_| false);
        let fresh: Vec<_> = net.starts[before..]
            .iter()
            .filter(|(_, i)| Shard::of_key(i, 2) != Shard::of_node(&net.engines[0].node_id(), 2))
            .collect();
        assert!(fresh.is_empty(), "{} items of the merged-in half started at once", fresh.len());
        net.run_until(at + 60_000, |n| {
            ids.iter().all(|i| matches!(n.engines[0].item_state(i), Some(ItemState::Done { .. })))
        });
        assert!(
            ids.iter()
                .all(|i| matches!(net.engines[0].item_state(i), Some(ItemState::Done { .. })))
        );
    }

    /// A node that learns of a merge before the members of the shard it merges with holds
    /// that shard's items bare, from the batch: open at epoch 0, whatever happened to them.
    /// It claims none of them before a full lease (and the skew margin) has passed, in which
    /// it hears of each item's epoch from those members once they follow (`shards-shrink`
    /// seed 20 before this: one claimed an item at epoch 1, which the item's shard had
    /// released already, and refused the members' claim of epoch 2 as early while its own
    /// lease ran; both ran the item).
    #[test]
    fn a_node_that_merges_first_waits_a_lease_for_the_other_halfs_epochs() {
        let owner = test_keypair(1);
        let lease = 20_000;
        // One node in shard 0 at depth 1 (`a`), two in shard 1 (`b1`, who works the item and
        // leaves, and `b2`, who stays).
        let keys: Vec<u64> = (1000..1100).collect();
        let in_half = |k: &u64, half: u16| {
            Shard::of_node(&test_keypair(*k).public().node_id(), 1).prefix == half
        };
        let a = *keys.iter().find(|k| in_half(k, 0)).unwrap();
        let mut bs = keys.iter().filter(|k| in_half(k, 1));
        let (b1, b2) = (*bs.next().unwrap(), *bs.next().unwrap());
        // Room for every item at once, so `b2` is free to claim the item again.
        let cfg = EngineConfig { capacity: 16, ..fast_config() };
        let mut net = Net::new(3, &owner, cfg.clone());
        net.engines = [a, b1, b2]
            .iter()
            .enumerate()
            .map(|(i, k)| Engine::new(cfg.clone(), test_keypair(*k), [owner.public()], i as u64))
            .collect();
        net.routed = true;
        net.work_ms = 60_000;
        let m = ProjectManifest { shard_depth: 1, ..manifest(&owner, lease, 0) };
        let b = batch(&owner, &m, 8);
        net.input(0, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        net.input(0, Input::Publish(Envelope::Batch(b))).unwrap();
        let project = m.id();
        // `b1` or `b2` starts an item of shard 1; its worker leaves, giving it back.
        net.run_until(5_000, |n| {
            n.starts.iter().any(|(w, i)| *w > 0 && Shard::of_key(i, 1).prefix == 1)
        });
        let &(worker, item) =
            net.starts.iter().find(|(w, i)| *w > 0 && Shard::of_key(i, 1).prefix == 1).unwrap();
        let stays = 3 - worker;
        // The one who stays takes no new work until the merge (it is busy, say).
        net.input(stays, Input::Pause(true)).unwrap();
        net.input(worker, Input::Shutdown).unwrap();
        net.silenced[worker] = true;
        net.run_until(net.now + 200, |_| false);
        assert!(matches!(net.engines[stays].item_state(&item), Some(ItemState::Open { epoch: 1 })));
        assert_eq!(net.engines[0].item_state(&item), None, "shard 0 never heard of it");
        // The owner merges the halves; `a` hears of it first, `stays` a second later.
        let merged = ProjectManifest { version: 2, ..manifest(&owner, lease, 0) };
        let merged = Envelope::Manifest(Signed::sign(&owner, &merged));
        let mark = net.starts.len();
        net.input(0, Input::Message(merged.clone())).unwrap();
        assert_eq!(net.engines[0].shard_of(&project), None);
        net.run_until(net.now + 1_000, |_| false);
        net.input(stays, Input::Message(merged)).unwrap();
        net.input(stays, Input::Pause(false)).unwrap();
        net.run_until(net.now + 2 * lease, |_| false);
        let runners: Vec<usize> =
            net.starts[mark..].iter().filter(|(_, i)| *i == item).map(|(w, _)| *w).collect();
        let views: Vec<_> = net.engines.iter().map(|e| e.item_state(&item)).collect();
        assert_eq!(runners.len(), 1, "started after the merge by {runners:?}; {views:?}");
        assert_eq!(views[0], views[stays], "{views:?}");
        assert!(matches!(views[0], Some(ItemState::Held { epoch: 2, .. })), "{views:?}");
    }

    /// After a merge a batch can come in that this node dropped at a split: a member of one
    /// merged part hands it over by sync with the states of its own part's items only. The
    /// other parts' items in it are as bare as the merge's own, and wait as long (`shards-
    /// shrink` at 300 nodes, seed 6, before this: a node ran again items done long before).
    #[test]
    fn a_batch_synced_in_after_a_merge_waits_for_the_states_of_every_part() {
        let owner = test_keypair(1);
        let lease = 20_000;
        let depth = 2;
        // Three nodes in three different shards at depth 2: `a` merges, `r` answers its sync,
        // `x` worked items `a` learns of only from `r`'s batch.
        let of = |k: u64| Shard::of_node(&test_keypair(k).public().node_id(), depth).prefix;
        let a = 1000;
        let r = (1001..1100).find(|k| of(*k) != of(a)).unwrap();
        let x = (1001..1100).find(|k| of(*k) != of(a) && of(*k) != of(r)).unwrap();
        let mut net = Net::new(3, &owner, fast_config());
        net.engines = [a, r, x]
            .iter()
            .enumerate()
            .map(|(i, k)| Engine::new(fast_config(), test_keypair(*k), [owner.public()], i as u64))
            .collect();
        net.routed = true;
        let m = ProjectManifest { shard_depth: depth, ..manifest(&owner, lease, 0) };
        // One batch of `r`'s and `x`'s items, none of `a`'s: `a` does not keep it.
        let items: Vec<WorkItem> = (0..200)
            .map(|i| WorkItem::CrawlChunk { urls: vec![format!("http://example.test/{i}")] })
            .filter(|w| [of(r), of(x)].contains(&Shard::of_key(&w.id(&m.id()), depth).prefix))
            .collect();
        let b = Signed::sign(&owner, &ItemBatch { project: m.id(), seq: 1, items });
        let ids: Vec<ItemId> = b.verify().unwrap().items.iter().map(|w| w.id(&m.id())).collect();
        let xs: Vec<ItemId> =
            ids.iter().copied().filter(|i| Shard::of_key(i, depth).prefix == of(x)).collect();
        assert!(!xs.is_empty());
        net.input(1, Input::Publish(Envelope::Manifest(Signed::sign(&owner, &m)))).unwrap();
        net.input(1, Input::Publish(Envelope::Batch(b))).unwrap();
        let done = |n: &Net, e: usize, i: &ItemId| {
            matches!(n.engines[e].item_state(i), Some(ItemState::Done { .. }))
        };
        assert!(net.run_until(120_000, |n| xs.iter().all(|i| done(n, 2, i))));
        assert_eq!(net.engines[0].item_count(), 0);
        // The owner merges everything into one shard; `a` hears first and syncs with `r`.
        let merged = ProjectManifest { version: 2, ..manifest(&owner, lease, 0) };
        net.input(0, Input::Message(Envelope::Manifest(Signed::sign(&owner, &merged)))).unwrap();
        let sync = |net: &mut Net, from: usize| {
            let delta = net.engines[from].sync_delta(&net.engines[0].sync_digest());
            for env in delta.envelopes {
                let _ = net.input(0, Input::Message(env));
            }
        };
        sync(&mut net, 1);
        assert!(xs.iter().all(|i| net.engines[0].item_state(i).is_some()), "the batch came");
        let mark = net.starts.len();
        net.run_until(net.now + lease / 2, |_| false);
        let again = net.starts[mark..].iter().filter(|(w, i)| *w == 0 && xs.contains(i)).count();
        assert_eq!(again, 0, "items of `x` claimed on a batch's word alone");
        // `x`'s states come (by its own sync, here), and nothing of `x`'s runs again.
        sync(&mut net, 2);
        net.run_until(net.now + 2 * lease, |_| false);
        assert!(xs.iter().all(|i| done(&net, 0, i)));
        assert!(xs.iter().all(|i| net.executions.get(i) == Some(&1)));
    }

    /// An item worked here when a split put it in another shard is reported as the work ends,
    /// then forgotten: a node that neither hears nor ranks in that shard never claims it again
    /// (`shards-grow` seed 6 before this: one failed its work there, took the item for open
    /// and claimed it among no peers at all, beside the shard's own holder).
    #[test]
    fn an_item_a_split_moved_away_is_never_claimed_again_once_its_work_ends() {
        let owner = test_keypair(1);
        let mut net = Net::new(1, &owner, fast_config());
        net.work_ms = 60_000;
        let (_, ids) = publish_split(&mut net, &owner, 0, 40);
        net.run_until(1_500, |n| n.engines[0].local_work().filter(|l| l.started).count() >= 4);
        let me = net.engines[0].node_id();
        let away = |i: &ItemId| Shard::of_key(i, 1) != Shard::of_node(&me, 1);
        let moving: Vec<(ItemId, u32)> = net.engines[0]
            .local_work()
            .filter(|l| l.started && away(&l.item))
            .map(|l| (l.item, l.epoch))
            .collect();
        assert!(!moving.is_empty(), "no held item lies in the other half");
        let split = ProjectManifest { version: 2, shard_depth: 1, ..manifest(&owner, 5_000, 0) };
        net.input(0, Input::Message(Envelope::Manifest(Signed::sign(&owner, &split)))).unwrap();
        assert!(moving.iter().all(|(i, _)| net.engines[0].holds(i)), "held work is kept");
        // The work fails, as another node might have done it: the item is open again.
        net.work.clear();
        for (item, epoch) in &moving {
            let failed = Input::WorkFailed {
                item: *item,
                epoch: *epoch,
                reason: "x".into(),
                retryable: true,
            };
            net.input(0, failed).unwrap();
        }
        net.run_until(net.now + 30_000, |_| false);
        for (i, _) in &moving {
            assert_eq!(net.executions.get(i), Some(&1), "claimed again outside its shard");
            assert_eq!(net.engines[0].item_state(i), None);
        }
        assert!(ids.iter().filter(|i| away(i)).all(|i| !net.engines[0].holds(i)));
    }
}
