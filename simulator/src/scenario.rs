//! Scenarios: what world to build and which faults to throw at it, read from TOML.
//!
//! Every field has a default, so a scenario file names only what it changes. The built-in
//! scenarios in `simulator/scenarios/` are compiled in and found by name; anything else is read
//! as a path. Command-line overrides are applied on top with [`Scenario::apply_overrides`].
//! Every way in ends in [`Scenario::validate`] (rules and caps in `validate.rs`), so a bad
//! value is one error line before anything is built, never a panic or a silent clamp.

use std::path::Path;

use serde::{Deserialize, Serialize};

mod validate;

pub use validate::{
    FAULTS_MAX, ITEMS_MAX, LATENCY_MAX_MS, MEMORY_MAX_BYTES, NODES_MAX, PROJECTS_MAX, TIME_MAX_MS,
};

/// Built-in scenario files, by name.
pub const BUILTIN: [(&str, &str); 27] = [
    ("steady", include_str!("../scenarios/steady.toml")),
    ("lossy", include_str!("../scenarios/lossy.toml")),
    ("churn", include_str!("../scenarios/churn.toml")),
    ("partition-heal", include_str!("../scenarios/partition-heal.toml")),
    ("byzantine", include_str!("../scenarios/byzantine.toml")),
    ("fault-50", include_str!("../scenarios/fault-50.toml")),
    ("scale-10k", include_str!("../scenarios/scale-10k.toml")),
    ("skew-beyond", include_str!("../scenarios/skew-beyond.toml")),
    ("local-faults", include_str!("../scenarios/local-faults.toml")),
    ("skewed-nodes", include_str!("../scenarios/skewed-nodes.toml")),
    ("skew-cut-off", include_str!("../scenarios/skew-cut-off.toml")),
    ("flaky-site", include_str!("../scenarios/flaky-site.toml")),
    ("curated", include_str!("../scenarios/curated.toml")),
    ("host-lanes", include_str!("../scenarios/host-lanes.toml")),
    ("host-lanes-node-scope", include_str!("../scenarios/host-lanes-node-scope.toml")),
    ("host-lanes-crash", include_str!("../scenarios/host-lanes-crash.toml")),
    ("host-lanes-by-host", include_str!("../scenarios/host-lanes-by-host.toml")),
    ("host-lanes-killed", include_str!("../scenarios/host-lanes-killed.toml")),
    ("liars-checked", include_str!("../scenarios/liars-checked.toml")),
    ("liars-sampled", include_str!("../scenarios/liars-sampled.toml")),
    ("liars-collude", include_str!("../scenarios/liars-collude.toml")),
    ("changing-site", include_str!("../scenarios/changing-site.toml")),
    ("hoarders", include_str!("../scenarios/hoarders.toml")),
    ("copies-churn", include_str!("../scenarios/copies-churn.toml")),
    ("shards", include_str!("../scenarios/shards.toml")),
    ("shards-grow", include_str!("../scenarios/shards-grow.toml")),
    ("shards-shrink", include_str!("../scenarios/shards-shrink.toml")),
];

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// Neither a built-in name nor a readable file.
    #[error("no scenario named {0:?} and no such file (built-in: {1})")]
    NotFound(String, String),
    /// The file is not valid scenario TOML, or names a key no table has.
    #[error("scenario {0}: {1}")]
    Parse(String, String),
    /// A value is outside what is allowed, alone or next to another value.
    #[error("scenario {origin}: {key} = {value}: {allowed}")]
    Invalid {
        /// The file, built-in name or scenario name.
        origin: String,
        /// The key, as written in the file (`churn.crash_share`, `faults[2].split`).
        key: String,
        /// The value given.
        value: String,
        /// What is allowed instead.
        allowed: String,
    },
}

