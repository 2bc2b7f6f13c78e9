//! Applying incoming envelopes: validation, the claim rule, and what each accepted message
//! changes. Every path either applies the message or returns the [`Reject`] reason.

use std::sync::Arc;

use crate::hrw;
use crate::ids::{ItemId, NodeId};
use crate::item::{ItemBatch, WorkItem};
use crate::manifest::ProjectManifest;
use crate::message::{Claim, Envelope, Failure, Presence, Receipt, RelayRequest, Release};
use crate::signed::{Signable, Signed, VerifyError};

use super::fence::{self, ResultKey, Verdict, claim_key};
use super::{
    CancelReason, EARLY_MAX, EPOCH_JUMP_MAX, Engine, FENCE_SKEW_MS, ItemEntry, Local, Output, Peer,
    Phase, ProjectEntry, RELAY_REQUESTS_MAX, RESULT_SETTLE_MS, Reject, WorkRef, relay_project,
};

/// The checked body of an envelope. Shared by every clone of the envelope, so a message that
/// reaches many engines in one process is verified and decoded once.
pub(super) fn verified<T: Signable>(s: &Signed<T>) -> Result<Arc<T>, Reject> {
    s.verified().map_err(|e| match e {
        VerifyError::BadSignature => Reject::BadSignature,
        _ => Reject::Malformed,
    })
}

fn claim_lease_until(claim: &Signed<Claim>) -> u64 {
    claim.verified().map_or(0, |c| c.lease_until_ms)
}

/// The checked receipt and its embedded claim (both decoded once and kept with the envelope).
pub(super) fn receipt_parts(receipt: &Signed<Receipt>) -> Option<(&Receipt, &Claim)> {
    let r = receipt.verified_ref().ok()?;
    let c = r.claim.verified_ref().ok()?;
    Some((r, c))
}

/// The [`ResultKey`] of an accepted receipt for `item`.
fn stored_result_key(item: &ItemId, receipt: &Signed<Receipt>) -> Option<ResultKey> {
    let (r, c) = receipt_parts(receipt)?;
    let node = receipt.signer().node_id();
    Some(ResultKey {
        epoch: c.epoch,
        since_ms: c.since_ms,
        score: hrw::score(item, &node),
        node,
        lease_until_ms: c.lease_until_ms,
        done_at_ms: r.at_ms,
    })
}

impl Engine {
    pub(super) fn apply_envelope(
        &mut self,
        env: Envelope,
        now: u64,
        published: bool,
    ) -> Result<(), Reject> {
        let republish = published.then(|| env.clone());
        let keep = matches!(env, Envelope::Receipt(_)).then(|| env.clone());
        self.early_until = None;
        let result = match env {
            Envelope::Manifest(s) => self.apply_manifest(s, now),
            Envelope::Batch(s) => self.apply_batch(s, now),
            Envelope::Presence(s) => self.apply_presence(s, now),
            Envelope::Claim(s) => self.apply_claim(s, now),
            Envelope::Release(s) => self.apply_release(s, now),
            Envelope::Receipt(s) => self.apply_receipt(s, now),
            Envelope::Failure(s) => self.apply_failure(s, now),
            Envelope::RelayRequest(s) => self.apply_relay_request(s, now),
        };
        if result.is_ok() {
            self.stats.accepted += 1;
            if let Some(env) = republish {
                self.outputs.push_back(Output::Publish(env));
            }
        }
        if let (Err(Reject::EpochRuleBroken | Reject::Settling), Some(at), Some(env)) =
            (result, self.early_until.take(), keep)
        {
            self.hold_back(env, at);
        }
        result
    }

    /// Keeps a receipt whose claim came before the lease it follows ran out, in this node's
    /// view, to take in again when it has (`at`). It is still rejected now (and costs its
    /// sender as an early claim does), but the view may be this node's alone: a holder can
    /// show a renewal to some nodes (by sync) and not others, and then the next epoch's claim
    /// and result are valid everywhere else. Dropped, the result left this node taking the
    /// item for open once the lease it knew of ran out, and working it again. Taken in later,
    /// it is judged as if it had arrived then. Bare claims are not kept: a liar's early claim
    /// taken in later would outrank the honest claims made once the lease ran out. Bounded;
    /// the latest to fall due go first.
    fn hold_back(&mut self, env: Envelope, at: u64) {
        if self.early.len() >= EARLY_MAX {
            self.early.pop_last();
        }
        self.early_seq += 1;
        self.early.insert((at, self.early_seq), env);
    }

