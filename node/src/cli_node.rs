//! The node's subcommands, for `main.rs` to wire: `starling up` ([`UpArgs`], [`up`]),
//! `starling status` ([`StatusArgs`], [`status`]), `starling publish FILE…` ([`PublishArgs`],
//! [`publish`]) and `starling project trust FILE|KEY` ([`TrustArgs`], [`trust`]).
//!
//! `up` checks every input (config, key, database, listen addresses) before it starts, and
//! returns the first problem as an error for `main` to print as one line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use starling_protocol::{Engine, Envelope, PublicKey, Reject, Roles};
use tokio::sync::mpsc;

use crate::actor::{Actor, ActorParts};
use crate::api::Api;
use crate::api_client::ApiClient;
use crate::client::Client;
use crate::clock::now_ms;
pub use crate::config::UpArgs;
use crate::config::{Config, LogFormat, resolve_data_dir};
use crate::hub::{Hub, LogCapture};
use crate::runner::{Runners, WORK_REPORT_CAP};
use crate::store::Store;
use crate::views::{Outcome, StatusView};

/// The identity key's file name in the data dir.
pub const KEY_FILE: &str = "node.key";
/// The database's file name in the data dir.
pub const DB_FILE: &str = "starling.redb";
/// The results directory (WARC files) inside the data dir.
pub const RESULTS_DIR: &str = "results";
/// How long open control API requests may finish after the node stopped.
pub const API_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// Worker threads of the node's runtime.
pub const WORKER_THREADS: usize = 2;

/// The log filter when `STARLING_LOG` is not set: Starling's own INFO lines, and only
/// warnings and errors from the libraries under it (libp2p, librqbit, …), so the first lines
/// a volunteer reads are the node's.
pub const DEFAULT_LOG_FILTER: &str = "warn,starling=info,starling_node=info,starling_protocol=info,starling_tui=info,starling_sim=info";

/// One log output (stderr or the log file) in the chosen format.
fn fmt_layer<S, W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    }
}

/// Logs to stderr, to the log file when there is one, and, through the same filter, into
/// the hub the control API serves.
fn init_logging(format: LogFormat, hub: Arc<Hub>, file: Option<crate::logfile::RotatingFile>) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_env("STARLING_LOG")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(LogCapture(hub))
        .with(fmt_layer(format, std::io::stderr, ansi))
        .with(file.map(|f| fmt_layer(format, f, false)))
        .try_init();
}

/// The `--log-file` the flags ask for, opened, so that a file that cannot be written stops
/// the node before it starts.
fn open_log_file(args: &UpArgs) -> Result<Option<crate::logfile::RotatingFile>> {
    let Some(path) = &args.log_file else { return Ok(None) };
    let max =
        if args.log_file_max.is_empty() { crate::logfile::MAX_DEFAULT } else { &args.log_file_max };
    let max = crate::logfile::parse_max(max).map_err(|e| anyhow!("--log-file-max: {e}"))?;
    let file = crate::logfile::RotatingFile::open(path, max, crate::logfile::KEEP_DEFAULT)
        .map_err(|e| anyhow!("cannot open the log file {}: {e}", path.display()))?;
    Ok(Some(file))
}

fn create_data_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| anyhow!("cannot create data dir {}: {e}", dir.display()))
}

/// `starling up`: runs a node until SIGINT or SIGTERM.
pub fn up(args: UpArgs) -> Result<()> {
    let cfg = Config::load(&args)?;
    let log_file = open_log_file(&args)?;
    create_data_dir(&cfg.data_dir)?;
    let key = crate::keyfile::load_or_create(&cfg.data_dir.join(KEY_FILE))?;
    let store = Store::open(&cfg.data_dir.join(DB_FILE))?;
    let snapshot = store.startup_snapshot()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the runtime: {e}"))?;
    rt.block_on(run(cfg, key, store, snapshot, log_file))
}

