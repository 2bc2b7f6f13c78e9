//! Relay slots: reachable nodes carry traffic for nodes behind NAT.
//!
//! A node that is not reachable publishes a signed relay request; the engine turns it into a
//! `RelaySlot` item that reachable relays claim like any other item (HRW rank, lease, epoch).
//! The winner's [`RelayRunner`] marks the slot ready and puts the requester on its grant list;
//! the circuit-relay v2 server grants reservations only to peers on that list
//! ([`GrantedOnly`]). The requester watches its slot ([`crate::nat::Nat`]) and listens on its
//! relay's `/p2p-circuit` address; when the relay dies, its lease runs out, another relay claims
//! the slot at the next epoch and the requester moves there. DCUtR upgrades relayed
//! connections to direct ones where hole punching works.
//!
//! The server's limits are sized for real traffic, not only for hole punching: the library's
//! defaults (2-minute circuits of 128 KiB) would cut a gossip connection within minutes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, relay};
use starling_protocol::{Digest, ItemId, WorkItem, WorkKind, WorkResult};
use tokio::sync::mpsc;

use crate::runner::{Job, Runner, RunnerCounters, WorkReport};

/// Reservations the relay server holds at once.
pub const RESERVATIONS_MAX: usize = 128;
/// How long a reservation lasts before the client renews it.
pub const RESERVATION_DURATION: Duration = Duration::from_secs(3_600);
/// Relayed connections at once, in all.
pub const CIRCUITS_MAX: usize = 64;
/// Relayed connections at once per requester.
pub const CIRCUITS_PER_PEER_MAX: usize = 8;
/// Longest life of one relayed connection (the spec limits it to `u32::MAX` seconds).
pub const CIRCUIT_DURATION_MAX: Duration = Duration::from_secs(3_600);
/// Default bytes one relayed connection may carry (each way) before the relay closes it.
pub const CIRCUIT_BYTES_MAX: u64 = 1 << 30;
/// Most requesters on the grant list (the engine holds at most `relay_capacity` slots).
pub const GRANTS_MAX: usize = 1_024;

/// The operator's relay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// Offer relay slots (only while this node is reachable).
    pub enabled: bool,
    /// Bytes one relayed connection may carry.
    pub circuit_bytes_max: u64,
    /// Relayed connections at once.
    pub circuits_max: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self { enabled: false, circuit_bytes_max: CIRCUIT_BYTES_MAX, circuits_max: CIRCUITS_MAX }
    }
}

/// Counters for the dashboard, shared by the runner, the server's events and the API.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Reservations granted.
    pub reservations: AtomicU64,
    /// Reservations refused (the peer held no slot here).
    pub refused: AtomicU64,
    /// Circuits opened through this relay.
    pub circuits: AtomicU64,
    /// Circuits open now.
    pub circuits_open: AtomicU64,
}

/// Requesters whose relay slot this node holds: the only peers the server takes reservations
/// from.
#[derive(Debug, Clone, Default)]
pub struct Grants(Arc<Mutex<BTreeMap<ItemId, PeerId>>>);

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ItemId, PeerId>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `peer` holds a slot here.
    pub fn allows(&self, peer: &PeerId) -> bool {
        self.lock().values().any(|p| p == peer)
    }

    /// Slots held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no slot is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn grant(&self, item: ItemId, peer: PeerId) -> bool {
        let mut g = self.lock();
        if g.len() >= GRANTS_MAX && !g.contains_key(&item) {
            return false;
        }
        g.insert(item, peer);
        true
    }

    fn revoke(&self, item: &ItemId) {
        self.lock().remove(item);
    }

    /// The requesters, for tests and views.
    pub fn peers(&self) -> BTreeSet<PeerId> {
        self.lock().values().copied().collect()
    }
}

/// The relay server's reservation filter: only requesters whose slot this node won.
struct GrantedOnly {
    grants: Grants,
    counters: Arc<RelayCounters>,
}

impl relay::RateLimiter for GrantedOnly {
    fn try_next(&mut self, peer: PeerId, _addr: &Multiaddr, _now: Instant) -> bool {
        let ok = self.grants.allows(&peer);
        if !ok {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "refused a relay reservation: no relay slot of that peer is held here");
        }
        ok
    }
}

/// The circuit-relay v2 server's configuration for these settings.
pub fn server_config(
    settings: &RelaySettings,
    grants: Grants,
    counters: Arc<RelayCounters>,
) -> relay::Config {
    let mut c = relay::Config {
        max_reservations: RESERVATIONS_MAX,
        max_reservations_per_peer: 2,
        reservation_duration: RESERVATION_DURATION,
        max_circuits: settings.circuits_max,
        max_circuits_per_peer: CIRCUITS_PER_PEER_MAX,
        max_circuit_duration: CIRCUIT_DURATION_MAX,
        max_circuit_bytes: settings.circuit_bytes_max,
        ..relay::Config::default()
    };
    c.reservation_rate_limiters.push(Box::new(GrantedOnly { grants, counters }));
    c
}

/// Bytes this node sent and received over relayed connections (as one end of a circuit),
/// summed from libp2p's bandwidth metrics for transport stacks through `/p2p-circuit`.
pub fn relayed_bytes(bandwidth: &std::sync::Mutex<libp2p::metrics::Registry>) -> u64 {
    let mut text = String::new();
    {
        let registry = bandwidth.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return 0;
        }
    }
    circuit_bytes(&text)
}

