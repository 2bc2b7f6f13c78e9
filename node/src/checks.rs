//! The node's side of spot-checks (the rule is the protocol's `engine/verify.rs`): which
//! result the mesh keeps for a finished crawl chunk, what becomes of a result this node made,
//! and the per-project figures for `/status`, `/metrics` and the dashboard.
//!
//! A chunk's kept result is its producer's, unless a quorum overturned it: then it is the
//! result of the first check, the round-0 `WorkItem::Verify` item, whose receipt (and WARC
//! file, and copies) stand in for the chunk's. Everything that reads a chunk's final result
//! (exports, `starling urls`) goes through [`kept`], so an overturned producer's WARC file
//! never reaches an archive.

use starling_protocol::engine::{MARKED_MAX, Quorum};
use starling_protocol::{Digest, Engine, ItemId, ItemState, NodeId, WorkItem};

use crate::views::{ChecksView, ItemInfo, MarkedPeer};

/// The result the mesh keeps for a finished crawl chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// The item whose receipt is the kept result: the chunk itself, or its round-0 check.
    pub receipt_item: ItemId,
    /// Who made the result.
    pub node: NodeId,
    /// The result (the WARC file's blake3 digest).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// The kept result of finished crawl chunk `item` (`None` for anything else).
pub fn kept(engine: &Engine, item: &ItemId) -> Option<Kept> {
    let (node, digest, size) = engine.kept(item)?;
    let receipt_item = engine.kept_item(item)?;
    Some(Kept { receipt_item, node, digest, size })
}

/// What became of a result this node made (see `Actor::sweep_orphans`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The mesh keeps it: forget it, leave the file.
    Kept,
    /// Not decided yet (its item is open again, or a check of it is under way).
    Unsettled,
    /// The mesh did not keep it: the file may go.
    Dropped,
}

/// What became of result `digest`, made here for item `item` (a crawl chunk or a check).
pub fn fate(engine: &Engine, item: &ItemId, digest: &Digest) -> Fate {
    let Some((_, work)) = engine.item_work(item) else { return Fate::Dropped };
    match engine.item_state(item) {
        Some(ItemState::Done { result, .. }) if result == *digest => {}
        Some(ItemState::Done { .. } | ItemState::Failed { .. }) | None => return Fate::Dropped,
        // Withdrawn and open again, or held by another: judged later.
        Some(_) => return Fate::Unsettled,
    }
    match work {
        WorkItem::CrawlChunk { .. } => match engine.quorum(item) {
            Quorum::Pending | Quorum::Disputed => Fate::Unsettled,
            Quorum::Overturned => Fate::Dropped,
            _ => Fate::Kept,
        },
        // A check's result is kept only when it overturned the chunk's; until the quorum is
        // settled it may yet be.
        WorkItem::Verify { source, .. } => {
            if kept(engine, source).is_some_and(|k| k.digest == *digest) {
                return Fate::Kept;
            }
            match engine.quorum(source) {
                Quorum::Pending | Quorum::Disputed => Fate::Unsettled,
                _ => Fate::Dropped,
            }
        }
        _ => Fate::Kept,
    }
}

/// Every known project's spot-check figures and marked peers (at most
/// [`MARKED_MAX`] per project, as the engine keeps).
pub fn views(engine: &Engine) -> Vec<ChecksView> {
    let mut counts = engine.verify_counts_by_project();
    engine
        .projects()
        .map(|(id, m)| {
            let mut marked: Vec<MarkedPeer> = engine
                .marked(&id)
                .into_iter()
                .take(MARKED_MAX)
                .map(|(node, strikes)| MarkedPeer {
                    node: node.to_hex(),
                    strikes: u32::try_from(strikes).unwrap_or(u32::MAX),
                })
                .collect();
            marked.sort_by(|a, b| b.strikes.cmp(&a.strikes).then(a.node.cmp(&b.node)));
            ChecksView {
                project: id.to_hex(),
                name: m.name.clone(),
                sample_milli: m.verify.sample_milli,
                strikes: m.verify.strikes,
                results: counts.remove(&id).unwrap_or_default(),
                marked,
            }
        })
        .collect()
}

/// A quorum's name, as `/items` shows it.
pub fn quorum_name(q: Quorum) -> &'static str {
    match q {
        Quorum::Unchecked => "unchecked",
        Quorum::Pending => "pending",
        Quorum::Confirmed => "confirmed",
        Quorum::Disputed => "disputed",
        Quorum::Upheld => "upheld",
        Quorum::Overturned => "overturned",
        Quorum::Split => "split",
    }
}

/// Adds to `info` (item `item` of `project`) where its check stands and the result kept, for
/// a finished crawl chunk.
pub fn annotate(engine: &Engine, item: &ItemId, info: &mut ItemInfo) {
    let Some(k) = kept(engine, item) else { return };
    let q = engine.quorum(item);
    info.check = (q != Quorum::Unchecked).then(|| quorum_name(q).to_owned());
    info.kept_by = Some(k.node.to_hex());
    info.kept_result = Some(k.digest.to_hex());
}
