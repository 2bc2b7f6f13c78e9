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
pub const BUILTIN: [(&str, &str); 7] = [
    ("steady", include_str!("../scenarios/steady.toml")),
    ("lossy", include_str!("../scenarios/lossy.toml")),
    ("churn", include_str!("../scenarios/churn.toml")),
    ("partition-heal", include_str!("../scenarios/partition-heal.toml")),
    ("byzantine", include_str!("../scenarios/byzantine.toml")),
    ("fault-50", include_str!("../scenarios/fault-50.toml")),
    ("scale-10k", include_str!("../scenarios/scale-10k.toml")),
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
    /// Lying peers.
    pub byzantine: ByzantineSpec,
    /// Invariant checking.
    pub check: CheckSpec,
    /// Deliberate breakage at the driver level, for showing the checkers fail.
    pub sabotage: Sabotage,
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
            byzantine: ByzantineSpec::default(),
            check: CheckSpec::default(),
            sabotage: Sabotage::default(),
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// When it happens.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// What a scheduled fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
}

impl Default for NodesSpec {
    fn default() -> Self {
        Self {
            skew_max_ms: 0,
            skew_beyond_margin: false,
            slow_share: 0.0,
            slow_factor: 3.0,
            slow_delay_ms: 50,
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
    /// Send receipts for items held by others, with a bogus result.
    pub false_receipt: bool,
    /// Valid presence heartbeats sent per second on top of the real ones (0 = none).
    pub flood_per_s: u32,
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
            flood_per_s: 0,
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
    /// Fail the run if an item is not done at the end.
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
}

impl Scenario {
    /// Parses scenario TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(origin.into(), e.to_string()))?;
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
