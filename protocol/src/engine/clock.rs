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
    /// When enough peers were first heard to judge (see [`ClockTracker::pending`]).
    quorum_at: Option<u64>,
    /// Whether the wait for a first verdict ran out, as of the last [`ClockTracker::judge`].
    waited_out: bool,
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
        if self.quorum_at.is_none() && self.samples.len() >= CLOCK_QUORUM {
            self.quorum_at = Some(now);
        }
        self.view.offset_ms.is_none()
    }

    /// Whether enough peers were heard to judge this node's clock but not yet twice each:
    /// claiming waits the heartbeat or two that takes, so a node started with a clock far off
    /// claims nothing before it knows. The wait is bounded (the `wait_ms` given to
    /// [`ClockTracker::judge`]): a peer heard once and then not again (its later heartbeats
    /// lost, or not sent to this node) must not keep it from claiming for good; past the
    /// bound it claims unjudged, as a node with fewer than [`CLOCK_QUORUM`] peers does.
    pub(super) fn pending(&self) -> bool {
        self.view.offset_ms.is_none() && self.samples.len() >= CLOCK_QUORUM && !self.waited_out
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
    ///
    /// A verdict stands while fewer peers are heard than it takes to draw one: a node found
    /// off that then hears too few peers (cut off, its peers gone, or its messages refused
    /// for their times) stays off rather than claim on a clock known to be wrong. Below the
    /// quorum an "off" verdict clears only when at least two peers heard twice all find the
    /// clock within the margin (a clock set right in a mesh that shrank meanwhile); it is
    /// never set below the quorum.
    pub(super) fn judge(&mut self, skew_margin_ms: u64, wait_ms: u64, now: u64) {
        let mut offsets: Vec<i64> = self
            .samples
            .values()
            .filter(|s| s.offsets[0] != i64::MIN)
            .map(|s| s.offsets[0].max(s.offsets[1]))
            .collect();
        offsets.sort_unstable();
        let margin = i64::try_from(skew_margin_ms).unwrap_or(i64::MAX);
        let within = |o: &i64| o.saturating_abs() <= margin;
        self.view.peers = offsets.len() as u32;
        if offsets.len() >= CLOCK_QUORUM {
            let median = offsets[offsets.len() / 2];
            self.view.offset_ms = Some(median);
            self.view.off = !within(&median);
        } else if self.view.off && offsets.len() >= 2 && offsets.iter().all(within) {
            self.view.offset_ms = Some(offsets[offsets.len() / 2]);
            self.view.off = false;
        }
        self.waited_out = self.quorum_at.is_some_and(|t| now >= t.saturating_add(wait_ms));
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
        c.judge(1_000, 6_000, 10_000);
        assert_eq!((c.view().offset_ms, c.pending()), (None, true));
        for n in 0..3u8 {
            let _ = c.note(peer(n), 2, 11_000 + 5_000 + u64::from(n), 11_000);
        }
        c.judge(1_000, 6_000, 11_000);
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
        c.judge(1_000, 6_000, 2_000);
        assert_eq!(c.view(), ClockView { offset_ms: None, peers: 0, off: false });
    }

    /// Three peers heard twice, `offset` ms ahead of this node's clock, at `t` and `t + 1000`.
    fn hear_three(c: &mut ClockTracker, seq: u64, t: u64, offset: i64) {
        for n in 0..3u8 {
            for (k, at) in [(0, t), (1, t + 1_000)] {
                let _ = c.note(peer(n), seq + k, at.saturating_add_signed(offset), at);
            }
        }
    }

    #[test]
    fn an_off_verdict_stands_while_too_few_peers_are_heard() {
        let mut c = ClockTracker::default();
        hear_three(&mut c, 1, 100_000, -30_000);
        c.judge(200, 6_000, 101_000);
        assert!(c.view().off);
        // Cut off: every sample goes stale. The clock is still known to be wrong.
        c.forget_before(200_000);
        c.judge(200, 6_000, 200_000);
        assert_eq!(c.view(), ClockView { offset_ms: Some(-30_000), peers: 0, off: true });
        assert!(!c.pending());
        // One peer that finds the clock right is not enough to clear it...
        let _ = c.note(peer(9), 1, 200_000, 200_000);
        let _ = c.note(peer(9), 2, 201_000, 201_000);
        c.judge(200, 6_000, 201_000);
        assert!(c.view().off);
        // ...two that agree are (a clock set right in a mesh that shrank meanwhile).
        let _ = c.note(peer(8), 1, 200_000, 200_000);
        let _ = c.note(peer(8), 2, 201_050, 201_000);
        c.judge(200, 6_000, 201_000);
        assert_eq!(c.view(), ClockView { offset_ms: Some(50), peers: 2, off: false });
        // A fine verdict stands as well, and below the quorum none is drawn against it.
        let _ = c.note(peer(8), 3, 250_000, 202_000);
        let _ = c.note(peer(8), 4, 250_000, 203_000);
        c.judge(200, 6_000, 203_000);
        assert!(!c.view().off, "two peers, one far off: no verdict below the quorum");
    }

    #[test]
    fn a_first_verdict_is_waited_for_a_bounded_time() {
        let mut c = ClockTracker::default();
        // Three peers heard once; one is never heard again (its heartbeats do not reach us).
        for n in 0..3u8 {
            assert!(c.note(peer(n), 1, 10_000, 10_000));
        }
        c.judge(200, 6_000, 10_000);
        assert!(c.pending(), "claiming waits for the second heartbeats");
        for n in 0..2u8 {
            let _ = c.note(peer(n), 2, 12_000, 12_000);
        }
        c.judge(200, 6_000, 12_000);
        assert!(c.pending(), "two peers heard twice: no verdict yet, still within the wait");
        // The lone sample is refreshed by nothing, but heard recently enough not to be
        // forgotten; past the wait the node claims unjudged all the same.
        let _ = c.note(peer(0), 3, 15_900, 15_900);
        c.judge(200, 6_000, 15_900);
        assert!(c.pending());
        c.judge(200, 6_000, 16_000);
        assert_eq!((c.pending(), c.view().offset_ms), (false, None));
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
