//! Faults of the node's own: a store it cannot write, results over the disk cap, a network
//! that is gone, a clock off against its peers'.
//!
//! None of them is the fault of the items the node holds, so none may fail an item for the
//! mesh: while any lasts, the engine is told ([`Input::LocalFault`](starling_protocol::Input))
//! and gives back what it held (releases, which others take at once) and claims nothing. The
//! actor looks every [`FLUSH_INTERVAL`](crate::actor::FLUSH_INTERVAL): a failing store is
//! reopened and written to, a dead network is probed, and the node resumes by itself once all
//! is well. The clock is the engine's own verdict (it gives work back by itself); it is shown
//! here with the rest. Each change is logged once, at WARN or ERROR on the way in and INFO on
//! the way out.

use crate::views::{HealthFault, HealthView};

/// The faults the actor found at its last look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The store's last write error, while writes fail.
    pub store: Option<String>,
    /// Results are over the operator's disk cap.
    pub disk: bool,
    /// Every fetch fails to connect or resolve, on more than one host.
    pub network: bool,
    /// The engine found this node's clock off against its peers': (offset ms, margin ms).
    pub clock: Option<(i64, u64)>,
}

impl Faults {
    /// Whether the engine must be told of a fault (the clock it knows by itself).
    pub fn local(&self) -> bool {
        self.store.is_some() || self.disk || self.network
    }

    /// One line per fault, for the log, `/status` and the dashboard.
    pub fn list(&self) -> Vec<HealthFault> {
        let mut out = Vec::new();
        let mut add = |kind: &str, detail: String| {
            out.push(HealthFault { kind: kind.into(), detail });
        };
        if let Some(e) = &self.store {
            add(
                "store",
                format!(
                    "the database cannot be written ({e}); free disk space or fix the data \
                     dir, the node retries every second"
                ),
            );
        }
        if self.disk {
            add(
                "disk",
                "stored results are over the disk cap; export and delete results, or raise \
                 --disk-max (then restart)"
                    .into(),
            );
        }
        if self.network {
            add(
                "network",
                "every fetch fails to connect or resolve, on more than one host; check this \
                 machine's network (the node probes and resumes by itself)"
                    .into(),
            );
        }
        if let Some((offset, margin)) = self.clock {
            let way = if offset > 0 { "behind" } else { "ahead of" };
            add(
                "clock",
                format!(
                    "this node's clock is {} ms {way} its peers' (median), beyond the {margin} \
                     ms the mesh tolerates; set the system clock right (NTP: `timedatectl \
                     set-ntp true`)",
                    offset.unsigned_abs()
                ),
            );
        }
        out
    }

    /// The `/status` view.
    pub fn view(&self, clock: starling_protocol::ClockView, gave_back: u64) -> HealthView {
        let faults = self.list();
        HealthView { ok: faults.is_empty(), faults, clock, gave_back }
    }
}

/// What changed between two looks, for the log.
pub fn log_change(before: &Faults, now: &Faults) {
    let (was, is) = (before.list(), now.list());
    for f in is.iter().filter(|f| !was.iter().any(|w| w.kind == f.kind)) {
        tracing::error!(
            fault = %f.kind,
            "{}: giving back held work and claiming nothing until it clears",
            f.detail
        );
    }
    for f in was.iter().filter(|w| !is.iter().any(|f| f.kind == w.kind)) {
        tracing::warn!(fault = %f.kind, "cleared: claiming work again");
    }
}

/// Debug builds only, for the fault tests: `STARLING_TEST_CLOCK_OFFSET_MS` shifts this
/// node's clock by that many milliseconds (negative: behind).
pub fn test_clock_offset_ms() -> i64 {
    #[cfg(debug_assertions)]
    {
        static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        *OFFSET.get_or_init(|| {
            std::env::var("STARLING_TEST_CLOCK_OFFSET_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
    }
    #[cfg(not(debug_assertions))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_says_what_to_do_and_the_clock_is_not_told_twice() {
        let f = Faults {
            store: Some("No space left on device".into()),
            disk: true,
            network: true,
            clock: Some((-30_000, 1_000)),
        };
        assert!(f.local());
        let list = f.list();
        let kinds: Vec<&str> = list.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(kinds, ["store", "disk", "network", "clock"]);
        assert!(list[0].detail.contains("No space left"));
        assert!(list[3].detail.contains("30000 ms ahead of"), "{}", list[3].detail);
        let only_clock = Faults { clock: Some((5_000, 1_000)), ..Default::default() };
        assert!(!only_clock.local(), "the engine judges its clock itself");
        let v = only_clock.view(Default::default(), 3);
        assert!(!v.ok);
        assert_eq!(v.gave_back, 3);
        assert!(Faults::default().view(Default::default(), 0).ok);
    }
}
