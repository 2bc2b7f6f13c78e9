//! The work model: a `StartWork` output becomes a `WorkDone` (or `WorkFailed`) input after an
//! execution time drawn per item kind (longer on slow nodes), unless a `CancelWork` comes
//! first. Every start and completion by an honest node is counted per item, which is where the
//! duplicate figures come from.

use rand::Rng;
use starling_protocol::message::PartOutcome;
use starling_protocol::{Digest, Input, ItemId, ItemState, NodeId, ProjectId, WorkItem, WorkKind};

use crate::parts::End;
use crate::world::{Event, ViolationKind, World, bogus_result, honest_result, id64, page_parts};

impl World {
    /// A crawl item is done in an honest node's view.
    pub(crate) fn mark_done(&mut self, item: ItemId) {
        self.ledger.mark_done(item, self.now);
    }

    pub(crate) fn start_work(
        &mut self,
        n: u32,
        item: ItemId,
        epoch: u32,
        project: ProjectId,
        work: &WorkItem,
    ) {
        let kind = work.kind();
        let check = matches!(work, WorkItem::Verify { .. });
        let key = starling_protocol::shard::shard_key(&item, work);
        let idx = self.ledger.register(item, project, key, kind, check, self.now);
        let node = &self.nodes[n as usize];
        if node.byz && self.s.byzantine.never_work {
            return;
        }
        if idx < self.s.sabotage.drop_items {
            return;
        }
        let (byz, slow) = (node.byz, node.slow);
        // A node whose clock is far off has a heartbeat's life to find out, then claims
        // nothing for as long as it is off, whoever it hears meanwhile.
        if let Some(since) = node.clock_off_since
            && !byz
            && self.now >= since.saturating_add(self.cfg.presence_ttl_ms)
        {
            let offset = node.clock_offset_ms;
            self.violate(
                ViolationKind::OffClockWork,
                format!("node {n}, its clock {offset} ms off since t={since}ms, started work"),
            );
        }
        self.record("start", n, u32::MAX, id64(&item));
        if !byz {
            let rec = &mut self.ledger.items[idx as usize];
            rec.executing.retain(|(m, _)| *m != n);
            // A rerun after the last execution was lost to churn or failed, with nobody else on
            // the item and no result yet, is work the protocol had to redo, not a duplicate.
            if rec.crawl
                && rec.starts > 0
                && rec.executing.is_empty()
                && rec.completions == 0
                && matches!(rec.last_end, End::Churn | End::Failed)
            {
                self.stats.reruns += 1;
            }
            if check {
                self.stats.checks_started += 1;
            }
            let rec = &mut self.ledger.items[idx as usize];
            rec.starts += 1;
            rec.executing.push((n, self.now));
            if rec.executing.len() > 1 {
                self.ledger.contended.insert(idx);
            }
        }
        // A spot-check runs as a timed job: the model of host budgets covers the chunks.
        if self.hosts.is_some() && kind == WorkKind::Crawl && !check {
            // Crawling against hosts: done when its last URL is fetched (`crawl.rs`).
            self.token_seq += 1;
            let token = self.token_seq;
            self.nodes[n as usize].running.insert(idx, (token, epoch));
            self.crawl_start(n, idx, token, epoch);
            return;
        }
        let mean = match kind {
            WorkKind::Crawl => self.s.work.crawl_ms,
            _ => self.s.work.seed_ms,
        } as f64;
        let j = self.s.work.jitter.clamp(0.0, 0.99);
        let mut ms = mean * (1.0 + j * (2.0 * self.rng.random::<f64>() - 1.0));
        if slow {
            ms *= self.s.nodes_spec.slow_factor.max(1.0);
        }
        self.token_seq += 1;
        let token = self.token_seq;
        self.nodes[n as usize].running.insert(idx, (token, epoch));
        self.push(
            self.now + (ms as u64).max(1),
            Event::WorkDone { node: n, item: idx, token, epoch },
        );
    }

