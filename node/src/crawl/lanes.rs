//! The node's side of host lanes (the engine's side is `starling_protocol`'s `lanes.rs`).
//!
//! Under a project's mesh-wide rate a crawl task sends a host nothing unless this node holds
//! one of the host's lanes. The gate is where the crawl tasks and the actor meet:
//!
//! - a task that has URLs for a host takes a [`LaneHold`] for it (demand, and the URLs it has
//!   left), and waits its [`LaneGate::turn`] before every request to it;
//! - a holder whose URLs left for the host could all be sent within the protocol's drain
//!   (`LANE_DRAIN_MS` at the lane's rate) gives the lane back early and goes on fetching for
//!   as long as they take at that rate (`drain_for`) alone: the next holder's wait runs
//!   meanwhile, so the host stays busy across a hand-off (the release states that drain, and
//!   the engine starts the next holder no sooner than it after its claim); a lane held with
//!   nothing left stops the moment the actor takes the change, and states no drain;
//! - the actor hears that demand changed ([`LaneGate::changed`]), tells the engine
//!   (`Input::WantLane`), and tells the gate what the engine decided: a lane granted
//!   (`StartWork`), lost or given back (`CancelWork`), a cooldown from another node
//!   (`HostCooldown`), or that the host has no lanes (node scope, or the project's lane hosts
//!   are full), in which case the host is fetched from under the node's own limiter;
//! - a task told by the host to wait (`Retry-After`, or parked after a run of refusals)
//!   reports it ([`LaneGate::refused`]); the actor passes it to the engine, which gives the
//!   lane back with the cooldown in its release, so every node leaves the host alone.
//!
//! Demand is state, not messages: the actor reads what is wanted now, so nothing is lost when
//! many tasks come and go between two looks. A gate no actor has opened
//! ([`LaneGate::open`]) gates nothing: a crawler used on its own fetches under its own limits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use starling_protocol::ProjectId;
use tokio::sync::Notify;

use crate::clock::now_ms;

/// Most (project, host) pairs the gate tracks; past it, a new host is fetched ungated (and
/// the engine would refuse the demand anyway, see `LANE_DEMAND_MAX`).
pub const GATE_HOSTS_MAX: usize = 4_096;
/// Most refusals waiting for the actor.
const REFUSALS_MAX: usize = 1_024;
/// How often a waiting task looks again even without news (a cooldown running out).
const RECHECK: Duration = Duration::from_millis(500);

type Key = (ProjectId, String);
/// A host whose demand changed: (project, host, wanted now, and when not: how long this
/// node goes on sending it, in ms, for the release to state).
pub type Want = (ProjectId, String, bool, u64);
/// A host that asked to be left alone: (project, host, until, unix ms).
pub type Refusal = (ProjectId, String, u64);

/// What the engine decided about one host's lane here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Asked for; not held (yet).
    Waiting,
    /// Held; `fresh` until the first request under it has been let through.
    Held { epoch: u32, fresh: bool },
    /// Given back early: requests go on until then, and stop there.
    Draining { until: Instant },
    /// The host has no lanes: fetched under the node's own limiter.
    Ungated,
}

#[derive(Debug)]
struct Slot {
    /// Holds alive (tasks with URLs for the host, and requests under way).
    demand: u32,
    /// URLs (and requests) the holds have left to send.
    remaining: u32,
    /// The lane's rate (requests per 1,000 s): how many URLs fit in the drain, and the drain
    /// the URLs left need.
    per_s_milli: u32,
    grant: Grant,
    /// Nothing is sent before this (unix ms).
    cooldown_until: Option<u64>,
    /// Whether the engine was last told the host is wanted.
    told: bool,
}

impl Slot {
    fn new() -> Self {
        Slot {
            demand: 0,
            remaining: 0,
            per_s_milli: 1,
            grant: Grant::Waiting,
            cooldown_until: None,
            told: false,
        }
    }

    fn draining(&self, now: Instant) -> bool {
        matches!(self.grant, Grant::Draining { until } if until > now)
    }