/// A whole simulated world and its faults. Durations are simulated milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in reports.
    pub name: String,
    /// What the scenario is for.
    pub description: String,
    /// Nodes at start (byzantine ones included).
    pub nodes: u32,
    /// Crawl items in all, spread evenly over the projects.
    pub items: u32,
    /// Projects, each with its own owner key and gossip topic.
    pub projects: u32,
    /// Projects each node trusts and subscribes to.
    pub projects_per_node: u32,
    /// Items per signed batch.
    pub batch_items: u32,
    /// When the owners publish their manifests and batches.
    pub publish_at_ms: u64,
    /// Hard end of the run.
    pub duration_ms: u64,
    /// How long to keep running after the last item is done, to watch convergence.
    pub drain_ms: u64,
    /// Lease length in the project manifests.
    pub lease_ms: u64,
    /// Seeding copies per result (derived seed duties; 0 = none).
    pub replication: u8,
    /// Network model.
    pub network: NetworkSpec,
    /// Engine tunables (any `starling_protocol::EngineConfig` field; the rest default).
    pub engine: starling_protocol::EngineConfig,
    /// Work model.
    pub work: WorkSpec,
    /// Random churn.
    pub churn: ChurnSpec,
    /// Scheduled faults, in any order.
    pub faults: Vec<FaultSpec>,
    /// Per-node clock skew and slow nodes.
    pub nodes_spec: NodesSpec,
    /// Neighbourhoods: each project split into shards (off by default).
    pub shards: ShardsSpec,
    /// Lying peers.
    pub byzantine: ByzantineSpec,
    /// Invariant checking.
    pub check: CheckSpec,
    /// Deliberate breakage at the driver level, for showing the checkers fail.
    pub sabotage: Sabotage,
    /// A curator instead of trusted owners.
    pub curator: CuratorSpec,
    /// Crawl hosts with a rate budget (host lanes); absent, a chunk is a fixed-length job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostsSpec>,
    /// Spot-checks of results (the manifests' `verify`) and the pages they compare.
    pub verify: VerifySpec,
}

/// Spot-checks: the manifests' `verify` policy, and a site model for them to compare. With
/// `urls_per_chunk` above 1 or pages that change, receipts carry one part per URL with its
/// payload digest, as the node's do; otherwise a chunk's result digest stands for its pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySpec {
    /// The manifests' `verify.sample_milli` (the protocol's default unless set).
    pub sample_milli: u16,
    /// The manifests' `verify.strikes`.
    pub strikes: u8,
    /// URLs per crawl chunk (without `[hosts]`).
    pub urls_per_chunk: u32,
    /// Share of pages that change while the crawl runs (0 = a stable site).
    pub changing_share: f64,
    /// A changing page gets a new version this often.
    pub change_every_ms: u64,
    /// The owner lists the changing pages as volatile (compared by status only).
    pub volatile_listed: bool,
    /// The manifests' `verify.proof_every_ms`: seeding holders prove their copies this often
    /// (0 = no storage proofs).
    pub proof_every_ms: u64,
    /// The manifests' `verify.proof_grace_ms`.
    pub proof_grace_ms: u64,
}

impl Default for VerifySpec {
    fn default() -> Self {
        let d = starling_protocol::manifest::VerifyPolicy::default();
        Self {
            sample_milli: d.sample_milli,
            strikes: d.strikes,
            urls_per_chunk: 1,
            changing_share: 0.0,
            change_every_ms: 10_000,
            volatile_listed: false,
            proof_every_ms: d.proof_every_ms,
            proof_grace_ms: d.proof_grace_ms,
        }
    }
}

impl VerifySpec {
    /// Whether receipts carry one part per URL.
    pub fn parts_modeled(&self) -> bool {
        self.urls_per_chunk > 1 || self.changing_share > 0.0
    }
}

