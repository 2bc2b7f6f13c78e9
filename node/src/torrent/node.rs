//! The actor's side of torrent duties: learning where each peer's BitTorrent listener is, and
//! telling the torrent runner which of them hold the torrent a duty is for.
//!
//! When a connection to a peer opens, the node asks it (over the blob protocol) for the port
//! of its BitTorrent listener and keeps `IP:port`, the IP being the one the connection reached.
//! A torrent's holders are the nodes whose duty for another replica of the same torrent is
//! held and ready in the engine's view; their addresses go to the runner as initial peers
//! before a duty starts ([`TorrentParts::note_peers`]) and whenever they change while it runs
//! ([`TorrentParts::tend`]). The actor hands the parts the swarm or the engine per call. With DHT and trackers off, this is how holders find each other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::{PeerId, Swarm};
use starling_protocol::{Engine, ItemState, ProjectId, WorkItem, WorkKind};

use super::runner::{PeerLookup, TorrentControl, TorrentQuery};
use crate::net::Behaviour;
use crate::seed::wire::{BlobRequest, BlobResponse};

/// Replicas of one torrent looked at when finding its holders.
pub const REPLICAS_SCAN_MAX: u8 = 16;
/// Peers whose BitTorrent address is remembered.
pub const TORRENT_ADDRS_MAX: usize = 4_096;

type Books = Arc<Mutex<HashMap<[u8; 20], Vec<SocketAddr>>>>;

/// What the actor keeps for torrents.
#[derive(Debug)]
pub struct TorrentParts {
    /// The runner's handle.
    pub control: TorrentControl,
    books: Books,
    addrs: HashMap<PeerId, SocketAddr>,
    remote_ip: HashMap<PeerId, IpAddr>,
    asked: HashMap<OutboundRequestId, PeerId>,
    sent: HashMap<[u8; 20], Vec<SocketAddr>>,
}

impl TorrentParts {
    /// The parts and the peer lookup to build the runner with.
    pub fn new_lookup() -> (Books, PeerLookup) {
        let books: Books = Arc::default();
        let read = books.clone();
        let lookup: PeerLookup = Arc::new(move |q: &TorrentQuery| {
            read.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&q.info_hash)
                .cloned()
                .unwrap_or_default()
        });
        (books, lookup)
    }

    /// The parts around a runner's control and the books its lookup reads.
    pub fn new(control: TorrentControl, books: Books) -> Self {
        Self {
            control,
            books,
            addrs: HashMap::new(),
            remote_ip: HashMap::new(),
            asked: HashMap::new(),
            sent: HashMap::new(),
        }
    }
}

impl TorrentParts {
    /// A connection to `peer` opened at `remote`: ask for its BitTorrent port.
    pub fn peer_connected(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        remote: &libp2p::Multiaddr,
    ) {
        let ip = remote.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        let Some(ip) = ip else { return };
        if self.remote_ip.len() >= TORRENT_ADDRS_MAX && !self.remote_ip.contains_key(&peer) {
            return;
        }
        self.remote_ip.insert(peer, ip);
        let id = swarm.behaviour_mut().blob.send_request(&peer, BlobRequest::TorrentAddr);
        self.asked.insert(id, peer);
    }

    /// An answer to a port question; false when the request was not one.
    pub fn answer(&mut self, id: OutboundRequestId, r: &BlobResponse) -> bool {
        let Some(peer) = self.asked.remove(&id) else { return false };
        if let (BlobResponse::TorrentAddr { port }, Some(ip)) = (r, self.remote_ip.get(&peer))
            && *port != 0
        {
            self.addrs.insert(peer, SocketAddr::new(*ip, *port));
        }
        true
    }

    /// A failed port question; false when the request was not one.
    pub fn question_failed(&mut self, id: OutboundRequestId) -> bool {
        self.asked.remove(&id).is_some()
    }

    /// This node's BitTorrent port, for a peer that asks.
    pub fn port(&self) -> u16 {
        self.control.listen_addr().map_or(0, |a| a.port())
    }

    /// The BitTorrent addresses of the other ready holders of `work`'s torrent.
    fn holders(&self, engine: &Engine, project: &ProjectId, work: &WorkItem) -> Vec<SocketAddr> {
        let WorkItem::Torrent { info_hash, source, replica } = work else {
            return Vec::new();
        };
        let me = engine.node_id();
        let mut out = Vec::new();
        for r in (0..REPLICAS_SCAN_MAX).filter(|r| r != replica) {
            let other =
                WorkItem::Torrent { info_hash: *info_hash, source: source.clone(), replica: r };
            if let Some(ItemState::Held { holder, ready: true, .. }) =
                engine.item_state(&other.id(project))
                && holder != me
                && let Some(addr) = crate::net::peer_id_of(&holder).and_then(|p| self.addrs.get(&p))
                && !out.contains(addr)
            {
                out.push(*addr);
            }
        }
        out
    }

    /// Records a torrent duty's holders for the runner's lookup, before the duty starts.
    pub fn note_peers(&mut self, engine: &Engine, project: &ProjectId, work: &WorkItem) {
        let WorkItem::Torrent { info_hash, .. } = work else { return };
        let holders = self.holders(engine, project, work);
        let mut books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        if books.len() >= TORRENT_ADDRS_MAX && !books.contains_key(info_hash) {
            books.clear();
        }
        books.insert(*info_hash, holders.clone());
        self.sent.insert(*info_hash, holders);
    }

    /// Passes holders that appeared since a torrent duty started on to the runner.
    pub fn tend(&mut self, engine: &Engine) {
        let held: Vec<(ProjectId, WorkItem)> = engine
            .local_work()
            .filter(|w| w.kind == WorkKind::Seed)
            .filter_map(|w| match engine.item_work(&w.item) {
                Some((p, work @ WorkItem::Torrent { .. })) => Some((p, work.clone())),
                _ => None,
            })
            .collect();
        for (project, work) in held {
            let WorkItem::Torrent { info_hash, .. } = &work else { continue };
            let holders = self.holders(engine, &project, &work);
            if holders.is_empty() || self.sent.get(info_hash) == Some(&holders) {
                continue;
            }
            self.sent.insert(*info_hash, holders.clone());
            self.control.add_initial_peers(*info_hash, holders);
        }
    }
}
