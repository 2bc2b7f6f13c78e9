//! [`TorrentSession`]: the node's one librqbit session, with the operator's settings applied.
//!
//! Each torrent's files live in their own folder, `DATA_DIR/torrents/<info hash hex>/`, so two
//! torrents never write over each other whatever names their files carry. The session keeps
//! no state file of its own: after a restart the engine starts the node's torrent jobs again,
//! and librqbit checks the pieces already on disk before it downloads the rest.
//!
//! Unless the operator allows private peers, the session loads a blocklist of private,
//! loopback and link-local ranges, so no peer from the DHT, a tracker or the mesh can point
//! the node's connections at its own network.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use librqbit::api::TorrentIdOrHash;
use librqbit::dht::{DhtPersistenceConfig, Id20};
use librqbit::limits::LimitsConfig;
use librqbit::{
    AddTorrent, AddTorrentOptions, AddTorrentResponse, DhtSessionConfig, ListenerMode,
    ListenerOptions, ManagedTorrent, Session, SessionOptions, TorrentStatsState,
};
use serde::Serialize;
use starling_protocol::TorrentSource;

use super::{INITIAL_PEERS_MAX, TORRENTS_DIR, TorrentError, TorrentSettings, info_hash_hex};

/// A torrent handle from the session.
pub type Handle = Arc<ManagedTorrent>;

/// Private, loopback, link-local and other non-public ranges, in librqbit's blocklist format.
const PRIVATE_RANGES: &str = "\
unspecified:0.0.0.0-0.255.255.255
private-10:10.0.0.0-10.255.255.255
cgnat:100.64.0.0-100.127.255.255
loopback:127.0.0.0-127.255.255.255
link-local:169.254.0.0-169.254.255.255
private-172:172.16.0.0-172.31.255.255
protocol:192.0.0.0-192.0.0.255
private-192:192.168.0.0-192.168.255.255
benchmarking:198.18.0.0-198.19.255.255
multicast-reserved:224.0.0.0-255.255.255.255
loopback6:::-::1
unique-local6:fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
link-local6:fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff
multicast6:ff00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
";

/// What the session serves, summed over its torrents: the API's shape.
pub type TorrentTotals = crate::views::TorrentStats;

/// One torrent the session holds, for the dashboard and the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TorrentView {
    /// The v1 info hash, hex.
    pub info_hash: String,
    /// The torrent's name, if its metadata has one.
    pub name: Option<String>,
    /// `initializing`, `live`, `paused` or `error`.
    pub state: String,
    /// Whether every piece is on disk.
    pub finished: bool,
    /// Bytes on disk and verified.
    pub have_bytes: u64,
    /// The torrent's total length.
    pub total_bytes: u64,
    /// Bytes uploaded since the torrent was added.
    pub uploaded_bytes: u64,
    /// Peers connected now.
    pub peers: u32,
    /// The error, in the `error` state.
    pub error: Option<String>,
}

/// The node's librqbit session.
pub struct TorrentSession {
    session: Arc<Session>,
    dir: PathBuf,
    settings: TorrentSettings,
}

impl std::fmt::Debug for TorrentSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorrentSession")
            .field("dir", &self.dir)
            .field("listen_addr", &self.session.listen_addr())
            .finish_non_exhaustive()
    }
}

fn nonzero(v: Option<u32>) -> Option<NonZeroU32> {
    v.and_then(NonZeroU32::new)
}

