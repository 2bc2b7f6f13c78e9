//! Relay slots end to end on loopback: two reachable relays, a node that listens on no address
//! (so nobody can dial it directly) and a client that listens on none either. The unreachable
//! node asks for a relay slot; a relay wins it through the claim engine and grants the
//! reservation; the client reaches the unreachable node only through a relay circuit, and
//! state sync runs across it. When the relay holding the slot is killed, the other relay
//! claims the slot at the next epoch and the node is reachable through it.

use std::time::Duration;

use crate::common::*;
use starling_node::views::{PeerInfo, RelayView, StatusView};

const LEASE_MS: &str = "3000";

fn relay_args() -> Vec<String> {
    ["--listen", "/ip4/127.0.0.1/tcp/0", "--reachability", "public", "--relay", "true"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--relay-lease-ms".to_string(), LEASE_MS.to_string()])
        .collect()
}

fn hidden_args(reachability: &str, boots: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--listen".into(),
        "none".into(),
        "--reachability".into(),
        reachability.into(),
        "--relay-lease-ms".into(),
        LEASE_MS.into(),
    ];
    for b in boots {
        a.extend(["--bootstrap".to_string(), b.clone()]);
    }
    a
}

fn peer_id(n: &Node) -> String {
    n.api.get_json::<StatusView>("/status").unwrap().peer_id
}

fn relay_of(n: &Node) -> Option<String> {
    n.api.get_json::<RelayView>("/relay").ok().and_then(|r| r.relayed_via)
}

/// The client's view of `target`: connected through a relay, with sync answers from it.
fn relayed_link(client: &Node, target: &str) -> Option<PeerInfo> {
    let peers: Vec<PeerInfo> = client.api.get_json("/peers").ok()?;
    peers.into_iter().find(|p| p.peer_id == target && p.connected && p.via_relay)
}

#[test]
fn an_unreachable_node_is_reached_through_the_relay_holding_its_slot() {
    let r1 = Node::start(100, &relay_args());
    let b1 = r1.addr();
    let mut args = relay_args();
    args.extend(["--bootstrap".to_string(), b1.clone()]);
    let r2 = Node::start(100, &args);
    let b2 = r2.addr();
    let mut relays = vec![(peer_id(&r1), r1), (peer_id(&r2), r2)];

    let hidden = Node::start(100, &hidden_args("private", &[b1.clone(), b2.clone()]));
    let hidden_id = peer_id(&hidden);
    assert!(hidden.status()["listen"].as_array().unwrap().is_empty(), "it must listen nowhere");
    let client = Node::start(100, &hidden_args("auto", &[b1, b2]));
    let everyone = || {
        let mut s = dump(std::slice::from_ref(&hidden));
        s.push_str(&dump(std::slice::from_ref(&client)));
        s
    };

    // A relay wins the slot and grants the reservation; the node listens through it.
    let mut via = String::new();
    wait_for_or(
        "the unreachable node to listen through a relay",
        Duration::from_secs(60),
        || {
            via = relay_of(&hidden).unwrap_or_default();
            !via.is_empty()
        },
        everyone,
    );
    assert!(relays.iter().any(|(id, _)| *id == via), "{via} is not one of the relays");

    // The client reaches it only through a relay circuit, and sync answers cross it.
    wait_for_or(
        "the client to sync with the node through a relay circuit",
        Duration::from_secs(60),
        || relayed_link(&client, &hidden_id).is_some_and(|p| p.synced > 0),
        everyone,
    );
    let mine: RelayView = hidden.api.get_json("/relay").unwrap();
    assert!(mine.reserved >= 1 && mine.circuits_in >= 1, "{mine:?}");
    assert!(mine.relayed_bytes > 0, "traffic through the circuit is counted: {mine:?}");
    let holder = relays.iter().position(|(id, _)| *id == via).unwrap();
    let counters: RelayView = relays[holder].1.api.get_json("/relay").unwrap();
    assert!(counters.reservations >= 1 && counters.circuits >= 1, "{counters:?}");
    assert_eq!(counters.slots_held, 1, "{counters:?}");
    let other: RelayView = relays[1 - holder].1.api.get_json("/relay").unwrap();
    assert_eq!(other.slots_held, 0, "only one relay holds the slot: {other:?}");

    // Kill the relay holding the slot: the other claims it, and the node moves there.
    let (dead_id, mut dead) = relays.remove(holder);
    dead.kill9();
    let (live_id, _live) = &relays[0];
    wait_for_or(
        "the slot to move to the other relay",
        Duration::from_secs(90),
        || relay_of(&hidden).is_some_and(|r| r == *live_id),
        everyone,
    );
    assert_ne!(relay_of(&hidden).unwrap(), dead_id);
    wait_for_or(
        "the client to reach the node again, through the new relay",
        Duration::from_secs(90),
        || relayed_link(&client, &hidden_id).is_some(),
        everyone,
    );
}
