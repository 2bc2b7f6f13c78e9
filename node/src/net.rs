//! The libp2p side of the node: the composed [`Behaviour`], the swarm builder, the gossip
//! topics and scoring parameters, and the state-sync request-response codec.
//!
//! Every behaviour here is transport only. Gossipsub carries envelopes (validation switched
//! on, so nothing is forwarded before the engine accepted it), request-response carries the
//! sync digest and delta, Kademlia, identify and mDNS find peers. None of them decides who owns
//! an item; the actor in [`crate::actor`] feeds what they deliver into the engine.

use std::io;
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, autonat, connection_limits, dcutr, identify, identity, kad, mdns, noise,
    ping, relay, request_response, yamux,
};
use starling_protocol::message::SyncDelta;
use starling_protocol::shard::Shard;
use starling_protocol::wire::MAX_ENVELOPE_BYTES;
use starling_protocol::{ProjectId, PublicKey};

/// Identify protocol version; peers with another one are still talked to but not trusted more.
pub const IDENTIFY_PROTOCOL: &str = "/starling/id/1.0.0";
/// Kademlia under a private protocol name, so Starling nodes do not join the public DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/starling/kad/1.0.0");
/// State sync: a digest goes out, the delta comes back.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/starling/sync/1");
/// The one topic every node joins: relay requests and relay slots' item messages, and the
/// heartbeats of nodes that offer relay slots or work on no project yet. A node working on
/// projects sends its heartbeat to their topics instead (see `actor/shards.rs`), so this topic
/// stays quiet however large the mesh grows. The name is kept from when every heartbeat went
/// here.
pub const TOPIC_PRESENCE: &str = "starling/v1/presence";
/// Prefix of a project owner's topic; the owner key in hex follows.
pub const TOPIC_OWNER_PREFIX: &str = "starling/v1/owner/";
/// Prefix of a shard's topic: the project id in hex, `/`, then the shard's name
/// (`depth/prefix-in-hex`, [`Shard::name`]).
pub const TOPIC_SHARD_PREFIX: &str = "starling/v1/shard/";
/// Largest sync request (a digest).
pub const SYNC_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Largest sync response (a delta).
pub const SYNC_RESPONSE_BYTES_MAX: usize = SyncDelta::MAX_BYTES;
/// How long the transport waits for a sync answer. The engine's session policy asks another
/// peer after [`starling_protocol::engine::SYNC_TIMEOUT_MS`]; an answer that comes later than
/// that, up to this bound, still counts.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent sync streams per connection.
pub const SYNC_STREAMS_MAX: usize = 8;
/// Established connections to one peer.
pub const CONNECTIONS_PER_PEER_MAX: u32 = 2;
/// Half-open connections at once, each way.
pub const CONNECTIONS_PENDING_MAX: u32 = 64;
/// A connection without open streams closes after this.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Gossipsub heartbeat.
pub const GOSSIP_HEARTBEAT: Duration = Duration::from_millis(700);

/// The composed network behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection caps, first so that it can deny a connection before others see it.
    pub limits: connection_limits::Behaviour,
    /// Envelope gossip.
    pub gossipsub: gossipsub::Behaviour,
    /// State sync.
    pub sync: request_response::Behaviour<SyncCodec>,
    /// Peer discovery and provider records.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Learns peers' listen addresses and our observed address.
    pub identify: identify::Behaviour,
    /// Keeps connections alive and measures round trips.
    pub ping: ping::Behaviour,
    /// Whether we are publicly reachable.
    pub autonat: autonat::Behaviour,
    /// LAN discovery, when switched on.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// The circuit-relay v2 server, when this node offers relay slots.
    pub relay: Toggle<relay::Behaviour>,
    /// Reservations on relays and connections through them, when this node is not reachable.
    pub relay_client: relay::client::Behaviour,
    /// Upgrades relayed connections to direct ones by hole punching.
    pub dcutr: dcutr::Behaviour,
    /// Verified chunks of result blobs, for seeding duties.
    pub blob: request_response::Behaviour<crate::seed::wire::BlobCodec>,
}

