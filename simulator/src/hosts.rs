//! Crawl hosts with a rate budget: the ground truth of what each site sees, and each node's
//! per-host state, for scenarios with a `[hosts]` table (host lanes, issue 15).
//!
//! The project's chunks carry URLs spread over `count` hosts. A node holding a chunk fetches its
//! URLs one by one, each paced by a per-node per-host token bucket (GCRA, as `governor` in the
//! node) at one lane holder's rate and burst, and, under mesh scope, only while its engine says
//! it may (`Engine::may_fetch`) or while it drains a lane it gave back early. The driver side
//! (what turns this into engine inputs) is `crawl.rs`; this module knows nothing of the world.
//!
//! The [`Site`]s are the checks' ground truth: every request any node sends a host is counted
//! there, whatever the engines believe. Requests are modelled as instant (the answer, 200 or
//! 429, comes back at once), so no request of a node is in flight when it learns of a 429.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use starling_protocol::{ItemId, ProjectId, RatePolicy, RateScope, WorkItem};

use crate::hash::IdBuild;
use crate::net::mix64;
use crate::scenario::HostsSpec;

/// The window the site counts requests over.
pub(crate) const WINDOW_MS: u64 = 1_000;

impl HostsSpec {
    /// The rate policy the project's manifest carries.
    pub fn policy(&self) -> RatePolicy {
        RatePolicy {
            per_s_milli: (self.rate_per_s * 1_000.0).round().max(1.0) as u32,
            burst: self.burst,
            lanes: self.lanes,
            scope: self.scope,
            ..RatePolicy::default()
        }
    }

    /// Host `k`'s name in project `p`.
    pub fn host_name(p: u32, k: u32) -> String {
        format!("h{k}.p{p}.example")
    }

    /// Which host URL `j` of chunk `i` is on: spread by a hash, the same for every seed (or
    /// the chunk's one host, `by_host`).
    pub fn host_of(&self, i: u32, j: u32) -> u32 {
        if self.by_host {
            return i % self.count.max(1);
        }
        (mix64((u64::from(i) << 20) ^ u64::from(j) ^ 0x686f_7374) % u64::from(self.count)) as u32
    }

    /// The URLs of chunk `i` of project `p`.
    pub fn chunk_urls(&self, p: u32, i: u32) -> Vec<String> {
        (0..self.urls_per_chunk)
            .map(|j| format!("https://{}/{i}/{j}", Self::host_name(p, self.host_of(i, j))))
            .collect()
    }

    /// The most requests a host may see in one [`WINDOW_MS`] from the whole mesh: its rate
    /// plus the bursts of its lanes' holders (each at least one request, so with more lanes
    /// than burst the bursts add up to `lanes`).
    pub fn window_bound(&self) -> u64 {
        let p = self.policy();
        let bursts = u64::from(p.burst_per_holder()) * u64::from(p.lanes.max(1));
        (u64::from(p.per_s_milli) * WINDOW_MS).div_ceil(1_000_000) + bursts.max(u64::from(p.burst))
    }
}

/// A token bucket in virtual time (GCRA), in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    /// Theoretical arrival time of the next request.
    tat_us: u64,
    period_us: u64,
    /// How far ahead of the TAT a request may come (the burst).
    tau_us: u64,
}

impl Bucket {
    pub(crate) fn new(per_s_milli: u32, burst: u32) -> Self {
        let period_us = 1_000_000_000 / u64::from(per_s_milli.max(1));
        Bucket { tat_us: 0, period_us, tau_us: period_us * u64::from(burst.max(1) - 1) }
    }

    /// The first millisecond at or after `now_ms` a request conforms.
    pub(crate) fn earliest_ms(&self, now_ms: u64) -> u64 {
        self.tat_us.saturating_sub(self.tau_us).div_ceil(1_000).max(now_ms)
    }

    /// Takes a token at `now_ms`; `false` (and nothing taken) if none is there.
    pub(crate) fn take(&mut self, now_ms: u64) -> bool {
        let now = now_ms * 1_000;
        if now + self.tau_us < self.tat_us {
            return false;
        }
        self.tat_us = self.tat_us.max(now) + self.period_us;
        true
    }

