//! Configuration for `starling up`: built-in defaults, then a TOML file, then flags and
//! `STARLING_*` environment variables (clap reads both), later sources winning.
//!
//! Everything is checked here, before any socket or file is opened, so a bad value gets one
//! clear line naming the setting. `docs/config.md` lists every setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use libp2p::Multiaddr;
use serde::Deserialize;
use starling_protocol::{EngineConfig, PublicKey, Roles};
use starling_tui::units::{self, ByteRate, ByteSize};

use crate::control::PinnedCaps;

/// Default port for both TCP and QUIC.
pub const DEFAULT_P2P_PORT: u16 = 4801;
/// Default bound on established connections.
pub const DEFAULT_CONNECTIONS_MAX: u32 = 128;
/// Default period of state sync with one connected peer.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 30_000;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Whether this node can be reached from the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Ask peers (AutoNAT); ask for a relay when they say private.
    #[default]
    Auto,
    /// Reachable: may relay for others when relaying is on.
    Public,
    /// Not reachable: ask for a relay slot at once and listen through the relay.
    Private,
}

/// `starling up`: run a node.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpArgs {
    /// TOML configuration file [default: config.toml in the platform config dir, if present].
    #[arg(long, env = "STARLING_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the identity key, database and API files [default: platform data dir].
    #[arg(long, env = "STARLING_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable; `none` for none)
    /// [default: /ip4/0.0.0.0/tcp/4801 and /ip4/0.0.0.0/udp/4801/quic-v1].
    #[arg(
        long = "listen",
        env = "STARLING_LISTEN",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// Peer to dial at start (repeatable); `/p2p/<peer id>` may be appended [default: none].
    #[arg(
        long = "bootstrap",
        env = "STARLING_BOOTSTRAP",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub bootstrap: Vec<String>,
    /// Project owner key (64 hex digits) to trust, in addition to the stored ones (repeatable)
    /// [default: only the stored ones].
    #[arg(long = "trust", env = "STARLING_TRUST", value_name = "KEY", value_delimiter = ',')]
    pub trust: Vec<String>,
    /// Curator key (64 hex digits) to follow, in addition to the stored ones (repeatable, at
    /// most 16 in all): the projects its directory lists are worked as if trusted
    /// [default: only the stored ones].
    #[arg(long = "follow", env = "STARLING_FOLLOW", value_name = "KEY", value_delimiter = ',')]
    pub follow: Vec<String>,
    /// Find peers on the local network with mDNS [default: true].
    #[arg(long, env = "STARLING_MDNS", value_name = "BOOL")]
    pub mdns: Option<bool>,
    /// Port of the loopback control API (0 picks a free one) [default: 0].
    #[arg(long, env = "STARLING_API_PORT", value_name = "PORT")]
    pub api_port: Option<u16>,
    /// Log format [default: human].
    #[arg(long, env = "STARLING_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Also write the log to this file, rotated by size (`FILE.1` … `FILE.5` kept); the log
    /// still goes to stderr [default: none].
    #[arg(long, env = "STARLING_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Size at which the log file is rotated (`10MiB`, `512KiB`, `1GB`, bytes).
    #[arg(long, env = "STARLING_LOG_FILE_MAX", value_name = "SIZE", default_value = crate::logfile::MAX_DEFAULT)]
    pub log_file_max: String,
    /// Crawl chunks worked at once [default: 4].
    #[arg(long, env = "STARLING_CAPACITY")]
    pub capacity: Option<u16>,
    /// Most established connections [default: 128].
    #[arg(long, env = "STARLING_CONNECTIONS_MAX")]
    pub connections_max: Option<u32>,
    /// Period of state sync with a connected peer, in ms [default: 30000].
    #[arg(long, env = "STARLING_SYNC_INTERVAL_MS")]
    pub sync_interval_ms: Option<u64>,
    /// Presence heartbeat period, in ms [default: 2000].
    #[arg(long, env = "STARLING_PRESENCE_INTERVAL_MS")]
    pub presence_interval_ms: Option<u64>,
    /// How long a peer counts as live after its last heartbeat, in ms [default: 7000].
    #[arg(long, env = "STARLING_PRESENCE_TTL_MS")]
    pub presence_ttl_ms: Option<u64>,
    /// Quiet period after start before claiming, in ms [default: 3000].
    #[arg(long, env = "STARLING_WARMUP_MS")]
    pub warmup_ms: Option<u64>,
    /// Wait after an item becomes claimable before claiming it, in ms [default: 300].
    #[arg(long, env = "STARLING_SETTLE_MS")]
    pub settle_ms: Option<u64>,
    /// Wait after claiming before starting work, in ms [default: 300].
    #[arg(long, env = "STARLING_CLAIM_SETTLE_MS")]
    pub claim_settle_ms: Option<u64>,
    /// Clock difference between nodes that is tolerated, in ms [default: 1000].
    #[arg(long, env = "STARLING_SKEW_MARGIN_MS")]
    pub skew_margin_ms: Option<u64>,
    /// Every this long an item stays unclaimed, one more HRW rank may claim it, in ms
    /// [default: 2000].
    #[arg(long, env = "STARLING_WIDEN_MS")]
    pub widen_ms: Option<u64>,
    /// Let the crawler fetch loopback and private addresses: for tests and the local demo only
    /// [default: false].
    #[arg(long, env = "STARLING_ALLOW_PRIVATE_TARGETS", value_name = "BOOL")]
    pub allow_private_targets: Option<bool>,
    /// Fetches in flight at once across all crawl chunks [default: 16].
    #[arg(long, env = "STARLING_FETCHES_MAX")]
    pub fetches_max: Option<usize>,
    /// Download cap for crawling, e.g. 5MB/s or 2MiB/s; a plain number is bytes/s (0 = none)
    /// [default: 0].
    #[arg(
        long = "bandwidth-max",
        visible_alias = "bandwidth-bytes-per-s",
        env = "STARLING_BANDWIDTH_BYTES_PER_S",
        value_name = "RATE"
    )]
    pub bandwidth_bytes_per_s: Option<ByteRate>,
    /// Cap on stored results, e.g. 10GiB or 500MB; over it the node claims no crawl work
    /// (0 = none) [default: 0].
    #[arg(
        long = "disk-max",
        visible_alias = "disk-bytes-max",
        env = "STARLING_DISK_BYTES_MAX",
        value_name = "SIZE"
    )]
    pub disk_bytes_max: Option<ByteSize>,
    /// A note naming who runs this node's crawls, written into every WARC file's warcinfo
    /// record as `operator` (opt-in) [default: none].
    #[arg(long, env = "STARLING_WARC_OPERATOR", value_name = "TEXT")]
    pub warc_operator: Option<String>,
    /// Download cap for fetching result copies, e.g. 5MB/s (0 = none) [default: 0].
    #[arg(
        long = "seed-download-max",
        visible_alias = "seed-download-bytes-per-s",
        env = "STARLING_SEED_DOWNLOAD_BYTES_PER_S",
        value_name = "RATE"
    )]
    pub seed_download_bytes_per_s: Option<ByteRate>,
    /// Upload cap for serving result copies, e.g. 5MB/s (0 = none) [default: 0].
    #[arg(
        long = "seed-upload-max",
        visible_alias = "seed-upload-bytes-per-s",
        env = "STARLING_SEED_UPLOAD_BYTES_PER_S",
        value_name = "RATE"
    )]
    pub seed_upload_bytes_per_s: Option<ByteRate>,
    /// Seeding duties held at once (result copies and torrents) [default: 64].
    #[arg(long, env = "STARLING_SEED_CAPACITY")]
    pub seed_capacity: Option<u16>,
    /// Take torrent seeding duties (the `[torrent]` table of the config file tunes them)
    /// [default: true].
    #[arg(long, env = "STARLING_TORRENTS", value_name = "BOOL")]
    pub torrents: Option<bool>,
    /// Torrents on loopback only, no DHT, trackers or LAN discovery: for tests [default: false].
    #[arg(long, env = "STARLING_TORRENT_LOOPBACK", value_name = "BOOL")]
    pub torrent_loopback: Option<bool>,
    /// Take seeding duties: keep and serve copies of other nodes' results [default: true].
    #[arg(long, env = "STARLING_SEED", value_name = "BOOL")]
    pub seed: Option<bool>,
    /// Whether peers can reach this node (`auto` asks them) [default: auto].
    #[arg(long, env = "STARLING_REACHABILITY", value_enum)]
    pub reachability: Option<Reachability>,
    /// Offer relay slots to nodes behind NAT while this node is reachable [default: false].
    #[arg(long, env = "STARLING_RELAY", value_name = "BOOL")]
    pub relay: Option<bool>,
    /// What one relayed connection may carry before the relay closes it, e.g. 1GiB
    /// [default: 1 GiB].
    #[arg(
        long = "relay-circuit-max",
        visible_alias = "relay-circuit-bytes-max",
        env = "STARLING_RELAY_CIRCUIT_BYTES_MAX",
        value_name = "SIZE"
    )]
    pub relay_circuit_bytes_max: Option<ByteSize>,
    /// Relayed connections carried at once [default: 64].
    #[arg(long, env = "STARLING_RELAY_CIRCUITS_MAX")]
    pub relay_circuits_max: Option<usize>,
    /// Lease of a relay slot, in ms: how soon a slot moves when its relay dies [default: 30000].
    #[arg(long, env = "STARLING_RELAY_LEASE_MS")]
    pub relay_lease_ms: Option<u64>,
}

