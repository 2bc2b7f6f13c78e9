//! Work runners: where the engine's `StartWork` and `CancelWork` outputs go, one runner per
//! kind of work behind the small [`Runner`] trait.
//!
//! A runner never decides whether work should happen; it does what it is told and reports the
//! outcome on a bounded channel as a [`WorkReport`], which the actor turns into
//! `Input::WorkDone` or `Input::WorkFailed`. The node only takes on kinds of work it has a
//! runner for (its advertised roles are narrowed to them), so a node without a crawl runner
//! never claims a crawl chunk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use starling_protocol::{
    ItemId, ProjectId, ProjectManifest, Roles, WorkItem, WorkKind, WorkResult,
};
pub use starling_tui::api::RunnerStats;
use tokio::sync::mpsc;

/// Reports queued from runners to the actor.
pub const WORK_REPORT_CAP: usize = 256;

/// Work handed to a runner.
#[derive(Debug, Clone)]
pub struct Job {
    /// The item.
    pub item: ItemId,
    /// The epoch (fencing token) the result must carry.
    pub epoch: u32,
    /// The item's project.
    pub project: ProjectId,
    /// What to do.
    pub work: WorkItem,
    /// For a spot-check (`WorkItem::Verify`): the URLs of the crawl chunk it checks, which the
    /// actor looks up in the engine when the job starts (the item names the chunk only).
    /// `None` for other work, or when the chunk is not known here.
    pub source_urls: Option<Vec<String>>,
}

impl Job {
    /// A job for `work`, with no source URLs.
    pub fn new(item: ItemId, epoch: u32, project: ProjectId, work: WorkItem) -> Self {
        Self { item, epoch, project, work, source_urls: None }
    }

    /// The URLs a crawl job fetches: a chunk's own, or for a spot-check its source chunk's.
    pub fn crawl_urls(&self) -> Option<&[String]> {
        match &self.work {
            WorkItem::CrawlChunk { urls } => Some(urls),
            WorkItem::Verify { .. } => self.source_urls.as_deref(),
            _ => None,
        }
    }
}

/// The outcome of a job.
#[derive(Debug, Clone)]
pub enum WorkReport {
    /// Finished with a result (what the engine signs into a receipt).
    Done(WorkResult),
    /// Gave up.
    Failed {
        /// The item.
        item: ItemId,
        /// The epoch it ran under.
        epoch: u32,
        /// Why.
        reason: String,
        /// Whether another node may do better.
        retryable: bool,
    },
}

/// Counts of what the runners did, shared with the status view.
#[derive(Debug, Default)]
pub struct RunnerCounters {
    /// Jobs started.
    pub started: AtomicU64,
    /// Jobs that reported a result.
    pub completed: AtomicU64,
    /// Jobs cancelled before they reported.
    pub cancelled: AtomicU64,
}

impl RunnerCounters {
    /// Reads the counters.
    pub fn snapshot(&self) -> RunnerStats {
        RunnerStats {
            started: self.started.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
        }
    }
}

/// The tasks one runner has going, by (item, epoch): finished ones are forgotten as new
/// ones start, and cancelling one aborts it.
#[derive(Debug, Default)]
pub struct RunningJobs(BTreeMap<(ItemId, u32), tokio::task::AbortHandle>);

impl RunningJobs {
    /// Forgets finished tasks; answers how many are still running.
    pub fn prune(&mut self) -> usize {
        self.0.retain(|_, h| !h.is_finished());
        self.0.len()
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.0.values().filter(|h| !h.is_finished()).count()
    }

    /// Records the task of a job.
    pub fn insert(&mut self, item: ItemId, epoch: u32, task: tokio::task::AbortHandle) {
        self.0.insert((item, epoch), task);
    }

