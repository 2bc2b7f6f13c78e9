//! Whether this node's network works at all, judged from its own fetches.
//!
//! A URL that fails because the node lost its network is not the URL's fault, nor the
//! item's: the node should stop claiming rather than fail chunk after chunk for everyone.
//! [`NetHealth`] watches every fetch attempt (robots.txt included) across all hosts and
//! chunks: a failure to connect or to resolve extends a streak, any HTTP answer from any host
//! ends it. The rule is [`NetHealth::down`]; the node's actor decides what to do with it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Connect or resolve failures in a row, with no answer in between, that mean "network down".
pub const NET_DOWN_FAILS: u32 = 8;
/// Distinct hosts the failing streak must span: one dead site is not a dead network.
pub const NET_DOWN_HOSTS: usize = 2;

/// The streak of connect/resolve failures since the last answer.
#[derive(Debug, Default)]
struct Streak {
    fails: u32,
    /// Distinct hosts in the streak, at most [`NET_DOWN_HOSTS`] kept (that is all the rule needs).
    hosts: Vec<String>,
    /// Where to ask whether the network is back: an origin (`scheme://host:port`) per host.
    origins: Vec<String>,
}

/// Connect and resolve failures against answers, across every host the crawler talks to.
#[derive(Debug, Default)]
pub struct NetHealth {
    streak: Mutex<Streak>,
    connect_failures: AtomicU64,
    answers: AtomicU64,
}

/// A snapshot of [`NetHealth`] for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetHealthView {
    /// [`NetHealth::down`] at the time of the snapshot.
    pub down: bool,
    /// Connect or resolve failures in a row since the last answer.
    pub failing_streak: u32,
    /// Distinct hosts in that streak (counted up to [`NET_DOWN_HOSTS`]).
    pub failing_hosts: u32,
    /// Connect or resolve failures since the node started.
    pub connect_failures: u64,
    /// HTTP answers (any status) since the node started.
    pub answers: u64,
}

impl NetHealth {
    /// Records an attempt on `host` that could not connect or resolve (not a guard refusal).
    pub fn connect_failed(&self, host: &str) {
        self.connect_failed_at(host, None);
    }

    /// As [`NetHealth::connect_failed`], remembering `origin` to probe while the network is
    /// down (see [`NetHealth::probe_origins`]).
    pub fn connect_failed_at(&self, host: &str, origin: Option<String>) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        let mut s = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        s.fails = s.fails.saturating_add(1);
        if s.hosts.len() < NET_DOWN_HOSTS && !s.hosts.iter().any(|h| h == host) {
            s.hosts.push(host.to_owned());
            s.origins.extend(origin);
        }
    }

    /// Origins of the hosts in the failing streak: a node that stopped claiming because its
    /// network is down fetches nothing, so it asks these now and then to learn it is back.
    pub fn probe_origins(&self) -> Vec<String> {
        self.streak.lock().unwrap_or_else(|e| e.into_inner()).origins.clone()
    }

    /// Records an HTTP answer (any status) from any host: the network works.
    pub fn answered(&self) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        let mut s = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        if s.fails > 0 {
            *s = Streak::default();
        }
    }

    /// Whether the network looks down: the last [`NET_DOWN_FAILS`] fetch attempts or more, on
    /// at least [`NET_DOWN_HOSTS`] different hosts, all failed to connect or resolve, and no
    /// host answered since. Timeouts after connecting, HTTP errors and SSRF refusals neither
    /// count nor reset. It clears at the first answer from any host.
    pub fn down(&self) -> bool {
        let s = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        s.fails >= NET_DOWN_FAILS && s.hosts.len() >= NET_DOWN_HOSTS
    }

    /// The counters and the current streak.
    pub fn view(&self) -> NetHealthView {
        let s = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        NetHealthView {
            down: s.fails >= NET_DOWN_FAILS && s.hosts.len() >= NET_DOWN_HOSTS,
            failing_streak: s.fails,
            failing_hosts: s.hosts.len() as u32,
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            answers: self.answers.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_needs_a_long_streak_over_two_hosts() {
        let h = NetHealth::default();
        for _ in 0..(NET_DOWN_FAILS * 3) {
            h.connect_failed("dead.example");
        }
        assert!(!h.down(), "one dead host is not a dead network");
        h.connect_failed("other.example");
        assert!(h.down());
        let v = h.view();
        assert_eq!((v.down, v.failing_streak, v.failing_hosts), (true, NET_DOWN_FAILS * 3 + 1, 2));
    }

    #[test]
    fn any_answer_resets_the_streak_but_not_the_totals() {
        let h = NetHealth::default();
        for i in 0..NET_DOWN_FAILS - 1 {
            h.connect_failed(if i % 2 == 0 { "a" } else { "b" });
        }
        assert!(!h.down(), "one failure short");
        h.answered();
        h.connect_failed("a");
        h.connect_failed("b");
        assert!(!h.down(), "the answer started a new streak");
        for _ in 0..NET_DOWN_FAILS {
            h.connect_failed("c");
        }
        assert!(h.down());
        h.answered();
        assert!(!h.down(), "clears at the first answer");
        let v = h.view();
        assert_eq!(v.connect_failures, u64::from(NET_DOWN_FAILS - 1 + 2 + NET_DOWN_FAILS));
        assert_eq!((v.answers, v.failing_streak), (2, 0));
    }
}