/// The TOML file: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    trust: Option<Vec<String>>,
    follow: Option<Vec<String>>,
    mdns: Option<bool>,
    api_port: Option<u16>,
    log_format: Option<LogFormat>,
    capacity: Option<u16>,
    connections_max: Option<u32>,
    sync_interval_ms: Option<u64>,
    presence_interval_ms: Option<u64>,
    presence_ttl_ms: Option<u64>,
    warmup_ms: Option<u64>,
    settle_ms: Option<u64>,
    claim_settle_ms: Option<u64>,
    skew_margin_ms: Option<u64>,
    widen_ms: Option<u64>,
    allow_private_targets: Option<bool>,
    fetches_max: Option<usize>,
    bandwidth_bytes_per_s: Option<ByteRate>,
    disk_bytes_max: Option<ByteSize>,
    warc_operator: Option<String>,
    seed: Option<bool>,
    seed_capacity: Option<u16>,
    seed_download_bytes_per_s: Option<ByteRate>,
    seed_upload_bytes_per_s: Option<ByteRate>,
    torrent: Option<crate::torrent::TorrentSettings>,
    reachability: Option<Reachability>,
    relay: Option<bool>,
    relay_circuit_bytes_max: Option<ByteSize>,
    relay_circuits_max: Option<usize>,
    relay_lease_ms: Option<u64>,
}