    fn park(&mut self, env: Envelope) {
        if self.pending.len() >= self.cfg.pending_max {
            self.pending.pop_front();
        }
        self.pending.push_back(env);
    }

    fn replay_pending(&mut self, now: u64) {
        let parked: Vec<Envelope> = self.pending.drain(..).collect();
        for env in parked {
            // Whatever still cannot apply is parked again by the same path.
            let _ = self.apply_envelope(env, now, false);
        }
    }

    fn check_time(&self, at_ms: u64, now: u64) -> Result<(), Reject> {
        if at_ms > now.saturating_add(self.cfg.skew_margin_ms) {
            Err(Reject::FromTheFuture)
        } else {
            Ok(())
        }
    }

    fn apply_manifest(&mut self, s: Signed<ProjectManifest>, now: u64) -> Result<(), Reject> {
        let m = verified(&s)?;
        if m.owner != s.signer() {
            return Err(Reject::Malformed);
        }
        if !self.trusted.contains(&m.owner) {
            return Err(Reject::UntrustedProject);
        }
        let id = m.id();
        if let Some(old) = self.projects.get(&id) {
            // Equal versions with different bodies: the greater body hash wins, on every node.
            let old_key = (old.m.version, blake3::hash(old.manifest.body()));
            let new_key = (m.version, blake3::hash(s.body()));
            if new_key == old_key {
                return Err(Reject::Duplicate);
            }
            if new_key.0 < old_key.0
                || (new_key.0 == old_key.0 && new_key.1.as_bytes() < old_key.1.as_bytes())
            {
                return Err(Reject::Stale);
            }
        } else if self.projects.len() >= self.cfg.projects_max
            || self.projects.values().filter(|p| p.m.owner == m.owner).count()
                >= self.cfg.projects_per_owner_max
        {
            return Err(Reject::Full);
        }
        self.outputs.push_back(Output::Persist(Envelope::Manifest(s.clone())));
        let batches = self.projects.remove(&id).map(|p| p.batches).unwrap_or_default();
        self.projects.insert(id, ProjectEntry { manifest: s, m, batches });
        self.replay_pending(now);
        Ok(())
    }

    fn apply_batch(&mut self, s: Signed<ItemBatch>, now: u64) -> Result<(), Reject> {
        let b = verified(&s)?;
        let Some(project) = self.projects.get(&b.project) else {
            self.park(Envelope::Batch(s));
            return Err(Reject::UnknownProject);
        };
        if project.m.owner != s.signer() {
            return Err(Reject::UntrustedProject);
        }
        let key = (b.seq, *blake3::hash(s.body()).as_bytes());
        if project.batches.contains_key(&key) {
            return Err(Reject::Duplicate);
        }
        let ids: Vec<ItemId> = b.items.iter().map(|w| w.id(&b.project)).collect();
        let new = ids.iter().filter(|id| !self.items.contains_key(id)).count();
        if self.items.len() + new > self.cfg.items_max {
            return Err(Reject::Full);
        }
        self.outputs.push_back(Output::Persist(Envelope::Batch(s.clone())));
        if let Some(p) = self.projects.get_mut(&b.project) {
            p.batches.insert(key, s);
        }
        // Items point into the decoded batch rather than holding a copy each.
        for (i, id) in ids.into_iter().enumerate() {
            self.insert_item(id, b.project, WorkRef::InBatch(Arc::clone(&b), i as u32), now);
        }
        self.replay_pending(now);
        Ok(())
    }

    pub(super) fn insert_item(
        &mut self,
        id: ItemId,
        project: crate::ids::ProjectId,
        work: WorkRef,
        now: u64,
    ) {
        if self.items.contains_key(&id) || self.items.len() >= self.cfg.items_max {
            return;
        }
        self.items.insert(
            id,
            ItemEntry {
                project,
                work,
                phase: Phase::Open { epoch: 0, proof: None },
                since: now,
                wake_at: None,
                fails: Default::default(),
                rank: None,
                digest: [0; 8],
                past: super::fence::Past::default(),
            },
        );
        self.schedule(id, now);
    }

