//! # starling-protocol
//!
//! The sans-IO core of Starling: ids and keys, the CBOR wire format, signed envelopes, project
//! manifests, work items, rendezvous ranking and the claim [`engine`]. Nothing here reads a
//! clock, draws OS randomness or does I/O: time and seeds come in as arguments, so the node and
//! the simulator drive exactly the same code.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod directory;
pub mod engine;
pub mod hrw;
pub mod ids;
pub mod item;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod message;
pub mod proof;
pub mod shard;
pub mod signed;
pub mod wire;

pub use directory::{Directory, DirectoryEntry};
pub use engine::{
    CancelReason, ClockView, ConfigError, Engine, EngineConfig, EngineStats, Input, ItemCounts,
    ItemState, Output, Reject, Route, ShardView, Snapshot, WorkResult,
};
pub use ids::{Digest, IdParseError, ItemId, NodeId, ProjectId};
pub use item::{ItemBatch, TorrentSource, WorkItem, WorkKind};
pub use keys::{Keypair, PublicKey};
pub use manifest::{ProjectManifest, RatePolicy, RateScope, RobotsPolicy, SizeCaps};
pub use message::{
    Claim, Envelope, Failure, Presence, Receipt, RelayRequest, Release, Roles, SyncDelta,
    SyncDigest,
};
pub use shard::Shard;
pub use signed::{Signable, Signed, VerifyError};
pub use wire::DecodeError;