/// Crawling against hosts that have a rate budget, what host lanes are for (`hosts.rs`). When
/// a scenario has this table, each chunk's URLs are spread over `count` hosts and a chunk is
/// done when all its URLs are fetched, each fetch paced by the project's rate policy and, under
/// mesh scope, made only under a host lane. Absent, a chunk is a job of `work.crawl_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostsSpec {
    /// Hosts the project's URLs are spread over.
    pub count: u32,
    /// URLs in each crawl chunk.
    pub urls_per_chunk: u32,
    /// Each chunk's URLs all on one host (chunk `i` on host `i % count`), as a project that
    /// groups its URLs by site would cut them; otherwise spread over the hosts by a hash.
    pub by_host: bool,
    /// The manifest's `rate.per_host`: requests a second one host may get (from the whole mesh
    /// under mesh scope, from each node under node scope).
    pub rate_per_s: f64,
    /// The manifest's `rate.burst`.
    pub burst: u32,
    /// The manifest's `rate.lanes`.
    pub lanes: u16,
    /// The manifest's `rate.scope`: `"mesh"` (host lanes) or `"node"` (each node on its own).
    pub scope: starling_protocol::manifest::RateScope,
    /// How many hosts (the first ones) answer some requests with 429 and a `Retry-After`.
    pub refusing: u32,
    /// Chance a refusing host answers a request with 429.
    pub refuse_rate: f64,
    /// The `Retry-After` a refusing host asks for.
    pub retry_after_ms: u64,
    /// Request lateness allowed inside a `Retry-After` window, counted from the 429: the time
    /// the news takes to reach the other holders of the host's lanes (gossip).
    pub cooldown_margin_ms: u64,
    /// A holder whose URLs left for a host fit in the protocol's drain gives the lane back
    /// early and finishes them in the drain, as the node does.
    pub early_give_back: bool,
    /// The run shows the site getting more than its budget (node scope, the old behaviour):
    /// windows over the rate and requests inside a `Retry-After` are reported, not failed.
    pub over_budget_expected: bool,
    /// Each node asks a host for its robots.txt before its first URL there, as the node's
    /// crawler does (once a run: a restart forgets it): one request of the host's budget per
    /// node that works the host.
    pub robots_txt: bool,
}

impl Default for HostsSpec {
    fn default() -> Self {
        Self {
            count: 20,
            urls_per_chunk: 10,
            by_host: false,
            rate_per_s: 2.0,
            burst: 2,
            lanes: 1,
            scope: starling_protocol::manifest::RateScope::Mesh,
            refusing: 0,
            refuse_rate: 0.0,
            retry_after_ms: 5_000,
            cooldown_margin_ms: 1_000,
            early_give_back: true,
            over_budget_expected: false,
            robots_txt: true,
        }
    }
}

/// A curator whose directory brings the projects in: the nodes trust no owner key and follow
/// the curator, whose signed directory (published just before the manifests) lists every
/// project. Off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CuratorSpec {
    /// Nodes follow a curator rather than trust the owners.
    pub enabled: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "custom".into(),
            description: String::new(),
            nodes: 20,
            items: 200,
            projects: 1,
            projects_per_node: 1,
            batch_items: 500,
            publish_at_ms: 5_000,
            duration_ms: 1_800_000,
            drain_ms: 20_000,
            lease_ms: 30_000,
            replication: 0,
            network: NetworkSpec::default(),
            engine: starling_protocol::EngineConfig::default(),
            work: WorkSpec::default(),
            churn: ChurnSpec::default(),
            faults: Vec::new(),
            nodes_spec: NodesSpec::default(),
            shards: ShardsSpec::default(),
            byzantine: ByzantineSpec::default(),
            check: CheckSpec::default(),
            sabotage: Sabotage::default(),
            curator: CuratorSpec::default(),
            hosts: None,
            verify: VerifySpec::default(),
        }
    }
}

/// Links and the gossip overlay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSpec {
    /// Typical minimum one-way latency; each link gets 0.5 to 1.5 times this.
    pub latency_min_ms: u64,
    /// Median of the long tail added to each message (log-normal).
    pub latency_tail_ms: f64,
    /// Spread (sigma) of the log-normal tail; 1.0 gives a p99 about 10x the median.
    pub latency_sigma: f64,
    /// Latency cap, so one message cannot stall forever.
    pub latency_max_ms: u64,
    /// Chance each message (gossip or sync) is lost.
    pub loss: f64,
    /// Uplink bandwidth per node in bytes per millisecond (0 = unlimited).
    pub bandwidth_bytes_per_ms: u64,
    /// Gossip mesh degree D.
    pub mesh_degree: u32,
    /// Below this many live mesh peers a node grafts new ones.
    pub mesh_degree_low: u32,
    /// Anti-entropy: each node pulls state from a peer this often (0 = only on join/heal).
    pub sync_interval_ms: u64,
    /// Message ids remembered per node for duplicate suppression.
    pub seen_max: usize,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            latency_min_ms: 20,
            latency_tail_ms: 15.0,
            latency_sigma: 1.0,
            latency_max_ms: 10_000,
            loss: 0.0,
            bandwidth_bytes_per_ms: 0,
            mesh_degree: 6,
            mesh_degree_low: 4,
            sync_interval_ms: 30_000,
            seen_max: 8_192,
        }
    }
}

