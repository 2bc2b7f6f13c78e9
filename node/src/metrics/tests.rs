//! The rendered text itself: both formats, names and types, and the counting rules.

use std::collections::BTreeSet;

use super::*;
use crate::views::{
    Caps, DiskStats, FetchStats, HealthView, NetStats, PeerInfo, ProjectInfo, RelayView,
    RunnerStats, SeedingView, StatusView, TorrentStats,
};
use starling_protocol::{ItemId, Reject, WorkKind};

fn status() -> StatusView {
    StatusView {
        node_id: "ab".repeat(32),
        peer_id: "12D3KooW".into(),
        version: "0.1.0".into(),
        uptime_ms: 2_500,
        listen: Vec::new(),
        connected_peers: 0,
        live_peers: 0,
        roles: 3,
        paused: false,
        capacity: 4,
        over_disk_cap: false,
        projects: 0,
        items: Default::default(),
        holding: 0,
        engine: Default::default(),
        runner: RunnerStats::default(),
        net: NetStats::default(),
        store_error: None,
        now_ms: 1_700_000_002_500,
        fetch: FetchStats::default(),
        disk: DiskStats::default(),
        caps: Caps::default(),
        torrents: TorrentStats::default(),
        health: HealthView {
            ok: true,
            faults: Vec::new(),
            clock: Default::default(),
            gave_back: 0,
        },
        lifetime: Default::default(),
        following: Vec::new(),
        checks: Vec::new(),
    }
}

fn snapshot(status: StatusView) -> Snapshot {
    Snapshot {
        status,
        peers: Vec::new(),
        projects: Vec::new(),
        seeding: SeedingView::default(),
        relay: RelayView::default(),
        actor: ActorMetrics::default(),
    }
}

fn project_info(name: &str) -> ProjectInfo {
    ProjectInfo {
        id: "cd".repeat(32),
        name: name.into(),
        version: 1,
        owner: "ef".repeat(32),
        lease_ms: 1000,
        replication: 1,
        items: Default::default(),
        trusted: true,
        subscribed: true,
        priority: 0,
        urls: Default::default(),
        by_kind: None,
        rate_scope: "mesh".into(),
        rate_per_s: 1.0,
        lanes: 1,
        shard: None,
    }
}

fn text(s: &Snapshot, f: Format) -> String {
    render(s, None, f)
}

/// Value of the sample line starting with `key ` (name and labels as written).
fn value(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {key} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Checks the classic format's rules: HELP then TYPE before each family's samples, counters
/// typed under their `_total` name, every sample named after the family it follows.
fn check_classic(text: &str) {
    let mut family: Option<(String, String)> = None;
    let mut seen = BTreeSet::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            let ty = lines.next().unwrap_or_else(|| panic!("no TYPE after {l}"));
            let (tname, kind) = ty
                .strip_prefix("# TYPE ")
                .and_then(|t| t.split_once(' '))
                .unwrap_or_else(|| panic!("{ty:?} is not a TYPE line"));
            assert_eq!(tname, name, "HELP and TYPE name one family");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{ty}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "classic counter {name} must end in _total");
            }
            assert!(seen.insert(name.clone()), "{name} twice");
            family = Some((name, kind.to_owned()));
            continue;
        }
        assert!(!l.starts_with('#'), "stray comment {l}");
        let (name, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {l}"));
        let sample = l.split(['{', ' ']).next().unwrap();
        let ok = match kind.as_str() {
            "histogram" => {
                ["_bucket", "_sum", "_count"].iter().any(|s| sample.strip_suffix(s) == Some(name))
            }
            _ => sample == name,
        };
        assert!(ok, "sample {sample} under family {name} ({kind})");
        let v = l.rsplit_once(' ').unwrap().1;
        assert!(!v.starts_with("-0") || v.parse::<f64>().unwrap() != 0.0, "negative zero: {l}");
    }
}

#[test]
fn classic_format_types_counters_under_their_total_name() {
    let mut st = status();
    st.engine.finished = 6;
    let t = text(&snapshot(st), Format::Classic);
    check_classic(&t);
    assert!(!t.contains("# EOF"));
    assert!(t.contains("# TYPE starling_items_done_total counter\n"), "{t}");
    assert_eq!(value(&t, "starling_items_done_total"), 6.0);
    assert!(t.contains("# TYPE starling_build_info gauge\n"), "{t}");
    assert!(t.contains("starling_build_info{version=\"0.1.0\",commit=\""), "{t}");
    assert_eq!(value(&t, "starling_uptime_seconds"), 2.5);
    assert_eq!(value(&t, "starling_start_time_seconds"), 1_700_000_000.0);
}

