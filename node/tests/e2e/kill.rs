//! `kill -9` of a node holding leases: its items are reclaimed once the leases run out and
//! finished by the others; nothing is lost; restarted, it catches up by sync.

use std::time::Duration;

use crate::common::*;

#[test]
fn killed_holder_loses_nothing_and_catches_up() {
    let p = project(21, "kill", 60, 2_000);
    let base = trusted(&p);
    let a = Node::start(1_200, &base);
    let mut args = base.clone();
    args.extend(["--bootstrap".to_string(), a.addr()]);
    let mut b = Node::start(1_200, &args);
    let c = Node::start(1_200, &args);
    wait_for("3 nodes to see each other", Duration::from_secs(60), || {
        [&a, &b, &c].iter().all(|n| num(&n.status(), &["live_peers"]) == 2)
    });
    a.publish(&p.manifest);
    a.publish(&p.batch);
    let b_id = b.status()["node_id"].as_str().unwrap().to_string();
    wait_for("the victim to hold work", Duration::from_secs(60), || {
        num(&b.status(), &["holding"]) > 0
    });
    b.kill9();
    let held_by_b: Vec<String> = a
        .items()
        .iter()
        .filter(|i| i["state"] == "held" && i["holder"] == b_id.as_str())
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!held_by_b.is_empty(), "the survivors should see the victim's leases");

    let nodes = [a, c];
    wait_for_or(
        "the survivors to finish every item",
        Duration::from_secs(120),
        || nodes.iter().all(|n| num(&n.status(), &["items", "done"]) == 60),
        || dump(&nodes),
    );
    let [a, c] = nodes;
    let final_a = item_states(&a);
    assert_eq!(final_a, item_states(&c));
    for id in &held_by_b {
        let (_, state, epoch, holder, _) = final_a.iter().find(|i| &i.0 == id).unwrap();
        assert_eq!(state, "done");
        // Either the victim's receipt got out just before the kill, or the item was reclaimed.
        assert!(holder == &b_id || *epoch >= 2, "item {id} finished at epoch {epoch} by {holder}");
    }

    b.restart();
    wait_for_or(
        "the restarted node to catch up",
        Duration::from_secs(60),
        || num(&b.status(), &["items", "done"]) == 60,
        || dump(std::slice::from_ref(&b)),
    );
    assert_eq!(item_states(&b), final_a, "restarted node disagrees");
    // Every item was finished while it was down, so only sync can have told it.
    assert!(num(&b.status(), &["net", "sync_applied"]) > 0, "no state came by sync");
    assert_eq!(num(&b.status(), &["holding"]), 0, "expired leases must not be resumed");
}
