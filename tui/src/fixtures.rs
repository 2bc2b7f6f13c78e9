//! Fixture data for the dashboard's tests: one busy node seen at a fixed time, so every
//! snapshot test draws the same screen on every machine.

use std::collections::BTreeMap;

use starling_protocol::engine::VerifyCounts;
use starling_protocol::{EngineStats, ItemCounts, Reject};

use crate::api::{
    Caps, ChecksView, ClaimInfo, DiskStats, FetchStats, HostInfo, KindCounts, LogLine, MarkedPeer,
    NetStats, PeerInfo, ProjectInfo, RelayView, RunnerStats, SeedInfo, SeedingView, ShardInfo,
    StatusView, UrlCounts, WorkView,
};
use crate::app::{Action, App, Snapshot};

/// The node's clock in every fixture (2025-06-15 15:06:40 UTC).
pub(crate) const NOW_MS: u64 = 1_750_000_000_000;
pub(crate) const BASE: &str = "http://127.0.0.1:7411";
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn hex(seed: u8) -> String {
    (0..32u8)
        .map(|i| format!("{:02x}", seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7))))
        .collect()
}

pub(crate) fn status() -> StatusView {
    let mut rejected = BTreeMap::new();
    rejected.insert(Reject::UntrustedProject, 12);
    rejected.insert(Reject::Duplicate, 41);
    rejected.insert(Reject::Stale, 3);
    rejected.insert(Reject::BadSignature, 1);
    let mut by_status = BTreeMap::new();
    by_status.insert("200".to_owned(), 1532);
    by_status.insert("404".to_owned(), 17);
    by_status.insert("429".to_owned(), 4);
    by_status.insert("timeout".to_owned(), 2);
    StatusView {
        node_id: hex(1),
        peer_id: "12D3KooWQx9SmJ3Y7sF4vWnHc8ZbP2rT5kLdE6aGuN1yBq7pXr4M".to_owned(),
        version: "0.1.0".to_owned(),
        uptime_ms: 3_725_000,
        listen: vec![
            "/ip4/0.0.0.0/tcp/4001".to_owned(),
            "/ip4/0.0.0.0/udp/4001/quic-v1".to_owned(),
        ],
        connected_peers: 4,
        live_peers: 5,
        roles: 3,
        paused: false,
        capacity: 4,
        over_disk_cap: false,
        projects: 2,
        items: ItemCounts { open: 210, held: 6, done: 276, failed: 8 },
        holding: 3,
        engine: EngineStats {
            accepted: 2210,
            lane_hosts_over: 0,
            reshards: 0,
            rejected,
            claims: 120,
            renewals: 340,
            started: 118,
            yielded: 2,
            withdrawn: 0,
            finished: 110,
            failed: 3,
            gave_back: 0,
            proofs: 57,
            unproven: 1,
            duties_dropped: 0,
            full: 0,
            overturned: 3,
            marked: 1,
        },
        runner: RunnerStats { started: 118, completed: 113, cancelled: 2 },
        net: NetStats {
            gossip_received: 2400,
            gossip_accepted: 2210,
            gossip_rejected: 57,
            gossip_ignored: 130,
            gossip_undecodable: 3,
            published: 470,
            sync_requests: 18,
            sync_retries: 1,
            sync_responses: 17,
            sync_served: 22,
            sync_applied: 96,
            blob_penalties: 0,
            gossip_bytes_received: 18_400_000,
            gossip_bytes_published: 2_100_000,
        },
        store_error: None,
        now_ms: NOW_MS,
        fetch: FetchStats {
            by_status,
            bytes_down: 734 * MIB,
            rate_limit_waits: 88,
            rate_per_s: 3.2,
            rate_limit_per_s: 4.0,
        },
        disk: DiskStats { results_bytes: 3 * GIB / 2, store_bytes: 12 * MIB },
        caps: Caps {
            capacity: Some(4),
            bandwidth_bytes_per_s: None,
            disk_bytes_max: Some(5 * GIB),
            reset: false,
        },
        torrents: Default::default(),
        health: Default::default(),
        lifetime: Default::default(),
        following: Vec::new(),
        checks: vec![
            ChecksView {
                project: hex(40),
                name: "example-com-2025".to_owned(),
                sample_milli: 100,
                strikes: 3,
                results: VerifyCounts {
                    verified: 23,
                    pending: 2,
                    disputed: 1,
                    overturned: 3,
                    split: 0,
                },
                marked: vec![MarkedPeer { node: hex(13), strikes: 3 }],
            },
            ChecksView {
                project: hex(50),
                name: "gov-pdfs-with-a-rather-long-name".to_owned(),
                sample_milli: 0,
                strikes: 3,
                ..ChecksView::default()
            },
        ],
    }
}

