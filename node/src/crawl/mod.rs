//! The crawler: fetches the URLs of a crawl chunk politely and archives them as one WARC file.
//!
//! A node has one [`Crawler`], shared by every chunk and project it works on, so per-host
//! politeness ([`hosts`]) holds across all of them. [`Crawler::crawl_chunk`] fetches a chunk's
//! URLs (hosts in parallel, each host at its project's rate), follows redirects itself so every
//! hop is checked against the scope, the SSRF [`guard`] and the host's limits, obeys
//! robots.txt per the project's policy ([`robots`]) and writes the [`warc`] file. The result
//! is addressed by the blake3 digest of the finished file. [`runner::CrawlRunner`] plugs this
//! into the node's work runners.
//!
//! Every URL ends in one [`Outcome`]: archived, refused by policy, disallowed by a robots.txt
//! that was read, or transient. Transient URLs are tried again inside the chunk
//! ([`CrawlerConfig::url_rounds_max`]); a chunk that still has one is not a result
//! ([`CrawlError::Transient`]): it goes back to the mesh as a retryable failure and its
//! half-written file is removed. [`Crawler::network_down`] tells the node when its own network,
//! not the sites, is the trouble.
//!
//! Operator caps live in [`CrawlerConfig`]: global fetch concurrency, a bandwidth cap and a
//! disk cap that [`Crawler::over_disk_cap`] reports so the node can stop claiming crawl work.

pub mod fetch;
pub mod guard;
pub mod health;
pub mod hosts;
pub mod lanes;
pub mod robots;
pub mod runner;
pub mod stats;
pub mod surt;
pub mod warc;

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use starling_protocol::message::PartClass;
use starling_protocol::{Digest, ItemId, NodeId, ProjectId, ProjectManifest};
use tokio::sync::{Semaphore, mpsc, oneshot};

use self::hosts::{BackoffPolicy, HostTable};
use self::robots::RobotsVerdict;
use self::warc::{Capture, Finished, WarcWriter};

/// Captures queued for the WARC writer of one chunk.
pub const WRITER_QUEUE_CAP: usize = 16;
/// Most robots.txt files cached.
pub const ROBOTS_CACHE_MAX: usize = 4_096;
/// How long a fetched robots.txt is trusted.
pub const ROBOTS_TTL: Duration = Duration::from_secs(3_600);
/// How long an unreachable robots.txt defers a host's URLs before it is asked again (default).
pub const ROBOTS_FAIL_TTL: Duration = Duration::from_secs(10);
/// Most rounds of retrying a chunk's transient URLs an operator may set.
pub const URL_ROUNDS_MAX: u32 = 16;
/// Largest global fetch concurrency an operator may set.
pub const FETCHES_MAX: usize = 1_024;

/// What the test switch [`alters_payloads`] appends to every archived response body.
pub const ALTERED_MARKER: &[u8] = b"\n<!-- starling test: payload altered by this node -->\n";