    /// Spends every saved token, so the next request waits a full period (a lane just
    /// granted: this holder's requests follow the last holder's as one bucket's would).
    pub(crate) fn empty(&mut self, now_ms: u64) {
        self.tat_us = self.tat_us.max(now_ms * 1_000 + self.tau_us + self.period_us);
    }
}

/// What the engine has decided about one host's lane at one node, as its driver keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Not held.
    Waiting,
    /// Held and started.
    Held,
    /// Given back early: requests go on until then (sim time), and stop there.
    Draining { until: u64 },
    /// The host has no lanes (node scope): fetched under the node's own bucket.
    Ungated,
}

/// One node's state for one host.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// URLs of the host left in the chunks held here.
    pub pending: u32,
    pub grant: Grant,
    /// Nothing is sent before this (sim time): a 429 here, or a cooldown from the mesh.
    pub cooldown_until: u64,
    pub bucket: Bucket,
    /// The `Fetch` event armed for this slot, if any.
    pub fetch_at: Option<u64>,
    /// What the engine was last told (`Input::WantLane`).
    pub wanted: bool,
}

impl Slot {
    /// Whether the slot waits on a lane held elsewhere or on a cooldown, as the node's
    /// `LaneGate::blocked` counts it: URLs left (or a drain running), and not held (or held
    /// off by a cooldown).
    pub(crate) fn blocked(&self, now: u64) -> bool {
        let draining = matches!(self.grant, Grant::Draining { until } if until > now);
        let wanted = self.pending > 0 && !draining;
        (wanted || draining) && (self.grant == Grant::Waiting || self.cooldown_until > now)
    }
}

/// A chunk a node is crawling: the URLs (indices into the chunk) it has left.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub token: u64,
    pub epoch: u32,
    pub left: Vec<u32>,
}

/// One node's crawl state.
#[derive(Debug, Default)]
pub(crate) struct NodeHosts {
    /// By item index: lower indices are fetched first.
    pub chunks: BTreeMap<u32, Chunk>,
    pub slots: BTreeMap<u32, Slot>,
    /// What the engine was last told of held chunks waiting on lanes (`Input::LaneBlocked`).
    pub blocked_told: (u16, u16),
    /// Hosts whose robots.txt this node has read (see `HostsSpec::robots_txt`).
    pub robots_read: std::collections::BTreeSet<u32>,
}

/// What one host saw, from all nodes together.
#[derive(Debug, Default)]
pub(crate) struct Site {
    /// Requests within the last [`WINDOW_MS`], with their senders.
    recent: VecDeque<(u64, u32)>,
    pub max_window: u64,
    pub requests: u64,
    pub refused: u64,
    /// The `Retry-After` window in force or last announced: (announced at, until).
    pub retry: Option<(u64, u64)>,
    /// Time covered by the windows announced, in all.
    pub retry_ms: u64,
    /// URLs of the host never fetched yet.
    pub unfetched: u32,
    pub urls: u32,
    pub first_request: Option<u64>,
    /// When its last URL was first fetched.
    pub all_fetched_at: Option<u64>,
    /// When the node fetching from it crashed, while nobody has fetched since.
    pub death: Option<u64>,
    /// Since when more engines than it has lanes let their nodes fetch from it.
    pub overlap_since: Option<u64>,
}

/// How a site answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok,
    /// 429, wait until then (sim time).
    Refused(u64),
}

/// Where a request landed against a `Retry-After` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    Clear,
    /// Inside a window, within the margin after its 429, this late.
    InMargin(u64),
    /// Inside a window, past the margin, this late.
    Late(u64),
}

impl Site {
    /// Counts a request at `now` and returns the most requests in the window ending at it.
    pub(crate) fn count(&mut self, now: u64, node: u32) -> u64 {
        while self.recent.front().is_some_and(|(t, _)| t + WINDOW_MS <= now) {
            self.recent.pop_front();
        }
        self.recent.push_back((now, node));
        self.requests += 1;
        self.first_request.get_or_insert(now);
        let n = self.recent.len() as u64;
        self.max_window = self.max_window.max(n);
        n
    }