/// Runs the node: the swarm, the work runners, the engine, the control API and the actor,
/// until a signal stops it.
async fn run(
    cfg: Config,
    key: starling_protocol::Keypair,
    store: Store,
    snapshot: starling_protocol::Snapshot,
    log_file: Option<crate::logfile::RotatingFile>,
) -> Result<()> {
    let relay_server = crate::net::RelayServer { settings: cfg.relay, ..Default::default() };
    let mut swarm = crate::net::build_swarm(&key, cfg.mdns, cfg.connections_max, &relay_server)?;
    crate::net::listen_all(&mut swarm, &cfg.listen)?;
    // Before the API announces the node (its port file) and logging starts, so that a session
    // that cannot start stops the node with one line.
    let torrent_session = open_torrents(&cfg).await?;
    let (client, commands) = Client::new();
    let hub = Hub::new();
    let api = Api::bind(client.clone(), hub.clone(), &cfg.data_dir, cfg.api_port).await?;
    init_logging(cfg.log_format, hub.clone(), log_file);
    if let Some(s) = &torrent_session {
        log_torrent_session(s);
    }

    let (report_tx, reports) = mpsc::channel(WORK_REPORT_CAP);
    let work = build_work(&cfg, &key, &relay_server, torrent_session, report_tx)?;
    let nat = crate::nat::Nat::new(cfg.reachability, key.clone());
    let records = snapshot.records.len();
    let engine = restore_engine(&cfg, key, &store, snapshot, &work)?;
    tracing::info!(
        node = %engine.node_id(),
        peer = %swarm.local_peer_id(),
        api = %api.addr,
        data_dir = %cfg.data_dir.display(),
        records,
        items = engine.item_count(),
        "starling node up"
    );

    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let api =
        api.with_fetcher(work.seed.fetcher.clone()).with_crawler(work.runners.crawler().cloned());
    let api_task = tokio::spawn(api.serve(async {
        let _ = stop_api_rx.await;
    }));
    let torrent_control = work.torrents.as_ref().map(|t| t.control.clone());
    let mut actor = Actor::new(ActorParts {
        swarm,
        engine,
        store,
        runners: work.runners,
        reports,
        commands,
        sync_interval: cfg.sync_interval,
        hub: hub.clone(),
        nat: Some(nat),
        relay_server,
        seed: Some(work.seed),
        torrents: work.torrents,
        caps_pinned: cfg.caps_pinned,
    });
    actor.dial_initial(&cfg.bootstrap);
    let next_steps = tokio::spawn(crate::next_steps::watch(client, plan_of(&cfg)));
    let result = actor.run(shutdown_signal()).await;
    next_steps.abort();

    // Stopped: the torrent session, then the event streams, then the API (with a grace).
    if let Some(c) = torrent_control {
        c.session().stop().await;
    }
    hub.close();
    let _ = stop_api_tx.send(());
    if tokio::time::timeout(API_SHUTDOWN_GRACE, api_task).await.is_err() {
        tracing::warn!("control API clients did not hang up in time; stopping anyway");
    }
    result
}

fn log_torrent_session(s: &crate::torrent::TorrentSession) {
    let t = s.settings();
    tracing::info!(
        listen = ?s.listen_addr(),
        dir = %s.dir().display(),
        dht = t.dht,
        trackers = t.trackers,
        local_discovery = t.local_discovery,
        "torrent session started"
    );
}

/// The work side of a node: its runners, its seeding part and (with a BitTorrent session
/// and seeding on) its torrent part.
struct Work {
    runners: Runners,
    seed: crate::seed::node::SeedParts,
    torrents: Option<crate::torrent::node::TorrentParts>,
}

/// The crawler's settings from the node's.
fn crawler_config(cfg: &Config, key: &starling_protocol::Keypair) -> crate::crawl::CrawlerConfig {
    let mut crawl = crate::crawl::CrawlerConfig::new(cfg.data_dir.join(RESULTS_DIR), key.node_id());
    crawl.allow_private_targets = cfg.crawl.allow_private_targets;
    if let Some(n) = cfg.crawl.fetches_max {
        crawl.fetches_max = n;
    }
    crawl.bandwidth_bytes_per_s =
        cfg.crawl.bandwidth_bytes_per_s.and_then(std::num::NonZeroU32::new);
    crawl.disk_bytes_max = cfg.crawl.disk_bytes_max;
    crawl.operator_note = cfg.crawl.warc_operator.clone();
    if crawl.allow_private_targets {
        tracing::warn!(
            "allow_private_targets is on: the crawler may fetch loopback and private addresses"
        );
    }
    crawl
}

