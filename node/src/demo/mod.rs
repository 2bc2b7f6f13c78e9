//! `starling demo`: a whole mesh on this machine in one command.
//!
//! It starts a local website ([`site`]), then N real nodes (`starling up` child processes,
//! libp2p on 127.0.0.1, each with its own redb store in a temporary directory), signs a demo
//! project of crawl chunks against the site with a fresh owner key, and publishes it through
//! the first node. On a terminal it then opens the dashboard on that node, and prints a summary
//! when the operator quits it; with `--headless` (or without a terminal) it prints progress and
//! ends with the same summary: items done, URLs archived, duplicate executions, the WARC files
//! written and where, and copies per result. The nodes are stopped
//! and the directory removed at the end, unless `--keep` is given.

pub mod site;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use starling_protocol::{
    Envelope, ItemBatch, Keypair, ProjectManifest, RatePolicy, RobotsPolicy, Signed, SizeCaps,
    WorkItem,
};

use crate::api_client::ApiClient;
use crate::views::{ItemInfo, ProjectInfo, StatusView};

/// Most nodes a demo starts.
pub const DEMO_NODES_MAX: usize = 32;
/// Most crawl chunks a demo publishes.
pub const DEMO_ITEMS_MAX: usize = 10_000;
/// How long a node may take to open its control API.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Items per signed batch: small enough to gossip.
const DEMO_BATCH_ITEMS: usize = 500;
/// How often headless mode prints progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `starling demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Crawl chunks to publish.
    #[arg(long, default_value_t = 40)]
    pub items: usize,
    /// Pages per chunk.
    #[arg(long, default_value_t = 5)]
    pub urls_per_item: usize,
    /// Copies of each result kept by seeding nodes besides its producer (capped at nodes − 1).
    #[arg(long, default_value_t = 2)]
    pub replication: u8,
    /// Requests per second the whole mesh may send the demo site (the project's per-host
    /// rate, shared by the nodes through one host lane each).
    #[arg(long, default_value_t = 20)]
    pub rate_per_s: u32,
    /// Print progress and a summary instead of opening the dashboard.
    #[arg(long)]
    pub headless: bool,
    /// Give up (headless) after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Put the nodes' data dirs here instead of a temporary directory (kept afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (and print where it is).
    #[arg(long)]
    pub keep: bool,
}

/// One demo node: its process and API.
#[derive(Debug)]
struct DemoNode {
    child: Child,
    dir: PathBuf,
    api: ApiClient,
}

