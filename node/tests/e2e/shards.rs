//! Real nodes on a project their owner split in two: each node takes in and works only its
//! own shard's items, hears only its shard's heartbeats once it knows the split, learns the
//! whole project's progress from the shards' signed counts, and shows its shard and its size
//! in `/projects` and `/metrics`; merged back, every node learns the other half's done items.

use std::collections::BTreeMap;
use std::time::Duration;

use starling_node::views::ProjectInfo;
use starling_protocol::shard::Shard;
use starling_protocol::{Envelope, ItemId, Keypair, ProjectManifest, Signed};

use crate::common::*;

/// Node keys whose shards at `depth` are `0, 1, 0, 1, …`: `per_shard` in each of the
/// `2^depth` shards, in turn.
fn keys_across_shards(depth: u8, per_shard: usize) -> Vec<Keypair> {
    let shards = 1usize << depth;
    let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); shards];
    for seed in 5_000.. {
        let k = starling_protocol::engine::test_keypair(seed);
        let s = Shard::of_node(&k.node_id(), depth).prefix as usize;
        if by_shard[s].len() < per_shard {
            by_shard[s].push(seed);
        }
        if by_shard.iter().all(|v| v.len() == per_shard) {
            break;
        }
    }
    let seeds: Vec<u64> = (0..per_shard).flat_map(|i| by_shard.iter().map(move |v| v[i])).collect();
    seeds.into_iter().map(starling_protocol::engine::test_keypair).collect()
}

/// The item ids of a test project's batch.
fn batch_ids(p: &TestProject) -> Vec<ItemId> {
    let Ok(Envelope::Batch(b)) = Envelope::from_bytes(&p.batch) else { panic!("a batch") };
    let b = b.verify().unwrap();
    b.items.iter().map(|w| w.id(&p.id)).collect()
}

fn project_info(n: &Node, p: &TestProject) -> Option<ProjectInfo> {
    let list: Vec<ProjectInfo> = n.api.get_json("/projects").ok()?;
    list.into_iter().find(|x| x.id == p.id.to_hex())
}

fn metrics(n: &Node) -> String {
    let answer = n.api.request("GET", "/metrics", &[], None).expect("metrics");
    String::from_utf8(answer.body).expect("utf-8 metrics")
}