    /// The requests of the last second, as `t=…ms node …`, for a violation.
    pub(crate) fn recent_senders(&self) -> String {
        let all: Vec<String> =
            self.recent.iter().map(|(t, n)| format!("t={t}ms node {n}")).collect();
        all.join(", ")
    }

    /// Where a request at `now` lands against the window in force, given the margin.
    pub(crate) fn landing(&self, now: u64, margin_ms: u64) -> Landing {
        match self.retry {
            Some((at, until)) if at <= now && now < until => {
                let late = now - at;
                if late < margin_ms { Landing::InMargin(late) } else { Landing::Late(late) }
            }
            _ => Landing::Clear,
        }
    }

    /// Announces a `Retry-After` of `wait_ms` at `now`, unless a window is in force (whose
    /// end is the answer then: the host repeats it).
    pub(crate) fn refuse(&mut self, now: u64, wait_ms: u64) -> u64 {
        self.refused += 1;
        match self.retry {
            Some((_, until)) if now < until => until,
            _ => {
                self.retry = Some((now, now + wait_ms));
                self.retry_ms += wait_ms;
                now + wait_ms
            }
        }
    }
}

/// The host model of one run.
#[derive(Debug)]
pub(crate) struct Hosts {
    pub spec: HostsSpec,
    pub policy: RatePolicy,
    pub project: ProjectId,
    pub names: Vec<String>,
    pub by_name: HashMap<String, u32>,
    /// Lane item to its host.
    pub lane_of: HashMap<ItemId, u32, IdBuild>,
    /// Per crawl item (by index), the host of each URL.
    pub chunk_hosts: Vec<Vec<u32>>,
    /// Per crawl item, the index of its first URL in `url_ok`.
    url_base: Vec<u32>,
    /// Successful fetches of each URL.
    url_ok: Vec<u32>,
    pub nodes: Vec<NodeHosts>,
    pub sites: Vec<Site>,
    pub stats: HostStats,
}

/// Counters the report reads.
#[derive(Debug, Default)]
pub(crate) struct HostStats {
    pub windows_over: u64,
    pub in_retry_margin: u64,
    pub in_retry_late: u64,
    pub retry_lateness_max_ms: Option<u64>,
    pub max_lane_holders: u64,
    pub holders_over: u64,
    pub overlaps: u64,
    pub overlap_max_ms: u64,
    pub idle_after_death_ms: Vec<u64>,
    pub lanes_given_back_early: u64,
    pub robots_requests: u64,
}

impl Hosts {
    /// The model for `spec` over `nodes` nodes and project `project` (index 0) whose crawl
    /// items are the first `chunks` of the ledger, in order.
    pub(crate) fn new(spec: &HostsSpec, project: ProjectId, nodes: u32, chunks: u32) -> Self {
        let names: Vec<String> = (0..spec.count).map(|k| HostsSpec::host_name(0, k)).collect();
        let by_name = names.iter().enumerate().map(|(k, n)| (n.clone(), k as u32)).collect();
        let mut lane_of = HashMap::with_hasher(IdBuild::default());
        if spec.scope == RateScope::Mesh {
            for (k, host) in names.iter().enumerate() {
                for lane in 0..spec.lanes {
                    let id = WorkItem::HostLane { host: host.clone(), lane }.id(&project);
                    lane_of.insert(id, k as u32);
                }
            }
        }
        let mut sites: Vec<Site> = (0..spec.count).map(|_| Site::default()).collect();
        let mut chunk_hosts = Vec::with_capacity(chunks as usize);
        let mut url_base = Vec::with_capacity(chunks as usize);
        let mut urls = 0u32;
        for i in 0..chunks {
            let hosts: Vec<u32> = (0..spec.urls_per_chunk).map(|j| spec.host_of(i, j)).collect();
            for h in &hosts {
                sites[*h as usize].urls += 1;
                sites[*h as usize].unfetched += 1;
            }
            url_base.push(urls);
            urls += hosts.len() as u32;
            chunk_hosts.push(hosts);
        }
        Hosts {
            spec: spec.clone(),
            policy: spec.policy(),
            project,
            names,
            by_name,
            lane_of,
            chunk_hosts,
            url_base,
            url_ok: vec![0; urls as usize],
            nodes: (0..nodes).map(|_| NodeHosts::default()).collect(),
            sites,
            stats: HostStats::default(),
        }
    }