    fn apply_presence(&mut self, s: Signed<Presence>, now: u64) -> Result<(), Reject> {
        let p = verified(&s)?;
        let node = s.signer().node_id();
        if node == self.me {
            return Err(Reject::Duplicate);
        }
        // Heard before the time is checked: a node whose own clock is far off finds every
        // heartbeat from the future or stale, and must still learn that it is the one off.
        self.note_clock(node, p.seq, p.at_ms, now);
        self.check_time(p.at_ms, now)?;
        let expires_at = now.saturating_add(self.cfg.presence_ttl_ms);
        if let Some(old) = self.peers.get_mut(&node) {
            if old.seq >= p.seq {
                return Err(Reject::Duplicate);
            }
            let old_expiry = old.expires_at;
            if old.projects == p.projects && old.roles == p.roles {
                // Most heartbeats change nothing but the lease on life: updated in place, with
                // the indexes (and the ranks cached against them) left as they are.
                (old.seq, old.expires_at, old.free, old.capacity) =
                    (p.seq, expires_at, p.free, p.capacity);
                old.presence = s;
                self.peer_expiry.remove(&(old_expiry, node));
                self.peer_expiry.insert((expires_at, node));
                return Ok(());
            }
            self.peer_expiry.remove(&(old_expiry, node));
            self.forget_peer(&node);
            self.index_peer(node, p.roles, &p.projects);
        } else {
            if self.peers.len() >= self.cfg.peers_max {
                // Make room by dropping the peer closest to expiry.
                match self.peer_expiry.pop_first() {
                    Some((_, evicted)) => self.forget_peer(&evicted),
                    None => return Err(Reject::Full),
                }
            }
            self.index_peer(node, p.roles, &p.projects);
        }
        self.peer_expiry.insert((expires_at, node));
        self.peers.insert(
            node,
            Peer {
                seq: p.seq,
                projects: p.projects.clone(),
                expires_at,
                roles: p.roles,
                free: p.free,
                capacity: p.capacity,
                presence: s,
            },
        );
        Ok(())
    }

