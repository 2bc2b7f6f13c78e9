//! `starling project …`: the project owner's tools, on real files.
//!
//! `keygen` makes a project key, `new` signs a manifest (from a TOML file, flags, or both),
//! `add-urls` signs batches of crawl chunks, `add-torrents` signs batches of torrent seeding
//! duties, and `inspect` verifies and prints any signed file.
//! Signed files hold one CBOR [`Envelope`]; a corrupted, truncated, wrongly signed or foreign
//! file gets one clear error naming it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use starling_protocol::item::{BATCH_ITEMS_MAX, MAGNET_MAX, TORRENT_FILE_MAX, URL_MAX};
use starling_protocol::wire::MAX_FILE_BYTES;
use starling_protocol::{Envelope, ItemBatch, ProjectManifest, Signed, TorrentSource, WorkItem};

use crate::keyfile;

mod manifest;

use manifest::{build_manifest, format_rate};
pub use manifest::{
    format_duration_ms, parse_duration_ms, parse_proof_every, parse_proof_grace, parse_rate,
    parse_sample, parse_volatile,
};

/// `starling project` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project owner key (mode 0600) and print its public half.
    #[command(
        after_help = "Examples:\n  starling project keygen --out owner.key        # owner.key (secret) and owner.key.pub"
    )]
    Keygen {
        /// Where to write the key; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a project manifest from a TOML file and/or flags.
    #[command(
        after_help = "Examples:\n  starling project new --key owner.key --name my-crawl --rate-per-host 4/s --scope example.org --out project.cbor
  starling project new --key owner.key --manifest my-crawl.toml --out project.cbor
  starling project new --key owner.key --manifest my-crawl.toml --manifest-version 2 --out project-v2.cbor"
    )]
    New(Box<NewArgs>),
    /// Sign a batch of crawl chunks from a list of URLs (one per line).
    #[command(
        after_help = "Examples:\n  starling project add-urls --key owner.key --project project.cbor --urls urls.txt --out batch-1.cbor
  starling project add-urls --key owner.key --project project.cbor --urls more.txt --chunk 20 --out batch-2.cbor"
    )]
    AddUrls(AddUrlsArgs),
    /// Sign a batch of torrent seeding duties from .torrent files and magnet links.
    #[command(
        after_help = "Examples:\n  starling project add-torrents --key owner.key --project project.cbor --out torrents-1.cbor a.torrent b.torrent
  starling project add-torrents --key owner.key --project project.cbor --replicas 3 --out torrents-2.cbor 'magnet:?xt=urn:btih:<INFOHASH>'"
    )]
    AddTorrents(AddTorrentsArgs),
    /// Add a project owner's key to the running node's trusted set.
    #[command(
        after_help = "Examples:\n  starling project trust owner.key.pub            # the owner's public key file
  starling project trust project.cbor             # the owner of a signed manifest
  starling project trust <64_HEX_DIGITS>"
    )]
    Trust(crate::cli_node::TrustArgs),
    /// Follow a curator on the running node: the projects its signed directory lists are
    /// taken in (as if their owners were trusted), at the listed priority unless you set one.
    #[command(
        after_help = "Examples:\n  starling project follow curator.key.pub         # the curator's public key file
  starling project follow directory.cbor          # the curator of a signed directory
  starling project follow <64_HEX_DIGITS>"
    )]
    Follow(crate::curate::FollowArgs),
    /// Sign a curator's directory: projects (by their signed manifests) and their priorities.
    #[command(
        after_help = "Examples:\n  starling project directory --key curator.key --name picks --directory-version 1 --entry project.cbor:5 --entry other.cbor --out directory.cbor
  starling publish directory.cbor                 # then send it into the mesh"
    )]
    Directory(crate::curate::DirectoryArgs),
    /// Verify a signed file and print what it holds.
    #[command(
        after_help = "Examples:\n  starling project inspect project.cbor          # prints the project id
  starling project inspect batch-1.cbor --json"
    )]
    Inspect {
        /// The signed file (manifest, batch, or any Starling envelope).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `starling project new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The project owner key (from `starling project keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// A TOML manifest (see docs/project-manifest.md); flags override its fields.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Where to write the signed manifest.
    #[arg(long)]
    pub out: PathBuf,
    /// Project name.
    #[arg(long)]
    pub name: Option<String>,
    /// Manifest version; a higher version replaces a lower one in the mesh.
    #[arg(long = "manifest-version")]
    pub manifest_version: Option<u64>,
    /// Requests per host, such as `4/s`, `30/min` or `0.5/s`: for the whole mesh together
    /// (see `--rate-scope`).
    #[arg(long)]
    pub rate_per_host: Option<String>,
    /// Whom the per-host rate binds: `mesh` (default; every node together, through host
    /// lanes) or `node` (each node on its own, so N nodes send a host up to N times the rate).
    #[arg(long, value_name = "mesh|node")]
    pub rate_scope: Option<String>,
    /// Under a mesh-wide rate, how many nodes may fetch from one host at once, each at the
    /// rate divided by the lanes (1 ..= 64; default 1). Raise it for big hosts.
    #[arg(long)]
    pub lanes: Option<u16>,
    /// Split the project into 2^N neighbourhoods (shards), 0 ..= 12 (default 0: whole). Each
    /// node then hears only its shard's items. See `--shard-for-nodes`.
    #[arg(long, value_name = "N")]
    pub shard_depth: Option<u8>,
    /// Pick the shard depth for about this many volunteer nodes, so that a shard keeps about
    /// 12 of them or more. Sign a new manifest version as the mesh grows or shrinks.
    #[arg(long, value_name = "NODES", conflicts_with = "shard_depth")]
    pub shard_for_nodes: Option<u64>,
    /// Requests allowed in a burst above the rate.
    #[arg(long)]
    pub burst: Option<u32>,
    /// Requests in flight to one host at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// An allowed host (repeatable; subdomains match too). No scope means any host.
    #[arg(long = "scope")]
    pub scope: Vec<String>,
    /// Lease length in seconds.
    #[arg(long)]
    pub lease_secs: Option<u64>,
    /// Copies of each result to keep across the mesh.
    #[arg(long)]
    pub replication: Option<u8>,
    /// Share of finished crawl results another node fetches again to check, 0 ..= 1 to
    /// thousandths (default 0.1: one in ten; 1 checks every result, 0 none).
    #[arg(long, value_name = "F")]
    pub verify_sample: Option<String>,
    /// A URL prefix whose pages change between fetches: checks compare its pages by status
    /// only, not by content (repeatable).
    #[arg(long = "verify-volatile", value_name = "PREFIX")]
    pub verify_volatile: Vec<String>,
    /// Checks lost (each on a different chunk) after which a node is marked for the project
    /// and its claims refused (1 ..= 16; default 3).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub verify_strikes: Option<i64>,
    /// How often seeding nodes show they still hold their copies (storage proofs), such as
    /// `30m` (default), `10s` ..= `7d`; `0` or `off` for none. Slots are never shorter than
    /// four leases.
    #[arg(long, value_name = "DURATION")]
    pub proof_every: Option<String>,
    /// How long a new seeding holder renews without proofs while it fetches its copy, such as
    /// `5m` (default), `0` ..= `7d`; the time the copy's size takes at 256 KiB/s is added.
    #[arg(long, value_name = "DURATION")]
    pub proof_grace: Option<String>,
}

