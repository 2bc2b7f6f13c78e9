//! End-to-end runs of the simulator at small sizes: determinism, every scenario file, and each
//! invariant checker failing on a deliberately broken run.

use starling_sim::scenario::BUILTIN;
use starling_sim::{Overrides, Scenario, ViolationKind, run_scenario};

/// A small, quick world.
fn small(name: &str) -> Scenario {
    let mut s = Scenario::load(name).expect("built-in scenario loads");
    s.apply_overrides(&Overrides { nodes: Some(8), items: Some(40), ..Default::default() })
        .expect("small override is valid");
    s
}

fn result_json(s: &Scenario, seed: u64) -> (String, String) {
    let r = run_scenario(s, seed).unwrap_or_else(|f| panic!("seed {seed}: {f}"));
    (serde_json::to_string(&r.result).expect("report serialises"), r.result.trace_hash)
}

#[test]
fn same_seed_same_report_and_trace() {
    let s = small("lossy");
    let (a, ha) = result_json(&s, 7);
    let (b, hb) = result_json(&s, 7);
    assert_eq!(a, b, "seed 7: reports differ");
    assert_eq!(ha, hb);
    let (_, hc) = result_json(&s, 8);
    assert_ne!(ha, hc, "seeds 7 and 8 gave the same trace");
}

#[test]
fn every_scenario_parses_and_runs_small() {
    for (name, _) in BUILTIN {
        let s = small(name);
        let r = run_scenario(&s, 1).unwrap_or_else(|f| panic!("scenario {name} seed 1: {f}"));
        assert_eq!(r.result.lost_items, 0, "scenario {name} seed 1 lost items");
        assert!(r.result.items_done > 0, "scenario {name} seed 1 did nothing");
    }
}

#[test]
fn steady_small_has_no_duplicates() {
    let s = small("steady");
    let r = run_scenario(&s, 3).unwrap_or_else(|f| panic!("seed 3: {f}"));
    assert_eq!(r.result.items_done, 40);
    assert_eq!(r.result.duplicate_executions, 0, "seed 3");
    assert!(r.result.time_to_finish_ms.is_some());
    // Every copy that reaches a node is one event of the model, queued or settled at send;
    // settled copies are all duplicates here (nobody is deaf).
    let x = &r.result;
    assert_eq!(x.model_events, x.events + x.copies_settled_at_send);
    assert!(x.copies_settled_at_send > 0 && x.copies_settled_at_send <= x.duplicate_deliveries);
    assert!(x.engine_inputs > 0 && x.engine_inputs < x.events, "{} inputs", x.engine_inputs);
    // At least a claim and a receipt per item, and heartbeats; counted for this run only.
    assert!(x.signatures > 2 * x.items_done, "{} signatures", x.signatures);
    let again = run_scenario(&s, 3).unwrap_or_else(|f| panic!("seed 3: {f}"));
    assert_eq!(again.result.signatures, x.signatures);
}

fn expect_violation(s: &Scenario, seed: u64, kind: ViolationKind) {
    match run_scenario(s, seed) {
        Ok(r) => panic!("seed {seed}: expected a {kind:?} violation, run passed: {:?}", r.result),
        Err(f) => {
            assert_eq!(f.violation.kind, kind, "seed {seed}: {f}");
            assert!(!f.violation.trace.is_empty(), "violation carries a trace");
            assert!(f.to_string().contains(&format!("seed {seed}")));
        }
    }
}

/// A small world where claim races are common: slow links, three claimants per item and room
/// for every item (with few slots a node takes the items it ranks first on, which rarely
/// collide); items take `crawl_ms`.
fn racy(crawl_ms: u64) -> Scenario {
    let mut s = small("steady");
    s.network.latency_min_ms = 600;
    s.network.latency_tail_ms = 0.0;
    s.engine.candidates = 3;
    s.engine.capacity = 40;
    s.work.crawl_ms = crawl_ms;
    s
}

#[test]
fn safety_checker_catches_work_after_a_lost_claim() {
    // The sabotaged driver keeps working after its engine says it lost.
    let mut s = racy(40_000);
    run_scenario(&s, 1).unwrap_or_else(|f| panic!("control run, seed 1: {f}"));
    s.sabotage.ignore_cancel = true;
    expect_violation(&s, 1, ViolationKind::Safety);
}

#[test]
fn safety_checker_catches_an_overlap_in_one_view_of_items_shorter_than_a_renewal() {
    // As above, but items take 3 s: far less than the settle window (lease / 3 + 3 s), so
    // only the item-level check (each has taken in the other's claim) can see the overlap.
    let mut s = racy(3_000);
    s.work.jitter = 0.0;
    run_scenario(&s, 1).unwrap_or_else(|f| panic!("control run, seed 1: {f}"));
    s.sabotage.ignore_cancel = true;
    match run_scenario(&s, 1) {
        Ok(r) => panic!("expected a safety violation, run passed: {:?}", r.result),
        Err(f) => {
            assert_eq!(f.violation.kind, ViolationKind::Safety, "{f}");
            assert!(f.violation.detail.contains("taken in the other's claim"), "{f}");
        }
    }
}

#[test]
fn result_checker_catches_a_liar_result_for_an_epoch_it_never_held() {
    let mut s = Scenario::load("byzantine").expect("built-in scenario loads");
    s.apply_overrides(&Overrides { nodes: Some(12), items: Some(60), ..Default::default() })
        .expect("small override is valid");
    s.byzantine.nodes = 3;
    let r = run_scenario(&s, 1).unwrap_or_else(|f| panic!("control run, seed 1: {f}"));
    // Bogus results left are only those of liars that won an epoch by the claim rule (a race
    // in the holder's first second), which only checking results can catch.
    assert!(
        r.result.bogus_results <= r.result.liar_results_won,
        "{} bogus results, {} won by the claim rule",
        r.result.bogus_results,
        r.result.liar_results_won
    );
    // Backdated claims outrank the real holder: the engine takes them, the checker must not.
    s.byzantine.backdate = true;
    expect_violation(&s, 1, ViolationKind::ForgedResult);
}

