//! `/metrics`: the node's numbers for Prometheus, in the classic text format (`text/plain;
//! version=0.0.4`) by default and in OpenMetrics 1.0 when the scraper's `Accept` asks for it
//! ([`Format::negotiate`]). One [`Snapshot`] is taken from the actor per scrape, so the numbers
//! agree with `/status` and with each other.
//!
//! The families are built here as plain data ([`Family`]) and written by one small encoder per
//! format, rather than by `prometheus-client`, whose encoder speaks OpenMetrics only: in the
//! classic format a counter's `# TYPE` line must name the `_total` sample, an info family is a
//! gauge named `_info`, and there is no `# EOF`.
//!
//! Every family is written from the first scrape on: labelled families whose labels are a fixed
//! set (states, reasons, transports) carry a zero series for each label value, so a rate or an
//! alert works before the first event. The few families whose labels are open (HTTP statuses,
//! gossip topics, projects) carry their help and type with no series until there is one.
//! The families and what they mean are listed in docs/node.md ("Metrics").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use libp2p::core::ConnectedPoint;
use libp2p::swarm::SwarmEvent;
use starling_protocol::{ItemId, ItemState, Reject, WorkKind};

use crate::views::{PeerInfo, ProjectInfo, RelayView, SeedingView, StatusView};

/// The prefix of every family.
pub const PREFIX: &str = "starling";
/// Content type of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The commit the binary was built from, when the build set `STARLING_COMMIT`.
pub const COMMIT: &str = match option_env!("STARLING_COMMIT") {
    Some(c) => c,
    None => "unknown",
};
/// Upper bounds (seconds) of the work duration histogram's buckets.
pub const WORK_DURATION_BUCKETS: &[f64] =
    &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0];