/// Builds the runners (crawler, seeding with torrents, relay) and the seeding and torrent
/// parts that feed them; every runner reports on `report_tx`.
fn build_work(
    cfg: &Config,
    key: &starling_protocol::Keypair,
    relay_server: &crate::net::RelayServer,
    torrent_session: Option<Arc<crate::torrent::TorrentSession>>,
    report_tx: mpsc::Sender<crate::runner::WorkReport>,
) -> Result<Work> {
    let mut runners = Runners::available(report_tx.clone(), Some(crawler_config(cfg, key)))
        .map_err(|e| anyhow!("cannot start the crawler: {e}"))?;
    // Seeding: the store serves this node's results to peers whatever the setting; duties
    // are taken only when seeding is on. (Debug builds' test runner, when set, keeps its own
    // seed runner.)
    let (seed, seed_runner) = crate::seed::node::SeedParts::build(
        cfg.data_dir.join(RESULTS_DIR),
        cfg.crawl.disk_bytes_max,
        cfg.seed_caps,
        report_tx.clone(),
        runners.counters(),
    )?;
    let mut torrent_parts = None;
    if cfg.seed && !runners.has(starling_protocol::WorkKind::Seed) {
        // Torrent duties share the seed kind: one runner routes result copies and torrents.
        let torrents = torrent_session.map(|session| {
            let (books, lookup) = crate::torrent::node::TorrentParts::new_lookup();
            let runner = crate::torrent::TorrentRunner::new(
                session,
                lookup,
                report_tx.clone(),
                runners.counters(),
            );
            torrent_parts = Some(crate::torrent::node::TorrentParts::new(runner.control(), books));
            runner
        });
        runners.register(Box::new(crate::torrent::SeedWithTorrents::new(
            Box::new(seed_runner),
            torrents,
            report_tx.clone(),
        )));
    } else {
        drop(seed_runner);
    }
    if cfg.relay.enabled {
        runners.register(Box::new(crate::relay::RelayRunner::new(
            relay_server.grants.clone(),
            report_tx.clone(),
            runners.counters(),
        )));
    }
    Ok(Work { runners, seed, torrents: torrent_parts })
}

/// The engine restored from the store's snapshot, with the roles the runners can fill and
/// the keys the config trusts (kept in the store too).
fn restore_engine(
    cfg: &Config,
    key: starling_protocol::Keypair,
    store: &Store,
    mut snapshot: starling_protocol::Snapshot,
    work: &Work,
) -> Result<Engine> {
    let mut engine_cfg = cfg.engine.clone();
    engine_cfg.roles = work.runners.roles(engine_cfg.roles);
    if work.torrents.is_none() {
        // No BitTorrent session (off, or seeding is off): leave torrent duties to others.
        engine_cfg.roles = Roles(engine_cfg.roles.0 & !Roles::TORRENT.0);
    }
    if engine_cfg.roles.0 == 0 {
        tracing::warn!(
            "no work runners in this build: the node relays gossip and state but claims no work"
        );
    }
    for k in &cfg.trust {
        store.trust(k)?;
        snapshot.trusted.push(*k);
    }
    for k in &cfg.follow {
        store.follow(k)?;
        if !snapshot.following.contains(k) {
            snapshot.following.push(*k);
        }
    }
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no OS randomness: {e}"))?;
    Ok(Engine::restore(engine_cfg, key, snapshot, u64::from_le_bytes(seed), now_ms()))
}

