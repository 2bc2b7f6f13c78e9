//! The work model: a `StartWork` output becomes a `WorkDone` (or `WorkFailed`) input after an
//! execution time drawn per item kind (longer on slow nodes), unless a `CancelWork` comes
//! first. Every start and completion by an honest node is counted per item, which is where the
//! duplicate figures come from.

use rand::Rng;
use starling_protocol::{Input, ItemId, ProjectId, WorkItem, WorkKind};

use crate::world::{DUP_EXAMPLES_MAX, End, Event, ItemRec, World, honest_result, id64};

impl World {
    pub(crate) fn mark_done(&mut self, item: ItemId) {
        let Some(&idx) = self.item_index.get(&item) else { return };
        let rec = &mut self.items[idx as usize];
        if rec.done || !rec.crawl {
            return;
        }
        rec.done = true;
        self.done_count += 1;
        if self.done_count == self.crawl_total {
            self.all_done_at = Some(self.now);
        }
    }

    /// The driver's index for an item, registering derived items (seed duties) on first sight.
    pub(crate) fn item_idx(&mut self, item: ItemId, project: ProjectId, kind: WorkKind) -> u32 {
        if let Some(&i) = self.item_index.get(&item) {
            return i;
        }
        let i = self.items.len() as u32;
        self.item_index.insert(item, i);
        let project = self.project_index.get(&project).copied().unwrap_or(u32::MAX);
        self.items.push(ItemRec {
            id: item,
            project,
            crawl: kind == WorkKind::Crawl,
            starts: 0,
            completions: 0,
            executing: Vec::new(),
            done: false,
            touched_at: self.now,
            last_end: End::None,
        });
        i
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
        let idx = self.item_idx(item, project, kind);
        let node = &self.nodes[n as usize];
        if node.byz && self.s.byzantine.never_work {
            return;
        }
        if idx < self.s.sabotage.drop_items {
            return;
        }
        let (byz, slow) = (node.byz, node.slow);
        self.record("start", n, u32::MAX, id64(&item));
        if !byz {
            let rec = &mut self.items[idx as usize];
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
            let rec = &mut self.items[idx as usize];
            rec.starts += 1;
            rec.executing.push((n, self.now));
            if rec.executing.len() > 1 {
                self.contended.insert(idx);
            }
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

    /// Stops node `n`'s execution of item `idx`, which ended as `end`.
    pub(crate) fn stop_work(&mut self, n: u32, idx: u32, end: End) {
        let was_running = self.nodes[n as usize].running.remove(&idx).is_some();
        let honest = !self.nodes[n as usize].byz;
        if let Some(rec) = self.items.get_mut(idx as usize) {
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
        let item = self.items[idx as usize].id;
        self.record("done", n, u32::MAX, id64(&item));
        let crawl = self.items[idx as usize].crawl;
        let input = if self.in_fault(n) {
            // Only under the `local_faults_as_failures` sabotage does work run into the
            // node's own fault: told of it, the engine gave its work back.
            Input::WorkFailed { item, epoch, reason: "store write failed".into(), retryable: false }
        } else if crawl && self.site_is_down(&item) {
            let reason = "robots.txt unreachable: 503".into();
            Input::WorkFailed { item, epoch, reason, retryable: true }
        } else if self.s.work.fail_rate > 0.0
            && self.rng.random_bool(self.s.work.fail_rate.min(1.0))
        {
            Input::WorkFailed { item, epoch, reason: "simulated failure".into(), retryable: true }
        } else {
            Input::WorkDone(starling_protocol::WorkResult {
                item,
                epoch,
                result: honest_result(&item),
                size: 1_000,
                ok: 1,
                failed: 0,
                parts: Vec::new(),
            })
        };
        if !byz {
            let rec = &mut self.items[idx as usize];
            if matches!(input, Input::WorkFailed { .. }) {
                // A retry after this is work the failure made necessary, not a duplicate.
                rec.last_end = End::Failed;
            } else {
                rec.completions += 1;
                if rec.completions > 1 && self.dup_examples.len() < DUP_EXAMPLES_MAX {
                    let what = format!(
                        "item {} completed again by node {n} at epoch {epoch}, t={}ms",
                        item.short(),
                        self.now
                    );
                    self.dup_examples.push(what);
                }
            }
        }
        self.drive(n, input);
    }
}
