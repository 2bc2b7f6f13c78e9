//! Host lanes: a project's per-host rate as the mesh's budget, not each node's.
//!
//! Under a manifest's `rate.scope = "mesh"` (the default) every node derives, from the hosts of
//! the project's crawl chunks, `rate.lanes` items [`WorkItem::HostLane`] per host. They are
//! claimed, leased, renewed and released by the same rule as every item, so once a component
//! has settled each lane has at most one holder, and a host at most `lanes` fetching nodes. A
//! node fetches from a host only while it holds one of the host's lanes, at
//! `rate.per_host / lanes` ([`crate::RatePolicy::per_holder_milli`]).
//!
//! Lanes differ from other items in who tries them: not the top HRW ranks, but the nodes
//! that have URLs for the host. The driver says so with [`Input::WantLane`]; the engine then
//! claims a free lane of the host at once (no settle wait: a lane's claim order settles
//! rivals, and a lane idle is budget lost), holds at most one lane of a host, renews it while
//! the demand lasts and releases it as soon as the driver says the demand is gone. A node also
//! wants the lanes of a chunk's hosts from the moment it claims the chunk, until its driver
//! speaks of them ([`Engine::lane_wanted_here`]), so a lane's claim settles together with its
//! chunk's. A lane claim is given back only once it has settled: released sooner, a contested
//! claim would end the epoch in the views that never saw its rival's claim, while the rival
//! holds it.
//!
//! Back-off is shared. A driver told by a host to wait (`Retry-After`, or a run of refusals)
//! reports it with [`Input::HostRefused`]: the engine releases the lanes of the host it holds
//! with the cooldown in the release ([`crate::message::Release::cooldown_until_ms`]). Every node
//! that takes in such a release keeps the cooldown, tells its driver
//! ([`Output::HostCooldown`]), so the holders of the host's other lanes stop too, and claims no
//! lane of the host before the cooldown has run out (plus the skew margin).
//!
//! Hand-offs overlap by design, and safely: a node that gives a lane back may go on sending
//! the host requests for [`LANE_DRAIN_MS`] after its release (at its lane's rate), and a node
//! that claims a lane starts no sooner than [`LANE_DRAIN_MS`] after its claim. The claim comes
//! after the release was received, so after it was sent: the two never fetch at once, and no
//! clocks are compared. A holder that sees its last few URLs of a host coming (fewer than it
//! can send in the drain) gives the lane back early, so the next holder's wait runs while it
//! finishes and the host stays busy across the hand-off. Its release states how long it goes
//! on ([`crate::message::Release::drain_ms`], what its last URLs take at the lane's rate,
//! [`drain_for`]; 0 with none left), and the next holder waits that after its claim rather
//! than the whole drain: a holder with two URLs left hands over half a second sooner. A
//! lane's first epoch follows no holder, and a claim that follows the claimant's own release
//! meets only its own requests (one limiter spaces them): both wait only the claim's settle
//! ([`Engine::lane_follows_another`]). So a node whose next chunk of a host starts while it
//! drains the lane it gave back takes the lane back at once ([`lane_wanted`]).
//!
//! A node told to wait while it drains a lane it gave back holds no lane to release: it
//! signs a release of the epoch it held again, with the cooldown. Every node takes the
//! cooldown (and nothing else) from it once it knows the signer held that epoch (its claim is
//! in the item's kept evidence), so nobody but a past holder of a lane can cool its host down.
//!
//! A lane's next claim often overtakes the release it follows on the way to a third node,
//! which then finds it early. Unlike other items' early claims it is kept (bounded) and taken
//! in again as soon as the release is: otherwise that node would claim the epoch itself and two
//! nodes would fetch until a renewal settled it. A liar's early lane claim gains nothing it
//! could not get by claiming after the release. Lane epochs may also jump further
//! ([`LANE_EPOCH_JUMP_MAX`]), so a node that was away catches up with a busy lane by sync.
//!
//! Which chunk a node claims next is its own choice, and it spreads the hosts: of the ready
//! chunks it takes the first whose busiest host has the fewest chunks held anywhere (from the
//! claims every node sees), a host whose lane it holds counting half a chunk less
//! ([`Engine::pick_ready_chunk`]). The driver counts a chunk down to its last URLs on one host
//! ([`finishing_quota`]) among the slots it may fill ([`Input::LaneBlocked`]), so the node
//! claims the next chunk while the last one finishes; that chunk is most often the same
//! host's, its URLs join the lane's demand before the lane is given back, and the host goes
//! on with no hand-off. Safety does not rest on it: a claim is judged by the usual rule.
//!
//! Margins, stated: a lane's lease is [`LANE_LEASE_MS`] at most (the project's lease if
//! shorter), so a host whose holder died sits idle for at most that plus `skew_margin_ms` and
//! a claim's settle; a holder cut off from the rest keeps fetching until its own lease would
//! have run out, so for up to one lease after a partition a host can see one more holder per
//! lane, as with every item (safety is per connected component).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Engine, ItemEntry, Output, Phase, Reject, WorkRef};
use crate::ids::{ItemId, ProjectId};
use crate::item::{WorkItem, url_host};
use crate::manifest::RateScope;