    pub(crate) fn mesh(&self) -> bool {
        self.policy.scope == RateScope::Mesh
    }

    /// URLs a holder can send in the drain at its lane's rate (the node's early give-back).
    pub(crate) fn drain_quota(&self) -> u32 {
        starling_protocol::engine::drain_quota(self.policy.per_holder_milli())
    }

    /// Whether a chunk with `urls_left` on `hosts_left` hosts is finishing, as the node counts
    /// them in `Input::LaneBlocked` (under a mesh-wide rate only).
    pub(crate) fn chunk_finishing(&self, hosts_left: usize, urls_left: u32) -> bool {
        let rate = self.policy.per_holder_milli();
        self.mesh() && starling_protocol::engine::chunk_finishing(hosts_left, urls_left, rate)
    }

    /// The drain a holder with `urls` left states as it gives its lane back.
    pub(crate) fn drain_for(&self, urls: u32) -> u64 {
        starling_protocol::engine::drain_for(urls, self.policy.per_holder_milli())
    }

    /// A fresh slot for a host at a node.
    pub(crate) fn new_slot(&self) -> Slot {
        Slot {
            pending: 0,
            grant: if self.mesh() { Grant::Waiting } else { Grant::Ungated },
            cooldown_until: 0,
            bucket: Bucket::new(self.policy.per_holder_milli(), self.policy.burst_per_holder()),
            fetch_at: None,
            wanted: false,
        }
    }

    /// Node `n`'s slot for host `h`, made on first use.
    pub(crate) fn slot(&mut self, n: u32, h: u32) -> &mut Slot {
        let fresh = self.new_slot();
        self.nodes[n as usize].slots.entry(h).or_insert(fresh)
    }

    /// URL `j` of chunk `idx` was fetched at `now`; `true` the first time.
    pub(crate) fn fetched(&mut self, idx: u32, j: u32, now: u64) -> bool {
        let flat = (self.url_base[idx as usize] + j) as usize;
        self.url_ok[flat] += 1;
        if self.url_ok[flat] > 1 {
            return false;
        }
        let h = self.chunk_hosts[idx as usize][j as usize];
        let site = &mut self.sites[h as usize];
        site.unfetched -= 1;
        if site.unfetched == 0 {
            site.all_fetched_at = Some(now);
        }
        true
    }

    /// (URLs never fetched, URLs fetched more than once, extra fetches).
    pub(crate) fn url_counts(&self) -> (u64, u64, u64) {
        let never = self.url_ok.iter().filter(|c| **c == 0).count() as u64;
        let again = self.url_ok.iter().filter(|c| **c > 1).count() as u64;
        let extra = self.url_ok.iter().map(|c| u64::from(c.saturating_sub(1))).sum();
        (never, again, extra)
    }