    fn apply_claim(&mut self, s: Signed<Claim>, now: u64) -> Result<(), Reject> {
        let c = verified(&s)?;
        let node = s.signer().node_id();
        self.check_time(c.at_ms, now)?;
        let Some(entry) = self.items.get(&c.item) else {
            self.park(Envelope::Claim(s));
            return Err(Reject::UnknownItem);
        };
        let lease_ms = self.lease_ms(&entry.project);
        if c.lease_until_ms - c.at_ms > lease_ms.saturating_add(self.cfg.skew_margin_ms) {
            return Err(Reject::LeaseTooLong);
        }
        let score = hrw::score(&c.item, &node);
        // What ended the epoch before the claim's: kept with it, for peers that missed it.
        let prior = match &entry.phase {
            Phase::Open { epoch, proof } if c.epoch > *epoch => proof.clone(),
            Phase::Held { epoch, claim, .. } if c.epoch > *epoch => {
                Some(Envelope::Claim(claim.clone()))
            }
            Phase::Held { prior, .. } => prior.clone(),
            _ => None,
        };
        let at_ended_epoch = match &entry.phase {
            Phase::Open { epoch, .. } => c.epoch == *epoch && *epoch > 0,
            // Another claim of the finished epoch: evidence against its result if it outranks.
            Phase::Done { receipt } => {
                c.epoch == entry.phase.epoch() && receipt.signer().node_id() != node
            }
            _ => false,
        };
        if c.epoch < entry.phase.epoch() || at_ended_epoch {
            // A claim of an earlier epoch is evidence of who held it, for judging results.
            self.note_past(&c.item, &Envelope::Claim(s), now);
            return Err(Reject::Stale);
        }
        // The evidence about earlier epochs shows this claim never held its epoch (its
        // claimant's own lease of the epoch before still ran when it began, say).
        if entry.past.fences(node, &c, score) {
            return Err(Reject::Fenced);
        }
        // What ended the epoch before the claim's, as evidence for later results.
        let ended = match &entry.phase {
            Phase::Held { epoch, claim, .. } if c.epoch > *epoch => {
                Some(Envelope::Claim(claim.clone()))
            }
            Phase::Open { epoch, proof: Some(proof) } if c.epoch > *epoch => Some(proof.clone()),
            _ => None,
        };
        if let Phase::Done { receipt } = &entry.phase
            && receipt_parts(receipt)
                .is_some_and(|(_, rc)| c.since_ms.saturating_add(FENCE_SKEW_MS) < rc.since_ms)
        {
            // A later epoch that began before the result's claim: evidence that the result's
            // claim was made after its epoch ended.
            self.note_past(&c.item, &Envelope::Claim(s), now);
            return Err(Reject::Stale);
        }
        let prev_holder = match &entry.phase {
            Phase::Done { .. } | Phase::Failed { .. } => return Err(Reject::Stale),
            Phase::Open { epoch, .. } => {
                if c.epoch <= *epoch {
                    return Err(Reject::Stale);
                }
                if c.epoch > epoch.saturating_add(EPOCH_JUMP_MAX) {
                    return Err(Reject::EpochRuleBroken);
                }
                None
            }
            Phase::Held { holder, epoch, score: held_score, lease_until, since, .. } => {
                let (holder, epoch, lease_until) = (*holder, *epoch, *lease_until);
                if c.epoch < epoch {
                    return Err(Reject::Stale);
                }
                if c.epoch == epoch && node == holder {
                    // A renewal keeps the start of its epoch: a holder that moves it would
                    // blur which of two claims of the epoch came first (see `fence.rs`).
                    if c.since_ms != *since {
                        return Err(Reject::Stale);
                    }
                    return self.extend_lease(c.item, c.lease_until_ms, s);
                }
                if c.epoch == epoch
                    && claim_key(c.epoch, c.since_ms, score, node)
                        < claim_key(epoch, *since, *held_score, holder)
                {
                    return Err(Reject::Lost);
                }
                if c.epoch > epoch {
                    if c.epoch > epoch.saturating_add(EPOCH_JUMP_MAX) {
                        return Err(Reject::EpochRuleBroken);
                    }
                    if now.saturating_add(self.cfg.skew_margin_ms) < lease_until {
                        // Early in this node's view: see `Engine::hold_back`.
                        self.early_until = Some(lease_until - self.cfg.skew_margin_ms);
                        return Err(Reject::EpochRuleBroken);
                    }
                }
                Some(holder)
            }
        };
        let (item, epoch, lease_until) = (c.item, c.epoch, c.lease_until_ms);
        if let Some(ended) = ended {
            self.note_past(&item, &ended, now);
        }
        self.outputs.push_back(Output::Persist(Envelope::Claim(s.clone())));
        if let Some(e) = self.items.get_mut(&item) {
            let held = Phase::Held {
                holder: node,
                epoch,
                score,
                since: c.since_ms,
                lease_until,
                ready: false,
                claim: s,
                prior,
            };
            let (change, project) = (e.set_phase(&item, held), e.project);
            self.fold_bucket(project, &item, change);
        }
        if prev_holder == Some(self.me) && node != self.me {
            self.drop_local(item, CancelReason::Lost);
        }
        self.unschedule(item);
        // Our own claim (fresh, or replayed on restore while its lease still runs): work it.
        if node == self.me && lease_until > now {
            let kind = self.items.get(&item).map(|e| e.work.kind());
            if let Some(kind) = kind {
                let local = Local {
                    epoch,
                    since: c.since_ms,
                    kind,
                    start_at: now.saturating_add(self.cfg.claim_settle_ms),
                    started: false,
                    renew_at: lease_until.saturating_sub(lease_ms * 2 / 3).max(now),
                };
                if let Some(old) = self.local.insert(item, local)
                    && old.started
                    && old.epoch != epoch
                {
                    self.outputs.push_back(Output::CancelWork {
                        item,
                        epoch: old.epoch,
                        reason: CancelReason::Lost,
                    });
                }
                self.schedule(item, now.saturating_add(self.cfg.claim_settle_ms));
            }
        } else {
            self.schedule(item, lease_until.saturating_add(self.cfg.skew_margin_ms));
        }
        Ok(())
    }

    fn extend_lease(
        &mut self,
        item: ItemId,
        lease_until_ms: u64,
        s: Signed<Claim>,
    ) -> Result<(), Reject> {
        let Some(e) = self.items.get_mut(&item) else { return Err(Reject::UnknownItem) };
        let Phase::Held { lease_until, claim, holder, .. } = &mut e.phase else {
            return Err(Reject::Stale);
        };
        if lease_until_ms <= *lease_until {
            return Err(Reject::Duplicate);
        }
        *lease_until = lease_until_ms;
        *claim = s.clone();
        let holder = *holder;
        self.outputs.push_back(Output::Persist(Envelope::Claim(s)));
        if holder != self.me {
            self.unschedule(item);
            self.schedule(item, lease_until_ms.saturating_add(self.cfg.skew_margin_ms));
        } else {
            let lease_ms = self.items.get(&item).map_or(0, |e| self.lease_ms(&e.project));
            let Some(l) = self.local.get_mut(&item) else { return Ok(()) };
            l.renew_at = lease_until_ms.saturating_sub(lease_ms * 2 / 3);
            let next = if l.started { l.renew_at } else { l.start_at.min(l.renew_at) };
            self.unschedule(item);
            self.schedule(item, next);
        }
        Ok(())
    }

