//! The sync session policy: with whom a node syncs, for how many rounds, how long it waits for
//! an answer and whom it asks instead. The node and the simulator both hold a [`SyncSessions`]
//! and drive it the same way, so the simulator's convergence figures rest on the policy the
//! node runs.
//!
//! A session is one exchange of digests and deltas with a peer. It opens on a reason the driver
//! has (a peer connected, the periodic timer, a healed link, a newly trusted key) and asks one
//! peer for its delta. While the peer says it has more, the session asks it again, up to
//! [`SYNC_ROUNDS_MAX`] rounds. A request unanswered after [`SYNC_TIMEOUT_MS`] (lost, or a slow
//! peer) is asked of another peer, up to [`SYNC_TRIES_MAX`] unanswered requests a session; a
//! late answer still counts. Peers are drawn at random from those the driver can reach, with
//! the randomness the driver hands in (the engine reads none itself), preferring peers the
//! session has not asked yet and never a peer another session is asking.
//!
//! Sans-IO: the driver sends what the calls return, tells the sessions what came back, and
//! calls [`SyncSessions::expire`] once [`SyncSessions::next_deadline`] has passed.

/// Rounds one session may take while the peer says there is more.
pub const SYNC_ROUNDS_MAX: u8 = 8;
/// How long a sync request may go unanswered before the session asks another peer.
pub const SYNC_TIMEOUT_MS: u64 = 2_000;
/// Unanswered requests a session makes before it gives up until the next reason to sync.
pub const SYNC_TRIES_MAX: u8 = 3;
/// Sessions open at once; more reasons to sync while this many are open are dropped (the
/// periodic sync catches up).
pub const SYNC_SESSIONS_MAX: usize = 8;

/// One sync request to send: a digest of the engine's state to `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncRequest<P> {
    /// The session it belongs to; hand it back with the answer.
    pub session: u32,
    /// Which of the session's requests this is; hand it back with the answer.
    pub seq: u32,
    pub peer: P,
    /// The round within the session, 0 for the first.
    pub round: u8,
    /// Requests of the session that went unanswered before this one: more than 0 for a retry.
    pub tries: u8,
    /// When the session stops waiting for it and asks another peer.
    pub deadline: u64,
}

#[derive(Clone, Debug)]
struct Session<P> {
    id: u32,
    /// The peer asked last.
    peer: P,
    round: u8,
    /// Requests of this session that went unanswered.
    tries: u8,
    /// Peers asked in this session (at most [`SYNC_TRIES_MAX`]).
    asked: Vec<P>,
    /// The latest request's number, and the first of the current round: an answer to any of
    /// them answers the round (a late answer from a peer given up on still counts).
    seq: u32,
    round_seq: u32,
    deadline: u64,
}

/// A node's open sync sessions, at most [`SYNC_SESSIONS_MAX`]. `P` is how the driver names a
/// peer (a libp2p peer id in the node, an index in the simulator).
#[derive(Clone, Debug)]
pub struct SyncSessions<P> {
    open: Vec<Session<P>>,
    next_id: u32,
}

impl<P> Default for SyncSessions<P> {
    fn default() -> Self {
        SyncSessions { open: Vec::new(), next_id: 1 }
    }
}