/// Debug builds only, for the spot-check tests: `STARLING_TEST_ALTER_PAYLOADS=1` makes this
/// node's crawler append [`ALTERED_MARKER`] to every response body before it is archived and
/// digested, so its WARC files and receipts are false, as a lying volunteer's would be.
/// Ignored in release builds.
pub fn alters_payloads() -> bool {
    #[cfg(debug_assertions)]
    {
        let on = std::env::var_os("STARLING_TEST_ALTER_PAYLOADS").is_some_and(|v| v == "1");
        if on {
            tracing::warn!("TEST SWITCH ACTIVE: every archived response body is altered");
        }
        on
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// Operator settings for the crawler.
#[derive(Debug, Clone)]
pub struct CrawlerConfig {
    /// Where finished WARC files go (and their temp files while written).
    pub results_dir: PathBuf,
    /// This node, named in the user agent and the warcinfo record.
    pub node: NodeId,
    /// Lifts the SSRF guard: for tests and the local demo only.
    pub allow_private_targets: bool,
    /// Non-public addresses allowed one by one while the guard stays on.
    pub allow_private_addrs: Vec<std::net::IpAddr>,
    /// Fetches in flight at once across all chunks and projects.
    pub fetches_max: usize,
    /// Download cap in bytes per second (`None` = unlimited).
    pub bandwidth_bytes_per_s: Option<NonZeroU32>,
    /// Cap on stored results in bytes (`None` = unlimited).
    pub disk_bytes_max: Option<u64>,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time from sending a request to its response head.
    pub response_timeout: Duration,
    /// Longest silence while reading a body.
    pub read_timeout: Duration,
    /// Attempts per URL (and redirect hop) on 429, 5xx and timeouts.
    pub attempts_max: u32,
    /// Redirects followed per URL.
    pub redirects_max: u32,
    /// Rounds of retrying a chunk's transient URLs after the first pass, with backoff between
    /// rounds (at most [`URL_ROUNDS_MAX`]).
    pub url_rounds_max: u32,
    /// How long an unreachable robots.txt is remembered before it is asked again.
    pub robots_fail_ttl: Duration,
    /// Backoff and parking.
    pub backoff: BackoffPolicy,
    /// A note from the operator for the `operator` field of each WARC file's warcinfo record
    /// (who runs the crawl, how to reach them). Opt-in: `None` writes no such field.
    pub operator_note: Option<String>,
}

impl CrawlerConfig {
    /// Defaults for a volunteer node writing to `results_dir`.
    pub fn new(results_dir: PathBuf, node: NodeId) -> Self {
        Self {
            results_dir,
            node,
            allow_private_targets: false,
            allow_private_addrs: Vec::new(),
            fetches_max: 16,
            bandwidth_bytes_per_s: None,
            disk_bytes_max: None,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            attempts_max: 4,
            redirects_max: 10,
            url_rounds_max: 3,
            robots_fail_ttl: ROBOTS_FAIL_TTL,
            backoff: BackoffPolicy {
                base: Duration::from_secs(1),
                max: Duration::from_secs(120),
                park_after: 5,
                park: Duration::from_secs(600),
                retry_after_max: Duration::from_secs(600),
            },
            operator_note: None,
        }
    }
}

/// What went wrong with a whole chunk (a single URL's trouble is an [`Outcome`] instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrawlError {
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {0}")]
    Client(#[source] reqwest::Error),
    /// Reading or writing the results directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The chunk has more URLs than the project allows.
    #[error("chunk has {0} urls, over the project's cap of {1}")]
    TooManyUrls(usize, u32),
    /// Stored results are over the operator's disk cap.
    #[error("results are over the disk cap; free space or raise the cap")]
    DiskCap,
    /// The WARC writer stopped before finishing.
    #[error("warc writer stopped")]
    WriterGone,
    /// Some URLs were still transient after every retry: the chunk is not a result.
    #[error("{transient} of {urls} urls transient: {first}")]
    Transient {
        /// URLs still transient.
        transient: usize,
        /// URLs in the chunk.
        urls: usize,
        /// The first transient URL's reason.
        first: String,
    },
}

impl CrawlError {
    fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }

    /// Whether another attempt (here or on another node) may succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::TooManyUrls(..))
    }
}

/// What happened to one URL of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Archived; `status` is the final answer's status (404 included), after `redirects` hops.
    Ok {
        /// HTTP status of the last response.
        status: u16,
        /// Redirects followed.
        redirects: u32,
        /// The blake3 digest of the last response's body as archived: what a spot-check
        /// compares (see the protocol's `engine/verify.rs`).
        payload: Option<Digest>,
    },
    /// Refused by policy: scope, the SSRF guard, scheme, size caps, too many redirects, a bad
    /// URL. Final: another node would refuse it too.
    Refused {
        /// What the policy said.
        reason: String,
    },
    /// Disallowed by a robots.txt that was actually read. Final.
    Disallowed {
        /// What the robots.txt said.
        reason: String,
    },
    /// Not archived for a reason that may pass: timeouts, 5xx, 429, connection or resolve
    /// errors, robots.txt unreachable. Never final: retried, then the chunk is given back.
    Transient {
        /// What went wrong.
        reason: String,
    },
}

impl Outcome {
    /// Its class, as the receipt and the counters file it.
    pub fn class(&self) -> PartClass {
        match self {
            Outcome::Ok { .. } => PartClass::Ok,
            Outcome::Refused { .. } => PartClass::Refused,
            Outcome::Disallowed { .. } => PartClass::Disallowed,
            Outcome::Transient { .. } => PartClass::Transient,
        }
    }

    /// Why it was not archived; `None` when it was.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Refused { reason }
            | Outcome::Disallowed { reason }
            | Outcome::Transient { reason } => Some(reason),
        }
    }
}