impl TorrentSession {
    /// Starts the session with its data under `data_dir/torrents`. Must run in a
    /// multi-threaded tokio runtime.
    pub async fn open(
        data_dir: &Path,
        settings: TorrentSettings,
    ) -> Result<Arc<Self>, TorrentError> {
        // Absolute whatever `data_dir` is: the blocklist goes to librqbit as a `file:` URL.
        let dir = std::path::absolute(data_dir.join(TORRENTS_DIR))?;
        tokio::fs::create_dir_all(&dir).await?;
        let blocklist_url = if settings.allow_private_peers {
            None
        } else {
            let path = dir.join("blocklist.txt");
            tokio::fs::write(&path, PRIVATE_RANGES).await?;
            let url = url::Url::from_file_path(&path).map_err(|()| {
                TorrentError::Session(format!("{} is not absolute", path.display()))
            })?;
            Some(url.to_string())
        };
        let dht = settings.dht.then(|| DhtSessionConfig {
            bootstrap_addrs: None,
            port: None,
            persistence: Some(DhtPersistenceConfig {
                dump_interval: None,
                config_filename: Some(dir.join("dht.json")),
            }),
        });
        let opts = SessionOptions {
            dht,
            disable_trackers: !settings.trackers,
            disable_local_service_discovery: !settings.local_discovery,
            persistence: None,
            fastresume: false,
            listen: Some(ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: settings.listen_addr,
                enable_upnp_port_forwarding: false,
                ipv4_only: settings.listen_addr.is_ipv4(),
                ..ListenerOptions::default()
            }),
            ipv4_only: settings.listen_addr.is_ipv4(),
            ratelimits: LimitsConfig {
                upload_bps: nonzero(settings.upload_bytes_per_s),
                download_bps: nonzero(settings.download_bytes_per_s),
            },
            peer_limit: Some(usize::from(settings.peers_per_torrent_max.max(1))),
            concurrent_init_limit: Some(2),
            blocklist_url,
            client_name_and_version: Some(format!("starling/{}", env!("CARGO_PKG_VERSION"))),
            ..SessionOptions::default()
        };
        let session = Session::new_with_opts(dir.clone(), opts)
            .await
            .map_err(|e| TorrentError::Session(format!("{e:#}")))?;
        Ok(Arc::new(Self { session, dir, settings }))
    }

    /// The address the BitTorrent listener is bound to (what other holders dial).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.session.listen_addr()
    }

    /// The settings the session runs with.
    pub fn settings(&self) -> &TorrentSettings {
        &self.settings
    }

    /// The folder torrent data lives under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of one torrent's files.
    pub fn folder(&self, info_hash: &[u8; 20]) -> PathBuf {
        self.dir.join(info_hash_hex(info_hash))
    }

    /// The torrent, if the session holds it.
    pub fn get(&self, info_hash: &[u8; 20]) -> Option<Handle> {
        self.session.get(TorrentIdOrHash::Hash(Id20::new(*info_hash)))
    }

    /// Peers fit to hand to librqbit: at most [`INITIAL_PEERS_MAX`], never this session's
    /// own listener, and no private addresses unless the operator allows them.
    pub fn filter_peers(&self, peers: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
        let own = self.listen_addr();
        let mut seen = BTreeSet::new();
        peers
            .into_iter()
            .filter(|p| Some(*p) != own && p.port() != 0)
            .filter(|p| {
                self.settings.allow_private_peers || crate::crawl::guard::refusal(p.ip()).is_none()
            })
            .filter(|p| seen.insert(*p))
            .take(INITIAL_PEERS_MAX)
            .collect()
    }

    /// Adds the torrent, paused, with its files in [`Self::folder`]; a torrent the session
    /// already holds is returned as it is. A magnet is resolved from `peers` (and the DHT and
    /// trackers when on), which may take long: the caller bounds it.
    pub async fn add_paused(
        &self,
        info_hash: &[u8; 20],
        source: &TorrentSource,
        peers: Vec<SocketAddr>,
    ) -> Result<Handle, TorrentError> {
        if let Some(h) = self.get(info_hash) {
            return Ok(h);
        }
        let add = match source {
            TorrentSource::File(bytes) => AddTorrent::from_bytes(bytes.clone()),
            TorrentSource::Magnet(link) => AddTorrent::from_url(link.clone()),
        };
        let folder = self.folder(info_hash);
        let opts = AddTorrentOptions {
            paused: true,
            overwrite: true,
            output_folder: Some(folder.to_string_lossy().into_owned()),
            initial_peers: (!peers.is_empty()).then_some(peers),
            disable_trackers: !self.settings.trackers,
            peer_limit: Some(usize::from(self.settings.peers_per_torrent_max.max(1))),
            ..AddTorrentOptions::default()
        };
        let response = self
            .session
            .add_torrent(add, Some(opts))
            .await
            .map_err(|e| TorrentError::Add(format!("{e:#}")))?;
        let (handle, added) = match response {
            AddTorrentResponse::Added(_, h) => (h, true),
            AddTorrentResponse::AlreadyManaged(_, h) => (h, false),
            AddTorrentResponse::ListOnly(_) => {
                return Err(TorrentError::Add(
                    "session listed the torrent without adding it".into(),
                ));
            }
        };
        let got = handle.info_hash().0;
        if got != *info_hash {
            // Drop only what this call added: a torrent held under its real hash stays.
            if added {
                let id = TorrentIdOrHash::Hash(Id20::new(got));
                let _ = self.session.delete(id, false).await;
                let _ = tokio::fs::remove_dir_all(self.folder(info_hash)).await;
            }
            return Err(TorrentError::InfoHashMismatch {
                want: info_hash_hex(info_hash),
                got: info_hash_hex(&got),
            });
        }
        Ok(handle)
    }

    /// Starts a paused torrent; one still checking its pieces is left to finish first (it
    /// comes out of the check paused), and a live one is left alone.
    pub async fn start(&self, handle: &Handle) -> Result<(), TorrentError> {
        if !matches!(handle.stats().state, TorrentStatsState::Paused) {
            return Ok(());
        }
        self.session.unpause(handle).await.map_err(|e| TorrentError::Torrent(format!("{e:#}")))
    }

    /// Drops the torrent from the session; its files stay unless `delete_files`.
    pub async fn forget(&self, info_hash: &[u8; 20], delete_files: bool) {
        let id = TorrentIdOrHash::Hash(Id20::new(*info_hash));
        if let Err(e) = self.session.delete(id, delete_files).await {
            tracing::debug!(info_hash = %info_hash_hex(info_hash), error = %format!("{e:#}"), "forget torrent");
        }
        if delete_files {
            let folder = self.folder(info_hash);
            if let Err(e) = tokio::fs::remove_dir_all(&folder).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(folder = %folder.display(), error = %e, "could not delete torrent data");
            }
        }
    }

    /// One torrent's view.
    pub fn view(&self, handle: &Handle) -> TorrentView {
        let s = handle.stats();
        TorrentView {
            info_hash: handle.info_hash().as_string(),
            name: handle.name(),
            state: match s.state {
                TorrentStatsState::Initializing { .. } => "initializing",
                TorrentStatsState::Live => "live",
                TorrentStatsState::Paused => "paused",
                TorrentStatsState::Error => "error",
            }
            .into(),
            finished: s.finished,
            have_bytes: s.progress_bytes,
            total_bytes: s.total_bytes,
            uploaded_bytes: s.uploaded_bytes,
            peers: s.live.as_ref().map_or(0, |l| l.snapshot.peer_stats.live),
            error: s.error,
        }
    }

    /// Every torrent the session holds.
    pub fn views(&self) -> Vec<TorrentView> {
        self.session.with_torrents(|ts| ts.map(|(_, h)| self.view(h)).collect())
    }

    /// Totals over the session, cheap enough for every status request.
    pub fn totals(&self) -> TorrentTotals {
        let snap = self.session.stats_snapshot();
        let mut t = TorrentTotals {
            enabled: true,
            dht: self.session.get_dht().is_some(),
            trackers: self.settings.trackers,
            listen: self.listen_addr().map(|a| a.to_string()),
            uploaded_bytes: snap.counters.uploaded_bytes,
            downloaded_bytes: snap.counters.fetched_bytes,
            peers: u64::from(snap.peers.live),
            ..TorrentTotals::default()
        };
        for v in self.views() {
            if v.finished {
                t.seeding += 1;
            } else {
                t.downloading += 1;
            }
            t.held_bytes += v.total_bytes;
        }
        t
    }

    /// Makes room for `need` more bytes next to `held` bytes of torrents in use, by deleting
    /// the folders of torrents no longer held (oldest first). `keep` are the folders in use.
    pub async fn make_room(
        &self,
        need: u64,
        held: u64,
        keep: &BTreeSet<[u8; 20]>,
    ) -> Result<(), TorrentError> {
        let max = self.settings.disk_bytes_max;
        if held.saturating_add(need) > max {
            return Err(TorrentError::OverDiskCap { need, held, max });
        }
        let dir = self.dir.clone();
        let keep: BTreeSet<String> = keep.iter().map(info_hash_hex).collect();
        let mut left = tokio::task::spawn_blocking(move || leftover_folders(&dir, &keep))
            .await
            .map_err(|e| TorrentError::Torrent(e.to_string()))??;
        left.sort_by_key(|l| l.modified);
        let mut total: u64 = left.iter().map(|l| l.bytes).sum();
        for l in left {
            if held.saturating_add(need).saturating_add(total) <= max {
                break;
            }
            tracing::info!(folder = %l.path.display(), bytes = l.bytes, "deleting data of a torrent no longer held, for the disk cap");
            tokio::fs::remove_dir_all(&l.path).await?;
            total -= l.bytes;
        }
        Ok(())
    }

    /// Stops the session (on node shutdown).
    pub async fn stop(&self) {
        self.session.stop().await;
    }
}

struct Leftover {
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

/// Torrent folders (named by info hash) that are not in `keep`, with their sizes.
fn leftover_folders(dir: &Path, keep: &BTreeSet<String>) -> std::io::Result<Vec<Leftover>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_hash = name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hash || keep.contains(&name) || !entry.file_type()?.is_dir() {
            continue;
        }
        let modified = entry.metadata()?.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push(Leftover { path: entry.path(), bytes: dir_bytes(&entry.path())?, modified });
    }
    Ok(out)
}

/// Bytes of the files under `dir` (symlinks not followed).
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                total = total.saturating_add(entry.metadata()?.len());
            }
        }
    }
    Ok(total)
}
