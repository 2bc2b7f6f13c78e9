//! The node's side of host lanes (the engine's side is `starling_protocol`'s `lanes.rs`).
//!
//! Under a project's mesh-wide rate a crawl task sends a host nothing unless this node holds
//! one of the host's lanes. The gate is where the crawl tasks and the actor meet:
//!
//! - a task that has URLs for a host takes a [`LaneHold`] for it (demand, counted), and waits
//!   its [`LaneGate::turn`] before every request to it;
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
use std::time::Duration;

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

/// What a task waiting its turn waits for.
enum Wait {
    /// The first request under a new lane: one period of the lane's rate.
    Pacing,
    /// News (a grant, a cooldown), or this long at most.
    News(Duration),
}

/// What the engine decided about one host's lane here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Asked for; not held (yet).
    Waiting,
    /// Held; `fresh` until the first request under it has waited its pacing.
    Held { epoch: u32, fresh: bool },
    /// The host has no lanes: fetched under the node's own limiter.
    Ungated,
}

#[derive(Debug)]
struct Slot {
    /// Tasks that have URLs for the host.
    demand: u32,
    grant: Grant,
    /// Nothing is sent before this (unix ms).
    cooldown_until: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    open: bool,
    slots: BTreeMap<Key, Slot>,
    /// Hosts whose demand changed since the actor last looked.
    dirty: BTreeSet<Key>,
    refusals: Vec<(Key, u64)>,
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

/// Demand for one host's lane while it lives.
#[derive(Debug)]
pub struct LaneHold<'a> {
    gate: &'a LaneGate,
    key: Option<Key>,
}

impl Drop for LaneHold<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.gate.release(key);
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

    /// Takes demand for `host` of `project`: the lane is wanted while any hold lives.
    pub fn hold(&self, project: ProjectId, host: &str) -> LaneHold<'_> {
        let mut inner = self.lock();
        if !inner.open {
            return LaneHold { gate: self, key: None };
        }
        let key = (project, host.to_owned());
        if !inner.slots.contains_key(&key) && inner.slots.len() >= GATE_HOSTS_MAX {
            return LaneHold { gate: self, key: None };
        }
        let slot = inner.slots.entry(key.clone()).or_insert(Slot {
            demand: 0,
            grant: Grant::Waiting,
            cooldown_until: None,
        });
        slot.demand += 1;
        if slot.demand == 1 {
            inner.dirty.insert(key.clone());
            drop(inner);
            self.changed.notify_one();
        }
        LaneHold { gate: self, key: Some(key) }
    }

    fn release(&self, key: Key) {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(&key) else { return };
        slot.demand = slot.demand.saturating_sub(1);
        if slot.demand == 0 {
            inner.dirty.insert(key);
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// Waits until this node may send `host` of `project` a request: it holds a lane of the
    /// host (or the host is not gated) and no cooldown is in force. The first request under a
    /// newly granted lane waits `pacing` (one period of the lane's rate) first, so the hand-off
    /// from the last holder never bunches requests up. The caller holds a [`LaneHold`].
    pub async fn turn(&self, project: ProjectId, host: &str, pacing: Duration) {
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
                match inner.slots.get_mut(&key) {
                    _ if !open => return,
                    None => return,
                    Some(slot) => match (slot.grant, slot.cooldown_until.filter(|t| *t > now)) {
                        (_, Some(until)) => {
                            Wait::News(Duration::from_millis(until - now).min(RECHECK))
                        }
                        (Grant::Ungated | Grant::Held { fresh: false, .. }, None) => return,
                        (Grant::Held { epoch, fresh: true }, None) => {
                            slot.grant = Grant::Held { epoch, fresh: false };
                            Wait::Pacing
                        }
                        (Grant::Waiting, None) => Wait::News(RECHECK),
                    },
                }
            };
            match wait {
                Wait::Pacing => tokio::time::sleep(pacing).await,
                Wait::News(wait) => {
                    tokio::select! {
                        () = &mut news => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
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
    pub fn take_changes(&self) -> (Vec<(ProjectId, String, bool)>, Vec<(ProjectId, String, u64)>) {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        let wants = dirty
            .into_iter()
            .map(|key| {
                let wanted = inner.slots.get(&key).is_some_and(|s| s.demand > 0);
                (key.0, key.1, wanted)
            })
            .collect();
        let refusals = std::mem::take(&mut inner.refusals)
            .into_iter()
            .map(|((p, h), until)| (p, h, until))
            .collect();
        let now = now_ms();
        inner.slots.retain(|_, s| {
            s.demand > 0
                || matches!(s.grant, Grant::Held { .. })
                || s.cooldown_until.is_some_and(|t| t > now)
        });
        (wants, refusals)
    }

    /// The engine holds (and has started) lane `epoch` of `host`. Returns whether any task
    /// wants it: a lane resumed after a restart that nothing here wants is given back.
    pub fn granted(&self, project: ProjectId, host: &str, epoch: u32) -> bool {
        let wanted =
            self.lock().slots.get(&(project, host.to_owned())).is_some_and(|s| s.demand > 0);
        self.set(project, host, Grant::Held { epoch, fresh: true });
        wanted
    }

    /// The engine no longer holds the lane (lost it, or gave it back).
    pub fn revoked(&self, project: ProjectId, host: &str) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(&(project, host.to_owned()))
            && slot.grant != Grant::Ungated
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
        let slot = inner.slots.entry(key).or_insert(Slot {
            demand: 0,
            grant: Grant::Waiting,
            cooldown_until: None,
        });
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

    #[tokio::test]
    async fn a_closed_gate_gates_nothing() {
        let gate = LaneGate::default();
        let _hold = gate.hold(P, "a");
        gate.turn(P, "a", Duration::ZERO).await;
        assert_eq!(gate.take_changes().0, vec![]);
    }

    #[tokio::test]
    async fn demand_is_reported_once_per_change_and_a_turn_waits_for_the_grant() {
        let gate = std::sync::Arc::new(LaneGate::default());
        gate.open();
        let h1 = gate.hold(P, "a");
        let h2 = gate.hold(P, "a");
        assert_eq!(gate.take_changes().0, vec![(P, "a".to_owned(), true)]);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.turn(P, "a", Duration::from_millis(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no lane, no request");
        gate.granted(P, "a", 1);
        tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap();
        drop(h1);
        assert_eq!(gate.take_changes().0, vec![], "still wanted by the other hold");
        drop(h2);
        assert_eq!(gate.take_changes().0, vec![(P, "a".to_owned(), false)]);
    }

    #[tokio::test]
    async fn a_cooldown_holds_a_granted_lane_and_a_refusal_is_reported() {
        let gate = LaneGate::default();
        gate.open();
        let _hold = gate.hold(P, "a");
        gate.granted(P, "a", 1);
        gate.refused(P, "a", now_ms() + 300);
        let (_, refusals) = gate.take_changes();
        assert_eq!(refusals.len(), 1);
        let start = std::time::Instant::now();
        gate.turn(P, "a", Duration::ZERO).await;
        assert!(start.elapsed() >= Duration::from_millis(250), "waited out the cooldown");
        gate.ungated(P, "b");
        let _b = gate.hold(P, "b");
        gate.ungated(P, "b");
        gate.turn(P, "b", Duration::ZERO).await;
        assert_eq!(gate.views(10).len(), 2);
    }
}
