//! Per-host politeness, shared by every chunk and project the node crawls.
//!
//! Each host has a `governor` limiter built from the project's [`RatePolicy`] (rate and burst),
//! a semaphore for its concurrency cap, and a condition: a time before which nothing may be
//! sent (from `Retry-After` or backoff) and a count of refusals in a row. A host that keeps
//! refusing is parked; a task waiting for a parked host holds no global fetch slot, so the
//! node keeps working on other hosts meanwhile.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use starling_protocol::RatePolicy;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::views::HostInfo;

/// Most hosts remembered; idle ones are forgotten beyond this.
pub const HOSTS_MAX: usize = 4_096;
/// Largest per-host concurrency honoured, whatever a manifest asks.
pub const HOST_CONCURRENCY_MAX: u32 = 64;
/// Largest backoff exponent (2^16 times the base is far past any cap).
const BACKOFF_SHIFT_MAX: u32 = 16;

/// A host counts as active (its rate limit adds to the node's) this long after its last use.
pub const HOST_ACTIVE_FOR: Duration = Duration::from_secs(10);

/// Backoff and parking settings (operator side).
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// First backoff after a refusal.
    pub base: Duration,
    /// Longest backoff.
    pub max: Duration,
    /// Refusals in a row after which a host is parked.
    pub park_after: u32,
    /// How long a parked host is left alone.
    pub park: Duration,
    /// Longest `Retry-After` honoured; longer requests are cut to this.
    pub retry_after_max: Duration,
}

/// One host's limiter, slots and condition.
#[derive(Debug)]
pub struct Host {
    policy: RatePolicy,
    limiter: DefaultDirectRateLimiter,
    slots: Arc<Semaphore>,
    cond: Mutex<Condition>,
    last_used: Mutex<Instant>,
    /// When the last requests were let through (at most [`SENT_KEPT`]), for the budget's use.
    sent: Mutex<std::collections::VecDeque<Instant>>,
}

/// Most tokens [`Host::drain_tokens`] spends (the manifest's burst cap).
const BURST_DRAIN_MAX: u32 = starling_protocol::manifest::BURST_MAX;
/// Requests remembered per host for [`Host::sent_per_s`].
const SENT_KEPT: usize = 512;
/// The window the sent rate is measured over.
const SENT_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Condition {
    not_before: Option<Instant>,
    refusals: u32,
}

