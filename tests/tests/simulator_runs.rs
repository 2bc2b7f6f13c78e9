//! The real engine driven through the simulator's public API: a scenario and a seed always
//! give the same report, and the engines of a run finish every item with no invariant broken
//! under churn and partitions. (The checkers' own sabotage tests are the simulator's, in
//! `simulator/tests/sim.rs`.)

use starling_sim::{Overrides, Scenario, run_scenario};

/// A built-in scenario made small enough for a debug-build test.
fn small(name: &str, nodes: u32, items: u32) -> Scenario {
    let mut s = Scenario::load(name).expect("built-in scenario loads");
    let o = Overrides { nodes: Some(nodes), items: Some(items), ..Default::default() };
    s.apply_overrides(&o).expect("the overrides are valid");
    s
}

#[test]
fn a_scenario_and_a_seed_always_give_the_same_report() {
    let s = small("steady", 12, 40);
    let a = run_scenario(&s, 3).expect("steady breaks no invariant");
    let b = run_scenario(&s, 3).expect("steady breaks no invariant");
    assert_eq!(format!("{:?}", a.result), format!("{:?}", b.result));
    assert!(!a.result.trace_hash.is_empty());
}

#[test]
fn engines_under_churn_and_partitions_finish_every_item() {
    for name in ["steady", "churn", "partition-heal"] {
        let s = small(name, 16, 60);
        let r = run_scenario(&s, 1).unwrap_or_else(|f| panic!("{name}: {f}")).result;
        assert_eq!((r.items_done, r.lost_items), (r.items, 0), "{name}");
        assert!(r.violations.is_empty(), "{name}: {:?}", r.violations);
        assert!(r.engine_inputs > 0 && r.messages > 0, "{name}: the engines talked");
    }
}
