//! What a node that cannot be reached does: ask the mesh for a relay slot, find which relay
//! won it, and listen through that relay.
//!
//! The actor calls [`Actor::tend_relay`] on a timer. While the node counts as private (set so
//! by the operator, or AutoNAT said so), it publishes one signed relay request; the engine
//! makes it a `RelaySlot` item that reachable relays claim. Once a relay holds the slot and
//! has marked it ready (it granted the reservation), the node listens on
//! `<relay addr>/p2p/<relay>/p2p-circuit`; identify tells its peers that address, so they can
//! dial it through the relay. When another relay takes the slot (the old one died and its lease
//! ran out) the node drops the old listener and listens through the new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use starling_protocol::engine::relay_project;
use starling_protocol::message::RelayRequest;
use starling_protocol::{Envelope, Input, ItemId, ItemState, Keypair, Signed, WorkItem};

use crate::actor::Actor;
use crate::clock::now_ms;
use crate::config::Reachability;

/// How often relays are looked up in the DHT while no relay holds our slot.
pub const RELAY_LOOKUP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Peers whose listen addresses are remembered for dialling relays.
pub const PEER_ADDRS_MAX: usize = 4_096;

/// The relay-client side of one node.
#[derive(Debug)]
pub struct Nat {
    /// What the operator set.
    pub mode: Reachability,
    /// Whether this node asks for a relay (private by setting or by AutoNAT).
    pub private: bool,
    key: Keypair,
    /// The slot item of our current request.
    request: Option<ItemId>,
    /// The relay we listen through, and the listener.
    relay: Option<(PeerId, ListenerId)>,
    /// Listen addresses peers told us about (identify), for dialling relays.
    pub(crate) peer_addrs: HashMap<PeerId, Multiaddr>,
    /// Reservations a relay granted us.
    pub reservations: AtomicU64,
    /// Connections that reached us through a relay.
    pub circuits_in: AtomicU64,
    /// Connections we made through a relay.
    pub circuits_out: AtomicU64,
    /// When relays were last looked up in the DHT.
    looked_up: Option<std::time::Instant>,
}

impl Nat {
    /// The client side for a node with this key and setting.
    pub fn new(mode: Reachability, key: Keypair) -> Self {
        Self {
            mode,
            private: mode == Reachability::Private,
            key,
            request: None,
            relay: None,
            peer_addrs: HashMap::new(),
            reservations: AtomicU64::new(0),
            circuits_in: AtomicU64::new(0),
            circuits_out: AtomicU64::new(0),
            looked_up: None,
        }
    }

    /// The relay this node listens through, if any.
    pub fn relay(&self) -> Option<PeerId> {
        self.relay.map(|(p, _)| p)
    }

    /// Remembers a peer's first dialable, direct listen address.
    pub fn learn(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        let direct = addrs.iter().find(|a| {
            !a.iter().any(|p| matches!(p, Protocol::P2pCircuit))
                && a.iter().any(|p| matches!(p, Protocol::Tcp(_)))
        });
        let Some(addr) = direct else { return };
        if self.peer_addrs.len() >= PEER_ADDRS_MAX && !self.peer_addrs.contains_key(&peer) {
            return;
        }
        self.peer_addrs.insert(peer, addr.clone());
    }

    /// AutoNAT's verdict, when the operator left reachability on `auto`.
    pub fn autonat_says_private(&mut self, private: bool) {
        if self.mode == Reachability::Auto {
            self.private = private;
        }
    }

    /// A listener was closed: if it was the relay's, listen again on the next tend.
    pub fn listener_closed(&mut self, id: ListenerId) {
        if self.relay.is_some_and(|(_, l)| l == id) {
            tracing::info!("relay listener closed; will listen through the slot's relay again");
            self.relay = None;
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what the relay client reports.
    pub fn on_client_event(&self, event: &libp2p::relay::client::Event) {
        use libp2p::relay::client::Event;
        match event {
            Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                if !renewal {
                    Self::count(&self.reservations);
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted: reachable through it");
                }
            }
            Event::InboundCircuitEstablished { src_peer_id, .. } => {
                Self::count(&self.circuits_in);
                tracing::info!(peer = %src_peer_id, "a peer reached us through the relay");
            }
            Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                Self::count(&self.circuits_out);
                tracing::debug!(relay = %relay_peer_id, "connected to a peer through a relay");
            }
        }
    }
}

impl Actor {
    /// Asks for a relay slot and follows whichever relay holds it.
    pub(crate) fn tend_relay(&mut self) {
        let private = self.nat.as_ref().is_some_and(|n| n.private);
        if !private || self.swarm.connected_peers().next().is_none() {
            return;
        }
        let Some(item) = self.relay_request() else { return };
        let holder = match self.engine.item_state(&item) {
            Some(ItemState::Held { holder, ready: true, .. }) => crate::net::peer_id_of(&holder),
            _ => None,
        };
        let Some(relay) = holder else {
            self.look_up_relays();
            return;
        };
        let Some(nat) = self.nat.as_mut() else { return };
        if nat.relay.is_some_and(|(p, _)| p == relay) {
            return;
        }
        let old = nat.relay.take();
        let addr = nat.peer_addrs.get(&relay).cloned();
        if let Some((old, listener)) = old {
            tracing::info!(%old, new = %relay, "the relay slot moved; listening through the new relay");
            self.swarm.remove_listener(listener);
        }
        let Some(addr) = addr else {
            // Not met yet: dial it (Kademlia knows its addresses) and try again on the next tend.
            if !self.swarm.is_connected(&relay) {
                let _ = self.swarm.dial(relay);
            }
            return;
        };
        let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::info!(%relay, addr = %circuit, "listening through the relay");
                if let Some(nat) = self.nat.as_mut() {
                    nat.relay = Some((relay, id));
                }
            }
            Err(e) => tracing::warn!(%relay, error = %e, "cannot listen through the relay"),
        }
    }

    /// While no relay holds our slot, finds relays in the DHT (they provide
    /// [`RELAYS_KEY`](crate::actor::RELAYS_KEY)) so we connect to some: a relay we are connected
    /// to hears our request at once and is one we can reach.
    fn look_up_relays(&mut self) {
        let Some(nat) = self.nat.as_mut() else { return };
        if nat.looked_up.is_some_and(|t| t.elapsed() < RELAY_LOOKUP_EVERY) {
            return;
        }
        nat.looked_up = Some(std::time::Instant::now());
        let key = libp2p::kad::RecordKey::new(&crate::actor::RELAYS_KEY);
        self.swarm.behaviour_mut().kad.get_providers(key);
    }

    /// The slot item of this node's relay request, publishing the request first if needed.
    fn relay_request(&mut self) -> Option<ItemId> {
        let nat = self.nat.as_ref()?;
        if let Some(item) = nat.request
            && self.engine.item_state(&item).is_some()
        {
            return Some(item);
        }
        let now = now_ms();
        let request = RelayRequest { seq: now, at_ms: now };
        let env = Envelope::RelayRequest(Signed::sign(&nat.key, &request));
        if let Err(r) = self.handle(Input::Publish(env)) {
            tracing::warn!(reason = r.name(), "relay request refused by our own engine");
            return None;
        }
        let item =
            WorkItem::RelaySlot { requester: self.engine.node_id(), seq: now }.id(&relay_project());
        tracing::info!(item = %item.short(), "not reachable: asked the mesh for a relay slot");
        if let Some(nat) = self.nat.as_mut() {
            nat.request = Some(item);
        }
        Some(item)
    }
}