/// One URL and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlOutcome {
    /// The URL as given in the chunk.
    pub url: String,
    /// What happened.
    pub outcome: Outcome,
}

/// The result of a chunk: the WARC file and what happened to each URL.
#[derive(Debug, Clone)]
pub struct ChunkResult {
    /// blake3 of the WARC file, which is named by it.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Where it is.
    pub path: PathBuf,
    /// One per URL, in chunk order.
    pub outcomes: Vec<UrlOutcome>,
}

impl ChunkResult {
    /// Each URL's outcome for the receipt, in the chunk's order.
    pub fn parts(&self) -> Vec<starling_protocol::message::PartOutcome> {
        use starling_protocol::message::PartOutcome;
        self.outcomes
            .iter()
            .map(|o| match &o.outcome {
                Outcome::Ok { status, payload: Some(p), .. } => PartOutcome::archived(*status, *p),
                Outcome::Ok { status, payload: None, .. } => PartOutcome::ok(*status),
                other => {
                    PartOutcome::not_archived(0, other.class(), other.reason().unwrap_or_default())
                }
            })
            .collect()
    }

    /// Counts of (archived, failed) URLs.
    pub fn counts(&self) -> (u32, u32) {
        let ok = self.outcomes.iter().filter(|o| matches!(o.outcome, Outcome::Ok { .. })).count();
        (ok as u32, (self.outcomes.len() - ok) as u32)
    }
}

/// One chunk to crawl.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRequest<'a> {
    /// The item.
    pub item: ItemId,
    /// Its epoch (recorded in the warcinfo record).
    pub epoch: u32,
    /// Its project.
    pub project: ProjectId,
    /// The project's manifest (rate policy, scope, user agent, robots, caps).
    pub manifest: &'a ProjectManifest,
    /// The URLs.
    pub urls: &'a [String],
    /// For a spot-check (`WorkItem::Verify`): the crawl chunk whose URLs these are, named in
    /// the warcinfo record.
    pub checks: Option<ItemId>,
}

type RobotsCell = Arc<tokio::sync::OnceCell<(Arc<RobotsVerdict>, Instant)>>;

/// The node's crawler: one per node, shared by all crawl work.
#[derive(Debug)]
pub struct Crawler {
    config: CrawlerConfig,
    client: reqwest::Client,
    guard: guard::GuardPolicy,
    hosts: HostTable,
    fetches: Semaphore,
    /// The bandwidth cap; the operator may change it while the node runs.
    bandwidth: crate::budget::ByteRate,
    /// The disk cap in bytes; 0 for none. The operator may change it while the node runs.
    disk_bytes_max: std::sync::atomic::AtomicU64,
    stats: stats::CrawlStats,
    net: health::NetHealth,
    robots: Mutex<HashMap<(String, String), RobotsCell>>,
    /// Which hosts this node holds a lane of, under mesh-wide rates (see `lanes.rs`).
    lanes: lanes::LaneGate,
    /// The test switch [`alters_payloads`], read once at start.
    alter_payloads: bool,
}

impl Crawler {
    /// Builds the crawler and removes temp files an earlier run left in the results dir.
    pub fn new(config: CrawlerConfig) -> Result<Self, CrawlError> {
        std::fs::create_dir_all(&config.results_dir)
            .map_err(CrawlError::io("create results dir"))?;
        let removed =
            warc::clean_temp(&config.results_dir).map_err(CrawlError::io("clean temp files"))?;
        if removed > 0 {
            tracing::info!(removed, "removed half-written warc files from an earlier run");
        }
        let guard = guard::GuardPolicy {
            allow_private: config.allow_private_targets,
            exceptions: config.allow_private_addrs.clone().into(),
        };
        let client = reqwest::Client::builder()
            .dns_resolver(guard::GuardedResolver { policy: guard.clone() })
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(CrawlError::Client)?;
        let disk_bytes_max = config.disk_bytes_max.unwrap_or(0);
        let bandwidth = crate::budget::ByteRate::new(config.bandwidth_bytes_per_s);
        let fetches = Semaphore::new(config.fetches_max.clamp(1, FETCHES_MAX));
        Ok(Self {
            config,
            client,
            guard,
            hosts: HostTable::default(),
            fetches,
            bandwidth,
            disk_bytes_max: disk_bytes_max.into(),
            stats: stats::CrawlStats::default(),
            net: health::NetHealth::default(),
            robots: Mutex::new(HashMap::new()),
            lanes: lanes::LaneGate::default(),
            alter_payloads: alters_payloads(),
        })
    }

