//! Storage proofs, the actor's side: the engine asks for the challenged chunk of a copy this
//! node holds a seeding duty for ([`Output::ProofDue`](starling_protocol::Output::ProofDue)),
//! the seed store cuts and checks the slice ([`crate::seed::proof`]) off the actor, and the
//! answer goes back to the engine as [`Input::StorageProof`].
//!
//! The cut runs on tokio's blocking pool because the first proof of a copy the node never
//! served may hash it whole into its outboard tree; at most [`PROOF_TASKS_MAX`] run at once
//! and the rest wait in a queue. A challenge for a duty whose copy is still being fetched is
//! parked until the fetch reports: the engine waits for the answer until its lease would run
//! out, so a fetch a little slower than the project's grace does not cost the duty.
//! Whatever this node cannot prove, the engine gives back; the actor logs it.

use std::collections::{HashMap, VecDeque};

use starling_protocol::proof::StorageProof;
use starling_protocol::{Input, ItemId, ItemState};
use tokio::sync::mpsc;

use super::Actor;
use crate::clock::now_ms;
use crate::seed::proof::{self, Answer, Challenge};

/// Proofs cut at once, off the actor.
pub const PROOF_TASKS_MAX: usize = 4;
/// Challenges waiting for a task or for their duty's fetch, together; past it a challenge is
/// answered with no proof (the engine gives the duty back) rather than queued.
pub const PROOF_QUEUE_MAX: usize = 4_096;

/// The actor's storage-proof state.
#[derive(Debug)]
pub(super) struct Proofs {
    /// Waiting for a task.
    queue: VecDeque<Challenge>,
    /// Waiting for their duty's fetch to report, by duty.
    parked: HashMap<ItemId, Challenge>,
    /// Tasks running.
    running: usize,
    tx: mpsc::Sender<(Challenge, Answer)>,
    /// Answers of the tasks; the actor's loop takes it.
    pub(super) answers: Option<mpsc::Receiver<(Challenge, Answer)>>,
    /// The engine's `unproven` count last logged.
    unproven_seen: u64,
}

impl Proofs {
    pub(super) fn new(unproven_seen: u64) -> Self {
        // Each task sends one answer, so a channel as large as the tasks never makes one wait.
        let (tx, rx) = mpsc::channel(PROOF_TASKS_MAX);
        Self {
            queue: VecDeque::new(),
            parked: HashMap::new(),
            running: 0,
            tx,
            answers: Some(rx),
            unproven_seen,
        }
    }

    fn waiting(&self) -> usize {
        self.queue.len() + self.parked.len()
    }
}

impl Actor {
    /// The engine asks for a proof of duty `c.item`'s copy: cut it off the actor, or park it
    /// until the duty's fetch reports. Called while the engine's outputs are drained: an
    /// answer given here at once leaves outputs for the caller to drive.
    pub(super) fn proof_due(&mut self, c: Challenge) {
        if self.seed.is_none() {
            // No blob store, no copies: nothing to show.
            self.answer_proof(c, None);
            return;
        }
        let engine = &self.engine;
        self.proofs.parked.retain(|item, _| engine.holds(item));
        self.proofs.queue.retain(|q| q.item != c.item);
        self.proofs.parked.remove(&c.item);
        if self.proofs.waiting() >= PROOF_QUEUE_MAX {
            tracing::warn!(item = %c.item.short(), "too many storage proofs waiting; giving the duty back");
            self.answer_proof(c, None);
            return;
        }
        let fetching =
            matches!(self.engine.item_state(&c.item), Some(ItemState::Held { ready: false, .. }));
        if fetching {
            tracing::debug!(item = %c.item.short(), "storage proof waits for the copy's fetch");
            self.proofs.parked.insert(c.item, c);
        } else {
            self.proofs.queue.push_back(c);
            self.start_proofs();
        }
    }

    /// A work report for `item` came: a proof parked for its fetch can be cut now.
    pub(super) fn proof_fetch_reported(&mut self, item: &ItemId) {
        if let Some(c) = self.proofs.parked.remove(item) {
            self.proofs.queue.push_back(c);
            self.start_proofs();
        }
    }

    /// Starts queued proofs while tasks are free.
    fn start_proofs(&mut self) {
        let Some(store) = self.seed.as_ref().map(|s| s.store.clone()) else { return };
        while self.proofs.running < PROOF_TASKS_MAX
            && let Some(c) = self.proofs.queue.pop_front()
        {
            self.proofs.running += 1;
            let (store, tx) = (store.clone(), self.proofs.tx.clone());
            tokio::task::spawn_blocking(move || {
                let answer = proof::answer(&store, &c);
                let _ = tx.blocking_send((c, answer));
            });
        }
    }

    /// A task's answer: logged, handed to the engine, and the next queued proof started.
    pub(super) fn on_proof(&mut self, c: Challenge, answer: Answer) {
        self.proofs.running = self.proofs.running.saturating_sub(1);
        let (item, digest) = (c.item.short(), c.result);
        match &answer {
            Answer::Proved(_) => tracing::debug!(%item, slot = c.slot, "storage proof cut"),
            Answer::Missing => tracing::info!(%item, %digest, "no copy stored to prove"),
            Answer::Damaged => tracing::warn!(
                %item,
                %digest,
                "stored copy does not match its digest; deleted it, and no proof is sent"
            ),
            Answer::Failed(e) => {
                tracing::warn!(%item, %digest, error = %e, "cannot read the copy to prove it")
            }
        }
        self.answer_proof(c, answer.into_proof());
        self.drive();
        self.start_proofs();
    }

    /// Hands the engine its answer; the caller drives the engine's outputs.
    fn answer_proof(&mut self, c: Challenge, proof: Option<StorageProof>) {
        let input = Input::StorageProof { item: c.item, epoch: c.epoch, slot: c.slot, proof };
        let _ = self.engine.handle(input, now_ms());
    }

    /// Logs duties the engine gave back for want of a copy since the last look (an answer
    /// without a proof, or none in time).
    pub(super) fn log_unproven(&mut self) {
        let now = self.engine.stats().unproven;
        if now > self.proofs.unproven_seen {
            tracing::warn!(
                duties = now - self.proofs.unproven_seen,
                total = now,
                "gave back seeding duties: no copy to prove (their results are left to other nodes until restart)"
            );
            self.proofs.unproven_seen = now;
        }
    }
}