    /// Whether the engine should hold a lane for it now: URLs left, beyond what the drain of
    /// a lane given back early sends (the next chunk of the host started here: the node
    /// claims the next epoch at once, with no wait after its own release).
    fn wanted(&self, now: Instant) -> bool {
        let (left, draining) = (self.remaining, self.draining(now));
        self.demand > 0 && starling_protocol::engine::lane_wanted(left, draining, self.per_s_milli)
    }
}

/// What [`LaneGate::turn`] let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Go (ungated, or a lane held or draining).
    Go,
    /// Go: the first request under a lane just granted. The host's limiter should start
    /// empty, so the hand-off cannot add a burst to the last holder's.
    Fresh,
}

#[derive(Debug, Default)]
struct Inner {
    open: bool,
    slots: BTreeMap<Key, Slot>,
    /// Hosts whose demand changed since the actor last looked.
    dirty: BTreeSet<Key>,
    refusals: Vec<(Key, u64)>,
    /// Chunks being fetched (see [`LaneGate::chunk`]), by number.
    chunks: BTreeMap<u64, ChunkLeft>,
    next_chunk: u64,
}

/// Chunks the gate tracks at once; past it, a chunk is not counted as finishing.
const CHUNKS_MAX: usize = 4_096;

/// What one chunk has left to send: URLs by hold, for the holds with some left.
#[derive(Debug, Default)]
struct ChunkLeft {
    holds: BTreeMap<u32, u32>,
    /// The lane rate its holds send at (requests per 1,000 s).
    per_s_milli: u32,
}

impl ChunkLeft {
    /// Down to its last few URLs, all on one host: the chunk that follows it on this node
    /// should be claimed now, so it takes over the host's lane before this one ends.
    fn finishing(&self) -> bool {
        let left = self.holds.values().sum();
        starling_protocol::engine::chunk_finishing(self.holds.len(), left, self.per_s_milli)
    }
}

/// One host's lane as the node sees it, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneInfo {
    /// The project.
    pub project: ProjectId,
    /// The host.
    pub host: String,
    /// `held`, `waiting` or `ungated`.
    pub state: String,
    /// Crawl tasks with URLs for the host.
    pub demand: u32,
    /// No request before this (unix ms), if a cooldown is in force.
    pub cooldown_until_ms: Option<u64>,
}

/// Shared by the crawler's tasks and the actor.
#[derive(Debug, Default)]
pub struct LaneGate {
    inner: Mutex<Inner>,
    /// Wakes the actor: demand changed or a refusal came.
    changed: Notify,
    /// Wakes waiting tasks: a grant, a loss, a cooldown.
    news: Notify,
}

/// Demand for one host's lane while it lives, with the URLs it has left.
#[derive(Debug)]
pub struct LaneHold<'a> {
    gate: &'a LaneGate,
    key: Option<Key>,
    left: AtomicU32,
    /// The chunk it is part of and its number there, if taken through a [`ChunkMark`].
    chunk: Option<(u64, u32)>,
}

impl LaneHold<'_> {
    /// One of its URLs is done.
    pub fn done_one(&self) {
        let Some(key) = &self.key else { return };
        let took =
            self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if took.is_ok() {
            self.gate.sent(key, 1, false, self.chunk);
        }
    }
}

impl Drop for LaneHold<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let left = self.left.swap(0, Ordering::Relaxed);
            self.gate.sent(&key, left, true, self.chunk);
        }
    }
}

/// One chunk's fetching, for counting it as finishing (see [`LaneGate::blocked`]): its holds
/// are taken through it, and it is forgotten when dropped.
#[derive(Debug)]
pub struct ChunkMark<'a> {
    gate: &'a LaneGate,
    id: Option<u64>,
    holds: AtomicU32,
}

