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

use starling_protocol::{ItemState, NodeId};

use crate::net::mix64;
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

impl World {
    pub(crate) fn on_check(&mut self) {
        self.check_safety();
        if self.violations.is_empty() {
            self.check_convergence();
        }
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
        let contended: Vec<u32> = self.contended.iter().copied().collect();
        for idx in contended {
            let ex = self.items[idx as usize].executing.clone();
            if ex.len() < 2 {
                self.contended.remove(&idx);
                continue;
            }
            for (i, &(a, ta)) in ex.iter().enumerate() {
                for &(b, tb) in &ex[i + 1..] {
                    let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
                    let o = Overlap {
                        since_ms: ta.max(tb),
                        same_component: self.net.component(a as usize)
                            == self.net.component(b as usize),
                        stable_since_ms: self.topo_changed_at.max(na.up_since).max(nb.up_since),
                    };
                    if safety_broken(&o, self.now, self.settle_ms()) {
                        let item = self.items[idx as usize].id;
                        let view = |n: u32| {
                            let node = &self.nodes[n as usize];
                            let epoch = node.running.get(&idx).map(|r| r.1);
                            let st = node.engine.as_ref().and_then(|e| e.item_state(&item));
                            format!("node {n} runs epoch {epoch:?}, its engine says {st:?}")
                        };
                        let detail = format!(
                            "item {} executed by nodes {a} and {b} in one settled component since \
                             t={}ms; {}; {}",
                            item.short(),
                            o.since_ms,
                            view(a),
                            view(b)
                        );
                        self.violate(ViolationKind::Safety, detail);
                        return;
                    }
                }
            }
        }
    }

    /// Per project, the fingerprints of every honest up subscriber.
    fn fingerprints(&self) -> Vec<Vec<u64>> {
        let quiet_before = self.now.saturating_sub(self.s.check.quiet_ms);
        let mut groups = vec![Vec::new(); self.projects.len()];
        for node in self.nodes.iter().filter(|n| !n.byz) {
            let Some(engine) = node.engine.as_ref() else { continue };
            let mut fp = vec![0u64; node.topics.len()];
            for (id, pid, st) in engine.items() {
                let Some(&p) = self.project_index.get(&pid) else { continue };
                let Some(ti) = node.topics.iter().position(|t| *t == p) else { continue };
                if let Some(&i) = self.item_index.get(&id)
                    && self.items[i as usize].touched_at > quiet_before
                {
                    continue;
                }
                fp[ti] ^= state_fingerprint(id64(&id), &st);
            }
            for (ti, p) in node.topics.iter().enumerate() {
                groups[*p as usize].push(fp[ti]);
            }
        }
        groups
    }

    fn check_convergence(&mut self) {
        let Some(from) = self.converge_from else { return };
        let groups = self.fingerprints();
        if all_agree(&groups) {
            for g in &groups {
                self.trace.mix(g.first().copied().unwrap_or(0));
            }
            if self.had_fault {
                self.convergence_ms = Some(self.now - from);
            }
            self.converge_from = None;
        } else if self.now > from + self.s.check.convergence_bound_ms {
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
        self.end_counts = Some(counts);
        let lost = self.crawl_total - counts.0.min(self.crawl_total);
        let honest_up = self.nodes.iter().any(|n| !n.byz && n.up());
        if self.s.check.no_loss && lost > 0 && honest_up {
            self.violate(
                ViolationKind::LostItem,
                format!(
                    "{lost} of {} items not done at t={}ms with honest nodes up",
                    self.crawl_total, self.now
                ),
            );
            return;
        }
        if let Some(from) = self.converge_from
            && self.now > from + self.s.check.convergence_bound_ms
        {
            self.violate(
                ViolationKind::Convergence,
                format!("honest nodes never agreed after the last heal at t={from}ms"),
            );
        }
    }

    /// (done or given up, failed, bogus) crawl items in the view of the honest up nodes.
    fn final_item_counts(&self) -> (u64, u64, u64) {
        let mut state = vec![0u8; self.items.len()];
        for node in self.nodes.iter().filter(|n| !n.byz) {
            let Some(engine) = node.engine.as_ref() else { continue };
            for (id, _, st) in engine.items() {
                let Some(&i) = self.item_index.get(&id) else { continue };
                if !self.items[i as usize].crawl {
                    continue;
                }
                let s = &mut state[i as usize];
                match st {
                    ItemState::Done { result, .. } if result == honest_result(&id) => *s |= 1,
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

    /// The deterministic part of the report.
    pub(crate) fn result(&self) -> RunResult {
        // Counted once at the end by `final_checks` (a pass over every item of every node).
        let (done, failed, bogus) = self.end_counts.unwrap_or_else(|| self.final_item_counts());
        let crawl = self.items.iter().filter(|r| r.crawl);
        let (mut started, mut items_started, mut completed, mut items_completed) =
            (0u64, 0u64, 0u64, 0u64);
        for r in crawl {
            started += u64::from(r.starts);
            items_started += u64::from(r.starts > 0);
            completed += u64::from(r.completions);
            items_completed += u64::from(r.completions > 0);
        }
        let dup = started - items_started;
        let secs = (self.now.max(1) as f64) / 1_000.0;
        let n = self.s.nodes.max(1) as f64;
        let honest_up = self.nodes.iter().any(|n| !n.byz && n.up());
        RunResult {
            scenario: self.s.name.clone(),
            seed: self.seed,
            nodes: self.s.nodes,
            items: self.crawl_total,
            sim_ms: self.now,
            time_to_finish_ms: self.all_done_at.map(|t| t.saturating_sub(self.s.publish_at_ms)),
            items_done: done - failed,
            lost_items: if honest_up { self.crawl_total.saturating_sub(done) } else { 0 },
            failed_items: failed,
            bogus_results: bogus,
            executions_started: started,
            executions_completed: completed,
            duplicate_executions: dup,
            duplicate_pct: round3(dup as f64 * 100.0 / self.crawl_total.max(1) as f64),
            reruns_after_churn: self.stats.reruns,
            protocol_duplicate_pct: round3(
                dup.saturating_sub(self.stats.reruns) as f64 * 100.0
                    / self.crawl_total.max(1) as f64,
            ),
            duplicate_completions: completed - items_completed,
            duplicate_examples: self.dup_examples.clone(),
            messages: self.stats.messages,
            bytes: self.stats.bytes,
            sync_messages: self.stats.sync_messages,
            sync_bytes: self.stats.sync_bytes,
            messages_per_node_s: round3(self.stats.messages as f64 / n / secs),
            bytes_per_node_s: round3((self.stats.bytes + self.stats.sync_bytes) as f64 / n / secs),
            messages_dropped: self.stats.dropped,
            duplicate_deliveries: self.stats.dup_deliveries,
            propagation_ms: self.hist.percentiles(),
            convergence_after_heal_ms: self.convergence_ms,
            faults: self.stats.faults + self.stats.churn.crashes + self.stats.churn.leaves,
            churn: self.stats.churn,
            rejected: starling_protocol::Reject::ALL
                .iter()
                .zip(self.stats.rejected)
                .filter(|(_, c)| *c > 0)
                .map(|(r, c)| (r.name().to_string(), c))
                .collect(),
            events: self.events,
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
