//! # starling-node
//!
//! The real Starling node and the `starling` command line: key files, the project owner's
//! tools, the libp2p mesh actor ([`actor`], [`net`]), the redb [`store`], work [`runner`]s and
//! the loopback control [`api`]. The node is a thin driver of the claim engine in
//! `starling-protocol`: it never decides who owns an item.
//!
//! The subcommands for `main.rs` live in [`cli_node`].
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

/// `starling --version`: the crate version, the commit built and the build date (from
/// `build.rs`; `SOURCE_DATE_EPOCH` fixes the date).
pub const VERSION_LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STARLING_COMMIT"),
    ", built ",
    env!("STARLING_BUILD_DATE"),
    ", ",
    env!("STARLING_PROFILE"),
    ")"
);

pub mod actor;
pub mod api;
pub mod budget;
pub mod checks;
pub mod civil;
pub mod cli_node;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod crawl;
pub mod curate;
pub mod demo;
pub mod export;
pub mod health;
pub mod hub;
pub mod keyfile;
pub mod logfile;
pub mod metrics;
pub mod nat;
pub mod net;
pub mod next_steps;
pub mod project;
pub mod projects;
pub mod relay;
pub mod runner;
pub mod seed;
pub mod service;
pub mod settings;
pub mod store;
pub mod tcp;
#[cfg(any(debug_assertions, feature = "test-runner"))]
pub mod test_runner;
pub mod torrent;
pub mod urls;

/// The control API's JSON shapes (they live with the dashboard that reads them).
pub use starling_tui::api as views;
/// The blocking control API client.
pub use starling_tui::client as api_client;