    /// Applies the holder's claim embedded in a receipt or failure; a claim that is merely
    /// stale, lost or already known does not stop the outer message.
    fn apply_embedded_claim(
        &mut self,
        outer_signer: NodeId,
        claim: &Signed<Claim>,
        now: u64,
    ) -> Result<Arc<Claim>, Reject> {
        if claim.signer().node_id() != outer_signer {
            return Err(Reject::NotHolder);
        }
        let c = verified(claim)?;
        match self.apply_claim(claim.clone(), now) {
            Err(r) if r.penalize() || r == Reject::UnknownItem => Err(r),
            // Outranked by a claim of the same epoch known here: it never held the epoch.
            Err(Reject::Lost) => Err(Reject::Fenced),
            _ => Ok(c),
        }
    }

    fn apply_receipt(&mut self, s: Signed<Receipt>, now: u64) -> Result<(), Reject> {
        let r = verified(&s)?;
        let node = s.signer().node_id();
        // A result the evidence fences gives way before anything is judged against it.
        if let Ok(c) = r.claim.verified_ref() {
            self.withdraw_if_fenced(&c.item, now);
        }
        // Whether this node already knew the result's claim as the holder's.
        let known = r.claim.verified_ref().is_ok_and(|c| {
            self.items.get(&c.item).is_some_and(|e| {
                matches!(e.phase, Phase::Held { holder, epoch, .. } if holder == node && epoch == c.epoch)
            })
        });
        let c = match self.apply_embedded_claim(node, &r.claim, now) {
            Err(Reject::UnknownItem) => {
                self.park(Envelope::Receipt(s));
                return Err(Reject::UnknownItem);
            }
            other => other?,
        };
        let Some(e) = self.items.get(&c.item) else { return Err(Reject::UnknownItem) };
        let score = hrw::score(&c.item, &node);
        let ongoing = e.work.is_ongoing();
        let new_key = ResultKey {
            epoch: c.epoch,
            since_ms: c.since_ms,
            score,
            node,
            lease_until_ms: c.lease_until_ms,
            done_at_ms: r.at_ms,
        };
        if e.past.fences(node, &c, score) {
            return Err(Reject::Fenced);
        }
        // What the result replaced, when that was another result of an earlier epoch: evidence
        // of who held that epoch.
        let mut replaced = None;
        match &e.phase {
            Phase::Held { holder, epoch, ready, .. } if *holder == node && *epoch == c.epoch => {
                if ongoing {
                    if *ready {
                        return Err(Reject::Duplicate);
                    }
                    if let Some(e) = self.items.get_mut(&c.item)
                        && let Phase::Held { ready, .. } = &mut e.phase
                    {
                        *ready = true;
                        let (change, project) = (e.refresh_digest(&c.item), e.project);
                        self.fold_bucket(project, &c.item, change);
                    }
                    self.outputs.push_back(Output::Persist(Envelope::Receipt(s)));
                    return Ok(());
                }
            }
            Phase::Done { receipt } => {
                let Some(key) = stored_result_key(&c.item, receipt) else {
                    return Err(Reject::Stale);
                };
                if key.epoch == c.epoch && key.node == node {
                    return Err(Reject::Duplicate);
                }
                let next = e.past.began(new_key.epoch.min(key.epoch).saturating_add(1));
                match fence::judge(&new_key, &key, next) {
                    Verdict::Replaces => {}
                    Verdict::Stale => return Err(Reject::Stale),
                    Verdict::Fenced => return Err(Reject::Fenced),
                }
                if key.epoch < c.epoch {
                    replaced =
                        receipt.verified_ref().ok().map(|r| Envelope::Claim(r.claim.clone()));
                }
            }
            // A higher epoch is held, but the fencing rule may still favour this earlier result
            // (the higher claim came while this epoch's lease ran): take the result, so every
            // node ends with the one that nodes already done with the item keep.
            Phase::Held { holder, epoch, score: held_score, since, claim, .. }
                if *epoch > c.epoch =>
            {
                let held = ResultKey {
                    epoch: *epoch,
                    since_ms: *since,
                    score: *held_score,
                    node: *holder,
                    lease_until_ms: claim_lease_until(claim),
                    done_at_ms: u64::MAX,
                };
                let next = e.past.began(c.epoch.saturating_add(1));
                match fence::judge(&new_key, &held, next) {
                    Verdict::Replaces => {}
                    Verdict::Stale => return Err(Reject::Stale),
                    Verdict::Fenced => return Err(Reject::Fenced),
                }
            }
            // Held by another node at this epoch is settled by the embedded claim (`Lost`); an
            // epoch that was released or failed here, or a later one, leaves the result late.
            _ => return Err(Reject::Stale),
        }
        // Accepted as it stands; but a result under a claim first heard of with it, made moments ago: rival claims of
        // its epoch may still be on their way (an honest holder's claim went out when it
        // claimed, and it works for a while after), so it is judged once they had time.
        let settled_at = c.since_ms.saturating_add(RESULT_SETTLE_MS);
        if !known && node != self.me && now < settled_at {
            self.early_until = Some(settled_at);
            return Err(Reject::Settling);
        }
        let item = c.item;
        let project = e.project;
        let was_crawl = !ongoing;
        // This result replaces another one this node had taken as final, as happens on the
        // side that lost after a partition heals. The others there hold the loser too, and
        // learn better from this node at once by gossip rather than one sync at a time. Each
        // node passes a given result on at most once (results only ever replace worse ones),
        // and gossip drops the copies of one receipt after the first.
        if matches!(e.phase, Phase::Done { .. }) {
            self.outputs.push_back(Output::Publish(Envelope::Receipt(s.clone())));
        }
        self.outputs.push_back(Output::Persist(Envelope::Receipt(s.clone())));
        let mut superseded = None;
        if let Some(e) = self.items.get_mut(&item) {
            if let Some(replaced) = &replaced {
                e.past.note(replaced);
            }
            if let Phase::Done { receipt } = &e.phase {
                superseded = Some(receipt.clone());
            }
            let change = e.set_phase(&item, Phase::Done { receipt: s });
            self.fold_bucket(project, &item, change);
        }
        if let Some(old) = superseded {
            self.drop_seed_duties(item, project, &old);
        }
        self.unschedule(item);
        if node == self.me {
            self.local.remove(&item);
        } else {
            self.drop_local(item, CancelReason::Finished);
        }
        if was_crawl {
            self.derive_seed_duties(item, project, &r, now);
        }
        Ok(())
    }

