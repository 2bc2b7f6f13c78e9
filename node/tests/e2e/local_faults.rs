//! Faults that belong to one node stay with it, and an item's own failure is durable: real
//! nodes on loopback with the test runner, a store made to fail (`STARLING_TEST_STORE_FAULT`),
//! a clock set off (`STARLING_TEST_CLOCK_OFFSET_MS`), and chunks that fail by themselves.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn args(p: &TestProject, boot: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> =
        vec!["--listen".into(), "/ip4/127.0.0.1/tcp/0".into(), "--trust".into()];
    a.push(p.owner.public().to_hex());
    if let Some(b) = boot {
        a.extend(["--bootstrap".into(), b.into()]);
    }
    a
}

fn faults(s: &Value) -> Vec<String> {
    s["health"]["faults"]
        .as_array()
        .map(|f| f.iter().filter_map(|x| x["kind"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn a_store_that_cannot_be_written_stays_local_and_the_node_resumes_when_it_clears() {
    let p = project(21, "fullstore", 60, 4_000);
    let first = Node::start(400, &args(&p, None));
    let boot = first.addr();
    let second = Node::start(400, &args(&p, Some(&boot)));
    let fault = tempfile::tempdir().unwrap();
    let switch = fault.path().join("full");
    let shown = switch.display().to_string();
    let sick =
        Node::start_env(400, &args(&p, Some(&boot)), &[("STARLING_TEST_STORE_FAULT", &shown)]);
    let nodes = [first, second, sick];
    wait_for("every node to see 2 live peers", Duration::from_secs(60), || {
        nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == 2)
    });
    nodes[0].publish(&p.manifest);
    nodes[0].publish(&p.batch);
    wait_for_or(
        "the third node to take work",
        Duration::from_secs(60),
        || num(&nodes[2].status(), &["holding"]) > 0,
        || dump(&nodes),
    );
    // Its disk fills up: it must give its items back, not fail them for everyone.
    std::fs::write(&switch, b"").unwrap();
    wait_for_or(
        "the node to report its store fault and hold nothing",
        Duration::from_secs(30),
        || {
            let s = nodes[2].status();
            faults(&s) == ["store"] && num(&s, &["holding"]) == 0
        },
        || dump(&nodes),
    );
    let s = nodes[2].status();
    assert_eq!(s["health"]["ok"], false);
    assert!(num(&s, &["health", "gave_back"]) > 0, "{s}");
    wait_for_or(
        "the healthy nodes to finish every item",
        Duration::from_secs(120),
        || nodes[..2].iter().all(|n| num(&n.status(), &["items", "done"]) == 60),
        || dump(&nodes),
    );
    let claims_while_sick = num(&nodes[2].status(), &["engine", "claims"]);
    for n in &nodes {
        assert_eq!(num(&n.status(), &["items", "failed"]), 0, "{}", dump(&nodes));
    }
    assert!(read_log(&nodes[2].dir).contains("cannot be written"));
    // The disk has room again: the node says so by itself and agrees with the others.
    std::fs::remove_file(&switch).unwrap();
    wait_for_or(
        "the node to recover",
        Duration::from_secs(30),
        || nodes[2].status()["health"]["ok"] == true,
        || dump(&nodes),
    );
    wait_for_or(
        "all three views to agree",
        Duration::from_secs(60),
        || {
            let r = item_states(&nodes[0]);
            nodes[1..].iter().all(|n| item_states(n) == r)
        },
        || dump(&nodes),
    );
    let log = read_log(&nodes[2].dir);
    assert!(log.contains("cleared"), "{log}");
    // Nothing claimed while the fault lasted (the work was done by then, so none after).
    assert_eq!(num(&nodes[2].status(), &["engine", "claims"]), claims_while_sick);
}

#[test]
fn a_node_whose_clock_is_off_claims_nothing_and_says_so() {
    let p = project(22, "skewed", 30, 4_000);
    let first = Node::start(300, &args(&p, None));
    let boot = first.addr();
    let mut nodes = vec![first];
    for _ in 0..2 {
        nodes.push(Node::start(300, &args(&p, Some(&boot))));
    }
    nodes.push(Node::start_env(
        300,
        &args(&p, Some(&boot)),
        &[("STARLING_TEST_CLOCK_OFFSET_MS", "-30000")],
    ));
    wait_for_or(
        "the skewed node to judge its clock against three peers",
        Duration::from_secs(60),
        || nodes[3].status()["health"]["clock"]["off"] == true,
        || dump(&nodes),
    );
    let s = nodes[3].status();
    assert_eq!(faults(&s), ["clock"], "{s}");
    let offset = s["health"]["clock"]["offset_ms"].as_i64().unwrap();
    assert!((29_000..=31_000).contains(&offset), "offset {offset}");
    nodes[0].publish(&p.manifest);
    nodes[0].publish(&p.batch);
    wait_for_or(
        "the three good nodes to finish every item",
        Duration::from_secs(120),
        || nodes[..3].iter().all(|n| num(&n.status(), &["items", "done"]) == 30),
        || dump(&nodes),
    );
    let s = nodes[3].status();
    assert_eq!(num(&s, &["engine", "claims"]), 0, "the skewed node claimed: {s}");
    assert_eq!(num(&s, &["runner", "started"]), 0);
    // It refused its peers' messages as from the future without holding it against them (its
    // own clock is the one off), so gossip kept flowing both ways: the good nodes heard its
    // heartbeats often enough to judge their own clocks with it.
    assert!(num(&s, &["net", "gossip_ignored"]) > 0, "{s}");
    assert_eq!(num(&s, &["net", "gossip_rejected"]), 0, "{s}");
    for n in &nodes[..3] {
        let clock = &n.status()["health"]["clock"];
        assert!(clock["offset_ms"].is_i64() && clock["off"] == false, "{clock}");
    }
    let log = read_log(&nodes[3].dir);
    assert!(log.contains("ms behind its peers") && log.contains("NTP"), "{log}");
    let status = std::process::Command::new(BIN)
        .args(["status", "--data-dir"])
        .arg(&nodes[3].dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("OFF: claiming nothing") && text.contains("FAULT     clock"), "{text}");
}

#[test]
fn a_failed_item_stays_failed_across_a_restart_and_reaches_a_late_node_by_sync() {
    let mut urls: Vec<String> = (0..12).map(|i| format!("http://127.0.0.1:9/ok/{i}")).collect();
    urls.push("http://127.0.0.1:9/broken/1".into());
    let p = project_with(23, "broken", urls, 4_000);
    let first = Node::start(200, &args(&p, None));
    let boot = first.addr();
    let mut nodes = vec![first];
    for _ in 0..2 {
        nodes.push(Node::start(200, &args(&p, Some(&boot))));
    }
    wait_for("every node to see 2 live peers", Duration::from_secs(60), || {
        nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == 2)
    });
    nodes[0].publish(&p.manifest);
    nodes[0].publish(&p.batch);
    // The broken chunk fails on one node, then on a second: only then is it failed for all.
    let settled = |n: &Node| {
        let s = n.status();
        num(&s, &["items", "done"]) == 12 && num(&s, &["items", "failed"]) == 1
    };
    wait_for_or(
        "12 items done and the broken one failed on every node",
        Duration::from_secs(120),
        || nodes.iter().all(settled),
        || dump(&nodes),
    );
    let failures: u64 = nodes.iter().map(|n| num(&n.status(), &["engine", "failed"])).sum();
    assert!(failures >= 2, "failed for the mesh on {failures} node's word");
    let reference = item_states(&nodes[0]);
    nodes[1].stop();
    nodes[1].restart();
    wait_for_or(
        "the restarted node to show the same states",
        Duration::from_secs(30),
        || settled(&nodes[1]) && item_states(&nodes[1]) == reference,
        || dump(&nodes),
    );
    // A node that joins now learns it all by sync and never works the broken item.
    let late = Node::start(200, &args(&p, Some(&boot)));
    wait_for_or(
        "the late node to learn every item",
        Duration::from_secs(60),
        || settled(&late),
        || dump(std::slice::from_ref(&late)),
    );
    assert_eq!(item_states(&late), reference);
    assert_eq!(num(&late.status(), &["runner", "started"]), 0);
}
