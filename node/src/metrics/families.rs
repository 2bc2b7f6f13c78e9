//! The families of one scrape, from a [`Snapshot`].

use std::collections::BTreeMap;

use starling_protocol::{Reject, WorkKind};

use crate::views::StatusView;

use super::text::{int, labels};
use super::*;

// ---- the families ---------------------------------------------------------------------------

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// The score band of a gossipsub peer score, against the thresholds the node uses.
fn score_band(score: f64) -> &'static str {
    let t = libp2p::gossipsub::PeerScoreThresholds::default();
    if score < t.graylist_threshold {
        "greylisted"
    } else if score < t.publish_threshold {
        "below_publish"
    } else if score < t.gossip_threshold {
        "below_gossip"
    } else if score < 0.0 {
        "negative"
    } else {
        "non_negative"
    }
}

/// Score bands, from worst to best.
pub const SCORE_BANDS: [&str; 5] =
    ["greylisted", "below_publish", "below_gossip", "negative", "non_negative"];

/// Where a checked result stands, as `starling_result_checks` labels it.
pub const CHECK_STATES: [&str; 5] = ["verified", "pending", "disputed", "overturned", "split"];

/// Spot-checks: per project, its checked results by where they stand and its marked peers;
/// over all projects, what this node's engine saw overturned and marked.
fn push_checks(r: &mut Families, s: &StatusView) {
    let (mut results, mut marked) = (Vec::new(), Vec::new());
    for c in &s.checks {
        let v = &c.results;
        let by_state = [v.verified, v.pending, v.disputed, v.overturned, v.split];
        for (state, n) in CHECK_STATES.into_iter().zip(by_state) {
            results.push(Series {
                labels: labels(&[("project", &c.project), ("name", &c.name), ("state", state)]),
                value: int(n),
            });
        }
        marked.push(Series {
            labels: labels(&[("project", &c.project), ("name", &c.name)]),
            value: int(c.marked.len() as u64),
        });
    }
    r.push(
        "result_checks",
        "Finished crawl chunks of each project whose result a spot-check sampled, by where it \
         stands: verified (confirmed or upheld), pending, disputed (a third check under way), \
         overturned (another node's result is kept), split (three answers; kept)",
        Kind::Gauge,
        results,
    );
    r.push(
        "marked_peers",
        "Nodes marked for each project after losing its verify.strikes spot-check quorums",
        Kind::Gauge,
        marked,
    );
    r.counter(
        "results_overturned",
        "Crawl results this node's engine saw a spot-check quorum overturn",
        s.engine.overturned,
    );
    r.counter("peers_marked", "Nodes this node's engine marked for a project", s.engine.marked);
}