/// The operator's crawling settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrawlSettings {
    /// Lift the SSRF guard (tests and the local demo only).
    pub allow_private_targets: bool,
    /// Fetches in flight at once (`None` = the crawler's default).
    pub fetches_max: Option<usize>,
    /// Download cap in bytes/s (`None` = none).
    pub bandwidth_bytes_per_s: Option<u32>,
    /// Cap on stored results in bytes (`None` = none).
    pub disk_bytes_max: Option<u64>,
    /// The warcinfo `operator` note (`None` = none written).
    pub warc_operator: Option<String>,
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the key, database and API files live.
    pub data_dir: PathBuf,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Keys trusted in addition to the stored set.
    pub trust: Vec<PublicKey>,
    /// Curator keys followed in addition to the stored set.
    pub follow: Vec<PublicKey>,
    /// mDNS discovery on.
    pub mdns: bool,
    /// Control API port (0 = any free port).
    pub api_port: u16,
    /// Log format.
    pub log_format: LogFormat,
    /// Most established connections.
    pub connections_max: u32,
    /// Period of periodic state sync.
    pub sync_interval: Duration,
    /// The claim engine's tunables.
    pub engine: EngineConfig,
    /// Crawling settings.
    pub crawl: CrawlSettings,
    /// Take seeding duties.
    pub seed: bool,
    /// Bandwidth caps for result copies.
    pub seed_caps: crate::seed::node::SeedCaps,
    /// Torrent seeding settings.
    pub torrent: crate::torrent::TorrentSettings,
    /// Whether peers can reach this node.
    pub reachability: Reachability,
    /// Relay server settings.
    pub relay: crate::relay::RelaySettings,
    /// The caps given by a flag or environment variable: they win over the caps saved from
    /// the dashboard (`POST /caps`) for this run; the others give way to them.
    pub caps_pinned: PinnedCaps,
}

/// The platform's directories for Starling, if the platform has a home directory.
fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("org", "starling", "starling")
}

/// The data directory, absolute: `--data-dir` (a relative one taken from the working
/// directory now), else the platform data dir. The node hands paths under it to librqbit as
/// `file:` URLs and to `starling export` through the API, so it must not depend on where
/// either runs.
pub fn resolve_data_dir(flag: Option<&Path>) -> Result<PathBuf> {
    let dir = match flag {
        Some(dir) => dir.to_path_buf(),
        None => project_dirs().map(|d| d.data_dir().to_path_buf()).ok_or_else(|| {
            anyhow!("no home directory to keep node data in; pass --data-dir DIR")
        })?,
    };
    absolute(&dir, "data dir")
}

/// `path` made absolute against the working directory (nothing is resolved on disk).
pub fn absolute(path: &Path, what: &str) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| anyhow!("{what} {:?} cannot be made absolute: {e}", path.display()))
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        anyhow!("config file {} is not valid: {}{at}", path.display(), e.message().trim())
    })
}

fn parse_addrs(what: &str, raw: &[String]) -> Result<Vec<Multiaddr>> {
    raw.iter()
        .map(|s| {
            s.trim()
                .parse::<Multiaddr>()
                .map_err(|e| anyhow!("{what} address {s:?} does not parse as a multiaddr: {e}"))
        })
        .collect()
}

