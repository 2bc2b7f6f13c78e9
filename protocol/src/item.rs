//! Work items and the signed batches they come in.
//!
//! Crawl chunks and torrent seeding duties come in [`ItemBatch`]es signed by the project key.
//! Seeding duties for results and relay slots are derived: every node computes the same items
//! from a valid receipt or a node's own signed relay request, so they need no signature of
//! their own. All kinds are claimed, leased and fenced by the same engine.

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
/// Largest .torrent file carried in a torrent item.
pub const TORRENT_FILE_MAX: usize = 1024 * 1024;
/// Longest magnet link carried in a torrent item.
pub const MAGNET_MAX: usize = 4_096;

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
    /// Seed a BitTorrent torrent the project owner listed (replica `replica` of the k copies).
    Torrent {
        /// The torrent's BitTorrent v1 info hash (SHA-1 of its bencoded info dictionary); the
        /// holder checks the metadata it gets against it.
        #[serde(with = "serde_bytes")]
        info_hash: [u8; 20],
        /// Where the holder gets the torrent's metadata.
        source: TorrentSource,
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
    /// One of a project's lanes to a host: whoever holds it may fetch from the host at the
    /// project's `rate.per_host / rate.lanes`. Derived from the hosts of the project's crawl
    /// chunks when the project's rate is mesh-wide (see `engine/lanes.rs`).
    HostLane {
        /// Lowercase host name, as [`url_host`] gives it.
        host: String,
        /// Which of the project's lanes to the host.
        lane: u16,
    },
    /// Fetch a finished crawl chunk's URLs again and report what came back, so the mesh can
    /// compare it with the accepted result (see `engine/verify.rs`). Derived from an accepted
    /// receipt, by every node alike; never held by a node in `exclude`.
    Verify {
        /// The crawl chunk whose result is checked.
        source: ItemId,
        /// The result checked, as the source's receipt gave it.
        result: Digest,
        /// 0: the first check; 1: the third execution that settles a disagreement.
        round: u8,
        /// Who may not hold this duty: the result's producer, and in round 1 the first
        /// checker as well.
        exclude: Vec<NodeId>,
    },
}

/// Most nodes a verification duty may exclude.
pub const VERIFY_EXCLUDE_MAX: usize = 2;

/// Most lanes a project may give one host.
pub const LANES_MAX: u16 = 64;

/// The host part of an absolute URL, lowercased, without user info or port: the key of a
/// host's lanes. Every node must compute the same key, so this is the one place it is made.
/// `None` for a URL without `scheme://` or with an empty or over-long host.
pub fn url_host(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        // An IPv6 literal keeps its brackets, as URL parsers give it.
        &host_port[..host_port.find(']')? + 1]
    } else {
        host_port.split_once(':').map_or(host_port, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.len() > crate::manifest::HOST_MAX {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// Where a torrent item's metadata comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TorrentSource {
    /// The bytes of a .torrent file.
    File(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A `magnet:?xt=urn:btih:…` link; the metadata then comes from peers.
    Magnet(String),
}

/// The kind of a work item, for roles and runners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// [`WorkItem::CrawlChunk`].
    Crawl,
    /// [`WorkItem::SeedDuty`] and [`WorkItem::Torrent`].
    Seed,
    /// [`WorkItem::RelaySlot`].
    Relay,
    /// [`WorkItem::HostLane`].
    Lane,
}

impl WorkKind {
    /// All kinds, in a fixed order.
    pub const ALL: [WorkKind; 4] =
        [WorkKind::Crawl, WorkKind::Seed, WorkKind::Relay, WorkKind::Lane];

    /// Lowercase name for logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            WorkKind::Crawl => "crawl",
            WorkKind::Seed => "seed",
            WorkKind::Relay => "relay",
            WorkKind::Lane => "lane",
        }
    }
}

impl WorkItem {
    /// The item's kind.
    pub fn kind(&self) -> WorkKind {
        match self {
            WorkItem::CrawlChunk { .. } | WorkItem::Verify { .. } => WorkKind::Crawl,
            WorkItem::SeedDuty { .. } | WorkItem::Torrent { .. } => WorkKind::Seed,
            WorkItem::RelaySlot { .. } => WorkKind::Relay,
            WorkItem::HostLane { .. } => WorkKind::Lane,
        }
    }

    /// Whether the holder keeps the item after its work is ready (seeding and relaying go on
    /// for as long as the holder lives; a crawl chunk ends with its receipt).
    pub fn is_ongoing(&self) -> bool {
        !matches!(self, WorkItem::CrawlChunk { .. } | WorkItem::Verify { .. })
    }