/// How long work takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkSpec {
    /// Mean execution time of a crawl chunk.
    pub crawl_ms: u64,
    /// Time to fetch and store a replica for a seeding duty.
    pub seed_ms: u64,
    /// Each execution lasts its mean times a uniform factor in 1 ± jitter.
    pub jitter: f64,
    /// Chance an execution fails (retryably).
    pub fail_rate: f64,
}

impl Default for WorkSpec {
    fn default() -> Self {
        Self { crawl_ms: 5_000, seed_ms: 2_000, jitter: 0.5, fail_rate: 0.0 }
    }
}

/// Random churn: crashes (restart from snapshot) and graceful leaves (rejoin fresh).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnSpec {
    /// Churn events per minute across the whole mesh (0 = none).
    pub per_min: f64,
    /// Share of events that are crashes; the rest are graceful leaves.
    pub crash_share: f64,
    /// How long a node stays down before it restarts or rejoins.
    pub downtime_ms: u64,
    /// First churn event no earlier than this.
    pub from_ms: u64,
    /// No churn after this (0 = until the end: liveness mode).
    pub until_ms: u64,
    /// Never take more than this share of nodes down at once.
    pub down_max_share: f64,
}

impl Default for ChurnSpec {
    fn default() -> Self {
        Self {
            per_min: 0.0,
            crash_share: 0.5,
            downtime_ms: 20_000,
            from_ms: 10_000,
            until_ms: 0,
            down_max_share: 0.2,
        }
    }
}

/// A scheduled fault.
///
/// Read through `RawFault`: serde cannot refuse unknown keys in a struct with a flattened
/// field, and a misspelt key in `[[faults]]` must not be ignored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSpec {
    /// When it happens.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// What a scheduled fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Nodes below `split` (a share of the node count) cannot talk to the rest, both ways.
    Partition {
        /// Share of nodes on the first side.
        split: f64,
    },
    /// Messages from nodes below `split` to the rest are dropped; the other way works.
    OneWay {
        /// Share of nodes on the first side.
        split: f64,
    },
    /// One node is cut off from everyone.
    Isolate {
        /// Node index.
        node: u32,
    },
    /// Every partition ends; nodes pull state from a peer.
    Heal,
    /// A node crashes and restarts from its snapshot after `down_ms`.
    Crash {
        /// Node index.
        node: u32,
        /// Downtime.
        down_ms: u64,
    },
    /// A fault of one node's own for `for_ms`: its store cannot be written, its disk is full
    /// or its network is gone. Every execution it finishes in that time fails; the node
    /// reports the fault to its engine (`Input::LocalFault`) and back when it clears.
    NodeFault {
        /// Node index.
        node: u32,
        /// How long it lasts.
        for_ms: u64,
    },
    /// One node's clock is set `offset_ms` off the simulation's (negative: behind), as after
    /// a bad clock step; a clock set back stalls until real time catches up, since engine time
    /// never runs backwards.
    Clock {
        /// Node index.
        node: u32,
        /// The offset from now on.
        offset_ms: i64,
    },
    /// A site goes down for `for_ms`: crawl executions of a `share` of the items (by item
    /// id) fail as retryable on every node, as when robots.txt answers 503.
    SiteDown {
        /// Share of items on the site.
        share: f64,
        /// How long it lasts.
        for_ms: u64,
    },
    /// Each honest node that is up leaves gracefully, for good, with probability `share`: a
    /// project losing much of its mesh at once.
    Leave {
        /// Share of the up nodes that leave.
        share: f64,
    },
}

/// One `[[faults]]` table as written: every key any fault takes, so unknown keys are refused
/// with their line; `FaultSpec::try_from` then refuses keys the kind does not take and asks
/// for those it needs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at_ms: u64,
    kind: FaultTag,
    split: Option<f64>,
    node: Option<u32>,
    down_ms: Option<u64>,
    for_ms: Option<u64>,
    offset_ms: Option<i64>,
    share: Option<f64>,
}

/// The `kind` of a `[[faults]]` table.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultTag {
    Partition,
    OneWay,
    Isolate,
    Heal,
    Crash,
    NodeFault,
    Clock,
    SiteDown,
    Leave,
}

