//! Applying incoming envelopes: validation, the claim rule, and what each accepted message
//! changes. Every path either applies the message or returns the [`Reject`] reason.

use std::sync::Arc;

use crate::hrw;
use crate::ids::{ItemId, NodeId};
use crate::item::{ItemBatch, WorkItem};
use crate::manifest::ProjectManifest;
use crate::message::{Claim, Envelope, Failure, Presence, Receipt, RelayRequest, Release};
use crate::signed::{Signable, Signed, VerifyError};

use super::fence::ResultKey;
use super::judge::{self, ClaimCase, ResultCase, ResultVerdict, Verdict};
use super::{
    CancelReason, Engine, ItemEntry, Local, Output, Phase, ProjectEntry, RELAY_REQUESTS_MAX,
    Reject, WorkRef, relay_project,
};

/// A message not applied: why, and for one to be judged again later (a receipt under a
/// claim early in this node's view, or one still settling), when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) reject: Reject,
    pub(super) retry_at: Option<u64>,
}

impl From<Reject> for Refusal {
    fn from(reject: Reject) -> Self {
        Refusal { reject, retry_at: None }
    }
}

/// The checked body of an envelope. Shared by every clone of the envelope, so a message that
/// reaches many engines in one process is verified and decoded once.
pub(super) fn verified<T: Signable>(s: &Signed<T>) -> Result<Arc<T>, Reject> {
    s.verified().map_err(|e| match e {
        VerifyError::BadSignature => Reject::BadSignature,
        _ => Reject::Malformed,
    })
}

/// The checked receipt and its embedded claim (both decoded once and kept with the envelope).
pub(super) fn receipt_parts(receipt: &Signed<Receipt>) -> Option<(&Receipt, &Claim)> {
    let r = receipt.verified_ref().ok()?;
    let c = r.claim.verified_ref().ok()?;
    Some((r, c))
}