/// The node's BitTorrent session, when it will take torrent duties: seeding on, torrents on,
/// and no test runner holding the seeding kind. Torrents are on unless the operator turned
/// them off, so a session that does not start is an error, not a quiet loss of the duties.
async fn open_torrents(cfg: &Config) -> Result<Option<Arc<crate::torrent::TorrentSession>>> {
    #[cfg(any(debug_assertions, feature = "test-runner"))]
    if crate::test_runner::delay_ms().is_some() {
        return Ok(None);
    }
    if !(cfg.seed && cfg.torrent.enabled) {
        return Ok(None);
    }
    let session = crate::torrent::TorrentSession::open(&cfg.data_dir, cfg.torrent.clone())
        .await
        .map_err(|e| {
            anyhow!(
                "{e} (torrent listen_addr {}); fix the [torrent] settings, or run without torrent duties: --torrents false",
                cfg.torrent.listen_addr
            )
        })?;
    Ok(Some(session))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where to find a running node.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeDirArgs {
    /// The node's data directory [default: platform data dir].
    #[arg(long, env = "STARLING_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl NodeDirArgs {
    /// The control API client of the node in this data dir.
    pub fn client(&self) -> Result<ApiClient> {
        ApiClient::from_data_dir(&resolve_data_dir(self.data_dir.as_deref())?)
    }
}

/// `starling status`: what the local node is doing.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub node: NodeDirArgs,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the local node's status.
pub fn status(args: StatusArgs) -> Result<()> {
    let client = args.node.client()?;
    if args.json {
        let v: serde_json::Value = client.get_json("/status")?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let raw: serde_json::Value = client.get_json("/status")?;
    let urls: Option<crate::crawl::stats::UrlCounts> =
        raw.get("urls").and_then(|u| serde_json::from_value(u.clone()).ok());
    let network_down = raw.pointer("/network/down").and_then(serde_json::Value::as_bool);
    let s: StatusView = serde_json::from_value(raw)?;
    let rejected: u64 =
        s.engine.rejected.iter().filter(|(k, _)| **k != Reject::Duplicate).map(|(_, v)| v).sum();
    println!("node      {}", s.node_id);
    println!("peer id   {}", s.peer_id);
    println!("uptime    {} s", s.uptime_ms / 1000);
    println!("peers     {} connected, {} live", s.connected_peers, s.live_peers);
    println!("projects  {}", s.projects);
    let projects: Option<Vec<starling_tui::api::ProjectInfo>> = client.get_json("/projects").ok();
    for p in projects.iter().flatten() {
        println!("rate      {}", rate_line(p));
        if let Some(line) = shard_line(p) {
            println!("shard     {line}");
        }
    }
    println!(
        "items     {} open, {} held, {} done, {} failed",
        s.items.open, s.items.held, s.items.done, s.items.failed
    );
    println!("holding   {}", s.holding);
    let seeding: Option<starling_tui::api::SeedingView> = client.get_json("/seeding").ok();
    if let Some(line) = seeding_line(seeding.as_ref(), &s.engine) {
        println!("seeding   {line}");
    }
    for line in checks_lines(&s.checks) {
        println!("{line}");
    }
    if !s.following.is_empty() {
        println!("following {}", following_line(&s.following));
    }
    if let Some(u) = urls {
        println!(
            "urls      {} ok, {} refused, {} disallowed, {} transient (crawled by this node \
             since it started; `starling projects` counts a project's)",
            u.ok, u.refused, u.disallowed, u.transient
        );
    }
    if network_down == Some(true) && !s.health.faults.iter().any(|f| f.kind == "network") {
        println!("NETWORK   down: every recent fetch failed to connect or resolve");
    }
    match s.health.clock.offset_ms {
        Some(o) => println!(
            "clock     {o:+} ms against the median of {} peers{}",
            s.health.clock.peers,
            if s.health.clock.off { " (OFF: claiming nothing)" } else { "" }
        ),
        None => println!("clock     not judged yet ({} peers heard)", s.health.clock.peers),
    }
    if s.health.ok {
        println!("health    ok");
    }
    for f in &s.health.faults {
        println!("FAULT     {}: {}", f.kind, f.detail);
    }
    println!("messages  {} accepted, {} refused", s.engine.accepted, rejected);
    println!("caps      {}", crate::control::caps_line(&s.caps));
    for line in contributed_lines(&s.lifetime) {
        println!("contributed {line}");
    }
    for a in &s.listen {
        println!("listen    {a}");
    }
    if let Some(e) = &s.store_error {
        println!("STORE ERROR {e}");
    }
    for h in starling_tui::hints::next_steps(&s, projects.as_deref()) {
        println!("NEXT      {h}");
    }
    Ok(())
}

/// The `rate` line of `starling status` for one project: its per-host rate and whom it binds.
fn rate_line(p: &starling_tui::api::ProjectInfo) -> String {
    let rate = p.rate_per_s;
    match p.rate_scope.as_str() {
        "node" => format!("{}: {rate}/s per host for each node (scope node)", p.name),
        _ => {
            let lanes = p.lanes.max(1);
            let share = if lanes > 1 {
                format!(", {lanes} lanes of {:.3}/s", rate / f64::from(lanes))
            } else {
                String::new()
            };
            format!("{}: {rate}/s per host for the whole mesh (scope mesh{share})", p.name)
        }
    }
}

/// The `shard` line of `starling status` for a split project: this node's shard, its live
/// members and peers in its topic, and the whole project's progress from the shards' counts.
/// No line for a whole project.
fn shard_line(p: &starling_tui::api::ProjectInfo) -> Option<String> {
    let s = p.shard.as_ref()?;
    let shards = 1u32 << s.depth.min(31);
    let c = &s.project_items;
    Some(format!(
        "{}: shard {} of {shards}, {} members live, {} peers in its topic; the project {} done, \
         {} failed, {} held, {} open ({} of {shards} shards counted; `items` above is this shard's)",
        p.name, s.name, s.members, s.topic_peers, c.done, c.failed, c.held, c.open, s.shards_heard,
    ))
}

/// The `seeding` line of `starling status`: the duties held and how many of their copies are
/// there, the storage proofs this node's renewals carried, and the duties it gave back for want
/// of a copy (`engine.proofs` and `engine.unproven` in the JSON). No line for a node that
/// takes no seeding duties and never did.
fn seeding_line(
    seeding: Option<&starling_tui::api::SeedingView>,
    e: &starling_protocol::EngineStats,
) -> Option<String> {
    let enabled = seeding.is_some_and(|v| v.enabled);
    if !enabled && e.proofs == 0 && e.unproven == 0 {
        return None;
    }
    let duties = seeding.map_or(0, |v| v.duties.len());
    let stored = seeding.map_or(0, |v| v.duties.iter().filter(|d| d.state == "stored").count());
    let mut line =
        format!("{duties} duties held ({stored} copies stored), {} storage proofs shown", e.proofs);
    if e.unproven > 0 {
        line.push_str(&format!(
            ", {} duties GIVEN BACK: no copy to prove (missing or damaged; see the log)",
            e.unproven
        ));
    }
    if !enabled {
        line.push_str(" (seeding is off now)");
    }
    Some(line)
}

/// Marked peers named per project in `starling status` (the JSON lists them all).
const MARKED_SHOWN_MAX: usize = 8;

/// The `checks` and `marked` lines of `starling status`: per project, how its crawl results
/// stand under spot-checks, and the peers marked for it. A project with nothing checked yet and
/// nobody marked gets one short line.
fn checks_lines(checks: &[starling_tui::api::ChecksView]) -> Vec<String> {
    let mut out = Vec::new();
    for c in checks {
        let r = &c.results;
        let sample = format!("sample {}%", f64::from(c.sample_milli) / 10.0);
        let checked = r.verified + r.pending + r.disputed + r.overturned + r.split;
        if checked == 0 && c.marked.is_empty() {
            out.push(format!("checks    {}: none yet ({sample})", c.name));
            continue;
        }
        out.push(format!(
            "checks    {}: {} verified, {} pending, {} disputed, {} overturned, {} split ({sample})",
            c.name, r.verified, r.pending, r.disputed, r.overturned, r.split
        ));
        if c.marked.is_empty() {
            continue;
        }
        let mut named: Vec<String> = c
            .marked
            .iter()
            .take(MARKED_SHOWN_MAX)
            .map(|m| format!("{} ({} strikes)", m.node, m.strikes))
            .collect();
        if c.marked.len() > MARKED_SHOWN_MAX {
            named.push(format!("and {} more (--json)", c.marked.len() - MARKED_SHOWN_MAX));
        }
        out.push(format!("marked    {}: {}", c.name, named.join(", ")));
    }
    out
}

/// The `contributed` lines of `starling status`: the lifetime figures, for people.
fn contributed_lines(l: &starling_tui::api::LifetimeView) -> [String; 2] {
    use starling_tui::units::size;
    let total: u64 = l.items.values().sum();
    let by_kind: Vec<String> =
        l.items.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{n} {k}")).collect();
    let by_kind =
        if by_kind.is_empty() { String::new() } else { format!(" ({})", by_kind.join(", ")) };
    let hours = l.uptime_ms / 3_600_000;
    let up = if hours >= 48 {
        format!("{}d{:02}h", hours / 24, hours % 24)
    } else {
        format!("{hours}h{:02}m", (l.uptime_ms / 60_000) % 60)
    };
    [
        format!(
            "{total} items{by_kind}, {} URLs and {} archived",
            l.urls_archived,
            size(l.bytes_archived)
        ),
        format!(
            "{} seeded, {} circuits relayed, {up} up over all runs",
            size(l.bytes_seeded),
            l.relay_circuits
        ),
    ]
}

/// `starling publish FILE…`: sends signed manifests and batches into the mesh through the
/// local node.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub node: NodeDirArgs,
    /// Signed files (a directory or manifests first, then batches).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Publishes each file in order; stops at the first refusal.
pub fn publish(args: PublishArgs) -> Result<()> {
    let client = args.node.client()?;
    for path in &args.files {
        let bytes =
            std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let o: Outcome =
            client.post_json("/publish", &bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        println!("{}: {} {}", path.display(), o.what, o.outcome);
    }
    Ok(())
}

/// The curators a node follows, in one line: each key's short form with its directory's name
/// and version, or "no directory yet".
pub fn following_line(following: &[starling_tui::api::FollowView]) -> String {
    let each = following.iter().map(|f| {
        let short = f.curator.get(..8).unwrap_or(&f.curator);
        match (&f.name, f.version) {
            (Some(name), Some(v)) => format!("{short} ({name} v{v}, {} projects)", f.projects),
            _ => format!("{short} (no directory yet)"),
        }
    });
    each.collect::<Vec<_>>().join(", ")
}

/// `starling project trust FILE|KEY`: adds a project owner's key to the node's trusted set.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    #[command(flatten)]
    pub node: NodeDirArgs,
    /// A public key (64 hex digits), a file holding one, or a signed manifest whose owner to
    /// trust.
    #[arg(value_name = "FILE|KEY")]
    pub what: String,
}

/// The key `what` names: hex, a file of hex, or a signed manifest's owner.
pub fn key_of(what: &str) -> Result<PublicKey> {
    if let Ok(k) = what.trim().parse::<PublicKey>() {
        return Ok(k);
    }
    let path = Path::new(what);
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow!("{what:?} is neither a key (64 hex digits) nor a readable file: {e}")
    })?;
    if std::str::from_utf8(&bytes).is_ok_and(crate::keyfile::is_secret_key_text) {
        bail!("{what} is a secret key; trust the public key instead (the `.pub` file from keygen)");
    }
    if let Ok(Envelope::Manifest(m)) = Envelope::from_file_bytes(&bytes) {
        let manifest = m.verify().map_err(|e| anyhow!("{what}: manifest refused: {e}"))?;
        return Ok(manifest.owner);
    }
    match std::str::from_utf8(&bytes).ok().and_then(|t| t.trim().parse::<PublicKey>().ok()) {
        Some(k) => Ok(k),
        None => bail!("{what} holds neither a public key (64 hex digits) nor a signed manifest"),
    }
}

