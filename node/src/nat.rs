//! What a node that cannot be reached does: ask the mesh for a relay slot, find which relay
//! won it, and listen through that relay.
//!
//! [`Nat`] owns the client side's state; the actor hands it the swarm and the engine on each
//! call ([`Nat::tend`] on a timer, [`Nat::on_autonat`] when AutoNAT changes its mind) and
//! carries out the engine's outputs afterwards. While the node counts as private (set so
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
use libp2p::{Multiaddr, PeerId, Swarm};
use starling_protocol::engine::relay_project;
use starling_protocol::message::RelayRequest;
use starling_protocol::{
    Engine, Envelope, Input, ItemId, ItemState, Keypair, NodeId, Roles, Signed, WorkItem,
};

use crate::clock::now_ms;
use crate::config::Reachability;
use crate::net::Behaviour;

/// The DHT key relays provide.
pub const RELAYS_KEY: &[u8] = b"starling/v1/relays";

/// How often relays are looked up in the DHT while no relay holds our slot.
pub const RELAY_LOOKUP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Peers whose listen addresses are remembered for dialling relays.
pub const PEER_ADDRS_MAX: usize = 4_096;

/// Whether peers can reach this node, as far as it knows: what the operator set, or, with
/// reachability `auto`, what AutoNAT last said. Shown in `/relay` by [`Reachable::name`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reachable {
    /// Not judged yet.
    #[default]
    Unknown,
    /// Peers can dial this node.
    Public,
    /// Peers cannot dial this node; it asks for a relay slot.
    Private,
}