#[test]
fn openmetrics_names_families_without_suffix_and_ends_with_eof() {
    let t = text(&snapshot(status()), Format::OpenMetrics);
    assert!(t.ends_with("# EOF\n"), "{t}");
    assert!(t.contains("# TYPE starling_items_done counter\n"), "{t}");
    assert!(t.contains("\nstarling_items_done_total 0\n"), "{t}");
    assert!(t.contains("# TYPE starling_build info\n"), "{t}");
    assert!(t.contains("# TYPE starling_work_duration_seconds histogram\n"), "{t}");
    for l in t.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = l.split(' ').nth(2).unwrap();
        assert!(!name.ends_with("_total") && !name.ends_with("_info"), "{l}");
    }
}

#[test]
fn family_names_are_unique_and_bare() {
    let fams = families(&snapshot(status()), None);
    let mut names = BTreeSet::new();
    for f in &fams.0 {
        assert!(names.insert(f.name), "{} twice", f.name);
        assert!(
            f.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{}",
            f.name
        );
        assert!(!f.name.ends_with("_total") && !f.name.ends_with("_info"), "{}", f.name);
        assert!(!f.help.is_empty());
    }
}

#[test]
fn fixed_label_families_have_every_series_from_the_start() {
    let t = text(&snapshot(status()), Format::Classic);
    for key in [
        "starling_fetches_total{class=\"2xx\"}",
        "starling_fetches_total{class=\"error\"}",
        "starling_urls_total{outcome=\"ok\"}",
        "starling_gossip_messages_total{verdict=\"undecodable\"}",
        "starling_messages_rejected_total{reason=\"fenced\",penalized=\"true\"}",
        "starling_messages_rejected_total{reason=\"stale\",penalized=\"false\"}",
        "starling_messages_duplicate_total",
        "starling_p2p_connections{transport=\"quic\",direction=\"in\"}",
        "starling_p2p_bytes_total{transport=\"relay\",direction=\"out\"}",
        "starling_items_by_kind{kind=\"crawl\",state=\"open\"}",
        "starling_holding_by_kind{kind=\"seed\"}",
        "starling_gossip_peers_by_score{band=\"greylisted\"}",
        "starling_seed_duties{state=\"fetching\"}",
        "starling_torrents{state=\"seeding\"}",
        "starling_work_duration_seconds_count{kind=\"crawl\",outcome=\"done\"}",
        "starling_sync_applied_total",
    ] {
        assert_eq!(value(&t, key), 0.0, "{key}");
    }
    // Open label sets still carry their help and type.
    assert!(t.contains("# TYPE starling_fetch_statuses_total counter\n"));
    assert!(t.contains("# TYPE starling_gossip_mesh_peers gauge\n"));
}

#[test]
fn no_negative_zero() {
    let mut st = status();
    st.fetch.rate_limit_per_s = -0.0;
    st.fetch.rate_per_s = -0.0;
    for f in [Format::Classic, Format::OpenMetrics] {
        let t = text(&snapshot(st.clone()), f);
        assert!(t.contains("\nstarling_fetch_rate_limit_per_second 0.0\n"), "{t}");
        assert!(!t.contains(" -0"), "{t}");
    }
}

#[test]
fn undecodable_gossip_is_not_also_counted_rejected() {
    let mut st = status();
    st.net.gossip_rejected = 5; // the actor counts the 2 undecodable ones here too
    st.net.gossip_undecodable = 2;
    let t = text(&snapshot(st), Format::Classic);
    assert_eq!(value(&t, "starling_gossip_messages_total{verdict=\"rejected\"}"), 3.0);
    assert_eq!(value(&t, "starling_gossip_messages_total{verdict=\"undecodable\"}"), 2.0);
}