    fn derive_seed_duties(
        &mut self,
        source: ItemId,
        project: crate::ids::ProjectId,
        r: &Receipt,
        now: u64,
    ) {
        let k = self.projects.get(&project).map_or(0, |p| p.m.replication);
        for replica in 0..k {
            let work = WorkItem::SeedDuty { source, result: r.result, size: r.size, replica };
            let id = work.id(&project);
            self.insert_item(id, project, WorkRef::Own(Arc::new(work)), now);
        }
    }

    /// Drops the seeding duties derived from `receipt` for `source` that are not done: its
    /// result was replaced or withdrawn, and copies of it are no use to anyone. Every node
    /// drops the same ones, so their digests stay equal; duties already done stay, as history.
    fn drop_seed_duties(
        &mut self,
        source: ItemId,
        project: crate::ids::ProjectId,
        receipt: &Signed<Receipt>,
    ) {
        let Some((r, _)) = receipt_parts(receipt) else { return };
        let k = self.projects.get(&project).map_or(0, |p| p.m.replication);
        for replica in 0..k {
            let work = WorkItem::SeedDuty { source, result: r.result, size: r.size, replica };
            let id = work.id(&project);
            if self.items.get(&id).is_none_or(|e| matches!(e.phase, Phase::Done { .. })) {
                continue;
            }
            self.drop_local(id, CancelReason::Replaced);
            self.unschedule(id);
            if let Some(old) = self.items.remove(&id) {
                self.fold_bucket(project, &id, old.in_bucket());
            }
            self.stats.duties_dropped += 1;
        }
    }