/// The families of one scrape, with the crawler's URL counters when it crawls.
pub fn families(snap: &Snapshot, urls: Option<&crate::crawl::stats::UrlCounts>) -> Families {
    let mut r = Families::default();
    let s = &snap.status;
    let a = &snap.actor;
    let e = &s.engine;
    let n = &s.net;
    use Kind::{Counter, Gauge};

    // ---- the node
    r.push(
        "build",
        "The running binary: version and the commit it was built from (\"unknown\" outside a git checkout)",
        Kind::Info,
        vec![Series {
            labels: labels(&[("version", &s.version), ("commit", COMMIT)]),
            value: int(1),
        }],
    );
    let uptime_s = s.uptime_ms as f64 / 1000.0;
    r.gauge_f(
        "start_time_seconds",
        "When the node started, in seconds since the UNIX epoch",
        s.now_ms.saturating_sub(s.uptime_ms) as f64 / 1000.0,
    );
    r.gauge_f("uptime_seconds", "Seconds since the node started", uptime_s);
    r.gauge("paused", "1 when claiming is paused", i64::from(s.paused));
    r.gauge("capacity", "Crawl chunks worked at once", i64::from(s.capacity));
    r.gauge("roles", "The roles this node fills, as the bit set it advertises", s.roles);
    r.gauge("projects", "Projects known", s.projects as u64);

    // ---- items
    let c = &s.items;
    r.by(
        Gauge,
        "items",
        "Items known, by state",
        "state",
        [("open", c.open), ("held", c.held), ("done", c.done), ("failed", c.failed)]
            .map(|(k, v)| (k, int(v))),
    );
    let mut by_kind = Vec::new();
    for kind in WorkKind::ALL {
        for state in ITEM_STATES {
            let v = a.items_by_kind.get(&(kind.name(), state)).copied().unwrap_or(0);
            by_kind.push(Series {
                labels: labels(&[("kind", kind.name()), ("state", state)]),
                value: int(v),
            });
        }
    }
    r.push("items_by_kind", "Items known, by kind of work and state", Gauge, by_kind);
    let mut per_project = Vec::new();
    for p in &snap.projects {
        let c = &p.items;
        for (state, v) in
            [("open", c.open), ("held", c.held), ("done", c.done), ("failed", c.failed)]
        {
            per_project.push(Series {
                labels: labels(&[("project", &p.id), ("name", &p.name), ("state", state)]),
                value: int(v),
            });
        }
    }
    r.push(
        "project_items",
        "Items of each known project, by state (project is the id, name the manifest's); for a \
         split project, those of this node's shard",
        Gauge,
        per_project,
    );
    let shards = |f: fn(&crate::views::ShardInfo) -> u64| {
        let series = snap.projects.iter().filter_map(|p| {
            let sh = p.shard.as_ref()?;
            let l = labels(&[("project", &p.id), ("name", &p.name), ("shard", &sh.name)]);
            Some(Series { labels: l, value: int(f(sh)) })
        });
        series.collect::<Vec<_>>()
    };
    r.push(
        "shard_members",
        "Live nodes of each split project in this node's shard, itself included (shard is \
         depth/prefix)",
        Gauge,
        shards(|s| s.members as u64),
    );
    let mut progress = Vec::new();
    for p in &snap.projects {
        let Some(sh) = &p.shard else { continue };
        let c = &sh.project_items;
        for (state, v) in
            [("open", c.open), ("held", c.held), ("done", c.done), ("failed", c.failed)]
        {
            let l = labels(&[("project", &p.id), ("name", &p.name), ("state", state)]);
            progress.push(Series { labels: l, value: int(v) });
        }
    }
    r.push(
        "project_progress_items",
        "Items of each split project by state, added up from its shards' signed counts over \
         the shards heard from (see shard_counts_heard)",
        Gauge,
        progress,
    );
    r.push(
        "shard_counts_heard",
        "Shards of each split project whose progress count is in project_progress_items",
        Gauge,
        shards(|s| u64::from(s.shards_heard)),
    );
    r.push(
        "shard_depth",
        "Depth each split project is cut to (2^depth shards), by this node's shard of it",
        Gauge,
        shards(|s| u64::from(s.depth)),
    );
    push_checks(&mut r, s);
    r.gauge("holding", "Items this node holds now", s.holding as u64);
    r.by(
        Gauge,
        "holding_by_kind",
        "Items this node holds now, by kind of work",
        "kind",
        WorkKind::ALL.map(|k| (k.name(), int(a.held_by_kind.get(k.name()).copied().unwrap_or(0)))),
    );

    // ---- the claim engine
    r.counter("items_claimed", "Claims this node made (not renewals)", e.claims);
    r.counter("lease_renewals", "Lease renewals this node made", e.renewals);
    r.counter("work_started", "Work this node started", e.started);
    r.counter("items_done", "Results this node published", e.finished);
    r.counter("items_failed", "Failures this node published", e.failed);
    r.counter(
        "work_yielded",
        "Started work cancelled because another node's claim or result won (duplicate executions cut short)",
        e.yielded,
    );
    r.counter(
        "results_withdrawn",
        "Results withdrawn when evidence showed their claim never held its epoch",
        e.withdrawn,
    );
    r.counter(
        "items_given_back",
        "Items given back for a fault of the node's own or an off clock",
        s.health.gave_back,
    );
    r.counter(
        "seed_duties_dropped",
        "Seeding duties dropped because the result they copy was replaced or withdrawn",
        e.duties_dropped,
    );
    r.counter("messages_accepted", "Messages the engine applied", e.accepted);
    let rejected = Reject::ALL
        .iter()
        .filter(|r| **r != Reject::Duplicate)
        .map(|r| Series {
            labels: labels(&[
                ("reason", r.name()),
                ("penalized", if r.penalize() { "true" } else { "false" }),
            ]),
            value: int(e.rejected_for(*r)),
        })
        .collect();
    r.push(
        "messages_rejected",
        "Messages the engine refused, by reason (penalized=\"true\" for reasons that score the \
         sender down; duplicates are counted apart); malformed includes undecodable gossip",
        Counter,
        rejected,
    );
    r.counter(
        "messages_duplicate",
        "Messages the engine already had (harmless: gossip and sync deliver copies)",
        e.rejected_for(Reject::Duplicate),
    );
    r.counter("runner_jobs_started", "Jobs the runners started", s.runner.started);
    r.counter("runner_jobs_completed", "Jobs that reported an outcome", s.runner.completed);
    r.counter("runner_jobs_cancelled", "Jobs cancelled before they reported", s.runner.cancelled);
    let mut durations = Vec::new();
    for kind in WorkKind::ALL {
        for outcome in WORK_OUTCOMES {
            let h = a
                .durations
                .get(&(kind.name(), outcome))
                .cloned()
                .unwrap_or_else(|| Hist::new(WORK_DURATION_BUCKETS));
            durations.push(Series {
                labels: labels(&[("kind", kind.name()), ("outcome", outcome)]),
                value: Value::Hist(h),
            });
        }
    }
    r.push(
        "work_duration_seconds",
        "Time from a job's start on its runner to its outcome, by kind of work and outcome",
        Kind::Histogram,
        durations,
    );

    // ---- health
    let h = &s.health;
    r.by(
        Gauge,
        "local_fault",
        "1 while a fault of the node's own (store, disk, network, clock) stops it working",
        "kind",
        ["store", "disk", "network", "clock"]
            .map(|k| (k, int(i64::from(h.faults.iter().any(|f| f.kind == k))))),
    );
    r.gauge_f(
        "clock_offset_seconds",
        "Median of the peers' clocks minus this node's, from their heartbeats (0 until known)",
        h.clock.offset_ms.unwrap_or(0) as f64 / 1000.0,
    );

    // ---- the crawler
    let f = &s.fetch;
    let mut classes: BTreeMap<&str, u64> =
        ["1xx", "2xx", "3xx", "4xx", "5xx", "error"].map(|k| (k, 0)).into_iter().collect();
    for (status, v) in &f.by_status {
        let class = match status.as_bytes() {
            [d @ b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => {
                ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from(d - b'1')]
            }
            _ => "error",
        };
        *classes.entry(class).or_default() += v;
    }
    r.by(
        Counter,
        "fetches",
        "Crawler fetches by HTTP status class, or error when no answer came",
        "class",
        classes.iter().map(|(k, v)| (*k, int(*v))),
    );
    r.by(
        Counter,
        "fetch_statuses",
        "Crawler fetches by HTTP status code or error kind (series appear as they happen)",
        "status",
        f.by_status.iter().map(|(k, v)| (k.as_str(), int(*v))),
    );
    let urls = urls.cloned().unwrap_or_default();
    r.by(
        Counter,
        "urls",
        "URLs of crawled chunks by final outcome (ok, refused, disallowed, transient)",
        "outcome",
        urls.labelled().map(|(k, v)| (k, int(v))),
    );
    r.counter("fetch_bytes", "Response body bytes received by the crawler", f.bytes_down);
    r.counter(
        "rate_limit_waits",
        "Fetches that waited for a host's rate limit",
        f.rate_limit_waits,
    );
    r.gauge_f("fetch_rate_per_second", "Recent fetches per second", f.rate_per_s);
    r.gauge_f(
        "fetch_rate_limit_per_second",
        "The rate the hosts in use allow together",
        f.rate_limit_per_s,
    );

    // ---- peers and gossip
    r.by(
        Gauge,
        "peers",
        "Peers connected, and live in the engine's view",
        "state",
        [("connected", int(s.connected_peers as u64)), ("live", int(s.live_peers as u64))],
    );
    r.by(
        Counter,
        "gossip_messages",
        "Gossip messages received, by verdict (undecodable ones are not also counted rejected)",
        "verdict",
        [
            ("accepted", n.gossip_accepted),
            ("rejected", n.gossip_rejected.saturating_sub(n.gossip_undecodable)),
            ("ignored", n.gossip_ignored),
            ("undecodable", n.gossip_undecodable),
        ]
        .map(|(k, v)| (k, int(v))),
    );
    r.counter("gossip_published", "Envelopes this node published", n.published);
    r.by(
        Counter,
        "gossip_bytes",
        "Bytes of gossip message data: received (each message as handed to the node, duplicates \
         dropped by gossipsub not counted) and published (once per topic)",
        "direction",
        [("received", n.gossip_bytes_received), ("published", n.gossip_bytes_published)]
            .map(|(k, v)| (k, int(v))),
    );
    let mut mesh = Vec::new();
    let mut subscribed = Vec::new();
    for (topic, m, p) in &a.topics {
        let l = labels(&[("topic", topic)]);
        mesh.push(Series { labels: l.clone(), value: int(*m as u64) });
        subscribed.push(Series { labels: l, value: int(*p as u64) });
    }
    r.push("gossip_mesh_peers", "Peers in this node's gossipsub mesh, by topic", Gauge, mesh);
    r.push(
        "gossip_topic_peers",
        "Connected peers subscribed to each topic this node is in",
        Gauge,
        subscribed,
    );
    let mut scores: Vec<f64> =
        snap.peers.iter().filter(|p| p.connected).filter_map(|p| p.score).collect();
    scores.sort_by(f64::total_cmp);
    let mut bands: BTreeMap<&str, u64> = SCORE_BANDS.iter().map(|b| (*b, 0)).collect();
    for s in &scores {
        *bands.entry(score_band(*s)).or_default() += 1;
    }
    r.by(
        Gauge,
        "gossip_peers_by_score",
        "Connected peers by gossipsub score band, against the default thresholds (gossip -10, \
         publish -50, greylist -80)",
        "band",
        SCORE_BANDS.map(|b| (b, int(bands[b]))),
    );
    let summary: Vec<(&str, Value)> = match (scores.first(), scores.last()) {
        (Some(min), Some(max)) => vec![
            ("min", Value::Float(*min)),
            ("median", Value::Float(median(&scores))),
            ("max", Value::Float(*max)),
        ],
        _ => Vec::new(),
    };
    r.by(
        Gauge,
        "gossip_peer_score",
        "Lowest, median and highest gossipsub score of the connected peers (no series without \
         scored peers)",
        "stat",
        summary,
    );

    // ---- libp2p connections and bytes
    let conn = &a.connections;
    let conn_family = |f: &dyn Fn((&'static str, &'static str)) -> u64| -> Vec<Series> {
        TRANSPORTS
            .iter()
            .flat_map(|t| DIRECTIONS.map(|d| (*t, d)))
            .map(|(t, d)| Series {
                labels: labels(&[("transport", t), ("direction", d)]),
                value: int(f((t, d))),
            })
            .collect()
    };
    r.push(
        "p2p_connections",
        "libp2p connections open now, by transport (tcp, quic, relay) and direction",
        Gauge,
        conn_family(&|k| conn.open(k)),
    );
    r.push(
        "p2p_connections_opened",
        "libp2p connections established, by transport and direction",
        Counter,
        conn_family(&|k| conn.opened.get(&k).copied().unwrap_or(0)),
    );
    r.push(
        "p2p_connections_closed",
        "libp2p connections closed, by transport and direction",
        Counter,
        conn_family(&|k| conn.closed.get(&k).copied().unwrap_or(0)),
    );
    r.counter(
        "p2p_dial_failures",
        "Outgoing libp2p connection attempts that failed",
        conn.dial_failures,
    );
    r.counter(
        "p2p_incoming_failures",
        "Incoming libp2p connection attempts that failed (handshake, limits)",
        conn.incoming_failures,
    );
    r.push(
        "p2p_bytes",
        "libp2p bytes sent (out) and received (in), by transport",
        Counter,
        conn_family(&|k| a.bytes.get(&k).copied().unwrap_or(0)),
    );

    // ---- sync
    r.counter("sync_requests", "State sync requests this node sent", n.sync_requests);
    r.counter(
        "sync_retries",
        "State sync requests that asked another peer after one went unanswered or failed",
        n.sync_retries,
    );
    r.counter("sync_responses", "State sync answers this node received", n.sync_responses);
    r.counter("sync_served", "State sync requests this node answered", n.sync_served);
    r.counter("sync_applied", "Envelopes applied from state sync", n.sync_applied);

    // ---- seeding and blobs
    let sd = &snap.seeding;
    r.gauge("seed_enabled", "1 when this node takes seeding duties", i64::from(sd.enabled));
    r.gauge("seed_capacity", "Seeding duties this node takes at once", sd.capacity);
    let mut duty_states: BTreeMap<&str, u64> =
        ["claimed", "fetching", "stored"].map(|k| (k, 0)).into_iter().collect();
    for d in &sd.duties {
        if let Some(v) = duty_states.get_mut(d.state.as_str()) {
            *v += 1;
        }
    }
    r.by(
        Gauge,
        "seed_duties",
        "Seeding duties this node holds, by state",
        "state",
        duty_states.iter().map(|(k, v)| (*k, int(*v))),
    );
    r.gauge("blobs", "Result blobs stored on this node", sd.blobs);
    r.gauge("blob_stored_bytes", "Bytes of result blobs stored on this node", sd.bytes_stored);
    r.counter("blob_served_bytes", "Blob bytes served to peers", sd.bytes_served);
    r.counter("blob_fetched_bytes", "Blob bytes fetched from peers", sd.bytes_fetched);
    r.counter(
        "blob_chunks_rejected",
        "Blob chunks from peers that failed verification",
        sd.chunks_rejected,
    );
    r.counter("blob_penalties", "Peers scored down for serving a bad blob chunk", n.blob_penalties);
    r.counter(
        "storage_proofs",
        "Renewals of this node's seeding duties that carried a storage proof of the copy",
        e.proofs,
    );
    r.counter(
        "copies_unproven",
        "Seeding duties this node gave back because it could not show its copy (missing, \
         damaged, or not read in time); peers' renewals refused for want of a proof are \
         messages_rejected with reason unproven",
        e.unproven,
    );

    // ---- relay
    let rl = &snap.relay;
    r.gauge("relay_enabled", "1 when this node offers relay slots", i64::from(rl.enabled));
    r.gauge("relay_slots_offered", "Relay slots this node offers", rl.slots_offered);
    r.gauge("relay_slots_held", "Relay slots this node holds for requesters now", rl.slots_held);
    r.counter(
        "relay_reservations",
        "Reservations this node granted as a relay (not renewals)",
        rl.reservations,
    );
    r.counter("relay_circuits", "Circuits this node relayed", rl.circuits);
    r.gauge("relay_circuits_open", "Circuits this node relays now", rl.circuits_open);
    r.counter("relay_refused", "Reservations this node refused", rl.refused);
    r.counter(
        "relay_client_reservations",
        "Reservations this node got on relays (when not reachable)",
        rl.reserved,
    );
    r.counter(
        "relay_client_circuits",
        "Connections that reached this node through its relay",
        rl.circuits_in,
    );
    r.counter(
        "relay_client_bytes",
        "Bytes this node sent and received over relayed connections",
        rl.relayed_bytes,
    );

    // ---- torrents
    let t = &s.torrents;
    r.gauge("torrent_enabled", "1 when the BitTorrent session runs", i64::from(t.enabled));
    r.by(
        Gauge,
        "torrents",
        "Torrents in the BitTorrent session, by state",
        "state",
        [("seeding", int(t.seeding)), ("downloading", int(t.downloading))],
    );
    r.counter("torrent_uploaded_bytes", "BitTorrent bytes uploaded", t.uploaded_bytes);
    r.counter("torrent_downloaded_bytes", "BitTorrent bytes downloaded", t.downloaded_bytes);
    r.gauge("torrent_peers", "BitTorrent peers connected", t.peers);
    r.gauge("torrent_held_bytes", "Bytes of torrent payloads held", t.held_bytes);

    // ---- lifetime: all the node's runs, read back from its database at start
    let l = &s.lifetime;
    r.by(
        Counter,
        "lifetime_items",
        "Items this node finished over all its runs, by kind of work (kept across restarts)",
        "kind",
        WorkKind::ALL.map(|k| (k.name(), int(l.items.get(k.name()).copied().unwrap_or(0)))),
    );
    r.counter(
        "lifetime_urls_archived",
        "URLs this node archived over all its runs (parts of its crawl chunks fetched fine)",
        l.urls_archived,
    );
    r.counter(
        "lifetime_archived_bytes",
        "Bytes of crawl results this node produced over all its runs",
        l.bytes_archived,
    );
    r.counter(
        "lifetime_seeded_bytes",
        "Bytes this node served to peers over all its runs (result copies and torrent uploads)",
        l.bytes_seeded,
    );
    r.counter(
        "lifetime_relay_circuits",
        "Circuits this node relayed for peers behind NAT over all its runs",
        l.relay_circuits,
    );
    r.one(
        "lifetime_uptime_seconds",
        "Seconds this node ran over all its runs",
        Counter,
        Value::Float(l.uptime_ms as f64 / 1000.0),
    );

    // ---- disk
    r.gauge("store_bytes", "Size of the database file", s.disk.store_bytes);
    r.gauge("results_bytes", "Bytes of stored crawl results", s.disk.results_bytes);
    if let Some(max) = s.caps.disk_bytes_max {
        r.gauge("results_bytes_max", "The operator's disk cap (only when one is set)", max);
    }
    r
}
