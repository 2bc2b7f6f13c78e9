//! Mesh benchmark (not a test): five real `starling up` processes on loopback with zero-cost
//! work. Reports items/s through the mesh, publish-to-claim latency p50/p99 (observed by
//! polling one node's open items every 20 ms, so it includes up to that much polling delay) and
//! the idle RSS of one node.
//!
//! `cargo bench -p starling-node --features test-runner --bench mesh`
//! (`STARLING_BENCH_ITEMS=N` to change the 2000 items).

#[path = "../tests/e2e/common.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;

/// Items published, unless `STARLING_BENCH_ITEMS` says otherwise.
const ITEMS_DEFAULT: usize = 2_000;

fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let items: usize = std::env::var("STARLING_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITEMS_DEFAULT);
    let p = project(41, "bench", items, 10_000);
    let base = vec![
        "--listen".to_string(),
        "/ip4/127.0.0.1/tcp/0".into(),
        "--trust".into(),
        p.owner.public().to_hex(),
        "--capacity".into(),
        "16".into(),
    ];
    let first = Node::start(0, &base);
    std::thread::sleep(Duration::from_secs(5));
    let pid = first.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let idle = rss_kib(pid);
    let boot = first.addr();
    let mut nodes = vec![first];
    for _ in 0..4 {
        let mut args = base.clone();
        args.extend(["--bootstrap".to_string(), boot.clone()]);
        nodes.push(Node::start(0, &args));
    }
    wait_for("live peers", Duration::from_secs(60), || {
        nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == 4)
    });
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    nodes[0].publish(&p.manifest);
    nodes[0].publish(&p.batch);
    // Only open items are listed, so the polling itself stays cheap for the node.
    let mut seen_open: HashSet<String> = HashSet::new();
    let mut first_claim: HashMap<String, Duration> = HashMap::new();
    while num(&nodes[0].status(), &["items", "done"]) < items as u64 {
        let now = start.elapsed();
        let open: Vec<serde_json::Value> =
            nodes[0].api.get_json("/items?state=open").unwrap_or_default();
        let open: HashSet<String> =
            open.iter().filter_map(|i| i["id"].as_str().map(str::to_owned)).collect();
        for id in seen_open.difference(&open) {
            first_claim.entry(id.clone()).or_insert(now);
        }
        seen_open.extend(open);
        assert!(now < Duration::from_secs(600), "mesh did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    let mut lat: Vec<Duration> = first_claim.into_values().collect();
    lat.sort();
    let pct =
        |q: f64| lat.get(((lat.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    let executions: u64 = nodes.iter().map(|n| num(&n.status(), &["runner", "completed"])).sum();
    println!("items                  {items} through 5 nodes in {took:.2?}");
    println!("throughput             {:.1} items/s", items as f64 / took.as_secs_f64());
    println!("publish-to-claim p50   {:?}", pct(0.5));
    println!("publish-to-claim p99   {:?}", pct(0.99));
    println!("duplicate executions   {}", executions.saturating_sub(items as u64));
    match idle {
        Some(kib) => println!("idle RSS (one node)    {:.1} MiB", kib as f64 / 1024.0),
        None => println!("idle RSS (one node)    unavailable"),
    }
}
