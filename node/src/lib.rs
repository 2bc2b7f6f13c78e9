//! # starling-node
//!
//! The real Starling node and the `starling` command line: key files, the project owner's
//! tools, and (as they land) the libp2p mesh actor, the redb store, work runners and the local
//! control API.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod keyfile;
pub mod project;
