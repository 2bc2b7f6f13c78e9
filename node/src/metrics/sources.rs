//! What one scrape reads from the actor, and the counters kept for it: connections by
//! transport, libp2p bytes, and how long jobs take.

use std::collections::BTreeMap;
use std::time::Instant;

use libp2p::core::ConnectedPoint;
use libp2p::swarm::SwarmEvent;
use starling_protocol::{ItemId, ItemState, WorkKind};

use super::{Hist, TIMED_JOBS_MAX, WORK_DURATION_BUCKETS};
use crate::views::{PeerInfo, ProjectInfo, RelayView, SeedingView, StatusView};

// ---- what the actor gives -------------------------------------------------------------------

/// Everything one scrape reads, taken in one turn of the actor.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The `/status` view.
    pub status: StatusView,
    /// The `/peers` view (gossipsub scores).
    pub peers: Vec<PeerInfo>,
    /// The `/projects` view (items by project and state).
    pub projects: Vec<ProjectInfo>,
    /// The `/seeding` view.
    pub seeding: SeedingView,
    /// The `/relay` view.
    pub relay: RelayView,
    /// What only the actor's internals know.
    pub actor: ActorMetrics,
}

/// Numbers the JSON views do not carry.
#[derive(Debug, Clone, Default)]
pub struct ActorMetrics {
    /// Items by (kind, state).
    pub items_by_kind: BTreeMap<(&'static str, &'static str), u64>,
    /// Items this node holds, by kind.
    pub held_by_kind: BTreeMap<&'static str, u64>,
    /// Gossip topics this node is in: (topic, mesh peers, peers subscribed).
    pub topics: Vec<(String, usize, usize)>,
    /// Connections by (transport, direction).
    pub connections: ConnCounters,
    /// libp2p bytes by (transport, direction).
    pub bytes: BTreeMap<(&'static str, &'static str), u64>,
    /// Work durations by (kind, outcome).
    pub durations: BTreeMap<(&'static str, &'static str), Hist>,
}

/// Connections opened, closed and open now, by (transport, direction); failed dials.
#[derive(Debug, Clone, Default)]
pub struct ConnCounters {
    /// Connections established.
    pub opened: BTreeMap<(&'static str, &'static str), u64>,
    /// Connections closed.
    pub closed: BTreeMap<(&'static str, &'static str), u64>,
    /// Outgoing connection attempts that failed.
    pub dial_failures: u64,
    /// Incoming connection attempts that failed (handshake, limits).
    pub incoming_failures: u64,
}

impl ConnCounters {
    /// Counts what a swarm event says about connections.
    pub fn on_swarm<T>(&mut self, event: &SwarmEvent<T>) {
        match event {
            SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                *self.opened.entry(endpoint_labels(endpoint)).or_default() += 1;
            }
            SwarmEvent::ConnectionClosed { endpoint, .. } => {
                *self.closed.entry(endpoint_labels(endpoint)).or_default() += 1;
            }
            SwarmEvent::OutgoingConnectionError { .. } => self.dial_failures += 1,
            SwarmEvent::IncomingConnectionError { .. } => self.incoming_failures += 1,
            _ => {}
        }
    }

    /// Connections open now by (transport, direction).
    pub fn open(&self, key: (&'static str, &'static str)) -> u64 {
        let get = |m: &BTreeMap<_, u64>| m.get(&key).copied().unwrap_or(0);
        get(&self.opened).saturating_sub(get(&self.closed))
    }
}

/// The transport and direction of a connection.
fn endpoint_labels(endpoint: &ConnectedPoint) -> (&'static str, &'static str) {
    let dir = if endpoint.is_dialer() { "out" } else { "in" };
    let transport = if endpoint.is_relayed() {
        "relay"
    } else {
        transport_of(&endpoint.get_remote_address().to_string())
    };
    (transport, dir)
}

/// The transport an address or libp2p protocol stack (`/ip4/tcp/p2p`) goes over.
pub fn transport_of(stack: &str) -> &'static str {
    let has = |p: &str| stack.split('/').any(|s| s == p);
    if has("p2p-circuit") {
        "relay"
    } else if has("quic-v1") || has("quic") {
        "quic"
    } else if has("tcp") {
        "tcp"
    } else {
        "other"
    }
}

/// Bytes by (transport, direction) from libp2p's bandwidth metrics text. Relayed connections
/// accepted through a circuit carry only the source's `/p2p/<peer>` (see `relay.rs`).
pub fn bandwidth_bytes(text: &str) -> BTreeMap<(&'static str, &'static str), u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("libp2p_bandwidth_bytes_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let protocols =
            labels.split("protocols=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
        let transport = if protocols == "/p2p" { "relay" } else { transport_of(protocols) };
        let dir = if labels.to_ascii_lowercase().contains("direction=\"inbound\"") {
            "in"
        } else {
            "out"
        };
        *out.entry((transport, dir)).or_default() += v as u64;
    }
    out
}

/// Start times of running jobs, and the durations of finished ones by (kind, outcome).
#[derive(Debug, Default)]
pub struct WorkTimer {
    started: BTreeMap<(ItemId, u32), (WorkKind, Instant)>,
    done: BTreeMap<(&'static str, &'static str), Hist>,
}

impl WorkTimer {
    /// A job started.
    pub fn start(&mut self, item: ItemId, epoch: u32, kind: WorkKind) {
        // A job that never reported nor was cancelled would stay for ever: at the bound the
        // oldest start goes, so new jobs are still timed.
        if self.started.len() >= TIMED_JOBS_MAX
            && let Some(oldest) =
                self.started.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k)
        {
            self.started.remove(&oldest);
        }
        self.started.insert((item, epoch), (kind, Instant::now()));
    }

    /// A job ended as `outcome` (`done`, `failed`, `cancelled`); unknown jobs are ignored.
    pub fn end(&mut self, item: ItemId, epoch: u32, outcome: &'static str) {
        if let Some((kind, at)) = self.started.remove(&(item, epoch)) {
            self.done
                .entry((kind.name(), outcome))
                .or_insert_with(|| Hist::new(WORK_DURATION_BUCKETS))
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// Durations so far.
    pub fn durations(&self) -> BTreeMap<(&'static str, &'static str), Hist> {
        self.done.clone()
    }
}

pub fn state_name(s: &ItemState) -> &'static str {
    match s {
        ItemState::Open { .. } => "open",
        ItemState::Held { .. } => "held",
        ItemState::Done { .. } => "done",
        ItemState::Failed { .. } => "failed",
    }
}

/// Item states, in a fixed order.
pub const ITEM_STATES: [&str; 4] = ["open", "held", "done", "failed"];
/// Work outcomes the duration histogram tells apart.
pub const WORK_OUTCOMES: [&str; 3] = ["done", "failed", "cancelled"];