/// Longest lease of a host lane: the most a host sits idle after its holder dies (plus the
/// skew margin). A protocol constant, since every node judges lane claims against it.
pub const LANE_LEASE_MS: u64 = 10_000;
/// How long a node may go on fetching from a host after giving back the lane it held, and
/// the least time between claiming a lane and fetching under it. A protocol constant.
pub const LANE_DRAIN_MS: u64 = 1_000;
/// Added to a drain worked out from the URLs left ([`drain_for`]), for a request's own trip
/// from the turn it waited to the moment it is sent.
pub const LANE_DRAIN_SLACK_MS: u64 = 50;

/// How many requests a lane holder sending at `per_holder_milli` (requests per 1,000 s) can
/// send within [`LANE_DRAIN_MS`], the slack kept (so their [`drain_for`] is not cut short):
/// with no more than this left, it gives the lane back early.
pub fn drain_quota(per_holder_milli: u32) -> u32 {
    let ms = LANE_DRAIN_MS - LANE_DRAIN_SLACK_MS;
    u32::try_from(ms * u64::from(per_holder_milli) / 1_000_000).unwrap_or(u32::MAX)
}

/// The drain a holder states when it gives its lane back with `urls` requests left to send
/// at `per_holder_milli`: long enough for them at that rate (plus [`LANE_DRAIN_SLACK_MS`]),
/// 0 with none left, at most [`LANE_DRAIN_MS`]. The node stops sending when it ends.
pub fn drain_for(urls: u32, per_holder_milli: u32) -> u64 {
    if urls == 0 {
        return 0;
    }
    let period_x1000 = 1_000_000_000 / u64::from(per_holder_milli.max(1));
    (u64::from(urls) * period_x1000 / 1_000 + LANE_DRAIN_SLACK_MS).min(LANE_DRAIN_MS)
}

/// Longest cooldown a release may ask for, counted from the release: a holder that lies
/// about a host's `Retry-After` can hold the mesh off a host this long at most (the node
/// caps what it honours from a host at the same 10 minutes).
pub const LANE_COOLDOWN_MAX_MS: u64 = 600_000;
/// Most epochs a lane's claim or release may jump ahead of the one known: lanes change hands
/// often (a node back from a restart may be thousands of epochs behind), and a lane whose
/// epochs a liar inflates only loses the lane's turns it could take anyway.
pub const LANE_EPOCH_JUMP_MAX: u32 = 1 << 20;
/// Lanes with claims kept until the release they follow arrives; claims kept per lane.
const LANE_EARLY_MAX: usize = 1_024;
const LANE_EARLY_PER_LANE: usize = 8;
/// Most (project, host) pairs a node wants lanes for at once.
pub const LANE_DEMAND_MAX: usize = 4_096;
/// Most host cooldowns kept.
pub const LANE_COOLDOWNS_MAX: usize = 4_096;
/// Least time between two passings-on of one host's cooldown to claimants that did not know it.
const COOLDOWN_RETELL_MS: u64 = 1_000;

/// Most hosts a project has lanes for.
pub const LANE_HOSTS_MAX: usize = 4_096;
/// Most lanes one node holds at once.
pub const LANES_HELD_MAX: u16 = 1_024;

/// A cooldown as it can be passed on: the release that carried it, after the claim of the
/// released epoch by its signer (without which a node behind refuses a late cooldown), and
/// when this node last passed them on.
#[derive(Debug, Clone)]
struct CooldownNews {
    claim: Option<crate::message::Envelope>,
    release: crate::message::Envelope,
    told_at: Option<u64>,
}

/// What the engine keeps about lanes beyond the lane items themselves.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    /// The (project, host) pairs this node has URLs for.
    demand: BTreeSet<(ProjectId, String)>,
    /// Until when (signer's clock) each host asked to be left alone.
    cooldowns: BTreeMap<(ProjectId, String), u64>,
    /// The signed release each cooldown came in, the claim that shows its signer held the
    /// epoch it released, and when this node last passed them on to a claimant that did not
    /// know the cooldown ([`Engine::tell_cooldown_to`]); bounded with `cooldowns`.
    cooldown_releases: BTreeMap<(ProjectId, String), CooldownNews>,
    /// The hosts each project has lanes for (at most [`LANE_HOSTS_MAX`] a project).
    hosts: BTreeMap<ProjectId, BTreeSet<String>>,
    /// Claims of a lane's next epoch that came before the release they follow.
    early: BTreeMap<ItemId, Vec<crate::signed::Signed<crate::message::Claim>>>,
    /// Crawl chunks of lane projects held anywhere, with their hosts, and how many held
    /// chunks name each host: the load [`Engine::pick_ready_chunk`] spreads claims by.
    held_chunks: BTreeMap<ItemId, (ProjectId, Vec<String>)>,
    host_load: BTreeMap<ProjectId, BTreeMap<String, u32>>,
    /// Chunks this node claimed, with the hosts whose lanes it wants for them before its
    /// driver says so ([`Engine::lane_wanted_here`]): kept while the chunk is held here, a
    /// host dropped once the driver speaks of it after the chunk started.
    provisional: BTreeMap<ItemId, (ProjectId, BTreeSet<String>)>,
}

/// Most chunks whose lanes are wanted ahead of their driver at once.
const PROVISIONAL_MAX: usize = 1_024;

