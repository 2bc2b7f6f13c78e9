//! A peer that gossips a forged envelope, an untrusted project or a claim that breaks the
//! epoch rule: the honest node rejects each, applies none, and the peer's score drops.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use serde_json::Value;
use starling_protocol::{Claim, Envelope, ItemId, Signed};

fn gossip(node: &Node, topic: &str, bytes: &[u8]) {
    let a = node.api.request("POST", &format!("/debug/gossip?topic={topic}"), bytes, None).unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
}

#[test]
fn forged_untrusted_and_epoch_breaking_messages_are_rejected() {
    let p = project(31, "reject", 3, 60_000);
    let honest_args = trusted(&p);
    // Work never finishes during the test, so the items stay held.
    let honest = Node::start(600_000, &honest_args);
    let mallory = Node::start(
        600_000,
        &["--listen".into(), "/ip4/127.0.0.1/tcp/0".into(), "--bootstrap".into(), honest.addr()],
    );
    let honest_id = honest.status()["node_id"].as_str().unwrap().to_string();
    let mallory_peer = mallory.status()["peer_id"].as_str().unwrap().to_string();
    honest.publish(&p.manifest);
    honest.publish(&p.batch);
    wait_for("the honest node to hold an item", Duration::from_secs(60), || {
        honest.items().iter().any(|i| i["state"] == "held" && i["holder"] == honest_id.as_str())
    });
    let held: Value = honest.items().into_iter().find(|i| i["state"] == "held").unwrap();
    let item: ItemId = held["id"].as_str().unwrap().parse().unwrap();
    let before = item_states(&honest);

    let owner_topic = format!("starling/v1/owner/{}", p.owner.public().to_hex());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let x = starling_protocol::engine::test_keypair(99);
    // 1. A forged envelope: a valid claim with its signature's last byte flipped.
    let claim = Claim {
        item,
        epoch: 1,
        at_ms: now,
        lease_until_ms: now + 5_000,
        since_ms: now,
        proof: None,
    };
    let mut forged = Envelope::Claim(Signed::sign(&x, &claim)).to_bytes();
    *forged.last_mut().unwrap() ^= 1;
    // 2. A project signed by a key nobody trusts.
    let untrusted = project(32, "rogue", 1, 5_000);
    // 3. A claim at epoch 2 while the epoch-1 lease still runs.
    let jump = Claim {
        item,
        epoch: 2,
        at_ms: now,
        lease_until_ms: now + 5_000,
        since_ms: now,
        proof: None,
    };
    let jump = Envelope::Claim(Signed::sign(&x, &jump)).to_bytes();

    wait_for("mallory to join the mesh", Duration::from_secs(30), || {
        mallory
            .api
            .request("POST", &format!("/debug/gossip?topic={owner_topic}"), &forged, None)
            .map(|a| a.status)
            .ok()
            == Some(200)
    });
    gossip(&mallory, "starling/v1/presence", &untrusted.manifest);
    gossip(&mallory, &owner_topic, &jump);

    let rejected = |reason: &str| num(&honest.status(), &["engine", "rejected", reason]);
    wait_for("all three rejections", Duration::from_secs(30), || {
        rejected("bad_signature") >= 1
            && rejected("untrusted_project") >= 1
            && rejected("epoch_rule_broken") >= 1
    });
    assert_eq!(item_states(&honest), before, "a rejected message changed state");
    assert_eq!(num(&honest.status(), &["projects"]), 1, "the untrusted project was applied");
    wait_for("mallory's score to drop below zero", Duration::from_secs(30), || {
        let peers: Vec<Value> = honest.api.get_json("/peers").unwrap();
        peers.iter().any(|p| {
            p["peer_id"] == mallory_peer.as_str() && p["score"].as_f64().is_some_and(|s| s < 0.0)
        })
    });
    // The operator's view: `starling status` reads the same counters back and adds up the
    // refusals (three at least, duplicates not counted).
    let out = std::process::Command::new(BIN)
        .args(["status", "--data-dir"])
        .arg(&honest.dir)
        .output()
        .expect("runs starling status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = text
        .lines()
        .find(|l| l.starts_with("messages"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no refusal count in:\n{text}"));
    assert!(refused >= 3, "{text}");
}
