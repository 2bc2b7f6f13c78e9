//! The JSON shapes of the node's control API, shared by the server (`starling-node`'s `api`
//! module), the command line, the dashboard and the tests. Ids are lowercase hex; times are
//! milliseconds since the UNIX epoch on the node's clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use starling_protocol::{ItemCounts, ItemState, WorkKind};

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// This node's id (its public key).
    pub node_id: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// The crate version.
    pub version: String,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// Addresses the swarm listens on.
    pub listen: Vec<String>,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers whose presence is live in the engine's view.
    pub live_peers: usize,
    /// Roles this node fills (bit flags: 1 crawl, 2 seed, 4 relay).
    pub roles: u8,
    /// Whether claiming is paused.
    pub paused: bool,
    /// Crawl chunks worked at once now (0 while results are over the disk cap).
    pub capacity: u16,
    /// Whether stored results are over the operator's disk cap.
    pub over_disk_cap: bool,
    /// Known projects.
    pub projects: usize,
    /// Items by state.
    pub items: ItemCounts,
    /// Items this node holds now.
    pub holding: usize,
    /// The engine's counters.
    pub engine: starling_protocol::EngineStats,
    /// What the runners did.
    pub runner: RunnerStats,
    /// Network counters.
    pub net: NetStats,
    /// The last store error, if writing to the database failed.
    pub store_error: Option<String>,
    /// The node's clock when the answer was made.
    #[serde(default)]
    pub now_ms: u64,
    /// What the crawler fetched.
    #[serde(default)]
    pub fetch: FetchStats,
    /// Disk use against the operator's caps.
    #[serde(default)]
    pub disk: DiskStats,
    /// The operator's caps as they are now.
    #[serde(default)]
    pub caps: Caps,
    /// Torrent seeding.
    #[serde(default)]
    pub torrents: TorrentStats,
    /// Whether the node can work now, and if not, why.
    #[serde(default)]
    pub health: HealthView,
    /// What this node contributed over all its runs (kept in its database).
    #[serde(default)]
    pub lifetime: LifetimeView,
    /// Curators this node follows (`starling project follow`), with the directory held from
    /// each.
    #[serde(default)]
    pub following: Vec<FollowView>,
    /// Per known project, how its crawl results stand under spot-checks and which peers are
    /// marked for it.
    #[serde(default)]
    pub checks: Vec<ChecksView>,
}

/// How one project's crawl results stand under spot-checks (other nodes fetching a sample of
/// finished chunks again), in `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksView {
    /// Project id.
    pub project: String,
    /// Its name.
    pub name: String,
    /// Share of accepted results checked, in thousandths (the manifest's `verify.sample_milli`).
    pub sample_milli: u16,
    /// Lost quorums that mark a node (the manifest's `verify.strikes`).
    pub strikes: u8,
    /// Finished chunks by where their result stands: `verified`, `pending`, `disputed`,
    /// `overturned` (another node's result is kept) and `split` (three answers; kept, nobody
    /// blamed). Chunks never sampled are in none of them.
    #[serde(flatten)]
    pub results: starling_protocol::engine::VerifyCounts,
    /// Nodes marked for the project (their results lost `strikes` quorums): their claims are
    /// refused and their results all checked.
    pub marked: Vec<MarkedPeer>,
}

/// A node marked for a project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedPeer {
    /// Its node id (hex).
    pub node: String,
    /// Quorums it lost there, each on a different chunk.
    pub strikes: u32,
}

/// A followed curator and its newest directory, in `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowView {
    /// The curator's public key (hex).
    pub curator: String,
    /// The directory's name, once one arrived.
    pub name: Option<String>,
    /// The directory's version, once one arrived.
    pub version: Option<u64>,
    /// Projects the directory lists.
    pub projects: usize,
}