    /// The host lanes gate, shared with the actor.
    pub fn lanes(&self) -> &lanes::LaneGate {
        &self.lanes
    }

    /// The settings it runs with.
    pub fn config(&self) -> &CrawlerConfig {
        &self.config
    }

    /// Bytes of finished WARC files in the results dir.
    pub fn stored_bytes(&self) -> std::io::Result<u64> {
        warc::stored_bytes(&self.config.results_dir)
    }

    /// The crawler's counters, with the rate limit of the hosts in use.
    pub fn fetch_stats(&self) -> crate::views::FetchStats {
        let mut v = self.stats.view();
        v.rate_limit_per_s = self.hosts.active_rate_per_s();
        v
    }

    /// URLs by the class of their final outcome, over every chunk this crawler ran.
    pub fn url_counts(&self) -> stats::UrlCounts {
        self.stats.urls()
    }

    /// Whether this node's network looks down: see [`health::NetHealth::down`] for the rule
    /// (8 connect or resolve failures in a row over at least 2 hosts, no answer since).
    /// The node should stop claiming crawl work while it holds; it clears by itself at the
    /// next answer from any host.
    pub fn network_down(&self) -> bool {
        self.net.down()
    }

    /// While [`Crawler::network_down`]: asks the hosts that stopped answering, once each,
    /// whether they answer now (a HEAD of their root, at the connect timeout). Any answer
    /// clears the verdict. Returns whether the network answered.
    pub async fn probe_network(&self) -> bool {
        if !self.net.down() {
            return true;
        }
        for origin in self.net.probe_origins() {
            let sent = self.client.head(&origin).timeout(self.config.connect_timeout).send().await;
            if sent.is_ok() {
                self.net.answered();
                return true;
            }
        }
        false
    }

    /// The network-loss counters and the current failing streak.
    pub fn network_health(&self) -> health::NetHealthView {
        self.net.view()
    }