/// Ready chunks [`Engine::pick_ready_chunk`] looks through for one of a quiet host.
const PICK_SCAN_MAX: usize = 64;

/// How many URLs a chunk may have left under a lane's rate (requests per 1,000 s) and count
/// as finishing: about two drains' worth, so the chunk that follows it on this node is claimed
/// and settled before it ends and its host's lane never goes idle in between. Drivers count
/// such chunks in [`Input::LaneBlocked`](super::Input::LaneBlocked).
pub fn finishing_quota(per_holder_milli: u32) -> u32 {
    drain_quota(per_holder_milli).saturating_mul(2).max(1)
}

/// Whether a chunk with `urls_left` URLs still to send, on `hosts_left` hosts, at a lane rate
/// of `per_holder_milli`, is finishing: all on one host and no more than [`finishing_quota`].
/// The rule drivers count chunks in [`Input::LaneBlocked`](super::Input::LaneBlocked) by.
pub fn chunk_finishing(hosts_left: usize, urls_left: u32, per_holder_milli: u32) -> bool {
    hosts_left == 1 && urls_left > 0 && urls_left <= finishing_quota(per_holder_milli)
}

/// Whether a node with `urls_left` URLs of a host still to send wants a lane of it, at a
/// lane rate of `per_holder_milli`: while it has any, except while it drains a lane it gave
/// back early and has no more than the drain sends ([`drain_quota`]). More than that means
/// the host's next chunk started here, and the node takes the lane back at once. The rule
/// drivers send [`Input::WantLane`](super::Input::WantLane) by.
pub fn lane_wanted(urls_left: u32, draining: bool, per_holder_milli: u32) -> bool {
    urls_left > 0 && (!draining || urls_left > drain_quota(per_holder_milli))
}

/// One lane of a host as this node sees it, for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneView {
    /// The host.
    pub host: String,
    /// Which lane.
    pub lane: u16,
    /// Its holder, if held.
    pub holder: Option<crate::ids::NodeId>,
    /// The holder's lease runs out here (this node's clock), if held.
    pub lease_until_ms: Option<u64>,
    /// No node fetches from the host before this, if a cooldown is in force.
    pub cooldown_until_ms: Option<u64>,
}

impl Engine {
    /// Keeps the load of hosts up to date after `item`'s phase changed: a chunk of a lane
    /// project with two hosts or more counts against each of its hosts while it is held (by
    /// anyone).
    pub(super) fn note_chunk_phase(&mut self, item: &ItemId) {
        // An item no longer kept (another shard's) counts as not held.
        let held = self.items.get(item).filter(|e| matches!(e.phase, Phase::Held { .. }));
        if held.is_some() == self.lanes.held_chunks.contains_key(item) {
            return;
        }
        if let Some(e) = held {
            let WorkItem::CrawlChunk { urls } = &*e.work else { return };
            // With one host (or none) every chunk weighs the same: nothing to keep.
            if self.lanes.hosts.get(&e.project).is_none_or(|h| h.len() < 2) {
                return;
            }
            let mut hosts: Vec<String> = urls.iter().filter_map(|u| url_host(u)).collect();
            hosts.sort_unstable();
            hosts.dedup();
            let load = self.lanes.host_load.entry(e.project).or_default();
            for h in &hosts {
                *load.entry(h.clone()).or_default() += 1;
            }
            self.lanes.held_chunks.insert(*item, (e.project, hosts));
        } else if let Some((project, hosts)) = self.lanes.held_chunks.remove(item)
            && let Some(load) = self.lanes.host_load.get_mut(&project)
        {
            for h in hosts {
                if let Some(n) = load.get_mut(&h) {
                    *n -= 1;
                    if *n == 0 {
                        load.remove(&h);
                    }
                }
            }
            if load.is_empty() {
                self.lanes.host_load.remove(&project);
            }
        }
    }

    /// Which ready crawl chunk to claim next: of the first [`PICK_SCAN_MAX`] of the best
    /// priority, the first a holder let go of, else the first whose busiest host has the
    /// fewest held chunks anywhere, a host whose lane this node holds counting half a chunk less (so a node that finishes a chunk takes
    /// the same host's next one and keeps its lane busy, but never takes a second chunk of a
    /// host while a quiet host has one waiting). Chunks of projects without lanes count as
    /// quiet. `None`: take the first, as for every other kind.
    pub(super) fn pick_ready_chunk(
        &self,
        queue: &BTreeSet<super::ReadyKey>,
    ) -> Option<super::ReadyKey> {
        if self.lanes.held_chunks.is_empty() {
            return None;
        }
        let first = queue.first()?;
        let mine: BTreeSet<(ProjectId, &str)> = self
            .local
            .keys()
            .filter_map(|id| self.items.get(id))
            .filter_map(|e| match &*e.work {
                WorkItem::HostLane { host, .. } => Some((e.project, host.as_str())),
                _ => None,
            })
            .collect();
        let mut best: Option<(super::ReadyKey, u32)> = None;
        for key in queue.iter().take(PICK_SCAN_MAX).take_while(|k| k.0 == first.0) {
            let Some(e) = self.items.get(&key.3) else { continue };
            let WorkItem::CrawlChunk { urls } = &*e.work else { continue };
            // A chunk whose last holder let it go (its lease ran out, most often: it died)
            // first: its host has likely gone quiet, and its other chunks that holder had
            // still count as held everywhere until they are claimed again, so by load alone
            // the host would come last.
            if e.phase.epoch() > 0 {
                best = Some((*key, 0));
                break;
            }
            let mut load = 0;
            let mut held_here = false;
            if let Some(loads) = self.lanes.host_load.get(&e.project) {
                for host in urls.iter().filter_map(|u| url_host(u)) {
                    load = load.max(2 * loads.get(&host).copied().unwrap_or(0));
                    held_here |= mine.contains(&(e.project, host.as_str()));
                }
            }
            if held_here && load > 0 {
                load -= 1;
            }
            if best.as_ref().is_none_or(|(_, b)| load < *b) {
                best = Some((*key, load));
                if load == 0 {
                    break;
                }
            }
        }
        best.map(|(k, _)| k)
    }

