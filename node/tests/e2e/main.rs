//! The node's end-to-end tests, in one test binary: every module starts real `starling`
//! processes (or a real local site) on 127.0.0.1. One binary instead of one per file keeps a
//! debug build of the workspace a few gigabytes smaller and links once instead of thirteen times.

mod common;

mod api;
mod api_limits;
mod bad_input;
mod crawl;
mod crawl_outcomes;
mod crawl_robots;
mod crawl_site;
mod dash;
mod demo;
mod fault_runs;
mod first_run;
mod follow;
mod host_lanes;
mod interop;
mod kill;
mod lifetime;
mod local_faults;
mod mesh;
mod metrics;
mod project_cli;
mod proofs;
mod pywb;
mod reject;
mod relay;
mod seed;
mod service;
mod shards;
mod startup;
mod store_damage;
mod sync;
mod torrent;
mod traffic;
mod verify;
mod version;
mod warcio;