impl TryFrom<RawFault> for FaultSpec {
    type Error = String;

    fn try_from(raw: RawFault) -> Result<Self, String> {
        let (name, takes): (&str, &[&str]) = match raw.kind {
            FaultTag::Partition => ("partition", &["split"]),
            FaultTag::OneWay => ("one_way", &["split"]),
            FaultTag::Isolate => ("isolate", &["node"]),
            FaultTag::Heal => ("heal", &[]),
            FaultTag::Crash => ("crash", &["node", "down_ms"]),
            FaultTag::NodeFault => ("node_fault", &["node", "for_ms"]),
            FaultTag::Clock => ("clock", &["node", "offset_ms"]),
            FaultTag::SiteDown => ("site_down", &["share", "for_ms"]),
            FaultTag::Leave => ("leave", &["share"]),
        };
        let given = [
            ("split", raw.split.is_some()),
            ("node", raw.node.is_some()),
            ("down_ms", raw.down_ms.is_some()),
            ("for_ms", raw.for_ms.is_some()),
            ("offset_ms", raw.offset_ms.is_some()),
            ("share", raw.share.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(k, present)| *present && !takes.contains(k)) {
            let takes = ["at_ms", "kind"].iter().chain(takes).copied().collect::<Vec<_>>();
            return Err(format!(
                "`{key}` does not apply to kind = \"{name}\" (it takes {})",
                takes.join(", ")
            ));
        }
        let needs = |key: &str| format!("kind = \"{name}\" needs `{key}`");
        let split = || raw.split.ok_or_else(|| needs("split"));
        let node = || raw.node.ok_or_else(|| needs("node"));
        let kind = match raw.kind {
            FaultTag::Partition => FaultKind::Partition { split: split()? },
            FaultTag::OneWay => FaultKind::OneWay { split: split()? },
            FaultTag::Isolate => FaultKind::Isolate { node: node()? },
            FaultTag::Heal => FaultKind::Heal,
            FaultTag::Crash => FaultKind::Crash {
                node: node()?,
                down_ms: raw.down_ms.ok_or_else(|| needs("down_ms"))?,
            },
            FaultTag::NodeFault => FaultKind::NodeFault {
                node: node()?,
                for_ms: raw.for_ms.ok_or_else(|| needs("for_ms"))?,
            },
            FaultTag::Clock => FaultKind::Clock {
                node: node()?,
                offset_ms: raw.offset_ms.ok_or_else(|| needs("offset_ms"))?,
            },
            FaultTag::SiteDown => FaultKind::SiteDown {
                share: raw.share.ok_or_else(|| needs("share"))?,
                for_ms: raw.for_ms.ok_or_else(|| needs("for_ms"))?,
            },
            FaultTag::Leave => FaultKind::Leave { share: raw.share.ok_or_else(|| needs("share"))? },
        };
        Ok(Self { at_ms: raw.at_ms, kind })
    }
}

impl<'de> Deserialize<'de> for FaultSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Checks the kind inside the table's own visit, so a TOML error points at that
        /// table rather than at the whole `faults` array.
        struct Table;
        impl<'de> serde::de::Visitor<'de> for Table {
            type Value = FaultSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [[faults]] table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FaultSpec, A::Error> {
                let raw = RawFault::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                FaultSpec::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_map(Table)
    }
}

/// Neighbourhoods (see `starling_protocol::shard`): each project's owner splits it into
/// shards of about `members` of its nodes, giving its manifest the depth
/// `shard::depth_for(nodes in the project, members)` and sorting its batches by shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsSpec {
    /// Nodes a shard aims at (0: every project stays whole).
    pub members: u32,
    /// Every this often, each owner counts its project's nodes that are up and moves the
    /// depth as `shard::next_depth` says, with a new manifest version (0: the depth set at
    /// the start stays).
    pub recheck_ms: u64,
}

