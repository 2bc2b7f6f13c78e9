//! Fetching one URL of a chunk: scope, SSRF and robots checks, the host's limits, retries with
//! backoff, redirects followed by hand (each hop checked like the first request), and the
//! capture of each answer for the WARC writer. Each URL ends in an [`Outcome`] whose class
//! says whether trying again could help.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HOST, LOCATION, RETRY_AFTER, USER_AGENT};
use sha1::{Digest as _, Sha1};
use starling_protocol::{Digest, ProjectId, ProjectManifest, RatePolicy, RateScope, RobotsPolicy};
use tokio::sync::mpsc;
use url::Url;

use super::robots::{
    ROBOTS_BYTES_MAX, ROBOTS_REDIRECTS_MAX, Robots, RobotsAnswer, RobotsVerdict, UNREACHABLE,
    answer_for,
};
use super::warc::Capture;
use super::{Crawler, Outcome, ROBOTS_TTL, WriterMsg, guard};

/// Body bytes kept in memory per fetch before spilling to a temp file.
pub const SPOOL_MEM_BYTES: usize = 256 * 1024;
/// Robots product token used when the manifest's user agent has none.
const DEFAULT_AGENT_TOKEN: &str = "starling";

/// One chunk's view of the crawler: the project's settings and the names it fetches under.
#[derive(Debug)]
pub struct ChunkJob<'a> {
    crawler: &'a Crawler,
    /// The project's manifest.
    pub manifest: &'a ProjectManifest,
    /// The full user agent: the manifest's, then the node id.
    pub user_agent: String,
    /// The product token matched against robots.txt groups.
    agent_token: String,
    /// The project.
    project: ProjectId,
}

/// What lets one request go out; held while it runs.
struct Admitted<'a, 'c> {
    _lane: Option<super::lanes::LaneHold<'a>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _fetch: tokio::sync::SemaphorePermit<'c>,
}

/// What one request got back.
#[derive(Debug)]
enum Sent {
    /// An answer (archived unless it was a refusal to be retried).
    Answer {
        status: StatusCode,
        location: Option<String>,
        retry_after: Option<Duration>,
        truncated: bool,
        /// The blake3 digest of the body as archived (`None` when it was not archived).
        payload: Option<Digest>,
    },
    /// No answer, but one may come later (timeout, connection trouble).
    Retryable(String),
    /// No answer, and asking again here and now will not help: the URL ends with this.
    Fatal(Outcome),
}

impl Sent {
    /// The label the operator's fetch counters file this under.
    fn label(&self) -> String {
        match self {
            Sent::Answer { status, .. } => status.as_u16().to_string(),
            Sent::Retryable(reason) if reason.contains("timed out") => "timeout".into(),
            Sent::Retryable(_) => "error".into(),
            Sent::Fatal(Outcome::Refused { .. }) => "refused".into(),
            Sent::Fatal(_) => "error".into(),
        }
    }
}

/// A response body as read: spooled, with its length and digests.
struct Body {
    spool: tempfile::SpooledTempFile,
    len: u64,
    payload_sha1: [u8; 20],
    block_sha1: [u8; 20],
    /// What a receipt carries for spot-checks.
    blake3: Digest,
    truncated: bool,
}