/// Parses keys given to `what` ("trusted", "followed").
fn parse_keys(what: &str, raw: &[String]) -> Result<Vec<PublicKey>> {
    raw.iter()
        .map(|s| {
            s.trim()
                .parse::<PublicKey>()
                .map_err(|e| anyhow!("{what} key {s:?} is not a public key: {e}"))
        })
        .collect()
}

/// The curator keys to follow, from the file and the flags together (duplicates once), at
/// most [`starling_protocol::limits::FOLLOWING_MAX`].
fn followed_keys(args: &UpArgs, file: &FileConfig) -> Result<Vec<PublicKey>> {
    let mut follow = parse_keys("followed", &file.follow.clone().unwrap_or_default())?;
    follow.extend(parse_keys("followed", &args.follow)?);
    follow.sort();
    follow.dedup();
    let max = starling_protocol::limits::FOLLOWING_MAX;
    if follow.len() > max {
        bail!("follow: {} curator keys given; a node follows at most {max}", follow.len());
    }
    Ok(follow)
}

/// A setting from its flag (or environment variable), else from the config file: the one
/// step every setting's merge takes. `None` when neither gives it.
macro_rules! layered {
    ($args:expr, $file:expr, $name:ident) => {
        $args.$name.or($file.$name)
    };
}

/// Sets each `slot` to its setting when the flag or the file gives one; otherwise the slot
/// keeps its default.
macro_rules! merge_into {
    ($args:expr, $file:expr; $($slot:expr => $name:ident),+ $(,)?) => {
        $(
            if let Some(v) = layered!($args, $file, $name) {
                $slot = v;
            }
        )+
    };
}

impl Config {
    /// Resolves the configuration from defaults, the config file, flags and environment.
    pub fn load(args: &UpArgs) -> Result<Self> {
        let file = read_chosen_file(args)?;
        let data_dir = resolve_data_dir(args.data_dir.as_deref().or(file.data_dir.as_deref()))?;
        let (listen, bootstrap, trust) = peers_and_keys(args, &file)?;
        let reachability = layered!(args, file, reachability).unwrap_or_default();
        let mut relay = crate::relay::RelaySettings {
            enabled: layered!(args, file, relay).unwrap_or(false),
            ..Default::default()
        };
        merge_into!(args, file;
            relay.circuits_max => relay_circuits_max,
        );
        if let Some(ByteSize(b)) = layered!(args, file, relay_circuit_bytes_max) {
            relay.circuit_bytes_max = b;
        }
        let seed = layered!(args, file, seed).unwrap_or(true);
        let torrent = torrent_settings(args, &file);
        let mut engine = engine_settings(args, &file);
        engine.roles = roles(seed, torrent.enabled, relay.enabled, reachability);

        let sync_interval_ms =
            layered!(args, file, sync_interval_ms).unwrap_or(DEFAULT_SYNC_INTERVAL_MS);
        let cfg = Self {
            data_dir,
            listen,
            bootstrap,
            trust,
            follow: followed_keys(args, &file)?,
            mdns: layered!(args, file, mdns).unwrap_or(true),
            api_port: layered!(args, file, api_port).unwrap_or(0),
            log_format: layered!(args, file, log_format).unwrap_or_default(),
            connections_max: layered!(args, file, connections_max)
                .unwrap_or(DEFAULT_CONNECTIONS_MAX),
            sync_interval: Duration::from_millis(sync_interval_ms),
            engine,
            crawl: CrawlSettings {
                allow_private_targets: layered!(args, file, allow_private_targets).unwrap_or(false),
                fetches_max: layered!(args, file, fetches_max).filter(|n| *n > 0),
                bandwidth_bytes_per_s: rate_u32(
                    "bandwidth_bytes_per_s",
                    layered!(args, file, bandwidth_bytes_per_s),
                )?
                .filter(|n| *n > 0),
                disk_bytes_max: layered!(args, file, disk_bytes_max)
                    .map(|b| b.0)
                    .filter(|n| *n > 0),
                warc_operator: args
                    .warc_operator
                    .clone()
                    .or(file.warc_operator)
                    .filter(|n| !n.trim().is_empty()),
            },
            seed,
            seed_caps: crate::seed::node::SeedCaps {
                download_bytes_per_s: rate_u32(
                    "seed_download_bytes_per_s",
                    layered!(args, file, seed_download_bytes_per_s),
                )?
                .and_then(std::num::NonZeroU32::new),
                upload_bytes_per_s: rate_u32(
                    "seed_upload_bytes_per_s",
                    layered!(args, file, seed_upload_bytes_per_s),
                )?
                .and_then(std::num::NonZeroU32::new),
            },
            torrent,
            reachability,
            relay,
            caps_pinned: PinnedCaps {
                capacity: args.capacity.is_some(),
                bandwidth: args.bandwidth_bytes_per_s.is_some(),
                disk: args.disk_bytes_max.is_some(),
            },
        };
        cfg.check().context("invalid configuration")?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        self.engine.validate().map_err(|e| anyhow!("{}", engine_error(&e)))?;
        let relay = &self.relay;
        let checks: [(&str, u64, u64, u64); 4] = [
            ("sync_interval_ms", self.sync_interval.as_millis() as u64, 100, 3_600_000),
            ("connections_max", self.connections_max.into(), 1, CONNECTIONS_MAX),
            ("fetches_max", self.crawl.fetches_max.unwrap_or(1) as u64, 1, FETCHES_MAX),
            ("relay_circuits_max", relay.circuits_max as u64, 1, 1_024),
        ];
        for (name, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                bail!("{} = {value} is outside its range {min} ..= {max}", shown(name));
            }
        }
        let (bytes, min, max) = (relay.circuit_bytes_max, 1, 1 << 40);
        if !(min..=max).contains(&bytes) {
            bail!(
                "{} = {} is outside its range {} ..= {}",
                shown("relay_circuit_bytes_max"),
                units::size(bytes),
                units::size(min),
                units::size(max)
            );
        }
        if self.relay.enabled && self.reachability == Reachability::Private {
            bail!("relay = true needs a reachable node; this one is set to reachability = private");
        }
        Ok(())
    }
}