impl Reachable {
    /// `unknown`, `public` or `private`: the name clients of `/relay` read.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// The relay-client side of one node.
#[derive(Debug)]
pub struct Nat {
    /// What the operator set.
    pub mode: Reachability,
    /// Whether peers can reach this node, as last judged.
    reachable: Reachable,
    /// Whether this node asks for a relay (private by setting or by AutoNAT).
    private: bool,
    key: Keypair,
    /// The slot item of our current request.
    request: Option<ItemId>,
    /// The relay we listen through, and the listener.
    relay: Option<(PeerId, ListenerId)>,
    /// Listen addresses peers told us about (identify), for dialling relays.
    peer_addrs: HashMap<PeerId, Multiaddr>,
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
        let reachable = match mode {
            Reachability::Public => Reachable::Public,
            Reachability::Private => Reachable::Private,
            Reachability::Auto => Reachable::Unknown,
        };
        Self {
            mode,
            reachable,
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

    /// Whether peers can reach this node, as last judged.
    pub fn reachable(&self) -> Reachable {
        self.reachable
    }

    /// Whether the operator said this node is reachable where it listens.
    pub fn public_by_setting(&self) -> bool {
        self.mode == Reachability::Public
    }

    /// AutoNAT's verdict. With reachability `auto` it is taken as this node's, and with
    /// relaying on (`relay_enabled`) the node offers relay slots exactly while it is public.
    pub fn on_autonat(
        &mut self,
        status: &libp2p::autonat::NatStatus,
        relay_enabled: bool,
        swarm: &mut Swarm<Behaviour>,
        engine: &mut Engine,
    ) {
        use libp2p::autonat::NatStatus;
        if self.mode != Reachability::Auto {
            return;
        }
        self.private = *status == NatStatus::Private;
        self.reachable = match status {
            NatStatus::Public(_) => Reachable::Public,
            NatStatus::Private => Reachable::Private,
            NatStatus::Unknown => Reachable::Unknown,
        };
        if !relay_enabled {
            return;
        }
        let public = matches!(status, NatStatus::Public(_));
        let now = engine.config().roles;
        let relay = Roles::RELAY.0;
        let roles = Roles(if public { now.0 | relay } else { now.0 & !relay });
        if roles != now {
            tracing::info!(public, "relay role follows reachability");
            let _ = engine.handle(Input::SetRoles(roles), now_ms());
            advertise_relay(swarm, engine);
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

impl Nat {
    /// Asks for a relay slot and follows whichever relay holds it. Engine inputs are fed
    /// here; the caller carries out the engine's outputs.
    pub fn tend(&mut self, swarm: &mut Swarm<Behaviour>, engine: &mut Engine) {
        if !self.private || swarm.connected_peers().next().is_none() {
            return;
        }
        let Some(item) = self.relay_request(engine) else { return };
        let holder = match engine.item_state(&item) {
            Some(ItemState::Held { holder, ready: true, .. }) => crate::net::peer_id_of(&holder),
            _ => None,
        };
        let Some(relay) = holder else {
            self.look_up_relays(swarm);
            return;
        };
        if self.relay.is_some_and(|(p, _)| p == relay) {
            return;
        }
        if let Some((old, listener)) = self.relay.take() {
            tracing::info!(%old, new = %relay, "the relay slot moved; listening through the new relay");
            swarm.remove_listener(listener);
        }
        let Some(addr) = self.peer_addrs.get(&relay).cloned() else {
            // Not met yet: dial it (Kademlia knows its addresses) and try again on the next tend.
            if !swarm.is_connected(&relay) {
                let _ = swarm.dial(relay);
            }
            return;
        };
        let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        match swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::info!(%relay, addr = %circuit, "listening through the relay");
                self.relay = Some((relay, id));
            }
            Err(e) => tracing::warn!(%relay, error = %e, "cannot listen through the relay"),
        }
    }

    /// `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<node>` when a relay holds a ready slot for
    /// `node` and we know the relay's address.
    pub fn relay_address_of(&self, engine: &Engine, node: &NodeId) -> Option<Multiaddr> {
        let item = engine.relay_slot_of(node)?;
        let Some(ItemState::Held { holder, ready: true, .. }) = engine.item_state(&item) else {
            return None;
        };
        let relay = crate::net::peer_id_of(&holder)?;
        let target = crate::net::peer_id_of(node)?;
        let addr = self.peer_addrs.get(&relay)?.clone();
        Some(addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit).with(Protocol::P2p(target)))
    }

    /// While no relay holds our slot, finds relays in the DHT (they provide [`RELAYS_KEY`])
    /// so we connect to some: a relay we are connected to hears our request at once and is one
    /// we can reach.
    fn look_up_relays(&mut self, swarm: &mut Swarm<Behaviour>) {
        if self.looked_up.is_some_and(|t| t.elapsed() < RELAY_LOOKUP_EVERY) {
            return;
        }
        self.looked_up = Some(std::time::Instant::now());
        let key = libp2p::kad::RecordKey::new(&RELAYS_KEY);
        swarm.behaviour_mut().kad.get_providers(key);
    }

    /// The slot item of this node's relay request, publishing the request first if needed.
    fn relay_request(&mut self, engine: &mut Engine) -> Option<ItemId> {
        if let Some(item) = self.request
            && engine.item_state(&item).is_some()
        {
            return Some(item);
        }
        let now = now_ms();
        let request = RelayRequest { seq: now, at_ms: now };
        let env = Envelope::RelayRequest(Signed::sign(&self.key, &request));
        if let Err(r) = engine.handle(Input::Publish(env), now) {
            tracing::warn!(reason = r.name(), "relay request refused by our own engine");
            return None;
        }
        let item =
            WorkItem::RelaySlot { requester: engine.node_id(), seq: now }.id(&relay_project());
        tracing::info!(item = %item.short(), "not reachable: asked the mesh for a relay slot");
        self.request = Some(item);
        Some(item)
    }
}

/// A relay announces itself in the DHT (provider of [`RELAYS_KEY`]), so nodes behind NAT can
/// find relays before the engine assigns them one; a node that stopped relaying stops.
pub fn advertise_relay(swarm: &mut Swarm<Behaviour>, engine: &Engine) {
    let key = libp2p::kad::RecordKey::new(&RELAYS_KEY);
    let relaying = engine.config().roles.contains(Roles::RELAY);
    let kad = &mut swarm.behaviour_mut().kad;
    if relaying {
        if let Err(e) = kad.start_providing(key) {
            tracing::debug!(error = %e, "cannot announce this relay in the DHT");
        }
    } else {
        kad.stop_providing(&key);
    }
}