/// The mesh the demo runs; stops its nodes when dropped.
#[derive(Debug)]
struct Mesh {
    nodes: Vec<DemoNode>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for n in &self.nodes {
            terminate(&n.child);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in &mut self.nodes {
            while n.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn terminate(child: &Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    if args.nodes == 0 || args.nodes > DEMO_NODES_MAX {
        bail!("--nodes must be 1..={DEMO_NODES_MAX}");
    }
    if args.items == 0 || args.items > DEMO_ITEMS_MAX {
        bail!("--items must be 1..={DEMO_ITEMS_MAX}");
    }
    let chunk_max =
        starling_protocol::item::CHUNK_URLS_MAX.min(SizeCaps::default().chunk_urls_max as usize);
    if args.urls_per_item == 0 || args.urls_per_item > chunk_max {
        bail!("--urls-per-item must be 1..={chunk_max}");
    }
    if args.rate_per_s == 0 {
        bail!("--rate-per-s must be at least 1");
    }
    let headless = args.headless || !std::io::stdout().is_terminal();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the runtime: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let site = site::Site::start(rt.handle())?;

    let (tmp, root) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow!("cannot create {}: {e}", d.display()))?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("starling-demo-")
                .tempdir()
                .map_err(|e| anyhow!("cannot create a temporary directory: {e}"))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let owner = crate::keyfile::generate()?;
    let (manifest, batches) = demo_project(&owner, &site, &args)?;
    eprintln!(
        "starling demo: {} nodes, {} crawl chunks of {} pages from the demo site at http://{}",
        args.nodes, args.items, args.urls_per_item, site.addr
    );
    eprintln!("  data: {}", root.display());

    let started = Instant::now();
    let mesh = start_mesh(&root, args.nodes, &owner, &stop)?;
    let first = &mesh.nodes[0];
    first.api.post_json::<serde_json::Value>("/publish", &manifest)?;
    for b in &batches {
        first.api.post_json::<serde_json::Value>("/publish", b)?;
    }
    eprintln!("  published the demo project ({} items) through node 0", args.items);

    let result = if headless {
        watch(&mesh, &site, &args, &stop)
    } else {
        dashboard(&first.dir).map(|()| {
            // The dashboard has given the terminal back: say what the demo did.
            match summarize(&mesh, args.items) {
                Ok(s) => print_summary(&s, &mesh, &ended(started.elapsed(), false), kept(&args)),
                Err(e) => eprintln!("  no summary: {e:#}"),
            }
        })
    };
    drop(mesh);
    match tmp {
        Some(t) if args.keep => {
            let kept = t.keep();
            eprintln!("  kept {}", kept.display());
        }
        Some(t) => drop(t),
        None => {}
    }
    result
}

/// The replication the demo asks for: no more copies than there are other nodes.
fn replication(args: &DemoArgs) -> u8 {
    args.replication.min(u8::try_from(args.nodes.saturating_sub(1)).unwrap_or(u8::MAX))
}

/// The demo project's signed manifest and batches.
fn demo_project(
    owner: &Keypair,
    site: &site::Site,
    args: &DemoArgs,
) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let m = ProjectManifest {
        name: "starling-demo".into(),
        description: "pages of the demo's local website".into(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy {
            per_s_milli: args.rate_per_s.saturating_mul(1000),
            burst: args.rate_per_s.clamp(1, 10),
            concurrency: 4,
            // One lane per node: every node crawls the one demo host at once, at its share.
            lanes: u16::try_from(args.nodes)
                .unwrap_or(1)
                .clamp(1, starling_protocol::item::LANES_MAX),
            ..RatePolicy::default()
        },
        lease_ms: 60_000,
        replication: replication(args),
        scope: vec!["127.0.0.1".into()],
        user_agent: format!("starling-demo/{}", env!("CARGO_PKG_VERSION")),
        robots: RobotsPolicy::default(),
        caps: SizeCaps::default(),
        // No spot-checks: the demo's summary counts its chunks as the items done, and a check
        // is an item too (and a one-node demo has nobody to check its results).
        verify: starling_protocol::manifest::VerifyPolicy { sample_milli: 0, ..Default::default() },
        shard_depth: 0,
    };
    use starling_protocol::wire::Validate;
    m.validate().map_err(|e| anyhow!("demo manifest is not valid: {e}"))?;
    let id = m.id();
    let per = args.urls_per_item as u64;
    let items: Vec<WorkItem> = (0..args.items as u64)
        .map(|i| WorkItem::CrawlChunk {
            urls: (0..per).map(|u| site.page_url(i * per + u)).collect(),
        })
        .collect();
    let batch_max = DEMO_BATCH_ITEMS;
    let batches = items
        .chunks(batch_max)
        .enumerate()
        .map(|(seq, chunk)| {
            let b = ItemBatch { project: id, seq: seq as u64 + 1, items: chunk.to_vec() };
            Envelope::Batch(Signed::sign(owner, &b)).to_bytes()
        })
        .collect();
    Ok((Envelope::Manifest(Signed::sign(owner, &m)).to_bytes(), batches))
}

fn node_command(dir: &Path, owner: &Keypair, bootstrap: Option<&str>) -> Result<Command> {
    let exe =
        std::env::current_exe().map_err(|e| anyhow!("cannot find the starling binary: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    let log = std::fs::File::create(dir.join("node.log"))
        .map_err(|e| anyhow!("cannot create {}: {e}", dir.join("node.log").display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("up").arg("--data-dir").arg(dir);
    for a in [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--mdns",
        "false",
        "--api-port",
        "0",
        "--allow-private-targets",
        "true",
        "--warmup-ms",
        "1000",
        "--presence-interval-ms",
        "1000",
        "--presence-ttl-ms",
        "4000",
        "--sync-interval-ms",
        "2000",
    ] {
        cmd.arg(a);
    }
    cmd.arg("--trust").arg(owner.public().to_hex());
    if let Some(b) = bootstrap {
        cmd.arg("--bootstrap").arg(b);
    }
    // The demo's nodes take their settings from these flags only.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STARLING_") && k != "STARLING_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log));
    Ok(cmd)
}

fn wait_api(dir: &Path, child: &mut Child, stop: &AtomicBool) -> Result<ApiClient> {
    let deadline = Instant::now() + NODE_START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("a demo node exited ({status}); its log is {}", dir.join("node.log").display());
        }
        if let Ok(api) = ApiClient::from_data_dir(dir)
            && api.get_json::<StatusView>("/status").is_ok()
        {
            return Ok(api);
        }
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!(
                "a demo node did not start within {NODE_START_TIMEOUT:?}; see {}",
                dir.join("node.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_mesh(root: &Path, n: usize, owner: &Keypair, stop: &AtomicBool) -> Result<Mesh> {
    let mut mesh = Mesh { nodes: Vec::with_capacity(n) };
    let dir0 = root.join("node-0");
    let mut child = node_command(&dir0, owner, None)?
        .spawn()
        .map_err(|e| anyhow!("cannot start a node: {e}"))?;
    let api = match wait_api(&dir0, &mut child, stop) {
        Ok(api) => api,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let s: StatusView = api.get_json("/status")?;
    let tcp = s
        .listen
        .iter()
        .find(|a| a.contains("/tcp/"))
        .ok_or_else(|| anyhow!("node 0 listens on no TCP address"))?;
    let boot = format!("{tcp}/p2p/{}", s.peer_id);
    mesh.nodes.push(DemoNode { child, dir: dir0, api });
    let mut starting = Vec::new();
    for i in 1..n {
        let dir = root.join(format!("node-{i}"));
        let child = node_command(&dir, owner, Some(&boot))?
            .spawn()
            .map_err(|e| anyhow!("cannot start a node: {e}"))?;
        starting.push((dir, child));
    }
    for (dir, mut child) in starting {
        match wait_api(&dir, &mut child, stop) {
            Ok(api) => mesh.nodes.push(DemoNode { child, dir, api }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
    eprintln!("  {n} nodes up; node 0 at {boot}");
    Ok(mesh)
}

/// What the headless demo reports at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Items published.
    pub items: usize,
    /// Items done in node 0's view.
    pub done: u64,
    /// URLs fetched and archived, from the done items' receipts in node 0's view.
    pub urls_archived: u64,
    /// Whether every node saw the same state for every item.
    pub agree: bool,
    /// Crawl runs that produced a result beyond one per item (results on disk that are no
    /// item's accepted result).
    pub duplicates: u64,
    /// WARC files across all nodes.
    pub warc_files: u64,
    /// Their bytes.
    pub warc_bytes: u64,
    /// Copies of each result across nodes: (fewest, most).
    pub copies: (usize, usize),
}

fn watch(mesh: &Mesh, site: &site::Site, args: &DemoArgs, stop: &AtomicBool) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let total = args.items as u64;
    let mut last_print = Instant::now() - PROGRESS_EVERY;
    loop {
        let statuses: Vec<Option<StatusView>> =
            mesh.nodes.iter().map(|n| n.api.get_json::<StatusView>("/status").ok()).collect();
        let done_everywhere = statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.items.done + s.items.failed >= total));
        if last_print.elapsed() >= PROGRESS_EVERY || done_everywhere {
            last_print = Instant::now();
            if let Some(Some(s0)) = statuses.first() {
                let holding: usize = statuses.iter().flatten().map(|s| s.holding).sum();
                println!(
                    "[{:>6.1}s] done {}/{total} · held {holding} · failed {} · peers {}/{} · pages served {}",
                    started.elapsed().as_secs_f64(),
                    s0.items.done,
                    s0.items.failed,
                    s0.connected_peers,
                    mesh.nodes.len() - 1,
                    site.served(),
                );
            }
        }
        if done_everywhere {
            // Then wait (within the same deadline) for the seeding nodes' copies.
            let want = usize::from(replication(args));
            let s = summarize(mesh, args.items)?;
            if s.copies.0 >= want.max(1) {
                break;
            }
        }
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!(
                "the demo did not finish within {} s; node logs are in each node's node.log under the data dir (use --keep)",
                args.timeout_s
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let summary = summarize(mesh, args.items)?;
    print_summary(&summary, mesh, &ended(started.elapsed(), true), kept(args));
    if summary.done != total || !summary.agree || summary.duplicates > 0 {
        bail!("the demo ended unhealthy (see the summary above)");
    }
    Ok(())
}

fn summarize(mesh: &Mesh, items: usize) -> Result<Summary> {
    let mut views: Vec<Vec<ItemInfo>> = Vec::new();
    for n in &mesh.nodes {
        let mut v: Vec<ItemInfo> = n.api.get_json("/items")?;
        v.sort_by(|a, b| a.id.cmp(&b.id));
        views.push(v);
    }
    let agree = views.windows(2).all(|w| w[0] == w[1]);
    let projects: Vec<ProjectInfo> = mesh.nodes[0].api.get_json("/projects")?;
    let urls_archived = projects.iter().map(|p| p.urls.ok).sum();
    let done = views[0].iter().filter(|i| i.state == "done").count() as u64;
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for i in views[0].iter().filter(|i| i.state == "done") {
        copies.insert(i.result.clone().unwrap_or_default(), 0);
    }
    let (mut warc_files, mut warc_bytes) = (0, 0);
    // Every crawl run that finished wrote a WARC file named by its digest; seeding copies
    // share the accepted result's digest. A digest on disk that is no item's result is a run
    // whose result lost to another's: a duplicate execution.
    let mut unaccepted = std::collections::BTreeSet::new();
    for n in &mesh.nodes {
        let results = n.dir.join(crate::cli_node::RESULTS_DIR);
        let Ok(entries) = std::fs::read_dir(&results) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(digest) = name.strip_suffix(crate::crawl::warc::WARC_SUFFIX) else { continue };
            warc_files += 1;
            warc_bytes += e.metadata().map_or(0, |m| m.len());
            if !copies.contains_key(digest) {
                unaccepted.insert(digest.to_owned());
            }
            if let Some(c) = copies.get_mut(digest)
                && std::fs::read(e.path())
                    .is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == digest)
            {
                *c += 1;
            }
        }
    }
    let fewest = copies.values().copied().min().unwrap_or(0);
    let most = copies.values().copied().max().unwrap_or(0);
    Ok(Summary {
        items,
        done,
        urls_archived,
        agree,
        duplicates: unaccepted.len() as u64,
        warc_files,
        warc_bytes,
        copies: (fewest, most),
    })
}

/// Whether the demo's data dirs outlive it.
fn kept(args: &DemoArgs) -> bool {
    args.keep || args.dir.is_some()
}

/// The summary's first line: how the demo ended and after how long.
fn ended(took: Duration, finished: bool) -> String {
    let how = if finished { "finished in" } else { "ended (dashboard closed) after" };
    format!("demo {how} {:.1} s", took.as_secs_f64())
}

fn print_summary(s: &Summary, mesh: &Mesh, headline: &str, keep: bool) {
    println!("{headline}");
    let agree = if s.agree {
        format!("all {} nodes agree", mesh.nodes.len())
    } else {
        "NODES DISAGREE".into()
    };
    println!("  items done            {}/{} ({agree})", s.done, s.items);
    println!("  URLs archived         {}", s.urls_archived);
    println!("  duplicate executions  {}", s.duplicates);
    println!(
        "  WARC files            {} files, {:.1} KiB",
        s.warc_files,
        s.warc_bytes as f64 / 1024.0
    );
    for n in &mesh.nodes {
        println!("                        {}", n.dir.join(crate::cli_node::RESULTS_DIR).display());
    }
    if !keep {
        println!("                        (removed on exit; pass --keep to keep them)");
    }
    println!(
        "  copies per result     {} to {} (verified by digest, across all nodes)",
        s.copies.0, s.copies.1
    );
}

/// Opens the dashboard on a demo node until the operator quits it.
fn dashboard(dir: &Path) -> Result<()> {
    let args = starling_tui::DashArgs { data_dir: Some(dir.to_path_buf()), ..Default::default() };
    starling_tui::run(args)
}
