//! Five real nodes on loopback share a 300-item project: every item done, all agree, no
//! duplicate executions.

use std::time::Duration;

use crate::common::*;

#[test]
fn five_nodes_finish_300_items_without_duplicates() {
    let p = project(11, "mesh", 300, 3_000);
    let trust = trusted(&p);
    let first = Node::start(100, &trust);
    let boot = first.addr();
    let mut nodes = vec![first];
    for _ in 0..4 {
        let mut args = trust.clone();
        args.extend(["--bootstrap".to_string(), boot.clone()]);
        nodes.push(Node::start(100, &args));
    }
    wait_for("every node to see 4 live peers", Duration::from_secs(60), || {
        nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == 4)
    });
    assert_eq!(nodes[0].publish(&p.manifest)["outcome"], "applied");
    assert_eq!(nodes[0].publish(&p.batch)["outcome"], "applied");
    wait_for_or(
        "all 300 items done on every node",
        Duration::from_secs(120),
        || nodes.iter().all(|n| num(&n.status(), &["items", "done"]) == 300),
        || dump(&nodes),
    );
    let reference = item_states(&nodes[0]);
    assert_eq!(reference.len(), 300);
    for n in &nodes[1..] {
        assert_eq!(item_states(n), reference, "nodes disagree on the final state");
    }
    let executions: u64 = nodes.iter().map(|n| num(&n.status(), &["runner", "completed"])).sum();
    let per_node: Vec<u64> =
        nodes.iter().map(|n| num(&n.status(), &["runner", "completed"])).collect();
    let duplicates = executions.saturating_sub(300);
    println!("executions per node {per_node:?}; duplicate executions: {duplicates}");
    assert_eq!(duplicates, 0, "duplicate executions");
    for n in &nodes {
        let s = n.status();
        assert_eq!(num(&s, &["engine", "rejected", "bad_signature"]), 0);
        assert_eq!(num(&s, &["engine", "rejected", "epoch_rule_broken"]), 0);
    }
}