impl<P: Copy + Eq> SyncSessions<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every open session (the node went down), keeping session numbers unique so an
    /// answer to a request from before cannot be taken for one of a later session.
    pub fn clear(&mut self) {
        self.open.clear();
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Whether a session is asking `peer` now.
    pub fn asking(&self, peer: P) -> bool {
        self.open.iter().any(|s| s.peer == peer)
    }

    /// Opens a session with `with`, or with a peer drawn from `peers` when `with` is `None`.
    /// `draw(n)` must return a uniform pick in `0..n`. `None` when no session opens: every
    /// slot is taken, `with` is being asked already, or no peer is free.
    pub fn open(
        &mut self,
        now: u64,
        with: Option<P>,
        peers: &[P],
        draw: &mut impl FnMut(usize) -> usize,
    ) -> Option<SyncRequest<P>> {
        if self.open.len() >= SYNC_SESSIONS_MAX {
            return None;
        }
        let peer = match with {
            Some(p) if self.asking(p) => return None,
            Some(p) => p,
            None => self.pick(peers, None, &[], draw)?,
        };
        let id = self.next_id;
        // Wraps after 4 billion sessions; only the 8 open ones need to differ.
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = now + SYNC_TIMEOUT_MS;
        self.open.push(Session {
            id,
            peer,
            round: 0,
            tries: 0,
            asked: vec![peer],
            seq: 0,
            round_seq: 0,
            deadline,
        });
        Some(SyncRequest { session: id, seq: 0, peer, round: 0, tries: 0, deadline })
    }

    /// An answer to request `seq` of `session` came from `from`, saying whether it has more.
    /// Returns the next round's request, to the peer that answered, while there is more and
    /// rounds are left; otherwise the session closes. An answer to a closed session, or to an
    /// earlier round, changes nothing (its envelopes are still worth applying).
    pub fn answered(
        &mut self,
        now: u64,
        session: u32,
        seq: u32,
        from: P,
        more: bool,
    ) -> Option<SyncRequest<P>> {
        let at = self.open.iter().position(|s| s.id == session)?;
        let s = &mut self.open[at];
        if seq < s.round_seq || seq > s.seq {
            return None;
        }
        if !more || s.round + 1 >= SYNC_ROUNDS_MAX {
            self.open.swap_remove(at);
            return None;
        }
        s.round += 1;
        s.seq += 1;
        s.round_seq = s.seq;
        s.peer = from;
        s.deadline = now + SYNC_TIMEOUT_MS;
        Some(SyncRequest {
            session,
            seq: s.seq,
            peer: from,
            round: s.round,
            tries: s.tries,
            deadline: s.deadline,
        })
    }

    /// Request `seq` of `session` failed outright (the connection closed, the peer refused):
    /// the session asks another peer at once, as it would after the timeout.
    pub fn failed(
        &mut self,
        now: u64,
        session: u32,
        seq: u32,
        peers: &[P],
        draw: &mut impl FnMut(usize) -> usize,
    ) -> Option<SyncRequest<P>> {
        let at = self.open.iter().position(|s| s.id == session && s.seq == seq)?;
        self.retry(at, now, peers, draw)
    }

    /// When the earliest open request times out.
    pub fn next_deadline(&self) -> Option<u64> {
        self.open.iter().map(|s| s.deadline).min()
    }

    /// Every session whose request timed out by `now` asks another of `peers`, or closes after
    /// [`SYNC_TRIES_MAX`] unanswered requests. Returns the requests to send.
    pub fn expire(
        &mut self,
        now: u64,
        peers: &[P],
        draw: &mut impl FnMut(usize) -> usize,
    ) -> Vec<SyncRequest<P>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < self.open.len() {
            if self.open[at].deadline > now {
                at += 1;
                continue;
            }
            let id = self.open[at].id;
            out.extend(self.retry(at, now, peers, draw));
            // The session is still at `at` unless it closed.
            if self.open.get(at).is_some_and(|s| s.id == id) {
                at += 1;
            }
        }
        out
    }

    /// The session at `at` lost a request: another try with a fresh peer, or the end.
    fn retry(
        &mut self,
        at: usize,
        now: u64,
        peers: &[P],
        draw: &mut impl FnMut(usize) -> usize,
    ) -> Option<SyncRequest<P>> {
        let s = &mut self.open[at];
        s.tries += 1;
        if s.tries >= SYNC_TRIES_MAX {
            self.open.swap_remove(at);
            return None;
        }
        let (id, asked) = (s.id, std::mem::take(&mut s.asked));
        let picked = self.pick(peers, Some(id), &asked, draw);
        let s = &mut self.open[at];
        s.asked = asked;
        let Some(peer) = picked else {
            self.open.swap_remove(at);
            return None;
        };
        if !s.asked.contains(&peer) {
            s.asked.push(peer);
        }
        // The round stays: a retry asks for the same round, and any of its requests answers.
        s.peer = peer;
        s.seq += 1;
        s.deadline = now + SYNC_TIMEOUT_MS;
        Some(SyncRequest {
            session: s.id,
            seq: s.seq,
            peer,
            round: s.round,
            tries: s.tries,
            deadline: s.deadline,
        })
    }

    /// A peer drawn from `peers` for session `me` (`None` for a new one): never one another
    /// session asks, and one not in `asked` when there is such a peer.
    fn pick(
        &self,
        peers: &[P],
        me: Option<u32>,
        asked: &[P],
        draw: &mut impl FnMut(usize) -> usize,
    ) -> Option<P> {
        let taken = |p: &P| self.open.iter().any(|s| Some(s.id) != me && s.peer == *p);
        let free: Vec<P> = peers.iter().copied().filter(|p| !taken(p)).collect();
        let fresh: Vec<P> = free.iter().copied().filter(|p| !asked.contains(p)).collect();
        let from = if fresh.is_empty() { free } else { fresh };
        if from.is_empty() {
            return None;
        }
        let i = draw(from.len());
        from.get(i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(_: usize) -> usize {
        0
    }

    #[test]
    fn a_session_follows_more_for_at_most_the_round_cap_with_the_peer_that_answered() {
        let mut s = SyncSessions::new();
        let r = s.open(0, Some(7u32), &[], &mut first).unwrap();
        assert_eq!((r.peer, r.round, r.deadline), (7, 0, SYNC_TIMEOUT_MS));
        let mut last = r;
        for round in 1..SYNC_ROUNDS_MAX {
            last = s.answered(10, last.session, last.seq, 7, true).unwrap();
            assert_eq!((last.peer, last.round), (7, round));
        }
        assert_eq!(s.answered(10, last.session, last.seq, 7, true), None, "round cap");
        assert!(s.is_empty());
    }

    #[test]
    fn an_answer_without_more_closes_the_session_and_a_stale_one_changes_nothing() {
        let mut s = SyncSessions::new();
        let r = s.open(0, Some(1u32), &[], &mut first).unwrap();
        let next = s.answered(5, r.session, r.seq, 1, true).unwrap();
        // The first round's answer again (a duplicate) does not answer the second round.
        assert_eq!(s.answered(6, r.session, r.seq, 1, false), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.answered(7, next.session, next.seq, 1, false), None);
        assert!(s.is_empty());
        // An answer to a closed session is ignored.
        assert_eq!(s.answered(8, next.session, next.seq, 1, true), None);
    }

    #[test]
    fn an_unanswered_request_goes_to_another_peer_and_the_session_ends_after_the_tries() {
        let mut s = SyncSessions::new();
        let peers = [1u32, 2, 3, 4];
        let r = s.open(0, None, &peers, &mut first).unwrap();
        assert_eq!(r.peer, 1);
        assert!(s.expire(SYNC_TIMEOUT_MS - 1, &peers, &mut first).is_empty());
        assert_eq!(s.next_deadline(), Some(SYNC_TIMEOUT_MS));
        let again = s.expire(SYNC_TIMEOUT_MS, &peers, &mut first);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].peer, again[0].round, again[0].tries), (2, 0, 1), "a fresh peer");
        let third = s.expire(again[0].deadline, &peers, &mut first);
        assert_eq!(third[0].peer, 3);
        assert!(s.expire(third[0].deadline, &peers, &mut first).is_empty(), "tries spent");
        assert!(s.is_empty());
    }

    #[test]
    fn a_late_answer_from_the_first_peer_still_answers_the_round() {
        let mut s = SyncSessions::new();
        let peers = [1u32, 2];
        let r = s.open(0, None, &peers, &mut first).unwrap();
        let retry = s.expire(SYNC_TIMEOUT_MS, &peers, &mut first).pop().unwrap();
        assert_eq!(retry.peer, 2);
        // Peer 1 answers after all, with more: the next round goes to it.
        let next = s.answered(2_500, r.session, r.seq, 1, true).unwrap();
        assert_eq!((next.peer, next.round), (1, 1));
        // Peer 2's answer to the first round comes later still and is stale.
        assert_eq!(s.answered(2_600, retry.session, retry.seq, 2, true), None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_failure_asks_another_peer_at_once_and_only_the_latest_request_counts() {
        let mut s = SyncSessions::new();
        let peers = [1u32, 2];
        let r = s.open(0, None, &peers, &mut first).unwrap();
        let retry = s.failed(10, r.session, r.seq, &peers, &mut first).unwrap();
        assert_eq!((retry.peer, retry.deadline), (2, 10 + SYNC_TIMEOUT_MS));
        assert_eq!(s.failed(11, r.session, r.seq, &peers, &mut first), None, "old request");
        // With every peer asked, the one left is asked again rather than none.
        let third = s.failed(12, retry.session, retry.seq, &[2], &mut first).unwrap();
        assert_eq!(third.peer, 2);
        assert_eq!(s.failed(13, third.session, third.seq, &peers, &mut first), None, "tries spent");
        assert!(s.is_empty());
    }

    #[test]
    fn sessions_are_bounded_and_never_ask_a_peer_twice_at_once() {
        let mut s = SyncSessions::new();
        let peers: Vec<u32> = (0..20).collect();
        assert!(s.open(0, Some(3), &peers, &mut first).is_some());
        assert_eq!(s.open(0, Some(3), &peers, &mut first), None, "peer 3 is being asked");
        // Drawn peers skip the one being asked.
        let drawn = s.open(0, None, &[3, 4], &mut first).unwrap();
        assert_eq!(drawn.peer, 4);
        assert_eq!(s.open(0, None, &[3, 4], &mut first), None, "no free peer");
        while s.len() < SYNC_SESSIONS_MAX {
            s.open(0, None, &peers, &mut first).unwrap();
        }
        assert_eq!(s.open(0, Some(19), &peers, &mut first), None, "slots full");
        // Retries never land on a peer another session is asking.
        let retried = s.expire(SYNC_TIMEOUT_MS, &peers, &mut |n| n - 1);
        assert_eq!(retried.len(), SYNC_SESSIONS_MAX);
        let mut asked: Vec<u32> = retried.iter().map(|r| r.peer).collect();
        asked.sort_unstable();
        asked.dedup();
        assert_eq!(asked.len(), SYNC_SESSIONS_MAX, "{retried:?}");
    }
}