#[test]
fn duplicates_are_counted_apart_from_rejections() {
    let mut st = status();
    st.engine.rejected.insert(Reject::Duplicate, 40);
    st.engine.rejected.insert(Reject::BadSignature, 1);
    let t = text(&snapshot(st), Format::Classic);
    assert_eq!(value(&t, "starling_messages_duplicate_total"), 40.0);
    assert_eq!(
        value(&t, "starling_messages_rejected_total{reason=\"bad_signature\",penalized=\"true\"}"),
        1.0
    );
    assert!(!t.contains("reason=\"duplicate\""), "{t}");
}

#[test]
fn fetches_are_classed_by_status() {
    let mut st = status();
    for (k, v) in [("200", 3), ("204", 1), ("404", 2), ("503", 1), ("timeout", 4), ("other", 1)] {
        st.fetch.by_status.insert(k.into(), v);
    }
    let t = text(&snapshot(st), Format::Classic);
    assert_eq!(value(&t, "starling_fetches_total{class=\"2xx\"}"), 4.0);
    assert_eq!(value(&t, "starling_fetches_total{class=\"4xx\"}"), 2.0);
    assert_eq!(value(&t, "starling_fetches_total{class=\"5xx\"}"), 1.0);
    assert_eq!(value(&t, "starling_fetches_total{class=\"error\"}"), 5.0);
    assert_eq!(value(&t, "starling_fetch_statuses_total{status=\"404\"}"), 2.0);
}

#[test]
fn histogram_buckets_are_cumulative_and_end_at_inf() {
    let mut snap = snapshot(status());
    let mut h = Hist::new(WORK_DURATION_BUCKETS);
    for v in [0.01, 0.3, 0.3, 7.0, 5000.0] {
        h.observe(v);
    }
    snap.actor.durations.insert(("crawl", "done"), h);
    for f in [Format::Classic, Format::OpenMetrics] {
        let t = text(&snap, f);
        let l = "kind=\"crawl\",outcome=\"done\"";
        assert_eq!(
            value(&t, &format!("starling_work_duration_seconds_bucket{{{l},le=\"0.1\"}}")),
            1.0
        );
        assert_eq!(
            value(&t, &format!("starling_work_duration_seconds_bucket{{{l},le=\"0.5\"}}")),
            3.0
        );
        assert_eq!(
            value(&t, &format!("starling_work_duration_seconds_bucket{{{l},le=\"10.0\"}}")),
            4.0
        );
        assert_eq!(
            value(&t, &format!("starling_work_duration_seconds_bucket{{{l},le=\"+Inf\"}}")),
            5.0
        );
        assert_eq!(value(&t, &format!("starling_work_duration_seconds_count{{{l}}}")), 5.0);
        assert!(
            (value(&t, &format!("starling_work_duration_seconds_sum{{{l}}}")) - 5007.61).abs()
                < 1e-9
        );
    }
}

#[test]
fn peer_scores_are_summarised_and_banded() {
    let mut snap = snapshot(status());
    for (i, score) in [Some(-100.0), Some(-20.0), Some(0.5), Some(3.0), None].iter().enumerate() {
        snap.peers.push(PeerInfo {
            peer_id: format!("p{i}"),
            node_id: None,
            connected: true,
            live: true,
            score: *score,
            via_relay: false,
            synced: 0,
            free: None,
            capacity: None,
        });
    }
    let t = text(&snap, Format::Classic);
    assert_eq!(value(&t, "starling_gossip_peer_score{stat=\"min\"}"), -100.0);
    assert_eq!(value(&t, "starling_gossip_peer_score{stat=\"median\"}"), -9.75);
    assert_eq!(value(&t, "starling_gossip_peer_score{stat=\"max\"}"), 3.0);
    assert_eq!(value(&t, "starling_gossip_peers_by_score{band=\"greylisted\"}"), 1.0);
    assert_eq!(value(&t, "starling_gossip_peers_by_score{band=\"below_gossip\"}"), 1.0);
    assert_eq!(value(&t, "starling_gossip_peers_by_score{band=\"non_negative\"}"), 2.0);
    // Without scored peers, the summary has no series rather than made-up zeros.
    let t = text(&snapshot(status()), Format::Classic);
    assert!(!t.contains("starling_gossip_peer_score{"), "{t}");
}