/// What the relay server needs: whether to run, its limits, and whom it may serve.
#[derive(Debug, Clone, Default)]
pub struct RelayServer {
    /// Settings from the operator.
    pub settings: crate::relay::RelaySettings,
    /// Requesters whose slots this node holds.
    pub grants: crate::relay::Grants,
    /// Counters for the dashboard.
    pub counters: std::sync::Arc<crate::relay::RelayCounters>,
    /// Bytes by transport stack (libp2p's bandwidth metrics), to count relayed traffic.
    pub bandwidth: std::sync::Arc<std::sync::Mutex<libp2p::metrics::Registry>>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Behaviour")
    }
}

/// The topic every node joins ([`TOPIC_PRESENCE`]).
pub fn presence_topic() -> IdentTopic {
    IdentTopic::new(TOPIC_PRESENCE)
}

/// The topic of one shard of a split project: the heartbeats of its members and the
/// batches, claims, renewals and receipts of its items. Its members join it; a node with
/// something for another shard publishes into it without joining (gossipsub's fanout).
pub fn shard_topic(project: &ProjectId, shard: Shard) -> IdentTopic {
    IdentTopic::new(format!("{TOPIC_SHARD_PREFIX}{}/{}", project.to_hex(), shard.name()))
}

/// The topic of one project owner: manifests, batches and item messages of the owner's
/// projects. A node joins the topics of the keys it trusts and no others, so it never hears
/// (and never penalises honest peers for relaying) projects it would refuse.
pub fn owner_topic(owner: &PublicKey) -> IdentTopic {
    IdentTopic::new(format!("{TOPIC_OWNER_PREFIX}{}", owner.to_hex()))
}

/// Subscribes to `topic` with Starling's scoring parameters.
pub fn join(g: &mut gossipsub::Behaviour, topic: &IdentTopic) -> Result<()> {
    g.set_topic_params(topic.clone(), topic_score_params())
        .map_err(|e| anyhow!("gossipsub scoring: {e}"))?;
    g.subscribe(topic).map_err(|e| anyhow!("gossipsub subscribe: {e}"))?;
    Ok(())
}

/// Scoring for one topic: invalid messages (those the engine rejects as misbehaviour) weigh
/// heavily and decay slowly; delivery-rate penalties are off because a project topic is quiet
/// between batches and an honest peer must not lose score for it.
fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.95,
        ..Default::default()
    }
}

/// A gossip message's id: the 32 bytes of blake3 over the message's `data` field (the
/// envelope bytes exactly as published), nothing else. Author and sequence number are left
/// out, so two copies of one envelope are one message whoever relays them; docs/node.md gives
/// the rule to other implementations, which must use it too (a peer that advertises ids made
/// another way cannot keep its IHAVE promises and loses score).
pub fn message_id(data: &[u8]) -> MessageId {
    MessageId::from(blake3::hash(data).as_bytes().to_vec())
}

/// The gossipsub configuration every node runs.
///
/// `allow_self_origin`: a peer may send our own message back to us (js-libp2p's gossipsub
/// forwards to every mesh peer but the one it heard from, and the origin may be another mesh
/// member). rust-libp2p would reject such a copy as "self-origin" and count it as an invalid
/// delivery (−10 × count² here), greylisting honest relays. Allowed, the copy is a duplicate
/// of what we published (same id) and costs nothing; once our duplicate cache forgot it, it
/// reaches the engine, which ignores an envelope it already has without penalty.
fn gossip_config() -> Result<gossipsub::Config> {
    gossipsub::ConfigBuilder::default()
        .validate_messages()
        .message_id_fn(|m| message_id(&m.data))
        .allow_self_origin(true)
        .max_transmit_size(MAX_ENVELOPE_BYTES + 4 * 1024)
        .heartbeat_interval(GOSSIP_HEARTBEAT)
        .build()
        .map_err(|e| anyhow!("gossipsub configuration: {e}"))
}

/// Gossipsub's peer scoring, its defaults but for one thing: peers on this machine's loopback
/// address are not penalised for sharing it. By default every peer past the tenth behind one
/// address costs (n - 10)² × 5 points, so on one machine a 20-node mesh scored each peer -405,
/// below the graylist threshold, and a node heard almost no presence by gossip (live peers 4–8
/// of 19). Nodes on one machine are a test, the demo or their operator's own choice; across
/// machines the penalty stays.
pub fn score_params() -> gossipsub::PeerScoreParams {
    let mut p = gossipsub::PeerScoreParams::default();
    p.ip_colocation_factor_whitelist.extend([
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ]);
    p
}