    /// Aborts a job's task if it is still running, counting the cancellation.
    pub fn cancel(&mut self, item: ItemId, epoch: u32, counters: &RunnerCounters) {
        if let Some(h) = self.0.remove(&(item, epoch))
            && !h.is_finished()
        {
            h.abort();
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs one kind of work.
pub trait Runner: Send + std::fmt::Debug {
    /// The kind it runs.
    fn kind(&self) -> WorkKind;
    /// Starts a job; the outcome goes to the report channel the runner was built with.
    fn start(&mut self, job: Job);
    /// Stops a job if it is still running; no report follows.
    fn cancel(&mut self, item: ItemId, epoch: u32);
}

/// Manifests of the projects the node has started work for, read by the crawl runner.
pub type SharedManifests = Arc<std::sync::RwLock<BTreeMap<ProjectId, ProjectManifest>>>;

/// The runners of one node, by kind.
#[derive(Debug, Default)]
pub struct Runners {
    by_kind: BTreeMap<WorkKind, Box<dyn Runner>>,
    counters: Arc<RunnerCounters>,
    manifests: SharedManifests,
    crawler: Option<Arc<crate::crawl::Crawler>>,
    /// How long jobs take, for `/metrics`.
    timer: crate::metrics::WorkTimer,
}

impl Runners {
    /// The runners available in this build, reporting on `reports`: the crawler when
    /// `crawl` is given (and, in debug builds, the test runner when its variable is set).
    pub fn available(
        reports: mpsc::Sender<WorkReport>,
        crawl: Option<crate::crawl::CrawlerConfig>,
    ) -> Result<Self, crate::crawl::CrawlError> {
        let counters = Arc::new(RunnerCounters::default());
        let manifests = SharedManifests::default();
        let mut by_kind: BTreeMap<WorkKind, Box<dyn Runner>> = BTreeMap::new();
        let mut crawler = None;
        if let Some(cfg) = crawl {
            let c = Arc::new(crate::crawl::Crawler::new(cfg)?);
            let shared = manifests.clone();
            let lookup: crate::crawl::runner::ManifestLookup =
                Arc::new(move |p| shared.read().ok().and_then(|m| m.get(p).cloned()));
            let runner = crate::crawl::runner::CrawlRunner::new(
                c.clone(),
                lookup,
                reports.clone(),
                counters.clone(),
            );
            by_kind.insert(WorkKind::Crawl, Box::new(runner));
            crawler = Some(c);
        }
        #[cfg(any(debug_assertions, feature = "test-runner"))]
        if let Some(delay) = crate::test_runner::delay_from_env() {
            for kind in [WorkKind::Crawl, WorkKind::Seed] {
                let r = crate::test_runner::TestRunner::new(
                    kind,
                    delay,
                    reports.clone(),
                    counters.clone(),
                );
                by_kind.insert(kind, Box::new(r));
            }
        }
        let _ = reports;
        Ok(Self { by_kind, counters, manifests, crawler, timer: Default::default() })
    }

    /// Records the manifest a job's runner will need; call before [`Runners::start`].
    pub fn note_manifest(&self, project: ProjectId, manifest: &ProjectManifest) {
        if let Ok(mut m) = self.manifests.write()
            && m.get(&project) != Some(manifest)
        {
            m.insert(project, manifest.clone());
        }
    }

    /// Whether stored results are over the operator's disk cap (no crawl work is claimed then).
    pub fn over_disk_cap(&self) -> bool {
        self.crawler.as_ref().is_some_and(|c| c.over_disk_cap())
    }

    /// Results stored on this node: how many, and their bytes.
    pub fn stored_blobs(&self) -> (u64, u64) {
        self.crawler
            .as_ref()
            .and_then(|c| crate::crawl::warc::stored_files(&c.config().results_dir).ok())
            .unwrap_or_default()
    }

    /// Whether a runner for `kind` is registered.
    pub fn has(&self, kind: WorkKind) -> bool {
        self.by_kind.contains_key(&kind)
    }

    /// The crawler, when this node runs one.
    pub fn crawler(&self) -> Option<&Arc<crate::crawl::Crawler>> {
        self.crawler.as_ref()
    }

    /// Adds (or replaces) the runner for its kind.
    pub fn register(&mut self, runner: Box<dyn Runner>) {
        self.by_kind.insert(runner.kind(), runner);
    }

    /// The roles this node can fill: `wanted` narrowed to the kinds it has runners for.
    pub fn roles(&self, wanted: Roles) -> Roles {
        let mut have = self.by_kind.keys().fold(0u8, |acc, k| acc | Roles::for_kind(*k).0);
        // The seed runner routes torrents too, when the node has a BitTorrent session; the
        // caller drops the torrent role when it has none.
        if self.has(WorkKind::Seed) {
            have |= Roles::TORRENT.0;
        }
        Roles(wanted.0 & have)
    }

    /// Shared counters.
    pub fn counters(&self) -> Arc<RunnerCounters> {
        self.counters.clone()
    }

    /// Starts a job on the runner of its kind.
    pub fn start(&mut self, job: Job) {
        let kind = job.work.kind();
        match self.by_kind.get_mut(&kind) {
            Some(r) => {
                self.timer.start(job.item, job.epoch, kind);
                r.start(job);
            }
            None => tracing::warn!(kind = kind.name(), "no runner for this kind of work"),
        }
    }

    /// Cancels a job on whichever runner has it.
    pub fn cancel(&mut self, item: ItemId, epoch: u32) {
        for r in self.by_kind.values_mut() {
            r.cancel(item, epoch);
        }
        self.timer.end(item, epoch, "cancelled");
    }

    /// Notes a job's outcome for the duration histogram.
    pub fn reported(&mut self, report: &WorkReport) {
        match report {
            WorkReport::Done(d) => self.timer.end(d.item, d.epoch, "done"),
            WorkReport::Failed { item, epoch, .. } => self.timer.end(*item, *epoch, "failed"),
        }
    }

    /// Job durations so far.
    pub fn timer(&self) -> &crate::metrics::WorkTimer {
        &self.timer
    }
}
