//! [`CrawlRunner`]: the node's [`Runner`] for crawl chunks and spot-checks, a thin adapter
//! over [`Crawler::crawl_chunk`].
//!
//! A spot-check (`WorkItem::Verify`) is a crawl of the checked chunk's URLs (the actor puts
//! them in the [`Job`]) down the same path: politeness, robots.txt, scope, the SSRF guard and
//! host lanes alike. Its WARC file is stored like a chunk's, since the mesh may keep it in
//! place of the checked result.
//!
//! Each job runs as its own task, so a chunk waiting on a parked host never holds up another
//! chunk or project. A chunk whose URLs all ended archived, refused or disallowed is reported
//! done with each URL's class in the receipt; one with transient URLs left is reported as a
//! retryable failure, "N of M urls transient: first reason". Cancelling a job aborts its task; the chunk's writer then deletes its
//! temp file, so nothing half-written is left to be taken for a result.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use starling_protocol::{ItemId, ProjectId, ProjectManifest, WorkItem, WorkKind, WorkResult};
use tokio::sync::mpsc;

use super::{ChunkRequest, CrawlError, Crawler};
use crate::runner::{Job, Runner, RunnerCounters, RunningJobs, WorkReport};

/// Most crawl jobs running at once in one runner (the engine's capacity is far lower).
pub const CRAWL_JOBS_MAX: usize = 256;

/// Looks up the newest manifest the node holds for a project.
pub type ManifestLookup = Arc<dyn Fn(&ProjectId) -> Option<ProjectManifest> + Send + Sync>;

/// Runs crawl chunks with a shared [`Crawler`].
pub struct CrawlRunner {
    crawler: Arc<Crawler>,
    manifests: ManifestLookup,
    reports: mpsc::Sender<WorkReport>,
    counters: Arc<RunnerCounters>,
    running: RunningJobs,
}

impl std::fmt::Debug for CrawlRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrawlRunner")
            .field("running", &self.running.running())
            .finish_non_exhaustive()
    }
}

impl CrawlRunner {
    /// A runner reporting on `reports`, finding manifests with `manifests`.
    pub fn new(
        crawler: Arc<Crawler>,
        manifests: ManifestLookup,
        reports: mpsc::Sender<WorkReport>,
        counters: Arc<RunnerCounters>,
    ) -> Self {
        Self { crawler, manifests, reports, counters, running: RunningJobs::default() }
    }

    /// The crawler, e.g. to ask [`Crawler::over_disk_cap`] before claiming.
    pub fn crawler(&self) -> &Arc<Crawler> {
        &self.crawler
    }
}

fn failed(job: &Job, reason: String, retryable: bool) -> WorkReport {
    WorkReport::Failed { item: job.item, epoch: job.epoch, reason, retryable }
}

async fn run(crawler: Arc<Crawler>, manifests: ManifestLookup, job: Job) -> WorkReport {
    let checks = match &job.work {
        WorkItem::CrawlChunk { .. } => None,
        WorkItem::Verify { source, .. } => Some(*source),
        _ => return failed(&job, "not crawl work".into(), false),
    };
    let Some(urls) = job.crawl_urls() else {
        // Another node that knows the chunk may take the check.
        return failed(&job, "the chunk this check is about is not known here".into(), true);
    };
    let Some(manifest) = manifests(&job.project) else {
        return failed(&job, "no manifest for the project".into(), true);
    };
    let req = ChunkRequest {
        item: job.item,
        epoch: job.epoch,
        project: job.project,
        manifest: &manifest,
        urls,
        checks,
    };
    let what = if checks.is_some() { "spot-check" } else { "crawl chunk" };
    match crawler.crawl_chunk(req).await {
        Ok(result) => {
            let (ok, failed) = result.counts();
            tracing::info!(item = %job.item, ok, failed, size = result.size, "{what} done");
            WorkReport::Done(WorkResult {
                item: job.item,
                epoch: job.epoch,
                result: result.digest,
                size: result.size,
                ok,
                failed,
                parts: result.parts(),
            })
        }
        Err(e @ CrawlError::TooManyUrls(..)) => failed(&job, e.to_string(), false),
        Err(e @ CrawlError::Transient { .. }) => {
            // Not a result: another attempt (maybe another node, on another network) may
            // archive what failed here. The half-written file is already gone.
            tracing::info!(item = %job.item, reason = %e, "{what} handed back");
            failed(&job, e.to_string(), true)
        }
        Err(e) => failed(&job, e.to_string(), e.retryable()),
    }
}

impl Runner for CrawlRunner {
    fn kind(&self) -> WorkKind {
        WorkKind::Crawl
    }

    fn start(&mut self, job: Job) {
        let running = self.running.prune();
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let (reports, counters) = (self.reports.clone(), self.counters.clone());
        if running >= CRAWL_JOBS_MAX {
            let report = failed(&job, "too many crawl jobs".into(), true);
            tokio::spawn(async move {
                let _ = reports.send(report).await;
            });
            return;
        }
        let (job_item, job_epoch) = (job.item, job.epoch);
        let (crawler, manifests) = (self.crawler.clone(), self.manifests.clone());
        let task = tokio::spawn(async move {
            let report = run(crawler, manifests, job).await;
            if matches!(report, WorkReport::Done { .. }) {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = reports.send(report).await;
        });
        self.running.insert(job_item, job_epoch, task.abort_handle());
    }

    fn cancel(&mut self, item: ItemId, epoch: u32) {
        self.running.cancel(item, epoch, &self.counters);
    }
}
