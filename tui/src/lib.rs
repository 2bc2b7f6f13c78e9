//! # starling-tui
//!
//! The operator's side of the node's loopback control API: the JSON shapes it speaks
//! ([`api`]), a blocking client ([`client`]), and the `starling dash` terminal dashboard
//! ([`DashArgs`], [`run`]).
//!
//! The dashboard is split the way gitui and the ratatui templates split theirs: `app` holds
//! the state and a pure `App::update(Action)`, `ui` draws it without I/O, `poller` talks to
//! the node on its own threads, and `dash` runs the terminal and the loop between them.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
mod app;
pub mod client;
mod dash;
mod format;
pub mod hints;
mod poller;
mod ui;
pub mod units;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod snapshot_tests;

pub use dash::{DashArgs, TICK_MS_MAX, TICK_MS_MIN, default_data_dir, run};