/// The application score of a peer spot-checks marked for a project. Weighted by the default
/// `app_specific_weight` (10) it takes the peer to -20: below gossipsub's gossip threshold
/// (-10), so no gossip metadata is exchanged with it and it is among the first pruned, but
/// above the publish threshold (-50), so its messages still arrive and every node keeps
/// judging them by the same rule.
pub const MARKED_PEER_SCORE: f64 = -2.0;

fn gossipsub(key: &identity::Keypair) -> Result<gossipsub::Behaviour> {
    let mut g =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_config()?)
            .map_err(|e| anyhow!("gossipsub: {e}"))?;
    g.with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())
        .map_err(|e| anyhow!("gossipsub scoring: {e}"))?;
    join(&mut g, &presence_topic())?;
    Ok(g)
}

fn behaviour(
    key: &identity::Keypair,
    relay_client: relay::client::Behaviour,
    mdns_on: bool,
    connections_max: u32,
    server: &RelayServer,
) -> Result<Behaviour> {
    let peer_id = key.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(connections_max))
        .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX))
        .with_max_pending_incoming(Some(CONNECTIONS_PENDING_MAX))
        .with_max_pending_outgoing(Some(CONNECTIONS_PENDING_MAX));
    let sync = request_response::Behaviour::with_codec(
        SyncCodec,
        [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(SYNC_TIMEOUT)
            .with_max_concurrent_streams(SYNC_STREAMS_MAX),
    );
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config());
    // Answer DHT queries even before AutoNAT confirms an external address: on a LAN or in a
    // small private mesh nobody would otherwise serve the routing table.
    kad.set_mode(Some(kad::Mode::Server));
    let mdns = if mdns_on {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(|e| anyhow!("mDNS: {e}"))?,
        )
    } else {
        None
    };
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        gossipsub: gossipsub(key)?,
        sync,
        kad,
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("starling/{}", env!("CARGO_PKG_VERSION")))
                // A node that starts listening through a relay must tell its peers at once.
                .with_push_listen_addr_updates(true),
        ),
        ping: ping::Behaviour::default(),
        autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
        mdns: Toggle::from(mdns),
        relay: Toggle::from(server.settings.enabled.then(|| {
            relay::Behaviour::new(
                peer_id,
                crate::relay::server_config(
                    &server.settings,
                    server.grants.clone(),
                    server.counters.clone(),
                ),
            )
        })),
        relay_client,
        dcutr: dcutr::Behaviour::new(peer_id),
        blob: crate::seed::wire::behaviour(),
    })
}

/// Kademlia on [`KAD_PROTOCOL`]. Peers enter the routing table through [`route_identified`]
/// (and the operator's bootstrap list), not merely by connecting: only those that speak the
/// protocol are handed out to later queries.
fn kad_config() -> kad::Config {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config.set_kbucket_inserts(kad::BucketInserts::Manual);
    config
}

/// Whether a peer's identify answer lists Starling's DHT protocol.
pub fn speaks_kad(info: &identify::Info) -> bool {
    info.protocols.contains(&KAD_PROTOCOL)
}

/// Puts an identified peer's listen addresses into Kademlia's routing table if it speaks
/// Starling's DHT protocol, and takes it out otherwise (it may have been added as a bootstrap,
/// mDNS or remembered peer before anyone knew): a peer that cannot answer a DHT query must not
/// be handed out to later queries. Returns whether the peer is routable.
pub fn route_identified(
    kad: &mut kad::Behaviour<kad::store::MemoryStore>,
    peer: &libp2p::PeerId,
    info: &identify::Info,
) -> bool {
    if !speaks_kad(info) {
        if kad.remove_peer(peer).is_some() {
            tracing::debug!(%peer, "dropped from the DHT routing table: no {KAD_PROTOCOL}");
        }
        return false;
    }
    for addr in &info.listen_addrs {
        kad.add_address(peer, addr.clone());
    }
    true
}

