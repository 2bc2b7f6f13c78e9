//! The invariant checkers, run in every run, and the deterministic result.
//!
//! - **Safety**: two honest nodes of one connected component must not both be executing an
//!   item for longer than `check.settle_ms` once that component has been stable (no partition
//!   change, both nodes up) for as long. Claims in flight settle well within that window; the
//!   short overlaps before they do are what the duplicate count measures.
//! - **No loss**: at the end every crawl item is done (or given up) in the view of the honest
//!   nodes that are up.
//! - **Convergence**: after the last fault heals, every honest node that is up agrees with
//!   the other subscribers of each project on the state (phase, epoch, holder, result) of every
//!   item that has been quiet for `check.quiet_ms`, within `check.convergence_bound_ms`.
//!
//! The pure functions at the bottom are the checkers; the `World` methods feed them.

use starling_protocol::{Engine, ItemId, ItemState, NodeId, ProjectId};

use crate::net::mix64;
use crate::parts::Executions;
use crate::report::RunResult;
use crate::world::{Event, ViolationKind, World, honest_result, id64};

/// A pair of honest nodes both working on one item, as the safety checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    /// When the second of the two started.
    pub since_ms: u64,
    /// Whether they are in one connected component.
    pub same_component: bool,
    /// Since when the component and both nodes have been stable.
    pub stable_since_ms: u64,
}

/// Whether an overlap breaks safety at `now`.
pub fn safety_broken(o: &Overlap, now: u64, settle_ms: u64) -> bool {
    o.same_component && now.saturating_sub(o.since_ms.max(o.stable_since_ms)) >= settle_ms
}

/// A fingerprint of one item state that ignores lease times.
pub fn state_fingerprint(item: u64, st: &ItemState) -> u64 {
    let node = |n: &NodeId| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&n.as_bytes()[..8]);
        u64::from_le_bytes(b)
    };
    let v = match st {
        ItemState::Open { epoch } => u64::from(*epoch) << 8,
        ItemState::Held { holder, epoch, ready, .. } => {
            1 | u64::from(*epoch) << 8 | u64::from(*ready) << 40 ^ mix64(node(holder))
        }
        ItemState::Done { holder, epoch, result, .. } => {
            let mut r = [0u8; 8];
            r.copy_from_slice(&result.as_bytes()[..8]);
            2 | u64::from(*epoch) << 8 ^ mix64(node(holder)) ^ mix64(u64::from_le_bytes(r))
        }
        ItemState::Failed { epoch } => 3 | u64::from(*epoch) << 8,
    };
    mix64(item ^ mix64(v))
}

/// Whether every fingerprint in each group is the same.
pub fn all_agree(groups: &[Vec<u64>]) -> bool {
    groups.iter().all(|g| g.windows(2).all(|w| w[0] == w[1]))
}

/// Reading one item's state by id costs about this many item states read in a pass over an
/// engine's items (a tree descent against a sequential step), measured on fault-50.
const LOOKUP_PER_SCAN: usize = 2;

/// The items the agreement check leaves out and those it looks at, as of one check.
struct QuietView {
    /// Items of the driver's table changed within the quiet window, sorted by id.
    recent: Vec<ItemId>,
    /// Per project, the indices of its other (quiet) items in the driver's table.
    quiet: Vec<Vec<u32>>,
}

impl World {
    pub(crate) fn on_check(&mut self) {
        if self.s.byzantine.nodes > 0 {
            self.note_caught_liars();
        }
        self.check_safety();
        if self.violations.is_empty() {
            self.check_convergence();
        }
        self.check_copies();
        let at = self.now + self.s.check.interval_ms;
        self.push(at, Event::Check);
    }

    /// How long a component must be stable before overlaps count: the configured window, but
    /// at least one renewal interval (lease / 3) plus slack, since a renewal is how a node that
    /// missed a winning claim learns of it.
    pub(crate) fn settle_ms(&self) -> u64 {
        self.s.check.settle_ms.max(self.s.lease_ms / 3 + 3_000)
    }