    fn apply_failure(&mut self, s: Signed<Failure>, now: u64) -> Result<(), Reject> {
        let f = verified(&s)?;
        let node = s.signer().node_id();
        let c = match self.apply_embedded_claim(node, &f.claim, now) {
            Err(Reject::UnknownItem) => {
                self.park(Envelope::Failure(s));
                return Err(Reject::UnknownItem);
            }
            other => other?,
        };
        let cap = usize::from(self.cfg.failures_max);
        let Some(e) = self.items.get_mut(&c.item) else { return Err(Reject::UnknownItem) };
        let held_here = matches!(&e.phase,
            Phase::Held { holder, epoch, .. } if *holder == node && *epoch == c.epoch);
        // A failure counts only from the node that held its epoch, as a result does: one whose
        // claim the evidence shows never held it cannot help fail the item.
        if !held_here && e.past.fences(node, &c, hrw::score(&c.item, &node)) {
            return Err(Reject::Fenced);
        }
        // Kept whatever the item's phase now: every node must read the item's fate from the
        // same failures, however late one of them arrives.
        let noted = e.fails.note(node, c.epoch, &f, &s, cap);
        let env = Envelope::Failure(s);
        if noted {
            let (change, project) = (e.refresh_digest(&c.item), e.project);
            self.fold_bucket(project, &c.item, change);
            self.outputs.push_back(Output::Persist(env.clone()));
        }
        if !held_here {
            let Some(e) = self.items.get(&c.item) else { return Err(Reject::UnknownItem) };
            let behind = c.epoch < e.phase.epoch();
            if behind {
                // A failure of an earlier epoch: evidence that its holder did not finish it.
                self.note_past(&c.item, &env, now);
            }
            if !noted {
                return Err(if behind { Reject::Stale } else { Reject::Duplicate });
            }
            self.fail_if_final(&c.item, &env, now);
            return Ok(());
        }
        let Some(e) = self.items.get_mut(&c.item) else { return Err(Reject::UnknownItem) };
        let phase = if e.fails.is_final() {
            Phase::Failed { epoch: c.epoch, proof: env }
        } else {
            Phase::Open { epoch: c.epoch, proof: Some(env) }
        };
        let change = e.set_phase(&c.item, phase);
        // Claimable again after a backoff that grows with the failures, on every node alike.
        e.since = now.saturating_add(e.fails.backoff_ms(self.cfg.widen_ms));
        let project = e.project;
        self.fold_bucket(project, &c.item, change);
        self.local.remove(&c.item);
        self.unschedule(c.item);
        self.schedule(c.item, now);
        Ok(())
    }

    /// Fails `item` for the mesh if the failures kept now make a quorum and it has no result:
    /// an open item is closed, a held one taken from its holder (this node's work on it is
    /// cancelled). `env` is the failure that completed the quorum, kept as the proof.
    fn fail_if_final(&mut self, item: &ItemId, env: &Envelope, now: u64) {
        let Some(e) = self.items.get_mut(item) else { return };
        if !e.fails.is_final() {
            return;
        }
        let epoch = match &e.phase {
            Phase::Open { epoch, .. } | Phase::Held { epoch, .. } => *epoch,
            Phase::Done { .. } | Phase::Failed { .. } => return,
        };
        let change = e.set_phase(item, Phase::Failed { epoch, proof: env.clone() });
        e.since = now;
        let project = e.project;
        self.fold_bucket(project, item, change);
        self.unschedule(*item);
        if let Some(l) = self.local.remove(item) {
            // Counted only for work that had started: a claim given up before its work began
            // cost nothing to yield.
            if l.started {
                self.stats.yielded += 1;
            }
            self.outputs.push_back(Output::CancelWork {
                item: *item,
                epoch: l.epoch,
                reason: CancelReason::Failed,
            });
        }
    }

    fn apply_release(&mut self, s: Signed<Release>, now: u64) -> Result<(), Reject> {
        let r = verified(&s)?;
        let node = s.signer().node_id();
        self.check_time(r.at_ms, now)?;
        let Some(e) = self.items.get_mut(&r.item) else {
            self.park(Envelope::Release(s));
            return Err(Reject::UnknownItem);
        };
        let mut ended = None;
        match &e.phase {
            Phase::Held { holder, epoch, claim, .. } if *epoch == r.epoch => {
                if *holder != node {
                    return Err(Reject::NotHolder);
                }
                ended = Some(Envelope::Claim(claim.clone()));
            }
            Phase::Held { epoch, .. }
                if r.epoch > *epoch && r.epoch <= epoch.saturating_add(EPOCH_JUMP_MAX) => {}
            Phase::Open { epoch, proof }
                if r.epoch >= *epoch && r.epoch <= epoch.saturating_add(EPOCH_JUMP_MAX) =>
            {
                if let Some(Envelope::Release(p)) = proof
                    && *p == s
                {
                    return Err(Reject::Duplicate);
                }
                if r.epoch == *epoch && *epoch > 0 {
                    return Err(Reject::Stale);
                }
            }
            phase => {
                // A release of an earlier epoch: evidence that its signer did not finish it.
                if r.epoch < phase.epoch() {
                    self.note_past(&r.item, &Envelope::Release(s), now);
                }
                return Err(Reject::Stale);
            }
        }
        let env = Envelope::Release(s);
        if let Some(claim) = &ended {
            e.past.note(claim);
            // With what ended it: the holder may claim the item again while that lease would
            // still have run (after a fault of its own cleared, say) without looking early.
            e.past.note(&env);
        }
        let change = e.set_phase(&r.item, Phase::Open { epoch: r.epoch, proof: Some(env.clone()) });
        e.since = now;
        let project = e.project;
        self.fold_bucket(project, &r.item, change);
        self.outputs.push_back(Output::Persist(env));
        if node != self.me {
            self.drop_local(r.item, CancelReason::Lost);
        } else {
            self.drop_local(r.item, CancelReason::Shutdown);
        }
        self.unschedule(r.item);
        self.schedule(r.item, now);
        Ok(())
    }

