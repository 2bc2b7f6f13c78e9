//! `/metrics`: the node's counters in the Prometheus (OpenMetrics) text format, built from one
//! [`StatusView`] per scrape so the numbers agree with `/status`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::views::StatusView;

type Labels = Vec<(String, String)>;

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    r.register(name, help, g);
}

fn gauge_f64(r: &mut Registry, name: &str, help: &str, v: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    r.register(name, help, g);
}

fn counters<'a>(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let f = Family::<Labels, Counter<u64>>::default();
    for (k, v) in values {
        f.get_or_create(&vec![(label.to_owned(), k.to_owned())]).inc_by(v);
    }
    r.register(name, help, f);
}

fn gauges<'a>(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) {
    let f = Family::<Labels, Gauge<i64>>::default();
    for (k, v) in values {
        f.get_or_create(&vec![(label.to_owned(), k.to_owned())]).set(v);
    }
    r.register(name, help, f);
}

/// Renders a status as metrics text, with the crawler's URL counters when it crawls.
pub fn render(
    s: &StatusView,
    urls: Option<&crate::crawl::stats::UrlCounts>,
) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("starling");
    let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    gauges(
        &mut r,
        "items",
        "Items known, by state",
        "state",
        [
            ("open", i(s.items.open)),
            ("held", i(s.items.held)),
            ("done", i(s.items.done)),
            ("failed", i(s.items.failed)),
        ],
    );
    let e = &s.engine;
    counter(&mut r, "items_claimed", "Claims this node made (not renewals)", e.claims);
    counter(&mut r, "lease_renewals", "Lease renewals this node made", e.renewals);
    counter(&mut r, "work_started", "Work this node started", e.started);
    counter(&mut r, "items_done", "Results this node published", e.finished);
    counter(&mut r, "items_failed", "Failures this node published", e.failed);
    counter(&mut r, "work_yielded", "Work cancelled after losing a claim", e.yielded);
    counter(
        &mut r,
        "results_withdrawn",
        "Results withdrawn when evidence showed their claim never held its epoch",
        e.withdrawn,
    );
    gauge(&mut r, "holding", "Items this node holds now", s.holding as i64);
    let h = &s.health;
    gauges(
        &mut r,
        "local_fault",
        "1 while a fault of the node's own (store, disk, network, clock) stops it working",
        "kind",
        ["store", "disk", "network", "clock"]
            .map(|k| (k, i64::from(h.faults.iter().any(|f| f.kind == k)))),
    );
    gauge(
        &mut r,
        "clock_offset_ms",
        "Median of the peers' clocks minus this node's, from their heartbeats (0 until known)",
        h.clock.offset_ms.unwrap_or(0),
    );
    counter(
        &mut r,
        "items_given_back",
        "Items given back for a fault of the node's own or an off clock",
        h.gave_back,
    );
    gauge(&mut r, "paused", "1 when claiming is paused", i64::from(s.paused));
    gauge(&mut r, "capacity", "Crawl chunks worked at once", i64::from(s.capacity));
    counters(
        &mut r,
        "fetches",
        "Crawler fetches by HTTP status or error class",
        "status",
        s.fetch.by_status.iter().map(|(k, v)| (k.as_str(), *v)),
    );
    if let Some(u) = urls {
        counters(
            &mut r,
            "urls",
            "URLs of crawled chunks by final outcome (ok, refused, disallowed, transient)",
            "outcome",
            u.labelled(),
        );
    }
    counter(&mut r, "fetch_bytes", "Response body bytes received", s.fetch.bytes_down);
    counter(
        &mut r,
        "rate_limit_waits",
        "Fetches that waited for a host's rate limit",
        s.fetch.rate_limit_waits,
    );
    gauge_f64(&mut r, "fetch_rate_per_second", "Recent fetches per second", s.fetch.rate_per_s);
    gauge_f64(
        &mut r,
        "fetch_rate_limit_per_second",
        "The rate the hosts in use allow together",
        s.fetch.rate_limit_per_s,
    );
    gauges(
        &mut r,
        "peers",
        "Peers connected, and live in the engine's view",
        "state",
        [("connected", s.connected_peers as i64), ("live", s.live_peers as i64)],
    );
    let n = &s.net;
    counters(
        &mut r,
        "gossip_messages",
        "Gossip messages received, by verdict",
        "verdict",
        [
            ("accepted", n.gossip_accepted),
            ("rejected", n.gossip_rejected),
            ("ignored", n.gossip_ignored),
            ("undecodable", n.gossip_undecodable),
        ],
    );
    let reasons: Vec<(&str, u64)> = e.rejected.iter().map(|(k, v)| (k.name(), *v)).collect();
    counters(
        &mut r,
        "messages_rejected",
        "Messages the engine refused, by reason",
        "reason",
        reasons,
    );
    counter(&mut r, "messages_accepted", "Messages the engine applied", e.accepted);
    counter(&mut r, "gossip_published", "Envelopes this node published", n.published);
    counter(&mut r, "sync_applied", "Envelopes applied from state sync", n.sync_applied);
    gauge(&mut r, "store_bytes", "Size of the database file", i(s.disk.store_bytes));
    gauge(&mut r, "results_bytes", "Bytes of stored results", i(s.disk.results_bytes));
    if let Some(max) = s.caps.disk_bytes_max {
        gauge(&mut r, "results_bytes_max", "The operator's disk cap", i(max));
    }
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}