pub(crate) fn peers() -> Vec<PeerInfo> {
    let peer =
        |n: u8, connected: bool, live: bool, score: Option<f64>, free: Option<u16>| PeerInfo {
            peer_id: format!("12D3KooWPeer{n}xY7sF4vWnHc8ZbP2rT5kLdE6aGu{n:02}q7pXr{n}M"),
            node_id: Some(hex(10 + n)),
            connected,
            live,
            score,
            via_relay: n == 4,
            synced: u64::from(n) * 3,
            free,
            capacity: free.map(|_| 4),
        };
    vec![
        peer(1, true, true, Some(12.5), Some(1)),
        peer(2, true, true, Some(3.0), Some(4)),
        peer(3, true, false, Some(-2.25), None),
        peer(4, true, true, Some(0.0), Some(0)),
        PeerInfo {
            peer_id: "12D3KooWRsaKey".to_owned(),
            node_id: None,
            connected: false,
            live: true,
            score: None,
            via_relay: false,
            synced: 0,
            free: Some(2),
            capacity: Some(8),
        },
    ]
}

pub(crate) fn projects() -> Vec<ProjectInfo> {
    vec![
        ProjectInfo {
            id: hex(40),
            name: "example-com-2025".to_owned(),
            version: 3,
            owner: hex(41),
            lease_ms: 300_000,
            replication: 2,
            items: ItemCounts { open: 160, held: 485, done: 260, failed: 5 },
            trusted: true,
            subscribed: true,
            priority: 2,
            urls: UrlCounts { ok: 1_480, refused: 12, disallowed: 31, transient: 0 },
            // Two copies of each of the 260 finished chunks' results.
            by_kind: Some(KindCounts {
                crawl: ItemCounts { open: 120, held: 5, done: 260, failed: 5 },
                seed: ItemCounts { open: 40, held: 480, done: 0, failed: 0 },
                relay: ItemCounts::default(),
            }),
            rate_scope: "mesh".to_owned(),
            rate_per_s: 2.0,
            lanes: 1,
            // Split for a large mesh: this node takes in one of its eight shards.
            shard: Some(ShardInfo {
                name: "3/5".to_owned(),
                depth: 3,
                members: 12,
                topic_peers: 9,
                project_items: ItemCounts { open: 960, held: 40, done: 2_080, failed: 40 },
                shards_heard: 7,
            }),
        },
        ProjectInfo {
            id: hex(50),
            name: "gov-pdfs-with-a-rather-long-name".to_owned(),
            version: 1,
            owner: hex(51),
            lease_ms: 600_000,
            replication: 3,
            items: ItemCounts { open: 30, held: 1, done: 16, failed: 3 },
            trusted: false,
            subscribed: false,
            priority: 0,
            urls: UrlCounts::default(),
            by_kind: Some(KindCounts {
                crawl: ItemCounts { open: 30, held: 1, done: 16, failed: 3 },
                ..KindCounts::default()
            }),
            rate_scope: "node".to_owned(),
            rate_per_s: 0.5,
            lanes: 1,
            shard: None,
        },
    ]
}

