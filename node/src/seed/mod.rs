//! Seeding duties: keeping, serving and copying finished results between volunteers.
//!
//! A result is a blob named by its blake3 digest in the results directory (the crawler's WARC
//! files already live there, so the node that produced a result is a holder from the start).
//! Holders serve it in chunks over the `/starling/blob/1.0.0` request-response protocol
//! ([`wire`]); each chunk travels as a BLAKE3 verified-streaming slice ([`slice`], the `bao`
//! format), so a receiver checks every chunk against the digest on its own before writing it,
//! and checks the whole file again before taking it as stored.
//!
//! The parts, from the bottom up:
//! - [`store::BlobStore`]: the blobs on disk, their outboard hash trees and the disk cap;
//!   [`partial::Partial`]: a resumable download into it.
//! - [`slice`]: cutting a verifiable slice out of a stored blob and checking one received.
//! - [`proof`]: answering the engine's storage-proof challenges from the store.
//! - [`wire`]: the request and response messages, their CBOR codec and limits, and the libp2p
//!   codec for the protocol.
//! - [`fetch::Fetcher`]: downloads a blob from a list of holders through any
//!   [`fetch::ChunkSource`], rejecting bad chunks and naming the peers that sent them.
//! - [`serve::BlobServer`]: answers inbound requests from the store, with a bound on how many
//!   it serves at once.
//! - [`runner::SeedRunner`]: the node's [`crate::runner::Runner`] for seeding duties.
//!
//! How the actor wires this in is written down on [`runner`].

pub mod fetch;
pub mod node;
pub mod partial;
pub mod proof;
pub mod runner;
pub mod serve;
pub mod slice;
pub mod store;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};

pub use fetch::{ChunkSource, FetchConfig, FetchError, FetchOutcome, Fetcher, SourceError};
pub use partial::Partial;
pub use runner::{BlobCommand, HolderLookup, HolderQuery, SeedRunner, SwarmSource};
pub use serve::BlobServer;
pub use store::{BlobStore, StoreError};
pub use wire::{BlobRequest, BlobResponse};

/// Bytes in one transfer chunk: the unit a request asks for, a slice verifies and the
/// [`partial::Partial`] sidecar remembers.
pub const CHUNK_BYTES: u32 = 256 * 1024;

/// What seeding did, for the dashboard; shared by the fetcher, the server and the runner.
#[derive(Debug, Default)]
pub struct SeedingCounters {
    /// Blob bytes sent to peers (slice content, not proof bytes).
    pub bytes_served: AtomicU64,
    /// Blob bytes received and verified.
    pub bytes_fetched: AtomicU64,
    /// Chunks that failed verification.
    pub chunks_rejected: AtomicU64,
    /// Blobs fetched, verified whole and stored.
    pub blobs_stored: AtomicU64,
    /// Requests answered with a slice.
    pub requests_served: AtomicU64,
    /// Requests refused because too many were being served.
    pub requests_busy: AtomicU64,
    /// Fetches that gave up.
    pub fetches_failed: AtomicU64,
}

/// A copy of [`SeedingCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeedingStats {
    /// See [`SeedingCounters::bytes_served`].
    pub bytes_served: u64,
    /// See [`SeedingCounters::bytes_fetched`].
    pub bytes_fetched: u64,
    /// See [`SeedingCounters::chunks_rejected`].
    pub chunks_rejected: u64,
    /// See [`SeedingCounters::blobs_stored`].
    pub blobs_stored: u64,
    /// See [`SeedingCounters::requests_served`].
    pub requests_served: u64,
    /// See [`SeedingCounters::requests_busy`].
    pub requests_busy: u64,
    /// See [`SeedingCounters::fetches_failed`].
    pub fetches_failed: u64,
}

impl SeedingCounters {
    /// Reads the counters.
    pub fn snapshot(&self) -> SeedingStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SeedingStats {
            bytes_served: get(&self.bytes_served),
            bytes_fetched: get(&self.bytes_fetched),
            chunks_rejected: get(&self.chunks_rejected),
            blobs_stored: get(&self.blobs_stored),
            requests_served: get(&self.requests_served),
            requests_busy: get(&self.requests_busy),
            fetches_failed: get(&self.fetches_failed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