/// The config file `--config` names, else the platform's if it exists, else none.
fn read_chosen_file(args: &UpArgs) -> Result<FileConfig> {
    let default_file = project_dirs().map(|d| d.config_dir().join("config.toml"));
    match (&args.config, default_file) {
        (Some(path), _) => read_file_config(path),
        (None, Some(path)) if path.exists() => read_file_config(&path),
        _ => Ok(FileConfig::default()),
    }
}

/// Listen and bootstrap addresses and trusted keys. A list given by flags replaces the
/// file's; trusted keys from both are kept.
fn peers_and_keys(
    args: &UpArgs,
    file: &FileConfig,
) -> Result<(Vec<Multiaddr>, Vec<Multiaddr>, Vec<PublicKey>)> {
    let pick_list = |flag: &Vec<String>, file: &Option<Vec<String>>| {
        if flag.is_empty() { file.clone().unwrap_or_default() } else { flag.clone() }
    };
    // `--listen none`: no listen address at all (a node that only dials out).
    let no_listen = args.listen.len() == 1 && args.listen[0].trim() == "none";
    let listen_raw = if no_listen { Vec::new() } else { pick_list(&args.listen, &file.listen) };
    let mut listen = parse_addrs("listen", &listen_raw)?;
    if listen.is_empty() && args.listen.is_empty() && file.listen.is_none() && !no_listen {
        listen = default_listen();
    }
    let bootstrap = parse_addrs("bootstrap", &pick_list(&args.bootstrap, &file.bootstrap))?;
    let mut trust = parse_keys("trusted", &file.trust.clone().unwrap_or_default())?;
    trust.extend(parse_keys("trusted", &args.trust)?);
    Ok((listen, bootstrap, trust))
}

/// The engine's tunables: its defaults, with what the flags or the file set (checked later,
/// by [`Config::check`]). Roles are set by the caller.
fn engine_settings(args: &UpArgs, file: &FileConfig) -> EngineConfig {
    let mut engine = EngineConfig::default();
    merge_into!(args, file;
        engine.presence_interval_ms => presence_interval_ms,
        engine.presence_ttl_ms => presence_ttl_ms,
        engine.warmup_ms => warmup_ms,
        engine.settle_ms => settle_ms,
        engine.claim_settle_ms => claim_settle_ms,
        engine.skew_margin_ms => skew_margin_ms,
        engine.widen_ms => widen_ms,
        engine.capacity => capacity,
        engine.relay_lease_ms => relay_lease_ms,
        engine.seed_capacity => seed_capacity,
    );
    engine
}

/// The `[torrent]` table, with `--torrent-loopback` and `--torrents` over it. A missing table
/// and a missing key in it both mean the documented default (`TorrentSettings::default`: no
/// DHT, which would reach the internet at start).
fn torrent_settings(args: &UpArgs, file: &FileConfig) -> crate::torrent::TorrentSettings {
    let mut torrent = file.torrent.clone().unwrap_or_default();
    if args.torrent_loopback == Some(true) {
        torrent = crate::torrent::TorrentSettings::loopback();
    }
    if let Some(on) = args.torrents {
        torrent.enabled = on;
    }
    torrent
}