/// What a node contributed over all its runs, kept in its database: written every
/// `LIFETIME_SAVE_INTERVAL` (10 s) and at shutdown, so a crash loses at most that much.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LifetimeView {
    /// Items this node finished (its result accepted by its engine), by kind of work
    /// (`crawl`, `seed`, `torrent`, `relay`).
    pub items: BTreeMap<String, u64>,
    /// URLs archived: the parts of this node's crawl chunks that were fetched fine.
    pub urls_archived: u64,
    /// Bytes of crawl results (WARC) this node produced.
    pub bytes_archived: u64,
    /// Bytes served to peers: result copies and torrent uploads.
    pub bytes_seeded: u64,
    /// Circuits this node relayed for peers behind NAT (libp2p's relay counts no bytes).
    pub relay_circuits: u64,
    /// Time the node ran, in ms, this run included.
    pub uptime_ms: u64,
    /// When the node first started with this database (node clock, ms since the epoch).
    pub since_ms: u64,
    /// When the figures were last written to the database (0: not yet in this run).
    pub saved_ms: u64,
}

/// Whether a node can work: faults of its own (store, disk, network, clock) stop it claiming
/// and make it give back what it held, until they clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// No fault of the node's own stops it working.
    pub ok: bool,
    /// The faults now, one line each.
    pub faults: Vec<HealthFault>,
    /// This node's clock against its peers'.
    pub clock: starling_protocol::ClockView,
    /// Items given back for a fault of the node's own since it started.
    pub gave_back: u64,
}

impl Default for HealthView {
    fn default() -> Self {
        Self { ok: true, faults: Vec::new(), clock: Default::default(), gave_back: 0 }
    }
}

/// One fault of a node's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthFault {
    /// `store`, `disk`, `network` or `clock`.
    pub kind: String,
    /// What is wrong and what to do, for the operator.
    pub detail: String,
}

/// What the node's torrent session serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorrentStats {
    /// Whether torrent duties are taken.
    pub enabled: bool,
    /// Whether the session runs a BitTorrent DHT node (asked of the session, not the settings).
    #[serde(default)]
    pub dht: bool,
    /// Whether the trackers a torrent lists are asked for peers.
    #[serde(default)]
    pub trackers: bool,
    /// Where the BitTorrent listener is bound, `IP:port`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Torrents complete and seeding.
    pub seeding: u64,
    /// Torrents still downloading.
    pub downloading: u64,
    /// Bytes uploaded to peers.
    pub uploaded_bytes: u64,
    /// Bytes downloaded from peers.
    pub downloaded_bytes: u64,
    /// Peers connected now.
    pub peers: u64,
    /// Total length of the torrents held.
    pub held_bytes: u64,
}

/// A snapshot of what the runners did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerStats {
    /// Jobs started.
    pub started: u64,
    /// Jobs that reported a result.
    pub completed: u64,
    /// Jobs cancelled before they reported.
    pub cancelled: u64,
}

/// The crawler's counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FetchStats {
    /// Fetches by outcome: an HTTP status code (`"200"`, `"404"`, …) or an error class
    /// (`"timeout"`, `"refused"`, `"error"`).
    pub by_status: BTreeMap<String, u64>,
    /// Response body bytes received.
    pub bytes_down: u64,
    /// Times a fetch waited for a host's rate limit.
    pub rate_limit_waits: u64,
    /// Fetches per second over the last few seconds.
    pub rate_per_s: f64,
    /// The highest fetch rate the hosts being crawled allow together, per second.
    pub rate_limit_per_s: f64,
}

/// Disk use against the operator's caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// Bytes of stored results (WARC files, seeded blobs).
    pub results_bytes: u64,
    /// Bytes of the database file.
    pub store_bytes: u64,
}

/// The operator's knobs. In `POST /caps` a missing field is left as it is; `0` for an
/// optional cap removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    /// Crawl chunks worked at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u16>,
    /// Crawl download bandwidth, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Disk for stored results, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes_max: Option<u64>,
    /// In `POST /caps` only: forget the caps saved by earlier calls and go back to those of
    /// the flags, environment and config file (the other fields are then ignored).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// `GET /work`: what this node holds now and the state of the hosts it crawls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkView {
    /// The node's clock when the answer was made (for lease countdowns).
    pub now_ms: u64,
    /// Items held, soonest lease end first.
    pub claims: Vec<ClaimInfo>,
    /// Hosts the crawler has talked to, busiest first.
    pub hosts: Vec<HostInfo>,
}

/// One held item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimInfo {
    /// Item id.
    pub item: String,
    /// Project id.
    pub project: String,
    /// `crawl`, `seed` or `relay`.
    pub kind: String,
    /// The epoch held.
    pub epoch: u32,
    /// Lease end.
    pub lease_until_ms: u64,
    /// Whether work has started (it waits a short settle first).
    pub started: bool,
}