    /// Keeps evidence about an earlier epoch of `item` (see [`fence::Past`]).
    /// A finished item whose result the evidence now fences was finished under a claim that
    /// never held its epoch: the result is withdrawn and the item is open again at that epoch,
    /// so a claim of a later epoch takes it by the usual rule. Results that arrived while this
    /// node knew no better are thus undone alike on every node, once the evidence reaches it.
    fn note_past(&mut self, item: &ItemId, env: &Envelope, now: u64) {
        let Some(e) = self.items.get_mut(item) else { return };
        if e.past.note(env) {
            self.withdraw_if_fenced(item, now);
        }
    }

    /// Withdraws the result of finished `item` if the evidence kept fences it; see
    /// [`Engine::note_past`].
    pub(super) fn withdraw_if_fenced(&mut self, item: &ItemId, now: u64) -> bool {
        let Some(e) = self.items.get_mut(item) else { return false };
        let Phase::Done { receipt } = &e.phase else { return false };
        let Some((_, c)) = receipt_parts(receipt) else { return false };
        let holder = receipt.signer().node_id();
        if !e.past.fences(holder, c, hrw::score(item, &holder)) {
            return false;
        }
        let epoch = c.epoch;
        // The claim that outranks the result's, if that is what fenced it, is the epoch's
        // holder: the item goes back to it (its result, when it comes, is then taken in).
        let holder_claim = e.past.best_claim(epoch, holder);
        let withdrawn = receipt.clone();
        let change = e.set_phase(item, Phase::Open { epoch, proof: None });
        e.since = now;
        let project = e.project;
        self.fold_bucket(project, item, change);
        self.stats.withdrawn += 1;
        self.drop_seed_duties(*item, project, &withdrawn);
        self.unschedule(*item);
        self.schedule(*item, now);
        if let Some(claim) = holder_claim
            && let Some(e) = self.items.get_mut(item)
        {
            let change = e.set_phase(item, Phase::Open { epoch: epoch - 1, proof: None });
            self.fold_bucket(project, item, change);
            if self.apply_claim(claim, now).is_err()
                && let Some(e) = self.items.get_mut(item)
            {
                let change = e.set_phase(item, Phase::Open { epoch, proof: None });
                self.fold_bucket(project, item, change);
            }
        }
        true
    }

    fn apply_relay_request(&mut self, s: Signed<RelayRequest>, now: u64) -> Result<(), Reject> {
        let r = verified(&s)?;
        let node = s.signer().node_id();
        self.check_time(r.at_ms, now)?;
        let project = relay_project();
        if let Some(old) = self.relay_requests.get(&node) {
            let old_seq = verified(old)?.seq;
            if old_seq >= r.seq {
                return Err(if old == &s { Reject::Duplicate } else { Reject::Stale });
            }
            let old_id = WorkItem::RelaySlot { requester: node, seq: old_seq }.id(&project);
            self.drop_local(old_id, CancelReason::Replaced);
            self.unschedule(old_id);
            if let Some(old) = self.items.remove(&old_id) {
                self.fold_bucket(project, &old_id, old.in_bucket());
            }
        } else if self.relay_requests.len() >= RELAY_REQUESTS_MAX {
            return Err(Reject::Full);
        }
        self.outputs.push_back(Output::Persist(Envelope::RelayRequest(s.clone())));
        self.relay_requests.insert(node, s);
        let work = WorkItem::RelaySlot { requester: node, seq: r.seq };
        self.insert_item(work.id(&project), project, WorkRef::Own(Arc::new(work)), now);
        Ok(())
    }

    /// Stops local work on an item this node no longer holds.
    pub(super) fn drop_local(&mut self, item: ItemId, reason: CancelReason) {
        // Only started work is cancelled, and counted as yielded (unless shutting down).
        if let Some(l) = self.local.remove(&item)
            && l.started
        {
            self.outputs.push_back(Output::CancelWork { item, epoch: l.epoch, reason });
            if reason != CancelReason::Shutdown {
                self.stats.yielded += 1;
            }
        }
    }
}