#[test]
fn label_values_and_help_are_escaped() {
    let mut snap = snapshot(status());
    snap.projects.push(project_info("a \"quoted\"\\name\nhere"));
    let t = text(&snap, Format::OpenMetrics);
    assert!(t.contains("name=\"a \\\"quoted\\\"\\\\name\\nhere\""), "{t}");
    // OpenMetrics escapes quotes in help; the classic format does not.
    assert!(t.contains("(penalized=\\\"true\\\""), "{t}");
    let t = text(&snap, Format::Classic);
    assert!(t.contains("(penalized=\"true\""), "{t}");
}

#[test]
fn negotiation_follows_accept() {
    use Format::*;
    let cases: &[(Option<&str>, Format)] = &[
        (None, Classic),
        (Some("*/*"), Classic),
        (Some("text/plain; version=0.0.4"), Classic),
        (Some("application/openmetrics-text"), OpenMetrics),
        (Some("application/openmetrics-text; version=1.0.0; charset=utf-8"), OpenMetrics),
        // What Prometheus 2.x sends.
        (
            Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;\
                 version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            ),
            OpenMetrics,
        ),
        (Some("application/openmetrics-text;q=0.1, text/plain;q=0.9"), Classic),
        (Some("application/openmetrics-text; version=9.9.9"), Classic),
        (Some("application/openmetrics-text;q=0"), Classic),
        (Some("application/json"), Classic),
    ];
    for (accept, want) in cases {
        assert_eq!(Format::negotiate(*accept), *want, "{accept:?}");
    }
}

#[test]
fn libp2p_bandwidth_is_summed_by_transport() {
    let text = "# TYPE libp2p_bandwidth_bytes counter\n\
        libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp/p2p\",direction=\"Inbound\"} 100\n\
        libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp/p2p\",direction=\"Outbound\"} 50\n\
        libp2p_bandwidth_bytes_total{protocols=\"/ip4/udp/quic-v1/p2p\",direction=\"Inbound\"} 7\n\
        libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp/p2p/p2p-circuit/p2p\",direction=\"Outbound\"} 3\n\
        libp2p_bandwidth_bytes_total{protocols=\"/p2p\",direction=\"Inbound\"} 2\n\
        # EOF\n";
    let b = bandwidth_bytes(text);
    assert_eq!(b[&("tcp", "in")], 100);
    assert_eq!(b[&("tcp", "out")], 50);
    assert_eq!(b[&("quic", "in")], 7);
    assert_eq!(b[&("relay", "out")], 3);
    assert_eq!(b[&("relay", "in")], 2);
}

#[test]
fn transports_are_told_from_addresses() {
    assert_eq!(transport_of("/ip4/127.0.0.1/tcp/4001"), "tcp");
    assert_eq!(transport_of("/ip6/::1/udp/4001/quic-v1"), "quic");
    assert_eq!(transport_of("/ip4/1.2.3.4/tcp/1/p2p/Qm/p2p-circuit/p2p/Qm2"), "relay");
    assert_eq!(transport_of("/memory/1"), "other");
}

#[test]
fn work_timer_times_jobs_by_kind_and_outcome() {
    let mut t = WorkTimer::default();
    let item = ItemId([1; 32]);
    t.start(item, 1, WorkKind::Crawl);
    t.end(item, 1, "done");
    t.end(item, 1, "done"); // a second report of the same job is not timed again
    t.end(ItemId([2; 32]), 1, "failed"); // nor one never started
    let d = t.durations();
    assert_eq!(d.len(), 1);
    assert_eq!(d[&("crawl", "done")].count(), 1);
}

#[test]
fn the_grafana_dashboard_reads_only_series_the_node_writes() {
    let mut st = status();
    st.caps.disk_bytes_max = Some(1 << 30);
    // A project with spot-checks, so their families are written.
    st.checks = vec![crate::views::ChecksView {
        project: "cd".repeat(32),
        name: "crawl".into(),
        ..Default::default()
    }];
    let mut snap = snapshot(st);
    snap.actor.topics.push(("t".into(), 1, 1));
    snap.projects.push(project_info("p"));
    snap.peers.push(PeerInfo {
        peer_id: "p".into(),
        node_id: None,
        connected: true,
        live: true,
        score: Some(1.0),
        via_relay: false,
        synced: 0,
        free: None,
        capacity: None,
    });
    let t = text(&snap, Format::Classic);
    let written: BTreeSet<&str> = t
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/grafana-starling.json")).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > 30, "{}", exprs.len());
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("starling_") {
            let name: String =
                rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(
                written.contains(name.as_str()),
                "the dashboard reads {name}, never written: {e}"
            );
            rest = &rest[i + name.len()..];
        }
    }
}

