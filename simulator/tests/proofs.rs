//! Storage proofs for result copies (issue 17) proven over the real engine: hoarders that take
//! seeding duties and keep no copy lose them within the bound the rule gives, their forged
//! proofs are refused by every honest node, and honest holders, through crashes and restarts,
//! are never challenged for a copy they lack. Without proofs the same hoarders keep their
//! duties, which fails the run.

use starling_sim::{RunResult, ViolationKind, run_scenario};

mod common;
use common::{quick, run};

fn refused_unproven(r: &RunResult) -> u64 {
    r.rejected.iter().find(|(name, _)| name == "unproven").map_or(0, |(_, n)| *n)
}

#[test]
fn hoarders_lose_their_duties_and_their_forged_proofs_are_refused() {
    // Two and a half minutes after the crawl: the grace (30 s) and two one-minute slots.
    let s = quick("hoarders", 10, 40, Some(150_000));
    for seed in 1..3 {
        let r = run(&s, seed);
        // The run fails on a duty held without its copy past the rule's bound (`CopylessHeld`):
        // grace 30 s + a 60 s slot + 3 leases of 10 s + 30 s slack. A hoarder may still hold
        // a duty it took lately, inside its grace.
        assert!(r.copyless_held_ms_max <= 150_000, "seed {seed}: {r:?}");
        assert!(r.copies_given_up > 0, "seed {seed}: no hoarder was challenged: {r:?}");
        assert!(refused_unproven(&r) > 0, "seed {seed}: no forged proof reached a peer");
        assert!(r.copies_proven > 0, "seed {seed}");
    }
}

#[test]
fn without_proofs_hoarders_keep_their_duties() {
    let mut s = quick("hoarders", 10, 40, Some(150_000));
    s.verify.proof_every_ms = 0;
    match run_scenario(&s, 1) {
        Err(f) => assert_eq!(f.violation.kind, ViolationKind::CopylessHeld, "{f}"),
        Ok(r) => panic!("hoarders lost their duties without proofs: {:?}", r.result),
    }
}

#[test]
fn honest_holders_prove_through_crashes_and_restarts() {
    // Every node honest; crashes restore from snapshots with their copies on disk. The run
    // fails if any honest node is challenged for a copy it lacks (`HonestUnproven`), or if the
    // copies' ready state does not converge.
    let mut s = quick("copies-churn", 12, 40, Some(120_000));
    s.churn.until_ms = 90_000;
    s.validate().expect("valid");
    let r = run(&s, 1);
    assert!(r.copies_proven > 0, "{r:?}");
    assert_eq!((r.copies_given_up, refused_unproven(&r)), (0, 0), "{r:?}");
    assert_eq!(r.copyless_duties_end, 0);
}