/// The roles this node offers: crawling always; seeding when on; torrent duties only where a
/// BitTorrent session will run (and seeding is on); relay slots only when relaying is on and
/// the node is known to be reachable.
fn roles(seed: bool, torrents: bool, relay: bool, reachability: Reachability) -> Roles {
    let mut roles = if seed { Roles(Roles::CRAWL.0 | Roles::SEED.0) } else { Roles::CRAWL };
    if seed && torrents {
        roles = Roles(roles.0 | Roles::TORRENT.0);
    }
    if relay && reachability == Reachability::Public {
        roles = Roles(roles.0 | Roles::RELAY.0);
    }
    roles
}

/// Most established connections that may be asked for.
pub const CONNECTIONS_MAX: u64 = 65_536;
/// Most fetches in flight that may be asked for.
pub const FETCHES_MAX: u64 = 1_024;

/// A setting as in the config file with its flag (`warmup_ms (--warmup-ms)`), so users of
/// either find what to change.
fn shown(name: &str) -> String {
    let flag = match name {
        "bandwidth_bytes_per_s" => "bandwidth-max".to_owned(),
        "disk_bytes_max" => "disk-max".to_owned(),
        "seed_download_bytes_per_s" => "seed-download-max".to_owned(),
        "seed_upload_bytes_per_s" => "seed-upload-max".to_owned(),
        "relay_circuit_bytes_max" => "relay-circuit-max".to_owned(),
        other => other.replace('_', "-"),
    };
    format!("{name} (--{flag})")
}

/// A rate setting that must fit a `u32` of bytes per second (the rate limiters' type).
fn rate_u32(name: &str, rate: Option<ByteRate>) -> Result<Option<u32>> {
    rate.map(|ByteRate(r)| {
        u32::try_from(r).map_err(|_| {
            anyhow!(
                "invalid configuration: {} = {} is outside its range 0 ..= {} ({} bytes/s)",
                shown(name),
                units::rate(r),
                units::rate(u32::MAX.into()),
                u32::MAX
            )
        })
    })
    .transpose()
}

/// An engine setting's refusal in the words of [`shown`].
fn engine_error(e: &starling_protocol::ConfigError) -> String {
    use starling_protocol::ConfigError as E;
    match e {
        E::OutOfRange { name, value, min, max } => {
            format!("{} = {value} is outside its range {min} ..= {max}", shown(name))
        }
        E::Order { larger, larger_value, smaller, smaller_value } => format!(
            "{} = {larger_value} must be larger than {} = {smaller_value}",
            shown(larger),
            shown(smaller)
        ),
        other => other.to_string(),
    }
}