/// The [`ResultKey`] of an accepted receipt for `item`.
pub(super) fn stored_result_key(item: &ItemId, receipt: &Signed<Receipt>) -> Option<ResultKey> {
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
        let result = match env {
            Envelope::Manifest(s) => self.apply_manifest(s, now),
            Envelope::Batch(s) => self.apply_batch(s, now, published),
            Envelope::Presence(s) => self.apply_presence(s, now),
            Envelope::Claim(s) => self.apply_claim(s, now),
            Envelope::Release(s) => self.apply_release(s, now),
            Envelope::Receipt(s) => match self.apply_receipt(s.clone(), now) {
                Err(Refusal { reject, retry_at: Some(at) }) => {
                    self.hold_back(Envelope::Receipt(s), at);
                    Err(reject)
                }
                other => other.map_err(|f| f.reject),
            },
            Envelope::Failure(s) => self.apply_failure(s, now),
            Envelope::RelayRequest(s) => self.apply_relay_request(s, now),
            Envelope::Directory(s) => self.apply_directory(s, now),
            Envelope::Progress(s) => self.apply_progress(s, now),
        };
        if result.is_ok() {
            self.stats.accepted += 1;
            if let Some(env) = republish {
                self.outputs.push_back(Output::Publish(env));
            }
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
        self.early.hold(env, at);
    }

    fn park(&mut self, env: Envelope) {
        if self.pending.len() >= self.cfg.pending_max {
            self.pending.pop_front();
        }
        self.pending.push_back(env);
    }

    pub(super) fn replay_pending(&mut self, now: u64) {
        let parked: Vec<Envelope> = self.pending.drain(..).collect();
        for env in parked {
            // Whatever still cannot apply is parked again by the same path.
            let _ = self.apply_envelope(env, now, false);
        }
    }

    pub(super) fn check_time(&self, at_ms: u64, now: u64) -> Result<(), Reject> {
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
        let id = m.id();
        // Trusted by the operator, or vouched for by a followed curator for this very owner.
        if !self.trusted.contains(&m.owner) && !self.curators.vouches(&id, &m.owner) {
            return Err(Reject::UntrustedProject);
        }
        if let Some(old) = self.projects.get(&id) {
            replaces(old.m.version, old.manifest.body(), m.version, s.body())?;
        } else if self.projects.len() >= self.cfg.projects_max
            || self.projects.values().filter(|p| p.m.owner == m.owner).count()
                >= self.cfg.projects_per_owner_max
        {
            return Err(Reject::Full);
        }
        self.outputs.push_back(Output::Persist(Envelope::Manifest(s.clone())));
        let old = self.projects.remove(&id);
        let depth_was = old.as_ref().map(|p| p.m.shard_depth);
        let bare_until = old.as_ref().map_or(0, |p| p.bare_until);
        let batches = old.map(|p| p.batches).unwrap_or_default();
        let depth = m.shard_depth;
        self.projects.insert(id, ProjectEntry { manifest: s, m, batches, bare_until });
        if depth_was.is_some_and(|d| d != depth) {
            self.reshard(id, depth_was.unwrap_or(0), now);
        }
        self.derive_lanes(id, now);
        self.replay_pending(now);
        Ok(())
    }

    /// Takes in a batch of work. Of a split project only the items of this node's shard are
    /// kept (with the batch, so a later depth can draw on it); a batch with none is refused
    /// as [`Reject::OtherShard`], or just passed on when this node publishes it.
    fn apply_batch(
        &mut self,
        s: Signed<ItemBatch>,
        now: u64,
        published: bool,
    ) -> Result<(), Reject> {
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
        let kept: Vec<bool> =
            ids.iter().zip(&b.items).map(|(id, w)| self.keeps(&b.project, id, w)).collect();
        if !kept.contains(&true) {
            return if published { Ok(()) } else { Err(Reject::OtherShard) };
        }
        let new =
            ids.iter().zip(&kept).filter(|(id, k)| **k && !self.items.contains_key(id)).count();
        if self.items.len() + new > self.cfg.items_max {
            return Err(Reject::Full);
        }
        self.outputs.push_back(Output::Persist(Envelope::Batch(s.clone())));
        if let Some(p) = self.projects.get_mut(&b.project) {
            p.batches.insert(key, s);
        }
        // Items point into the decoded batch rather than holding a copy each. Soon after a
        // merge, those new here wait as the merge's own do (see `reshard`): a batch a member
        // of one merged part hands over holds the other parts' items too, without their
        // states (`shards-shrink` at 300 nodes, seed 6, before this).
        let bare_until = self.projects.get(&b.project).map_or(0, |p| p.bare_until);
        for (i, id) in ids.into_iter().enumerate() {
            let new = !self.items.contains_key(&id);
            self.insert_item(id, b.project, WorkRef::InBatch(Arc::clone(&b), i as u32), now);
            if new
                && bare_until > now
                && let Some(e) = self.items.get_mut(&id)
            {
                e.since = e.since.max(bare_until);
            }
        }
        self.derive_lanes(b.project, now);
        self.replay_pending(now);
        Ok(())
    }

    /// Takes in a new shard depth of `project`: forgets the items that left this node's
    /// shard (but those it works on, which it finishes and reports) and the batches with none
    /// of its items left, and takes in the items that came into it from the batches it keeps.
    /// A shard that grew by merging learns its other half's batches and item states by sync.
    fn reshard(&mut self, project: crate::ids::ProjectId, depth_was: u8, now: u64) {
        let gone: Vec<ItemId> = self
            .items
            .iter()
            .filter(|(id, e)| {
                e.project == project
                    && !self.local.contains_key(*id)
                    && !self.keeps(&project, id, &e.work)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.forget_item(id);
        }
        let Some(p) = self.projects.get(&project) else { return };
        type Kept = ((u64, [u8; 32]), Arc<ItemBatch>);
        let batches: Vec<Kept> =
            p.batches.iter().filter_map(|(k, s)| Some((*k, verified(s).ok()?))).collect();
        // An item that came into the shard has a state this node never saw: the other half's
        // members hold it, and may not have heard of the merge yet (a node that does first
        // finds none of them on the new shard's topic to sync with). Taken in bare from its
        // batch it looks open at epoch 0, so a claim now could reuse an epoch those members
        // ended already, and refuse theirs of the next as early while its own lease runs:
        // both would run it. So it waits a full lease and the skew margin, as for an unknown
        // holder's lease to run out; meanwhile sync brings its state, and the holder's
        // renewals or the next epoch's claim reach this node once the holder follows the
        // merge (`shards-shrink` seed 20 before this).
        let lease = self.lease_ms(&project).saturating_add(self.cfg.skew_margin_ms);
        let since = now.saturating_add(self.cfg.warmup_ms.max(lease));
        let merged = self.shard_of(&project).is_none_or(|s| s.depth < depth_was);
        if merged && let Some(p) = self.projects.get_mut(&project) {
            p.bare_until = since;
        }
        for (key, b) in batches {
            let mut any = false;
            for (i, w) in b.items.iter().enumerate() {
                let id = w.id(&project);
                if !self.keeps(&project, &id, w) {
                    continue;
                }
                any = true;
                if self.items.contains_key(&id) {
                    continue;
                }
                self.insert_item(id, project, WorkRef::InBatch(Arc::clone(&b), i as u32), now);
                if let Some(e) = self.items.get_mut(&id) {
                    e.since = since;
                }
            }
            if !any && let Some(p) = self.projects.get_mut(&project) {
                p.batches.remove(&key);
            }
        }
        self.stats.reshards += 1;
    }

    /// Drops an item from this node's view altogether (one of another shard's, a duty or
    /// check no longer due): out of the agenda, out of its digest bucket while it still
    /// tells which bucket, and out of the hosts' held chunks once gone.
    pub(super) fn forget_item(&mut self, id: ItemId) {
        self.unschedule(id);
        if let Some((project, change)) = self.items.get(&id).map(|e| (e.project, e.in_bucket())) {
            self.fold_bucket(project, &id, change);
        }
        self.items.remove(&id);
        self.note_chunk_phase(&id);
    }

    pub(super) fn insert_item(
        &mut self,
        id: ItemId,
        project: crate::ids::ProjectId,
        work: WorkRef,
        now: u64,
    ) {
        if self.items.contains_key(&id)
            || self.items.len() >= self.cfg.items_max
            || !self.keeps(&project, &id, &work)
        {
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
        self.peers.heard(node, &p, s, expires_at, self.cfg.peers_max)
    }

    fn apply_claim(&mut self, s: Signed<Claim>, now: u64) -> Result<(), Reject> {
        self.take_claim(s, now).map_err(|f| f.reject)
    }

    /// Judges a claim by the claim rule ([`judge::judge`]) and carries out the verdict.
    fn take_claim(&mut self, s: Signed<Claim>, now: u64) -> Result<(), Refusal> {
        let c = verified(&s)?;
        let node = s.signer().node_id();
        self.check_time(c.at_ms, now)?;
        // A lane claimed inside a cooldown: the claimant may not know it.
        self.tell_cooldown_to(&c.item, node, now);
        let Some(entry) = self.items.get(&c.item) else {
            self.park(Envelope::Claim(s));
            return Err(Reject::UnknownItem.into());
        };
        if self.barred(entry, &node) {
            return Err(Reject::Barred.into());
        }
        self.check_proof(entry, &c)?;
        let score = hrw::score(&c.item, &node);
        let lane = Self::is_lane(entry);
        let case = ClaimCase {
            phase: &entry.phase,
            past: &entry.past,
            node,
            claim: &c,
            score,
            lease_ms: self.lease_of(entry),
            skew_margin_ms: self.cfg.skew_margin_ms,
            epoch_jump_max: Self::epoch_jump_max(entry),
            now,
            lane,
        };
        match judge::judge(&case) {
            Verdict::Takes { prev_holder } => {
                self.hold_item(s, &c, score, prev_holder, now);
                Ok(())
            }
            Verdict::Renews => Ok(self.extend_lease(c.item, c.lease_until_ms, s)?),
            Verdict::Evidence => {
                // A claim of an earlier epoch is evidence of who held it, for judging results.
                self.note_past(&c.item, &Envelope::Claim(s), now);
                Err(Reject::Stale.into())
            }
            // Early in this node's view: see `Engine::hold_back`. A lane's claim usually just
            // overtook the release it follows: kept until that comes (see `lanes.rs`).
            Verdict::Early { until } => {
                if lane {
                    self.keep_early_lane_claim(s);
                }
                Err(Refusal { reject: Reject::EpochRuleBroken, retry_at: Some(until) })
            }
            Verdict::Refused(r) => Err(r.into()),
        }
    }

    /// Carries out [`Verdict::Takes`]: the item is held under claim `s` (checked: `c`) from
    /// now on, taken from `prev_holder`.
    fn hold_item(
        &mut self,
        s: Signed<Claim>,
        c: &Claim,
        score: u64,
        prev_holder: Option<NodeId>,
        now: u64,
    ) {
        let (node, item) = (s.signer().node_id(), c.item);
        let Some(e) = self.items.get(&item) else { return };
        let prior = judge::prior_of(&e.phase, c.epoch);
        if let Some(ended) = judge::ended_by(&e.phase, c.epoch) {
            self.note_past(&item, &ended, now);
        }
        self.outputs.push_back(Output::Persist(Envelope::Claim(s.clone())));
        if let Some(e) = self.items.get_mut(&item) {
            let held = Phase::Held {
                holder: node,
                epoch: c.epoch,
                score,
                since: c.since_ms,
                lease_until: c.lease_until_ms,
                ready: None,
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
        if node == self.me && c.lease_until_ms > now {
            self.work_own_claim(c, now);
        } else {
            self.schedule(item, c.lease_until_ms.saturating_add(self.cfg.skew_margin_ms));
        }
    }

    /// Starts tracking this node's own claim `c` as local work (after the claim settles),
    /// cancelling work on an earlier epoch of the item.
    fn work_own_claim(&mut self, c: &Claim, now: u64) {
        let item = c.item;
        let Some(e) = self.items.get(&item) else { return };
        let (kind, lease_ms) = (e.work.kind(), self.lease_of(e));
        // A lane starts no sooner than its last holder's drain can have ended (`lanes.rs`).
        let settle = match kind {
            crate::item::WorkKind::Lane => {
                self.cfg.claim_settle_ms.max(self.lane_start_wait(e, c.epoch, now))
            }
            _ => self.cfg.claim_settle_ms,
        };
        let local = Local {
            epoch: c.epoch,
            since: c.since_ms,
            kind,
            start_at: now.saturating_add(settle),
            started: false,
            renew_at: c.lease_until_ms.saturating_sub(lease_ms * 2 / 3).max(now),
        };
        let old = self.local.insert(item, local);
        if let Some(old) = old
            && old.started
            && old.epoch != c.epoch
        {
            self.outputs.push_back(Output::CancelWork {
                item,
                epoch: old.epoch,
                reason: CancelReason::Lost,
            });
        }
        if kind == crate::item::WorkKind::Crawl && old.is_none_or(|o| o.epoch != c.epoch) {
            self.note_chunk_claimed(item, now);
        }
        self.schedule(item, now.saturating_add(settle));
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
            let lease_ms = self.items.get(&item).map_or(0, |e| self.lease_of(e));
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
    ) -> Result<Arc<Claim>, Refusal> {
        if claim.signer().node_id() != outer_signer {
            return Err(Reject::NotHolder.into());
        }
        let c = verified(claim)?;
        match self.take_claim(claim.clone(), now) {
            Err(f) if f.reject.penalize() || f.reject == Reject::UnknownItem => Err(f),
            // Outranked by a claim of the same epoch known here: it never held the epoch.
            Err(Refusal { reject: Reject::Lost, .. }) => Err(Reject::Fenced.into()),
            _ => Ok(c),
        }
    }

    /// Takes in a result: its embedded claim first, then the result rule
    /// ([`judge::judge_result`]), whose verdict is carried out.
    fn apply_receipt(&mut self, s: Signed<Receipt>, now: u64) -> Result<(), Refusal> {
        let r = verified(&s)?;
        let node = s.signer().node_id();
        // A result the evidence fences gives way before anything is judged against it.
        if let Ok(c) = r.claim.verified_ref() {
            self.withdraw_if_fenced(&c.item, now);
        }
        let known = self.knows_as_holder(node, &r.claim);
        let c = match self.apply_embedded_claim(node, &r.claim, now) {
            Err(Refusal { reject: Reject::UnknownItem, .. }) => {
                self.park(Envelope::Receipt(s));
                return Err(Reject::UnknownItem.into());
            }
            other => other?,
        };
        let Some(e) = self.items.get(&c.item) else { return Err(Reject::UnknownItem.into()) };
        let key = ResultKey {
            epoch: c.epoch,
            since_ms: c.since_ms,
            score: hrw::score(&c.item, &node),
            node,
            lease_until_ms: c.lease_until_ms,
            done_at_ms: r.at_ms,
        };
        let case = ResultCase {
            phase: &e.phase,
            past: &e.past,
            claim: &c,
            key,
            ongoing: e.work.is_ongoing(),
            known,
            mine: node == self.me,
            now,
        };
        match judge::judge_result(&case) {
            ResultVerdict::Accepts { replaced } => {
                self.finish_item(s, &r, &c, replaced, now);
                Ok(())
            }
            ResultVerdict::Ready => {
                self.mark_ready(s, &c.item);
                Ok(())
            }
            ResultVerdict::Settling { until } => {
                Err(Refusal { reject: Reject::Settling, retry_at: Some(until) })
            }
            ResultVerdict::Refused(r) => Err(r.into()),
        }
    }

    /// Whether this node already knows `claim` as `node`'s, holding the item at its epoch.
    fn knows_as_holder(&self, node: NodeId, claim: &Signed<Claim>) -> bool {
        claim.verified_ref().is_ok_and(|c| {
            self.items.get(&c.item).is_some_and(|e| {
                matches!(e.phase, Phase::Held { holder, epoch, .. } if holder == node && epoch == c.epoch)
            })
        })
    }

    /// Carries out [`ResultVerdict::Ready`]: the holder of ongoing work reports it ready.
    fn mark_ready(&mut self, s: Signed<Receipt>, item: &ItemId) {
        if let Some(e) = self.items.get_mut(item)
            && let Phase::Held { ready, .. } = &mut e.phase
        {
            *ready = Some(s.clone());
            let (change, project) = (e.refresh_digest(item), e.project);
            self.fold_bucket(project, item, change);
        }
        self.outputs.push_back(Output::Persist(Envelope::Receipt(s)));
    }

    /// Carries out [`ResultVerdict::Accepts`]: receipt `s` (checked: `r`, under claim `c`) is
    /// the item's result from now on, replacing any it had.
    fn finish_item(
        &mut self,
        s: Signed<Receipt>,
        r: &Receipt,
        c: &Claim,
        replaced: Option<Envelope>,
        now: u64,
    ) {
        let (node, item) = (s.signer().node_id(), c.item);
        let Some(e) = self.items.get(&item) else { return };
        let project = e.project;
        // A chunk's URLs are not copied: only a check (small) is kept for settling it.
        let (chunk, check) = match &*e.work {
            WorkItem::CrawlChunk { .. } => (true, None),
            w @ WorkItem::Verify { .. } => (false, Some(w.clone())),
            _ => (false, None),
        };
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
            self.drop_checks(item, project, &old);
        }
        self.unschedule(item);
        if node == self.me {
            self.local.remove(&item);
        } else {
            self.drop_local(item, CancelReason::Finished);
        }
        // Claims and receipts of duties and checks derived here that came first were parked:
        // taken in now.
        let derived = if chunk {
            let copies = self.derive_seed_duties(item, project, r, now);
            self.derive_check(item, project, r, node, now) || copies
        } else if let Some(check) = check {
            self.settle_check(&check, project, now)
        } else {
            false
        };
        if derived && !self.pending.is_empty() {
            self.replay_pending(now);
        }
    }

    pub(super) fn derive_seed_duties(
        &mut self,
        source: ItemId,
        project: crate::ids::ProjectId,
        r: &Receipt,
        now: u64,
    ) -> bool {
        let k = self.projects.get(&project).map_or(0, |p| p.m.replication);
        for replica in 0..k {
            let work = WorkItem::SeedDuty { source, result: r.result, size: r.size, replica };
            let id = work.id(&project);
            self.insert_item(id, project, WorkRef::Own(Arc::new(work)), now);
        }
        k > 0
    }

    /// Drops the seeding duties derived from `receipt` for `source` that are not done: its
    /// result was replaced or withdrawn, and copies of it are no use to anyone. Every node
    /// drops the same ones, so their digests stay equal; duties already done stay, as history.
    pub(super) fn drop_seed_duties(
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
            self.forget_item(id);
            self.stats.duties_dropped += 1;
        }
    }

    fn apply_failure(&mut self, s: Signed<Failure>, now: u64) -> Result<(), Reject> {
        let f = verified(&s)?;
        let node = s.signer().node_id();
        let c = match self.apply_embedded_claim(node, &f.claim, now).map_err(|f| f.reject) {
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
        // A lane's cooldown from a node that gave the lane back already (see `lanes.rs`).
        let current = matches!(&e.phase, Phase::Held { epoch, .. } if *epoch == r.epoch);
        if !current && Self::is_lane(e) && r.cooldown_until_ms.is_some() {
            return self.late_cooldown(&r, &Envelope::Release(s), node, now);
        }
        let Some(e) = self.items.get_mut(&r.item) else { return Err(Reject::UnknownItem) };
        let jump = Self::epoch_jump_max(e);
        let mut ended = None;
        match &e.phase {
            Phase::Held { holder, epoch, claim, .. } if *epoch == r.epoch => {
                if *holder != node {
                    return Err(Reject::NotHolder);
                }
                ended = Some(Envelope::Claim(claim.clone()));
            }
            Phase::Held { epoch, .. }
                if r.epoch > *epoch && r.epoch <= epoch.saturating_add(jump) => {}
            Phase::Open { epoch, proof }
                if r.epoch >= *epoch && r.epoch <= epoch.saturating_add(jump) =>
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
        self.outputs.push_back(Output::Persist(env.clone()));
        self.on_lane_release(&r.item, &r, &env, node == self.me, now);
        self.take_early_lane_claims(&r.item, now);
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
        self.drop_checks(*item, project, &withdrawn);
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
        let removed = self.local.remove(&item);
        self.proofs.remove(&item);
        if removed.is_some() && self.items.get(&item).is_some_and(Self::is_lane) {
            self.rearm_lanes(&item, self.last_now);
        }
        if let Some(l) = removed
            && l.started
        {
            self.outputs.push_back(Output::CancelWork { item, epoch: l.epoch, reason });
            if reason != CancelReason::Shutdown {
                self.stats.yielded += 1;
            }
        }
    }
}

/// The rule for a signed, versioned record (manifest, directory) that replaces an older one of
/// the same key: the higher version wins; at equal versions with different bodies the greater
/// body hash wins, on every node. The same body again is a duplicate.
pub(super) fn replaces(
    old_version: u64,
    old_body: &[u8],
    version: u64,
    body: &[u8],
) -> Result<(), Reject> {
    let old_key = (old_version, blake3::hash(old_body));
    let new_key = (version, blake3::hash(body));
    if new_key == old_key {
        return Err(Reject::Duplicate);
    }
    if new_key.0 < old_key.0
        || (new_key.0 == old_key.0 && new_key.1.as_bytes() < old_key.1.as_bytes())
    {
        return Err(Reject::Stale);
    }
    Ok(())
}