/// Arguments of `starling project add-urls`.
#[derive(Debug, Args)]
pub struct AddUrlsArgs {
    /// The project owner key.
    #[arg(long)]
    pub key: PathBuf,
    /// The signed project manifest the URLs belong to.
    #[arg(long)]
    pub project: PathBuf,
    /// A text file of URLs, one per line (blank lines and `#` comments skipped).
    #[arg(long)]
    pub urls: PathBuf,
    /// URLs per crawl chunk.
    #[arg(long, default_value_t = 10)]
    pub chunk: usize,
    /// Batch sequence number (default: seconds since the UNIX epoch).
    #[arg(long)]
    pub seq: Option<u64>,
    /// Where to write the signed batch.
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `starling project add-torrents`.
#[derive(Debug, Args)]
pub struct AddTorrentsArgs {
    /// The project owner key.
    #[arg(long)]
    pub key: PathBuf,
    /// The signed project manifest the torrents belong to.
    #[arg(long)]
    pub project: PathBuf,
    /// .torrent files and `magnet:?xt=urn:btih:…` links.
    #[arg(required = true)]
    pub torrents: Vec<String>,
    /// Copies of each torrent to keep (default: the project's replication factor).
    #[arg(long)]
    pub replicas: Option<u8>,
    /// Batch sequence number (default: seconds since the UNIX epoch).
    #[arg(long)]
    pub seq: Option<u64>,
    /// Where to write the signed batch.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs a `starling project` subcommand.
pub fn run(cmd: ProjectCmd) -> Result<()> {
    match cmd {
        ProjectCmd::Keygen { out } => {
            let key = keyfile::generate()?;
            keyfile::write_new(&out, &key)?;
            let mut public = out.clone().into_os_string();
            public.push(".pub");
            let public = PathBuf::from(public);
            write_atomic(&public, format!("{}\n", key.public()).as_bytes())?;
            println!("{}", key.public());
            eprintln!(
                "wrote the secret project key to {} (keep it private) and the public key to {}",
                out.display(),
                public.display()
            );
            Ok(())
        }
        ProjectCmd::New(args) => new_project(&args),
        ProjectCmd::AddUrls(args) => add_urls(&args),
        ProjectCmd::AddTorrents(args) => add_torrents(&args),
        ProjectCmd::Trust(args) => crate::cli_node::trust(args),
        ProjectCmd::Follow(args) => crate::curate::follow(args),
        ProjectCmd::Directory(args) => crate::curate::make_directory(&args),
        ProjectCmd::Inspect { file, json } => inspect(&file, json),
    }
}

fn new_project(args: &NewArgs) -> Result<()> {
    let key = keyfile::read(&args.key)?;
    let m = build_manifest(args, key.public())?;
    let env = Envelope::Manifest(Signed::sign(&key, &m));
    write_atomic(&args.out, &env.to_bytes())?;
    println!("{}", m.id().to_hex());
    eprintln!("signed project {:?} v{} ({}) to {}", m.name, m.version, m.id(), args.out.display());
    if m.shard_depth > 0 {
        eprintln!(
            "split into {} shards (depth {}): each node takes in and claims only its shard's items",
            1u32 << m.shard_depth,
            m.shard_depth
        );
    }
    let slot_ms = starling_protocol::proof::every_ms(&m.verify, m.lease_ms);
    if slot_ms != m.verify.proof_every_ms {
        eprintln!(
            "note: storage proofs come every {} (four leases), not every {}: a slot is never \
             shorter than four leases",
            manifest::format_duration_ms(slot_ms),
            manifest::format_duration_ms(m.verify.proof_every_ms)
        );
    }
    Ok(())
}

/// Reads and fully verifies a signed file.
pub fn read_signed(path: &Path) -> Result<Envelope> {
    let bytes =
        fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let env = Envelope::from_file_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a Starling signed file: {e}", path.display()))?;
    env.verify().map_err(|e| anyhow::anyhow!("{} does not verify: {e}", path.display()))?;
    Ok(env)
}

fn read_manifest(path: &Path) -> Result<ProjectManifest> {
    match read_signed(path)? {
        Envelope::Manifest(s) => {
            let m = s.verify()?;
            if m.owner != s.signer() {
                bail!("{} is signed by a key other than its owner", path.display());
            }
            Ok(m)
        }
        other => bail!("{} holds a {}, not a project manifest", path.display(), other.kind()),
    }
}

/// Whether `host` is `allowed` or one of its subdomains.
fn host_in_scope(host: &str, scope: &[String]) -> bool {
    scope.is_empty()
        || scope.iter().any(|s| {
            let s = s.trim_start_matches('.').to_ascii_lowercase();
            host == s || host.ends_with(&format!(".{s}"))
        })
}

fn add_urls(args: &AddUrlsArgs) -> Result<()> {
    let key = keyfile::read(&args.key)?;
    let m = read_manifest(&args.project)?;
    if m.owner != key.public() {
        bail!("{} is not the key of project {:?} (owner {})", args.key.display(), m.name, m.owner);
    }
    let max_chunk = m.caps.chunk_urls_max as usize;
    if args.chunk == 0 || args.chunk > max_chunk {
        bail!("--chunk must be between 1 and {max_chunk} (the project's chunk_urls_max)");
    }
    let text = fs::read_to_string(&args.urls)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.urls.display()))?;
    let mut urls = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let where_ = format!("{}:{}", args.urls.display(), n + 1);
        if line.len() > URL_MAX {
            bail!("{where_}: URL longer than {URL_MAX} bytes");
        }
        let url = url::Url::parse(line)
            .map_err(|e| anyhow::anyhow!("{where_}: {line:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("{where_}: only http and https URLs can be crawled, not {:?}", url.scheme());
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !host_in_scope(&host, &m.scope) {
            bail!("{where_}: host {host:?} is outside the project's scope {:?}", m.scope);
        }
        // What is signed is the normalised URL (spaces and other characters percent-encoded),
        // which can be three times the line: that is what every node checks.
        let normalised = url.to_string();
        if normalised.len() > URL_MAX {
            bail!(
                "{where_}: URL is {} bytes once normalised (percent-encoded), over the limit of {URL_MAX} bytes",
                normalised.len()
            );
        }
        urls.push(normalised);
    }
    if urls.is_empty() {
        bail!("{} holds no URLs", args.urls.display());
    }
    let items: Vec<WorkItem> =
        urls.chunks(args.chunk).map(|c| WorkItem::CrawlChunk { urls: c.to_vec() }).collect();
    let count = items.len();
    let (seq, bytes) = sign_batch(&key, &m, args.seq, items, "chunks", "split the URL list")?;
    write_atomic(&args.out, &bytes)?;
    eprintln!(
        "signed batch {seq} of {count} chunks ({} URLs) for project {:?} to {}",
        urls.len(),
        m.name,
        args.out.display()
    );
    Ok(())
}

/// Signs `items` as one batch of project `m` (sequence `seq`, else the current time), refusing
/// a batch over the item or size limits with a hint (`fix`) on what to do.
fn sign_batch(
    key: &starling_protocol::Keypair,
    m: &ProjectManifest,
    seq: Option<u64>,
    items: Vec<WorkItem>,
    what: &str,
    fix: &str,
) -> Result<(u64, Vec<u8>)> {
    if items.len() > BATCH_ITEMS_MAX {
        bail!("{} {what} is over the {BATCH_ITEMS_MAX} a batch may hold; {fix}", items.len());
    }
    let seq = seq.unwrap_or_else(seq_now);
    let batch = ItemBatch { project: m.id(), seq, items };
    let bytes = Envelope::Batch(Signed::sign(key, &batch)).to_bytes();
    if bytes.len() > MAX_FILE_BYTES {
        bail!("the batch is {} bytes, over the {MAX_FILE_BYTES}-byte limit; {fix}", bytes.len());
    }
    Ok((seq, bytes))
}

fn seq_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A torrent named on the command line: its info hash and where holders get its metadata.
fn torrent_source(arg: &str) -> Result<([u8; 20], TorrentSource)> {
    if arg.starts_with("magnet:") {
        if arg.len() > MAGNET_MAX {
            bail!("magnet link longer than {MAGNET_MAX} bytes");
        }
        let magnet = librqbit::Magnet::parse(arg)
            .map_err(|e| anyhow::anyhow!("{arg:?} is not a magnet link: {e:#}"))?;
        let Some(hash) = magnet.as_id20() else {
            bail!(
                "{arg:?} has no BitTorrent v1 info hash (xt=urn:btih:…); v2-only magnets are not supported"
            );
        };
        return Ok((hash.0, TorrentSource::Magnet(arg.to_owned())));
    }
    let path = Path::new(arg);
    let bytes =
        fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > TORRENT_FILE_MAX {
        bail!(
            "{} is {} bytes, over the {TORRENT_FILE_MAX}-byte limit for a .torrent file; list it by magnet link",
            path.display(),
            bytes.len()
        );
    }
    let meta = librqbit::torrent_from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a .torrent file: {e}", path.display()))?;
    let hash = meta.info_hash.0;
    Ok((hash, TorrentSource::File(bytes)))
}

fn add_torrents(args: &AddTorrentsArgs) -> Result<()> {
    let key = keyfile::read(&args.key)?;
    let m = read_manifest(&args.project)?;
    if m.owner != key.public() {
        bail!("{} is not the key of project {:?} (owner {})", args.key.display(), m.name, m.owner);
    }
    let k = args.replicas.unwrap_or(m.replication);
    if k == 0 || k > starling_protocol::manifest::REPLICATION_MAX {
        bail!(
            "--replicas must be between 1 and {} (the project's replication factor is {})",
            starling_protocol::manifest::REPLICATION_MAX,
            m.replication
        );
    }
    let mut items = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for arg in &args.torrents {
        let (info_hash, source) = torrent_source(arg)?;
        if !seen.insert(info_hash) {
            bail!("{arg:?} is listed twice (info hash {})", hex::encode(info_hash));
        }
        for replica in 0..k {
            items.push(WorkItem::Torrent { info_hash, source: source.clone(), replica });
        }
    }
    let count = items.len();
    let (seq, bytes) = sign_batch(&key, &m, args.seq, items, "items", "list fewer torrents")?;
    write_atomic(&args.out, &bytes)?;
    eprintln!(
        "signed batch {seq} of {count} seeding duties ({} torrents × {k} copies) for project {:?} to {}",
        seen.len(),
        m.name,
        args.out.display()
    );
    Ok(())
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    let env = read_signed(path)?;
    let value = describe(&env)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: valid {} signed by {}", path.display(), env.kind(), env.signer().to_hex())?;
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            if k == "items" {
                continue;
            }
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            writeln!(out, "  {k}: {shown}")?;
        }
    }
    if let Some(items) = value.get("items").and_then(|v| v.as_array()) {
        writeln!(out, "  items: {}", items.len())?;
        for item in items.iter().take(5) {
            writeln!(out, "    {}", item)?;
        }
        if items.len() > 5 {
            writeln!(out, "    … {} more", items.len() - 5)?;
        }
    }
    Ok(())
}

