//! What coordination costs each node in a mesh of real processes: libp2p bytes and gossip
//! messages per node per second while one project is worked, read from `/metrics`. A benchmark
//! (ignored, run by hand): the figure issue 16's neighbourhoods are measured against.
//!
//! `cargo test -p starling-node --test e2e -- --ignored --nocapture mesh_traffic_bench`
//! (`STARLING_TRAFFIC_NODES=N` for another mesh size, 20 by default;
//! `STARLING_TRAFFIC_SHARD_DEPTH=D` to have the owner split the project into `2^D` shards).

use std::time::{Duration, Instant};

use crate::common::*;

/// Sums the `/metrics` lines of one family whose labels contain `label` (all if empty).
fn family(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// (libp2p bytes in, bytes out, gossip messages received, gossip data bytes received) of
/// one node now.
fn traffic(n: &Node) -> (f64, f64, f64, f64) {
    let answer = n.api.request("GET", "/metrics", &[], None).expect("metrics");
    let text = String::from_utf8(answer.body).expect("utf-8 metrics");
    (
        family(&text, "starling_p2p_bytes_total", "direction=\"in\""),
        family(&text, "starling_p2p_bytes_total", "direction=\"out\""),
        family(&text, "starling_gossip_messages_total", ""),
        family(&text, "starling_gossip_bytes_total", "direction=\"received\""),
    )
}

/// How many of `p`'s items lie in `node`'s shard at `depth` (all of them when whole).
fn items_of(node: &Node, p: &TestProject, depth: u8) -> usize {
    use starling_protocol::shard::Shard;
    let id: starling_protocol::NodeId = node.status()["node_id"].as_str().unwrap().parse().unwrap();
    let mine = Shard::of_node(&id, depth);
    let Ok(starling_protocol::Envelope::Batch(b)) =
        starling_protocol::Envelope::from_bytes(&p.batch)
    else {
        panic!("a batch")
    };
    let b = b.verify().unwrap();
    b.items.iter().filter(|w| Shard::of_key(&w.id(&p.id), depth) == mine).count()
}

#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn mesh_traffic_bench() {
    let count: usize =
        std::env::var("STARLING_TRAFFIC_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let depth: u8 = std::env::var("STARLING_TRAFFIC_SHARD_DEPTH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let items = 20 * count;
    let p = project_split(61, "traffic", items, 20_000, depth);
    let base = trusted(&p);
    let first = Node::start(2_000, &base);
    let args = [base.clone(), vec!["--bootstrap".to_string(), first.addr()]].concat();
    let mut nodes = vec![first];
    for _ in 1..count {
        nodes.push(Node::start(2_000, &args));
    }
    let live = |nodes: &[Node]| -> Vec<u64> {
        nodes.iter().map(|n| num(&n.status(), &["live_peers"])).collect()
    };
    wait_for_or(
        "every node to see three quarters of the others",
        Duration::from_secs(60),
        || live(&nodes).iter().all(|l| 4 * *l as usize >= 3 * (count - 1)),
        || {
            let stats: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let s = n.status();
                    format!(
                        "{}/{} acc {} ign {} rej {}",
                        num(&s, &["live_peers"]),
                        num(&s, &["connected_peers"]),
                        num(&s, &["net", "gossip_accepted"]),
                        num(&s, &["net", "gossip_ignored"]),
                        num(&s, &["net", "gossip_rejected"])
                    )
                })
                .collect();
            format!("live/connected peers and gossip: {stats:?}")
        },
    );
    let before: Vec<_> = nodes.iter().map(traffic).collect();
    let start = Instant::now();
    nodes[0].publish(&p.manifest);
    nodes[0].publish(&p.batch);
    let want: Vec<usize> = nodes.iter().map(|n| items_of(n, &p, depth)).collect();
    wait_for_or(
        "every item done on every node of its shard",
        Duration::from_secs(600),
        || {
            nodes
                .iter()
                .zip(&want)
                .all(|(n, w)| num(&n.status(), &["items", "done"]) as usize == *w)
        },
        || dump(&nodes[..3]),
    );
    let secs = start.elapsed().as_secs_f64();
    let after: Vec<_> = nodes.iter().map(traffic).collect();
    type Rates = (f64, f64, f64, f64);
    let per_node: Vec<Rates> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            ((a.0 - b.0) / secs, (a.1 - b.1) / secs, (a.2 - b.2) / secs, (a.3 - b.3) / secs)
        })
        .collect();
    let mean = |f: fn(&Rates) -> f64| per_node.iter().map(f).sum::<f64>() / count as f64;
    let max = |f: fn(&Rates) -> f64| per_node.iter().map(f).fold(0.0, f64::max);
    println!(
        "{count} nodes, {items} items, shard depth {depth}, in {secs:.1} s: per node {:.1} KB/s \
         in (max {:.1}), {:.1} KB/s out (max {:.1}), {:.0} gossip messages/s received (max \
         {:.0}), {:.1} KB/s gossip data received (max {:.1})",
        mean(|t| t.0) / 1e3,
        max(|t| t.0) / 1e3,
        mean(|t| t.1) / 1e3,
        max(|t| t.1) / 1e3,
        mean(|t| t.2),
        max(|t| t.2),
        mean(|t| t.3) / 1e3,
        max(|t| t.3) / 1e3,
    );
    assert!(per_node.iter().all(|t| t.0 > 0.0), "every node received something");
}