    /// Whom `project`'s rate binds, if the project is known.
    pub fn rate_scope(&self, project: &ProjectId) -> Option<RateScope> {
        self.projects.get(project).map(|p| p.m.rate.scope)
    }

    /// The ids of the lanes of `host` in `project` (empty under node scope or for a host with
    /// no lanes: the project's chunks never named it, or the project has too many hosts).
    pub fn lane_ids(&self, project: &ProjectId, host: &str) -> Vec<ItemId> {
        let Some(p) = self.projects.get(project) else { return Vec::new() };
        if p.m.rate.scope != RateScope::Mesh
            || !self.lanes.hosts.get(project).is_some_and(|h| h.contains(host))
        {
            return Vec::new();
        }
        (0..p.m.rate.lanes)
            .map(|lane| WorkItem::HostLane { host: host.to_owned(), lane }.id(project))
            .collect()
    }

    /// Whether this node holds a lane of `host` in `project` and may fetch from it now (the
    /// lane's work has started and no cooldown is in force at `now`).
    pub fn may_fetch(&self, project: &ProjectId, host: &str, now: u64) -> bool {
        self.cooldown_of(project, host).is_none_or(|t| t <= now)
            && self
                .lane_ids(project, host)
                .iter()
                .any(|id| self.local.get(id).is_some_and(|l| l.started))
    }

    /// The cooldown in force for `host` in `project`, if one is known.
    pub fn cooldown_of(&self, project: &ProjectId, host: &str) -> Option<u64> {
        self.lanes.cooldowns.get(&(*project, host.to_owned())).copied()
    }

    /// Every lane of `project` with its holder and cooldown, hosts in order, at most `limit`.
    pub fn lanes_of(&self, project: &ProjectId, limit: usize) -> Vec<LaneView> {
        let Some(hosts) = self.lanes.hosts.get(project) else { return Vec::new() };
        let mut out = Vec::new();
        for host in hosts {
            let cooldown = self.cooldown_of(project, host);
            for id in self.lane_ids(project, host) {
                let Some(e) = self.items.get(&id) else { continue };
                let WorkItem::HostLane { lane, .. } = &*e.work else { continue };
                let (holder, lease) = match &e.phase {
                    Phase::Held { holder, lease_until, .. } => (Some(*holder), Some(*lease_until)),
                    _ => (None, None),
                };
                out.push(LaneView {
                    host: host.clone(),
                    lane: *lane,
                    holder,
                    lease_until_ms: lease,
                    cooldown_until_ms: cooldown,
                });
                if out.len() >= limit {
                    return out;
                }
            }
        }
        out
    }

    /// The lease of an item: a lane's is [`LANE_LEASE_MS`] at most.
    pub(super) fn lease_of(&self, e: &ItemEntry) -> u64 {
        let lease = self.lease_ms(&e.project);
        match &*e.work {
            WorkItem::HostLane { .. } => lease.min(LANE_LEASE_MS),
            _ => lease,
        }
    }

    /// Derives the lanes of every host `project`'s chunks name (all of its batches), if its
    /// rate is mesh-wide. Lanes already known stay; a project that raised `lanes` gets the new
    /// ones. Past [`LANE_HOSTS_MAX`] hosts a project gets no more lanes, and its driver
    /// learns it from an empty [`Engine::lane_ids`].
    pub(super) fn derive_lanes(&mut self, project: ProjectId, now: u64) {
        let Some(p) = self.projects.get(&project) else { return };
        if p.m.rate.scope != RateScope::Mesh {
            return;
        }
        let lanes = p.m.rate.lanes;
        let mut hosts = BTreeSet::new();
        for batch in p.batches.values() {
            let Ok(b) = batch.verified_ref() else { continue };
            for w in &b.items {
                if let WorkItem::CrawlChunk { urls } = w {
                    hosts.extend(urls.iter().filter_map(|u| url_host(u)));
                }
            }
        }
        for host in hosts {
            let known = self.lanes.hosts.entry(project).or_default();
            if !known.contains(&host) {
                if known.len() >= LANE_HOSTS_MAX {
                    self.stats.lane_hosts_over += 1;
                    continue;
                }
                known.insert(host.clone());
            }
            for lane in 0..lanes {
                let work = WorkItem::HostLane { host: host.clone(), lane };
                let id = work.id(&project);
                if !self.items.contains_key(&id) {
                    self.insert_item(id, project, WorkRef::Own(Arc::new(work)), now);
                }
            }
        }
    }