    /// The host figures of a run that started crawling at `publish_at`.
    pub(crate) fn report(&self, publish_at: u64) -> HostReport {
        let rate = f64::from(self.policy.per_s_milli) / 1_000.0;
        let share = |from: u64, s: &Site| -> Option<f64> {
            let end = s.all_fetched_at?;
            let usable = end.saturating_sub(from).saturating_sub(s.retry_ms.min(end - from));
            (usable > 0).then(|| s.requests as f64 * 100.0 / (rate * usable as f64 / 1_000.0))
        };
        let busy: Vec<f64> = self
            .sites
            .iter()
            .filter_map(|s| share(s.first_request.unwrap_or(publish_at), s))
            .collect();
        let whole: Vec<f64> = self.sites.iter().filter_map(|s| share(publish_at, s)).collect();
        let min = |v: &[f64]| v.iter().copied().reduce(f64::min).map(round1);
        let mean =
            |v: &[f64]| (!v.is_empty()).then(|| round1(v.iter().sum::<f64>() / v.len() as f64));
        let finish = self.sites.iter().map(|s| s.all_fetched_at).collect::<Option<Vec<u64>>>();
        let time_ms = finish.and_then(|f| f.into_iter().max()).map(|t| t - publish_at);
        let ideal_ms = self
            .sites
            .iter()
            .map(|s| (f64::from(s.urls) * 1_000.0 / rate) as u64 + s.retry_ms)
            .max()
            .unwrap_or(0);
        let (never, again, extra) = self.url_counts();
        let idle = &self.stats.idle_after_death_ms;
        HostReport {
            scope: match self.policy.scope {
                RateScope::Mesh => "mesh".into(),
                RateScope::Node => "node".into(),
            },
            hosts: self.spec.count,
            lanes: self.policy.lanes,
            rate_per_s: rate,
            burst: self.policy.burst,
            window_bound: self.spec.window_bound(),
            max_window_requests: self.sites.iter().map(|s| s.max_window).max().unwrap_or(0),
            requests_over_bound: self.stats.windows_over,
            requests: self.sites.iter().map(|s| s.requests).sum(),
            refused: self.sites.iter().map(|s| s.refused).sum(),
            retry_windows_ms: self.sites.iter().map(|s| s.retry_ms).sum(),
            in_retry_window: self.stats.in_retry_late,
            in_retry_margin: self.stats.in_retry_margin,
            retry_lateness_max_ms: self.stats.retry_lateness_max_ms,
            cooldown_margin_ms: self.spec.cooldown_margin_ms,
            max_lane_holders: self.stats.max_lane_holders,
            lane_holders_over: self.stats.holders_over,
            lane_overlaps: self.stats.overlaps,
            lane_overlap_max_ms: self.stats.overlap_max_ms,
            lanes_given_back_early: self.stats.lanes_given_back_early,
            robots_requests: self.stats.robots_requests,
            urls: self.url_ok.len() as u64,
            urls_never_fetched: never,
            urls_fetched_again: again,
            extra_fetches: extra,
            idle_after_death: idle.len() as u64,
            idle_after_death_max_ms: idle.iter().copied().max(),
            idle_after_death_mean_ms: (!idle.is_empty())
                .then(|| idle.iter().sum::<u64>() / idle.len() as u64),
            budget_share_busy_min_pct: min(&busy),
            budget_share_busy_mean_pct: mean(&busy),
            budget_share_min_pct: min(&whole),
            budget_share_mean_pct: mean(&whole),
            time_ms,
            ideal_ms,
            time_vs_ideal: time_ms
                .map(|t| round1(t as f64 / ideal_ms.max(1) as f64 * 100.0) / 100.0),
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// What the sites saw, for runs with a `[hosts]` table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostReport {
    /// `mesh` (host lanes) or `node`.
    pub scope: String,
    /// Hosts.
    pub hosts: u32,
    /// Lanes per host.
    pub lanes: u16,
    /// The manifest's rate per host.
    pub rate_per_s: f64,
    /// The manifest's burst.
    pub burst: u32,
    /// Most requests one host may see in a second from the whole mesh: rate plus the lane
    /// holders' bursts.
    pub window_bound: u64,
    /// Most requests any host saw in one second, from all nodes together.
    pub max_window_requests: u64,
    /// Requests that took a host's last second over `window_bound`.
    pub requests_over_bound: u64,
    /// Requests the hosts got, in all (429s included).
    pub requests: u64,
    /// Requests answered 429.
    pub refused: u64,
    /// Time the hosts' `Retry-After` windows covered, in all.
    pub retry_windows_ms: u64,
    /// Requests inside a `Retry-After` window, past the margin after its 429.
    pub in_retry_window: u64,
    /// Requests inside a `Retry-After` window within the margin (the news still on its way).
    pub in_retry_margin: u64,
    /// Latest such request after its window's 429.
    pub retry_lateness_max_ms: Option<u64>,
    /// The margin allowed.
    pub cooldown_margin_ms: u64,
    /// Most nodes whose engines let them fetch from one host at one time (`may_fetch`).
    pub max_lane_holders: u64,
    /// Requests made while more than `lanes` nodes could fetch from the host.
    pub lane_holders_over: u64,
    /// Times more than `lanes` nodes could fetch from a host (two claims of a lane standing).
    pub lane_overlaps: u64,
    /// Longest such time, as seen at the host's requests (a violation past a lane's lease
    /// and the skew margin, in a settled mesh).
    pub lane_overlap_max_ms: u64,
    /// Lanes given back early to drain the last URLs.
    pub lanes_given_back_early: u64,
    /// robots.txt requests (in `requests`): one for each node that worked a host, so the
    /// fewer nodes a host's chunks go to, the fewer.
    pub robots_requests: u64,
    /// URLs in all.
    pub urls: u64,
    /// URLs never fetched.
    pub urls_never_fetched: u64,
    /// URLs fetched more than once (a chunk redone after its holder crashed, or run twice).
    pub urls_fetched_again: u64,
    /// Successful fetches beyond one per URL.
    pub extra_fetches: u64,
    /// Crashes of a host's fetching node while others had URLs for it.
    pub idle_after_death: u64,
    /// Longest a host then went without a request.
    pub idle_after_death_max_ms: Option<u64>,
    /// Mean of those.
    pub idle_after_death_mean_ms: Option<u64>,
    /// Requests as a share of the budget from each host's first request to its last URL's
    /// first fetch (less its `Retry-After` windows): least over the hosts.
    pub budget_share_busy_min_pct: Option<f64>,
    /// Mean over the hosts.
    pub budget_share_busy_mean_pct: Option<f64>,
    /// The same counted from publication.
    pub budget_share_min_pct: Option<f64>,
    /// Mean over the hosts.
    pub budget_share_mean_pct: Option<f64>,
    /// From publication to the last URL's first fetch.
    pub time_ms: Option<u64>,
    /// The busiest host's URLs at its rate, plus its `Retry-After` windows.
    pub ideal_ms: u64,
    /// `time_ms / ideal_ms`.
    pub time_vs_ideal: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_one_a_period() {
        let mut b = Bucket::new(2_000, 2);
        assert!(b.take(0) && b.take(0));
        assert!(!b.take(0));
        assert_eq!(b.earliest_ms(0), 500);
        assert!(!b.take(499) && b.take(500));
        assert_eq!(b.earliest_ms(500), 1_000);
    }

    #[test]
    fn an_emptied_bucket_waits_a_full_period() {
        let mut b = Bucket::new(2_000, 3);
        b.empty(10_000);
        assert_eq!(b.earliest_ms(10_000), 10_500);
        assert!(!b.take(10_499) && b.take(10_500));
    }

    #[test]
    fn a_site_counts_its_busiest_second() {
        let mut s = Site::default();
        for t in [0, 100, 999, 1_000, 1_500] {
            s.count(t, 0);
        }
        assert_eq!(s.max_window, 3);
        assert_eq!(s.requests, 5);
    }

    #[test]
    fn a_retry_window_is_repeated_not_extended_and_late_requests_are_told_apart() {
        let mut s = Site::default();
        assert_eq!(s.refuse(1_000, 5_000), 6_000);
        assert_eq!(s.refuse(2_000, 5_000), 6_000);
        assert_eq!(s.retry_ms, 5_000);
        assert_eq!(s.landing(1_500, 1_000), Landing::InMargin(500));
        assert_eq!(s.landing(2_500, 1_000), Landing::Late(1_500));
        assert_eq!(s.landing(6_000, 1_000), Landing::Clear);
    }

    #[test]
    fn the_window_bound_is_rate_plus_the_holders_bursts() {
        let mut h = HostsSpec { rate_per_s: 2.0, burst: 2, lanes: 1, ..HostsSpec::default() };
        assert_eq!(h.window_bound(), 4);
        h.lanes = 4;
        assert_eq!(h.window_bound(), 6, "four lanes of burst 1 each");
    }
}
