//! Per-URL outcomes of a project's finished crawl chunks, for the project owner: which URLs
//! did not make it, and why. `starling urls --project ID [--failed]` asks the control API
//! (`GET /projects/{id}/urls`), which reads each done chunk's kept result's signed receipt
//! from the store (the chunk's own, or the spot-check's that overturned it, see
//! [`crate::checks::kept`]): the receipt's parts are in the chunk's URL order, each with its
//! class and reason.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use starling_protocol::message::PartClass;
use starling_protocol::{Engine, Envelope, ItemState, ProjectId, WorkItem};

use crate::store::Store;

/// Most URL outcomes one answer lists.
pub const URLS_LIST_MAX: usize = 100_000;

/// One URL of a done crawl chunk and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlOutcomeView {
    /// The chunk (item id, hex).
    pub item: String,
    /// The URL as the chunk lists it.
    pub url: String,
    /// `ok`, `refused`, `disallowed` or `transient`.
    pub class: String,
    /// The final HTTP status, 0 when there was none.
    pub status: u16,
    /// Why it was not archived; empty when it was.
    pub reason: String,
}

/// The URL outcomes of `project`'s done crawl chunks (only those not archived when
/// `failed_only`), at most [`URLS_LIST_MAX`]: the engine says which chunks are done, the store
/// holds their receipts.
pub fn url_outcomes(
    engine: &Engine,
    store: &Store,
    project: &ProjectId,
    failed_only: bool,
) -> Result<Vec<UrlOutcomeView>, String> {
    if !engine.projects().any(|(id, _)| id == *project) {
        return Err(format!("no project {} is known here", project.to_hex()));
    }
    let mut out = Vec::new();
    for (item, p, state) in engine.items() {
        if p != *project || !matches!(state, ItemState::Done { .. }) {
            continue;
        }
        let Some((_, WorkItem::CrawlChunk { urls })) = engine.item_work(&item) else {
            continue;
        };
        let Some(kept) = crate::checks::kept(engine, &item) else { continue };
        let receipt = match store.proof(&kept.receipt_item) {
            Ok(Some(Envelope::Receipt(s))) => s.verify().map_err(|e| e.to_string()),
            Ok(_) => continue, // the store lags the engine; the next call will see it
            Err(e) => return Err(format!("cannot read the store: {e}")),
        };
        let receipt = receipt.map_err(|e| format!("receipt of {item:#} unreadable: {e}"))?;
        for (url, part) in urls.iter().zip(&receipt.parts) {
            let class = part.class();
            if failed_only && class == PartClass::Ok {
                continue;
            }
            if out.len() >= URLS_LIST_MAX {
                return Ok(out);
            }
            out.push(UrlOutcomeView {
                item: item.to_hex(),
                url: url.clone(),
                class: class.name().into(),
                status: part.status,
                reason: part.failure.as_ref().map(|f| f.reason.clone()).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// `starling urls`: the URLs of a project's done chunks, with class and reason.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UrlsArgs {
    #[command(flatten)]
    pub node: crate::cli_node::NodeDirArgs,
    /// The project: its id, a unique prefix of it (4 hex digits or more), or its name.
    #[arg(long, value_name = "ID")]
    pub project: String,
    /// Only the URLs that were not archived (refused, disallowed, transient).
    #[arg(long)]
    pub failed: bool,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints one line per URL: class, status, URL and reason, tab-separated.
pub fn run(args: UrlsArgs) -> Result<()> {
    let client = args.node.client()?;
    let project: ProjectId = crate::projects::resolve(&client, &args.project)?;
    let path = format!("/projects/{}/urls?failed={}", project.to_hex(), args.failed);
    let list: Vec<UrlOutcomeView> = client.get_json(&path)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for u in &list {
        println!("{}\t{}\t{}\t{}", u.class, u.status, u.url, u.reason);
    }
    if list.is_empty() {
        eprintln!("no {}urls in done chunks", if args.failed { "failed " } else { "" });
    }
    Ok(())
}
