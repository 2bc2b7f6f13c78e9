//! State sync runs the engine's session policy (`starling_protocol::engine::SyncSessions`): a
//! peer that leaves a sync request unanswered is given up on after the policy's timeout and
//! another peer is asked, so a late joiner catches up without waiting on it.

use std::time::Duration;

use crate::common::*;

#[test]
fn a_peer_that_never_answers_sync_is_passed_over() {
    let p = project(23, "sync", 40, 60_000);
    let base = trusted(&p);
    let a = Node::start(60_000, &base);
    let mut args = base.clone();
    args.extend(["--bootstrap".to_string(), a.addr()]);
    let mute = Node::start_env(60_000, &args, &[("STARLING_TEST_SYNC_MUTE", "1")]);
    a.publish(&p.manifest);
    a.publish(&p.batch);
    wait_for("the mute node to learn the project", Duration::from_secs(60), || known(&mute) == 40);
    // The late node knows only the mute node at first: its first sync goes there and is never
    // answered, so the policy must ask again (the mute node or, once connected, the other).
    let late_args = [base.clone(), vec!["--bootstrap".to_string(), mute.addr()]].concat();
    let late = Node::start(60_000, &late_args);
    let nodes = [a, mute, late];
    wait_for_or(
        "the late node to catch up and to have asked again",
        Duration::from_secs(60),
        || {
            let s = nodes[2].status();
            known(&nodes[2]) == 40 && num(&s, &["net", "sync_retries"]) >= 1
        },
        || dump(&nodes),
    );
    assert_eq!(num(&nodes[1].status(), &["net", "sync_served"]), 0, "the mute node answered");
    assert!(num(&nodes[2].status(), &["net", "sync_applied"]) > 0, "nothing came by sync");
}

/// Items of the project the node knows, in any state.
fn known(n: &Node) -> u64 {
    let s = n.status();
    ["open", "held", "done", "failed"].iter().map(|k| num(&s, &["items", k])).sum()
}