#[test]
fn a_liar_cannot_finish_an_item_two_epochs_past_its_own_lease() {
    // Seed 268 of the default `byzantine` (found by a sweep of 800 seeds): a liar renewed its
    // epoch-13 lease to one node only, claimed epoch 15 while that lease ran, and that node
    // took its result once the lease it knew ran out. The fencing rule for claims begun
    // inside one's own lease looked only at the epoch just before.
    let s = Scenario::load("byzantine").expect("built-in scenario loads");
    let r = run_scenario(&s, 268).unwrap_or_else(|f| panic!("seed 268: {f}"));
    assert_eq!(r.result.lost_items, 0);
}

#[test]
fn a_run_does_not_end_before_its_last_fault_has_healed() {
    let mut s = small("partition-heal");
    // Every item is done long before the heal.
    let heal = s.faults.iter().map(|f| f.at_ms).max().expect("the scenario has faults");
    s.drain_ms = 1_000;
    let r = run_scenario(&s, 1).unwrap_or_else(|f| panic!("seed 1: {f}"));
    assert!(r.result.sim_ms >= heal, "ended at {} before the heal at {heal}", r.result.sim_ms);
    assert!(r.result.convergence_after_heal_ms.is_some(), "convergence checked after the heal");
}

#[test]
fn loss_checker_catches_a_dropped_item() {
    let mut s = small("steady");
    s.duration_ms = 120_000;
    run_scenario(&s, 1).unwrap_or_else(|f| panic!("control run, seed 1: {f}"));
    s.sabotage.drop_items = 2;
    expect_violation(&s, 1, ViolationKind::LostItem);
}

#[test]
fn local_faults_lose_nothing_and_nodes_that_fail_work_for_them_fail_items() {
    let mut s = Scenario::load("local-faults").expect("built-in scenario loads");
    s.apply_overrides(&Overrides { nodes: Some(10), items: Some(200), ..Default::default() })
        .expect("small override is valid");
    let r = run_scenario(&s, 1).unwrap_or_else(|f| panic!("seed 1: {f}"));
    assert_eq!((r.result.failed_items, r.result.lost_items), (0, 0));
    assert!(r.result.items_given_back > 0, "the faulty nodes gave nothing back");
    // Nodes that take their own faults for the item's: two of them at once fail items for
    // everyone, and the loss checker says so.
    s.sabotage.local_faults_as_failures = true;
    expect_violation(&s, 1, ViolationKind::LostItem);
}

#[test]
fn nodes_with_clocks_far_off_find_out_and_claim_nothing() {
    let s = small("skewed-nodes");
    let r = run_scenario(&s, 1).unwrap_or_else(|f| panic!("seed 1: {f}"));
    assert_eq!(r.result.nodes_clock_off, 4, "{:?}", r.result);
    assert_eq!(r.result.duplicate_executions, 0, "{:?}", r.result.duplicate_examples);
}

#[test]
fn nodes_found_off_stay_off_when_cut_off_from_their_peers() {
    // Node 3, 30 s behind, is isolated from 20 s to 110 s with work still open: it hears no
    // one, so its verdict cannot be drawn again; it must stand (the `OffClockWork` check
    // fails the run if the node starts any work once it had a heartbeat's life to find out).
    let mut s = Scenario::load("skew-cut-off").expect("built-in scenario loads");
    s.apply_overrides(&Overrides { nodes: Some(10), items: Some(300), ..Default::default() })
        .expect("override is valid");
    let r = run_scenario(&s, 1).unwrap_or_else(|f| panic!("seed 1: {f}"));
    assert_eq!(r.result.nodes_clock_off, 2, "{:?}", r.result);
    assert_eq!(r.result.lost_items, 0);
    assert!(r.result.time_to_finish_ms.unwrap() > 30_000, "work was open while node 3 was cut off");
}

#[test]
fn convergence_checker_catches_a_deaf_node() {
    let mut s = small("steady");
    s.check.convergence_bound_ms = 20_000;
    run_scenario(&s, 1).unwrap_or_else(|f| panic!("control run, seed 1: {f}"));
    s.sabotage.deaf_node = Some(2);
    s.sabotage.deaf_from_ms = 0;
    expect_violation(&s, 1, ViolationKind::Convergence);
}

#[test]
fn scenario_errors_are_clear() {
    let err = Scenario::load("no-such-scenario").expect_err("unknown name fails");
    assert!(err.to_string().contains("steady"), "{err}");
    let err = Scenario::from_toml("nodes = 1", "inline").expect_err("one node is not a mesh");
    assert!(err.to_string().contains("nodes = 1: must be in 2 ..= "), "{err}");
    let err = Scenario::from_toml("nodez = 3", "inline").expect_err("typos are caught");
    assert!(err.to_string().contains("nodez"), "{err}");
}

#[test]
fn nodes_that_only_follow_a_curator_finish_every_listed_item() {
    let mut s = small("curated");
    s.duration_ms = 120_000;
    let r = run_scenario(&s, 2).unwrap_or_else(|f| panic!("seed 2: {f}"));
    assert_eq!((r.result.items_done, r.result.lost_items), (40, 0), "seed 2");
    // Without the listing, nothing vouches for the owner and no item is ever taken in.
    s.sabotage.unlisted_directory = true;
    expect_violation(&s, 2, ViolationKind::LostItem);
}