    fn check_safety(&mut self) {
        let contended: Vec<u32> = self.ledger.contended.iter().copied().collect();
        for idx in contended {
            let ex = self.ledger.items[idx as usize].executing.clone();
            if ex.len() < 2 {
                self.ledger.contended.remove(&idx);
                self.watch.settled(idx);
                continue;
            }
            for (i, &a) in ex.iter().enumerate() {
                for &b in &ex[i + 1..] {
                    if let Some(detail) = self.unsafe_pair(idx, a, b) {
                        self.violate(ViolationKind::Safety, detail);
                        return;
                    }
                }
            }
        }
    }

    /// Whether two honest nodes executing item `idx` (each with when it started) break safety,
    /// and how: both took in each other's claim of one epoch, or they overlap in one settled
    /// component.
    fn unsafe_pair(&self, idx: u32, (a, ta): (u32, u64), (b, tb): (u32, u64)) -> Option<String> {
        let item = self.ledger.items[idx as usize].id;
        if let Some(both) = self.same_view_overlap(idx, a, b) {
            return Some(format!(
                "item {} executed by nodes {a} and {b} at one epoch since t={}ms, \
                 each having taken in the other's claim by t={both}ms",
                item.short(),
                ta.max(tb)
            ));
        }
        let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        let o = Overlap {
            since_ms: ta.max(tb),
            same_component: self.net.component(a as usize) == self.net.component(b as usize),
            stable_since_ms: self.faults.topo_changed_at.max(na.up_since).max(nb.up_since),
        };
        // Clocks beyond the skew margin break the lease window on purpose: such a scenario
        // reports the overlaps as duplicates instead.
        if !safety_broken(&o, self.now, self.settle_ms()) || self.s.nodes_spec.skew_beyond_margin {
            return None;
        }
        let view = |n: u32| {
            let node = &self.nodes[n as usize];
            let epoch = node.running.get(&idx).map(|r| r.1);
            let st = node.engine.as_ref().and_then(|e| e.item_state(&item));
            format!("node {n} runs epoch {epoch:?}, its engine says {st:?}")
        };
        Some(format!(
            "item {} executed by nodes {a} and {b} in one settled component since t={}ms; {}; {}",
            item.short(),
            o.since_ms,
            view(a),
            view(b)
        ))
    }

    /// Which items the agreement check looks at now: those quiet since `quiet_before`.
    fn quiet_view(&self, quiet_before: u64) -> QuietView {
        let mut recent = Vec::new();
        let mut quiet = vec![Vec::new(); self.ledger.topic_count as usize];
        for (i, r) in self.ledger.items.iter().enumerate() {
            if r.touched_at > quiet_before {
                recent.push(r.id);
            } else if let Some(q) = quiet.get_mut(r.group as usize) {
                q.push(i as u32);
            }
        }
        recent.sort_unstable();
        QuietView { recent, quiet }
    }

    /// Node `n`'s fingerprint of each of its topics (aligned with `topics`), into `out`:
    /// the XOR of [`state_fingerprint`] over every item of that project its engine knows,
    /// less the recently changed ones. `false` if the node is a liar or down (it has no say).
    ///
    /// Reading an engine's item state costs cache misses (a receipt is decoded behind two
    /// pointers), so this reads as few as it can. An engine's items in a project are the
    /// project's crawl items plus the seed duties it derives, and with no replication it
    /// derives none: then every item that counts is a quiet item in the driver's own table,
    /// and when those are few (after a heal or a restart most items have just changed) they
    /// are looked up one by one. Otherwise one pass over all the engine's items, in id order,
    /// skips the recent ones with a cursor walking alongside, so no item costs a hash look-up.
    /// Debug builds (the tests) check that both ways give the same fingerprints.
    fn node_fingerprints(&self, n: usize, view: &QuietView, out: &mut Vec<u64>) -> bool {
        let node = &self.nodes[n];
        out.clear();
        if node.byz {
            return false;
        }
        let Some(engine) = node.engine.as_ref() else { return false };
        let quiet = |p: &u32| view.quiet.get(*p as usize).map_or(0, Vec::len);
        let looked_up: usize = self.overlay.topics(n as u32).iter().map(quiet).sum();
        if self.s.replication == 0 && looked_up * LOOKUP_PER_SCAN < engine.item_count() {
            self.lookup_fingerprints(n, view, out);
            if cfg!(debug_assertions) {
                let mut scanned = Vec::new();
                self.scan_fingerprints(n, &view.recent, true, &mut scanned);
                debug_assert_eq!(*out, scanned, "node {n}: look-up and scan fingerprints differ");
            }
        } else {
            self.scan_fingerprints(n, &view.recent, false, out);
        }
        true
    }