/// Per-node clock skew and slow nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodesSpec {
    /// Each node's clock is off by a uniform amount in ±this, so two clocks differ by up to
    /// twice this.
    pub skew_max_ms: u64,
    /// Allow clocks to differ by more than the engine's `skew_margin_ms` (refused otherwise):
    /// such a run tests the protocol outside what it promises.
    pub skew_beyond_margin: bool,
    /// Share of nodes that are slow.
    pub slow_share: f64,
    /// Slow nodes take this many times longer to work.
    pub slow_factor: f64,
    /// Slow nodes take this long extra to take in each message.
    pub slow_delay_ms: u64,
    /// Share of nodes that join late: each first comes up at a uniform time in
    /// `late_from_ms ..= late_until_ms` rather than in the first second.
    pub late_share: f64,
    /// Earliest first start of a late node.
    pub late_from_ms: u64,
    /// Latest first start of a late node.
    pub late_until_ms: u64,
}

impl Default for NodesSpec {
    fn default() -> Self {
        Self {
            skew_max_ms: 0,
            skew_beyond_margin: false,
            slow_share: 0.0,
            slow_factor: 3.0,
            slow_delay_ms: 50,
            late_share: 0.0,
            late_from_ms: 0,
            late_until_ms: 0,
        }
    }
}

/// Lying peers: the last `nodes` node indices run the real engine but their driver lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ByzantineSpec {
    /// How many liars.
    pub nodes: u32,
    /// Send claims with a forged signature (another node's key).
    pub forge: bool,
    /// Send claims at a later epoch while the holder's lease still runs.
    pub epoch_break: bool,
    /// Claim items and never do the work (and never renew).
    pub never_work: bool,
    /// Send receipts for items held or finished by others, with a bogus result, under a fresh
    /// claim of the item's epoch or of the one before it.
    pub false_receipt: bool,
    /// Date those receipts' claims back to time 0, so they outrank the epoch's real holder:
    /// the one attack signed data alone cannot refute (docs/protocol.md). Off in `byzantine`;
    /// on, the result checker must fail the run.
    pub backdate: bool,
    /// Valid presence heartbeats sent per second on top of the real ones (0 = none).
    pub flood_per_s: u32,
    /// Chance a liar reports a false result for a chunk it crawls (1 = always, a little
    /// above 0 = rarely, to stay unnoticed); false pages throughout.
    pub false_results: f64,
    /// Liars that check another liar's false result confirm it (colluding).
    pub collude: bool,
    /// Liars take seeding duties and report them ready without keeping the copy; challenged
    /// for a storage proof, they send their peers a renewal with a forged one.
    pub hoard: bool,
    /// How often each liar tries one of its lies.
    pub action_interval_ms: u64,
}

impl Default for ByzantineSpec {
    fn default() -> Self {
        Self {
            nodes: 0,
            forge: false,
            epoch_break: false,
            never_work: false,
            false_receipt: false,
            backdate: false,
            flood_per_s: 0,
            false_results: 0.0,
            collude: false,
            hoard: false,
            action_interval_ms: 2_000,
        }
    }
}

/// Invariant checking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckSpec {
    /// How often the checkers look at the world.
    pub interval_ms: u64,
    /// Two honest nodes of one component may both work on an item this long before it counts
    /// as a safety violation (claims in flight settle within it).
    pub settle_ms: u64,
    /// All honest nodes must agree this long after the last fault heals.
    pub convergence_bound_ms: u64,
    /// Items whose state changed more recently than this are left out of the agreement check.
    pub quiet_ms: u64,
    /// Fail the run if an item is not done at the end, or failed for the mesh (the simulator
    /// models no fault of an item's own, so none may fail).
    pub no_loss: bool,
}

impl Default for CheckSpec {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            settle_ms: 5_000,
            convergence_bound_ms: 120_000,
            quiet_ms: 3_000,
            no_loss: true,
        }
    }
}

/// Deliberate breakage in the driver, to prove each checker can fail. Never set in real
/// scenarios.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sabotage {
    /// Honest nodes ignore `CancelWork` and keep working after losing a claim.
    pub ignore_cancel: bool,
    /// Every node silently drops `StartWork` for the first this many items.
    pub drop_items: u32,
    /// From `deaf_from_ms` on, this node silently drops everything it receives, while the
    /// checkers still count it as connected.
    pub deaf_node: Option<u32>,
    /// When the deaf node goes deaf.
    pub deaf_from_ms: u64,
    /// Nodes with a `node_fault` do not tell their engine: they go on claiming and report
    /// each execution the fault spoils as a final failure of the item (what nodes did before
    /// local faults were told apart from the item's).
    pub local_faults_as_failures: bool,
    /// The curator's directory lists no project, so nodes that follow it (and trust no owner)
    /// never take the items in: the curated scenario without its listing.
    pub unlisted_directory: bool,
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Node count.
    pub nodes: Option<u32>,
    /// Item count.
    pub items: Option<u32>,
    /// Message loss.
    pub loss: Option<f64>,
    /// Churn events per minute.
    pub churn_per_min: Option<f64>,
    /// Run length.
    pub duration_ms: Option<u64>,
    /// Members per shard to aim at (0: projects stay whole).
    pub shard_members: Option<u32>,
}