/// Trusts a project owner key on the running node.
pub fn trust(args: TrustArgs) -> Result<()> {
    let key = key_of(&args.what)?;
    let client = args.node.client()?;
    let o: Outcome = client.post_json("/trust", key.to_hex().as_bytes())?;
    println!("trusted {} ({})", o.what, o.outcome);
    Ok(())
}

#[cfg(test)]
mod key_of_tests {
    use super::key_of;
    use crate::keyfile;

    #[test]
    fn contributed_lines_read_for_people() {
        let mut l = starling_tui::api::LifetimeView {
            urls_archived: 340,
            bytes_archived: 3 << 29,
            bytes_seeded: 5_000_000,
            relay_circuits: 2,
            uptime_ms: 3 * 86_400_000 + 4 * 3_600_000,
            ..Default::default()
        };
        l.items.insert("crawl".into(), 12);
        l.items.insert("seed".into(), 3);
        l.items.insert("relay".into(), 0);
        let [a, b] = super::contributed_lines(&l);
        assert_eq!(a, "15 items (12 crawl, 3 seed), 340 URLs and 1536 MiB archived");
        assert_eq!(b, "5 MB seeded, 2 circuits relayed, 3d04h up over all runs");
        let [a, b] = super::contributed_lines(&Default::default());
        assert_eq!(a, "0 items, 0 URLs and 0 B archived");
        assert!(b.ends_with("0h00m up over all runs"), "{b}");
    }

