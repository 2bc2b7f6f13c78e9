//! Torrent seeding duties: a project lists torrents (the .torrent bytes or a magnet link) as
//! [`WorkItem::Torrent`](starling_protocol::WorkItem::Torrent) items, and the holders the
//! engine picks download and seed them through one librqbit session per node.
//!
//! The pieces:
//! - [`TorrentSettings`]: the operator's switches and limits (DHT, trackers, listen address,
//!   how many torrents, how many bytes on disk, upload and download rates).
//! - [`TorrentSession`]: the node's one librqbit session, its data under
//!   `DATA_DIR/torrents/<info hash>/`, with the disk cap and the peer filter applied.
//! - [`TorrentRunner`]: the [`Runner`](crate::runner::Runner) for torrent items. A job is
//!   reported done once the torrent is complete on disk (for an ongoing item that means "ready,
//!   seeding now"), and the torrent keeps being seeded until the job is cancelled.
//! - [`SeedWithTorrents`]: one runner for [`WorkKind::Seed`](starling_protocol::WorkKind)
//!   that sends result duties to the blob seed runner and torrents to the torrent runner, since
//!   the node keeps one runner a kind.
//!
//! The receipt of a torrent job carries `result = blake3(info hash)` (the 20 raw bytes of the
//! v1 info hash, so every holder of the torrent reports the same digest whether it started from
//! the file or a magnet) and `size` = the torrent's total length in bytes.
//!
//! Finding peers without the DHT or trackers: the node tells the runner where other holders'
//! BitTorrent listeners are, through the [`PeerLookup`] it is built with (asked when a job
//! starts) and [`TorrentRunner::add_initial_peers`] (any time). See [`runner`] for the
//! contract.

pub mod node;
pub mod runner;
pub mod session;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use runner::{PeerLookup, SeedWithTorrents, TorrentControl, TorrentQuery, TorrentRunner};
pub use session::{TorrentSession, TorrentTotals, TorrentView};

/// Most torrents a node seeds at once, whatever the settings say.
pub const TORRENTS_MAX: u16 = 1_024;
/// Most initial peers kept for one torrent.
pub const INITIAL_PEERS_MAX: usize = 64;
/// The folder under the data dir that holds torrent data.
pub const TORRENTS_DIR: &str = "torrents";

/// The operator's settings for torrent seeding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TorrentSettings {
    /// Whether this node takes torrent seeding duties at all.
    pub enabled: bool,
    /// Find peers through the BitTorrent mainline DHT (and announce there). Off by default:
    /// a DHT node contacts public routers as soon as the session starts.
    pub dht: bool,
    /// Announce to and ask the trackers a torrent lists.
    pub trackers: bool,
    /// Multicast local service discovery on the LAN.
    pub local_discovery: bool,
    /// Where the BitTorrent listener binds (TCP); port 0 picks a free port at start.
    pub listen_addr: SocketAddr,
    /// Most torrents seeded at once (capped at [`TORRENTS_MAX`]).
    pub torrents_max: u16,
    /// Most bytes of torrent data on disk; a torrent that would go over is refused, and data
    /// of torrents no longer held is deleted (oldest first) to make room. Takes units
    /// (`"20GiB"`; see `starling_tui::units`).
    #[serde(deserialize_with = "starling_tui::units::de::size")]
    pub disk_bytes_max: u64,
    /// Upload limit for the whole session, bytes a second (none when absent); takes units
    /// (`"5MB/s"`).
    #[serde(deserialize_with = "starling_tui::units::de::rate_u32_opt")]
    pub upload_bytes_per_s: Option<u32>,
    /// Download limit for the whole session, bytes a second (none when absent); takes units.
    #[serde(deserialize_with = "starling_tui::units::de::rate_u32_opt")]
    pub download_bytes_per_s: Option<u32>,
    /// Most peers connected for one torrent.
    pub peers_per_torrent_max: u16,
    /// A download that makes no progress this long fails (retryable), so another node may try.
    pub stall_ms: u64,
    /// Accept initial peers on private, loopback and link-local addresses (tests, LANs).
    pub allow_private_peers: bool,
}

impl Default for TorrentSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dht: false,
            trackers: true,
            local_discovery: false,
            listen_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            torrents_max: 32,
            disk_bytes_max: 20 * 1024 * 1024 * 1024,
            upload_bytes_per_s: None,
            download_bytes_per_s: None,
            peers_per_torrent_max: 64,
            stall_ms: 10 * 60 * 1000,
            allow_private_peers: false,
        }
    }
}

impl TorrentSettings {
    /// Settings for tests and demos: no DHT, no trackers, no LAN discovery, a listener on
    /// 127.0.0.1, loopback peers allowed. Nothing leaves the machine.
    pub fn loopback() -> Self {
        Self {
            dht: false,
            trackers: false,
            local_discovery: false,
            listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            allow_private_peers: true,
            ..Self::default()
        }
    }

    /// The torrent count limit actually applied.
    pub fn torrents_limit(&self) -> usize {
        usize::from(self.torrents_max.clamp(1, TORRENTS_MAX))
    }
}

/// Why a torrent job or the session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorrentError {
    /// The librqbit session did not start.
    #[error("torrent session did not start: {0}")]
    Session(String),
    /// The torrent could not be added (bad metadata, magnet not resolved, storage error).
    #[error("torrent could not be added: {0}")]
    Add(String),
    /// The metadata does not hash to the item's info hash.
    #[error("torrent info hash is {got}, the item says {want}")]
    InfoHashMismatch {
        /// What the item lists.
        want: String,
        /// What the metadata hashes to.
        got: String,
    },
    /// Taking the torrent would put torrent data over the operator's disk cap.
    #[error("torrent needs {need} bytes; {held} of the {max}-byte torrent disk cap are held")]
    OverDiskCap {
        /// The torrent's total length.
        need: u64,
        /// Bytes of the torrents held now.
        held: u64,
        /// The cap.
        max: u64,
    },
    /// The node seeds as many torrents as the operator allows.
    #[error("already seeding {0} torrents, the most allowed")]
    TooMany(usize),
    /// No progress for the stall limit.
    #[error("download stalled: no progress for {0} ms (no peer sent data)")]
    Stalled(u64),
    /// librqbit reported an error for the torrent.
    #[error("torrent failed: {0}")]
    Torrent(String),
    /// Reading or deleting torrent data on disk failed.
    #[error("torrent data on disk: {0}")]
    Io(#[from] std::io::Error),
}

impl TorrentError {
    /// Whether another node (or a later try) may do better.
    pub fn retryable(&self) -> bool {
        !matches!(self, TorrentError::InfoHashMismatch { .. })
    }
}

/// Lowercase hex of an info hash, for logs, folders and the API.
pub fn info_hash_hex(info_hash: &[u8; 20]) -> String {
    hex::encode(info_hash)
}