    /// Whether the item comes in a project's signed batch (the others are derived by every
    /// node alike and never signed by the project).
    pub fn is_listed(&self) -> bool {
        matches!(self, WorkItem::CrawlChunk { .. } | WorkItem::Torrent { .. })
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
            WorkItem::Torrent { source: TorrentSource::File(bytes), .. } => {
                check_len("torrent", bytes.len(), TORRENT_FILE_MAX)?;
                // A .torrent file is a bencoded dictionary.
                if bytes.first() != Some(&b'd') {
                    return Err(DecodeError::Invalid("torrent file is not a dictionary"));
                }
                Ok(())
            }
            WorkItem::Torrent { source: TorrentSource::Magnet(link), .. } => {
                check_len("magnet", link.len(), MAGNET_MAX)?;
                if !link.starts_with("magnet:?") {
                    return Err(DecodeError::Invalid("magnet link does not start with magnet:?"));
                }
                Ok(())
            }
            WorkItem::HostLane { host, lane } => {
                check_len("host", host.len(), crate::manifest::HOST_MAX)?;
                if host.is_empty() || *lane >= LANES_MAX {
                    return Err(DecodeError::Invalid("host lane without a host or past the lanes"));
                }
                Ok(())
            }
            WorkItem::Verify { round, exclude, .. } => {
                check_len("exclude", exclude.len(), VERIFY_EXCLUDE_MAX)?;
                if *round > 1 || exclude.is_empty() {
                    return Err(DecodeError::Invalid(
                        "verification past round 1 or without producer",
                    ));
                }
                Ok(())
            }
            WorkItem::SeedDuty { .. } | WorkItem::RelaySlot { .. } => Ok(()),
        }
    }
}

/// A batch of crawl chunks and torrents for one project, signed by the project key.
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
            if !item.is_listed() {
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

    fn torrent(source: TorrentSource) -> WorkItem {
        WorkItem::Torrent { info_hash: [7; 20], source, replica: 0 }
    }

    #[test]
    fn torrent_items_are_listed_seeding_work_and_round_trip() {
        let t = torrent(TorrentSource::Magnet("magnet:?xt=urn:btih:07".into()));
        assert_eq!(t.kind(), WorkKind::Seed);
        assert!(t.is_ongoing());
        let back: WorkItem =
            wire::decode(&t.canonical_bytes(), wire::MAX_FILE_BYTES).expect("decodes");
        assert_eq!(back, t);
        let batch = ItemBatch { project: ProjectId([1; 32]), seq: 1, items: vec![t] };
        assert!(batch.validate().is_ok());
    }

    #[test]
    fn torrent_items_are_bounded_and_checked() {
        let big = torrent(TorrentSource::File(vec![b'd'; TORRENT_FILE_MAX + 1]));
        assert!(matches!(big.validate(), Err(DecodeError::TooLarge { .. })));
        assert!(torrent(TorrentSource::File(b"not bencode".to_vec())).validate().is_err());
        assert!(torrent(TorrentSource::Magnet("http://x/".into())).validate().is_err());
        let long = format!("magnet:?{}", "a".repeat(MAGNET_MAX));
        assert!(torrent(TorrentSource::Magnet(long)).validate().is_err());
        assert!(torrent(TorrentSource::File(b"d4:infode".to_vec())).validate().is_ok());
    }

    #[test]
    fn url_host_is_the_lowercase_host_alone() {
        for (url, host) in [
            ("http://Example.COM/a?b", Some("example.com")),
            ("https://user:pw@a.b:8080/x", Some("a.b")),
            ("http://127.0.0.2:9/", Some("127.0.0.2")),
            ("http://[::1]:80/x", Some("[::1]")),
            ("http://host.example./", Some("host.example")),
            ("http://h#frag", Some("h")),
            ("no-scheme/x", None),
            ("http:///path", None),
        ] {
            assert_eq!(url_host(url).as_deref(), host, "{url}");
        }
        assert_eq!(url_host(&format!("http://{}/", "a".repeat(300))), None);
    }

    #[test]
    fn host_lanes_are_derived_and_checked() {
        let lane = WorkItem::HostLane { host: "a.example".into(), lane: 0 };
        assert_eq!(lane.kind(), WorkKind::Lane);
        assert!(lane.is_ongoing() && !lane.is_listed());
        assert!(lane.validate().is_ok());
        assert!(WorkItem::HostLane { host: String::new(), lane: 0 }.validate().is_err());
        assert!(WorkItem::HostLane { host: "a".into(), lane: LANES_MAX }.validate().is_err());
        let batch = ItemBatch { project: ProjectId([1; 32]), seq: 1, items: vec![lane] };
        assert!(batch.validate().is_err());
    }

    #[test]
    fn derived_kinds_stay_out_of_batches() {
        let duty = WorkItem::SeedDuty {
            source: ItemId([1; 32]),
            result: Digest([2; 32]),
            size: 3,
            replica: 0,
        };
        let batch = ItemBatch { project: ProjectId([1; 32]), seq: 1, items: vec![duty] };
        assert!(batch.validate().is_err());
    }
}
