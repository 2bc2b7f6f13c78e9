//! Host lanes (issue 15) proven from the sites' side: with the rate mesh-wide no host gets more
//! than its rate plus burst in any second, nothing lands in a `Retry-After` window and no URL
//! is lost; with the rate per node (the old behaviour) the same crawl overruns every host, and
//! the site check fails a run that does not expect it.

use starling_sim::{HostReport, Scenario, ViolationKind, run_scenario};

/// `name` cut to a quick size: 60 chunks of 5 URLs over 10 hosts at 4/s.
fn quick(name: &str) -> Scenario {
    let mut s = Scenario::load(name).expect("built-in scenario loads");
    s.items = 60;
    let h = s.hosts.as_mut().expect("a host scenario");
    h.count = 10;
    h.urls_per_chunk = 5;
    h.rate_per_s = 4.0;
    s.validate().expect("still valid");
    s
}

fn hosts(s: &Scenario, seed: u64) -> HostReport {
    let r = run_scenario(s, seed).unwrap_or_else(|f| panic!("seed {seed}: {f}"));
    assert!(r.result.violations.is_empty(), "seed {seed}: {:?}", r.result.violations);
    assert_eq!(r.result.lost_items, 0, "seed {seed}");
    r.result.hosts.expect("a host report")
}

#[test]
fn mesh_scope_keeps_every_host_within_its_budget() {
    let s = Scenario::load("host-lanes").expect("built-in scenario loads");
    for seed in 1..4 {
        let h = hosts(&s, seed);
        assert!(h.max_window_requests <= h.window_bound, "seed {seed}: {h:?}");
        assert_eq!(h.requests_over_bound, 0, "seed {seed}");
        assert_eq!(h.in_retry_window, 0, "seed {seed}");
        assert_eq!(h.urls_never_fetched, 0, "seed {seed}");
        assert!(h.requests >= h.urls, "seed {seed}: every URL was asked for");
        assert!(h.time_ms.is_some(), "seed {seed}: every URL fetched");
    }
}

#[test]
fn releases_that_state_their_drain_keep_the_hosts_busier() {
    // Each release says how long its holder goes on sending (its last URLs at the lane's
    // rate, all of which fit in it), and the next holder waits that, not the whole 1 s drain.
    // Seeds 1-20 use 58 % of the budget while busy when every hand-off waits the whole
    // drain, 87 % now (81.1 % the least run), at the same bound.
    let s = Scenario::load("host-lanes").expect("built-in scenario loads");
    for seed in 1..4 {
        let h = hosts(&s, seed);
        assert!(h.budget_share_busy_mean_pct.is_some_and(|p| p >= 80.0), "seed {seed}: {h:?}");
        assert!(h.max_window_requests <= h.window_bound, "seed {seed}: {h:?}");
    }
}

#[test]
fn chunks_cut_by_host_keep_their_hosts_busy() {
    // Each chunk is one stint of its host's lane. Claiming the chunk of a quiet host first, and
    // the next chunk of a host while its last one finishes (so it is settled by the time that
    // one ends, and the lane stays with the node), took seeds 1-20 from 85 % of the budget
    // while busy and 1.65x the ideal time to 97 % and 1.2x. A lane's first holder waiting
    // only its claim's settle, and a node taking its own lane back at once when the host's
    // next chunk starts while it drains, took them to 1.12x (seeds 1-3 were 1.16-1.23x).
    let s = Scenario::load("host-lanes-by-host").expect("built-in scenario loads");
    for seed in 1..4 {
        let h = hosts(&s, seed);
        assert!(h.budget_share_busy_mean_pct.is_some_and(|p| p >= 90.0), "seed {seed}: {h:?}");
        assert!(h.time_vs_ideal.is_some_and(|t| t <= 1.15), "seed {seed}: {h:?}");
        assert!(h.max_window_requests <= h.window_bound, "seed {seed}: {h:?}");
        assert_eq!(h.lane_overlaps, 0, "seed {seed}");
    }
}

#[test]
fn node_scope_overruns_the_hosts() {
    let s = quick("host-lanes-node-scope");
    let h = hosts(&s, 1);
    // Five nodes each at the full rate: far past rate + burst.
    assert!(h.max_window_requests > 2 * h.window_bound, "{h:?}");
    assert!(h.requests_over_bound > 0);
    assert_eq!(h.max_lane_holders, 0, "no lanes under node scope");
    // Not expected, the same crawl fails on the site's rate.
    let mut strict = s.clone();
    strict.hosts.as_mut().expect("hosts").over_budget_expected = false;
    let f = run_scenario(&strict, 1).expect_err("the site check fails the old behaviour");
    assert_eq!(f.violation.kind, ViolationKind::SiteRate, "{f}");
}

/// A holder that crashes leaves its hosts idle for a lane's lease at most (plus the skew
/// margin, the next claim and its drain); back from its snapshot, it catches up with the lanes'
/// epochs by sync (lane epochs may jump far) and the mesh agrees on every lane again.
#[test]
fn a_crashed_holders_hosts_are_taken_over_within_a_lane_lease() {
    let mut s = quick("host-lanes-crash");
    s.churn.per_min = 0.0;
    s.hosts.as_mut().expect("hosts").rate_per_s = 1.0;
    let h = hosts(&s, 1);
    assert!(h.idle_after_death > 0, "a crash left a host waiting: {h:?}");
    let worst = h.idle_after_death_max_ms.expect("measured");
    // A lane's lease, the skew margin, the claim and the drain before the next holder sends.
    assert!(worst <= 14_000, "idle {worst}ms after a holder died");
    assert_eq!(h.urls_never_fetched, 0);
}