    /// This node claimed crawl chunk `item`: it wants the lanes of the chunk's hosts from now,
    /// so each lane's claim settles with the chunk's rather than after it, and the chunk's
    /// first request comes a claim's settle sooner. The want is the engine's own until the
    /// driver speaks of the host after the chunk started (its crawl tasks then say what they
    /// want), or the chunk is no longer held here; a lane held for it and wanted by nobody
    /// then is given back ([`Engine::drop_stale_provisional`]), once its claim has settled.
    pub(super) fn note_chunk_claimed(&mut self, item: ItemId, now: u64) {
        if !self.cfg.lanes_with_chunks {
            return;
        }
        let Some(e) = self.items.get(&item) else { return };
        let WorkItem::CrawlChunk { urls } = &*e.work else { return };
        let project = e.project;
        if self.rate_scope(&project) != Some(RateScope::Mesh) {
            return;
        }
        let hosts: BTreeSet<String> = urls
            .iter()
            .filter_map(|u| url_host(u))
            .filter(|h| !self.lane_ids(&project, h).is_empty())
            .collect();
        // Chunks no longer held are dropped, and the lanes only they wanted given back, after
        // every input (`drop_stale_provisional`), so this counts live ones.
        if hosts.is_empty() || self.lanes.provisional.len() >= PROVISIONAL_MAX {
            return;
        }
        for host in &hosts {
            for id in self.lane_ids(&project, host) {
                self.schedule(id, now);
            }
        }
        self.lanes.provisional.insert(item, (project, hosts));
    }

    /// Whether this node wants a lane of `host` in `project`: its driver said so
    /// ([`Input::WantLane`]), or a chunk it holds names the host and its driver has not spoken
    /// of the host since the chunk started ([`Engine::note_chunk_claimed`]). A driver granted
    /// a lane its tasks do not want yet keeps it while this holds.
    pub fn lane_wanted_here(&self, project: &ProjectId, host: &str) -> bool {
        self.lanes.demand.contains(&(*project, host.to_owned()))
            || self.lanes.provisional.iter().any(|(id, (p, hosts))| {
                p == project && hosts.contains(host) && self.local.contains_key(id)
            })
    }