    #[test]
    fn the_shard_line_names_the_shard_its_size_and_the_projects_progress() {
        let mut p: starling_tui::api::ProjectInfo = serde_json::from_value(serde_json::json!({
            "id": "ab", "name": "big", "version": 1, "owner": "cd", "lease_ms": 1000,
            "replication": 0, "items": {"open": 1, "held": 2, "done": 3, "failed": 0}
        }))
        .unwrap();
        assert_eq!(super::shard_line(&p), None, "a whole project has no shard line");
        p.shard = Some(starling_tui::api::ShardInfo {
            name: "3/5".into(),
            depth: 3,
            members: 12,
            topic_peers: 9,
            project_items: starling_protocol::ItemCounts { open: 10, held: 4, done: 80, failed: 1 },
            shards_heard: 7,
        });
        assert_eq!(
            super::shard_line(&p).unwrap(),
            "big: shard 3/5 of 8, 12 members live, 9 peers in its topic; the project 80 done, 1 \
             failed, 4 held, 10 open (7 of 8 shards counted; `items` above is this shard's)"
        );
    }

    #[test]
    fn the_seeding_line_counts_proofs_and_duties_given_back() {
        use starling_tui::api::{SeedInfo, SeedingView};
        let duty = |state: &str| SeedInfo {
            item: "aa".into(),
            digest: "bb".into(),
            size: 1,
            state: state.into(),
        };
        let v = SeedingView {
            enabled: true,
            duties: vec![duty("stored"), duty("fetching"), duty("stored")],
            ..Default::default()
        };
        let mut e = starling_protocol::EngineStats { proofs: 7, ..Default::default() };
        assert_eq!(
            super::seeding_line(Some(&v), &e).unwrap(),
            "3 duties held (2 copies stored), 7 storage proofs shown"
        );
        e.unproven = 2;
        let line = super::seeding_line(Some(&v), &e).unwrap();
        assert!(
            line.ends_with(
                ", 2 duties GIVEN BACK: no copy to prove (missing or damaged; see the log)"
            ),
            "{line}"
        );
        let off = SeedingView::default();
        assert!(super::seeding_line(Some(&off), &Default::default()).is_none());
        assert!(super::seeding_line(None, &e).unwrap().ends_with("(seeding is off now)"));
    }

