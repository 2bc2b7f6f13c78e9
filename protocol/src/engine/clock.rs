//! This node's clock judged against its peers': each verified heartbeat says what time its
//! sender's clock read, and the median offset over recent peers says whether this node's own
//! clock is off by more than the skew margin (then it claims nothing until it is back).

use std::collections::BTreeMap;

use crate::ids::NodeId;

use super::{CLOCK_PEERS_MAX, CLOCK_QUORUM, ClockView};

/// A peer's clock against this node's, from its last two heartbeats heard.
#[derive(Debug, Clone, Copy)]
struct ClockSample {
    seq: u64,
    /// (peer's time − this node's) of the last two, oldest first; `i64::MIN` for none yet.
    offsets: [i64; 2],
    heard_at: u64,
}

/// The offsets of each peer's clock against this one's, and the verdict drawn from them.
#[derive(Debug, Default)]
pub(super) struct ClockTracker {
    samples: BTreeMap<NodeId, ClockSample>,
    view: ClockView,
}

impl ClockTracker {
    /// The verdict as it stands.
    pub(super) fn view(&self) -> ClockView {
        self.view
    }

    /// Takes in the clock of a peer's verified heartbeat number `seq`, sent at `at_ms` by its
    /// clock and heard at `now` by this one's. A heartbeat heard again (by sync, say) is not
    /// taken twice. Kept for the peers heard most recently, at most [`CLOCK_PEERS_MAX`].
    /// Returns whether a new sample was taken while the clock was never judged yet: then it is
    /// to be judged at once (claiming waits for that once enough peers were heard, see
    /// [`ClockTracker::pending`]).
    #[must_use]
    pub(super) fn note(&mut self, peer: NodeId, seq: u64, at_ms: u64, now: u64) -> bool {
        let offset = (i128::from(at_ms) - i128::from(now)).clamp(-(1 << 62), 1 << 62) as i64;
        if !self.samples.contains_key(&peer) && self.samples.len() >= CLOCK_PEERS_MAX {
            let oldest = self.samples.iter().min_by_key(|(n, s)| (s.heard_at, **n));
            if let Some(n) = oldest.map(|(n, _)| *n) {
                self.samples.remove(&n);
            }
        }
        let s = self.samples.entry(peer).or_insert(ClockSample {
            seq: 0,
            offsets: [i64::MIN; 2],
            heard_at: now,
        });
        if seq <= s.seq {
            return false;
        }
        s.seq = seq;
        s.offsets = [s.offsets[1], offset];
        s.heard_at = now;
        self.view.offset_ms.is_none()
    }

    /// Whether enough peers were heard to judge this node's clock but not yet twice each:
    /// claiming waits the heartbeat or two that takes, so a node started with a clock far off
    /// claims nothing before it knows.
    pub(super) fn pending(&self) -> bool {
        self.view.offset_ms.is_none() && self.samples.len() >= CLOCK_QUORUM
    }

    /// Drops the samples of peers not heard since `fresh`, before a verdict is drawn.
    pub(super) fn forget_before(&mut self, fresh: u64) {
        self.samples.retain(|_, s| s.heard_at >= fresh);
    }

    /// Draws the verdict from the samples kept: the offset is the median over peers heard
    /// twice, and the clock is off when it is beyond `skew_margin_ms`.
    ///
    /// A heartbeat's time lags its arrival by however long it travelled (or waited, when it
    /// came by sync), so each peer's offset is the larger of its last two (the fresher
    /// delivery), and a peer counts once two were heard. The median over peers is robust to a
    /// few peers with bad clocks; with fewer than [`CLOCK_QUORUM`] peers nothing is judged
    /// (with two nodes, which one is wrong cannot be told).
    pub(super) fn judge(&mut self, skew_margin_ms: u64) {
        let mut offsets: Vec<i64> = self
            .samples
            .values()
            .filter(|s| s.offsets[0] != i64::MIN)
            .map(|s| s.offsets[0].max(s.offsets[1]))
            .collect();
        offsets.sort_unstable();
        self.view.peers = offsets.len() as u32;
        self.view.offset_ms = (offsets.len() >= CLOCK_QUORUM).then(|| offsets[offsets.len() / 2]);
        let margin = i64::try_from(skew_margin_ms).unwrap_or(i64::MAX);
        self.view.off = self.view.offset_ms.is_some_and(|o| o.saturating_abs() > margin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn the_median_of_peers_heard_twice_judges_the_clock() {
        let mut c = ClockTracker::default();
        for n in 0..3u8 {
            assert!(c.note(peer(n), 1, 10_000 + 5_000, 10_000), "not judged yet");
        }
        // Each heard once: a quorum of peers, not judged yet, so claiming waits.
        c.judge(1_000);
        assert_eq!((c.view().offset_ms, c.pending()), (None, true));
        for n in 0..3u8 {
            let _ = c.note(peer(n), 2, 11_000 + 5_000 + u64::from(n), 11_000);
        }
        c.judge(1_000);
        assert_eq!(c.view(), ClockView { offset_ms: Some(5_001), peers: 3, off: true });
        assert!(!c.pending());
        // Judged: later samples no longer ask to be judged at once.
        assert!(!c.note(peer(0), 3, 12_000, 12_000));
    }

    #[test]
    fn a_heartbeat_heard_again_is_not_taken_twice_and_stale_peers_are_forgotten() {
        let mut c = ClockTracker::default();
        assert!(c.note(peer(1), 5, 1_000, 1_000));
        assert!(!c.note(peer(1), 5, 9_000, 2_000), "the same heartbeat again");
        c.forget_before(1_001);
        c.judge(1_000);
        assert_eq!(c.view(), ClockView { offset_ms: None, peers: 0, off: false });
    }

    #[test]
    fn at_most_clock_peers_max_are_kept_the_longest_unheard_going_first() {
        let mut c = ClockTracker::default();
        for n in 0..=CLOCK_PEERS_MAX as u64 {
            let _ = c.note(peer(n as u8), 1, n, n);
        }
        assert_eq!(c.samples.len(), CLOCK_PEERS_MAX);
        assert!(!c.samples.contains_key(&peer(0)));
    }
}
