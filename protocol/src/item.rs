//! Work items and the signed batches they come in.
//!
//! Crawl chunks come in [`ItemBatch`]es signed by the project key. Seeding duties and relay
//! slots are derived: every node computes the same items from a valid receipt or a node's own
//! signed relay request, so they need no signature of their own. All three kinds are claimed,
//! leased and fenced by the same engine.

use serde::{Deserialize, Serialize};

use crate::ids::{Digest, ItemId, NodeId, ProjectId};
use crate::signed::Signable;
use crate::wire::{self, DecodeError, Validate, check_len};

/// Most URLs in one crawl chunk.
pub const CHUNK_URLS_MAX: usize = 1_000;
/// Longest URL.
pub const URL_MAX: usize = 2_048;
/// Most items in one batch.
pub const BATCH_ITEMS_MAX: usize = 10_000;

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkItem {
    /// Fetch these URLs politely and archive them as one WARC file.
    CrawlChunk {
        /// Absolute http(s) URLs.
        urls: Vec<String>,
    },
    /// Keep and serve a copy of a finished result (replica `replica` of the project's k).
    SeedDuty {
        /// The item whose result this is.
        source: ItemId,
        /// The result's blake3 digest.
        result: Digest,
        /// The result's size in bytes.
        size: u64,
        /// Which of the k copies this duty is.
        replica: u8,
    },
    /// Offer relay capacity to a node that is not publicly reachable.
    RelaySlot {
        /// The node that asked for a relay.
        requester: NodeId,
        /// The request's sequence number; a newer request replaces an older one.
        seq: u64,
    },
}

/// The kind of a work item, for roles and runners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// [`WorkItem::CrawlChunk`].
    Crawl,
    /// [`WorkItem::SeedDuty`].
    Seed,
    /// [`WorkItem::RelaySlot`].
    Relay,
}

impl WorkKind {
    /// All kinds, in a fixed order.
    pub const ALL: [WorkKind; 3] = [WorkKind::Crawl, WorkKind::Seed, WorkKind::Relay];

    /// Lowercase name for logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            WorkKind::Crawl => "crawl",
            WorkKind::Seed => "seed",
            WorkKind::Relay => "relay",
        }
    }
}

impl WorkItem {
    /// The item's kind.
    pub fn kind(&self) -> WorkKind {
        match self {
            WorkItem::CrawlChunk { .. } => WorkKind::Crawl,
            WorkItem::SeedDuty { .. } => WorkKind::Seed,
            WorkItem::RelaySlot { .. } => WorkKind::Relay,
        }
    }

    /// Whether the holder keeps the item after its work is ready (seeding and relaying go on
    /// for as long as the holder lives; a crawl chunk ends with its receipt).
    pub fn is_ongoing(&self) -> bool {
        !matches!(self, WorkItem::CrawlChunk { .. })
    }

    /// The canonical CBOR bytes the item id is derived from.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// This item's id within `project`.
    pub fn id(&self, project: &ProjectId) -> ItemId {
        ItemId::derive(project, &self.canonical_bytes())
    }
}

impl Validate for WorkItem {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            WorkItem::CrawlChunk { urls } => {
                check_len("urls", urls.len(), CHUNK_URLS_MAX)?;
                if urls.is_empty() {
                    return Err(DecodeError::Invalid("empty crawl chunk"));
                }
                for url in urls {
                    check_len("url", url.len(), URL_MAX)?;
                }
                Ok(())
            }
            WorkItem::SeedDuty { .. } | WorkItem::RelaySlot { .. } => Ok(()),
        }
    }
}

/// A batch of crawl chunks for one project, signed by the project key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemBatch {
    /// The project the items belong to.
    pub project: ProjectId,
    /// The owner's sequence number for this batch (for sync and display).
    pub seq: u64,
    /// The items.
    pub items: Vec<WorkItem>,
}

impl Validate for ItemBatch {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("items", self.items.len(), BATCH_ITEMS_MAX)?;
        for item in &self.items {
            item.validate()?;
            if item.kind() != WorkKind::Crawl {
                return Err(DecodeError::Invalid("batch holds a derived item kind"));
            }
        }
        Ok(())
    }
}

impl Signable for ItemBatch {
    const KIND: &'static str = "batch";
    const MAX_BODY_BYTES: usize = crate::wire::MAX_FILE_BYTES;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_ids_depend_on_project_and_content() {
        let a = WorkItem::CrawlChunk { urls: vec!["http://a/".into()] };
        let b = WorkItem::CrawlChunk { urls: vec!["http://b/".into()] };
        let p = ProjectId([1; 32]);
        let q = ProjectId([2; 32]);
        assert_ne!(a.id(&p), b.id(&p));
        assert_ne!(a.id(&p), a.id(&q));
        assert_eq!(a.id(&p), a.clone().id(&p));
    }
}