/// One host the crawler knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name (and port when not the default).
    pub host: String,
    /// `ok`, `backing_off` or `parked`.
    pub state: String,
    /// When backing off or parked: until when.
    pub until_ms: Option<u64>,
    /// Requests in flight now.
    pub inflight: u32,
    /// Requests the rate limit allows per second.
    pub rate_per_s: f64,
    /// Refusals (429, 503, timeouts) in a row.
    pub refusals: u32,
    /// Requests sent per second lately (over the last few seconds): the budget's use.
    #[serde(default)]
    pub sent_per_s: f64,
    /// Under a mesh-wide rate, this node's hold on the host's lane: `held` (it may fetch),
    /// `waiting` (another node holds the lanes) or `ungated` (the host has no lanes); `None`
    /// under a per-node rate.
    #[serde(default)]
    pub lane: Option<String>,
    /// A cooldown another node (or this one) was asked for: nothing is sent before it.
    #[serde(default)]
    pub cooldown_until_ms: Option<u64>,
}

/// `GET /seeding`: result copies this node keeps for the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedingView {
    /// Whether this node takes seeding duties.
    pub enabled: bool,
    /// Duties held at once, at most.
    pub capacity: u16,
    /// Duties held now.
    pub duties: Vec<SeedInfo>,
    /// Blobs stored.
    pub blobs: u64,
    /// Bytes stored.
    pub bytes_stored: u64,
    /// Bytes served to peers.
    pub bytes_served: u64,
    /// Bytes fetched from peers.
    pub bytes_fetched: u64,
    /// Chunks refused because they did not match their digest.
    pub chunks_rejected: u64,
}

/// One seeding duty held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedInfo {
    /// The duty's item id.
    pub item: String,
    /// The blob's digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// `fetching`, `stored` or `missing`.
    pub state: String,
}

/// `GET /relay`: carrying traffic for peers behind NAT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    /// Whether this node offers relay slots.
    pub enabled: bool,
    /// `unknown`, `public` or `private`.
    pub reachability: String,
    /// Slots offered at once, at most.
    pub slots_offered: u16,
    /// Relay slots this node holds for others now.
    pub slots_held: u64,
    /// Reservations granted.
    pub reservations: u64,
    /// Circuits carried.
    pub circuits: u64,
    /// Circuits open now.
    #[serde(default)]
    pub circuits_open: u64,
    /// Reservations refused (the peer held no slot here).
    #[serde(default)]
    pub refused: u64,
    /// The relay this node listens through, when it is not reachable itself.
    #[serde(default)]
    pub relayed_via: Option<String>,
    /// Reservations relays granted this node.
    #[serde(default)]
    pub reserved: u64,
    /// Connections that reached this node through its relay.
    #[serde(default)]
    pub circuits_in: u64,
    /// Bytes this node sent and received over relayed connections (as one end of a circuit;
    /// a relay's own forwarding is counted in circuits, not bytes).
    #[serde(default)]
    pub relayed_bytes: u64,
}

/// One line of `GET /log?limit=&level=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When.
    pub at_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields.
    pub message: String,
}

/// One event of the `GET /events` stream (server-sent events, one JSON object per `data:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// Engine state changed (items, peers, claims); views are worth re-reading.
    Changed {
        /// Items by state after the change.
        items: ItemCounts,
    },
    /// A log line.
    Log(LogLine),
    /// The node paused or resumed claiming.
    Paused {
        /// Paused now.
        paused: bool,
    },
    /// Events were dropped because this client read too slowly.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// `POST /projects/{id}/subscribe` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Work on the project (true) or leave it to others (false).
    pub subscribed: bool,
}

/// `POST /projects/{id}/priority` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Priority {
    /// Higher first when work slots are scarce; 0 is the default.
    pub priority: i8,
}