    /// [`World::node_fingerprints`] by looking up each quiet item of up node `n`'s topics in
    /// its engine; exact only when its engine holds no item of those projects that the
    /// driver's table lacks.
    fn lookup_fingerprints(&self, n: usize, view: &QuietView, out: &mut Vec<u64>) {
        let node = &self.nodes[n];
        let Some(engine) = node.engine.as_ref() else { return };
        out.clear();
        let topics = self.overlay.topics(n as u32);
        out.resize(topics.len(), 0);
        for (ti, p) in topics.iter().enumerate() {
            for &i in view.quiet.get(*p as usize).into_iter().flatten() {
                let id = &self.ledger.items[i as usize].id;
                if let Some(st) = engine.item_state(id) {
                    out[ti] ^= state_fingerprint(id64(id), &st);
                }
            }
        }
    }

    /// [`World::node_fingerprints`] by one pass over every item of up node `n`'s engine.
    ///
    /// With `known_only`, items the driver's table lacks are left out, as the look-up leaves
    /// them: the host lanes an engine derives from a project's URLs, which no run without
    /// `[hosts]` ever claims, so they are alike on every node and change no verdict.
    fn scan_fingerprints(&self, n: usize, recent: &[ItemId], known_only: bool, out: &mut Vec<u64>) {
        let node = &self.nodes[n];
        let Some(engine) = node.engine.as_ref() else { return };
        let topics = self.overlay.topics(n as u32);
        // Per topic, the project it belongs to (a shard's is its project's).
        let pids: Vec<ProjectId> = topics
            .iter()
            .map(|t| {
                let p = self.ledger.project_of_topic(*t);
                p.map_or(ProjectId([0; 32]), |p| self.ledger.projects[p as usize].id)
            })
            .collect();
        // Which of them are whole projects' own topics: an item of one is found by its
        // project alone; one of a split project by its shard (`item_topic`).
        let whole: Vec<bool> = topics
            .iter()
            .map(|t| self.ledger.projects.get(*t as usize).is_some_and(|r| r.depth == 0))
            .collect();
        out.clear();
        out.resize(pids.len(), 0);
        let (mut last, mut cursor) = (0usize, 0usize);
        for (id, pid, st) in engine.items() {
            // The node's few topic ids, the last match first; another project's item (a
            // relay slot) counts nowhere.
            let of_whole = |ti: usize| pids[ti] == pid && whole[ti];
            let ti = if last < pids.len() && of_whole(last) {
                last
            } else {
                let found = (0..pids.len()).find(|ti| of_whole(*ti)).or_else(|| {
                    let t = self.item_topic(engine, &id, &pid)?;
                    topics.iter().position(|x| *x == t)
                });
                match found {
                    Some(ti) => ti,
                    None => continue,
                }
            };
            last = ti;
            // `items()` comes in id order, so the cursor only moves forward; an id at or below
            // the one just passed (an engine that stopped sorting) finds its place afresh.
            if cursor > 0 && recent[cursor - 1] >= id {
                cursor = recent.partition_point(|r| *r < id);
            }
            while cursor < recent.len() && recent[cursor] < id {
                cursor += 1;
            }
            if recent.get(cursor) == Some(&id)
                || (known_only && !self.ledger.item_index.contains_key(&id))
            {
                continue;
            }
            out[ti] ^= state_fingerprint(id64(&id), &st);
        }
    }