    #[test]
    fn checks_lines_name_the_figures_and_the_marked_peers() {
        use starling_tui::api::{ChecksView, MarkedPeer};
        let quiet = ChecksView { name: "quiet".into(), sample_milli: 100, ..Default::default() };
        let mut busy = ChecksView { name: "busy".into(), sample_milli: 1000, ..Default::default() };
        busy.results.verified = 12;
        busy.results.pending = 1;
        busy.results.overturned = 3;
        busy.marked = (0..10).map(|i| MarkedPeer { node: format!("n{i}"), strikes: 2 }).collect();
        let lines = super::checks_lines(&[quiet, busy]);
        assert_eq!(lines[0], "checks    quiet: none yet (sample 10%)");
        assert_eq!(
            lines[1],
            "checks    busy: 12 verified, 1 pending, 0 disputed, 3 overturned, 0 split (sample 100%)"
        );
        assert!(
            lines[2].starts_with("marked    busy: n0 (2 strikes), n1 (2 strikes)"),
            "{lines:?}"
        );
        assert!(lines[2].ends_with("n7 (2 strikes), and 2 more (--json)"), "{lines:?}");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn trust_takes_public_keys_and_manifests_but_refuses_secret_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile::generate().unwrap();
        let secret = dir.path().join("owner.key");
        keyfile::write_new(&secret, &key).unwrap();
        let err = key_of(secret.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("is a secret key"), "{err}");

        let public = dir.path().join("owner.key.pub");
        std::fs::write(&public, format!("{}\n", key.public())).unwrap();
        assert_eq!(key_of(public.to_str().unwrap()).unwrap(), key.public());
        assert_eq!(key_of(&key.public().to_hex()).unwrap(), key.public());

        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello").unwrap();
        assert!(key_of(junk.to_str().unwrap()).is_err());
        assert!(key_of("/nonexistent/file").is_err());
    }
}

/// `starling export --project ID --out DIR`: a project's WARC files with a CDX index, ready to
/// upload to an archive.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub node: NodeDirArgs,
    /// The project: its id, a unique prefix of it (4 hex digits or more), or its name
    /// (`starling projects` lists them).
    #[arg(long, value_name = "ID")]
    pub project: String,
    /// Directory to write the WARC files and `index.cdx` into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Give up after this many seconds of fetching results the node lacks.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
}