/// Counters kept by the network actor.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct NetStats {
    /// Gossip messages received.
    pub gossip_received: u64,
    /// Gossip messages accepted (and forwarded).
    pub gossip_accepted: u64,
    /// Gossip messages rejected (costing the sender score).
    pub gossip_rejected: u64,
    /// Gossip messages ignored (duplicates, late, not yet applicable).
    pub gossip_ignored: u64,
    /// Gossip messages that did not decode.
    pub gossip_undecodable: u64,
    /// Envelopes published.
    pub published: u64,
    /// Sync requests sent.
    pub sync_requests: u64,
    /// Of those, requests that asked another peer after one went unanswered or failed.
    #[serde(default)]
    pub sync_retries: u64,
    /// Sync responses applied.
    pub sync_responses: u64,
    /// Sync requests answered.
    pub sync_served: u64,
    /// Envelopes applied from sync.
    pub sync_applied: u64,
    /// Peers penalised for serving corrupt blob chunks.
    #[serde(default)]
    pub blob_penalties: u64,
    /// Bytes of the gossip messages received (their data, as handed to the node).
    #[serde(default)]
    pub gossip_bytes_received: u64,
    /// Bytes of the envelopes published, once per topic they went on.
    #[serde(default)]
    pub gossip_bytes_published: u64,
}

/// One entry of `GET /peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// Starling node id, when the peer's key is ed25519.
    pub node_id: Option<String>,
    /// Whether a connection is open.
    pub connected: bool,
    /// Whether its presence is live in the engine.
    pub live: bool,
    /// Gossipsub score, when connected.
    pub score: Option<f64>,
    /// Whether the connection runs through a relay.
    #[serde(default)]
    pub via_relay: bool,
    /// State-sync answers applied from this peer.
    #[serde(default)]
    pub synced: u64,
    /// Free work slots at its last heartbeat.
    pub free: Option<u16>,
    /// Work slots in all.
    pub capacity: Option<u16>,
}

/// One entry of `GET /projects`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// Project id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Manifest version.
    pub version: u64,
    /// Owner key.
    pub owner: String,
    /// Lease length.
    pub lease_ms: u64,
    /// Replication factor.
    pub replication: u8,
    /// Items by state.
    pub items: ItemCounts,
    /// Whether its owner key is trusted here, or a followed curator lists it.
    #[serde(default)]
    pub trusted: bool,
    /// Whether this node works on it.
    #[serde(default)]
    pub subscribed: bool,
    /// Its priority here.
    #[serde(default)]
    pub priority: i8,
    /// URLs of its finished chunks by outcome, from their receipts.
    #[serde(default)]
    pub urls: UrlCounts,
    /// Items by state for each kind of work apart (`items` adds them all up). `None` from a
    /// node that does not say.
    #[serde(default)]
    pub by_kind: Option<KindCounts>,
    /// Whom the per-host rate binds: `mesh` (the whole mesh together) or `node` (each node).
    #[serde(default)]
    pub rate_scope: String,
    /// The per-host rate, requests per second.
    #[serde(default)]
    pub rate_per_s: f64,
    /// Under a mesh-wide rate, how many nodes may fetch from one host at once.
    #[serde(default)]
    pub lanes: u16,
    /// This node's shard of the project when its owner split it, `None` when every node of
    /// the project hears all of it. The item counts above then cover this shard only.
    #[serde(default)]
    pub shard: Option<ShardInfo>,
}

/// A node's neighbourhood in a split project: the part of its items it takes in, and the
/// nodes it shares them with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The shard's name, `depth/prefix` with the prefix in hex (`3/5`).
    pub name: String,
    /// The manifest's depth: the project is cut into `2^depth` shards.
    pub depth: u8,
    /// Live nodes of the project in this shard as the engine counts them, this node included.
    pub members: usize,
    /// Connected peers in the shard's gossip topic.
    pub topic_peers: usize,
    /// The whole project's items by state, added up from each shard's signed count (this
    /// node's shard counted live), over the shards heard from.
    #[serde(default)]
    pub project_items: ItemCounts,
    /// Shards whose count is in `project_items`, of `2^depth`.
    #[serde(default)]
    pub shards_heard: u32,
}

/// A project's items by state, for each kind of work apart: crawl chunks end (done or
/// failed), while a seeding duty stays held for as long as its holder keeps the copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Crawl chunks.
    #[serde(default)]
    pub crawl: ItemCounts,
    /// Seeding duties: copies of finished chunks' results (and torrents to seed).
    #[serde(default)]
    pub seed: ItemCounts,
    /// Relay slots.
    #[serde(default)]
    pub relay: ItemCounts,
}