/// Builds the swarm (TCP and QUIC, noise, yamux, DNS, relayed connections) around the node's
/// identity. Must run inside the tokio runtime.
pub fn build_swarm(
    key: &starling_protocol::Keypair,
    mdns_on: bool,
    connections_max: u32,
    server: &RelayServer,
) -> Result<Swarm<Behaviour>> {
    let mut secret = key.secret_bytes();
    let id = identity::Keypair::ed25519_from_bytes(&mut secret)
        .map_err(|e| anyhow!("node key is not a valid ed25519 key: {e}"))?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(id)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            // What `with_tcp` builds, around the node's own TCP transport: its listeners own
            // their port (see `crate::tcp`).
            use libp2p::core::Transport as _;
            Ok(crate::tcp::Transport::new(true)
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| anyhow!("tcp transport: {e}"))?
        .with_dns()
        .map_err(|e| anyhow!("dns resolver: {e}"))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| anyhow!("relay client transport: {e}"))?
        .with_bandwidth_metrics(&mut server.bandwidth.lock().unwrap_or_else(|e| e.into_inner()))
        .with_behaviour(|key, relay_client| {
            behaviour(key, relay_client, mdns_on, connections_max, server).map_err(Into::into)
        })
        .map_err(|e| anyhow!("{e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

/// Starts a listener on each address; the first that fails stops the start with one line
/// naming it. A TCP or UDP port another process holds fails here (see [`crate::tcp`]; QUIC
/// binds its UDP socket without address reuse).
pub fn listen_all(swarm: &mut Swarm<Behaviour>, addrs: &[libp2p::Multiaddr]) -> Result<()> {
    for addr in addrs {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| anyhow!("cannot listen on {addr}: {}", listen_failure(addr, &e)))?;
    }
    Ok(())
}

/// Why a listen failed, in words an operator can act on.
fn listen_failure(addr: &libp2p::Multiaddr, e: &libp2p::TransportError<io::Error>) -> String {
    if let libp2p::TransportError::MultiaddrNotSupported(_) = e {
        return "not an address this node can listen on (TCP or QUIC over IPv4 or IPv6)".into();
    }
    // The transports' error types hide the I/O error's kind from `source()`, so ask the port.
    if port_taken(addr) {
        return "the port is already in use; choose another port or stop the process that holds it"
            .into();
    }
    error_chain(e)
}

/// Whether another socket holds the TCP or UDP port of `addr`: a bind there fails.
fn port_taken(addr: &libp2p::Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return false,
    };
    let in_use = |r: io::Result<()>| r.is_err_and(|e| e.kind() == io::ErrorKind::AddrInUse);
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => {
            in_use(std::net::TcpListener::bind((ip, port)).map(drop))
        }
        Some(Protocol::Udp(port)) if port != 0 => {
            in_use(std::net::UdpSocket::bind((ip, port)).map(drop))
        }
        _ => false,
    }
}

/// `e` and its sources on one line, each message once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let t = err.to_string();
        let t = t.trim();
        if !t.is_empty() && !parts.iter().any(|p| p.contains(t)) {
            parts.push(t.to_string());
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The libp2p peer id of a Starling node id (both are the same ed25519 key).
pub fn peer_id_of(node: &starling_protocol::NodeId) -> Option<libp2p::PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(node.as_bytes()).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

/// The Starling node id behind a libp2p peer id, when its key is ed25519.
pub fn node_id_of(peer: &libp2p::PeerId) -> Option<starling_protocol::NodeId> {
    let mh = peer.as_ref();
    // An identity multihash of the protobuf-encoded public key.
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    Some(starling_protocol::NodeId(ed.to_bytes()))
}

/// Length-capped raw bytes each way: a [`starling_protocol::SyncDigest`] out, a
/// [`SyncDelta`] back. Each request uses its own stream, so the end of the stream ends the
/// message.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCodec;

/// Reads one whole message (the rest of the stream), refusing more than `max` bytes. Shared by
/// every request-response codec of the node.
pub(crate) async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message too large"));
    }
    Ok(buf)
}