impl Scenario {
    /// How deep each project is split at the start: `shard::depth_for` of the nodes in a
    /// project that are up then and `shards.members` (0 when that is 0).
    pub fn shard_depth(&self) -> u8 {
        if self.shards.members == 0 {
            return 0;
        }
        // The nodes up at the start: late joiners come later.
        let first = f64::from(self.nodes) * (1.0 - self.nodes_spec.late_share.clamp(0.0, 1.0));
        let members =
            first as u64 * u64::from(self.projects_per_node) / u64::from(self.projects.max(1));
        starling_protocol::shard::depth_for(members, self.shards.members)
    }

    /// Parses scenario TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse(origin.into(), parse_error_line(text, &e)))?;
        s.validate().map_err(|e| e.with_origin(origin))?;
        Ok(s)
    }

    /// A built-in scenario by name, or a scenario file by path.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml(text, name_or_path);
        }
        let path = Path::new(name_or_path);
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, name_or_path),
            Err(_) => Err(ScenarioError::NotFound(
                name_or_path.into(),
                BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            )),
        }
    }

    /// Applies command-line overrides, then checks the result still makes sense.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ScenarioError> {
        if let Some(n) = o.nodes {
            self.nodes = n;
            self.byzantine.nodes = self.byzantine.nodes.min(n / 3);
            // Keep every project with subscribers when the mesh shrinks.
            self.projects = self.projects.min((n / 4).max(1));
            self.projects_per_node = self.projects_per_node.min(self.projects);
        }
        if let Some(i) = o.items {
            self.items = i;
        }
        if let Some(l) = o.loss {
            self.network.loss = l;
        }
        if let Some(c) = o.churn_per_min {
            self.churn.per_min = c;
        }
        if let Some(d) = o.duration_ms {
            self.duration_ms = d;
        }
        if let Some(m) = o.shard_members {
            self.shards.members = m;
        }
        self.validate().map_err(|e| e.with_flags(o))
    }
}

impl ScenarioError {
    /// Names the file or built-in the scenario came from, instead of the scenario's own name.
    pub fn with_origin(mut self, from: &str) -> Self {
        if let ScenarioError::Invalid { origin, .. } = &mut self {
            *origin = from.into();
        }
        self
    }

    /// Adds the command-line flags that set the offending keys, so `--nodes 10000000` is
    /// blamed on the flag rather than on a file that never said it.
    fn with_flags(mut self, o: &Overrides) -> Self {
        let ScenarioError::Invalid { key, .. } = &mut self else { return self };
        let flags = [
            ("nodes", "--nodes", o.nodes.is_some()),
            ("items", "--items", o.items.is_some()),
            ("network.loss", "--loss", o.loss.is_some()),
            ("churn.per_min", "--churn", o.churn_per_min.is_some()),
            ("duration_ms", "--duration", o.duration_ms.is_some()),
        ];
        let named: Vec<&str> = flags
            .iter()
            .filter(|(k, _, set)| *set && key.split(", ").any(|part| part == *k))
            .map(|(_, flag, _)| *flag)
            .collect();
        if !named.is_empty() {
            key.push_str(&format!(" (set by {})", named.join(" ")));
        }
        self
    }
}

/// A TOML or schema error as one line: where (line, and the table it is in) and what.
fn parse_error_line(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else { return what };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    // Up to the end of the line, so an error spanning a table header names that table.
    let line_end = text[before.len()..].find('\n').map_or(text.len(), |i| before.len() + i);
    match table_at(&text[..line_end]) {
        Some(table) => format!("line {line}, in {table}: {what}"),
        None => format!("line {line}: {what}"),
    }
}

