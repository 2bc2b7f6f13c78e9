//! A runner for tests only, compiled into debug builds (and, for the mesh benchmark, into
//! release builds with the `test-runner` feature), never into the shipped release binary.
//!
//! Switched on by `STARLING_TEST_RUNNER_DELAY_MS`: a crawl chunk "completes" after that delay
//! with the blake3 digest of its URLs as the result, without fetching anything; a seeding duty
//! reports ready after the same delay. Multi-process tests use it to drive the real node.
//! A chunk with a URL containing [`BROKEN_MARK`] fails instead, as not retryable: an item
//! broken in itself, for the tests of failure handling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use starling_protocol::{Digest, ItemId, WorkItem, WorkKind, WorkResult};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::runner::{Job, Runner, RunnerCounters, WorkReport};

/// A chunk with a URL containing this fails (not retryable).
pub const BROKEN_MARK: &str = "/broken/";

/// The environment variable that switches the test runner on.
pub const DELAY_ENV: &str = "STARLING_TEST_RUNNER_DELAY_MS";

/// The configured delay, if the test runner is switched on; says nothing.
pub fn delay_ms() -> Option<u64> {
    std::env::var(DELAY_ENV).ok()?.parse::<u64>().ok()
}

/// The configured delay, if the test runner is switched on (and a warning that it is).
pub fn delay_from_env() -> Option<Duration> {
    let ms = delay_ms()?;
    tracing::warn!(delay_ms = ms, "TEST RUNNER ACTIVE: work completes without being done");
    Some(Duration::from_millis(ms))
}

/// Completes jobs after a fixed delay.
#[derive(Debug)]
pub struct TestRunner {
    kind: WorkKind,
    delay: Duration,
    reports: mpsc::Sender<WorkReport>,
    counters: Arc<RunnerCounters>,
    running: BTreeMap<(ItemId, u32), AbortHandle>,
}

impl TestRunner {
    /// A runner for `kind`.
    pub fn new(
        kind: WorkKind,
        delay: Duration,
        reports: mpsc::Sender<WorkReport>,
        counters: Arc<RunnerCounters>,
    ) -> Self {
        Self { kind, delay, reports, counters, running: BTreeMap::new() }
    }
}

fn result_of(work: &WorkItem) -> (Digest, u64, u32) {
    match work {
        WorkItem::CrawlChunk { urls } => {
            let joined = urls.join("\n");
            (Digest::of(joined.as_bytes()), joined.len() as u64, urls.len() as u32)
        }
        WorkItem::SeedDuty { result, size, .. } => (*result, *size, 1),
        WorkItem::Torrent { info_hash, .. } => (Digest::of(info_hash), 0, 1),
        WorkItem::RelaySlot { .. } => (Digest::of(b"relay"), 0, 1),
        WorkItem::HostLane { .. } => (Digest::of(b"lane"), 0, 1),
        // Stands for an honest check: what it fetched is what the producer reported.
        WorkItem::Verify { result, .. } => (*result, 0, 1),
    }
}

impl Runner for TestRunner {
    fn kind(&self) -> WorkKind {
        self.kind
    }

    fn start(&mut self, job: Job) {
        self.running.retain(|_, h| !h.is_finished());
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let (delay, reports, counters) = (self.delay, self.reports.clone(), self.counters.clone());
        let (item, epoch) = (job.item, job.epoch);
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (result, size, ok) = result_of(&job.work);
            counters.completed.fetch_add(1, Ordering::Relaxed);
            let broken = matches!(&job.work, WorkItem::CrawlChunk { urls }
                if urls.iter().any(|u| u.contains(BROKEN_MARK)));
            if broken {
                let reason = "test runner: this item is broken".to_owned();
                let report = WorkReport::Failed { item, epoch, reason, retryable: false };
                let _ = reports.send(report).await;
                return;
            }
            let report = WorkReport::Done(WorkResult {
                item,
                epoch,
                result,
                size,
                ok,
                failed: 0,
                parts: Vec::new(),
            });
            let _ = reports.send(report).await;
        });
        self.running.insert((item, epoch), task.abort_handle());
    }

    fn cancel(&mut self, item: ItemId, epoch: u32) {
        if let Some(h) = self.running.remove(&(item, epoch))
            && !h.is_finished()
        {
            h.abort();
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}