impl<'a> ChunkMark<'a> {
    /// [`LaneGate::hold`], as part of this chunk.
    pub fn hold(
        &self,
        project: ProjectId,
        host: &str,
        urls: u32,
        per_s_milli: u32,
    ) -> LaneHold<'a> {
        let mut hold = self.gate.hold(project, host, urls, per_s_milli);
        let Some(id) = self.id.filter(|_| hold.key.is_some() && urls > 0) else { return hold };
        let n = self.holds.fetch_add(1, Ordering::Relaxed);
        hold.chunk = Some((id, n));
        let mut inner = self.gate.lock();
        if let Some(c) = inner.chunks.get_mut(&id) {
            let was = c.finishing();
            c.holds.insert(n, urls);
            c.per_s_milli = c.per_s_milli.max(per_s_milli);
            if c.finishing() != was {
                drop(inner);
                self.gate.changed.notify_one();
            }
        }
        hold
    }
}

impl Drop for ChunkMark<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let gone = self.gate.lock().chunks.remove(&id);
        if gone.is_some_and(|c| c.finishing()) {
            self.gate.changed.notify_one();
        }
    }
}

impl LaneGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the actor once: from now on mesh-wide hosts are gated.
    pub fn open(&self) {
        self.lock().open = true;
    }

    /// Resolves when demand changed or a refusal came (for the actor's loop).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Takes demand for `host` of `project`, with `urls` left to send; `per_s_milli` is the
    /// rate a lane holder sends at, for how many fit in the drain.
    pub fn hold(
        &self,
        project: ProjectId,
        host: &str,
        urls: u32,
        per_s_milli: u32,
    ) -> LaneHold<'_> {
        let mut inner = self.lock();
        let none = LaneHold { gate: self, key: None, left: AtomicU32::new(0), chunk: None };
        if !inner.open {
            return none;
        }
        let key = (project, host.to_owned());
        if !inner.slots.contains_key(&key) && inner.slots.len() >= GATE_HOSTS_MAX {
            return none;
        }
        let now = Instant::now();
        let slot = inner.slots.entry(key.clone()).or_insert_with(Slot::new);
        let was = slot.wanted(now);
        slot.demand += 1;
        slot.remaining = slot.remaining.saturating_add(urls);
        slot.per_s_milli = slot.per_s_milli.max(per_s_milli);
        if slot.wanted(now) != was {
            inner.dirty.insert(key.clone());
            drop(inner);
            self.changed.notify_one();
        }
        LaneHold { gate: self, key: Some(key), left: AtomicU32::new(urls), chunk: None }
    }

    /// Starts tracking one chunk's fetching: take its holds through the mark.
    pub fn chunk(&self) -> ChunkMark<'_> {
        let mut inner = self.lock();
        let id = (inner.open && inner.chunks.len() < CHUNKS_MAX).then(|| {
            inner.next_chunk += 1;
            let id = inner.next_chunk;
            inner.chunks.insert(id, ChunkLeft::default());
            id
        });
        ChunkMark { gate: self, id, holds: AtomicU32::new(0) }
    }

    /// `n` URLs of a hold are done (and the hold is gone, if `gone`). A lane held with no more
    /// left than fit in the drain is given back early (see the module docs).
    fn sent(&self, key: &Key, n: u32, gone: bool, chunk: Option<(u64, u32)>) {
        let mut inner = self.lock();
        if let Some((id, hold)) = chunk
            && let Some(c) = inner.chunks.get_mut(&id)
        {
            let was = c.finishing();
            if let Some(left) = c.holds.get_mut(&hold) {
                *left = left.saturating_sub(n);
                if *left == 0 || gone {
                    c.holds.remove(&hold);
                }
            }
            if c.finishing() != was {
                self.changed.notify_one();
            }
        }
        let Some(slot) = inner.slots.get_mut(key) else { return };
        let now = Instant::now();
        let was = slot.wanted(now);
        slot.remaining = slot.remaining.saturating_sub(n);
        if gone {
            slot.demand = slot.demand.saturating_sub(1);
        }
        if matches!(slot.grant, Grant::Held { .. })
            && slot.remaining > 0
            && slot.remaining <= starling_protocol::engine::drain_quota(slot.per_s_milli)
            && slot.demand > 0
        {
            // Long enough for what is left at the lane's rate, and no longer: the release
            // says so, and the next holder starts that much after its claim.
            let drain = starling_protocol::engine::drain_for(slot.remaining, slot.per_s_milli);
            slot.grant = Grant::Draining { until: now + Duration::from_millis(drain) };
        }
        if slot.wanted(now) != was {
            inner.dirty.insert(key.clone());
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// Waits until this node may send `host` of `project` a request: it holds a lane of the
    /// host, or gave it back less than the drain ago, or the host is not gated; and no cooldown
    /// is in force. The caller holds a [`LaneHold`].
    pub async fn turn(&self, project: ProjectId, host: &str) -> Turn {
        let key = (project, host.to_owned());
        loop {
            let news = self.news.notified();
            tokio::pin!(news);
            news.as_mut().enable();
            // Decided under the lock, waited for without it.
            let wait = {
                let mut inner = self.lock();
                let open = inner.open;
                let now = now_ms();
                let instant = Instant::now();
                let Some(slot) = inner.slots.get_mut(&key).filter(|_| open) else {
                    return Turn::Go;
                };
                if let Grant::Draining { until } = slot.grant
                    && until <= instant
                {
                    // The drain is over: back in line, wanted again if URLs are left.
                    slot.grant = Grant::Waiting;
                    let wanted = slot.wanted(instant);
                    if wanted {
                        inner.dirty.insert(key.clone());
                        self.changed.notify_one();
                    }
                    continue;
                }
                match (slot.grant, slot.cooldown_until.filter(|t| *t > now)) {
                    (_, Some(until)) => Duration::from_millis(until - now).min(RECHECK),
                    (
                        Grant::Ungated | Grant::Draining { .. } | Grant::Held { fresh: false, .. },
                        None,
                    ) => {
                        return Turn::Go;
                    }
                    (Grant::Held { epoch, fresh: true }, None) => {
                        slot.grant = Grant::Held { epoch, fresh: false };
                        return Turn::Fresh;
                    }
                    (Grant::Waiting, None) => RECHECK,
                }
            };
            tokio::select! {
                () = &mut news => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Hosts this node has URLs for that wait on a lane held elsewhere or on a cooldown (about
    /// how many held chunks are blocked), and chunks down to their last URLs on one host
    /// ([`finishing_quota`](starling_protocol::engine::finishing_quota)), as
    /// `(blocked, finishing)`: the engine lets that many take other work, so the next chunk
    /// of a finishing one is claimed and settled by the time it ends and the host's lane
    /// stays busy.
    pub fn blocked(&self) -> (u16, u16) {
        let inner = self.lock();
        let (now, instant) = (now_ms(), Instant::now());
        let blocked = inner
            .slots
            .values()
            .filter(|s| s.wanted(instant) || s.draining(instant))
            .filter(|s| s.grant == Grant::Waiting || s.cooldown_until.is_some_and(|t| t > now))
            .count();
        let finishing = inner.chunks.values().filter(|c| c.finishing()).count();
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        (count(blocked), count(finishing))
    }

    /// Whether a request may go to `host` of `project` this instant (see [`LaneGate::turn`]),
    /// without waiting: a lane held or still draining, or no gate; and no cooldown.
    pub fn may_send(&self, project: ProjectId, host: &str) -> bool {
        let inner = self.lock();
        let Some(slot) = inner.slots.get(&(project, host.to_owned())).filter(|_| inner.open) else {
            return true;
        };
        let now = Instant::now();
        if slot.cooldown_until.is_some_and(|t| t > now_ms()) {
            return false;
        }
        match slot.grant {
            Grant::Ungated | Grant::Held { .. } => true,
            Grant::Draining { until } => until > now,
            Grant::Waiting => false,
        }
    }

    /// The host told this node to wait until `until_ms` (unix ms): nothing more is sent here,
    /// and the actor tells the mesh.
    pub fn refused(&self, project: ProjectId, host: &str, until_ms: u64) {
        let mut inner = self.lock();
        if !inner.open {
            return;
        }
        let key = (project, host.to_owned());
        if let Some(slot) = inner.slots.get_mut(&key) {
            slot.cooldown_until = Some(slot.cooldown_until.unwrap_or(0).max(until_ms));
        }
        if inner.refusals.len() < REFUSALS_MAX {
            inner.refusals.push((key, until_ms));
        }
        drop(inner);
        self.changed.notify_one();
        self.news.notify_waiters();
    }

    // ---- the actor's side ----------------------------------------------------------------

    /// The hosts whose demand changed since the last call, with whether they are wanted now.
    /// Slots nobody wants, holds or waits out a cooldown on are forgotten.
    pub fn take_changes(&self) -> (Vec<Want>, Vec<Refusal>) {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        let instant = Instant::now();
        let mut wants = Vec::with_capacity(dirty.len());
        for key in dirty {
            let Some(s) = inner.slots.get_mut(&key) else {
                wants.push((key.0, key.1, false, 0));
                continue;
            };
            let wanted = s.wanted(instant);
            let draining_ms =
                |until: Instant| until.saturating_duration_since(instant).as_millis() as u64 + 1;
            // Given back early since the engine was last told, and wanted again already (the
            // host's next chunk came): the engine still holds the lane, so it is told of the
            // give-back first (its release states the drain) and asked again after. Told only
            // "wanted", it would go on holding a lane this gate no longer counts as held.
            if let (true, true, Grant::Draining { until }) = (wanted, s.told, s.grant) {
                wants.push((key.0, key.1.clone(), false, draining_ms(until)));
            }
            // Not wanted: nothing more is sent past the drain (none for a lane held with
            // nothing left: it stops here, before its release is signed).
            let drain = match s.grant {
                _ if wanted => 0,
                Grant::Draining { until } => draining_ms(until),
                Grant::Held { .. } => {
                    s.grant = Grant::Draining { until: instant };
                    0
                }
                Grant::Waiting | Grant::Ungated => 0,
            };
            s.told = wanted;
            wants.push((key.0, key.1, wanted, drain));
        }
        let refusals = std::mem::take(&mut inner.refusals)
            .into_iter()
            .map(|((p, h), until)| (p, h, until))
            .collect();
        let now = now_ms();
        inner.slots.retain(|_, s| {
            s.demand > 0
                || matches!(s.grant, Grant::Held { .. })
                || s.draining(instant)
                || s.cooldown_until.is_some_and(|t| t > now)
        });
        (wants, refusals)
    }

    /// The engine holds (and has started) lane `epoch` of `host`; `after_another` when the
    /// hold follows another node's (`Engine::lane_follows_another`), so the first request
    /// under it starts the limiter empty. Returns whether it is wanted: by a task here, or
    /// (`ahead`) by the engine for a chunk it claimed whose tasks have not asked yet, which
    /// find it held when they do. A lane resumed after a restart that nothing here wants is
    /// given back.
    pub fn granted(
        &self,
        project: ProjectId,
        host: &str,
        epoch: u32,
        after_another: bool,
        ahead: bool,
    ) -> bool {
        let mut inner = self.lock();
        let key = (project, host.to_owned());
        let wanted = inner.slots.get(&key).is_some_and(|s| s.demand > 0);
        if !wanted && ahead && inner.open && inner.slots.len() < GATE_HOSTS_MAX {
            inner.slots.entry(key).or_insert_with(Slot::new);
        }
        drop(inner);
        self.set(project, host, Grant::Held { epoch, fresh: after_another });
        wanted || ahead
    }

    /// The engine no longer holds the lane (lost it, or gave it back).
    pub fn revoked(&self, project: ProjectId, host: &str) {
        let mut inner = self.lock();
        // A lane given back early keeps its drain; an ungated host stays ungated.
        if let Some(slot) = inner.slots.get_mut(&(project, host.to_owned()))
            && matches!(slot.grant, Grant::Held { .. })
        {
            slot.grant = Grant::Waiting;
        }
    }

    /// The host has no lanes: fetch from it under the node's own limiter.
    pub fn ungated(&self, project: ProjectId, host: &str) {
        self.set(project, host, Grant::Ungated);
    }

    fn set(&self, project: ProjectId, host: &str, grant: Grant) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(&(project, host.to_owned())) {
            slot.grant = grant;
        }
        drop(inner);
        self.news.notify_waiters();
    }

    /// Another node released a lane of `host` with a cooldown: nothing is sent before it.
    pub fn cooldown(&self, project: ProjectId, host: &str, until_ms: u64) {
        let mut inner = self.lock();
        let key = (project, host.to_owned());
        if !inner.slots.contains_key(&key) && inner.slots.len() >= GATE_HOSTS_MAX {
            return;
        }
        let slot = inner.slots.entry(key).or_insert_with(Slot::new);
        slot.cooldown_until = Some(slot.cooldown_until.unwrap_or(0).max(until_ms));
        drop(inner);
        self.news.notify_waiters();
    }

    /// Every tracked host's lane, for the operator, at most `limit`.
    pub fn views(&self, limit: usize) -> Vec<LaneInfo> {
        let inner = self.lock();
        let now = now_ms();
        inner
            .slots
            .iter()
            .take(limit)
            .map(|((project, host), s)| LaneInfo {
                project: *project,
                host: host.clone(),
                state: match s.grant {
                    Grant::Held { .. } => "held",
                    Grant::Draining { .. } => "draining",
                    Grant::Waiting => "waiting",
                    Grant::Ungated => "ungated",
                }
                .into(),
                demand: s.demand,
                cooldown_until_ms: s.cooldown_until.filter(|t| *t > now),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProjectId = ProjectId([7; 32]);
    /// 4/s: three URLs fit in the one-second drain with its slack.
    const RATE: u32 = 4_000;

    fn wants(gate: &LaneGate) -> Vec<(ProjectId, String, bool)> {
        gate.take_changes().0.into_iter().map(|(p, h, w, _)| (p, h, w)).collect()
    }

    /// An open gate whose lane of host "a" is held, with a hold of `urls` taken first.
    fn held(gate: &LaneGate, urls: u32) -> LaneHold<'_> {
        gate.open();
        let hold = gate.hold(P, "a", urls, RATE);
        assert_eq!(wants(gate), vec![(P, "a".to_owned(), true)]);
        gate.granted(P, "a", 1, true, false);
        hold
    }

    #[test]
    fn a_chunk_down_to_its_last_urls_on_one_host_counts_as_finishing() {
        let gate = LaneGate::default();
        let quota = starling_protocol::engine::finishing_quota(RATE);
        let a = held(&gate, 1);
        let chunk = gate.chunk();
        let on_a = chunk.hold(P, "a", quota + 1, RATE);
        let on_b = chunk.hold(P, "b", 1, RATE);
        gate.granted(P, "b", 1, true, false);
        assert_eq!(gate.blocked(), (0, 0));
        on_a.done_one();
        assert_eq!(gate.blocked(), (0, 0), "a URL on another host is left");
        on_b.done_one();
        assert_eq!(gate.blocked(), (0, 1), "the last {quota} URLs, all on host a");
        for _ in 0..quota {
            on_a.done_one();
        }
        assert_eq!(gate.blocked(), (0, 0), "nothing left");
        drop((on_a, on_b));
        // A chunk forgotten while finishing stops counting.
        let next = gate.chunk();
        let _last = next.hold(P, "a", 2, RATE);
        assert_eq!(gate.blocked(), (0, 1));
        drop(next);
        assert_eq!(gate.blocked(), (0, 0));
        drop(a);
    }

    #[tokio::test]
    async fn a_closed_gate_gates_nothing() {
        let gate = LaneGate::default();
        let _hold = gate.hold(P, "a", 3, RATE);
        assert_eq!(gate.turn(P, "a").await, Turn::Go);
        assert_eq!(wants(&gate), vec![]);
    }

    #[tokio::test]
    async fn demand_is_reported_once_per_change_and_a_turn_waits_for_the_grant() {
        let gate = std::sync::Arc::new(LaneGate::default());
        gate.open();
        let h1 = gate.hold(P, "a", 10, RATE);
        let h2 = gate.hold(P, "a", 10, RATE);
        assert_eq!(wants(&gate), vec![(P, "a".to_owned(), true)]);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.turn(P, "a").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no lane, no request");
        assert!(gate.granted(P, "a", 1, true, false), "a lane granted while wanted is kept");
        let turn = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap();
        assert_eq!(
            turn,
            Turn::Fresh,
            "the first request under a new lane starts the limiter empty"
        );
        assert_eq!(gate.turn(P, "a").await, Turn::Go);
        drop(h1);
        assert_eq!(wants(&gate), vec![], "still wanted by the other hold");
        drop(h2);
        assert_eq!(wants(&gate), vec![(P, "a".to_owned(), false)]);
        assert!(!gate.granted(P, "a", 2, true, false), "a lane nothing wants is given back");
    }

    #[tokio::test]
    async fn a_lane_granted_ahead_of_its_chunks_tasks_is_held_when_they_come() {
        let gate = LaneGate::default();
        gate.open();
        // Granted for a chunk whose tasks have not started: kept, with nothing asked yet.
        assert!(gate.granted(P, "a", 1, false, true), "kept for the chunk's tasks");
        assert_eq!(gate.views(1)[0].state, "held");
        assert_eq!(wants(&gate), vec![], "the slot outlives a look with no demand");
        let hold = gate.hold(P, "a", 10, RATE);
        assert_eq!(wants(&gate), vec![(P, "a".to_owned(), true)], "told when tasks come");
        let turn = tokio::time::timeout(Duration::from_millis(500), gate.turn(P, "a")).await;
        assert_eq!(turn.ok(), Some(Turn::Go), "no wait: the lane is held already");
        drop(hold);
        assert_eq!(wants(&gate), vec![(P, "a".to_owned(), false)]);
        // Not wanted ahead and no task: given back, as before.
        assert!(!gate.granted(P, "b", 1, false, false));
    }

    #[tokio::test]
    async fn the_last_urls_give_the_lane_back_early_and_go_on_for_the_drain() {
        let gate = LaneGate::default();
        let hold = held(&gate, 6);
        hold.done_one();
        hold.done_one();
        assert_eq!(wants(&gate), vec![], "4 left: more than fit in the drain");
        hold.done_one();
        // 3 left, all of which fit in the drain at 4/s: given back early, stating the time
        // they take at that rate (750 ms, and the slack).
        let w = gate.take_changes().0;
        let [(_, _, false, drain)] = w[..] else { panic!("{w:?}") };
        assert!((790..=801).contains(&drain), "drain {drain} ms");
        gate.revoked(P, "a");
        assert_eq!(gate.views(1)[0].state, "draining");
        // Within the drain, requests go on without the lane.
        let turn = tokio::time::timeout(Duration::from_millis(500), gate.turn(P, "a")).await;
        assert_eq!(turn.ok(), Some(Turn::Go));
        // Past it, back in line and wanted again for the URLs still left.
        tokio::time::sleep(Duration::from_millis(drain)).await;
        let late = tokio::time::timeout(Duration::from_millis(200), gate.turn(P, "a")).await;
        assert!(late.is_err(), "no request after the drain without the lane");
        assert_eq!(wants(&gate), vec![(P, "a".to_owned(), true)]);
    }

    #[tokio::test]
    async fn a_lane_given_back_early_is_wanted_again_when_the_hosts_next_chunk_comes() {
        let gate = LaneGate::default();
        let hold = held(&gate, 4);
        assert_eq!(gate.turn(P, "a").await, Turn::Fresh);
        hold.done_one();
        let w = gate.take_changes().0;
        let [(_, _, false, _)] = w[..] else { panic!("given back early: {w:?}") };
        gate.revoked(P, "a");
        // The next chunk of the host starts here while the last three URLs drain: more than
        // the drain sends, so the lane is wanted again at once, not after the drain.
        let next = gate.hold(P, "a", 10, RATE);
        assert_eq!(wants(&gate), vec![(P, "a".to_owned(), true)]);
        assert_eq!(gate.turn(P, "a").await, Turn::Go, "still draining meanwhile");
        // Granted again after this node's own release: its limiter already spaced its
        // requests, so it does not start empty.
        assert!(gate.granted(P, "a", 2, false, false));
        assert_eq!(gate.turn(P, "a").await, Turn::Go);
        drop(next);
    }

    #[tokio::test]
    async fn a_give_back_the_engine_was_not_told_of_yet_is_told_before_the_lane_is_wanted_again() {
        let gate = LaneGate::default();
        let hold = held(&gate, 4);
        hold.done_one();
        // Given back early (3 left), and before the actor takes the change the host's next
        // chunk comes: the engine, which still holds the lane, hears of the give-back first,
        // then that the lane is wanted again, so it releases and claims anew.
        let _next = gate.hold(P, "a", 10, RATE);
        let w = gate.take_changes().0;
        let [(_, _, false, drain), (_, _, true, 0)] = w[..] else { panic!("{w:?}") };
        assert!((790..=801).contains(&drain), "drain {drain} ms");
        // Told both, the engine's grant puts the lane back in use.
        gate.revoked(P, "a");
        assert!(gate.granted(P, "a", 2, false, false));
        assert_eq!(gate.turn(P, "a").await, Turn::Go);
        assert_eq!(gate.take_changes().0, vec![]);
    }

    #[tokio::test]
    async fn a_lane_given_back_with_few_urls_left_states_only_the_time_they_take() {
        let gate = LaneGate::default();
        let hold = held(&gate, 3);
        hold.done_one();
        // 2 left at 4/s: 500 ms and the 50 ms slack, not the whole second.
        let w = gate.take_changes().0;
        let [(_, _, false, drain)] = w[..] else { panic!("{w:?}") };
        assert!((540..=551).contains(&drain), "drain {drain} ms");
    }

    #[tokio::test]
    async fn a_lane_with_nothing_left_stops_at_once_and_states_no_drain() {
        let gate = LaneGate::default();
        let hold = held(&gate, 1);
        assert_eq!(gate.turn(P, "a").await, Turn::Fresh);
        // Its one URL sent, but the hold (a task) still alive and a new one coming: once the
        // change is taken for the engine's release, nothing more goes out under the lane.
        hold.done_one();
        let _next = gate.hold(P, "a", 0, RATE);
        assert_eq!(gate.take_changes().0, vec![(P, "a".to_owned(), false, 0)]);
        assert!(!gate.may_send(P, "a"), "released with no drain: nothing more is sent");
    }

    #[tokio::test]
    async fn a_cooldown_holds_a_granted_lane_and_a_refusal_is_reported() {
        let gate = LaneGate::default();
        gate.open();
        let _hold = gate.hold(P, "a", 10, RATE);
        gate.granted(P, "a", 1, true, false);
        gate.refused(P, "a", now_ms() + 300);
        let (_, refusals) = gate.take_changes();
        assert_eq!(refusals.len(), 1);
        let early = tokio::time::timeout(Duration::from_millis(100), gate.turn(P, "a")).await;
        assert!(early.is_err(), "no request inside the cooldown");
        tokio::time::timeout(Duration::from_secs(10), gate.turn(P, "a")).await.unwrap();
        let _b = gate.hold(P, "b", 1, RATE);
        gate.ungated(P, "b");
        assert_eq!(gate.turn(P, "b").await, Turn::Go);
        assert_eq!(gate.views(10).len(), 2);
    }
}
