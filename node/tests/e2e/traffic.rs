//! What coordination costs each node in a mesh of real processes: libp2p bytes and gossip
//! messages per node per second while one project is worked, read from `/metrics`. A benchmark
//! (ignored, run by hand): the figure issue 16's neighbourhoods are measured against.
//!
//! `cargo test -p starling-node --test e2e -- --ignored --nocapture mesh_traffic_bench`
//! (`STARLING_TRAFFIC_NODES=N` for another mesh size; 20 by default).

use std::time::{Duration, Instant};

use crate::common::*;

/// Sums the `/metrics` lines of one family whose labels contain `label` (all if empty).
fn family(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// (bytes in, bytes out, gossip messages received) of one node now.
fn traffic(n: &Node) -> (f64, f64, f64) {
    let answer = n.api.request("GET", "/metrics", &[], None).expect("metrics");
    let text = String::from_utf8(answer.body).expect("utf-8 metrics");
    (
        family(&text, "starling_p2p_bytes_total", "direction=\"in\""),
        family(&text, "starling_p2p_bytes_total", "direction=\"out\""),
        family(&text, "starling_gossip_messages_total", ""),
    )
}

#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn mesh_traffic_bench() {
    let count: usize =
        std::env::var("STARLING_TRAFFIC_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let items = 20 * count;
    let p = project(61, "traffic", items, 20_000);
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
    wait_for_or(
        "every item done on every node",
        Duration::from_secs(600),
        || nodes.iter().all(|n| num(&n.status(), &["items", "done"]) as usize == items),
        || dump(&nodes[..3]),
    );
    let secs = start.elapsed().as_secs_f64();
    let after: Vec<_> = nodes.iter().map(traffic).collect();
    let per_node: Vec<(f64, f64, f64)> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| ((a.0 - b.0) / secs, (a.1 - b.1) / secs, (a.2 - b.2) / secs))
        .collect();
    let mean = |f: fn(&(f64, f64, f64)) -> f64| per_node.iter().map(f).sum::<f64>() / count as f64;
    let max = |f: fn(&(f64, f64, f64)) -> f64| per_node.iter().map(f).fold(0.0, f64::max);
    println!(
        "{count} nodes, {items} items in {secs:.1} s: per node {:.1} KB/s in (max {:.1}), \
         {:.1} KB/s out (max {:.1}), {:.0} gossip messages/s received (max {:.0})",
        mean(|t| t.0) / 1e3,
        max(|t| t.0) / 1e3,
        mean(|t| t.1) / 1e3,
        max(|t| t.1) / 1e3,
        mean(|t| t.2),
        max(|t| t.2),
    );
    assert!(per_node.iter().all(|t| t.0 > 0.0), "every node received something");
}
