//! The actor's side of torrent duties: learning where each peer's BitTorrent listener is, and
//! telling the torrent runner which of them hold the torrent a duty is for.
//!
//! When a connection to a peer opens, the node asks it (over the blob protocol) for the port
//! of its BitTorrent listener and keeps `IP:port`, the IP being the one the connection reached.
//! A torrent's holders are the nodes whose duty for another replica of the same torrent is
//! held and ready in the engine's view; their addresses go to the runner as initial peers
//! before a duty starts ([`Actor::note_torrent_peers`]) and whenever they change while it runs
//! ([`Actor::tend_torrents`]). With DHT and trackers off, this is how holders find each other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use starling_protocol::{ItemState, ProjectId, WorkItem, WorkKind};

use super::runner::{PeerLookup, TorrentControl, TorrentQuery};
use crate::actor::Actor;
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

impl Actor {
    /// A connection to `peer` opened at `remote`: ask for its BitTorrent port.
    pub(crate) fn torrent_peer_connected(&mut self, peer: PeerId, remote: &libp2p::Multiaddr) {
        let Some(t) = &mut self.torrents else { return };
        let ip = remote.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        let Some(ip) = ip else { return };
        if t.remote_ip.len() >= TORRENT_ADDRS_MAX && !t.remote_ip.contains_key(&peer) {
            return;
        }
        t.remote_ip.insert(peer, ip);
        let id = self.swarm.behaviour_mut().blob.send_request(&peer, BlobRequest::TorrentAddr);
        t.asked.insert(id, peer);
    }

    /// An answer to a port question; false when the request was not one.
    pub(crate) fn torrent_answer(&mut self, id: OutboundRequestId, r: &BlobResponse) -> bool {
        let Some(t) = &mut self.torrents else { return false };
        let Some(peer) = t.asked.remove(&id) else { return false };
        if let (BlobResponse::TorrentAddr { port }, Some(ip)) = (r, t.remote_ip.get(&peer))
            && *port != 0
        {
            t.addrs.insert(peer, SocketAddr::new(*ip, *port));
        }
        true
    }

    /// A failed port question; false when the request was not one.
    pub(crate) fn torrent_question_failed(&mut self, id: OutboundRequestId) -> bool {
        self.torrents.as_mut().is_some_and(|t| t.asked.remove(&id).is_some())
    }

    /// This node's BitTorrent port, for a peer that asks.
    pub(crate) fn torrent_port(&self) -> u16 {
        self.torrents.as_ref().and_then(|t| t.control.listen_addr()).map_or(0, |a| a.port())
    }

    /// The BitTorrent addresses of the other ready holders of `work`'s torrent.
    fn torrent_holders(&self, project: &ProjectId, work: &WorkItem) -> Vec<SocketAddr> {
        let (Some(t), WorkItem::Torrent { info_hash, source, replica }) = (&self.torrents, work)
        else {
            return Vec::new();
        };
        let me = self.engine.node_id();
        let mut out = Vec::new();
        for r in (0..REPLICAS_SCAN_MAX).filter(|r| r != replica) {
            let other =
                WorkItem::Torrent { info_hash: *info_hash, source: source.clone(), replica: r };
            if let Some(ItemState::Held { holder, ready: true, .. }) =
                self.engine.item_state(&other.id(project))
                && holder != me
                && let Some(addr) = crate::net::peer_id_of(&holder).and_then(|p| t.addrs.get(&p))
                && !out.contains(addr)
            {
                out.push(*addr);
            }
        }
        out
    }

    /// Records a torrent duty's holders for the runner's lookup, before the duty starts.
    pub(crate) fn note_torrent_peers(&mut self, project: &ProjectId, work: &WorkItem) {
        let WorkItem::Torrent { info_hash, .. } = work else { return };
        let holders = self.torrent_holders(project, work);
        let Some(t) = &mut self.torrents else { return };
        let mut books = t.books.lock().unwrap_or_else(|e| e.into_inner());
        if books.len() >= TORRENT_ADDRS_MAX && !books.contains_key(info_hash) {
            books.clear();
        }
        books.insert(*info_hash, holders.clone());
        t.sent.insert(*info_hash, holders);
    }

    /// Passes holders that appeared since a torrent duty started on to the runner.
    pub(crate) fn tend_torrents(&mut self) {
        if self.torrents.is_none() {
            return;
        }
        let held: Vec<(ProjectId, WorkItem)> = self
            .engine
            .local_work()
            .filter(|w| w.kind == WorkKind::Seed)
            .filter_map(|w| match self.engine.item_work(&w.item) {
                Some((p, work @ WorkItem::Torrent { .. })) => Some((p, work.clone())),
                _ => None,
            })
            .collect();
        for (project, work) in held {
            let WorkItem::Torrent { info_hash, .. } = &work else { continue };
            let holders = self.torrent_holders(&project, &work);
            let Some(t) = &mut self.torrents else { return };
            if holders.is_empty() || t.sent.get(info_hash) == Some(&holders) {
                continue;
            }
            t.sent.insert(*info_hash, holders.clone());
            t.control.add_initial_peers(*info_hash, holders);
        }
    }
}
