//! # starling-sim
//!
//! A deterministic discrete-event simulator that drives the real `starling-protocol` claim
//! engine over many simulated nodes, with latency, loss, partitions, churn, clock skew, slow
//! nodes and lying peers, and checks the protocol's properties in every run.
//!
//! One thread, one seeded ChaCha RNG, events ordered by (time, insertion); nothing that
//! affects a result depends on `HashMap` order or the wall clock, so a scenario and a seed
//! always give the same [`RunResult`] and trace hash. The wall clock is read only for the
//! [`Perf`] figures. Start with [`run_scenario`], or [`run`] for the command line.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod check;
mod cli;
mod crawl;
mod delivery;
mod faults;
mod gossip;
mod hash;
mod hosts;
mod lifecycle;
pub mod net;
mod parts;
mod proofs;
pub mod queue;
pub mod report;
mod results;
pub mod scenario;
mod shards;
mod work;
mod world;

use std::time::Instant;

pub use check::{Overlap, all_agree, safety_broken, state_fingerprint};
pub use cli::{SimArgs, run};
pub use hosts::HostReport;
pub use report::{Perf, Report, RunResult};
pub use scenario::{Overrides, Scenario, ScenarioError};
pub use world::{Violation, ViolationKind, World};

/// A run that broke an invariant: the first violation and the report up to it.
#[derive(Debug, Clone)]
pub struct RunFailure {
    /// What broke, with the seed and the trace before it.
    pub violation: Violation,
    /// The report up to the violation.
    pub report: Report,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.violation.fmt(f)
    }
}

impl std::error::Error for RunFailure {}

/// Scores remembered across the engines of a run (5 MiB; see `hrw::memo_scores`).
const SCORE_MEMO_SLOTS: usize = 1 << 16;

/// Runs `scenario` with `seed` to the end; `Err` if an invariant broke.
pub fn run_scenario(scenario: &Scenario, seed: u64) -> Result<Report, Box<RunFailure>> {
    run_scenario_with(scenario, seed, |_, _| {})
}

/// [`run_scenario`] with a progress callback, called now and then with (simulated now, end).
pub fn run_scenario_with(
    scenario: &Scenario,
    seed: u64,
    progress: impl FnMut(u64, u64),
) -> Result<Report, Box<RunFailure>> {
    let started = Instant::now();
    // Every engine here ranks the same (item, node) pairs on this one thread.
    starling_protocol::hrw::memo_scores(SCORE_MEMO_SLOTS);
    let mut world = World::new(scenario, seed);
    world.run(progress);
    let result = world.result();
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let perf = Perf {
        wall_ms: (wall * 1_000.0) as u64,
        events_per_s: (result.events as f64 / wall).round(),
        model_events_per_s: (result.model_events as f64 / wall).round(),
        engine_inputs_per_s: (result.engine_inputs as f64 / wall).round(),
        sim_per_wall: ((result.sim_ms as f64 / 1_000.0) / wall * 100.0).round() / 100.0,
        peak_rss_bytes: report::peak_rss_bytes(),
    };
    let violation = world.violations.first().cloned();
    drop(world);
    let report = Report { result, perf };
    match violation {
        Some(violation) => Err(Box::new(RunFailure { violation, report })),
        None => Ok(report),
    }
}