/// Writes one whole message and closes the stream, which ends it.
pub(crate) async fn write_all<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: Vec<u8>,
) -> io::Result<()> {
    io.write_all(&bytes).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, SYNC_REQUEST_BYTES_MAX).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, SYNC_RESPONSE_BYTES_MAX).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_on_loopback_are_not_penalised_for_sharing_it() {
        let p = score_params();
        assert!(p.ip_colocation_factor_whitelist.contains(&"127.0.0.1".parse().unwrap()));
        assert!(p.ip_colocation_factor_whitelist.contains(&"::1".parse().unwrap()));
        // Elsewhere the default penalty stands.
        assert!(p.ip_colocation_factor_weight < 0.0);
        assert_eq!(p.ip_colocation_factor_whitelist.len(), 2);
    }

    #[test]
    fn sync_messages_are_capped() {
        let run = |len: usize, max: usize| {
            let mut io = futures::io::Cursor::new(vec![7u8; len]);
            futures::executor::block_on(read_capped(&mut io, max))
        };
        assert_eq!(run(10, 10).unwrap().len(), 10);
        assert!(run(11, 10).is_err());
    }

    #[test]
    fn owner_topics_differ_by_key() {
        let a = starling_protocol::engine::test_keypair(1).public();
        let b = starling_protocol::engine::test_keypair(2).public();
        assert_ne!(owner_topic(&a).hash(), owner_topic(&b).hash());
        assert_ne!(owner_topic(&a).hash(), presence_topic().hash());
        let node = starling_protocol::engine::test_keypair(3);
        let peer = peer_id_of(&node.node_id()).unwrap();
        let mut secret = node.secret_bytes();
        let id = identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
        assert_eq!(peer, id.public().to_peer_id());
        assert_eq!(node_id_of(&peer), Some(node.node_id()));
    }

    #[test]
    fn shard_topics_name_the_project_and_the_shard() {
        let p = ProjectId([0xab; 32]);
        let s = Shard { depth: 3, prefix: 5 };
        assert_eq!(
            shard_topic(&p, s).to_string(),
            format!("starling/v1/shard/{}/3/5", "ab".repeat(32))
        );
        assert_ne!(
            shard_topic(&p, s).hash(),
            shard_topic(&p, Shard { depth: 4, prefix: 5 }).hash()
        );
        assert_ne!(shard_topic(&p, s).hash(), shard_topic(&ProjectId([1; 32]), s).hash());
    }

    /// A swarm over the in-memory transport (noise, yamux) around one behaviour.
    fn memory_swarm<B: NetworkBehaviour>(key: identity::Keypair, b: B) -> Swarm<B> {
        use libp2p::core::Transport as _;
        libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(libp2p::core::transport::MemoryTransport::default()
                    .upgrade(libp2p::core::upgrade::Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            })
            .unwrap()
            .with_behaviour(|_| b)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// Our own message coming back through a relay (what js-libp2p's gossipsub does when the
    /// origin is in its mesh) must cost the relay nothing. The relay here signs with the
    /// node's key, so its copies carry the node as their source exactly like an echo: first a
    /// copy of what the node published, then a message the node never saw, which also shows
    /// that the copy before it was handled (one stream, in order).
    #[tokio::test]
    async fn own_message_echoed_back_costs_the_relay_nothing() {
        use futures::StreamExt as _;
        use libp2p::swarm::SwarmEvent;

        let key = identity::Keypair::generate_ed25519();
        let mut node = memory_swarm(key.clone(), gossipsub(&key).unwrap());
        // The relay: its own transport identity, gossip signed with the node's key, and
        // js-libp2p's default message id (author and sequence number), so that it does not
        // drop the node's data as a duplicate of its own.
        let relay_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(GOSSIP_HEARTBEAT)
            .build()
            .unwrap();
        let mut relay_g: gossipsub::Behaviour =
            gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), relay_config)
                .unwrap();
        relay_g.subscribe(&presence_topic()).unwrap();
        let mut relay = memory_swarm(identity::Keypair::generate_ed25519(), relay_g);
        let relay_peer = *relay.local_peer_id();

        node.listen_on("/memory/0".parse().unwrap()).unwrap();
        let topic = presence_topic();
        let (echo, fresh) = (b"published by the node".to_vec(), b"never seen before".to_vec());
        let mut stage = 0;
        let mut fresh_arrived = false;
        let mut echo_delivered = false;
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            while !fresh_arrived {
                tokio::select! {
                    ev = node.select_next_some() => match ev {
                        SwarmEvent::NewListenAddr { address, .. } => relay.dial(address).unwrap(),
                        SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. })
                            if peer_id == relay_peer && stage == 0 =>
                        {
                            stage = 1;
                            node.behaviour_mut().publish(topic.clone(), echo.clone()).unwrap();
                        }
                        SwarmEvent::Behaviour(gossipsub::Event::Message {
                            propagation_source, message_id, message,
                        }) => {
                            echo_delivered |= message.data == echo;
                            fresh_arrived |= message.data == fresh;
                            node.behaviour_mut().report_message_validation_result(
                                &message_id,
                                &propagation_source,
                                gossipsub::MessageAcceptance::Accept,
                            );
                        }
                        _ => {}
                    },
                    ev = relay.select_next_some() => {
                        if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) =
                            ev
                            && message.data == echo
                            && stage == 1
                        {
                            stage = 2;
                            let g = relay.behaviour_mut();
                            g.publish(topic.clone(), echo.clone()).unwrap();
                            g.publish(topic.clone(), fresh.clone()).unwrap();
                        }
                    }
                }
            }
        })
        .await;
        let score = node.behaviour().peer_score(&relay_peer);
        assert!(
            outcome.is_ok(),
            "the relay's later message never arrived (stage {stage}, score {score:?})"
        );
        assert!(!echo_delivered, "the echo of our own message was delivered as a new message");
        let score = score.expect("the relay is scored");
        assert!(score >= 0.0, "the relay lost score for echoing our own message: {score}");
    }

    fn identified(protocols: Vec<StreamProtocol>, addr: &str) -> identify::Info {
        identify::Info {
            public_key: identity::Keypair::generate_ed25519().public(),
            protocol_version: IDENTIFY_PROTOCOL.into(),
            agent_version: "test".into(),
            listen_addrs: vec![addr.parse().unwrap()],
            protocols,
            observed_addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            signed_peer_record: None,
        }
    }

    #[test]
    fn only_peers_speaking_the_dht_protocol_are_routed() {
        let me = identity::Keypair::generate_ed25519().public().to_peer_id();
        let mut kad =
            kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), kad_config());
        let routed = |kad: &mut kad::Behaviour<kad::store::MemoryStore>| -> Vec<libp2p::PeerId> {
            kad.kbuckets()
                .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                .collect()
        };
        let (dht, other, ipfs) =
            (libp2p::PeerId::random(), libp2p::PeerId::random(), libp2p::PeerId::random());
        let ping = StreamProtocol::new("/ipfs/ping/1.0.0");
        assert!(route_identified(
            &mut kad,
            &dht,
            &identified(vec![ping.clone(), KAD_PROTOCOL], "/ip4/127.0.0.1/tcp/4001")
        ));
        assert!(!route_identified(
            &mut kad,
            &other,
            &identified(vec![ping.clone()], "/ip4/127.0.0.1/tcp/4002")
        ));
        // The public DHT's protocol is not ours.
        let public = StreamProtocol::new("/ipfs/kad/1.0.0");
        assert!(!route_identified(
            &mut kad,
            &ipfs,
            &identified(vec![public], "/ip4/127.0.0.1/tcp/4003")
        ));
        assert_eq!(routed(&mut kad), vec![dht]);
        // A bootstrap peer added before it identified leaves once it turns out not to speak it.
        kad.add_address(&other, "/ip4/127.0.0.1/tcp/4002".parse().unwrap());
        assert_eq!(routed(&mut kad).len(), 2);
        route_identified(&mut kad, &other, &identified(vec![ping], "/ip4/127.0.0.1/tcp/4002"));
        assert_eq!(routed(&mut kad), vec![dht]);
    }

    #[test]
    fn message_id_is_blake3_of_the_data() {
        let data = b"envelope bytes";
        assert_eq!(message_id(data).0, blake3::hash(data).as_bytes().to_vec());
        // The docs' example: the id of the empty message, in hex.
        assert_eq!(
            hex::encode(message_id(b"").0),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