/// Sums the bandwidth counters of relayed connections in metrics text: dialled ones carry the
/// `/p2p-circuit` address; accepted ones only the source's `/p2p/<peer>` (no IP, no TCP).
fn circuit_bytes(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("libp2p_bandwidth_bytes_total{"))
        .filter(|l| l.contains("p2p-circuit") || l.contains("protocols=\"/p2p\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Counts what the relay server reports.
pub fn on_server_event(event: &relay::Event, counters: &RelayCounters) {
    match event {
        relay::Event::ReservationReqAccepted { src_peer_id, renewed } => {
            if !renewed {
                counters.reservations.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(peer = %src_peer_id, renewed, "relay reservation granted");
        }
        relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
            counters.circuits.fetch_add(1, Ordering::Relaxed);
            counters.circuits_open.fetch_add(1, Ordering::Relaxed);
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "relaying a connection");
        }
        relay::Event::CircuitClosed { src_peer_id, dst_peer_id, error } => {
            let _ =
                counters.circuits_open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, ?error, "relayed connection closed");
        }
        _ => {}
    }
}

/// The runner for relay slots: marks a won slot ready and grants the requester a reservation
/// until the slot is cancelled (lost, replaced, or the node stops).
#[derive(Debug)]
pub struct RelayRunner {
    grants: Grants,
    reports: mpsc::Sender<WorkReport>,
    counters: Arc<RunnerCounters>,
}

impl RelayRunner {
    /// A runner that grants through `grants` and reports on `reports`.
    pub fn new(
        grants: Grants,
        reports: mpsc::Sender<WorkReport>,
        counters: Arc<RunnerCounters>,
    ) -> Self {
        Self { grants, reports, counters }
    }
}

/// The result a ready relay slot reports: a digest naming the requester's slot.
fn slot_digest(item: &ItemId) -> Digest {
    let mut h = blake3::Hasher::new_derive_key("starling/v1/relay-slot-ready");
    h.update(item.as_bytes());
    Digest(*h.finalize().as_bytes())
}

impl Runner for RelayRunner {
    fn kind(&self) -> WorkKind {
        WorkKind::Relay
    }

    fn start(&mut self, job: Job) {
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let report = match &job.work {
            WorkItem::RelaySlot { requester, .. } => match crate::net::peer_id_of(requester) {
                Some(peer) if self.grants.grant(job.item, peer) => {
                    tracing::info!(%peer, item = %job.item.short(), "holding a relay slot");
                    WorkReport::Done(WorkResult {
                        item: job.item,
                        epoch: job.epoch,
                        result: slot_digest(&job.item),
                        size: 0,
                        ok: 1,
                        failed: 0,
                        parts: Vec::new(),
                    })
                }
                Some(_) => WorkReport::Failed {
                    item: job.item,
                    epoch: job.epoch,
                    reason: format!("more than {GRANTS_MAX} relay slots held"),
                    retryable: true,
                },
                None => WorkReport::Failed {
                    item: job.item,
                    epoch: job.epoch,
                    reason: "requester key is not an ed25519 peer id".into(),
                    retryable: false,
                },
            },
            _ => WorkReport::Failed {
                item: job.item,
                epoch: job.epoch,
                reason: "not a relay slot".into(),
                retryable: false,
            },
        };
        self.counters.completed.fetch_add(1, Ordering::Relaxed);
        if self.reports.try_send(report).is_err() {
            tracing::warn!("work report queue full; the relay slot's lease will lapse");
        }
    }

    fn cancel(&mut self, item: ItemId, _epoch: u32) {
        self.grants.revoke(&item);
        self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_peers_may_reserve() {
        let grants = Grants::default();
        let counters = Arc::new(RelayCounters::default());
        let mut filter = GrantedOnly { grants: grants.clone(), counters: counters.clone() };
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(!relay::RateLimiter::try_next(&mut filter, peer, &addr, Instant::now()));
        let item = ItemId([7; 32]);
        assert!(grants.grant(item, peer));
        assert!(relay::RateLimiter::try_next(&mut filter, peer, &addr, Instant::now()));
        grants.revoke(&item);
        assert!(!relay::RateLimiter::try_next(&mut filter, peer, &addr, Instant::now()));
        assert_eq!(counters.refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn relayed_bytes_are_the_circuit_stacks_only() {
        let text = "# HELP libp2p_bandwidth_bytes Bandwidth usage\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp/p2p/p2p-circuit\",direction=\"Inbound\"} 1000\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp/p2p/p2p-circuit\",direction=\"Outbound\"} 234\n\
            libp2p_bandwidth_bytes_total{protocols=\"/p2p\",direction=\"Inbound\"} 5\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp/p2p\",direction=\"Inbound\"} 99999\n";
        assert_eq!(circuit_bytes(text), 1239);
        let empty = std::sync::Mutex::new(libp2p::metrics::Registry::default());
        assert_eq!(relayed_bytes(&empty), 0);
    }

    #[test]
    fn the_server_is_sized_for_real_traffic() {
        let c = server_config(&RelaySettings::default(), Grants::default(), Arc::default());
        assert!(c.max_circuit_duration >= Duration::from_secs(3_600));
        assert!(c.max_circuit_bytes >= 1 << 30);
        assert!(c.reservation_duration >= Duration::from_secs(3_600));
    }
}