    /// What node `n` reports for `item` it ran: for a chunk its result and pages, for a
    /// spot-check its source's as fetched now. A liar reports a false chunk result with chance
    /// `byzantine.false_results`, and with `collude` confirms another liar's false result it
    /// checks. Pages are reported only where the scenario models them (`[verify]`).
    fn report(&mut self, n: u32, item: &ItemId) -> (Digest, Vec<PartOutcome>) {
        let Some(engine) = self.nodes[n as usize].engine.as_ref() else {
            return (honest_result(item), Vec::new());
        };
        let (target, check) = match engine.item_work(item) {
            Some((_, WorkItem::Verify { source, .. })) => (*source, true),
            _ => (*item, false),
        };
        let mut lie = false;
        if self.nodes[n as usize].byz {
            let b = &self.s.byzantine;
            if check {
                // Colluding: a liar's false result checked by a liar is confirmed.
                lie = b.collude
                    && matches!(engine.item_state(&target),
                        Some(ItemState::Done { holder, result, .. })
                            if result != honest_result(&target) && self.is_liar(&holder));
            } else if b.false_results > 0.0 {
                lie = self.rng.random_bool(b.false_results.min(1.0));
            }
        }
        let result = if lie { bogus_result(&target) } else { honest_result(&target) };
        let parts = if self.s.verify.parts_modeled() {
            let urls =
                match self.nodes[n as usize].engine.as_ref().and_then(|e| e.item_work(&target)) {
                    Some((_, WorkItem::CrawlChunk { urls })) => urls.clone(),
                    _ => Vec::new(),
                };
            page_parts(&target, &urls, self.now, self.s.verify.change_every_ms, lie)
        } else {
            Vec::new()
        };
        (result, parts)
    }

    /// Whether `node` is one of the run's liars.
    pub(crate) fn is_liar(&self, node: &NodeId) -> bool {
        self.watch.node_of(node).is_some_and(|i| self.nodes[i as usize].byz)
    }

    /// Stops node `n`'s execution of item `idx`, which ended as `end`.
    pub(crate) fn stop_work(&mut self, n: u32, idx: u32, end: End) {
        let was_running = self.nodes[n as usize].running.remove(&idx).is_some();
        self.crawl_stop(n, idx);
        let honest = !self.nodes[n as usize].byz;
        if let Some(rec) = self.ledger.items.get_mut(idx as usize) {
            rec.executing.retain(|(m, _)| *m != n);
            if was_running && honest {
                rec.last_end = end;
            }
        }
    }

    pub(crate) fn on_work_done(&mut self, n: u32, idx: u32, token: u64, epoch: u32) {
        let node = &self.nodes[n as usize];
        if node.running.get(&idx).map(|r| r.0) != Some(token) || !node.up() {
            return;
        }
        let byz = node.byz;
        self.stop_work(n, idx, End::Completed);
        let item = self.ledger.items[idx as usize].id;
        self.record("done", n, u32::MAX, id64(&item));
        let crawl = self.ledger.items[idx as usize].crawl;
        let input = if self.in_fault(n) {
            // Only under the `local_faults_as_failures` sabotage does work run into the
            // node's own fault: told of it, the engine gave its work back.
            Input::WorkFailed { item, epoch, reason: "store write failed".into(), retryable: false }
        } else if crawl && self.faults.site_is_down(&item, self.now) {
            let reason = "robots.txt unreachable: 503".into();
            Input::WorkFailed { item, epoch, reason, retryable: true }
        } else if self.s.work.fail_rate > 0.0
            && self.rng.random_bool(self.s.work.fail_rate.min(1.0))
        {
            Input::WorkFailed { item, epoch, reason: "simulated failure".into(), retryable: true }
        } else {
            let (result, parts) = self.report(n, &item);
            self.keep_copy(n, &item, &result);
            Input::WorkDone(starling_protocol::WorkResult {
                item,
                epoch,
                result,
                size: crate::world::RESULT_BYTES as u64,
                ok: 1,
                failed: 0,
                parts,
            })
        };
        if !byz {
            let rec = &mut self.ledger.items[idx as usize];
            if matches!(input, Input::WorkFailed { .. }) {
                // A retry after this is work the failure made necessary, not a duplicate.
                rec.last_end = End::Failed;
            } else {
                rec.completions += 1;
                if rec.completions > 1 {
                    let now = self.now;
                    self.ledger.note_duplicate(|| {
                        format!(
                            "item {} completed again by node {n} at epoch {epoch}, t={now}ms",
                            item.short()
                        )
                    });
                }
            }
        }
        self.drive(n, input);
    }
}