#[test]
fn nodes_of_a_split_project_work_their_own_shard_and_hear_only_its_members() {
    const DEPTH: u8 = 1;
    const PER_SHARD: usize = 3;
    const ITEMS: usize = 160;
    let keys = keys_across_shards(DEPTH, PER_SHARD);
    let p = project_split(71, "shards", ITEMS, 3_000, DEPTH);
    let ids = batch_ids(&p);
    let mut per_shard: BTreeMap<Shard, usize> = BTreeMap::new();
    for id in &ids {
        *per_shard.entry(Shard::of_key(id, DEPTH)).or_default() += 1;
    }
    assert_eq!(per_shard.len(), 2, "both shards have items: {per_shard:?}");

    let trust = trusted(&p);
    let first = Node::start_keyed(100, &keys[0], &trust);
    let args = [trust.clone(), vec!["--bootstrap".to_string(), first.addr()]].concat();
    let mut nodes = vec![first];
    for k in &keys[1..] {
        nodes.push(Node::start_keyed(100, k, &args));
    }
    let shard_of = |i: usize| Shard::of_node(&keys[i].node_id(), DEPTH);
    // Before any project is known every heartbeat goes on the mesh-wide topic.
    meet_and_publish(&nodes, &p.manifest, &p.batch);

    // Each node's shard's items end done in its view, and it never takes in the others'.
    let finished = |i: usize, node: &Node| {
        let Some(info) = project_info(node, &p) else { return false };
        let c = info.items;
        c.open == 0 && c.held == 0 && c.done as usize == per_shard[&shard_of(i)]
    };
    wait_for_or(
        "each node's shard done in its view",
        Duration::from_secs(120),
        || nodes.iter().enumerate().all(|(i, node)| finished(i, node)),
        || dump(&nodes),
    );
    for (i, node) in nodes.iter().enumerate() {
        let states = item_states(node);
        assert_eq!(states.len(), per_shard[&shard_of(i)], "node {i} holds other shards' items");
        for (id, ..) in &states {
            let id: ItemId = id.parse().unwrap();
            assert_eq!(Shard::of_key(&id, DEPTH), shard_of(i), "node {i} took in {id:?}");
        }
    }
    // Every item ran once, in its shard.
    let executions: u64 = nodes.iter().map(|n| num(&n.status(), &["runner", "completed"])).sum();
    assert_eq!(executions, ITEMS as u64, "duplicate or missing executions");

    // Heartbeats now go on the shard topics: the other shard's nodes drop out of each node's
    // peers once their last heartbeat there runs out (3 s in the tests' timers).
    wait_for_or(
        "each node to count only its shard's members live",
        Duration::from_secs(60),
        || nodes.iter().all(|node| num(&node.status(), &["live_peers"]) as usize == PER_SHARD - 1),
        || {
            let shards: Vec<String> = nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let s = node.status();
                    let info = project_info(node, &p).and_then(|x| x.shard);
                    format!(
                        "node {i} in {}: live {} connected {} {info:?}",
                        shard_of(i),
                        num(&s, &["live_peers"]),
                        num(&s, &["connected_peers"]),
                    )
                })
                .collect();
            format!("{}\n{}", shards.join("\n"), dump(&nodes))
        },
    );
    // Each shard's signed count (one every 30 s) tells every node how far the whole project is.
    let whole = |node: &Node| {
        project_info(node, &p)
            .and_then(|x| x.shard)
            .is_some_and(|s| s.project_items.done as usize == ITEMS && s.shards_heard == 2)
    };
    wait_for_or(
        "each node to add up the whole project from the shards' counts",
        Duration::from_secs(100),
        || nodes.iter().all(whole),
        || format!("{:?}", nodes.iter().map(|n| project_info(n, &p)).collect::<Vec<_>>()),
    );
    for (i, node) in nodes.iter().enumerate() {
        let info = project_info(node, &p).unwrap();
        let s = info.shard.expect("a split project shows the node's shard");
        assert_eq!(s.name, shard_of(i).name());
        assert_eq!((s.depth, s.members), (DEPTH, PER_SHARD));
        assert!(s.topic_peers >= 1, "node {i} has no peer in its shard's topic: {s:?}");
        let text = metrics(node);
        let members = format!("shard=\"{}\"}} {PER_SHARD}", s.name);
        assert!(
            text.lines().any(|l| l.starts_with("starling_shard_members{") && l.ends_with(&members)),
            "node {i}: no shard_members line ending {members:?}"
        );
        let topic = format!("topic=\"starling/v1/shard/{}/{}\"", p.id.to_hex(), s.name);
        assert!(
            text.lines()
                .any(|l| l.starts_with("starling_gossip_topic_peers{") && l.contains(&topic)),
            "node {i} is not in its shard's topic"
        );
        assert!(text.contains("starling_gossip_bytes_total{direction=\"received\"}"));
        let done = format!("state=\"done\"}} {ITEMS}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("starling_project_progress_items{") && l.ends_with(&done)),
            "node {i}: the project's progress is not in its metrics"
        );
    }
    let text = cli(&nodes[0], &["status"]);
    let want = format!("shard     shards: shard {} of 2, {PER_SHARD} members live", shard_of(0));
    assert!(text.contains(&want), "no {want:?} in:\n{text}");
    assert!(text.contains(&format!("the project {ITEMS} done")), "{text}");

    // The owner merges the halves back (version 2, whole): each node learns the other half's
    // items and their done states from that half's members, and runs none of them again.
    let Ok(Envelope::Manifest(v1)) = Envelope::from_bytes(&p.manifest) else { panic!() };
    let v2 = ProjectManifest { version: 2, shard_depth: 0, ..v1.verify().unwrap() };
    let v2 = Envelope::Manifest(Signed::sign(&p.owner, &v2)).to_bytes();
    assert_eq!(nodes[0].publish(&v2)["outcome"], "applied");
    wait_for_or(
        "every node to hold the whole project, done, after the merge",
        Duration::from_secs(90),
        || {
            nodes.iter().all(|node| {
                project_info(node, &p)
                    .is_some_and(|x| x.shard.is_none() && x.items.done as usize == ITEMS)
            })
        },
        || {
            format!(
                "{:?}",
                nodes.iter().map(|n| project_info(n, &p).map(|x| x.items)).collect::<Vec<_>>()
            )
        },
    );
    let executions: u64 = nodes.iter().map(|n| num(&n.status(), &["runner", "completed"])).sum();
    assert_eq!(executions, ITEMS as u64, "an item ran again after the merge");
    for (i, node) in nodes.iter().enumerate() {
        let log = std::fs::read_to_string(node.dir.join("node.log")).unwrap_or_default();
        assert!(log.contains("merged shards"), "node {i} did no merge sync");
    }
}