impl KindCounts {
    /// From the engine's counts by kind (`Engine::counts_by_kind`).
    pub fn from_kinds(map: &BTreeMap<WorkKind, ItemCounts>) -> Self {
        let of = |k| map.get(&k).copied().unwrap_or_default();
        Self { crawl: of(WorkKind::Crawl), seed: of(WorkKind::Seed), relay: of(WorkKind::Relay) }
    }
}

impl ProjectInfo {
    /// The items that finish: crawl chunks. From a node that does not count kinds apart,
    /// every item.
    pub fn crawl(&self) -> ItemCounts {
        self.by_kind.map_or(self.items, |k| k.crawl)
    }

    /// Result copies (seeding duties), when the node counts them apart.
    pub fn copies(&self) -> Option<ItemCounts> {
        self.by_kind.map(|k| k.seed).filter(|c| total(c) > 0)
    }

    /// Whether the project is complete: it has crawl chunks and every one has ended (done or
    /// failed). Copies of the results go on being kept after that.
    pub fn is_complete(&self) -> bool {
        let c = self.crawl();
        c.open == 0 && c.held == 0 && c.done + c.failed > 0
    }
}

/// Every item counted, whatever its state.
pub fn total(c: &ItemCounts) -> u64 {
    c.open + c.held + c.done + c.failed
}

/// URLs by outcome class (`starling urls` lists them one by one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlCounts {
    /// Fetched and archived, whatever the final HTTP status.
    pub ok: u64,
    /// Refused by policy (scope, SSRF guard, scheme, size cap).
    pub refused: u64,
    /// Disallowed by a robots.txt that was read.
    pub disallowed: u64,
    /// Given up while still failing for a passing reason.
    pub transient: u64,
}

/// One entry of `GET /items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemInfo {
    /// Item id.
    pub id: String,
    /// Project id.
    pub project: String,
    /// `open`, `held`, `done` or `failed`.
    pub state: String,
    /// Current or last epoch.
    pub epoch: u32,
    /// Holder (held) or producer of the result (done).
    pub holder: Option<String>,
    /// Lease end, while held.
    pub lease_until_ms: Option<u64>,
    /// While held: whether the holder reported it ready (a seeding duty's copy stored, a
    /// relay slot up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Result digest, when done.
    pub result: Option<String>,
    /// For a finished crawl chunk whose result was spot-checked: where the check stands
    /// (`pending`, `confirmed`, `disputed`, `upheld`, `overturned` or `split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// For a finished crawl chunk: the node whose result the mesh keeps (the producer's, or
    /// after `overturned` the first checker's), and that result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_by: Option<String>,
    /// The kept result's digest (see `kept_by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_result: Option<String>,
}

impl ItemInfo {
    /// The view of one engine item.
    pub fn new(id: String, project: String, state: &ItemState) -> Self {
        let mut info = Self {
            id,
            project,
            state: String::new(),
            epoch: 0,
            holder: None,
            lease_until_ms: None,
            ready: None,
            result: None,
            check: None,
            kept_by: None,
            kept_result: None,
        };
        match state {
            ItemState::Open { epoch } => {
                info.state = "open".into();
                info.epoch = *epoch;
            }
            ItemState::Held { holder, epoch, lease_until_ms, ready } => {
                info.state = "held".into();
                info.epoch = *epoch;
                info.holder = Some(holder.to_hex());
                info.lease_until_ms = Some(*lease_until_ms);
                info.ready = Some(*ready);
            }
            ItemState::Done { holder, epoch, result, .. } => {
                info.state = "done".into();
                info.epoch = *epoch;
                info.holder = Some(holder.to_hex());
                info.result = Some(result.to_hex());
            }
            ItemState::Failed { epoch } => {
                info.state = "failed".into();
                info.epoch = *epoch;
            }
        }
        info
    }
}

/// `POST /publish`, `POST /trust` and `POST /follow` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// `applied` or `duplicate` (a batch the node can only park is an error).
    pub outcome: String,
    /// What was published or trusted.
    pub what: String,
}

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// One line saying what is wrong.
    pub error: String,
}

/// One result of `POST /projects/{id}/export`: a done item's WARC file, now stored on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportItem {
    /// The crawl item.
    pub item: String,
    /// Its result's digest.
    pub digest: String,
    /// Where the file is on this node.
    pub path: String,
    /// Whether this node had to fetch it from holders for the export.
    pub fetched: bool,
}