/// A JSON description of a verified envelope, for `inspect` and the API.
pub fn describe(env: &Envelope) -> Result<serde_json::Value> {
    use serde_json::json;
    Ok(match env {
        Envelope::Manifest(s) => {
            let m = s.verify()?;
            json!({
                "kind": "manifest",
                "project": m.id().to_hex(),
                "name": m.name,
                "description": m.description,
                "version": m.version,
                "owner": m.owner.to_hex(),
                "rate_per_host": format_rate(m.rate.per_s_milli),
                "rate_scope": m.rate.scope.name(),
                "lanes": m.rate.lanes,
                "burst": m.rate.burst,
                "concurrency": m.rate.concurrency,
                "shard_depth": m.shard_depth,
                "lease_ms": m.lease_ms,
                "replication": m.replication,
                "scope": m.scope,
                "user_agent": m.user_agent,
                "robots": m.robots,
                "caps": {
                    "response_bytes_max": m.caps.response_bytes_max,
                    "chunk_urls_max": m.caps.chunk_urls_max,
                    "result_bytes_max": m.caps.result_bytes_max,
                },
                "verify": {
                    "sample": f64::from(m.verify.sample_milli) / 1000.0,
                    "volatile": m.verify.volatile,
                    "strikes": m.verify.strikes,
                    "proof_every_ms": m.verify.proof_every_ms,
                    "proof_grace_ms": m.verify.proof_grace_ms,
                },
            })
        }
        Envelope::Batch(s) => {
            let b = s.verify()?;
            let items: Vec<serde_json::Value> = b
                .items
                .iter()
                .map(|w| {
                    let id = w.id(&b.project).to_hex();
                    match w {
                        WorkItem::CrawlChunk { urls } => {
                            json!({ "id": id, "kind": w.kind().name(), "urls": urls.len() })
                        }
                        WorkItem::Torrent { info_hash, source, replica } => json!({
                            "id": id,
                            "kind": w.kind().name(),
                            "torrent": hex::encode(info_hash),
                            "source": match source {
                                TorrentSource::File(_) => "file",
                                TorrentSource::Magnet(_) => "magnet",
                            },
                            "replica": replica,
                        }),
                        _ => json!({ "id": id, "kind": w.kind().name(), "urls": 0 }),
                    }
                })
                .collect();
            json!({
                "kind": "batch",
                "project": b.project.to_hex(),
                "seq": b.seq,
                "signer": s.signer().to_hex(),
                "items": items,
            })
        }
        Envelope::Directory(s) => {
            let d = s.verify()?;
            let entries: Vec<serde_json::Value> = d
                .entries
                .iter()
                .map(|e| {
                    json!({
                        "project": e.project.to_hex(),
                        "owner": e.owner.to_hex(),
                        "priority": e.priority,
                    })
                })
                .collect();
            json!({
                "kind": "directory",
                "name": d.name,
                "version": d.version,
                "curator": d.curator.to_hex(),
                "entries": entries,
            })
        }
        other => json!({ "kind": other.kind(), "signer": other.signer().to_hex() }),
    })
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it into place, so
/// a crash never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torrent_sources_carry_their_info_hash() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:xxxxxxxxxxxxxxxxxxxxe";
        let file = [&b"d4:info"[..], &info[..], b"e"].concat();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.torrent");
        fs::write(&path, &file).unwrap();
        let (hash, source) = torrent_source(path.to_str().unwrap()).unwrap();
        use sha1::Digest as _;
        assert_eq!(hash[..], sha1::Sha1::digest(info)[..], "v1 info hash = sha1(info dict)");
        assert_eq!(source, TorrentSource::File(file));

        let link = "magnet:?xt=urn:btih:cab507494d02ebb1178b38f2e9d7be299c86b862&dn=x";
        let (hash, source) = torrent_source(link).unwrap();
        assert_eq!(hex::encode(hash), "cab507494d02ebb1178b38f2e9d7be299c86b862");
        assert_eq!(source, TorrentSource::Magnet(link.into()));

        assert!(torrent_source("magnet:?dn=no-hash").is_err());
        fs::write(&path, b"not bencode").unwrap();
        assert!(torrent_source(path.to_str().unwrap()).is_err());
    }

    #[test]
    fn scope_matches_hosts_and_subdomains() {
        let scope = vec!["example.org".to_string()];
        assert!(host_in_scope("example.org", &scope));
        assert!(host_in_scope("www.example.org", &scope));
        assert!(!host_in_scope("badexample.org", &scope));
        assert!(host_in_scope("anything", &[]));
    }
}
