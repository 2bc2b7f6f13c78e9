//! Lifetime contribution figures: what the node did over all its runs. The figures saved last
//! are read at start; this run's are counted here (items, URLs, archived bytes) or read from
//! the parts that count them since start (bytes served, circuits relayed); the sum is written
//! back every [`LIFETIME_SAVE_INTERVAL`] and at shutdown, so a crash loses at most that long.

use std::collections::BTreeMap;
use std::time::Duration;

use starling_protocol::{WorkItem, WorkResult};

use crate::store::Store;
use crate::views::LifetimeView;

/// How often the lifetime figures are written to the store (and so, at most, what a crash
/// loses of them).
pub const LIFETIME_SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// The saved figures and this run's counts.
#[derive(Debug, Default)]
pub(super) struct Lifetime {
    /// As saved before this run started.
    base: LifetimeView,
    /// Items finished this run, by kind.
    items: BTreeMap<String, u64>,
    /// URLs archived this run.
    urls: u64,
    /// Crawl result bytes produced this run.
    bytes_archived: u64,
    /// When this run started.
    started_ms: u64,
    /// When the figures were last written in this run (0: not yet).
    saved_ms: u64,
}

/// What this run's other parts counted since start.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RunCounts {
    /// Bytes served to peers (result copies and torrent uploads).
    pub bytes_seeded: u64,
    /// Circuits relayed for others.
    pub relay_circuits: u64,
}

impl Lifetime {
    /// The figures saved in `store` (none when they cannot be read: counting starts again
    /// rather than stopping the node).
    pub(super) fn load(store: &Store, started_ms: u64) -> Self {
        let base = store.lifetime().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the lifetime figures; counting from zero");
            LifetimeView::default()
        });
        Self { base, started_ms, ..Default::default() }
    }

    /// Counts a finished item of this kind of work.
    pub(super) fn finished(&mut self, work: &WorkItem, done: &WorkResult) {
        *self.items.entry(work.kind().name().to_owned()).or_default() += 1;
        // A spot-check archives the pages it fetches again as a chunk does.
        if matches!(work, WorkItem::CrawlChunk { .. } | WorkItem::Verify { .. }) {
            self.urls += u64::from(done.ok);
            self.bytes_archived += done.size;
        }
    }

    /// The figures now: saved ones plus this run's.
    pub(super) fn view(&self, now_ms: u64, run: RunCounts) -> LifetimeView {
        let b = &self.base;
        let mut items = b.items.clone();
        for (kind, n) in &self.items {
            *items.entry(kind.clone()).or_default() += n;
        }
        LifetimeView {
            items,
            urls_archived: b.urls_archived + self.urls,
            bytes_archived: b.bytes_archived + self.bytes_archived,
            bytes_seeded: b.bytes_seeded + run.bytes_seeded,
            relay_circuits: b.relay_circuits + run.relay_circuits,
            uptime_ms: b.uptime_ms + now_ms.saturating_sub(self.started_ms),
            since_ms: if b.since_ms == 0 { self.started_ms } else { b.since_ms },
            saved_ms: self.saved_ms,
        }
    }

    /// Writes the figures now to the store.
    pub(super) fn save(
        &mut self,
        store: &Store,
        now_ms: u64,
        run: RunCounts,
    ) -> Result<(), crate::store::StoreError> {
        let mut view = self.view(now_ms, run);
        view.saved_ms = now_ms;
        store.save_lifetime(&view)?;
        self.saved_ms = now_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::{Digest, ItemId};

    #[test]
    fn a_run_adds_to_what_was_saved_and_saving_twice_does_not_double() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let chunk = WorkItem::CrawlChunk { urls: vec!["https://example.org/".into()] };
        let done = WorkResult {
            item: ItemId([1; 32]),
            epoch: 1,
            result: Digest([2; 32]),
            size: 1_000,
            ok: 3,
            failed: 1,
            parts: Vec::new(),
        };
        let run = RunCounts { bytes_seeded: 50, relay_circuits: 1 };
        let mut first = Lifetime::load(&store, 1_000);
        first.finished(&chunk, &done);
        first.save(&store, 5_000, run).unwrap();
        first.save(&store, 6_000, run).unwrap();
        let mut second = Lifetime::load(&store, 100_000);
        second.finished(&chunk, &done);
        let v = second.view(102_000, run);
        assert_eq!(v.items["crawl"], 2);
        assert_eq!((v.urls_archived, v.bytes_archived), (6, 2_000));
        assert_eq!((v.bytes_seeded, v.relay_circuits), (100, 2));
        assert_eq!(v.uptime_ms, 5_000 + 2_000);
        assert_eq!(v.since_ms, 1_000, "the first start is kept");
        assert_eq!(v.saved_ms, 0, "not saved yet in this run");
    }

    #[test]
    fn a_spot_check_archives_as_a_chunk_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let check = WorkItem::Verify {
            source: ItemId([3; 32]),
            result: Digest([4; 32]),
            round: 0,
            exclude: vec![starling_protocol::NodeId([5; 32])],
        };
        let done = WorkResult {
            item: ItemId([1; 32]),
            epoch: 1,
            result: Digest([2; 32]),
            size: 500,
            ok: 2,
            failed: 0,
            parts: Vec::new(),
        };
        let mut l = Lifetime::load(&store, 0);
        l.finished(&check, &done);
        let v = l.view(1, RunCounts::default());
        assert_eq!((v.items["crawl"], v.urls_archived, v.bytes_archived), (1, 2, 500));
    }
}