/// The table the end of `before` is in: `[network]`, or `faults[2]` for the third
/// `[[faults]]`; `None` at the top level.
fn table_at(before: &str) -> Option<String> {
    let mut table = None;
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for line in before.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let name = name.trim().to_string();
            let i = match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    arrays.push((name.clone(), 1));
                    0
                }
            };
            table = Some(format!("{name}[{i}]"));
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            if name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                table = Some(format!("[{name}]"));
            }
        }
    }
    table
}

/// Parses a duration such as `90`, `90s`, `1500ms`, `10m` or `2h` (bare numbers are seconds).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("not a duration: {s:?} (try 90s, 10m)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("90"), Ok(90_000));
        assert_eq!(parse_duration_ms("1500ms"), Ok(1_500));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("soon").is_err());
    }

    /// The parse error `toml` gives; it must be one line.
    fn parse_error(toml: &str) -> String {
        match Scenario::from_toml(toml, "test.toml") {
            Err(ScenarioError::Parse(origin, what)) => {
                assert_eq!(origin, "test.toml");
                assert!(!what.contains('\n'), "{toml:?}: not one line: {what}");
                what
            }
            other => panic!("{toml:?}: expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_key_at_the_top_level_is_refused() {
        let what = parse_error("nodes = 3\nnodez = 3");
        assert!(what.starts_with("line 2: unknown field `nodez`"), "{what}");
    }

    /// Paths of every table in a scenario, found from the defaults so a table added later is
    /// covered too.
    fn table_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            if let toml::Value::Table(inner) = value {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                table_paths(inner, &path, out);
                out.push(path);
            }
        }
    }

    #[test]
    fn an_unknown_key_in_every_nested_table_is_refused() {
        let defaults = toml::Table::try_from(Scenario::default()).expect("defaults serialise");
        let mut paths = Vec::new();
        table_paths(&defaults, "", &mut paths);
        assert!(paths.len() >= 8, "tables found: {paths:?}");
        for path in paths {
            let what = parse_error(&format!("nodes = 20\n[{path}]\nbogus_key = 1\n"));
            assert!(
                what.starts_with(&format!("line 3, in [{path}]: unknown field `bogus_key`")),
                "[{path}]: {what}"
            );
        }
    }

    #[test]
    fn an_unknown_key_in_faults_is_refused() {
        let what = parse_error(
            "[[faults]]\nat_ms = 5\nkind = \"heal\"\n\n\
             [[faults]]\nat_ms = 10\nkind = \"partition\"\nsplt = 0.5\n",
        );
        assert!(what.starts_with("line 8, in faults[1]: unknown field `splt`"), "{what}");
    }

    #[test]
    fn a_key_the_fault_kind_does_not_take_is_refused() {
        let what = parse_error(
            "[[faults]]\nat_ms = 5\nkind = \"isolate\"\nnode = 1\n\
             [[faults]]\nat_ms = 10\nkind = \"heal\"\nnode = 1\n",
        );
        assert!(what.starts_with("line 5, in faults[1]: `node` does not apply"), "{what}");
    }

    #[test]
    fn a_key_the_fault_kind_needs_is_required() {
        let what = parse_error("[[faults]]\nat_ms = 5\nkind = \"crash\"\nnode = 1\n");
        assert_eq!(what, "line 1, in faults[0]: kind = \"crash\" needs `down_ms`");
        let what = parse_error("[[faults]]\nkind = \"heal\"\n");
        assert!(what.contains("missing field `at_ms`"), "{what}");
    }

    #[test]
    fn faults_read_back_what_they_write() {
        let s = Scenario::load("partition-heal").expect("built-in loads");
        let text = toml::to_string(&s).expect("serialises");
        assert_eq!(Scenario::from_toml(&text, "again").expect("reads back"), s);
    }

    #[test]
    fn overrides_apply_and_keep_projects_populated() {
        let mut s = Scenario::load("scale-10k").expect("built-in loads");
        s.apply_overrides(&Overrides {
            nodes: Some(40),
            items: Some(100),
            loss: Some(0.1),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!((s.nodes, s.items, s.projects), (40, 100, 10));
        assert_eq!(s.network.loss, 0.1);
        let bad = Overrides { loss: Some(1.5), ..Default::default() };
        assert!(s.apply_overrides(&bad).is_err());
    }
}