    /// The topic item `id` of project `pid` travels on in `engine`'s view: its shard's, for a
    /// split project, else its project's; `None` for a project the driver does not know.
    fn item_topic(&self, engine: &Engine, id: &ItemId, pid: &ProjectId) -> Option<u32> {
        let p = *self.ledger.project_index.get(pid)?;
        if self.ledger.projects[p as usize].depth == 0 {
            return Some(p);
        }
        let key =
            engine.item_work(id).and_then(|(_, w)| starling_protocol::shard::shard_key(id, w));
        Some(self.ledger.group_of(p, key.as_ref()))
    }

    /// Per topic, the fingerprints of every honest up subscriber, in node order.
    fn fingerprints(&self, view: &QuietView) -> Vec<Vec<u64>> {
        let mut groups = vec![Vec::new(); self.ledger.topic_count as usize];
        let mut fp = Vec::new();
        for n in 0..self.nodes.len() {
            if self.node_fingerprints(n, view, &mut fp) {
                for (ti, p) in self.overlay.topics(n as u32).iter().enumerate() {
                    groups[*p as usize].push(fp[ti]);
                }
            }
        }
        groups
    }

    /// Whether every honest up subscriber of each project has the same fingerprint (what
    /// [`all_agree`] over [`World::fingerprints`] says), reading as few engines as it can.
    ///
    /// One disagreeing pair settles a "no", so nodes are read in `check_order`, which puts the
    /// nodes of the last disagreeing pairs first: a node catching up after a restart or a heal
    /// usually still lags at the next check, so most checks that fail read two engines. The
    /// order changes only the work done, never the answer; only a check that ends in agreement
    /// reads every engine. On agreement, the value each project's subscribers agree on (0 for
    /// a project with none), which is what the trace records.
    fn agreement(&mut self, view: &QuietView) -> Option<Vec<u64>> {
        if self.convergence.order.len() != self.nodes.len() {
            self.convergence.order = (0..self.nodes.len() as u32).collect();
        }
        let mut agreed: Vec<Option<(u64, u32)>> = vec![None; self.ledger.topic_count as usize];
        let mut fp = Vec::new();
        let mut odd = None;
        'nodes: for &n in &self.convergence.order {
            if !self.node_fingerprints(n as usize, view, &mut fp) {
                continue;
            }
            for (ti, &p) in self.overlay.topics(n).iter().enumerate() {
                match agreed[p as usize] {
                    None => agreed[p as usize] = Some((fp[ti], n)),
                    Some((v, _)) if v == fp[ti] => {}
                    Some((_, first)) => {
                        odd = Some((first, n));
                        break 'nodes;
                    }
                }
            }
        }
        match odd {
            None => Some(agreed.iter().map(|a| a.map_or(0, |(v, _)| v)).collect()),
            Some((first, n)) => {
                // Move to the front, the one found to differ ahead of the one it differs from.
                self.convergence.read_first(n, first);
                None
            }
        }
    }

    /// Checks whether the honest up subscribers of every project agree on the state of every
    /// quiet item (see the module docs); the violation message comes from the full comparison.
    fn check_convergence(&mut self) {
        let Some(from) = self.convergence.from else { return };
        let view = self.quiet_view(self.now.saturating_sub(self.s.check.quiet_ms));
        if let Some(values) = self.agreement(&view) {
            for v in values {
                self.trace.mix(v);
            }
            if self.faults.had_fault {
                self.convergence.after_heal_ms = Some(self.now - from);
            }
            self.convergence.from = None;
        } else if self.now > from + self.s.check.convergence_bound_ms
            // Clocks beyond the skew margin void the bound: views still must not differ on
            // loss or forged results, and the time to agree is reported, not failed on.
            && !self.s.nodes_spec.skew_beyond_margin
        {
            let groups = self.fingerprints(&view);
            let bad = groups.iter().position(|g| g.windows(2).any(|w| w[0] != w[1])).unwrap_or(0);
            self.violate(
                ViolationKind::Convergence,
                format!(
                    "honest subscribers of project {bad} still disagree {}ms after the last heal at t={from}ms",
                    self.now - from
                ),
            );
        }
    }

    pub(crate) fn final_checks(&mut self) {
        if !self.violations.is_empty() {
            return;
        }
        let counts = self.final_item_counts();
        self.convergence.end_counts = Some(counts);
        // An item failed for the mesh is lost too: the simulator models no fault of an item's
        // own (only of nodes, sites and the network), so no item may end failed.
        let lost = self.ledger.crawl_total - (counts.0 - counts.1).min(self.ledger.crawl_total);
        let honest_up = self.nodes.iter().any(|n| !n.byz && n.up());
        if self.s.check.no_loss && lost > 0 && honest_up {
            self.violate(
                ViolationKind::LostItem,
                format!(
                    "{lost} of {} items not done at t={}ms with honest nodes up ({} failed)",
                    self.ledger.crawl_total, self.now, counts.1
                ),
            );
            return;
        }
        if let Some(from) = self.convergence.from
            && self.now > from + self.s.check.convergence_bound_ms
            && !self.s.nodes_spec.skew_beyond_margin
        {
            self.violate(
                ViolationKind::Convergence,
                format!("honest nodes never agreed after the last heal at t={from}ms"),
            );
            return;
        }
        if self.check_marks() {
            return;
        }
        self.crawl_final_checks();
    }

    /// The first honest up node, the observer of liars being caught.
    fn observer(&self) -> Option<usize> {
        self.nodes.iter().position(|n| !n.byz && n.up() && n.engine.is_some())
    }

    /// Notes the liars the observer now sees marked for the first time, with how many false
    /// results of each it had accepted by then (items it holds done by the liar with a false
    /// result, overturned since or not).
    fn note_caught_liars(&mut self) {
        let Some(o) = self.observer() else { return };
        let Some(engine) = self.nodes[o].engine.as_ref() else { return };
        let liars: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|i| self.nodes[*i as usize].byz && !self.stats.caught.contains_key(i))
            .collect();
        let mut newly = Vec::new();
        for liar in liars {
            let id = self.nodes[liar as usize].key.public().node_id();
            if !self.ledger.projects.iter().any(|p| engine.is_marked(&p.id, &id)) {
                continue;
            }
            let placed = engine
                .items()
                .filter(|(item, _, st)| {
                    matches!(st, ItemState::Done { holder, result, .. }
                        if *holder == id && *result != honest_result(item))
                })
                .count() as u64;
            newly.push((liar, placed));
        }
        for (liar, placed) in newly {
            self.stats.caught.insert(liar, (self.now, placed));
        }
    }

    /// Liars marked for some project on every honest up node.
    fn liars_marked_everywhere(&self) -> u64 {
        let liars = self.nodes.iter().filter(|n| n.byz);
        liars
            .filter(|l| {
                let id = l.key.public().node_id();
                let mut engines = self.honest_engines().peekable();
                engines.peek().is_some()
                    && engines.all(|e| self.ledger.projects.iter().any(|p| e.is_marked(&p.id, &id)))
            })
            .count() as u64
    }

    /// An honest engine that marked an honest node is a violation. Returns whether one was.
    fn check_marks(&mut self) -> bool {
        let mut found = None;
        'outer: for (o, node) in self.nodes.iter().enumerate().filter(|(_, n)| !n.byz) {
            let Some(engine) = node.engine.as_ref() else { continue };
            for p in &self.ledger.projects {
                for (marked, strikes) in engine.marked(&p.id) {
                    if !self.is_liar(&marked) {
                        found = Some(format!(
                            "node {o} marked honest node {} for project {} ({strikes} strikes)",
                            marked.short(),
                            p.id.short()
                        ));
                        break 'outer;
                    }
                }
            }
        }
        match found {
            Some(detail) => {
                self.violate(ViolationKind::HonestMarked, detail);
                true
            }
            None => false,
        }
    }

    /// (done or given up, failed, bogus) crawl items in the view of the honest up nodes.
    /// The engines of honest nodes that are up.
    fn honest_engines(&self) -> impl Iterator<Item = &starling_protocol::Engine> {
        self.nodes.iter().filter(|n| !n.byz).filter_map(|n| n.engine.as_ref())
    }

    pub(crate) fn final_item_counts(&self) -> (u64, u64, u64) {
        let mut state = vec![0u8; self.ledger.items.len()];
        for node in self.nodes.iter().filter(|n| !n.byz) {
            let Some(engine) = node.engine.as_ref() else { continue };
            for (id, _, st) in engine.items() {
                let Some(&i) = self.ledger.item_index.get(&id) else { continue };
                if !self.ledger.items[i as usize].crawl {
                    continue;
                }
                let s = &mut state[i as usize];
                match st {
                    // The result kept: the producer's, or a check's that overturned it.
                    ItemState::Done { .. }
                        if engine.kept(&id).is_some_and(|k| k.1 == honest_result(&id)) =>
                    {
                        *s |= 1
                    }
                    ItemState::Done { .. } => *s |= 4,
                    ItemState::Failed { .. } => *s |= 2,
                    _ => {}
                }
            }
        }
        let done = state.iter().filter(|s| **s != 0).count() as u64;
        let failed = state.iter().filter(|s| **s & 2 != 0).count() as u64;
        let bogus = state.iter().filter(|s| **s & 4 != 0).count() as u64;
        (done, failed, bogus)
    }

    /// How the first project is split at the end, and what its nodes hold.
    fn shard_report(&self) -> crate::report::ShardReport {
        let depth = self.ledger.projects.first().map_or(0, |p| p.depth);
        let honest_up = |n: &u32| {
            let node = &self.nodes[*n as usize];
            node.up() && !node.byz
        };
        let sizes: Vec<u32> = (0..1u32 << depth)
            .map(|prefix| {
                let shard = starling_protocol::Shard { depth, prefix: prefix as u16 };
                let t = self.ledger.shard_topic(0, shard);
                self.overlay.subscribers(t).iter().filter(|n| honest_up(n)).count() as u32
            })
            .collect();
        let items: Vec<u64> = self.honest_engines().map(|e| e.item_count() as u64).collect();
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        let sizes64: Vec<u64> = sizes.iter().map(|s| u64::from(*s)).collect();
        crate::report::ShardReport {
            depth,
            reshards: self.stats.reshards,
            members_min: sizes.iter().copied().min().unwrap_or(0),
            members_mean: round3(mean(&sizes64)),
            members_max: sizes.iter().copied().max().unwrap_or(0),
            items_per_node_mean: round3(mean(&items)),
            items_per_node_max: items.iter().copied().max().unwrap_or(0),
        }
    }

    /// The deterministic part of the report.
    pub(crate) fn result(&self) -> RunResult {
        // Counted once at the end by `final_checks` (a pass over every item of every node).
        let (done, failed, bogus) =
            self.convergence.end_counts.unwrap_or_else(|| self.final_item_counts());
        let Executions { started, items_started, completed, items_completed } =
            self.ledger.executions();
        let dup = started - items_started;
        let secs = (self.now.max(1) as f64) / 1_000.0;
        let n = self.s.nodes.max(1) as f64;
        let honest_up = self.nodes.iter().any(|n| !n.byz && n.up());
        RunResult {
            scenario: self.s.name.clone(),
            seed: self.seed,
            nodes: self.s.nodes,
            items: self.ledger.crawl_total,
            sim_ms: self.now,
            time_to_finish_ms: self
                .ledger
                .all_done_at
                .map(|t| t.saturating_sub(self.s.publish_at_ms)),
            items_done: done - failed,
            lost_items: if honest_up {
                self.ledger.crawl_total.saturating_sub(done - failed)
            } else {
                0
            },
            failed_items: failed,
            bogus_results: bogus,
            checks_started: self.stats.checks_started,
            results_overturned: self.honest_engines().next().map_or(0, |e| e.stats().overturned),
            liars_marked: self.liars_marked_everywhere(),
            liar_false_results_before_caught: self.stats.caught.values().map(|c| c.1).sum(),
            liars_caught: self.stats.caught.len() as u64,
            copyless_held_ms_max: self.stats.copyless_held_ms_max,
            copyless_duties_end: self.copyless_at_end(),
            copies_proven: self.honest_engines().map(|e| e.stats().proofs).sum(),
            copies_given_up: self
                .nodes
                .iter()
                .filter_map(|n| n.engine.as_ref())
                .map(|e| e.stats().unproven)
                .sum(),
            liar_results_won: self.watch.liar_won.len() as u64,
            nodes_clock_off: self.honest_engines().filter(|e| e.clock().off).count() as u64,
            items_given_back: self.honest_engines().map(|e| e.stats().gave_back).sum(),
            executions_started: started,
            executions_completed: completed,
            duplicate_executions: dup,
            duplicate_pct: round3(dup as f64 * 100.0 / self.ledger.crawl_total.max(1) as f64),
            reruns_after_churn: self.stats.reruns,
            protocol_duplicate_pct: round3(
                dup.saturating_sub(self.stats.reruns) as f64 * 100.0
                    / self.ledger.crawl_total.max(1) as f64,
            ),
            duplicate_completions: completed - items_completed,
            duplicate_examples: self.ledger.dup_examples.clone(),
            messages: self.stats.messages,
            bytes: self.stats.bytes,
            sync_messages: self.stats.sync_messages,
            sync_bytes: self.stats.sync_bytes,
            messages_per_node_s: round3(self.stats.messages as f64 / n / secs),
            bytes_per_node_s: round3((self.stats.bytes + self.stats.sync_bytes) as f64 / n / secs),
            messages_dropped: self.stats.dropped,
            duplicate_deliveries: self.stats.dup_deliveries,
            propagation_ms: self.hist.percentiles(),
            convergence_after_heal_ms: self.convergence.after_heal_ms,
            faults: self.stats.faults + self.stats.churn.crashes + self.stats.churn.leaves,
            churn: self.stats.churn,
            rejected: starling_protocol::Reject::ALL
                .iter()
                .zip(self.stats.rejected)
                .filter(|(_, c)| *c > 0)
                .map(|(r, c)| (r.name().to_string(), c))
                .collect(),
            events: self.events,
            copies_settled_at_send: self.stats.settled_at_send,
            model_events: self.events + self.stats.settled_at_send,
            engine_inputs: self.stats.engine_inputs,
            signatures: starling_protocol::signed::signatures_made() - self.stats.signatures_before,
            shards: (self.s.shards.members > 0).then(|| self.shard_report()),
            hosts: self.hosts.as_ref().map(|h| h.report(self.s.publish_at_ms)),
            trace_hash: self.trace.hash_hex(),
            violations: self
                .violations
                .iter()
                .map(|v| format!("{:?}: {}", v.kind, v.detail))
                .collect(),
        }
    }
}