#[test]
fn work_timer_forgets_the_oldest_start_at_its_bound() {
    let mut t = WorkTimer::default();
    for i in 0..=TIMED_JOBS_MAX as u32 {
        t.start(ItemId([0; 32]), i, WorkKind::Seed);
    }
    t.end(ItemId([0; 32]), 0, "done"); // the oldest, forgotten
    t.end(ItemId([0; 32]), TIMED_JOBS_MAX as u32, "done"); // the newest, timed
    assert_eq!(t.durations()[&("seed", "done")].count(), 1);
}

#[test]
fn lifetime_figures_are_counters_with_every_kind() {
    let mut st = status();
    st.lifetime.items.insert("crawl".into(), 7);
    st.lifetime.urls_archived = 70;
    st.lifetime.bytes_archived = 4096;
    st.lifetime.bytes_seeded = 10;
    st.lifetime.relay_circuits = 2;
    st.lifetime.uptime_ms = 90_500;
    for f in [Format::Classic, Format::OpenMetrics] {
        let t = text(&snapshot(st.clone()), f);
        assert_eq!(value(&t, "starling_lifetime_items_total{kind=\"crawl\"}"), 7.0);
        assert_eq!(value(&t, "starling_lifetime_items_total{kind=\"seed\"}"), 0.0);
        assert_eq!(value(&t, "starling_lifetime_urls_archived_total"), 70.0);
        assert_eq!(value(&t, "starling_lifetime_archived_bytes_total"), 4096.0);
        assert_eq!(value(&t, "starling_lifetime_seeded_bytes_total"), 10.0);
        assert_eq!(value(&t, "starling_lifetime_relay_circuits_total"), 2.0);
        assert_eq!(value(&t, "starling_lifetime_uptime_seconds_total"), 90.5);
    }
    check_classic(&text(&snapshot(st), Format::Classic));
}

#[test]
fn spot_checks_are_shown_per_project_with_marked_peers() {
    use crate::views::{ChecksView, MarkedPeer};
    let mut st = status();
    st.engine.overturned = 4;
    st.engine.marked = 1;
    let mut c = ChecksView { project: "cd".repeat(32), name: "crawl".into(), ..Default::default() };
    c.results.verified = 9;
    c.results.disputed = 1;
    c.results.overturned = 4;
    c.marked = vec![MarkedPeer { node: "ab".repeat(32), strikes: 2 }];
    st.checks = vec![c];
    let p = format!("project=\"{}\",name=\"crawl\"", "cd".repeat(32));
    for f in [Format::Classic, Format::OpenMetrics] {
        let t = text(&snapshot(st.clone()), f);
        for (state, want) in [
            ("verified", 9.0),
            ("pending", 0.0),
            ("disputed", 1.0),
            ("overturned", 4.0),
            ("split", 0.0),
        ] {
            let key = format!("starling_result_checks{{{p},state=\"{state}\"}}");
            assert_eq!(value(&t, &key), want, "{state}");
        }
        assert_eq!(value(&t, &format!("starling_marked_peers{{{p}}}")), 1.0);
        assert_eq!(value(&t, "starling_results_overturned_total"), 4.0);
        assert_eq!(value(&t, "starling_peers_marked_total"), 1.0);
    }
    check_classic(&text(&snapshot(st), Format::Classic));
}

#[test]
fn storage_proofs_and_unproven_copies_are_counted_and_their_rejections_by_reason() {
    let mut st = status();
    st.engine.proofs = 12;
    st.engine.unproven = 2;
    st.engine.rejected.insert(Reject::Unproven, 3);
    for f in [Format::Classic, Format::OpenMetrics] {
        let t = text(&snapshot(st.clone()), f);
        assert_eq!(value(&t, "starling_storage_proofs_total"), 12.0);
        assert_eq!(value(&t, "starling_copies_unproven_total"), 2.0);
        assert_eq!(
            value(&t, "starling_messages_rejected_total{reason=\"unproven\",penalized=\"true\"}"),
            3.0
        );
    }
    check_classic(&text(&snapshot(st), Format::Classic));
}