#[test]
fn host_runs_are_deterministic() {
    let s = quick("host-lanes");
    let a = run_scenario(&s, 9).unwrap_or_else(|f| panic!("{f}"));
    let b = run_scenario(&s, 9).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(a.result.trace_hash, b.result.trace_hash);
    assert_eq!(
        serde_json::to_string(&a.result).expect("serialises"),
        serde_json::to_string(&b.result).expect("serialises")
    );
}

#[test]
fn each_node_asks_a_host_for_its_robots_txt_once_before_its_urls() {
    // As the node's crawler does: one request of the host's budget per node that works it.
    let mut s = quick("host-lanes-by-host");
    let nodes = u64::from(s.nodes);
    let h = hosts(&s, 1);
    let count = u64::from(h.hosts);
    assert!(h.robots_requests >= count, "every host was asked once at least: {h:?}");
    assert!(h.robots_requests <= count * nodes, "once a node at most: {h:?}");
    assert_eq!(h.requests, h.urls + h.extra_fetches + h.robots_requests + h.refused, "{h:?}");
    s.hosts.as_mut().expect("hosts").robots_txt = false;
    let h = hosts(&s, 1);
    assert_eq!(h.robots_requests, 0, "{h:?}");
    assert_eq!(h.requests, h.urls + h.extra_fetches + h.refused, "{h:?}");
}

#[test]
fn lanes_claimed_with_their_chunks_start_the_hosts_sooner() {
    // Claimed with the chunk, a host's lane settles with it rather than a claim's settle
    // after it starts. Seeds 1-10 of host-lanes-by-host (robots.txt modelled): 1.126x the
    // ideal time without, 1.113x with; host-lanes 1.169x and 1.125x.
    let with = Scenario::load("host-lanes-by-host").expect("built-in scenario loads");
    let mut without = with.clone();
    without.engine.lanes_with_chunks = false;
    let (mut a, mut b) = (0.0, 0.0);
    for seed in 1..4 {
        let h = hosts(&with, seed);
        assert_eq!(h.lane_overlaps, 0, "seed {seed}");
        assert!(h.max_window_requests <= h.window_bound, "seed {seed}: {h:?}");
        a += h.budget_share_mean_pct.expect("every host fetched");
        b += hosts(&without, seed).budget_share_mean_pct.expect("every host fetched");
    }
    assert!(a > b, "budget used from the publish: {a} with, {b} without");
}

#[test]
fn a_lane_claim_given_up_before_it_settles_leaves_its_rival_alone() {
    // Seed 504: two nodes claimed a lane at once for chunks they had claimed; one let its
    // claim go before it settled (its chunk went to a rival), which ended the epoch in its own
    // view while the other held it, and it claimed the next epoch and fetched during the
    // other's drain (5 requests in a second, over rate + burst = 4). Claims now settle first.
    let s = Scenario::load("host-lanes-crash").expect("built-in scenario loads");
    let h = hosts(&s, 504);
    assert_eq!(h.requests_over_bound, 0, "{h:?}");
    assert_eq!(h.lane_overlaps, 0, "{h:?}");
}

#[test]
fn a_dead_holders_chunks_are_claimed_again_before_fresh_ones() {
    // host-lanes-killed: the chunks a dead node held go on counting as held everywhere until
    // claimed again, so by host load alone their hosts came last and waited for every fresh
    // chunk: seeds 1-20 took 1.88x the ideal time (1.85-2.05x). Claimed first, 1.47x
    // (1.45-1.52x).
    let s = Scenario::load("host-lanes-killed").expect("built-in scenario loads");
    for seed in 1..4 {
        let h = hosts(&s, seed);
        assert!(h.time_vs_ideal.is_some_and(|t| t <= 1.6), "seed {seed}: {h:?}");
        assert!(h.max_window_requests <= h.window_bound, "seed {seed}: {h:?}");
        assert_eq!(h.lane_overlaps, 0, "seed {seed}");
    }
}

#[test]
fn a_node_back_from_its_snapshot_learns_the_cooldown_it_missed() {
    // host-lanes-crash: node 3 comes back at 80 s from its snapshot just after a host's
    // cooldown went out, which sync does not hand on; it claimed the host's lane after its
    // warm-up and asked the host 3.7-4.6 s into its Retry-After (seeds 133 and 605, among 4 of
    // seeds 41-1400). Its claim is now answered with the cooldown. In seed 1099 it missed a
    // whole epoch: it refused the claim of it as early, its releaser's release of the epoch
    // before having come only as the lane's open state; that release now counts.
    let s = Scenario::load("host-lanes-crash").expect("built-in scenario loads");
    for seed in [133, 605, 1099] {
        let h = hosts(&s, seed);
        assert_eq!(h.in_retry_window, 0, "seed {seed}: {h:?}");
    }
}