fn is_refusal(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

impl<'a> ChunkJob<'a> {
    /// The job for one chunk of `manifest`'s project.
    pub fn new(crawler: &'a Crawler, manifest: &'a ProjectManifest) -> Self {
        let user_agent =
            format!("{} (starling node {:#})", manifest.user_agent, crawler.config.node);
        let agent_token = manifest
            .user_agent
            .split(|c: char| c.is_whitespace() || c == '/')
            .find(|s| !s.is_empty())
            .unwrap_or(DEFAULT_AGENT_TOKEN)
            .to_ascii_lowercase();
        Self { crawler, manifest, user_agent, agent_token, project: manifest.id() }
    }

    /// The limits this node fetches from one host under: under a mesh-wide rate, its lane's
    /// share of the project's rate and burst.
    fn host_policy(&self) -> RatePolicy {
        let rate = self.manifest.rate;
        RatePolicy { per_s_milli: rate.per_holder_milli(), burst: rate.burst_per_holder(), ..rate }
    }

    /// Demand for `host`'s lane (see `lanes.rs`) with `urls` to send, under a mesh-wide rate.
    pub(super) fn lane_hold(&self, host: &str, urls: u32) -> Option<super::lanes::LaneHold<'a>> {
        (self.manifest.rate.scope == RateScope::Mesh).then(|| {
            let rate = self.manifest.rate.per_holder_milli();
            self.crawler.lanes.hold(self.project, host, urls, rate)
        })
    }

    /// The mark a chunk's holds are taken through, under a mesh-wide rate.
    pub(super) fn chunk_mark(&self) -> Option<super::lanes::ChunkMark<'a>> {
        (self.manifest.rate.scope == RateScope::Mesh).then(|| self.crawler.lanes.chunk())
    }

    /// [`ChunkJob::lane_hold`], as part of the chunk `mark` tracks (if any).
    pub(super) fn lane_hold_in(
        &self,
        mark: Option<&super::lanes::ChunkMark<'a>>,
        host: &str,
        urls: u32,
    ) -> Option<super::lanes::LaneHold<'a>> {
        match mark {
            Some(m) => {
                Some(m.hold(self.project, host, urls, self.manifest.rate.per_holder_milli()))
            }
            None => self.lane_hold(host, urls),
        }
    }

    /// Waits until this node may send `url`'s host a request under the project's rate: it
    /// holds one of the host's lanes (or is draining one it gave back), and no cooldown is in
    /// force. The returned hold keeps the lane wanted while the request runs; under a lane just
    /// granted, the host's limiter starts empty.
    async fn lane_turn(
        &self,
        url: &Url,
        host: &super::hosts::Host,
    ) -> Option<super::lanes::LaneHold<'a>> {
        let name = starling_protocol::item::url_host(url.as_str())?;
        // Demand only: the chunk's URL is counted by its group's hold already (counting it
        // twice would double the drain a release states). A robots.txt or redirect request
        // is not counted; if the drain ends before it goes, it waits for the lane again.
        let hold = self.lane_hold(&name, 0)?;
        if self.crawler.lanes.turn(self.project, &name).await == super::lanes::Turn::Fresh {
            host.drain_tokens();
        }
        Some(hold)
    }

    /// Waits until one request may go to `url`'s host now: its lane's turn, a concurrency
    /// slot, a token of the host's limiter and a global fetch slot, with the lane's turn looked
    /// at again last (a request that waited for its token may have lost the lane, or seen its
    /// drain end, meanwhile: it goes back in line). `None` once the crawler is shut down.
    async fn admit(&self, url: &Url, host: &Arc<super::hosts::Host>) -> Option<Admitted<'a, '_>> {
        loop {
            let lane = self.lane_turn(url, host).await;
            let (slot, waited) = host.acquire().await;
            if waited {
                self.crawler.stats.waited_for_rate_limit();
            }
            let fetch = self.crawler.fetches.acquire().await.ok()?;
            let name = starling_protocol::item::url_host(url.as_str());
            if lane.is_none() || name.is_none_or(|h| self.crawler.lanes.may_send(self.project, &h))
            {
                return Some(Admitted { _lane: lane, _slot: slot, _fetch: fetch });
            }
        }
    }

    /// Tells the mesh that `url`'s host asked to be left alone for `wait` (a `Retry-After`,
    /// or parked after a run of refusals), under a mesh-wide rate.
    fn lane_refused(&self, url: &Url, wait: Duration, retry_after: bool) {
        let parked = wait >= self.crawler.config.backoff.park;
        if self.manifest.rate.scope != RateScope::Mesh || !(retry_after || parked) {
            return;
        }
        if let Some(host) = starling_protocol::item::url_host(url.as_str()) {
            let until = crate::clock::now_ms().saturating_add(wait.as_millis() as u64);
            self.crawler.lanes.refused(self.project, &host, until);
        }
    }

    /// Fetches chunk URL number `origin`, following redirects; every answer is archived.
    pub(super) async fn fetch_url(
        &self,
        origin: usize,
        url: &str,
        tx: &mpsc::Sender<WriterMsg>,
    ) -> Outcome {
        let refused = |reason: String| Outcome::Refused { reason };
        let mut current = match Url::parse(url) {
            Ok(u) => u,
            Err(e) => return refused(format!("bad url: {e}")),
        };
        let redirects_max = self.crawler.config.redirects_max;
        for hop in 0..=redirects_max {
            if let Err(reason) = self.admissible(&current) {
                return refused(if hop == 0 { reason } else { format!("redirect {reason}") });
            }
            if self.manifest.robots == RobotsPolicy::Obey
                && let Err(outcome) = self.robots_allow(&current, tx).await
            {
                return outcome;
            }
            let (status, location, payload) =
                match self.fetch_with_retries(origin, &current, tx).await {
                    Ok(answer) => answer,
                    Err(outcome) => return outcome,
                };
            match location {
                Some(loc) if status.is_redirection() => {
                    if hop == redirects_max {
                        return refused(format!("refused: more than {redirects_max} redirects"));
                    }
                    current = match current.join(&loc) {
                        Ok(next) => next,
                        Err(e) => return refused(format!("bad redirect location: {e}")),
                    };
                }
                _ => return Outcome::Ok { status: status.as_u16(), redirects: hop, payload },
            }
        }
        refused(format!("refused: more than {redirects_max} redirects"))
    }

    /// Scheme, scope and (for IP literals) the SSRF guard.
    fn admissible(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("refused: scheme {} not fetched", url.scheme()));
        }
        let host = url.host_str().ok_or("refused: url has no host")?.to_ascii_lowercase();
        if !in_scope(&host, &self.manifest.scope) {
            return Err(format!("refused: host {host} out of scope"));
        }
        guard::check_url(url, &self.crawler.guard).map_err(|r| ssrf_reason(&r))
    }

    /// Asks the host, retrying 429, 5xx, timeouts and connection trouble with backoff; the
    /// last answer is archived. What is still failing after the last attempt is transient.
    async fn fetch_with_retries(
        &self,
        origin: usize,
        url: &Url,
        tx: &mpsc::Sender<WriterMsg>,
    ) -> Result<(StatusCode, Option<String>, Option<Digest>), Outcome> {
        let config = &self.crawler.config;
        let host_name = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let attempts = config.attempts_max.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let host = self.crawler.hosts.get(&host_name, self.host_policy());
            let Some(_admitted) = self.admit(url, &host).await else {
                return Err(Outcome::Transient { reason: "crawler shut down".into() });
            };
            let final_try = attempt == attempts;
            let sent = self.send(origin, url, final_try, tx).await;
            self.crawler.stats.fetched(&sent.label());
            match sent {
                Sent::Answer { status, location, retry_after, truncated, payload } => {
                    if !is_refusal(status) {
                        host.succeeded();
                        if truncated {
                            let max = self.manifest.caps.response_bytes_max;
                            let reason = format!("refused: body over {max} bytes, truncated");
                            return Err(Outcome::Refused { reason });
                        }
                        return Ok((status, location, payload));
                    }
                    let wait = host.refused(retry_after, &config.backoff);
                    self.lane_refused(url, wait, retry_after.is_some());
                    tracing::debug!(%url, %status, wait_ms = wait.as_millis() as u64, "host refused");
                    last = format!("http {}", status.as_u16());
                }
                Sent::Retryable(reason) => {
                    let wait = host.refused(None, &config.backoff);
                    self.lane_refused(url, wait, false);
                    last = reason;
                }
                Sent::Fatal(outcome) => return Err(outcome),
            }
        }
        Err(Outcome::Transient { reason: format!("{last} after {attempts} attempts") })
    }

    /// Sends one request and, unless it is a refusal to be retried, streams the answer to the
    /// WARC writer.
    async fn send(
        &self,
        origin: usize,
        url: &Url,
        archive_refusal: bool,
        tx: &mpsc::Sender<WriterMsg>,
    ) -> Sent {
        let config = &self.crawler.config;
        let date = SystemTime::now();
        let request = request_head(url, &self.user_agent);
        let sending = self
            .crawler
            .client
            .get(url.as_str())
            .header(USER_AGENT, &self.user_agent)
            .header(ACCEPT, "*/*")
            .send();
        let mut resp = match tokio::time::timeout(config.response_timeout, sending).await {
            Err(_) => return Sent::Retryable("timed out".into()),
            Ok(Err(e)) => return self.request_failed(url, &e),
            Ok(Ok(r)) => r,
        };
        self.crawler.net.answered();
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| super::hosts::parse_retry_after(v, SystemTime::now()));
        let location =
            resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if is_refusal(status) && !archive_refusal {
            return Sent::Answer { status, location, retry_after, truncated: false, payload: None };
        }
        let ip = resp.remote_addr().map(|a| a.ip());
        let head = response_head(&resp);
        let body = match self.read_body(&mut resp, &head).await {
            Ok(b) => b,
            Err(sent) => return sent,
        };
        let (truncated, payload) = (body.truncated, body.blake3);
        let capture = Capture {
            url: url.to_string(),
            ip: ip.filter(|i: &IpAddr| !i.is_unspecified()),
            date,
            request,
            response_head: head,
            body: body.spool,
            body_len: body.len,
            payload_sha1: body.payload_sha1,
            block_sha1: body.block_sha1,
            truncated,
        };
        if tx
            .send(WriterMsg::Capture { origin: Some(origin), capture: Box::new(capture) })
            .await
            .is_err()
        {
            return Sent::Fatal(Outcome::Transient { reason: "warc writer stopped".into() });
        }
        Sent::Answer { status, location, retry_after, truncated, payload: Some(payload) }
    }

    /// Reads a body up to the project's cap into a spooled buffer, hashing as it goes (the
    /// test switch [`super::alters_payloads`] appends its marker here, before any digest).
    async fn read_body(&self, resp: &mut reqwest::Response, head: &[u8]) -> Result<Body, Sent> {
        let config = &self.crawler.config;
        let max = self.manifest.caps.response_bytes_max;
        let mut spool = tempfile::spooled_tempfile_in(SPOOL_MEM_BYTES, &config.results_dir);
        let (mut payload, mut block) = (Sha1::new(), Sha1::new());
        let mut blake = blake3::Hasher::new();
        block.update(head);
        let (mut len, mut truncated) = (0u64, false);
        loop {
            let chunk = match tokio::time::timeout(config.read_timeout, resp.chunk()).await {
                Err(_) => return Err(Sent::Retryable("timed out reading body".into())),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            let room = max.saturating_sub(len);
            let take = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.crawler.spend_bandwidth(take).await;
            let part = &chunk[..take];
            if let Err(e) = spool.write_all(part) {
                let reason = format!("cannot buffer body: {e}");
                return Err(Sent::Fatal(Outcome::Transient { reason }));
            }
            payload.update(part);
            block.update(part);
            blake.update(part);
            len += take as u64;
            if take < chunk.len() {
                truncated = true;
                break;
            }
        }
        if self.crawler.alter_payloads {
            let marker = super::ALTERED_MARKER;
            if let Err(e) = spool.write_all(marker) {
                let reason = format!("cannot buffer body: {e}");
                return Err(Sent::Fatal(Outcome::Transient { reason }));
            }
            payload.update(marker);
            block.update(marker);
            blake.update(marker);
            len += marker.len() as u64;
        }
        Ok(Body {
            spool,
            len,
            payload_sha1: payload.finalize().into(),
            block_sha1: block.finalize().into(),
            blake3: Digest(*blake.finalize().as_bytes()),
            truncated,
        })
    }

    /// Whether robots.txt lets this job fetch `url` (asked once per origin and agent, and
    /// again once an unreachable answer is forgotten). `Err` is the URL's outcome.
    /// The robots.txt answers read for it go to this chunk's WARC file through `tx`.
    async fn robots_allow(&self, url: &Url, tx: &mpsc::Sender<WriterMsg>) -> Result<(), Outcome> {
        let origin = url.origin().ascii_serialization();
        let cell = self.crawler.robots_cell(&origin, &self.agent_token);
        let (verdict, _) = cell.get_or_init(|| self.fetch_robots(url, &origin, tx)).await;
        let robots = match &**verdict {
            RobotsVerdict::Rules(r) => r,
            RobotsVerdict::Unreachable(reason) => {
                return Err(Outcome::Transient { reason: reason.clone() });
            }
            RobotsVerdict::Refused(reason) => {
                return Err(Outcome::Refused { reason: reason.clone() });
            }
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        if robots.allows(&path) {
            Ok(())
        } else {
            Err(Outcome::Disallowed { reason: "disallowed by robots.txt".into() })
        }
    }

    /// Asks for robots.txt for `url`'s origin and says how long the answer holds: a verdict
    /// from the rules for [`ROBOTS_TTL`], an unreachable or refused one only for the short
    /// fail TTL.
    async fn fetch_robots(
        &self,
        url: &Url,
        origin: &str,
        tx: &mpsc::Sender<WriterMsg>,
    ) -> (Arc<RobotsVerdict>, Instant) {
        let verdict = self.read_robots(url, tx).await;
        let ttl = match &verdict {
            RobotsVerdict::Rules(_) => ROBOTS_TTL,
            RobotsVerdict::Unreachable(reason) => {
                tracing::info!(origin, reason, "robots.txt unreachable; the host's urls wait");
                self.crawler.config.robots_fail_ttl
            }
            RobotsVerdict::Refused(_) => self.crawler.config.robots_fail_ttl,
        };
        (Arc::new(verdict), Instant::now() + ttl)
    }

    /// Reads robots.txt under the host's limits, following up to [`ROBOTS_REDIRECTS_MAX`]
    /// redirects (each hop checked by the SSRF guard), and judges the answer per RFC 9309.
    /// Every answer is archived as a response record, its body up to [`ROBOTS_BYTES_MAX`].
    async fn read_robots(&self, url: &Url, tx: &mpsc::Sender<WriterMsg>) -> RobotsVerdict {
        let config = &self.crawler.config;
        let unreachable = |why: &str| RobotsVerdict::Unreachable(format!("{UNREACHABLE}: {why}"));
        let Ok(mut target) = url.join("/robots.txt") else {
            return RobotsVerdict::Refused("refused: no robots.txt url for this host".into());
        };
        for _hop in 0..=ROBOTS_REDIRECTS_MAX {
            if let Err(r) = guard::check_url(&target, &self.crawler.guard) {
                return RobotsVerdict::Refused(format!("robots.txt {}", ssrf_reason(&r)));
            }
            if !matches!(target.scheme(), "http" | "https") {
                // Redirected somewhere we do not fetch: unavailable, which allows all.
                return RobotsVerdict::Rules(Robots::allow_all());
            }
            let host_name = target.host_str().unwrap_or_default().to_ascii_lowercase();
            let host = self.crawler.hosts.get(&host_name, self.host_policy());
            let Some(_admitted) = self.admit(&target, &host).await else {
                return unreachable("crawler shut down");
            };
            let date = SystemTime::now();
            let sending = self
                .crawler
                .client
                .get(target.as_str())
                .header(USER_AGENT, &self.user_agent)
                .send();
            let mut resp = match tokio::time::timeout(config.response_timeout, sending).await {
                Err(_) => {
                    host.refused(None, &config.backoff);
                    return unreachable("timed out");
                }
                Ok(Err(e)) => {
                    return match self.request_failed(&target, &e) {
                        Sent::Fatal(Outcome::Refused { reason }) => {
                            RobotsVerdict::Refused(format!("robots.txt {reason}"))
                        }
                        Sent::Fatal(o) => unreachable(o.reason().unwrap_or("error")),
                        Sent::Retryable(why) => {
                            host.refused(None, &config.backoff);
                            unreachable(&why)
                        }
                        Sent::Answer { .. } => unreachable("error"),
                    };
                }
                Ok(Ok(r)) => r,
            };
            self.crawler.net.answered();
            let status = resp.status();
            self.crawler.stats.fetched(&status.as_u16().to_string());
            let head = response_head(&resp);
            let ip = resp.remote_addr().map(|a| a.ip()).filter(|i| !i.is_unspecified());
            let body = self.robots_body(&mut resp).await;
            if let Ok((bytes, truncated)) = &body {
                let request = request_head(&target, &self.user_agent);
                let capture = small_capture(&target, ip, date, request, head, bytes, *truncated);
                if let Some(capture) = capture {
                    // A chunk that stopped has no file to add it to; nothing else to do.
                    let _ = tx
                        .send(WriterMsg::Capture { origin: None, capture: Box::new(capture) })
                        .await;
                }
            }
            match answer_for(status.as_u16()) {
                RobotsAnswer::AllowAll => {
                    host.succeeded();
                    return RobotsVerdict::Rules(Robots::allow_all());
                }
                RobotsAnswer::Unreachable => {
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| super::hosts::parse_retry_after(v, SystemTime::now()));
                    let wait = host.refused(retry_after, &config.backoff);
                    self.lane_refused(&target, wait, retry_after.is_some());
                    return unreachable(&status.as_u16().to_string());
                }
                RobotsAnswer::Follow => {
                    host.succeeded();
                    let next = resp
                        .headers()
                        .get(LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|loc| target.join(loc).ok());
                    match next {
                        Some(next) => target = next,
                        // A redirect to nowhere: unavailable, which allows all.
                        None => return RobotsVerdict::Rules(Robots::allow_all()),
                    }
                }
                RobotsAnswer::Parse => {
                    host.succeeded();
                    return match body {
                        Ok((bytes, _)) => {
                            let text = String::from_utf8_lossy(&bytes);
                            RobotsVerdict::Rules(Robots::parse(&text, &self.agent_token))
                        }
                        Err(why) => unreachable(&why),
                    };
                }
            }
        }
        // RFC 9309 §2.3.1.2: past the redirect limit the file may be taken as unavailable.
        RobotsVerdict::Rules(Robots::allow_all())
    }

    /// Reads a robots.txt body, up to [`ROBOTS_BYTES_MAX`] (the rest is ignored); says whether
    /// it was cut there.
    async fn robots_body(&self, resp: &mut reqwest::Response) -> Result<(Vec<u8>, bool), String> {
        let mut text = Vec::new();
        let mut cut = false;
        while text.len() < ROBOTS_BYTES_MAX {
            match tokio::time::timeout(self.crawler.config.read_timeout, resp.chunk()).await {
                Ok(Ok(Some(c))) => {
                    let take = c.len().min(ROBOTS_BYTES_MAX - text.len());
                    cut |= take < c.len();
                    text.extend_from_slice(&c[..take]);
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    let why = short_io_reason(&e).map_or_else(|| root_cause(&e), str::to_owned);
                    return Err(format!("reading it: {why}"));
                }
                Err(_) => return Err("timed out reading it".into()),
            }
        }
        Ok((text, cut))
    }

    /// Sorts a failed request and tells the network-health watch about it.
    fn request_failed(&self, url: &Url, e: &reqwest::Error) -> Sent {
        let sent = classify(e);
        if matches!(sent, Sent::Retryable(_)) && e.is_connect() {
            let origin = url.origin().ascii_serialization();
            self.crawler.net.connect_failed_at(url.host_str().unwrap_or_default(), Some(origin));
        }
        sent
    }
}