/// Jobs whose start time is kept for the duration histogram; past it new jobs go untimed.
pub const TIMED_JOBS_MAX: usize = 4096;
/// Transports connections and bytes are labelled with.
pub const TRANSPORTS: [&str; 4] = ["tcp", "quic", "relay", "other"];
/// Directions of connections and bytes.
pub const DIRECTIONS: [&str; 2] = ["in", "out"];

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' classic text format, 0.0.4.
    Classic,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// Chooses from an `Accept` header: OpenMetrics when it is asked for with a higher
    /// quality than the classic format (`text/plain` or `*/*`), else classic.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else { return Format::Classic };
        let (mut om, mut classic) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut version = None;
            for p in parts {
                let Some((k, v)) = p.split_once('=') else { continue };
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim().trim_matches('"').to_owned()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if version.as_deref().is_none_or(|v| v == "1.0.0" || v == "0.0.1") =>
                {
                    om = om.max(q);
                }
                "text/plain" | "text/*" | "*/*" => classic = classic.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om > classic { Format::OpenMetrics } else { Format::Classic }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => CLASSIC_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; its sample is named `<family>_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets.
    Histogram,
    /// A constant 1 whose labels carry the information; its sample is `<family>_info`.
    Info,
}

/// A histogram's buckets (not cumulative: one count per bound, then the overflow), sum and
/// count.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    /// Upper bounds, increasing.
    pub bounds: &'static [f64],
    /// Observations per bucket; one more than `bounds` (the last is above every bound).
    pub buckets: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
}

impl Hist {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, buckets: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    /// Adds one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.buckets[i] += 1;
        self.sum += v;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A whole number.
    Int(i128),
    /// A float.
    Float(f64),
    /// A histogram.
    Hist(Hist),
}

/// One series: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: Value,
}

/// One metric family: name (without the prefix or a `_total`/`_info` suffix), help, kind and
/// series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The name after `starling_`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// What it measures.
    pub kind: Kind,
    /// Its series, possibly none.
    pub series: Vec<Series>,
}

/// The families of one scrape, in order.
#[derive(Debug, Default)]
pub struct Families(pub Vec<Family>);

fn int(v: impl Into<i128>) -> Value {
    Value::Int(v.into())
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Families {
    fn push(&mut self, name: &'static str, help: &'static str, kind: Kind, series: Vec<Series>) {
        self.0.push(Family { name, help, kind, series });
    }

    fn one(&mut self, name: &'static str, help: &'static str, kind: Kind, value: Value) {
        self.push(name, help, kind, vec![Series { labels: Vec::new(), value }]);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.one(name, help, Kind::Counter, int(v));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, v: impl Into<i128>) {
        self.one(name, help, Kind::Gauge, int(v));
    }

    fn gauge_f(&mut self, name: &'static str, help: &'static str, v: f64) {
        self.one(name, help, Kind::Gauge, Value::Float(v));
    }

    /// A family with one label.
    fn by<'a>(
        &mut self,
        kind: Kind,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: impl IntoIterator<Item = (&'a str, Value)>,
    ) {
        let series = rows
            .into_iter()
            .map(|(k, value)| Series { labels: labels(&[(label, k)]), value })
            .collect();
        self.push(name, help, kind, series);
    }

    /// Writes the families in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        for f in &self.0 {
            let base = format!("{PREFIX}_{}", f.name);
            let (meta, ty) = match (format, f.kind) {
                (Format::Classic, Kind::Counter) => (format!("{base}_total"), "counter"),
                (Format::Classic, Kind::Info) => (format!("{base}_info"), "gauge"),
                (_, Kind::Counter) => (base.clone(), "counter"),
                (_, Kind::Gauge) => (base.clone(), "gauge"),
                (_, Kind::Histogram) => (base.clone(), "histogram"),
                (Format::OpenMetrics, Kind::Info) => (base.clone(), "info"),
            };
            let _ = writeln!(out, "# HELP {meta} {}", escape_help(f.help, format));
            let _ = writeln!(out, "# TYPE {meta} {ty}");
            for s in &f.series {
                match (&s.value, f.kind) {
                    (Value::Hist(h), _) => {
                        let mut cumulative = 0;
                        for (i, n) in h.buckets.iter().enumerate() {
                            cumulative += n;
                            let le =
                                h.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| float(*b));
                            let mut l = s.labels.clone();
                            l.push(("le", le));
                            let _ = writeln!(out, "{base}_bucket{} {cumulative}", label_text(&l));
                        }
                        let l = label_text(&s.labels);
                        let _ = writeln!(out, "{base}_sum{l} {}", float(h.sum));
                        let _ = writeln!(out, "{base}_count{l} {cumulative}");
                    }
                    (v, kind) => {
                        let suffix = match kind {
                            Kind::Counter => "_total",
                            Kind::Info => "_info",
                            _ => "",
                        };
                        let v = match v {
                            Value::Int(i) => i.to_string(),
                            Value::Float(x) => float(*x),
                            Value::Hist(_) => unreachable!("matched above"),
                        };
                        let _ = writeln!(out, "{base}{suffix}{} {v}", label_text(&s.labels));
                    }
                }
            }
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// A float as both formats want it: never `-0`, `NaN` and `±Inf` spelled out, and whole
/// numbers with a `.0` (so bucket bounds read as the floats they are).
fn float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if x == 0.0 {
        // Also turns -0.0 into 0.0.
        "0.0".into()
    } else {
        format!("{x:?}")
    }
}

fn escape_help(help: &str, format: Format) -> String {
    let s = help.replace('\\', "\\\\").replace('\n', "\\n");
    match format {
        Format::Classic => s,
        Format::OpenMetrics => s.replace('"', "\\\""),
    }
}

fn label_text(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

// ---- what the actor gives -------------------------------------------------------------------

/// Everything one scrape reads, taken in one turn of the actor.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The `/status` view.
    pub status: StatusView,
    /// The `/peers` view (gossipsub scores).
    pub peers: Vec<PeerInfo>,
    /// The `/projects` view (items by project and state).
    pub projects: Vec<ProjectInfo>,
    /// The `/seeding` view.
    pub seeding: SeedingView,
    /// The `/relay` view.
    pub relay: RelayView,
    /// What only the actor's internals know.
    pub actor: ActorMetrics,
}

/// Numbers the JSON views do not carry.
#[derive(Debug, Clone, Default)]
pub struct ActorMetrics {
    /// Items by (kind, state).
    pub items_by_kind: BTreeMap<(&'static str, &'static str), u64>,
    /// Items this node holds, by kind.
    pub held_by_kind: BTreeMap<&'static str, u64>,
    /// Gossip topics this node is in: (topic, mesh peers, peers subscribed).
    pub topics: Vec<(String, usize, usize)>,
    /// Connections by (transport, direction).
    pub connections: ConnCounters,
    /// libp2p bytes by (transport, direction).
    pub bytes: BTreeMap<(&'static str, &'static str), u64>,
    /// Work durations by (kind, outcome).
    pub durations: BTreeMap<(&'static str, &'static str), Hist>,
}

/// Connections opened, closed and open now, by (transport, direction); failed dials.
#[derive(Debug, Clone, Default)]
pub struct ConnCounters {
    /// Connections established.
    pub opened: BTreeMap<(&'static str, &'static str), u64>,
    /// Connections closed.
    pub closed: BTreeMap<(&'static str, &'static str), u64>,
    /// Outgoing connection attempts that failed.
    pub dial_failures: u64,
    /// Incoming connection attempts that failed (handshake, limits).
    pub incoming_failures: u64,
}

impl ConnCounters {
    /// Counts what a swarm event says about connections.
    pub fn on_swarm<T>(&mut self, event: &SwarmEvent<T>) {
        match event {
            SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                *self.opened.entry(endpoint_labels(endpoint)).or_default() += 1;
            }
            SwarmEvent::ConnectionClosed { endpoint, .. } => {
                *self.closed.entry(endpoint_labels(endpoint)).or_default() += 1;
            }
            SwarmEvent::OutgoingConnectionError { .. } => self.dial_failures += 1,
            SwarmEvent::IncomingConnectionError { .. } => self.incoming_failures += 1,
            _ => {}
        }
    }

    /// Connections open now by (transport, direction).
    pub fn open(&self, key: (&'static str, &'static str)) -> u64 {
        let get = |m: &BTreeMap<_, u64>| m.get(&key).copied().unwrap_or(0);
        get(&self.opened).saturating_sub(get(&self.closed))
    }
}

/// The transport and direction of a connection.
fn endpoint_labels(endpoint: &ConnectedPoint) -> (&'static str, &'static str) {
    let dir = if endpoint.is_dialer() { "out" } else { "in" };
    let transport = if endpoint.is_relayed() {
        "relay"
    } else {
        transport_of(&endpoint.get_remote_address().to_string())
    };
    (transport, dir)
}

/// The transport an address or libp2p protocol stack (`/ip4/tcp/p2p`) goes over.
fn transport_of(stack: &str) -> &'static str {
    let has = |p: &str| stack.split('/').any(|s| s == p);
    if has("p2p-circuit") {
        "relay"
    } else if has("quic-v1") || has("quic") {
        "quic"
    } else if has("tcp") {
        "tcp"
    } else {
        "other"
    }
}

/// Bytes by (transport, direction) from libp2p's bandwidth metrics text. Relayed connections
/// accepted through a circuit carry only the source's `/p2p/<peer>` (see `relay.rs`).
pub fn bandwidth_bytes(text: &str) -> BTreeMap<(&'static str, &'static str), u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("libp2p_bandwidth_bytes_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let protocols =
            labels.split("protocols=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
        let transport = if protocols == "/p2p" { "relay" } else { transport_of(protocols) };
        let dir = if labels.to_ascii_lowercase().contains("direction=\"inbound\"") {
            "in"
        } else {
            "out"
        };
        *out.entry((transport, dir)).or_default() += v as u64;
    }
    out
}

/// Start times of running jobs, and the durations of finished ones by (kind, outcome).
#[derive(Debug, Default)]
pub struct WorkTimer {
    started: BTreeMap<(ItemId, u32), (WorkKind, Instant)>,
    done: BTreeMap<(&'static str, &'static str), Hist>,
}

impl WorkTimer {
    /// A job started.
    pub fn start(&mut self, item: ItemId, epoch: u32, kind: WorkKind) {
        if self.started.len() < TIMED_JOBS_MAX {
            self.started.insert((item, epoch), (kind, Instant::now()));
        }
    }

    /// A job ended as `outcome` (`done`, `failed`, `cancelled`); unknown jobs are ignored.
    pub fn end(&mut self, item: ItemId, epoch: u32, outcome: &'static str) {
        if let Some((kind, at)) = self.started.remove(&(item, epoch)) {
            self.done
                .entry((kind.name(), outcome))
                .or_insert_with(|| Hist::new(WORK_DURATION_BUCKETS))
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// Durations so far.
    pub fn durations(&self) -> BTreeMap<(&'static str, &'static str), Hist> {
        self.done.clone()
    }
}

fn state_name(s: &ItemState) -> &'static str {
    match s {
        ItemState::Open { .. } => "open",
        ItemState::Held { .. } => "held",
        ItemState::Done { .. } => "done",
        ItemState::Failed { .. } => "failed",
    }
}

/// Item states, in a fixed order.
pub const ITEM_STATES: [&str; 4] = ["open", "held", "done", "failed"];
/// Work outcomes the duration histogram tells apart.
pub const WORK_OUTCOMES: [&str; 3] = ["done", "failed", "cancelled"];

impl crate::actor::Actor {
    /// What the metrics need beyond the JSON views.
    pub(crate) fn actor_metrics(&self) -> ActorMetrics {
        let mut items_by_kind = BTreeMap::new();
        for (id, _, state) in self.engine.items() {
            if let Some((_, work)) = self.engine.item_work(&id) {
                *items_by_kind.entry((work.kind().name(), state_name(&state))).or_default() += 1;
            }
        }
        let mut held_by_kind = BTreeMap::new();
        for w in self.engine.local_work() {
            *held_by_kind.entry(w.kind.name()).or_default() += 1;
        }
        let gossip = &self.swarm.behaviour().gossipsub;
        let topics = gossip
            .topics()
            .map(|t| {
                let subscribed = gossip.all_peers().filter(|(_, ts)| ts.contains(&t)).count();
                (t.as_str().to_owned(), gossip.mesh_peers(t).count(), subscribed)
            })
            .collect();
        let bytes = {
            let mut text = String::new();
            let registry = self.relay_server.bandwidth.lock().unwrap_or_else(|e| e.into_inner());
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
            bandwidth_bytes(&text)
        };
        ActorMetrics {
            items_by_kind,
            held_by_kind,
            topics,
            connections: self.conn_metrics.clone(),
            bytes,
            durations: self.runners.timer().durations(),
        }
    }
}

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
        "The running binary: version and commit (\"unknown\" unless the build set STARLING_COMMIT)",
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
        "Items of each known project, by state (project is the id, name the manifest's)",
        Gauge,
        per_project,
    );
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
        "Work cancelled because another node's claim or result won (duplicate executions cut short)",
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

    // ---- disk
    r.gauge("store_bytes", "Size of the database file", s.disk.store_bytes);
    r.gauge("results_bytes", "Bytes of stored crawl results", s.disk.results_bytes);
    if let Some(max) = s.caps.disk_bytes_max {
        r.gauge("results_bytes_max", "The operator's disk cap (only when one is set)", max);
    }
    r
}

/// The text of one scrape in `format`.
pub fn render(
    snap: &Snapshot,
    urls: Option<&crate::crawl::stats::UrlCounts>,
    format: Format,
) -> String {
    families(snap, urls).encode(format)
}

#[cfg(test)]
mod tests;
