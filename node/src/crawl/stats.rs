//! The crawler's counters for the operator: fetches by outcome, URLs by final class, bytes
//! received, waits on a host's rate limit and the recent fetch rate. Cheap to bump from many tasks; read by the
//! control API through [`CrawlStats::view`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use starling_protocol::message::PartClass;

use crate::views::FetchStats;

/// URLs by the class of their final outcome in a chunk this node crawled: `ok` (archived,
/// any status), `refused` (policy), `disallowed` (robots.txt) and `transient` (still failing
/// after the chunk's retries; the chunk went back to the mesh, so another attempt may
/// archive them). A chunk crawled twice counts twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlCounts {
    /// Archived.
    pub ok: u64,
    /// Refused by policy (scope, SSRF guard, scheme, size caps, redirects).
    pub refused: u64,
    /// Disallowed by a robots.txt that was read.
    pub disallowed: u64,
    /// Given up on for now: the chunk was handed back as a retryable failure.
    pub transient: u64,
}

impl UrlCounts {
    /// `(label, count)` pairs in a fixed order, for metrics and the command line.
    pub fn labelled(&self) -> [(&'static str, u64); 4] {
        [
            ("ok", self.ok),
            ("refused", self.refused),
            ("disallowed", self.disallowed),
            ("transient", self.transient),
        ]
    }
}

/// Seconds the recent fetch rate is averaged over.
pub const RATE_WINDOW_S: u64 = 5;
/// Most distinct outcome labels kept (status codes are three digits, so this is never hit by
/// an honest server; a hostile one cannot grow the map past it).
pub const OUTCOME_LABELS_MAX: usize = 128;

/// Counters shared by every fetch.
#[derive(Debug)]
pub struct CrawlStats {
    started: Instant,
    by_status: Mutex<BTreeMap<String, u64>>,
    bytes_down: AtomicU64,
    rate_limit_waits: AtomicU64,
    /// URLs by final class, indexed by `PartClass as usize`.
    urls: [AtomicU64; 4],
    /// Fetches per second for the last few seconds: (second since start, count).
    recent: Mutex<[(u64, u64); RATE_WINDOW_S as usize + 1]>,
}

impl Default for CrawlStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            by_status: Mutex::default(),
            bytes_down: AtomicU64::new(0),
            rate_limit_waits: AtomicU64::new(0),
            urls: Default::default(),
            recent: Mutex::new([(u64::MAX, 0); RATE_WINDOW_S as usize + 1]),
        }
    }
}

impl CrawlStats {
    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Records one answer or failure, labelled by status code or error class.
    pub fn fetched(&self, label: &str) {
        {
            let mut map = self.by_status.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(label) {
                *n += 1;
            } else {
                let key = if map.len() < OUTCOME_LABELS_MAX { label } else { "other" };
                *map.entry(key.to_owned()).or_default() += 1;
            }
        }
        let now = self.second();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut recent[(now % (RATE_WINDOW_S + 1)) as usize];
        if slot.0 != now {
            *slot = (now, 0);
        }
        slot.1 += 1;
    }

    /// Records body bytes received.
    pub fn received(&self, bytes: u64) {
        self.bytes_down.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records a fetch that had to wait for its host's rate limit.
    pub fn waited_for_rate_limit(&self) {
        self.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the final class of one URL of a chunk.
    pub fn url_finished(&self, class: PartClass) {
        self.urls[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// URLs by final class so far.
    pub fn urls(&self) -> UrlCounts {
        let get = |c: PartClass| self.urls[c as usize].load(Ordering::Relaxed);
        UrlCounts {
            ok: get(PartClass::Ok),
            refused: get(PartClass::Refused),
            disallowed: get(PartClass::Disallowed),
            transient: get(PartClass::Transient),
        }
    }

    /// Fetches per second over the last [`RATE_WINDOW_S`] whole seconds.
    pub fn rate_per_s(&self) -> f64 {
        let now = self.second();
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let from = now.saturating_sub(RATE_WINDOW_S);
        let n: u64 = recent.iter().filter(|(s, _)| *s >= from && *s < now).map(|(_, c)| c).sum();
        let span = now.clamp(1, RATE_WINDOW_S);
        n as f64 / span as f64
    }

    /// A snapshot; `rate_limit_per_s` is filled in by the caller, who knows the hosts.
    pub fn view(&self) -> FetchStats {
        FetchStats {
            by_status: self.by_status.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            rate_limit_waits: self.rate_limit_waits.load(Ordering::Relaxed),
            rate_per_s: self.rate_per_s(),
            rate_limit_per_s: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_label_and_caps_the_label_set() {
        let s = CrawlStats::default();
        s.fetched("200");
        s.fetched("200");
        s.fetched("timeout");
        for i in 0..(OUTCOME_LABELS_MAX * 2) {
            s.fetched(&format!("x{i}"));
        }
        let v = s.view();
        assert_eq!(v.by_status["200"], 2);
        assert_eq!(v.by_status["timeout"], 1);
        assert!(v.by_status.len() <= OUTCOME_LABELS_MAX + 1);
        assert!(v.by_status["other"] >= OUTCOME_LABELS_MAX as u64);
    }

    #[test]
    fn urls_are_counted_by_class() {
        let s = CrawlStats::default();
        for c in [PartClass::Ok, PartClass::Ok, PartClass::Disallowed, PartClass::Transient] {
            s.url_finished(c);
        }
        let u = s.urls();
        assert_eq!(u, UrlCounts { ok: 2, refused: 0, disallowed: 1, transient: 1 });
        assert_eq!(u.labelled()[3], ("transient", 1));
    }
}