pub(crate) fn work() -> WorkView {
    let claim = |n: u8, kind: &str, epoch: u32, left_ms: u64, started: bool| ClaimInfo {
        item: hex(60 + n),
        project: if n == 2 { hex(50) } else { hex(40) },
        kind: kind.to_owned(),
        epoch,
        lease_until_ms: NOW_MS + left_ms,
        started,
    };
    WorkView {
        now_ms: NOW_MS,
        claims: vec![
            claim(1, "crawl", 1, 42_000, true),
            claim(2, "crawl", 2, 185_000, true),
            claim(3, "seed", 1, 290_000, false),
        ],
        hosts: vec![
            HostInfo {
                host: "www.example.com".to_owned(),
                state: "ok".to_owned(),
                until_ms: None,
                inflight: 2,
                rate_per_s: 2.0,
                refusals: 0,
                sent_per_s: 1.8,
                lane: Some("held".to_owned()),
                cooldown_until_ms: None,
            },
            HostInfo {
                host: "cdn.example.com:8443".to_owned(),
                state: "backing_off".to_owned(),
                until_ms: Some(NOW_MS + 12_000),
                inflight: 0,
                rate_per_s: 1.0,
                refusals: 3,
                sent_per_s: 0.2,
                lane: Some("waiting".to_owned()),
                cooldown_until_ms: Some(NOW_MS + 20_000),
            },
            HostInfo {
                host: "files.gov.example".to_owned(),
                state: "parked".to_owned(),
                until_ms: Some(NOW_MS + 1_800_000),
                inflight: 0,
                rate_per_s: 0.5,
                refusals: 9,
                sent_per_s: 0.0,
                lane: None,
                cooldown_until_ms: None,
            },
        ],
    }
}

pub(crate) fn seeding() -> SeedingView {
    let duty = |n: u8, size: u64, state: &str| SeedInfo {
        item: hex(70 + n),
        digest: hex(80 + n),
        size,
        state: state.to_owned(),
    };
    SeedingView {
        enabled: true,
        capacity: 8,
        duties: vec![
            duty(1, 48 * MIB, "stored"),
            duty(2, 1200 * 1024, "fetching"),
            duty(3, 7 * MIB, "missing"),
        ],
        blobs: 42,
        bytes_stored: 2 * GIB + 300 * MIB,
        bytes_served: 5 * GIB,
        bytes_fetched: 900 * MIB,
        chunks_rejected: 1,
    }
}

pub(crate) fn relay() -> RelayView {
    RelayView {
        enabled: true,
        reachability: "public".to_owned(),
        slots_offered: 16,
        slots_held: 5,
        reservations: 23,
        circuits: 71,
        circuits_open: 4,
        refused: 2,
        relayed_via: None,
        reserved: 0,
        circuits_in: 0,
        relayed_bytes: 310 * MIB,
    }
}

pub(crate) fn log() -> Vec<LogLine> {
    let line = |s: u64, level: &str, target: &str, message: &str| LogLine {
        at_ms: NOW_MS - 60_000 + s * 1000,
        level: level.to_owned(),
        target: target.to_owned(),
        message: message.to_owned(),
    };
    vec![
        line(1, "INFO", "starling::node", "listening on /ip4/0.0.0.0/tcp/4001"),
        line(2, "DEBUG", "starling::net", "connected peer=…Xr1M"),
        line(5, "INFO", "starling::engine", "claimed item=3c4b epoch=1"),
        line(
            9,
            "WARN",
            "starling::crawl",
            "host cdn.example.com:8443 answered 429; backing off 12s",
        ),
        line(14, "TRACE", "starling::net", "gossip accepted kind=presence"),
        line(20, "INFO", "starling::engine", "finished item=3c4b digest=9af0 size=48.0 MiB"),
        line(
            31,
            "ERROR",
            "starling::crawl",
            "host files.gov.example refused 9 times; parked for 30m",
        ),
        line(42, "INFO", "starling::seed", "stored blob digest=77d1 from 2 peers"),
        line(55, "DEBUG", "starling::engine", "renewed lease item=5e2a until +5m"),
    ]
}

pub(crate) fn snapshot() -> Snapshot {
    Snapshot {
        base: BASE.to_owned(),
        status: status(),
        peers: peers(),
        projects: projects(),
        work: work(),
        seeding: Some(seeding()),
        relay: Some(relay()),
        log: log(),
    }
}

/// An app that has had a few polls of the fixture node, so the sparkline has a history.
pub(crate) fn app() -> App {
    let mut app = App::new(BASE);
    let rates = [0.0, 0.8, 1.5, 2.2, 3.9, 4.0, 3.6, 2.9, 3.1, 3.4, 3.8, 2.5, 3.0, 3.2];
    for rate in rates {
        let mut snap = snapshot();
        snap.status.fetch.rate_per_s = rate;
        assert!(app.update(Action::Snapshot(Box::new(snap))).command.is_none());
    }
    app
}
