//! The node actor: one task that owns the swarm, the claim engine, the store and the runners,
//! and turns I/O into engine inputs and engine outputs into I/O.
//!
//! Its loop waits on the swarm, the command channel from [`crate::client::Client`], work
//! reports from the runners, the engine's next timer, and the sync and flush timers. After
//! every engine input it drains the engine's outputs in order: records to persist are written
//! first (durably when this node is about to announce something of its own), then messages
//! are published and work is started or cancelled. Nothing here decides who owns an item.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, mdns};
use starling_protocol::engine::{SyncRequest, SyncSessions};
use starling_protocol::message::{SyncDelta, SyncDigest};
use starling_protocol::wire::MAX_ENVELOPE_BYTES;
use starling_protocol::{Engine, Envelope, Input, Output, ProjectId, Reject, WorkItem};
use tokio::sync::mpsc;

use crate::client::Command;
use crate::clock::now_ms;
use crate::control::Control;
use crate::hub::Hub;
use crate::nat::Nat;
use crate::net::RelayServer;
use crate::net::{self, Behaviour, BehaviourEvent};
use crate::runner::{Job, Runners, WorkReport};
use crate::seed::node::SeedParts;
use crate::seed::proof::Challenge;
use crate::seed::wire::{BlobRequest, BlobResponse};
use crate::store::Store;
use crate::torrent::node::TorrentParts;
use crate::views::NetStats;

mod commands;
mod lifetime;
mod proofs;
mod shards;

pub use lifetime::LIFETIME_SAVE_INTERVAL;

/// Sync requests in flight at once: every try of every open session (the engine's policy,
/// [`SyncSessions`]), since a request given up on may still be answered.
pub const SYNC_INFLIGHT_MAX: usize = starling_protocol::engine::SYNC_SESSIONS_MAX
    * starling_protocol::engine::SYNC_TRIES_MAX as usize;
/// How often non-durable commits are made durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often results no finished item names are looked for and removed.
pub const ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(300);
/// How old such a result must be before it is judged: a receipt still settling is left alone.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(600);
/// Most results of this node's tracked until the mesh is seen to keep them.
pub const PRODUCED_MAX: usize = 65_536;
/// How often the Kademlia routing table is refreshed.
pub const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(300);
/// How long shutdown keeps the swarm running so releases reach peers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(700);
/// Peers found in the DHT are dialled while fewer than this many are connected.
pub const KAD_DIAL_BELOW: usize = 16;
/// How often event readers hear that item counts changed (at most).
pub const EVENT_INTERVAL: Duration = Duration::from_millis(250);
/// Peers tracked for per-peer counters.
pub const PEER_STATS_MAX: usize = 4_096;
/// A live peer that could not be reached is dialled again after this.
pub const REDIAL_AFTER: Duration = Duration::from_secs(5);
/// How often a node behind NAT checks its relay slot.
pub const RELAY_TEND_INTERVAL: Duration = Duration::from_secs(1);
/// Longest sleep when the engine has no timer.
const IDLE_WAKEUP: Duration = Duration::from_secs(3600);

/// A uniform pick in `0..n` (n > 0) from the OS's randomness: the sync policy's peer draw.
fn draw(n: usize) -> usize {
    getrandom::u64().map_or(0, |r| (r % n as u64) as usize)
}

/// Debug builds only, for the sync tests: `STARLING_TEST_SYNC_MUTE=1` makes this node leave
/// every sync request unanswered, as a peer that is slow or gone would.
fn leaves_sync_unanswered() -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var_os("STARLING_TEST_SYNC_MUTE").is_some_and(|v| v == "1")
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// Sync requests a muted node holds unanswered (see [`leaves_sync_unanswered`]).
const MUTED_SYNC_MAX: usize = 64;

/// The next message of an optional channel; never resolves without one.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What the actor is built from ([`Actor::new`]).
#[allow(missing_debug_implementations)] // the swarm has no Debug
pub struct ActorParts {
    /// The libp2p swarm, listening already.
    pub swarm: Swarm<Behaviour>,
    /// The claim engine, restored from the store.
    pub engine: Engine,
    /// The node's database.
    pub store: Store,
    /// The work runners.
    pub runners: Runners,
    /// Work reports from the runners.
    pub reports: mpsc::Receiver<WorkReport>,
    /// Commands from the control API's [`crate::client::Client`].
    pub commands: mpsc::Receiver<Command>,
    /// Period of the periodic state sync.
    pub sync_interval: Duration,
    /// Log ring and event broadcast for the operator.
    pub hub: Arc<Hub>,
    /// The relay-client side (`None`: the node never asks for a relay).
    pub nat: Option<Nat>,
    /// The relay server's settings, grants and counters.
    pub relay_server: RelayServer,
    /// Seeding (`None`: the node neither fetches nor serves blobs).
    pub seed: Option<SeedParts>,
    /// Torrent duties (`None`: not taken).
    pub torrents: Option<TorrentParts>,
    /// The caps a flag gave this run (they win over the caps saved from the dashboard).
    pub caps_pinned: crate::control::PinnedCaps,
}

