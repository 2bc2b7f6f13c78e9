//! Helpers shared by the simulator's integration tests.

use starling_sim::{RunResult, Scenario, run_scenario};

/// Built-in scenario `name` cut to a quick size; `drain_ms`, if given, is how long it runs on
/// after the last crawl item.
pub fn quick(name: &str, nodes: u32, items: u32, drain_ms: Option<u64>) -> Scenario {
    let mut s = Scenario::load(name).expect("built-in scenario loads");
    s.nodes = nodes;
    s.items = items;
    if let Some(d) = drain_ms {
        s.drain_ms = d;
    }
    s.validate().expect("still valid");
    s
}

/// Runs `s` at `seed`, failing the test on any violation or lost item.
pub fn run(s: &Scenario, seed: u64) -> RunResult {
    let r = run_scenario(s, seed).unwrap_or_else(|f| panic!("{} seed {seed}: {f}", s.name));
    assert!(r.result.violations.is_empty(), "seed {seed}: {:?}", r.result.violations);
    assert_eq!(r.result.lost_items, 0, "seed {seed}");
    r.result
}