    /// Forgets the chunks of [`Engine::note_chunk_claimed`] no longer held here (done, lost,
    /// given back) and gives back, at once, the lanes only they wanted: nothing was sent
    /// under them, so no drain.
    pub(super) fn drop_stale_provisional(&mut self, now: u64) {
        if self.lanes.provisional.keys().all(|id| self.local.contains_key(id)) {
            return;
        }
        let (kept, gone): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.lanes.provisional)
                .into_iter()
                .partition(|(id, _)| self.local.contains_key(id));
        self.lanes.provisional = kept;
        for (project, hosts) in gone.into_values() {
            for host in hosts {
                if !self.lane_wanted_here(&project, &host) {
                    let ids = self.lane_ids(&project, &host);
                    self.release_lanes(&ids, None, 0, now);
                }
            }
        }
    }

    /// A lane claimed here whose claim has settled but whose work has not started, and that
    /// nobody wants any more (see [`Engine::release_lanes`]): given back now, with no drain.
    pub(super) fn settled_unwanted_lane(&mut self, item: ItemId, now: u64) -> bool {
        let Some(l) = self.local.get(&item).copied() else { return false };
        if l.kind != crate::item::WorkKind::Lane
            || l.started
            || now < l.since.saturating_add(self.cfg.claim_settle_ms)
            || !self.lane_unwanted(&item)
        {
            return false;
        }
        self.give_back_with(item, l.epoch, None, Some(0), now);
        true
    }

    /// A lane of `item` held here that nobody wants any more (its chunk went, or its driver
    /// never asked for it): given back rather than renewed. Its driver sent nothing under it
    /// (it would have said it wanted it), so it states no drain.
    pub(super) fn lane_unwanted(&self, item: &ItemId) -> bool {
        let Some(e) = self.items.get(item) else { return false };
        let WorkItem::HostLane { host, .. } = &*e.work else { return false };
        !self.lane_wanted_here(&e.project, host)
    }

    /// [`Input::WantLane`]: this node has (or no longer has) URLs for `host` in `project`.
    pub(super) fn want_lane(
        &mut self,
        project: ProjectId,
        host: String,
        wanted: bool,
        drain_ms: u64,
        now: u64,
    ) -> Result<(), Reject> {
        let ids = self.lane_ids(&project, &host);
        // The driver speaks for the host now, for the chunks it has started.
        let local = &self.local;
        for (id, (p, hosts)) in &mut self.lanes.provisional {
            if *p == project && local.get(id).is_some_and(|l| l.started) {
                hosts.remove(&host);
            }
        }
        let key = (project, host);
        if wanted {
            if !self.lanes.demand.contains(&key) {
                if self.lanes.demand.len() >= LANE_DEMAND_MAX {
                    return Err(Reject::Full);
                }
                self.lanes.demand.insert(key);
            }
            for id in ids {
                self.schedule(id, now);
            }
        } else {
            self.lanes.demand.remove(&key);
            self.release_lanes(&ids, None, drain_ms.min(LANE_DRAIN_MS), now);
            // A chunk claimed here and not started yet still wants it: claimed again.
            if self.lane_wanted_here(&key.0, &key.1) {
                for id in ids {
                    self.schedule(id, now);
                }
            }
        }
        Ok(())
    }

    /// [`Input::HostRefused`]: the host told this node to wait until `until_ms`.
    pub(super) fn host_refused(
        &mut self,
        project: ProjectId,
        host: String,
        until_ms: u64,
        now: u64,
    ) {
        let until_ms = until_ms.min(now.saturating_add(LANE_COOLDOWN_MAX_MS));
        let ids = self.lane_ids(&project, &host);
        // Released first: a late cooldown already known here would not go out. The driver
        // sends the host nothing more (it was told to wait), so no drain.
        self.release_lanes(&ids, Some(until_ms), 0, now);
        self.note_cooldown(project, host, until_ms, now);
        // Claimed again (by whoever wants it most) once the cooldown has run out.
        for id in ids {
            self.schedule(id, now);
        }
    }

    fn release_lanes(&mut self, ids: &[ItemId], cooldown: Option<u64>, drain_ms: u64, now: u64) {
        let mut held = false;
        for id in ids {
            if let Some(l) = self.local.get(id).copied() {
                held = true;
                // A claim not settled yet may be contested: released now, it would end the
                // epoch in the views that never saw the rival claim, while the rival (which
                // may be the one that holds it) goes on. Given back once it has settled, if
                // still unwanted then ([`Engine::settled_unwanted_lane`]). A cooldown goes
                // out at once all the same.
                if cooldown.is_none() && !l.started {
                    let settled = l.since.saturating_add(self.cfg.claim_settle_ms);
                    self.schedule(*id, settled.max(now));
                    continue;
                }
                // A lane whose work never started saw no request under it.
                let drain = if l.started { drain_ms } else { 0 };
                self.give_back_with(*id, l.epoch, cooldown, Some(drain), now);
            }
        }
        // Draining a lane given back: the cooldown goes out under the epoch this node held.
        if let (false, Some(until)) = (held, cooldown)
            && let Some((id, epoch)) = ids.iter().find_map(|id| Some((*id, self.held_epoch(id)?)))
        {
            let release = crate::message::Release {
                item: id,
                epoch,
                at_ms: now,
                cooldown_until_ms: Some(until),
                drain_ms: None,
            };
            let env =
                crate::message::Envelope::Release(crate::signed::Signed::sign(&self.key, &release));
            if self.apply_envelope(env.clone(), now, false).is_ok() {
                self.outputs.push_back(Output::Publish(env));
            }
        }
    }

    /// The latest epoch of lane `id` this node held, from the item's kept evidence.
    fn held_epoch(&self, id: &ItemId) -> Option<u32> {
        let e = self.items.get(id)?;
        Self::epoch_held_by(e, self.me)
    }

    /// The latest epoch of `e` whose claim by `node` is in its kept evidence.
    fn epoch_held_by(e: &ItemEntry, node: crate::ids::NodeId) -> Option<u32> {
        Self::claims_by(e, node).map(|(_, epoch)| epoch).max()
    }

    /// The claims by `node` in `e`'s kept evidence, with their epochs: what shows that `node`
    /// held an epoch.
    fn claims_by(
        e: &ItemEntry,
        node: crate::ids::NodeId,
    ) -> impl Iterator<Item = (&crate::message::Envelope, u32)> {
        e.past.envelopes().iter().filter_map(move |env| match env {
            crate::message::Envelope::Claim(c) if c.signer().node_id() == node => {
                c.verified_ref().ok().map(|c| (env, c.epoch))
            }
            _ => None,
        })
    }

    /// A release of a lane epoch that ended already, carrying a cooldown: the cooldown is
    /// taken if the signer held that epoch (nothing else about the lane changes).
    pub(super) fn late_cooldown(
        &mut self,
        r: &crate::message::Release,
        env: &crate::message::Envelope,
        node: crate::ids::NodeId,
        now: u64,
    ) -> Result<(), Reject> {
        let Some(e) = self.items.get(&r.item) else { return Err(Reject::UnknownItem) };
        if !Self::claims_by(e, node).any(|(_, epoch)| epoch == r.epoch) {
            return Err(Reject::NotHolder);
        }
        let (project, WorkItem::HostLane { host, .. }) = (e.project, &*e.work) else {
            return Err(Reject::Malformed);
        };
        let until =
            r.cooldown_until_ms.unwrap_or(0).min(r.at_ms.saturating_add(LANE_COOLDOWN_MAX_MS));
        if self.cooldown_of(&project, host).is_some_and(|t| t >= until) {
            return Err(Reject::Duplicate);
        }
        self.on_lane_release(&r.item, r, env, node == self.me, now);
        Ok(())
    }

    /// Another node claimed lane `item` while a cooldown this node knows is in force for its
    /// host: it may not know it (back from a snapshot, or cut off when it went out; sync hands
    /// on a lane's state, not a cooldown announced after its release), so the release that
    /// carried the cooldown goes out again, at most once a [`COOLDOWN_RETELL_MS`] a host. The
    /// claimant takes it (it holds the evidence that the signer held that epoch by then: sync
    /// and the claim rule brought it the lane's state) and holds off until it runs out.
    pub(super) fn tell_cooldown_to(
        &mut self,
        item: &ItemId,
        claimant: crate::ids::NodeId,
        now: u64,
    ) {
        if claimant == self.me {
            return;
        }
        let Some(e) = self.items.get(item) else { return };
        let (project, WorkItem::HostLane { host, .. }) = (e.project, &*e.work) else { return };
        let key = (project, host.clone());
        let margin = self.cfg.skew_margin_ms;
        if self.cooldown_of(&project, host).is_none_or(|t| t.saturating_add(margin) <= now) {
            return;
        }
        let Some(news) = self.lanes.cooldown_releases.get_mut(&key) else { return };
        if news.told_at.is_some_and(|t| t.saturating_add(COOLDOWN_RETELL_MS) > now) {
            return;
        }
        news.told_at = Some(now);
        let news = news.clone();
        if let Some(claim) = news.claim {
            self.outputs.push_back(Output::Publish(claim));
        }
        self.outputs.push_back(Output::Publish(news.release));
    }

    /// Keeps a cooldown for `host` (the later of the one known and this), dropping the ones
    /// that ran out when the map is full.
    pub(super) fn note_cooldown(&mut self, project: ProjectId, host: String, until: u64, now: u64) {
        let key = (project, host);
        if !self.lanes.cooldowns.contains_key(&key)
            && self.lanes.cooldowns.len() >= LANE_COOLDOWNS_MAX
        {
            let margin = self.cfg.skew_margin_ms;
            self.lanes.cooldowns.retain(|_, t| t.saturating_add(margin) > now);
            let cooldowns = &self.lanes.cooldowns;
            self.lanes.cooldown_releases.retain(|k, _| cooldowns.contains_key(k));
            if self.lanes.cooldowns.len() >= LANE_COOLDOWNS_MAX {
                return;
            }
        }
        let t = self.lanes.cooldowns.entry(key).or_insert(until);
        *t = (*t).max(until);
    }

    /// A release of a lane that carries a cooldown: kept, and told to the driver.
    pub(super) fn on_lane_release(
        &mut self,
        item: &ItemId,
        release: &crate::message::Release,
        env: &crate::message::Envelope,
        from_self: bool,
        now: u64,
    ) {
        let Some(until) = release.cooldown_until_ms else { return };
        let until = until.min(release.at_ms.saturating_add(LANE_COOLDOWN_MAX_MS));
        let Some(e) = self.items.get(item) else { return };
        let (project, WorkItem::HostLane { host, .. }) = (e.project, &*e.work) else { return };
        let host = host.clone();
        self.note_cooldown(project, host.clone(), until, now);
        let key = (project, host.clone());
        if self.lanes.cooldowns.get(&key) == Some(&until)
            && let Some(e) = self.items.get(item)
        {
            let claim = Self::claims_by(e, env.signer())
                .find(|(_, epoch)| *epoch == release.epoch)
                .map(|(claim, _)| claim.clone());
            let news = CooldownNews { claim, release: env.clone(), told_at: None };
            self.lanes.cooldown_releases.insert(key, news);
        }
        // The driver that reported the refusal knows already.
        if !from_self {
            self.outputs.push_back(Output::HostCooldown { project, host, until_ms: until });
        }
    }

    /// Whether this node wants lane `work` of `project` now: it has URLs for the host and
    /// holds no lane of it (asked only of lanes this node does not hold).
    pub(super) fn wants_lane(&self, project: &ProjectId, work: &WorkItem) -> bool {
        let WorkItem::HostLane { host, .. } = work else { return false };
        self.lane_wanted_here(project, host)
            && !self.lane_ids(project, host).iter().any(|id| self.local.contains_key(id))
    }

    /// A lane's timer: claim it once it is free, wanted and out of any cooldown.
    pub(super) fn lane_timer(&mut self, item: ItemId, now: u64) {
        let Some(e) = self.items.get(&item) else { return };
        if !self.wants(&e.project, &e.work) {
            return;
        }
        let Some(since) = self.claimable_since(&item, e) else { return };
        let WorkItem::HostLane { host, .. } = &*e.work else { return };
        let cooldown = self
            .cooldown_of(&e.project, host)
            .map_or(0, |t| t.saturating_add(self.cfg.skew_margin_ms));
        let at = since.max(cooldown).max(self.warmup_end().unwrap_or(0));
        if now < at {
            self.schedule(item, at);
            return;
        }
        // A node tries first the lane it scores highest on, so nodes wanting one host spread
        // over its lanes rather than all claiming the same one.
        let rank = u32::MAX - (crate::hrw::score(&item, &self.me) >> 32) as u32;
        let key = (std::cmp::Reverse(self.priority(&e.project)), rank, since, item);
        self.ready[super::kind_index(crate::item::WorkKind::Lane)].insert(key);
    }

    /// After this node let go of lane `item` (lost it, or gave it back): if it still wants
    /// the host, it looks at the host's lanes again (the one it tried may have gone to a rival
    /// while another lane was free).
    pub(super) fn rearm_lanes(&mut self, item: &ItemId, now: u64) {
        let Some(e) = self.items.get(item) else { return };
        let (project, WorkItem::HostLane { host, .. }) = (e.project, &*e.work) else { return };
        if !self.lane_wanted_here(&project, host) {
            return;
        }
        for id in self.lane_ids(&project, &host.clone()) {
            if id != *item && !self.local.contains_key(&id) {
                self.schedule(id, now);
            }
        }
    }

    /// The most epochs a claim or release of `e` may jump ahead.
    pub(super) fn epoch_jump_max(e: &ItemEntry) -> u32 {
        if Self::is_lane(e) { LANE_EPOCH_JUMP_MAX } else { super::EPOCH_JUMP_MAX }
    }

    /// Keeps a lane claim that came before the release it follows (gossip delivers the two
    /// in any order): taken in again when a release of the lane is (see the module docs).
    pub(super) fn keep_early_lane_claim(
        &mut self,
        s: crate::signed::Signed<crate::message::Claim>,
    ) {
        let Ok(c) = s.verified_ref() else { return };
        let item = c.item;
        if !self.lanes.early.contains_key(&item) && self.lanes.early.len() >= LANE_EARLY_MAX {
            self.lanes.early.pop_first();
        }
        let kept = self.lanes.early.entry(item).or_default();
        if kept.len() < LANE_EARLY_PER_LANE && !kept.contains(&s) {
            kept.push(s);
        }
    }

    /// Takes in again the claims kept for lane `item`, after a release of it was.
    pub(super) fn take_early_lane_claims(&mut self, item: &ItemId, now: u64) {
        for s in self.lanes.early.remove(item).unwrap_or_default() {
            // Judged afresh; one still early is kept again by the same path.
            let _ = self.apply_envelope(crate::message::Envelope::Claim(s), now, false);
        }
    }

    /// How long after claiming epoch `epoch` of lane `e` (at `now`) this node may start
    /// fetching. None, beyond the claim's settle, when the hold follows no other node's
    /// ([`Engine::follows_another`]): the only requests it could meet are a rival claimant's
    /// (settled by claim order, as for every item) or its own, which its own limiter spaces.
    /// Otherwise what is left of the drain the last holder's release stated (the whole
    /// [`LANE_DRAIN_MS`] when it stated none), counted from when this node took the release
    /// in: it was taken in after it was signed, so waiting the drain from then (a duration on
    /// this node's clock) keeps two holders' requests apart without comparing clocks, and a
    /// claim made late (its chunk came after the release) does not wait the drain again. The
    /// whole [`LANE_DRAIN_MS`] from the claim when the epoch before ended otherwise (a lapsed
    /// lease, a failure, or nothing known).
    ///
    /// A release that reached this node longer after it was signed than the drain and the
    /// skew margin is not trusted to be the lane's last: a release comes within a trip when
    /// this node's view is current, so a late one says this view is behind (a node back from
    /// its snapshot, or caught up by sync), the lane may have changed hands since, and the
    /// whole drain from the claim gives the news time to come.
    pub(super) fn lane_start_wait(&self, e: &ItemEntry, epoch: u32, now: u64) -> u64 {
        if !self.follows_another(e, epoch) {
            return 0;
        }
        let fresh = LANE_DRAIN_MS.saturating_add(self.cfg.skew_margin_ms);
        match Self::prior_release(e, epoch) {
            Some((_, r)) if e.since.saturating_sub(r.at_ms) > fresh => LANE_DRAIN_MS,
            // A release that verified states no drain past `LANE_DRAIN_MS` (it is malformed).
            Some((_, r)) => {
                e.since.saturating_add(r.drain_ms.unwrap_or(LANE_DRAIN_MS)).saturating_sub(now)
            }
            None => LANE_DRAIN_MS,
        }
    }

    /// The release (and its signer) that ended the epoch before `epoch` of held lane `e`.
    fn prior_release(
        e: &ItemEntry,
        epoch: u32,
    ) -> Option<(crate::ids::NodeId, &crate::message::Release)> {
        let Phase::Held { prior: Some(crate::message::Envelope::Release(r)), .. } = &e.phase else {
            return None;
        };
        let signer = r.signer().node_id();
        r.verified_ref().ok().filter(|r| r.epoch.saturating_add(1) == epoch).map(|r| (signer, r))
    }

    /// Whether this node's hold of epoch `epoch` of lane `e` follows another node's. Not the
    /// lane's first epoch (nobody fetched under it), nor one after this node's own release,
    /// however old (its own drain is over, or still goes through its own limiter).
    fn follows_another(&self, e: &ItemEntry, epoch: u32) -> bool {
        epoch > 1 && Self::prior_release(e, epoch).is_none_or(|(who, _)| who != self.me)
    }

    /// Whether this node's hold of lane `item` follows another node's, so its first request
    /// must come a full period after that holder's last: drivers then start the host's
    /// limiter empty (see [`Engine::follows_another`]).
    pub fn lane_follows_another(&self, item: &ItemId) -> bool {
        let Some(e) = self.items.get(item) else { return true };
        let Phase::Held { epoch, .. } = e.phase else { return true };
        self.follows_another(e, epoch)
    }

    /// Whether `item` is a lane (its claims wait no settle time).
    pub(super) fn is_lane(e: &ItemEntry) -> bool {
        matches!(&*e.work, WorkItem::HostLane { .. })
    }
}