/// Everything the actor owns.
pub struct Actor {
    swarm: Swarm<Behaviour>,
    engine: Engine,
    store: Store,
    runners: Runners,
    reports: mpsc::Receiver<WorkReport>,
    commands: mpsc::Receiver<Command>,
    sync_interval: Duration,
    started_ms: u64,
    listen: Vec<Multiaddr>,
    stats: NetStats,
    store_error: Option<String>,
    /// The faults of the node's own found at the last look (see `health.rs`).
    faults: crate::health::Faults,
    /// A network probe under way (see `Crawler::probe_network`).
    probing: Option<tokio::task::JoinHandle<bool>>,
    /// Peers whose gossip score this node lowered because spot-checks marked them
    /// ([`net::MARKED_PEER_SCORE`]); bounded by the marked nodes the engine lists.
    scored_marked: BTreeSet<libp2p::PeerId>,
    /// Results this node produced and reported, not yet seen kept by the mesh, with the item
    /// and when (at most [`PRODUCED_MAX`]; see `Actor::sweep_orphans`).
    produced: std::collections::BTreeMap<
        starling_protocol::Digest,
        (starling_protocol::ItemId, std::time::Instant),
    >,
    /// Log ring and event broadcast for the operator.
    hub: Arc<Hub>,
    /// The operator's controls and saved choices (pause, subscriptions, priorities).
    control: Control,
    /// Item counts last announced on the event stream.
    announced: Option<starling_protocol::ItemCounts>,
    /// The relay-client side: asking for a relay slot and listening through it.
    nat: Option<Nat>,
    /// The relay server's grants and counters.
    relay_server: RelayServer,
    /// Open relayed connections per peer.
    relayed: HashMap<PeerId, u32>,
    /// Seeding: the blob store, server and fetcher's requests.
    seed: Option<SeedParts>,
    /// Torrent duties: the runner's handle and peers' BitTorrent addresses.
    torrents: Option<TorrentParts>,
    /// Sync answers applied per peer (bounded by [`PEER_STATS_MAX`]).
    synced_from: HashMap<PeerId, u64>,
    /// Connections by transport, for `/metrics`.
    conn_metrics: crate::metrics::ConnCounters,
    /// When [`Actor::tend_connections`] last dialled a peer.
    dialled: HashMap<PeerId, std::time::Instant>,
    /// Sync sessions, run by the engine's policy.
    sync: SyncSessions<PeerId>,
    /// Sync requests in flight: their session and number within it.
    sync_inflight: HashMap<OutboundRequestId, (u32, u32)>,
    /// Sync requests left unanswered on purpose (test switch), oldest first.
    muted_sync: VecDeque<request_response::ResponseChannel<Vec<u8>>>,
    provided: BTreeSet<ProjectId>,
    dirty: bool,
    /// What the node contributed over all its runs.
    lifetime: lifetime::Lifetime,
    /// Held chunks last told to the engine as waiting on lanes.
    lane_blocked: (u16, u16),
    /// Storage proofs being cut or waiting (see `proofs.rs`).
    proofs: proofs::Proofs,
    /// The shard topics the node is in (see `shards.rs`).
    shards: shards::ShardTopics,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").field("node", &self.engine.node_id()).finish_non_exhaustive()
    }
}

impl Actor {
    /// Assembles the actor from its parts; call [`Actor::run`] to drive it. The operator's
    /// saved settings are applied to the engine here.
    pub fn new(parts: ActorParts) -> Self {
        let ActorParts {
            swarm,
            engine,
            store,
            runners,
            reports,
            commands,
            sync_interval,
            hub,
            nat,
            relay_server,
            seed,
            torrents,
            caps_pinned,
        } = parts;
        let control = Control::load(&store, hub.clone());
        let started_ms = now_ms();
        let lifetime = lifetime::Lifetime::load(&store, started_ms);
        let proofs = proofs::Proofs::new(engine.stats().unproven);
        let mut actor = Self {
            swarm,
            engine,
            store,
            runners,
            reports,
            commands,
            sync_interval,
            started_ms,
            listen: Vec::new(),
            stats: NetStats::default(),
            store_error: None,
            faults: Default::default(),
            probing: None,
            produced: Default::default(),
            scored_marked: BTreeSet::new(),
            hub,
            control,
            announced: None,
            nat,
            relay_server,
            relayed: HashMap::new(),
            seed,
            torrents,
            synced_from: HashMap::new(),
            conn_metrics: Default::default(),
            dialled: HashMap::new(),
            sync: SyncSessions::new(),
            sync_inflight: HashMap::new(),
            muted_sync: VecDeque::new(),
            provided: BTreeSet::new(),
            dirty: false,
            lifetime,
            lane_blocked: (0, 0),
            proofs,
            shards: Default::default(),
        };
        actor.control.restore(&mut actor.engine);
        let (control, mut io) = actor.control();
        control.restore_caps(&mut io, caps_pinned);
        actor
    }

    /// Dials the bootstrap peers and peers remembered from earlier runs.
    pub fn dial_initial(&mut self, bootstrap: &[Multiaddr]) {
        for addr in bootstrap {
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        let known = self.store.known_peers().unwrap_or_default();
        for (peer, addrs) in known {
            let Ok(peer) = peer.parse::<PeerId>() else { continue };
            let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
            for a in &addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer).addresses(addrs).build();
            let _ = self.swarm.dial(opts);
        }
    }