/// Rounds to three decimals so the JSON does not carry float noise.
fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::Digest;

    #[test]
    fn safety_ignores_short_or_cross_component_overlaps() {
        let o = Overlap { since_ms: 1_000, same_component: true, stable_since_ms: 0 };
        assert!(!safety_broken(&o, 3_000, 5_000));
        assert!(safety_broken(&o, 6_000, 5_000));
        let split = Overlap { same_component: false, ..o };
        assert!(!safety_broken(&split, 60_000, 5_000));
        let unstable = Overlap { stable_since_ms: 5_000, ..o };
        assert!(!safety_broken(&unstable, 8_000, 5_000));
    }

    /// A small world run to its end, engines still up.
    fn ran(name: &str) -> World {
        let mut s = crate::Scenario::load(name).expect("built-in scenario loads");
        let small = crate::Overrides { nodes: Some(8), items: Some(60), ..Default::default() };
        s.apply_overrides(&small).expect("small override is valid");
        s.projects = 2;
        s.projects_per_node = 2;
        let mut world = World::new(&s, 5);
        world.run(|_, _| {});
        world
    }

    #[test]
    fn fingerprint_lookups_and_scans_agree() {
        for name in ["churn", "partition-heal", "byzantine"] {
            let w = ran(name);
            let mut times: Vec<u64> = w.ledger.items.iter().map(|r| r.touched_at).collect();
            times.sort_unstable();
            let mut cuts = vec![0, w.now];
            cuts.extend(times.iter().step_by(7).map(|t| t.saturating_sub(1)));
            let (mut up, mut seen) = (0, 0);
            for quiet_before in cuts {
                let view = w.quiet_view(quiet_before);
                for n in 0..w.nodes.len() {
                    if w.nodes[n].byz || !w.nodes[n].up() {
                        continue;
                    }
                    up += 1;
                    let (mut looked, mut scanned) = (Vec::new(), Vec::new());
                    w.lookup_fingerprints(n, &view, &mut looked);
                    w.scan_fingerprints(n, &view.recent, true, &mut scanned);
                    assert_eq!(looked, scanned, "{name}: node {n}, quiet before {quiet_before}");
                    seen += looked.iter().filter(|f| **f != 0).count();
                }
            }
            assert!(up > 0 && seen > 0, "{name}: no honest node up, or nothing to compare");
        }
    }

    #[test]
    fn agreement_answers_as_the_full_comparison_does() {
        for name in ["steady", "churn", "byzantine"] {
            let mut w = ran(name);
            let now = w.now;
            for quiet_before in [0, now / 4, now / 2, now.saturating_sub(3_000), now] {
                let view = w.quiet_view(quiet_before);
                let groups = w.fingerprints(&view);
                // Twice: the second time in the order the first one left.
                for _ in 0..2 {
                    let got = w.agreement(&view);
                    assert_eq!(got.is_some(), all_agree(&groups), "{name}, {quiet_before}");
                    if let Some(values) = got {
                        let first: Vec<u64> =
                            groups.iter().map(|g| g.first().copied().unwrap_or(0)).collect();
                        assert_eq!(values, first);
                    }
                }
            }
            // A node that knows nothing is found, last in the order or first.
            let view = w.quiet_view(now);
            let honest: Vec<usize> =
                (0..w.nodes.len()).filter(|n| !w.nodes[*n].byz && w.nodes[*n].up()).collect();
            let victim = *honest.last().expect("an honest node is up");
            assert!(w.agreement(&view).is_some(), "{name}: agree at the end");
            let trusted =
                crate::world::trusted(w.overlay.topics(victim as u32), &w.ledger.projects);
            let node = &mut w.nodes[victim];
            let blank = starling_protocol::Engine::new(w.cfg.clone(), node.key.clone(), trusted, 1);
            node.engine = Some(blank);
            assert!(!all_agree(&w.fingerprints(&view)), "{name}: the blank node differs");
            assert!(w.agreement(&view).is_none(), "{name}: found last");
            assert_eq!(w.convergence.order[0], victim as u32, "{name}: moved to the front");
            assert!(w.agreement(&view).is_none(), "{name}: found first");
        }
    }

    #[test]
    fn fingerprints_see_holder_and_result_not_lease() {
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let h = |holder, lease| ItemState::Held {
            holder,
            epoch: 1,
            lease_until_ms: lease,
            ready: false,
        };
        assert_eq!(state_fingerprint(7, &h(a, 10)), state_fingerprint(7, &h(a, 99)));
        assert_ne!(state_fingerprint(7, &h(a, 10)), state_fingerprint(7, &h(b, 10)));
        let d = |r: &[u8]| ItemState::Done { holder: a, epoch: 1, result: Digest::of(r), size: 1 };
        assert_ne!(state_fingerprint(7, &d(b"x")), state_fingerprint(7, &d(b"y")));
        assert!(all_agree(&[vec![1, 1, 1], vec![2]]));
        assert!(!all_agree(&[vec![1, 1], vec![2, 3]]));
    }
}