/// TCP and QUIC on every interface, on the default port.
fn default_listen() -> Vec<Multiaddr> {
    [
        format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
        format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_with(config: &Path) -> UpArgs {
        UpArgs { config: Some(config.into()), data_dir: Some("/tmp/x".into()), ..UpArgs::default() }
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "capacity = 7\nwarmup_ms = 10\nlisten = []\n").unwrap();
        let mut args = args_with(&path);
        args.warmup_ms = Some(20);
        let cfg = Config::load(&args).unwrap();
        assert_eq!(cfg.engine.capacity, 7);
        assert_eq!(cfg.engine.warmup_ms, 20);
        assert!(cfg.listen.is_empty());
    }

    #[test]
    fn torrent_duties_are_offered_only_with_a_torrent_session_and_seeding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let roles = |seed: Option<bool>, torrents: Option<bool>| {
            let args = UpArgs { seed, torrents, ..args_with(&path) };
            Config::load(&args).unwrap().engine.roles
        };
        let all = roles(None, None);
        assert!(all.contains(Roles(Roles::CRAWL.0 | Roles::SEED.0 | Roles::TORRENT.0)), "{all:?}");
        let no_torrents = roles(None, Some(false));
        assert!(no_torrents.contains(Roles::SEED) && !no_torrents.contains(Roles::TORRENT));
        let no_seeding = roles(Some(false), None);
        assert!(!no_seeding.contains(Roles::SEED) && !no_seeding.contains(Roles::TORRENT));
    }

    #[test]
    fn torrent_settings_default_alike_with_or_without_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let torrent = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(&args_with(&path)).unwrap().torrent
        };
        let documented = crate::torrent::TorrentSettings::default();
        assert!(!documented.dht, "the DHT is off unless asked for");
        assert_eq!(torrent(""), documented);
        assert_eq!(torrent("[torrent]\n"), documented);
        let port_only = torrent("[torrent]\nlisten_addr = \"127.0.0.1:6881\"\n");
        assert_eq!(
            port_only,
            crate::torrent::TorrentSettings {
                listen_addr: "127.0.0.1:6881".parse().unwrap(),
                ..documented
            }
        );
        assert!(torrent("[torrent]\ndht = true\n").dht);
    }

    #[test]
    fn a_relative_data_dir_is_taken_from_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let cwd = std::env::current_dir().unwrap();
        let args = UpArgs { data_dir: Some("pb".into()), ..args_with(&path) };
        assert_eq!(Config::load(&args).unwrap().data_dir, cwd.join("pb"));
        std::fs::write(&path, "data_dir = \"nested/pb\"\n").unwrap();
        let args = UpArgs { data_dir: None, ..args_with(&path) };
        assert_eq!(Config::load(&args).unwrap().data_dir, cwd.join("nested/pb"));
        assert_eq!(resolve_data_dir(Some(Path::new("/srv/pb"))).unwrap(), Path::new("/srv/pb"));
    }

    #[test]
    fn bad_inputs_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "capacity = \"many\"\n").unwrap();
        let err = format!("{:#}", Config::load(&args_with(&path)).unwrap_err());
        assert!(err.contains("is not valid") && err.contains("line 1"), "{err}");
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(format!("{:#}", Config::load(&args_with(&path)).unwrap_err()).contains("bogus"));
        std::fs::write(&path, "").unwrap();
        let mut args = args_with(&path);
        args.bootstrap = vec!["not-an-addr".into()];
        let err = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(err.contains("bootstrap address \"not-an-addr\""), "{err}");
    }

    #[test]
    fn followed_curators_add_up_from_file_and_flags_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let key = |i: u64| starling_protocol::engine::test_keypair(i).public();
        std::fs::write(&path, format!("follow = [\"{}\"]\n", key(1).to_hex())).unwrap();
        let mut args = args_with(&path);
        args.follow = vec![key(2).to_hex(), key(1).to_hex()];
        let mut want = vec![key(1), key(2)];
        want.sort();
        assert_eq!(Config::load(&args).unwrap().follow, want);
        args.follow = vec!["nope".into()];
        let err = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(err.contains("followed key \"nope\""), "{err}");
        args.follow = (10..27).map(|i| key(i).to_hex()).collect();
        let err = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(err.contains("at most 16"), "{err}");
    }

    #[test]
    fn out_of_range_settings_name_the_setting_its_value_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let err = |args: UpArgs| format!("{:#}", Config::load(&args).unwrap_err());
        let e = err(UpArgs { warmup_ms: Some(u64::MAX), ..args_with(&path) });
        assert!(
            e.contains(
                "warmup_ms (--warmup-ms) = 18446744073709551615 is outside its range 0 ..= 3600000"
            ),
            "{e}"
        );
        let e = err(UpArgs { settle_ms: Some(u64::MAX), ..args_with(&path) });
        assert!(e.contains("settle_ms (--settle-ms) = 18446744073709551615"), "{e}");
        let e = err(UpArgs { presence_ttl_ms: Some(u64::MAX), ..args_with(&path) });
        assert!(e.contains("presence_ttl_ms (--presence-ttl-ms)"), "{e}");
        let e = err(UpArgs { connections_max: Some(0), ..args_with(&path) });
        assert!(
            e.contains("connections_max (--connections-max) = 0 is outside its range 1 ..= 65536"),
            "{e}"
        );
        let e = err(UpArgs { fetches_max: Some(1 << 20), ..args_with(&path) });
        assert!(e.contains("fetches_max (--fetches-max) = 1048576"), "{e}");
        let e = err(UpArgs {
            presence_interval_ms: Some(5_000),
            presence_ttl_ms: Some(5_000),
            ..args_with(&path)
        });
        assert!(
            e.contains("presence_ttl_ms (--presence-ttl-ms) = 5000 must be larger than"),
            "{e}"
        );
        // The config file is checked alike.
        std::fs::write(&path, "capacity = 60000\n").unwrap();
        let e = err(args_with(&path));
        assert!(e.contains("capacity (--capacity) = 60000 is outside its range 0 ..= 1024"), "{e}");
        // The edges of a range are accepted.
        std::fs::write(&path, "warmup_ms = 3600000\nsettle_ms = 0\n").unwrap();
        Config::load(&args_with(&path)).unwrap();
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    fn parse(flags: &[&str]) -> Result<UpArgs, String> {
        use clap::Parser;
        let argv = std::iter::once("starling").chain(flags.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.up).map_err(|e| e.to_string())
    }

    #[test]
    fn caps_take_units_in_flags_old_names_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "disk_bytes_max = \"10GiB\"\nseed_upload_bytes_per_s = \"2 MiB/s\"\n\
             seed_download_bytes_per_s = 65536\nrelay_circuit_bytes_max = \"512MB\"\n\
             [torrent]\ndisk_bytes_max = \"1TB\"\nupload_bytes_per_s = \"1MB/s\"\n",
        )
        .unwrap();
        let file_only = Config::load(&args_with(&path)).unwrap();
        assert_eq!(file_only.crawl.disk_bytes_max, Some(10 << 30));
        assert_eq!(file_only.seed_caps.upload_bytes_per_s.map(|n| n.get()), Some(2 << 20));
        assert_eq!(file_only.seed_caps.download_bytes_per_s.map(|n| n.get()), Some(65_536));
        assert_eq!(file_only.relay.circuit_bytes_max, 512_000_000);
        assert_eq!(file_only.torrent.disk_bytes_max, 1_000_000_000_000);
        assert_eq!(file_only.torrent.upload_bytes_per_s, Some(1_000_000));
        assert_eq!(file_only.caps_pinned, PinnedCaps::default());

        let flags = parse(&["--disk-max", "500MB", "--bandwidth-max", "5MB/s"]).unwrap();
        let cfg = Config::load(&UpArgs { ..flags.with_file(&path) }).unwrap();
        assert_eq!(cfg.crawl.disk_bytes_max, Some(500_000_000));
        assert_eq!(cfg.crawl.bandwidth_bytes_per_s, Some(5_000_000));
        assert_eq!(
            cfg.caps_pinned,
            PinnedCaps { capacity: false, bandwidth: true, disk: true },
            "a flag pins its cap against the saved one"
        );
        // The old names, plain numbers still bytes.
        let old = parse(&[
            "--disk-bytes-max",
            "4096",
            "--bandwidth-bytes-per-s",
            "1000",
            "--seed-download-bytes-per-s",
            "7",
            "--seed-upload-bytes-per-s",
            "8",
            "--relay-circuit-bytes-max",
            "9",
        ])
        .unwrap();
        let cfg = Config::load(&old.with_file(&path)).unwrap();
        assert_eq!(cfg.crawl.disk_bytes_max, Some(4096));
        assert_eq!(cfg.crawl.bandwidth_bytes_per_s, Some(1000));
        assert_eq!(cfg.seed_caps.download_bytes_per_s.map(|n| n.get()), Some(7));
        assert_eq!(cfg.relay.circuit_bytes_max, 9);
        // 0 is still "no cap".
        let none = parse(&["--disk-max", "0"]).unwrap();
        assert_eq!(Config::load(&none.with_file(&path)).unwrap().crawl.disk_bytes_max, None);
    }

    #[test]
    fn bad_units_and_out_of_range_rates_are_refused_with_what_is_accepted() {
        let e = parse(&["--disk-max", "5XB"]).unwrap_err();
        assert!(e.contains("'--disk-max <SIZE>'") && e.contains("unknown unit \"XB\""), "{e}");
        assert!(e.contains("KiB, MiB, GiB, TiB"), "{e}");
        let e = parse(&["--bandwidth-max", "5Mb/s"]).unwrap_err();
        assert!(e.contains("reads as bits") && e.contains("write MB"), "{e}");
        let e = parse(&["--disk-max", "10GiB/s"]).unwrap_err();
        assert!(e.contains("not a rate"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let err = |args: UpArgs| format!("{:#}", Config::load(&args).unwrap_err());
        let fast = parse(&["--bandwidth-max", "5GB/s"]).unwrap();
        let e = err(fast.with_file(&path));
        assert!(
            e.contains("bandwidth_bytes_per_s (--bandwidth-max) = 5 GB/s is outside its range"),
            "{e}"
        );
        let e = err(parse(&["--relay-circuit-max", "2TiB"]).unwrap().with_file(&path));
        assert!(
            e.contains("relay_circuit_bytes_max (--relay-circuit-max) = 2 TiB is outside its range 1 B ..= 1 TiB"),
            "{e}"
        );
        std::fs::write(&path, "disk_bytes_max = \"10 XB\"\n").unwrap();
        let e = err(args_with(&path));
        assert!(e.contains("is not valid") && e.contains("unknown unit \"XB\""), "{e}");
        assert!(e.contains("line 1"), "{e}");
        std::fs::write(&path, "[torrent]\nupload_bytes_per_s = \"5GB/s\"\n").unwrap();
        let e = err(args_with(&path));
        assert!(e.contains("over the most allowed"), "{e}");
    }

    impl UpArgs {
        fn with_file(self, config: &Path) -> Self {
            UpArgs { config: Some(config.into()), data_dir: Some("/tmp/x".into()), ..self }
        }
    }
}