    /// Runs until `shutdown` resolves, then gives back held work and flushes the store.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        self.join_trusted_topics();
        crate::nat::advertise_relay(&mut self.swarm, &self.engine);
        self.drive();
        let mut sync_timer = tokio::time::interval(self.sync_interval);
        let mut flush_timer = tokio::time::interval(FLUSH_INTERVAL);
        let mut kad_timer = tokio::time::interval(KAD_BOOTSTRAP_INTERVAL);
        let mut event_timer = tokio::time::interval(EVENT_INTERVAL);
        let mut relay_timer = tokio::time::interval(RELAY_TEND_INTERVAL);
        let mut orphan_timer = tokio::time::interval(ORPHAN_SWEEP_INTERVAL);
        let mut lifetime_timer = tokio::time::interval(LIFETIME_SAVE_INTERVAL);
        // Crawl tasks wait on the lanes this actor asks the engine for (see `crawl/lanes.rs`).
        let crawler = self.runners.crawler().cloned();
        if let Some(c) = &crawler {
            c.lanes().open();
        }
        let lanes_changed = async |c: &Option<Arc<crate::crawl::Crawler>>| match c {
            Some(c) => c.lanes().changed().await,
            None => std::future::pending().await,
        };
        let mut blob_commands = self.seed.as_mut().and_then(|s| s.commands.take());
        let mut served = self.seed.as_mut().and_then(|s| s.served.take());
        let mut proof_answers = self.proofs.answers.take();
        loop {
            let until = |t: u64| Duration::from_millis(t.saturating_sub(now_ms()));
            let wake = self.engine.next_wakeup().map_or(IDLE_WAKEUP, until);
            let sync_wake = self.sync.next_deadline().map_or(IDLE_WAKEUP, until);
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                () = lanes_changed(&crawler) => self.tend_lanes(),
                Some(report) = self.reports.recv() => self.on_report(report),
                Some(cmd) = recv_opt(&mut blob_commands) => {
                    if let Some(seed) = &mut self.seed {
                        seed.on_command(&mut self.swarm, &mut self.stats, cmd);
                    }
                }
                Some((channel, answer)) = recv_opt(&mut served) => {
                    let _ = self.swarm.behaviour_mut().blob.send_response(channel, answer);
                }
                Some((challenge, answer)) = recv_opt(&mut proof_answers) => {
                    self.on_proof(challenge, answer);
                }
                _ = tokio::time::sleep(wake) => { let _ = self.handle(Input::Tick); }
                _ = sync_timer.tick() => self.periodic_sync(),
                _ = tokio::time::sleep(sync_wake) => self.expire_sync(),
                _ = flush_timer.tick() => {
                    self.flush(None);
                    self.tend_shard_topics();
                    self.tend_health();
                    self.tell_blocked();
                    self.score_marked_peers();
                }
                _ = kad_timer.tick() => { let _ = self.swarm.behaviour_mut().kad.bootstrap(); }
                _ = orphan_timer.tick() => self.sweep_orphans(),
                _ = lifetime_timer.tick() => self.save_lifetime(),
                _ = event_timer.tick() => self.announce_changes(),
                _ = relay_timer.tick() => {
                    if let Some(nat) = &mut self.nat {
                        nat.tend(&mut self.swarm, &mut self.engine);
                        self.drive();
                    }
                    self.tend_connections();
                    if let Some(t) = &mut self.torrents {
                        t.tend(&self.engine);
                    }
                }
                () = &mut shutdown => break,
            }
        }
        self.shutdown().await
    }

    async fn shutdown(mut self) -> Result<()> {
        tracing::info!(
            holding = self.engine.local_work().count(),
            "shutting down: releasing held work"
        );
        let _ = self.handle(Input::Shutdown);
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                () = &mut grace => break,
            }
        }
        self.save_lifetime();
        let seq = self.engine.snapshot().presence_seq;
        self.store.flush(Some(seq)).map_err(|e| anyhow!("cannot flush the database: {e}"))?;
        tracing::info!("stopped");
        Ok(())
    }

    /// Dials live peers (in the engine's view) that no connection reaches yet, while few are
    /// connected: a peer behind NAT is reached this way through its relay once Kademlia
    /// knows its relayed address.
    fn tend_connections(&mut self) {
        let connected = self.swarm.connected_peers().count();
        if connected == 0 || connected >= KAD_DIAL_BELOW {
            return;
        }
        let me = *self.swarm.local_peer_id();
        let now = std::time::Instant::now();
        self.dialled.retain(|_, at| now.duration_since(*at) < REDIAL_AFTER);
        let missing: Vec<(PeerId, starling_protocol::NodeId)> = self
            .engine
            .peers()
            .filter_map(|p| net::peer_id_of(&p.node).map(|id| (id, p.node)))
            .filter(|(p, _)| {
                *p != me && !self.swarm.is_connected(p) && !self.dialled.contains_key(p)
            })
            .take(KAD_DIAL_BELOW - connected)
            .collect();
        for (peer, node) in missing {
            self.dialled.insert(peer, now);
            // A peer behind NAT is reachable through the relay holding its slot.
            let through_relay =
                self.nat.as_ref().and_then(|n| n.relay_address_of(&self.engine, &node));
            let through_relay = through_relay.into_iter().collect();
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(through_relay)
                .extend_addresses_through_behaviour()
                .build();
            let _ = self.swarm.dial(opts);
            // The addresses we know may be stale (a relay that died): ask the DHT too, and
            // dial what it finds (see `dial_found`).
            self.swarm.behaviour_mut().kad.get_closest_peers(peer);
        }
    }

    /// Dials peers a DHT lookup found, with the addresses it found (a relayed address for a
    /// node behind NAT), when the engine counts them live and no connection reaches them.
    fn dial_found(&mut self, found: Vec<kad::PeerInfo>) {
        let me = *self.swarm.local_peer_id();
        for info in found {
            tracing::debug!(peer = %info.peer_id, addrs = ?info.addrs, "the DHT found a peer");
            if info.peer_id == me
                || info.addrs.is_empty()
                || self.swarm.is_connected(&info.peer_id)
                || self.swarm.connected_peers().count() >= KAD_DIAL_BELOW
            {
                continue;
            }
            let live = self.engine.peers().any(|p| net::peer_id_of(&p.node) == Some(info.peer_id));
            if live {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(info.peer_id)
                    .addresses(info.addrs)
                    .build();
                let _ = self.swarm.dial(opts);
            }
        }
    }

    /// Tells event readers that item counts changed since the last announcement.
    fn announce_changes(&mut self) {
        if !self.hub.has_readers() {
            return;
        }
        let items = self.engine.counts(None);
        if self.announced != Some(items) {
            self.announced = Some(items);
            self.hub.emit(crate::views::NodeEvent::Changed { items });
        }
    }

    /// Over the disk cap the node claims no work and gives back what it holds until there
    /// is room again: one of the faults [`Actor::tend_health`] looks after.
    fn check_disk_cap(&mut self) {
        let over = self.runners.over_disk_cap();
        if over != self.faults.disk {
            self.tend_health();
        }
    }

    /// Removes results this node produced that the mesh did not keep: the item ended with
    /// another result (a claim the mesh refused, a result fenced or replaced) or failed, a
    /// spot-check overturned it, or it is a check's result the mesh keeps no use for. A
    /// result is judged once it is [`ORPHAN_MIN_AGE`] old and no check of it is under way,
    /// and forgotten once kept; results from before a restart are not tracked. The files go
    /// off the actor.
    /// A peer that spot-checks marked for any project loses gossip score (its application
    /// score is set to [`net::MARKED_PEER_SCORE`]), and gets it back once it is no longer
    /// marked. Set again each second, since gossipsub forgets a peer's score some time after
    /// it disconnects. What a mark does to the peer's work is the engine's (every result of it
    /// is checked); this is the transport's side.
    fn score_marked_peers(&mut self) {
        let marked: BTreeSet<libp2p::PeerId> = self
            .engine
            .projects()
            .flat_map(|(id, _)| self.engine.marked(&id))
            .filter_map(|(node, _)| net::peer_id_of(&node))
            .collect();
        if marked.is_empty() && self.scored_marked.is_empty() {
            return;
        }
        let g = &mut self.swarm.behaviour_mut().gossipsub;
        for peer in self.scored_marked.difference(&marked) {
            g.set_application_score(peer, 0.0);
        }
        for peer in &marked {
            g.set_application_score(peer, net::MARKED_PEER_SCORE);
        }
        self.scored_marked = marked;
    }

    fn sweep_orphans(&mut self) {
        let Some(crawler) = self.runners.crawler() else { return };
        let dir = crawler.config().results_dir.clone();
        let mut refused = Vec::new();
        self.produced.retain(|digest, (item, at)| {
            if at.elapsed() < ORPHAN_MIN_AGE {
                return true;
            }
            match crate::checks::fate(&self.engine, item, digest) {
                crate::checks::Fate::Kept => false,
                crate::checks::Fate::Dropped => {
                    refused.push(*digest);
                    false
                }
                crate::checks::Fate::Unsettled => true,
            }
        });
        if refused.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            match crate::crawl::warc::remove_results(&dir, &refused) {
                Ok((0, _)) => {}
                Ok((files, bytes)) => tracing::info!(
                    files,
                    bytes,
                    "removed results of this node's that the mesh did not keep"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot remove refused results"),
            }
        });
    }

    /// Looks at the node's own faults (see `health.rs`): retries a failing store, probes a
    /// dead network, and tells the engine when the node can or cannot work.
    fn tend_health(&mut self) {
        if let Some(e) = &self.store_error {
            match self.store.recover() {
                // Writable again: what was not written meanwhile (records learnt from peers,
                // releases) is written now, from the engine, which never lost it.
                Ok(()) => match self.store.persist(&self.engine.stored_records(), true) {
                    Ok(()) => {
                        self.store_error = None;
                        self.dirty = false;
                    }
                    Err(again) => self.store_error = Some(again.to_string()),
                },
                Err(again) if again.to_string() != *e => self.store_error = Some(again.to_string()),
                Err(_) => {}
            }
        }
        let network = self.runners.crawler().is_some_and(|c| c.network_down());
        if network
            && self.probing.as_ref().is_none_or(|p| p.is_finished())
            && let Some(c) = self.runners.crawler().cloned()
        {
            self.probing = Some(tokio::spawn(async move { c.probe_network().await }));
        }
        let clock = self.engine.clock();
        let margin = self.engine.config().skew_margin_ms;
        let now = crate::health::Faults {
            store: self.store_error.clone(),
            disk: self.runners.over_disk_cap(),
            network,
            clock: clock.off.then(|| (clock.offset_ms.unwrap_or(0), margin)),
        };
        if now == self.faults {
            return;
        }
        crate::health::log_change(&self.faults, &now);
        let local = now.local();
        self.faults = now;
        if local != self.engine.is_unfit() {
            let _ = self.handle(Input::LocalFault(local));
        }
    }

    // ---- engine --------------------------------------------------------------------------

    /// Feeds one input and carries out the outputs.
    fn handle(&mut self, input: Input) -> Result<(), Reject> {
        let r = self.engine.handle(input, now_ms());
        self.drive();
        r
    }

    /// The crawler's lane gate, if this node crawls.
    fn lanes(&self) -> Option<&crate::crawl::lanes::LaneGate> {
        self.runners.crawler().map(|c| c.lanes())
    }

    /// Tells the engine which hosts the crawl tasks want lanes of now, and which hosts told
    /// them to wait; a host without lanes (node scope, or past the project's lane hosts) is
    /// fetched from under the node's own limits.
    fn tend_lanes(&mut self) {
        let Some(crawler) = self.runners.crawler().cloned() else { return };
        let gate = crawler.lanes();
        let (wants, refusals) = gate.take_changes();
        for (project, host, wanted, drain_ms) in wants {
            tracing::debug!(%host, wanted, drain_ms, "lane want");
            let input = Input::WantLane { project, host: host.clone(), wanted, drain_ms };
            let taken = self.handle(input);
            if wanted && (taken.is_err() || self.engine.lane_ids(&project, &host).is_empty()) {
                if let Err(r) = taken {
                    tracing::warn!(%host, reject = ?r, "cannot ask for a lane: fetching under this node's own limit");
                }
                gate.ungated(project, &host);
            }
        }
        for (project, host, until_ms) in refusals {
            tracing::info!(%host, until_ms, "host asked to be left alone: telling the mesh");
            let _ = self.handle(Input::HostRefused { project, host, until_ms });
        }
        self.tell_blocked();
    }

    /// Tells the engine how many held chunks wait on lanes held elsewhere, when that changed.
    fn tell_blocked(&mut self) {
        let Some((blocked, finishing)) = self.lanes().map(|g| g.blocked()) else { return };
        if (blocked, finishing) != self.lane_blocked {
            self.lane_blocked = (blocked, finishing);
            let _ = self.handle(Input::LaneBlocked { blocked, finishing });
        }
    }

    /// Drains the engine's outputs: persist first, then act.
    fn drive(&mut self) {
        let mut again = false;
        let mut persist = Vec::new();
        let mut act = Vec::new();
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Persist(env) => persist.push(env),
                other => act.push(other),
            }
        }
        // A new directory may vouch for projects this node has not heard of yet.
        let new_directory = persist.iter().any(|e| matches!(e, Envelope::Directory(_)));
        if !persist.is_empty() {
            // A result of ours is on disk before the mesh hears of it, so a crash right after
            // never costs the work. Everything else (claims, renewals, others' records) is
            // made durable within FLUSH_INTERVAL: the peers hold it too and sync brings it
            // back, and an fsync per renewal would stall the actor.
            let durable = act
                .iter()
                .any(|o| matches!(o, Output::Publish(Envelope::Receipt(_) | Envelope::Failure(_))));
            match self.store.persist(&persist, durable) {
                Ok(()) => self.dirty |= !durable,
                Err(e) => {
                    if self.store_error.is_none() {
                        tracing::error!(error = %e, "cannot write to the database");
                    }
                    self.store_error = Some(e.to_string());
                }
            }
        }
        for out in act {
            match out {
                Output::Publish(env) => self.publish(&env),
                Output::StartWork {
                    item,
                    epoch,
                    project,
                    work: WorkItem::HostLane { host, .. },
                } => {
                    tracing::debug!(item = %item.short(), epoch, %host, "lane granted");
                    let after_another = self.engine.lane_follows_another(&item);
                    // A lane claimed with a chunk may come before the chunk's tasks ask for it:
                    // kept while the engine still wants it for that chunk.
                    let ahead = self.engine.lane_wanted_here(&project, &host);
                    let wanted = self
                        .lanes()
                        .is_some_and(|g| g.granted(project, &host, epoch, after_another, ahead));
                    if !wanted {
                        // Resumed after a restart, or wanted no more meanwhile: give it back.
                        let _ = self.engine.handle(
                            Input::WantLane { project, host, wanted: false, drain_ms: 0 },
                            now_ms(),
                        );
                        again = true;
                    }
                }
                Output::HostCooldown { project, host, until_ms } => {
                    tracing::info!(%host, until_ms, "another node was told to wait: cooling down");
                    if let Some(g) = self.lanes() {
                        g.cooldown(project, &host, until_ms);
                    }
                }
                Output::StartWork { item, epoch, project, work } => {
                    tracing::debug!(item = %item.short(), epoch, "start work");
                    if let Some((_, m)) = self.engine.projects().find(|(id, _)| *id == project) {
                        self.runners.note_manifest(project, m);
                    }
                    if let Some(seed) = &self.seed {
                        seed.note_holders(&self.engine, &project, &work);
                    }
                    if let Some(t) = &mut self.torrents {
                        t.note_peers(&self.engine, &project, &work);
                    }
                    // A check fetches its chunk's URLs: looked up here, not copied into it.
                    let source_urls = match &work {
                        WorkItem::Verify { source, .. } => match self.engine.item_work(source) {
                            Some((_, WorkItem::CrawlChunk { urls })) => Some(urls.clone()),
                            _ => None,
                        },
                        _ => None,
                    };
                    self.runners.start(Job { source_urls, ..Job::new(item, epoch, project, work) });
                }
                Output::ProofDue { item, epoch, slot, result, size, offset, len } => {
                    let c = Challenge { item, epoch, slot, result, size, offset, len };
                    self.proof_due(c);
                    // An answer given at once has outputs of its own.
                    again = true;
                }
                Output::CancelWork { item, epoch, reason } => {
                    tracing::debug!(item = %item.short(), epoch, ?reason, "cancel work");
                    match self.engine.item_work(&item) {
                        Some((project, WorkItem::HostLane { host, .. })) => {
                            if let Some(g) = self.runners.crawler().map(|c| c.lanes()) {
                                g.revoked(project, host);
                            }
                        }
                        _ => self.runners.cancel(item, epoch),
                    }
                }
                _ => {}
            }
        }
        if new_directory {
            self.join_trusted_topics();
            // Fetch the manifests and batches it vouches for from the peers that hold them.
            let peers: Vec<_> = self.swarm.connected_peers().copied().collect();
            for p in peers {
                self.start_sync(p);
            }
        }
        self.provide_new_projects();
        self.tend_shards();
        self.log_unproven();
        // Outputs of the lanes given back and the proofs answered above.
        if again {
            self.drive();
        }
    }

    /// What this run's parts counted since start, for the lifetime figures.
    fn run_counts(&self) -> lifetime::RunCounts {
        let served = self.seed.as_ref().map_or(0, |s| s.stats().bytes_served);
        let uploaded = self.torrents.as_ref().map_or(0, |t| t.control.totals().uploaded_bytes);
        let circuits =
            self.relay_server.counters.circuits.load(std::sync::atomic::Ordering::Relaxed);
        lifetime::RunCounts { bytes_seeded: served + uploaded, relay_circuits: circuits }
    }

    /// The lifetime figures now.
    pub(crate) fn lifetime(&self) -> crate::views::LifetimeView {
        self.lifetime.view(now_ms(), self.run_counts())
    }

    /// Writes the lifetime figures (every [`LIFETIME_SAVE_INTERVAL`] and at shutdown).
    fn save_lifetime(&mut self) {
        let run = self.run_counts();
        if let Err(e) = self.lifetime.save(&self.store, now_ms(), run) {
            tracing::debug!(error = %e, "cannot save the lifetime figures");
            self.store_error = Some(e.to_string());
        }
    }

    fn flush(&mut self, presence_seq: Option<u64>) {
        if !self.dirty && presence_seq.is_none() {
            return;
        }
        match self.store.flush(presence_seq) {
            Ok(()) => self.dirty = false,
            Err(e) => self.store_error = Some(e.to_string()),
        }
    }

    fn on_report(&mut self, report: WorkReport) {
        self.runners.reported(&report);
        let done = matches!(report, WorkReport::Done { .. });
        // Only crawl results (a chunk's or a check's) are this node's own: a seeding copy is
        // someone else's result.
        if let WorkReport::Done(d) = &report
            && self.produced.len() < PRODUCED_MAX
            && self.engine.item_work(&d.item).is_some_and(|(_, w)| {
                matches!(w, WorkItem::CrawlChunk { .. } | WorkItem::Verify { .. })
            })
        {
            self.produced.insert(d.result, (d.item, std::time::Instant::now()));
        }
        let finished = match &report {
            WorkReport::Done(d) => {
                self.engine.item_work(&d.item).map(|(_, w)| (w.clone(), d.clone()))
            }
            WorkReport::Failed { .. } => None,
        };
        let reported = match &report {
            WorkReport::Done(d) => d.item,
            WorkReport::Failed { item, .. } => *item,
        };
        let input = match report {
            WorkReport::Done(done) => Input::WorkDone(done),
            WorkReport::Failed { item, epoch, reason, retryable } => {
                Input::WorkFailed { item, epoch, reason, retryable }
            }
        };
        if self.handle(input).is_ok()
            && let Some((work, d)) = finished
        {
            self.lifetime.finished(&work, &d);
        }
        self.proof_fetch_reported(&reported);
        // The result may cross the disk cap: it counts (it is on disk and in the receipt),
        // and the node stops there, giving back whatever the freed slot took meanwhile.
        if done {
            self.check_disk_cap();
        }
    }

    // ---- gossip --------------------------------------------------------------------------

    fn publish(&mut self, env: &Envelope) {
        self.publish_routed(env);
    }

    /// Publishes `env` on `topic`, unless it is too large for gossip.
    fn publish_on(&mut self, topic: IdentTopic, env: &Envelope) {
        let bytes = env.to_bytes();
        if bytes.len() > MAX_ENVELOPE_BYTES {
            tracing::info!(kind = env.kind(), "too large for gossip; peers get it by sync");
            return;
        }
        let len = bytes.len() as u64;
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {
                self.stats.published += 1;
                self.stats.gossip_bytes_published += len;
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::debug!(kind = env.kind(), "no peers to gossip to yet");
            }
            Err(e) => tracing::debug!(kind = env.kind(), error = %e, "gossip publish failed"),
        }
    }

    /// Joins the topic of every trusted key, followed curator and owner a followed directory
    /// lists, that is not joined yet.
    fn join_trusted_topics(&mut self) {
        let mut keys: std::collections::BTreeSet<_> = self.engine.trusted().copied().collect();
        for (curator, dir) in self.engine.following() {
            keys.insert(*curator);
            keys.extend(dir.iter().flat_map(|d| d.entries.iter().map(|e| e.owner)));
        }
        for key in keys {
            let t = net::owner_topic(&key);
            if self.swarm.behaviour().gossipsub.topics().any(|h| *h == t.hash()) {
                continue;
            }
            if let Err(e) = net::join(&mut self.swarm.behaviour_mut().gossipsub, &t) {
                tracing::warn!(error = %e, "cannot join a project owner's topic");
            }
        }
    }

    /// Announces (and looks for other holders of) projects learned since the last call.
    fn provide_new_projects(&mut self) {
        if self.engine.projects().count() == self.provided.len() {
            return;
        }
        let new: Vec<_> = self
            .engine
            .projects()
            .map(|(id, _)| id)
            .filter(|id| !self.provided.contains(id))
            .collect();
        for id in new {
            self.provided.insert(id);
            let key = kad::RecordKey::new(id.as_bytes());
            let kad = &mut self.swarm.behaviour_mut().kad;
            if let Err(e) = kad.start_providing(key.clone()) {
                tracing::debug!(error = %e, "cannot provide a project record");
            }
            kad.get_providers(key);
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: &[u8]) {
        self.stats.gossip_received += 1;
        self.stats.gossip_bytes_received += data.len() as u64;
        let verdict = match Envelope::from_bytes(data) {
            Err(e) => {
                tracing::debug!(peer = %source, error = %e, "undecodable gossip");
                self.stats.gossip_undecodable += 1;
                MessageAcceptance::Reject
            }
            Ok(env) => match self.handle(Input::Message(env)) {
                Ok(()) => MessageAcceptance::Accept,
                Err(r) if r.penalize() && !self.doubts_own_clock(r) => {
                    tracing::info!(peer = %source, reason = r.name(), "rejected gossip");
                    MessageAcceptance::Reject
                }
                Err(_) => MessageAcceptance::Ignore,
            },
        };
        match verdict {
            MessageAcceptance::Accept => self.stats.gossip_accepted += 1,
            MessageAcceptance::Reject => self.stats.gossip_rejected += 1,
            MessageAcceptance::Ignore => self.stats.gossip_ignored += 1,
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, verdict);
    }

    /// Whether `r` is a rejection for time (a message from the future) that this node cannot
    /// lay on the sender, as its own clock was not judged right against its peers' (judged
    /// off, or not judged yet). Penalised, such messages would soon have gossipsub stop
    /// sending to (and taking from) every honest peer, and a node whose clock is behind would
    /// cut itself off from the heartbeats that tell it so. The engine still refuses them.
    fn doubts_own_clock(&self, r: Reject) -> bool {
        let clock = self.engine.clock();
        r == Reject::FromTheFuture && (clock.off || clock.offset_ms.is_none())
    }

    // ---- sync ----------------------------------------------------------------------------

    /// Opens a sync session with `peer`, unless one is asking it already or every session
    /// slot is taken (the engine's policy, [`SyncSessions`]).
    fn start_sync(&mut self, peer: PeerId) {
        if let Some(req) = self.sync.open(now_ms(), Some(peer), &[], &mut draw) {
            self.send_sync(req);
        }
    }

    /// The periodic sync: a session with a connected peer drawn at random (of its shards' when
    /// the node's projects are all split, see `sync_candidates`).
    fn periodic_sync(&mut self) {
        let peers = self.sync_candidates();
        if let Some(req) = self.sync.open(now_ms(), None, &peers, &mut draw) {
            self.send_sync(req);
        }
    }

    /// Sessions whose request went unanswered past the policy's timeout ask another peer.
    fn expire_sync(&mut self) {
        let peers = self.sync_candidates();
        for req in self.sync.expire(now_ms(), &peers, &mut draw) {
            self.send_sync(req);
        }
    }

    fn send_sync(&mut self, req: SyncRequest<PeerId>) {
        // Requests given up on stay in flight until answered or failed; past the bound a new
        // one is not sent and its session moves on at its deadline.
        if self.sync_inflight.len() >= SYNC_INFLIGHT_MAX {
            tracing::debug!(peer = %req.peer, "sync requests all in flight; skipped");
            return;
        }
        let digest = self.engine.sync_digest().to_bytes();
        let id = self.swarm.behaviour_mut().sync.send_request(&req.peer, digest);
        self.sync_inflight.insert(id, (req.session, req.seq));
        self.stats.sync_requests += 1;
        if req.tries > 0 {
            self.stats.sync_retries += 1;
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                if leaves_sync_unanswered() {
                    if self.muted_sync.len() >= MUTED_SYNC_MAX {
                        self.muted_sync.pop_front();
                    }
                    self.muted_sync.push_back(channel);
                    return;
                }
                let delta = match SyncDigest::from_bytes(&request) {
                    Ok(d) => self.engine.sync_delta(&d),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "undecodable sync digest");
                        SyncDelta { envelopes: Vec::new(), more: false }
                    }
                };
                self.stats.sync_served += 1;
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, delta.to_bytes());
            }
            Event::Message {
                peer, message: Message::Response { request_id, response }, ..
            } => {
                let req = self.sync_inflight.remove(&request_id);
                let delta = match SyncDelta::from_bytes(&response) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "undecodable sync delta");
                        return;
                    }
                };
                self.stats.sync_responses += 1;
                if self.synced_from.len() >= PEER_STATS_MAX && !self.synced_from.contains_key(&peer)
                {
                    let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                    self.synced_from.retain(|p, _| connected.contains(p));
                }
                if self.synced_from.len() < PEER_STATS_MAX || self.synced_from.contains_key(&peer) {
                    *self.synced_from.entry(peer).or_default() += 1;
                }
                let now = now_ms();
                for env in delta.envelopes {
                    if self.engine.handle(Input::Message(env), now).is_ok() {
                        self.stats.sync_applied += 1;
                    }
                }
                self.drive();
                let next = req.and_then(|(session, seq)| {
                    self.sync.answered(now_ms(), session, seq, peer, delta.more)
                });
                if let Some(next) = next {
                    self.send_sync(next);
                }
            }
            Event::OutboundFailure { request_id, peer, error, .. } => {
                tracing::debug!(%peer, %error, "sync request failed");
                let Some((session, seq)) = self.sync_inflight.remove(&request_id) else { return };
                let peers: Vec<PeerId> =
                    self.swarm.connected_peers().copied().filter(|p| *p != peer).collect();
                if let Some(req) = self.sync.failed(now_ms(), session, seq, &peers, &mut draw) {
                    self.send_sync(req);
                }
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }

    // ---- blobs ---------------------------------------------------------------------------

    /// Blob protocol events: the torrent part's port questions and their answers, and the
    /// seeding part's requests and answers.
    fn on_blob(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if self.torrents.as_mut().is_some_and(|t| t.answer(request_id, &response)) {
                    return;
                }
                if let Some(seed) = &mut self.seed {
                    seed.on_response(request_id, response);
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if self.torrents.as_mut().is_some_and(|t| t.question_failed(request_id)) {
                    return;
                }
                if let Some(seed) = &mut self.seed {
                    seed.on_failure(request_id, &error);
                }
            }
            Event::Message {
                message: Message::Request { request: BlobRequest::TorrentAddr, channel, .. },
                ..
            } => {
                let port = self.torrents.as_ref().map_or(0, |t| t.port());
                let answer = BlobResponse::TorrentAddr { port };
                let _ = self.swarm.behaviour_mut().blob.send_response(channel, answer);
            }
            Event::Message { message: Message::Request { request, channel, .. }, .. } => {
                match &mut self.seed {
                    Some(seed) => seed.on_request(&mut self.swarm, request, channel),
                    None => {
                        let none = BlobResponse::NotFound;
                        let _ = self.swarm.behaviour_mut().blob.send_response(channel, none);
                    }
                }
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }

    // ---- swarm ---------------------------------------------------------------------------

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.conn_metrics.on_swarm(&event);
        match event {
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // The operator says this node is reachable where it listens: peers (and the
                // relay server, which serves only with a confirmed address) may take it so.
                let public = self.nat.as_ref().is_some_and(Nat::public_by_setting);
                if public && !address.iter().any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit) {
                    self.swarm.add_external_address(address.clone());
                }
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen.retain(|a| *a != address),
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                if let Err(e) = &reason {
                    tracing::info!(error = %e, "a listener closed");
                }
                self.listen.retain(|a| !addresses.contains(a));
                if let Some(nat) = &mut self.nat {
                    nat.listener_closed(listener_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, endpoint, num_established, .. }
                if endpoint.is_relayed() =>
            {
                if let Some(n) = self.relayed.get_mut(&peer_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.relayed.remove(&peer_id);
                    }
                }
                if num_established == 0 {
                    tracing::debug!(peer = %peer_id, "disconnected");
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, endpoint, .. } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                if endpoint.is_relayed() {
                    tracing::info!(peer = %peer_id, "connected through a relay");
                    *self.relayed.entry(peer_id).or_default() += 1;
                }
                if num_established.get() == 1 {
                    if let Some(t) = &mut self.torrents {
                        t.peer_connected(&mut self.swarm, peer_id, endpoint.get_remote_address());
                    }
                    self.start_sync(peer_id);
                    if self.swarm.connected_peers().count() == 1 {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                tracing::debug!(peer = %peer_id, "disconnected");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }

    /// Routes one behaviour's event to the part (or the handler below) that deals with it.
    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                self.on_gossip(propagation_source, message_id, &message.data);
            }
            BehaviourEvent::Sync(ev) => self.on_sync(ev),
            BehaviourEvent::Blob(ev) => self.on_blob(ev),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, &info);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_mdns_found(found),
            BehaviourEvent::Kad(ev) => self.on_kad(ev),
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { old, new }) => {
                tracing::info!(?old, ?new, "reachability changed");
                if let Some(nat) = &mut self.nat {
                    let relay = self.relay_server.settings.enabled;
                    nat.on_autonat(&new, relay, &mut self.swarm, &mut self.engine);
                    self.drive();
                }
            }
            BehaviourEvent::Relay(ev) => {
                crate::relay::on_server_event(&ev, &self.relay_server.counters);
            }
            BehaviourEvent::RelayClient(ev) => {
                if let Some(nat) = &self.nat {
                    nat.on_client_event(&ev);
                }
            }
            BehaviourEvent::Dcutr(ev) => match ev.result {
                Ok(_) => {
                    tracing::info!(peer = %ev.remote_peer_id, "direct connection by hole punching")
                }
                Err(e) => {
                    tracing::debug!(peer = %ev.remote_peer_id, error = %e, "hole punching failed")
                }
            },
            _ => {}
        }
    }

    /// A peer told us where it listens: the NAT part and Kademlia learn the addresses, and
    /// the store keeps them for the next start.
    fn on_identified(&mut self, peer: PeerId, info: &identify::Info) {
        let addrs: Vec<String> = info.listen_addrs.iter().map(ToString::to_string).collect();
        if let Some(nat) = &mut self.nat {
            nat.learn(peer, &info.listen_addrs);
        }
        // Only peers that speak Starling's DHT protocol enter the routing table.
        net::route_identified(&mut self.swarm.behaviour_mut().kad, &peer, info);
        if let Err(e) = self.store.remember_peer(&peer.to_string(), &addrs) {
            self.store_error = Some(e.to_string());
        }
        self.dirty = true;
    }

    /// Peers found on the LAN are dialled.
    fn on_mdns_found(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        for (peer, addr) in found {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            if !self.swarm.is_connected(&peer) {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    /// Peers Kademlia learns of (routing updates, closest-peer lookups, project and relay
    /// providers) are dialled while fewer than [`KAD_DIAL_BELOW`] are connected.
    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, .. } => self.dial_if_few(peer),
            kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(found)),
                ..
            } => self.dial_found(found.peers),
            kad::Event::OutboundQueryProgressed {
                id,
                result:
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers,
                        ..
                    })),
                step,
                ..
            } => {
                if self.shard_providers_found(id, &providers, step.last) {
                    return;
                }
                for peer in providers {
                    self.dial_if_few(peer);
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(_),
                step,
                ..
            } if step.last => self.shard_lookup_ended(id),
            _ => {}
        }
    }

    /// Dials `peer` when no connection reaches it and fewer than [`KAD_DIAL_BELOW`] peers are
    /// connected.
    fn dial_if_few(&mut self, peer: PeerId) {
        if !self.swarm.is_connected(&peer) && self.swarm.connected_peers().count() < KAD_DIAL_BELOW
        {
            let _ = self.swarm.dial(peer);
        }
    }
}