/// The reason for a URL the SSRF guard refused.
fn ssrf_reason(r: &guard::Refused) -> String {
    format!("refused: {} is a {} address, not allowed by the SSRF guard", r.target, r.why)
}

/// Sorts a client error: an SSRF refusal from the resolver is a refusal by policy; anything
/// else (timeouts, connect and resolve errors, a connection cut mid-answer) may pass.
fn classify(e: &reqwest::Error) -> Sent {
    if let Some(r) = guard::find_refusal(e) {
        return Sent::Fatal(Outcome::Refused { reason: ssrf_reason(r) });
    }
    if e.is_timeout() {
        return Sent::Retryable("timed out".into());
    }
    if e.is_connect() {
        return Sent::Retryable(net_reason(e));
    }
    Sent::Retryable(format!(
        "http error: {}",
        short_io_reason(e).map_or_else(|| root_cause(e), str::to_owned)
    ))
}

/// A short reason for a failed connection: "connection refused" rather than a chain of
/// wrappers.
fn net_reason(e: &(dyn std::error::Error + 'static)) -> String {
    match short_io_reason(e) {
        Some(short) => short.into(),
        None => format!("cannot connect: {}", root_cause(e)),
    }
}

/// The kind of the first I/O error in `e`'s chain, when it is a common network failure.
fn short_io_reason(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use std::io::ErrorKind;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let short = match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused",
                ErrorKind::ConnectionReset => "connection reset",
                ErrorKind::ConnectionAborted => "connection aborted",
                ErrorKind::TimedOut => "timed out",
                ErrorKind::HostUnreachable => "host unreachable",
                ErrorKind::NetworkUnreachable => "network unreachable",
                ErrorKind::AddrNotAvailable => "address not available",
                _ => {
                    cur = err.source();
                    continue;
                }
            };
            return Some(short);
        }
        cur = err.source();
    }
    None
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Whether `host` is in the manifest's scope (suffix match on labels; empty scope = any).
pub fn in_scope(host: &str, scope: &[String]) -> bool {
    scope.is_empty()
        || scope.iter().any(|s| {
            let s = s.trim_start_matches('.').to_ascii_lowercase();
            host == s || host.strip_suffix(&s).is_some_and(|rest| rest.ends_with('.'))
        })
}

