//! The JSON shapes of the control API, shared by the server ([`crate::api`]), the command
//! line ([`crate::cli_node`]) and tests. Ids are lowercase hex.

use serde::{Deserialize, Serialize};
use starling_protocol::{ItemCounts, ItemState};

use crate::runner::RunnerStats;

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
    /// Sync responses applied.
    pub sync_responses: u64,
    /// Sync requests answered.
    pub sync_served: u64,
    /// Envelopes applied from sync.
    pub sync_applied: u64,
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
    /// Result digest, when done.
    pub result: Option<String>,
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
            result: None,
        };
        match state {
            ItemState::Open { epoch } => {
                info.state = "open".into();
                info.epoch = *epoch;
            }
            ItemState::Held { holder, epoch, lease_until_ms, .. } => {
                info.state = "held".into();
                info.epoch = *epoch;
                info.holder = Some(holder.to_hex());
                info.lease_until_ms = Some(*lease_until_ms);
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

/// `POST /publish` and `POST /trust` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// `applied`, `duplicate` or `parked` (a batch waiting for its manifest).
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