impl Host {
    fn new(policy: RatePolicy) -> Self {
        let per_s_milli = policy.per_s_milli.max(1);
        let period = Duration::from_micros(1_000_000_000 / u64::from(per_s_milli));
        let burst = NonZeroU32::new(policy.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let slots = policy.concurrency.clamp(1, HOST_CONCURRENCY_MAX) as usize;
        Self {
            policy,
            limiter: RateLimiter::direct(quota),
            slots: Arc::new(Semaphore::new(slots)),
            cond: Mutex::new(Condition::default()),
            last_used: Mutex::new(Instant::now()),
            sent: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    fn blocked_until(&self) -> Option<Instant> {
        let cond = self.cond.lock().unwrap_or_else(|e| e.into_inner());
        cond.not_before.filter(|t| *t > Instant::now())
    }

    /// Waits until this host may receive one more request: not parked or backing off, a
    /// concurrency slot free, and a token from the rate limiter. The permit is the slot; the
    /// flag says whether the rate limit made it wait.
    pub async fn acquire(&self) -> (OwnedSemaphorePermit, bool) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let mut waited = false;
        loop {
            if let Some(t) = self.blocked_until() {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed; a closed one would mean no slots at all.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // The condition may have changed while waiting for the slot.
            if self.blocked_until().is_some() {
                continue;
            }
            if self.limiter.check().is_err() {
                waited = true;
                self.limiter.until_ready().await;
            }
            if self.blocked_until().is_some() {
                continue; // a token spent idle only slows us down, never speeds us up
            }
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            if sent.len() >= SENT_KEPT {
                sent.pop_front();
            }
            sent.push_back(Instant::now());
            return (permit, waited);
        }
    }

    /// Spends the tokens the rate limiter has saved up, so the next request waits a full
    /// period: under a lane just taken over, this node's requests then follow the last
    /// holder's as one limiter's would (see `lanes.rs`).
    pub fn drain_tokens(&self) {
        for _ in 0..=self.policy.burst.min(BURST_DRAIN_MAX) {
            if self.limiter.check().is_err() {
                break;
            }
        }
    }

    /// The operator's view of this host at wall-clock `now_ms`.
    pub fn view(&self, name: &str, now_ms: u64, park_after: u32) -> HostInfo {
        let now = Instant::now();
        let cond = self.cond.lock().unwrap_or_else(|e| e.into_inner());
        let blocked = cond.not_before.filter(|t| *t > now);
        let state = match blocked {
            None => "ok",
            Some(_) if cond.refusals >= park_after => "parked",
            Some(_) => "backing_off",
        };
        let slots = self.policy.concurrency.clamp(1, HOST_CONCURRENCY_MAX) as usize;
        HostInfo {
            host: name.to_owned(),
            state: state.into(),
            until_ms: blocked.map(|t| now_ms + (t - now).as_millis() as u64),
            inflight: slots.saturating_sub(self.slots.available_permits()) as u32,
            rate_per_s: f64::from(self.policy.per_s_milli) / 1000.0,
            refusals: cond.refusals,
            sent_per_s: self.sent_per_s(now),
            lane: None,
            cooldown_until_ms: None,
        }
    }

    /// Requests let through per second over the last [`SENT_WINDOW`].
    fn sent_per_s(&self, now: Instant) -> f64 {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let recent =
            sent.iter().rev().take_while(|t| now.duration_since(**t) < SENT_WINDOW).count();
        recent as f64 / SENT_WINDOW.as_secs_f64()
    }

    /// Whether the host was used within [`HOST_ACTIVE_FOR`].
    pub fn active(&self) -> bool {
        self.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed() < HOST_ACTIVE_FOR
    }

    /// Requests allowed per second.
    pub fn rate_per_s(&self) -> f64 {
        f64::from(self.policy.per_s_milli) / 1000.0
    }

    /// Records an answer the host gave willingly; clears the refusal count.
    pub fn succeeded(&self) {
        let mut cond = self.cond.lock().unwrap_or_else(|e| e.into_inner());
        cond.refusals = 0;
    }

    /// Records a refusal (429, 5xx, timeout) and blocks the host for `retry_after` if given,
    /// else for an exponential backoff with jitter; parks it after too many in a row. Returns
    /// how long the host is blocked.
    pub fn refused(&self, retry_after: Option<Duration>, policy: &BackoffPolicy) -> Duration {
        let mut cond = self.cond.lock().unwrap_or_else(|e| e.into_inner());
        cond.refusals = cond.refusals.saturating_add(1);
        let mut wait = match retry_after {
            Some(d) => d.min(policy.retry_after_max),
            None => backoff(cond.refusals, policy),
        };
        if cond.refusals >= policy.park_after {
            wait = wait.max(policy.park);
            tracing::info!(
                refusals = cond.refusals,
                park_ms = wait.as_millis() as u64,
                "host parked"
            );
        }
        let until = Instant::now() + wait;
        cond.not_before = Some(cond.not_before.map_or(until, |t| t.max(until)));
        wait
    }
}

/// Exponential backoff with jitter: a random time in the upper half of `base * 2^(n-1)`,
/// capped at `max`.
pub fn backoff(refusals: u32, policy: &BackoffPolicy) -> Duration {
    let shift = refusals.saturating_sub(1).min(BACKOFF_SHIFT_MAX);
    let full = policy.base.saturating_mul(1u32 << shift).min(policy.max);
    let half = full / 2;
    let jitter_ns = getrandom::u64().unwrap_or(0) % (half.as_nanos() as u64).max(1);
    half + Duration::from_nanos(jitter_ns)
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// All hosts the node talks to, by lowercase host name.
#[derive(Debug, Default)]
pub struct HostTable {
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

impl HostTable {
    /// Every host, busiest first then by name, at most `limit`.
    pub fn views(&self, now_ms: u64, park_after: u32, limit: usize) -> Vec<HostInfo> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<HostInfo> =
            hosts.iter().map(|(name, h)| h.view(name, now_ms, park_after)).collect();
        out.sort_by(|a, b| b.inflight.cmp(&a.inflight).then_with(|| a.host.cmp(&b.host)));
        out.truncate(limit);
        out
    }

    /// The sum of the rate limits of the hosts in use lately: the fastest the node may crawl.
    pub fn active_rate_per_s(&self) -> f64 {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.values().filter(|h| h.active()).map(|h| h.rate_per_s()).sum()
    }

    /// The host entry for `host` under `policy`. Two projects fetching from one host share one
    /// entry; if a stricter policy arrives, the entry is rebuilt with it.
    pub fn get(&self, host: &str, policy: RatePolicy) -> Arc<Host> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = hosts.get(host)
            && !stricter(&policy, &h.policy)
        {
            return h.clone();
        }
        if hosts.len() >= HOSTS_MAX {
            hosts.retain(|_, h| Arc::strong_count(h) > 1 || h.blocked_until().is_some());
        }
        let merged = match hosts.get(host) {
            Some(h) => meet(&policy, &h.policy),
            None => policy,
        };
        let h = Arc::new(Host::new(merged));
        hosts.insert(host.to_owned(), h.clone());
        h
    }
}

fn stricter(a: &RatePolicy, b: &RatePolicy) -> bool {
    a.per_s_milli < b.per_s_milli || a.burst < b.burst || a.concurrency < b.concurrency
}

fn meet(a: &RatePolicy, b: &RatePolicy) -> RatePolicy {
    RatePolicy {
        per_s_milli: a.per_s_milli.min(b.per_s_milli),
        burst: a.burst.min(b.burst),
        concurrency: a.concurrency.min(b.concurrency),
        ..*a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            park_after: 3,
            park: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(30),
        }
    }

    #[test]
    fn retry_after_takes_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(42)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        for n in 1..40 {
            let d = backoff(n, &p);
            let full = p.base.saturating_mul(1 << (n - 1).min(16)).min(p.max);
            assert!(d >= full / 2 && d <= full, "n={n} d={d:?}");
        }
    }

    #[test]
    fn refusals_block_then_park() {
        let p = policy();
        let host = Host::new(RatePolicy::default());
        let d = host.refused(Some(Duration::from_secs(5)), &p);
        assert_eq!(d, Duration::from_secs(5));
        assert!(host.blocked_until().is_some());
        assert_eq!(host.refused(Some(Duration::from_secs(3600)), &p), p.retry_after_max);
        assert!(host.refused(None, &p) >= p.park, "third refusal in a row parks");
        host.succeeded();
        assert!(host.refused(None, &p) < p.park, "a success resets the count");
    }

    #[test]
    fn a_stricter_policy_rebuilds_the_entry() {
        let table = HostTable::default();
        let loose =
            RatePolicy { per_s_milli: 10_000, burst: 5, concurrency: 4, ..RatePolicy::default() };
        let tight =
            RatePolicy { per_s_milli: 1_000, burst: 5, concurrency: 4, ..RatePolicy::default() };
        let a = table.get("h", loose);
        assert!(Arc::ptr_eq(&a, &table.get("h", loose)));
        let b = table.get("h", tight);
        assert_eq!(b.policy.per_s_milli, 1_000);
        assert!(Arc::ptr_eq(&b, &table.get("h", loose)), "looser asks reuse the strict entry");
    }
}