/// The request head as it goes over the wire: reqwest adds nothing else without its optional
/// features, and hyper writes the request's headers, then the client's default `accept`, then
/// `host` (checked against the bytes a server received in the e2e tests).
fn request_head(url: &Url, user_agent: &str) -> Vec<u8> {
    let mut target = url.path().to_owned();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    format!(
        "GET {target} HTTP/1.1\r\n{}: {user_agent}\r\n{}: */*\r\n{}: {host}\r\n\r\n",
        USER_AGENT.as_str(),
        ACCEPT.as_str(),
        HOST.as_str()
    )
    .into_bytes()
}

/// A capture of a small answer held in memory (a robots.txt); `None` if it cannot be buffered.
fn small_capture(
    url: &Url,
    ip: Option<IpAddr>,
    date: SystemTime,
    request: Vec<u8>,
    head: Vec<u8>,
    body: &[u8],
    truncated: bool,
) -> Option<Capture> {
    let mut spool = tempfile::SpooledTempFile::new(body.len().max(1));
    spool.write_all(body).ok()?;
    let mut block = Sha1::new();
    block.update(&head);
    block.update(body);
    Some(Capture {
        url: url.to_string(),
        ip,
        date,
        request,
        response_head: head,
        body: spool,
        body_len: body.len() as u64,
        payload_sha1: Sha1::digest(body).into(),
        block_sha1: block.finalize().into(),
        truncated,
    })
}