    /// The hosts the crawler knows, busiest first.
    pub fn host_views(&self, now_ms: u64, limit: usize) -> Vec<crate::views::HostInfo> {
        let mut views = self.hosts.views(now_ms, self.config.backoff.park_after, limit);
        // Each host's lane, where its rate is the mesh's: held beats waiting beats ungated,
        // over the projects that crawl it; the latest cooldown of any.
        let mut lanes: HashMap<String, (u8, &'static str, Option<u64>)> = HashMap::new();
        for l in self.lanes.views(lanes::GATE_HOSTS_MAX) {
            let (rank, name) = match l.state.as_str() {
                "held" => (3, "held"),
                "waiting" => (2, "waiting"),
                _ => (1, "ungated"),
            };
            let e = lanes.entry(l.host).or_insert((0, name, None));
            if rank > e.0 {
                (e.0, e.1) = (rank, name);
            }
            e.2 = e.2.max(l.cooldown_until_ms);
        }
        for v in &mut views {
            if let Some((_, lane, cooldown)) = lanes.remove(&v.host) {
                v.lane = Some(lane.into());
                v.cooldown_until_ms = cooldown;
            }
        }
        // Hosts waiting for a lane before their first request here.
        for (host, (_, lane, cooldown)) in lanes {
            if views.len() >= limit {
                break;
            }
            views.push(crate::views::HostInfo {
                host,
                state: "ok".into(),
                until_ms: None,
                inflight: 0,
                rate_per_s: 0.0,
                refusals: 0,
                sent_per_s: 0.0,
                lane: Some(lane.into()),
                cooldown_until_ms: cooldown,
            });
        }
        views
    }

    /// The bandwidth cap now, bytes per second.
    pub fn bandwidth_bytes_per_s(&self) -> Option<u64> {
        self.bandwidth.get()
    }

    /// Sets (`Some`) or removes (`None`) the bandwidth cap.
    pub fn set_bandwidth(&self, bytes_per_s: Option<NonZeroU32>) {
        self.bandwidth.set(bytes_per_s);
    }

    /// The disk cap now.
    pub fn disk_bytes_max(&self) -> Option<u64> {
        Some(self.disk_bytes_max.load(std::sync::atomic::Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// Sets (`Some`) or removes (`None`) the disk cap.
    pub fn set_disk_bytes_max(&self, max: Option<u64>) {
        self.disk_bytes_max.store(max.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether stored results are at or over the disk cap: the node should stop claiming crawl
    /// work until there is room. An unreadable results dir counts as full.
    pub fn over_disk_cap(&self) -> bool {
        // Without a cap there is nothing to measure: skip the directory scan.
        let Some(max) = self.disk_bytes_max() else { return false };
        // A results directory that cannot be read counts as full: claim nothing we can't store.
        self.stored_bytes().map_or(true, |used| used >= max)
    }

    /// Fetches a chunk's URLs and archives them as one WARC file.
    pub async fn crawl_chunk(&self, req: ChunkRequest<'_>) -> Result<ChunkResult, CrawlError> {
        let cap = req.manifest.caps.chunk_urls_max;
        if req.urls.len() > cap as usize || req.urls.len() > starling_protocol::item::CHUNK_URLS_MAX
        {
            return Err(CrawlError::TooManyUrls(req.urls.len(), cap));
        }
        if self.over_disk_cap() {
            return Err(CrawlError::DiskCap);
        }
        let job = fetch::ChunkJob::new(self, req.manifest);
        let info = self.warcinfo(&req, &job);
        let stem = format!("{}-{}", req.item.to_hex(), req.epoch);
        let writer = WarcWriter::create(
            &self.config.results_dir,
            &stem,
            &info,
            req.manifest.caps.result_bytes_max,
        )
        .map_err(CrawlError::io("create warc file"))?;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_CAP);
        let log_target = format!("urn:x-starling:crawl-log:{stem}");
        let writing = tokio::task::spawn_blocking(move || write_loop(writer, rx, &log_target));

        let outcomes = self.fetch_rounds(&job, req.urls, &tx).await;
        let transient: Vec<&UrlOutcome> =
            outcomes.iter().filter(|o| matches!(o.outcome, Outcome::Transient { .. })).collect();
        if let Some(first) = transient.first() {
            let err = CrawlError::Transient {
                transient: transient.len(),
                urls: outcomes.len(),
                first: first.outcome.reason().unwrap_or_default().to_owned(),
            };
            self.count_urls(&outcomes);
            // Without `Finish` the writer drops its temp file; wait so none is left behind.
            drop(tx);
            let _ = writing.await;
            return Err(err);
        }
        let (reply, finished) = oneshot::channel();
        tx.send(WriterMsg::Finish { outcomes, reply }).await.map_err(|_| CrawlError::WriterGone)?;
        drop(tx);
        let (done, outcomes) = finished
            .await
            .map_err(|_| CrawlError::WriterGone)?
            .map_err(CrawlError::io("write warc file"))?;
        let _ = writing.await;
        self.count_urls(&outcomes);
        Ok(ChunkResult { digest: done.digest, size: done.size, path: done.path, outcomes })
    }

    fn count_urls(&self, outcomes: &[UrlOutcome]) {
        for o in outcomes {
            self.stats.url_finished(o.outcome.class());
        }
    }

    /// Fetches every URL, then tries the transient ones again for up to
    /// [`CrawlerConfig::url_rounds_max`] rounds, backing off between rounds; a round after an
    /// unreachable robots.txt waits at least until that answer is forgotten.
    async fn fetch_rounds(
        &self,
        job: &fetch::ChunkJob<'_>,
        urls: &[String],
        tx: &mpsc::Sender<WriterMsg>,
    ) -> Vec<UrlOutcome> {
        let all: Vec<usize> = (0..urls.len()).collect();
        let mut outcomes: Vec<Outcome> =
            vec![Outcome::Transient { reason: "not attempted".into() }; urls.len()];
        for (i, o) in self.fetch_some(job, urls, &all, tx).await {
            outcomes[i] = o;
        }
        for round in 1..=self.config.url_rounds_max.min(URL_ROUNDS_MAX) {
            let pending: Vec<usize> = (0..urls.len())
                .filter(|i| matches!(outcomes[*i], Outcome::Transient { .. }))
                .collect();
            if pending.is_empty() {
                break;
            }
            let robots_waits = pending
                .iter()
                .any(|i| outcomes[*i].reason().is_some_and(|r| r.starts_with(robots::UNREACHABLE)));
            let mut wait = hosts::backoff(round, &self.config.backoff);
            if robots_waits {
                wait = wait.max(self.config.robots_fail_ttl);
            }
            tracing::debug!(
                round,
                pending = pending.len(),
                wait_ms = wait.as_millis() as u64,
                "retrying transient urls"
            );
            tokio::time::sleep(wait).await;
            for (i, o) in self.fetch_some(job, urls, &pending, tx).await {
                outcomes[i] = o;
            }
        }
        urls.iter()
            .zip(outcomes)
            .map(|(url, outcome)| UrlOutcome { url: url.clone(), outcome })
            .collect()
    }

    /// Fetches the URLs at `indices`: hosts side by side, each host's URLs up to its
    /// concurrency.
    async fn fetch_some(
        &self,
        job: &fetch::ChunkJob<'_>,
        urls: &[String],
        indices: &[usize],
        tx: &mpsc::Sender<WriterMsg>,
    ) -> Vec<(usize, Outcome)> {
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for &i in indices {
            let url = &urls[i];
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .unwrap_or_default();
            by_host.entry(host).or_default().push(i);
        }
        let lane_width =
            job.manifest.rate.concurrency.clamp(1, hosts::HOST_CONCURRENCY_MAX) as usize;
        let mark = job.chunk_mark();
        let mark = &mark;
        let lanes = by_host.into_values().map(|indices| async move {
            // The host's lane is wanted for as long as this chunk has URLs for it, so it is
            // not given back and claimed again between two of them.
            let lane_host =
                indices.first().and_then(|i| starling_protocol::item::url_host(&urls[*i]));
            let count = u32::try_from(indices.len()).unwrap_or(u32::MAX);
            let hold = lane_host.as_deref().and_then(|h| job.lane_hold_in(mark.as_ref(), h, count));
            let hold = &hold;
            futures::stream::iter(indices)
                .map(|i| async move {
                    let outcome = job.fetch_url(i, &urls[i], tx).await;
                    if let Some(h) = hold {
                        h.done_one();
                    }
                    (i, outcome)
                })
                .buffer_unordered(lane_width)
                .collect::<Vec<_>>()
                .await
        });
        futures::future::join_all(lanes).await.into_iter().flatten().collect()
    }

    fn warcinfo(
        &self,
        req: &ChunkRequest<'_>,
        job: &fetch::ChunkJob<'_>,
    ) -> Vec<(&'static str, String)> {
        let robots = match req.manifest.robots {
            starling_protocol::RobotsPolicy::Obey => "obey",
            starling_protocol::RobotsPolicy::Ignore => "ignore",
        };
        let mut info = vec![
            ("software", format!("starling/{}", env!("CARGO_PKG_VERSION"))),
            ("format", "WARC File Format 1.1".into()),
            (
                "conformsTo",
                "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/"
                    .into(),
            ),
            ("isPartOf", format!("{} (starling project {:#})", req.manifest.name, req.project)),
            ("http-header-user-agent", job.user_agent.clone()),
            ("robots", robots.into()),
            ("starling-project", format!("{:#}", req.project)),
            ("starling-project-name", req.manifest.name.clone()),
            ("starling-item", format!("{:#}", req.item)),
            ("starling-epoch", req.epoch.to_string()),
            ("starling-node", format!("{:#}", self.config.node)),
        ];
        if let Some(source) = req.checks {
            info.push(("starling-checks", format!("{source:#}")));
        }
        if let Some(note) = self.config.operator_note.as_ref().filter(|n| !n.trim().is_empty()) {
            info.push(("operator", note.clone()));
        }
        info
    }

    /// The robots.txt cell for an origin and agent, fresh if the cached one expired (an
    /// unreachable one expires after [`CrawlerConfig::robots_fail_ttl`]).
    fn robots_cell(&self, origin: &str, agent: &str) -> RobotsCell {
        let mut cache = self.robots.lock().unwrap_or_else(|e| e.into_inner());
        let key = (origin.to_owned(), agent.to_owned());
        if let Some(cell) = cache.get(&key) {
            let expired = cell.get().is_some_and(|(_, until)| *until <= Instant::now());
            if !expired {
                return cell.clone();
            }
        }
        if cache.len() >= ROBOTS_CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, c| c.get().is_none_or(|(_, until)| *until > now));
            if cache.len() >= ROBOTS_CACHE_MAX {
                cache.clear();
            }
        }
        let cell = RobotsCell::default();
        cache.insert(key, cell.clone());
        cell
    }

    /// Waits for the bandwidth cap to allow `bytes` more.
    async fn spend_bandwidth(&self, bytes: usize) {
        self.stats.received(bytes as u64);
        self.bandwidth.spend(bytes).await;
    }
}

/// Messages to a chunk's WARC writer thread.
#[derive(Debug)]
enum WriterMsg {
    /// A fetch made for the chunk's URL number `origin`, or (`None`) a robots.txt answer.
    Capture { origin: Option<usize>, capture: Box<Capture> },
    /// All fetches are done: write failure records, finish the file, reply.
    Finish {
        outcomes: Vec<UrlOutcome>,
        reply: oneshot::Sender<std::io::Result<(Finished, Vec<UrlOutcome>)>>,
    },
}

/// The writer thread: appends captures as they come and notes each in the crawl log; if the
/// chunk is dropped before `Finish`, the writer is dropped too and its temp file removed.
fn write_loop(mut w: WarcWriter, mut rx: mpsc::Receiver<WriterMsg>, log_target: &str) {
    let mut skipped = BTreeSet::new();
    let mut error: Option<std::io::Error> = None;
    let mut log = String::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            WriterMsg::Capture { origin, capture } => {
                if error.is_some() {
                    continue; // keep draining so fetches are not stuck
                }
                let line = FetchLine::of(&capture, origin);
                match w.capture(*capture) {
                    Ok(stored) => {
                        if stored == warc::Stored::OverCap
                            && let Some(origin) = origin
                        {
                            skipped.insert(origin);
                        }
                        log.push_str(&line.text(stored));
                    }
                    Err(e) => error = Some(e),
                }
            }
            WriterMsg::Finish { mut outcomes, reply } => {
                let result = match error.take() {
                    Some(e) => Err(e),
                    None => {
                        finish(w, &mut outcomes, &skipped, log, log_target).map(|f| (f, outcomes))
                    }
                };
                let _ = reply.send(result);
                return;
            }
        }
    }
}

/// A fetch's line in the crawl log, but for how it was stored.
struct FetchLine {
    date: String,
    status: String,
    bytes: u64,
    digest: String,
    origin: String,
    url: String,
}

impl FetchLine {
    fn of(c: &Capture, origin: Option<usize>) -> Self {
        Self {
            date: warc::warc_date(c.date),
            status: warc::head_status(&c.response_head),
            bytes: c.body_len,
            digest: warc::sha1_label(&c.payload_sha1),
            origin: origin.map_or_else(|| "robots".to_owned(), |i| format!("url:{i}")),
            url: warc::uri_text(&c.url),
        }
    }