/// Asks the local node to gather every done result of the project (fetching from holders
/// what it lacks), then writes them and their CDX index into `--out`.
pub fn export(args: ExportArgs) -> Result<()> {
    let client = args
        .node
        .client()?
        .with_request_timeout(std::time::Duration::from_secs(args.timeout_s.max(1)));
    let project = crate::projects::resolve(&client, &args.project)?;
    let progress = ExportProgress::new();
    let expected: Option<u64> = client
        .get_json::<Vec<starling_tui::api::ProjectInfo>>("/projects")
        .ok()
        .and_then(|l| l.into_iter().find(|p| p.id == project.to_hex()).map(|p| p.items.done));
    eprintln!("gathering the results of project {} (fetching any this node lacks)…", project);
    let gathering = progress.gathering(&client, expected);
    let items: Result<Vec<crate::views::ExportItem>> =
        client.post_json(&format!("/projects/{}/export", project.to_hex()), b"");
    drop(gathering);
    let items = items?;
    if items.is_empty() {
        bail!("project {project} has no finished results yet");
    }
    let fetched = items.iter().filter(|i| i.fetched).count();
    progress.line(&format!("gathered {} results ({fetched} fetched from holders)", items.len()));
    let results: Vec<(starling_protocol::Digest, PathBuf)> = items
        .iter()
        .map(|i| {
            let d = i
                .digest
                .parse::<starling_protocol::Digest>()
                .map_err(|e| anyhow!("the node sent a bad digest {:?}: {e}", i.digest))?;
            Ok((d, PathBuf::from(&i.path)))
        })
        .collect::<Result<_>>()?;
    let summary = crate::export::export_results_with(&results, &args.out, &mut |p| {
        progress.update(&p);
    })
    .map_err(|e| anyhow!("cannot export into {}: {e}", args.out.display()))?;
    progress.line(&format!("wrote {0}/{0} files, {1}", summary.files, mib(summary.bytes)));
    println!(
        "exported {} WARC files ({} fetched from holders, {:.1} MiB) and {} index lines to {}",
        summary.files,
        fetched,
        summary.bytes as f64 / (1024.0 * 1024.0),
        summary.records,
        summary.index.display()
    );
    Ok(())
}

/// What the start-up block says the node will do, from its configuration.
fn plan_of(cfg: &Config) -> crate::next_steps::Plan {
    crate::next_steps::Plan { bootstrap: cfg.bootstrap.len(), mdns: cfg.mdns }
}

/// `bytes` as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `starling export`'s progress on stderr: a line redrawn in place on a terminal; elsewhere
/// (a pipe, a log) only the final line of each stage.
struct ExportProgress {
    tty: bool,
}

/// The gathering progress line, redrawn until dropped.
struct Gathering {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Gathering {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl ExportProgress {
    fn new() -> Self {
        Self { tty: std::io::IsTerminal::is_terminal(&std::io::stderr()) }
    }

    /// A finished stage's line (ends a redrawn line on a terminal).
    fn line(&self, text: &str) {
        if self.tty {
            eprintln!("\r\x1b[2K{text}");
        } else {
            eprintln!("{text}");
        }
    }

    /// Redraws, on a terminal, how long gathering has taken and how much this node fetched
    /// from holders meanwhile (its seeding counters), until the returned guard is dropped.
    fn gathering(&self, client: &ApiClient, expected: Option<u64>) -> Gathering {
        if !self.tty {
            return Gathering { stop: None, thread: None };
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let client = client.clone();
        let thread = std::thread::spawn(move || {
            let fetched_now = || {
                client
                    .get_json::<starling_tui::api::SeedingView>("/seeding")
                    .map(|s| s.bytes_fetched)
                    .unwrap_or(0)
            };
            let base = fetched_now();
            let start = std::time::Instant::now();
            let of = expected.map(|n| format!("{n} results")).unwrap_or("results".into());
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_millis(500))
            {
                let fetched = fetched_now().saturating_sub(base);
                eprint!(
                    "\r\x1b[2Kgathering {of}: {} fetched from holders, {} s",
                    mib(fetched),
                    start.elapsed().as_secs()
                );
            }
        });
        Gathering { stop: Some(stop), thread: Some(thread) }
    }

    /// Redraws the writing line on a terminal.
    fn update(&self, p: &crate::export::Progress) {
        if !self.tty {
            return;
        }
        let what = match p.stage {
            crate::export::Stage::Checking => "checking",
            crate::export::Stage::Writing => "writing",
        };
        eprint!("\r\x1b[2K{what} {}/{} files, {}", p.done, p.total, mib(p.bytes));
    }
}