/// The response head as far as the HTTP client keeps it: the version, the status and the
/// reason phrase as received (hyper keeps a phrase that is not the usual one), then the
/// headers in the order of each name's first appearance, repeated names grouped there, names
/// lowercased (the client keeps neither their case nor the exact order). The body is stored
/// without its transfer coding, so a `Transfer-Encoding` header is kept under another name
/// for readers' sake.
fn response_head(resp: &reqwest::Response) -> Vec<u8> {
    let version = match resp.version() {
        reqwest::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let status = resp.status();
    let reason = match resp.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
        None => status.canonical_reason().unwrap_or("").to_owned(),
    };
    let mut head = format!("{version} {} {reason}\r\n", status.as_u16()).into_bytes();
    for (name, value) in resp.headers() {
        let name = if name == reqwest::header::TRANSFER_ENCODING {
            "X-Starling-Orig-Transfer-Encoding"
        } else {
            name.as_str()
        };
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_a_suffix_match_on_labels() {
        let scope = vec!["example.org".to_owned(), ".ok.net".to_owned()];
        assert!(in_scope("example.org", &scope));
        assert!(in_scope("www.example.org", &scope));
        assert!(!in_scope("badexample.org", &scope));
        assert!(in_scope("a.ok.net", &scope));
        assert!(!in_scope("evil.com", &scope));
        assert!(in_scope("anything", &[]));
    }

    #[test]
    fn request_head_names_the_target_and_host() {
        let url = Url::parse("http://127.0.0.2:8080/a/b?x=1").expect("url");
        let head = String::from_utf8(request_head(&url, "bot/1")).expect("utf8");
        assert!(head.starts_with("GET /a/b?x=1 HTTP/1.1\r\nuser-agent: bot/1\r\n"));
        assert!(head.ends_with("\r\nhost: 127.0.0.2:8080\r\n\r\n"));
    }
}