    /// `fetch DATE STATUS BYTES DIGEST STORED FOR URL`, `FOR` the chunk URL's number
    /// (`url:N`) or `robots`; `STORED` is `response`, `revisit` or `not-stored`.
    fn text(&self, stored: warc::Stored) -> String {
        let Self { date, status, bytes, digest, origin, url } = self;
        format!("fetch {date} {status} {bytes} {digest} {} {origin} {url}\n", stored.label())
    }
}

fn finish(
    mut w: WarcWriter,
    outcomes: &mut [UrlOutcome],
    skipped: &BTreeSet<usize>,
    mut log: String,
    log_target: &str,
) -> std::io::Result<Finished> {
    let now = SystemTime::now();
    for (i, o) in outcomes.iter_mut().enumerate() {
        if skipped.contains(&i) {
            o.outcome = Outcome::Refused { reason: "refused: result size cap reached".into() };
        }
        if let Some(reason) = o.outcome.reason() {
            w.failure(&o.url, reason, now)?;
        }
        log.push_str(&outcome_line(i, o));
    }
    w.crawl_log(log_target, &log, now)?;
    w.finish()
}

/// `url N CLASS STATUS REDIRECTS URL REASON`: one chunk URL's outcome in the crawl log
/// (`-` for what does not apply).
fn outcome_line(i: usize, o: &UrlOutcome) -> String {
    let class = match o.outcome.class() {
        PartClass::Ok => "ok",
        PartClass::Refused => "refused",
        PartClass::Disallowed => "disallowed",
        PartClass::Transient => "transient",
    };
    let (status, redirects) = match &o.outcome {
        Outcome::Ok { status, redirects, .. } => (status.to_string(), redirects.to_string()),
        _ => ("-".to_owned(), "-".to_owned()),
    };
    let reason = o.outcome.reason().map_or_else(|| "-".to_owned(), warc::one_line);
    format!("url {i} {class} {status} {redirects} {} {reason}\n", warc::uri_text(&o.url))
}

#[cfg(test)]
mod tests;
