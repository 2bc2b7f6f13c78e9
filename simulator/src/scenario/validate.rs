//! Scenario validation: the allowed range of every key and the size caps.
//!
//! A scenario comes from a file, from command-line overrides or from code; all three end here
//! before a world is built. A value outside its range is an error naming the key, the value
//! and what is allowed: never a panic later (`NaN` in `random_bool`), a silent clamp, a run
//! that spins without simulated time passing (`presence_interval_ms = 0`), arithmetic that
//! overflows (`u64::MAX` durations), or a world too big to allocate. The first rule broken is
//! reported; sizes are checked first, so a huge file fails on its size.
//!
//! Validation only reads the scenario: a valid scenario runs exactly as it did before.

use std::fmt::Display;

use starling_protocol::engine::LANE_COOLDOWN_MAX_MS;
use starling_protocol::item::{BATCH_ITEMS_MAX, CHUNK_URLS_MAX, LANES_MAX};
use starling_protocol::manifest::{
    BURST_MAX, LEASE_MS_MAX, LEASE_MS_MIN, RATE_PER_S_MILLI_MAX, REPLICATION_MAX,
};

use super::{FaultKind, Scenario, ScenarioError};

/// Most nodes in a world (ten times `scale-10k`; memory is capped separately below).
pub const NODES_MAX: u32 = 100_000;
/// Most items in a world.
pub const ITEMS_MAX: u32 = 10_000_000;
/// Most projects, each with an owner key, a manifest and a gossip topic.
pub const PROJECTS_MAX: u32 = 10_000;
/// Most scheduled faults.
pub const FAULTS_MAX: usize = 10_000;
/// Longest time any key may name (30 days), far from where `u64` millisecond sums overflow.
pub const TIME_MAX_MS: u64 = 30 * 24 * 3_600_000;
/// Longest latency, latency tail or per-message delay (10 minutes).
pub const LATENCY_MAX_MS: u64 = 600_000;
/// Largest estimated memory for a world, from [`Scenario::estimated_bytes`] (16 GiB).
pub const MEMORY_MAX_BYTES: u64 = 16 << 30;

/// Memory per item an engine tracks, one record per node per item of its projects: the bulk
/// of a large world (measured: ~480-570 B in worlds of 80 k to 1 M records).
const RECORD_BYTES: u64 = 600;
/// Memory per node beyond its item records: engine, mesh, caches, messages in flight. Set so
/// the estimate is not below any measured peak (`scale-10k`: 1.72 GB measured, 1.78 GB
/// estimated; smaller worlds are overestimated more).
const NODE_BYTES: u64 = 48 << 10;
/// Memory per item in the driver: its record, index entry and batch.
const ITEM_BYTES: u64 = 256;
/// Memory of an empty world: trace buffers, score memo, event wheel.
const BASE_BYTES: u64 = 64 << 20;

/// Largest `nodes_spec.slow_factor`.
const SLOW_FACTOR_MAX: f64 = 1_000.0;
/// Largest `network.latency_sigma` (already a p99 of ~10^10 times the median).
const SIGMA_MAX: f64 = 10.0;
/// Most churn events per minute: one per simulated millisecond, the finest gap the model has.
const CHURN_PER_MIN_MAX: f64 = 60_000.0;
/// Most flood heartbeats per second per liar: one per simulated millisecond.
const FLOOD_PER_S_MAX: u32 = 1_000;
/// Largest `network.mesh_degree`.
const MESH_DEGREE_MAX: u32 = 256;
/// Largest `network.seen_max` (the seen-caches count in `u32`).
const SEEN_MAX: usize = u32::MAX as usize;
/// Most hosts in `[hosts]`: the most a project has lanes for (the engine's `LANE_HOSTS_MAX`).
const HOSTS_MAX: u32 = 4_096;
/// Largest `work.jitter` (the work model never lets a duration reach zero).
const JITTER_MAX: f64 = 0.99;

/// A broken rule: key, value, what is allowed. Made into a [`ScenarioError`] with its origin.
struct Bad {
    key: String,
    value: String,
    allowed: String,
}

type Rule = Result<(), Bad>;

fn bad(key: impl Display, value: impl Display, allowed: impl Display) -> Rule {
    Err(Bad { key: key.to_string(), value: value.to_string(), allowed: allowed.to_string() })
}

/// `lo ..= hi` for an integer key.
fn int(key: impl Display, v: u64, lo: u64, hi: u64) -> Rule {
    if (lo..=hi).contains(&v) { Ok(()) } else { bad(key, v, format!("must be in {lo} ..= {hi}")) }
}

/// A time in milliseconds: `lo ..= TIME_MAX_MS`.
fn ms(key: impl Display, v: u64, lo: u64) -> Rule {
    int(key, v, lo, TIME_MAX_MS)
}

/// A finite number in `lo ..= hi`.
fn num(key: impl Display, v: f64, lo: f64, hi: f64) -> Rule {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        bad(key, v, format!("must be a finite number in {lo} ..= {hi}"))
    }
}

/// A share or probability: `0 ..= 1`.
fn share(key: impl Display, v: f64) -> Rule {
    num(key, v, 0.0, 1.0)
}

impl Scenario {
    /// Checks every value against its allowed range and the size caps; the error names the
    /// first key that breaks a rule. [`Scenario::from_toml`], [`Scenario::load`] and
    /// [`Scenario::apply_overrides`] call it; call it on a scenario built in code.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.rules().map_err(|b| ScenarioError::Invalid {
            origin: self.name.clone(),
            key: b.key,
            value: b.value,
            allowed: b.allowed,
        })
    }

    /// Estimated peak memory of this world, in bytes, dominated by the item records the
    /// engines keep: `nodes × projects_per_node × ⌈items / projects⌉`. Calibrated on peak
    /// RSS of runs from 50 to 10,000 nodes; errs high, never low, on those.
    pub fn estimated_bytes(&self) -> u64 {
        let nodes = u64::from(self.nodes);
        let items = u64::from(self.items);
        let per_project = items.div_ceil(u64::from(self.projects.max(1)));
        // A node of a split project keeps its own shard's items.
        let per_project = per_project >> self.shard_depth();
        let records =
            nodes.saturating_mul(self.projects_per_node.into()).saturating_mul(per_project);
        // Saturating: this may be asked of a scenario that breaks the size caps.
        BASE_BYTES
            .saturating_add(records.saturating_mul(RECORD_BYTES))
            .saturating_add(nodes * NODE_BYTES)
            .saturating_add(items * ITEM_BYTES)
    }

    fn rules(&self) -> Rule {
        self.size_rules()?;
        self.time_rules()?;
        self.network_rules()?;
        self.engine_rules()?;
        self.work_rules()?;
        self.churn_rules()?;
        self.fault_rules()?;
        self.nodes_spec_rules()?;
        self.byzantine_rules()?;
        self.check_rules()?;
        self.host_rules()?;
        self.verify_rules()?;
        self.sabotage_rules()
    }

    /// Sizes, before anything else: nothing is allocated for a world that cannot fit.
    fn size_rules(&self) -> Rule {
        int("nodes", self.nodes.into(), 2, NODES_MAX.into())?;
        int("items", self.items.into(), 1, ITEMS_MAX.into())?;
        int("projects", self.projects.into(), 1, PROJECTS_MAX.into())?;
        if !(1..=self.projects).contains(&self.projects_per_node) {
            return bad(
                "projects_per_node",
                self.projects_per_node,
                format!("must be in 1 ..= projects ({})", self.projects),
            );
        }
        int("batch_items", self.batch_items.into(), 1, BATCH_ITEMS_MAX as u64)?;
        int("shards.members", self.shards.members.into(), 0, NODES_MAX.into())?;
        ms("shards.recheck_ms", self.shards.recheck_ms, 0)?;
        if self.shards.recheck_ms > 0 && self.shards.recheck_ms < 1_000 {
            return bad("shards.recheck_ms", self.shards.recheck_ms, "0 (off), or at least 1000");
        }
        if self.faults.len() > FAULTS_MAX {
            return bad("faults", self.faults.len(), format!("at most {FAULTS_MAX} faults"));
        }
        let bytes = self.estimated_bytes();
        if bytes > MEMORY_MAX_BYTES {
            return bad(
                "nodes, items, projects, projects_per_node",
                format!(
                    "{}, {}, {}, {}",
                    self.nodes, self.items, self.projects, self.projects_per_node
                ),
                format!(
                    "needs about {} GiB (each node keeps a record of every item of its \
                     projects), over the cap of {} GiB: use fewer nodes or items, or more \
                     projects",
                    bytes >> 30,
                    MEMORY_MAX_BYTES >> 30
                ),
            );
        }
        Ok(())
    }

    fn time_rules(&self) -> Rule {
        ms("duration_ms", self.duration_ms, 1)?;
        if self.publish_at_ms >= self.duration_ms {
            return bad(
                "publish_at_ms",
                self.publish_at_ms,
                format!("must be before duration_ms ({})", self.duration_ms),
            );
        }
        ms("drain_ms", self.drain_ms, 0)?;
        int("lease_ms", self.lease_ms, LEASE_MS_MIN, LEASE_MS_MAX)?;
        int("replication", self.replication.into(), 0, REPLICATION_MAX.into())
    }

    fn network_rules(&self) -> Rule {
        let n = &self.network;
        int("network.latency_min_ms", n.latency_min_ms, 0, LATENCY_MAX_MS)?;
        num("network.latency_tail_ms", n.latency_tail_ms, 0.0, LATENCY_MAX_MS as f64)?;
        num("network.latency_sigma", n.latency_sigma, 0.0, SIGMA_MAX)?;
        if !(n.latency_min_ms.max(1)..=LATENCY_MAX_MS).contains(&n.latency_max_ms) {
            return bad(
                "network.latency_max_ms",
                n.latency_max_ms,
                format!(
                    "must be in 1 ..= {LATENCY_MAX_MS} and at least network.latency_min_ms ({})",
                    n.latency_min_ms
                ),
            );
        }
        if !(n.loss.is_finite() && (0.0..1.0).contains(&n.loss)) {
            return bad("network.loss", n.loss, "must be a finite number in 0 .. 1 (1 excluded)");
        }
        int("network.mesh_degree", n.mesh_degree.into(), 1, MESH_DEGREE_MAX.into())?;
        if n.mesh_degree_low > n.mesh_degree {
            return bad(
                "network.mesh_degree_low",
                n.mesh_degree_low,
                format!("must be at most network.mesh_degree ({})", n.mesh_degree),
            );
        }
        ms("network.sync_interval_ms", n.sync_interval_ms, 0)?;
        int("network.seen_max", n.seen_max as u64, 1, SEEN_MAX as u64)
    }

    fn engine_rules(&self) -> Rule {
        let e = &self.engine;
        int("engine.capacity", e.capacity.into(), 1, u16::MAX.into())?;
        int("engine.candidates", e.candidates.into(), 1, u32::MAX.into())?;
        ms("engine.presence_interval_ms", e.presence_interval_ms, 1)?;
        ms("engine.presence_ttl_ms", e.presence_ttl_ms, 1)?;
        if e.presence_ttl_ms <= e.presence_interval_ms {
            return bad(
                "engine.presence_ttl_ms",
                e.presence_ttl_ms,
                format!(
                    "must be more than engine.presence_interval_ms ({}), or live peers expire \
                     between heartbeats",
                    e.presence_interval_ms
                ),
            );
        }
        ms("engine.settle_ms", e.settle_ms, 0)?;
        ms("engine.claim_settle_ms", e.claim_settle_ms, 0)?;
        ms("engine.warmup_ms", e.warmup_ms, 0)?;
        ms("engine.skew_margin_ms", e.skew_margin_ms, 0)?;
        ms("engine.widen_ms", e.widen_ms, 0)?;
        ms("engine.relay_lease_ms", e.relay_lease_ms, 1)
    }

    fn work_rules(&self) -> Rule {
        let w = &self.work;
        ms("work.crawl_ms", w.crawl_ms, 1)?;
        ms("work.seed_ms", w.seed_ms, 1)?;
        num("work.jitter", w.jitter, 0.0, JITTER_MAX)?;
        share("work.fail_rate", w.fail_rate)
    }

    fn churn_rules(&self) -> Rule {
        let c = &self.churn;
        num("churn.per_min", c.per_min, 0.0, CHURN_PER_MIN_MAX)?;
        share("churn.crash_share", c.crash_share)?;
        ms("churn.downtime_ms", c.downtime_ms, 1)?;
        ms("churn.from_ms", c.from_ms, 0)?;
        ms("churn.until_ms", c.until_ms, 0)?;
        share("churn.down_max_share", c.down_max_share)
    }

    fn fault_rules(&self) -> Rule {
        for (i, f) in self.faults.iter().enumerate() {
            ms(format!("faults[{i}].at_ms"), f.at_ms, 0)?;
            match f.kind {
                FaultKind::Partition { split } | FaultKind::OneWay { split } => {
                    if !(split.is_finite() && split > 0.0 && split < 1.0) {
                        return bad(
                            format!("faults[{i}].split"),
                            split,
                            "must be a number in 0 .. 1, both ends excluded (each side needs \
                             nodes)",
                        );
                    }
                }
                FaultKind::Isolate { node } => {
                    self.node_index(format!("faults[{i}].node"), node)?
                }
                FaultKind::Crash { node, down_ms } => {
                    self.node_index(format!("faults[{i}].node"), node)?;
                    ms(format!("faults[{i}].down_ms"), down_ms, 1)?;
                }
                FaultKind::Heal => {}
                FaultKind::NodeFault { node, for_ms } => {
                    self.node_index(format!("faults[{i}].node"), node)?;
                    ms(format!("faults[{i}].for_ms"), for_ms, 1)?;
                }
                FaultKind::Clock { node, offset_ms } => {
                    self.node_index(format!("faults[{i}].node"), node)?;
                    let margin = self.engine.skew_margin_ms;
                    if offset_ms.unsigned_abs() > TIME_MAX_MS {
                        return bad(
                            format!("faults[{i}].offset_ms"),
                            offset_ms,
                            format!("must be within ±{TIME_MAX_MS}"),
                        );
                    }
                    if offset_ms.unsigned_abs() * 2 > margin && !self.nodes_spec.skew_beyond_margin
                    {
                        return bad(
                            format!("faults[{i}].offset_ms"),
                            offset_ms,
                            format!(
                                "is beyond the skew margin {margin} ms (engine.skew_margin_ms): \
                                 set skew_beyond_margin = true in [nodes_spec] to run it"
                            ),
                        );
                    }
                }
                FaultKind::SiteDown { share: s, for_ms } => {
                    share(format!("faults[{i}].share"), s)?;
                    ms(format!("faults[{i}].for_ms"), for_ms, 1)?;
                }
                FaultKind::Leave { share: s } => share(format!("faults[{i}].share"), s)?,
            }
        }
        Ok(())
    }

    fn node_index(&self, key: String, node: u32) -> Rule {
        if node < self.nodes {
            Ok(())
        } else {
            bad(key, node, format!("must be a node index in 0 ..= {}", self.nodes - 1))
        }
    }

    fn nodes_spec_rules(&self) -> Rule {
        let s = &self.nodes_spec;
        ms("nodes_spec.skew_max_ms", s.skew_max_ms, 0)?;
        let margin = self.engine.skew_margin_ms;
        if 2 * s.skew_max_ms > margin && !s.skew_beyond_margin {
            return bad(
                "nodes_spec.skew_max_ms",
                s.skew_max_ms,
                format!(
                    "skew ±{skew} ms (two clocks up to {apart} ms apart) is beyond the skew \
                     margin {margin} ms (engine.skew_margin_ms): keep skew_max_ms at most {half}, \
                     or set skew_beyond_margin = true in [nodes_spec]",
                    skew = s.skew_max_ms,
                    apart = 2 * s.skew_max_ms,
                    half = margin / 2,
                ),
            );
        }
        share("nodes_spec.late_share", s.late_share)?;
        ms("nodes_spec.late_until_ms", s.late_until_ms, s.late_from_ms)?;
        share("nodes_spec.slow_share", s.slow_share)?;
        num("nodes_spec.slow_factor", s.slow_factor, 1.0, SLOW_FACTOR_MAX)?;
        int("nodes_spec.slow_delay_ms", s.slow_delay_ms, 0, LATENCY_MAX_MS)
    }

    fn byzantine_rules(&self) -> Rule {
        let b = &self.byzantine;
        if b.nodes >= self.nodes {
            return bad(
                "byzantine.nodes",
                b.nodes,
                format!("must be less than nodes ({}): at least one honest node", self.nodes),
            );
        }
        int("byzantine.flood_per_s", b.flood_per_s.into(), 0, FLOOD_PER_S_MAX.into())?;
        share("byzantine.false_results", b.false_results)?;
        ms("byzantine.action_interval_ms", b.action_interval_ms, 1)
    }

    /// The `[verify]` table: a policy a manifest may carry, and a site model.
    fn verify_rules(&self) -> Rule {
        let v = &self.verify;
        int("verify.sample_milli", v.sample_milli.into(), 0, 1_000)?;
        let strikes = starling_protocol::manifest::STRIKES_MAX;
        int("verify.strikes", v.strikes.into(), 1, strikes.into())?;
        int("verify.urls_per_chunk", v.urls_per_chunk.into(), 1, CHUNK_URLS_MAX as u64)?;
        share("verify.changing_share", v.changing_share)?;
        ms("verify.change_every_ms", v.change_every_ms, 1)
    }

    fn check_rules(&self) -> Rule {
        let c = &self.check;
        ms("check.interval_ms", c.interval_ms, 1)?;
        ms("check.settle_ms", c.settle_ms, 0)?;
        ms("check.convergence_bound_ms", c.convergence_bound_ms, 1)?;
        ms("check.quiet_ms", c.quiet_ms, 0)
    }

    /// The `[hosts]` table: a rate policy a manifest may carry, and one project (a host's
    /// budget is a project's; the site checks add up one project's requests).
    fn host_rules(&self) -> Rule {
        let Some(h) = &self.hosts else { return Ok(()) };
        if self.projects != 1 {
            return bad("projects", self.projects, "must be 1 with a [hosts] table");
        }
        int("hosts.count", h.count.into(), 1, HOSTS_MAX.into())?;
        int("hosts.urls_per_chunk", h.urls_per_chunk.into(), 1, CHUNK_URLS_MAX as u64)?;
        let max = f64::from(RATE_PER_S_MILLI_MAX) / 1_000.0;
        num("hosts.rate_per_s", h.rate_per_s, 0.001, max)?;
        int("hosts.burst", h.burst.into(), 1, BURST_MAX.into())?;
        int("hosts.lanes", h.lanes.into(), 1, LANES_MAX.into())?;
        int("hosts.refusing", h.refusing.into(), 0, h.count.into())?;
        share("hosts.refuse_rate", h.refuse_rate)?;
        int("hosts.retry_after_ms", h.retry_after_ms, 1, LANE_COOLDOWN_MAX_MS)?;
        ms("hosts.cooldown_margin_ms", h.cooldown_margin_ms, 0)
    }

    fn sabotage_rules(&self) -> Rule {
        if let Some(node) = self.sabotage.deaf_node {
            self.node_index("sabotage.deaf_node".into(), node)?;
        }
        ms("sabotage.deaf_from_ms", self.sabotage.deaf_from_ms, 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::scenario::{Overrides, Scenario, ScenarioError};

    /// The range error `toml` (on top of the defaults) gives, as (key, value, whole line).
    fn refused(toml: &str) -> (String, String, String) {
        match Scenario::from_toml(toml, "test.toml") {
            Err(e @ ScenarioError::Invalid { .. }) => {
                let line = e.to_string();
                assert!(!line.contains('\n'), "{toml:?}: not one line: {line}");
                let ScenarioError::Invalid { key, value, .. } = e else { unreachable!() };
                (key, value, line)
            }
            other => panic!("{toml:?}: expected a range error, got {other:?}"),
        }
    }

    #[test]
    fn nan_slow_share_is_refused() {
        let (key, value, line) = refused("[nodes_spec]\nslow_share = nan");
        assert_eq!((key.as_str(), value.as_str()), ("nodes_spec.slow_share", "NaN"));
        assert!(line.starts_with("scenario test.toml: ") && line.contains("0 ..= 1"), "{line}");
    }

    #[test]
    fn nan_crash_share_is_refused() {
        let (key, value, _) = refused("[churn]\nper_min = 6.0\ncrash_share = nan");
        assert_eq!((key.as_str(), value.as_str()), ("churn.crash_share", "NaN"));
    }

    #[test]
    fn nan_and_negative_latency_are_refused() {
        let (key, value, _) = refused("[network]\nlatency_tail_ms = nan");
        assert_eq!((key.as_str(), value.as_str()), ("network.latency_tail_ms", "NaN"));
        let (key, value, _) = refused("[network]\nlatency_tail_ms = -5.0");
        assert_eq!((key.as_str(), value.as_str()), ("network.latency_tail_ms", "-5"));
        let (key, value, _) = refused("[network]\nlatency_sigma = inf");
        assert_eq!((key.as_str(), value.as_str()), ("network.latency_sigma", "inf"));
    }

    #[test]
    fn split_outside_the_open_unit_range_is_refused() {
        for (kind, split) in [("partition", "1.5"), ("partition", "0.0"), ("one_way", "1.0")] {
            let toml = format!(
                "[[faults]]\nat_ms = 1\nkind = \"heal\"\n\
                 [[faults]]\nat_ms = 9\nkind = \"{kind}\"\nsplit = {split}"
            );
            let (key, _, line) = refused(&toml);
            assert_eq!(key, "faults[1].split", "{line}");
            assert!(line.contains("0 .. 1"), "{line}");
        }
        let (_, value, _) = refused("[[faults]]\nat_ms = 9\nkind = \"partition\"\nsplit = nan");
        assert_eq!(value, "NaN");
    }

    #[test]
    fn zero_presence_interval_is_refused() {
        let (key, value, line) = refused("[engine]\npresence_interval_ms = 0");
        assert_eq!((key.as_str(), value.as_str()), ("engine.presence_interval_ms", "0"));
        assert!(line.contains("1 ..= "), "{line}");
    }

    #[test]
    fn presence_ttl_within_one_interval_is_refused() {
        let (key, _, line) =
            refused("[engine]\npresence_interval_ms = 5000\npresence_ttl_ms = 5000");
        assert_eq!(key, "engine.presence_ttl_ms");
        assert!(line.contains("presence_interval_ms (5000)"), "{line}");
    }

    #[test]
    fn times_past_the_cap_are_refused() {
        let (key, _, _) = refused("duration_ms = 9_223_372_036_854_775_807");
        assert_eq!(key, "duration_ms");
        let (key, _, _) = refused("[engine]\npresence_ttl_ms = 9_223_372_036_854_775_807");
        assert_eq!(key, "engine.presence_ttl_ms");
        let (key, _, _) = refused("publish_at_ms = 1_800_000");
        assert_eq!(key, "publish_at_ms", "publishing at the hard end");
    }

    #[test]
    fn fault_nodes_must_exist() {
        let (key, _, line) =
            refused("nodes = 10\n[[faults]]\nat_ms = 9\nkind = \"isolate\"\nnode = 10");
        assert_eq!(key, "faults[0].node");
        assert!(line.contains("0 ..= 9"), "{line}");
        let (key, _, _) = refused("nodes = 10\n[sabotage]\ndeaf_node = 12");
        assert_eq!(key, "sabotage.deaf_node");
    }

    #[test]
    fn ten_million_nodes_are_refused_on_the_node_cap() {
        let (key, value, line) = refused("nodes = 10_000_000\nitems = 10");
        assert_eq!((key.as_str(), value.as_str()), ("nodes", "10000000"));
        assert!(line.contains("2 ..= 100000"), "{line}");
    }

    #[test]
    fn sizes_within_each_cap_are_refused_on_memory() {
        // Every engine would track all 10 million items of the one project.
        let (key, _, line) = refused("nodes = 1_000\nitems = 10_000_000");
        assert_eq!(key, "nodes, items, projects, projects_per_node");
        assert!(line.contains("GiB") && line.contains("more projects"), "{line}");
        // The same items over enough projects fit.
        Scenario::from_toml("nodes = 1_000\nitems = 10_000_000\nprojects = 5_000", "ok")
            .expect("2,000 item records per node fit");
    }

    #[test]
    fn scale_10k_is_estimated_near_its_measured_size() {
        let s = Scenario::load("scale-10k").expect("built-in loads");
        let gb = s.estimated_bytes() as f64 / 1e9;
        assert!((1.72..=2.0).contains(&gb), "scale-10k estimated at {gb:.2} GB, measured 1.72");
    }

    #[test]
    fn skew_beyond_the_margin_is_refused() {
        let (key, value, line) = refused("[nodes_spec]\nskew_max_ms = 600");
        assert_eq!((key.as_str(), value.as_str()), ("nodes_spec.skew_max_ms", "600"));
        assert!(line.contains("skew ±600 ms"), "{line}");
        assert!(line.contains("beyond the skew margin 1000 ms"), "{line}");
        assert!(line.contains("skew_beyond_margin = true"), "{line}");
        // Clocks at most the margin apart are fine, and so is a wider margin.
        Scenario::from_toml("[nodes_spec]\nskew_max_ms = 500", "ok").expect("within the margin");
        Scenario::from_toml(
            "[nodes_spec]\nskew_max_ms = 600\n[engine]\nskew_margin_ms = 1200",
            "ok",
        )
        .expect("within a wider margin");
    }

    #[test]
    fn skew_beyond_the_margin_is_allowed_when_opted_in() {
        let s = Scenario::from_toml(
            "[nodes_spec]\nskew_max_ms = 5000\nskew_beyond_margin = true",
            "ok",
        )
        .expect("opted in");
        assert!(s.nodes_spec.skew_beyond_margin);
        // The opt-in sits next to the skew, nowhere else.
        let err = Scenario::from_toml("skew_beyond_margin = true", "top").expect_err("top level");
        assert!(err.to_string().contains("unknown field `skew_beyond_margin`"), "{err}");
    }

    #[test]
    fn overrides_are_validated_and_named_by_flag() {
        let mut s = Scenario::load("steady").expect("built-in loads");
        let err = s
            .apply_overrides(&Overrides { nodes: Some(10_000_000), ..Default::default() })
            .expect_err("ten million nodes");
        assert!(err.to_string().contains("nodes (set by --nodes) = 10000000"), "{err}");
        let mut s = Scenario::load("steady").expect("built-in loads");
        let err = s
            .apply_overrides(&Overrides { loss: Some(f64::NAN), ..Default::default() })
            .expect_err("NaN loss");
        assert!(err.to_string().contains("network.loss (set by --loss) = NaN"), "{err}");
        let mut s = Scenario::load("steady").expect("built-in loads");
        let err = s
            .apply_overrides(&Overrides {
                nodes: Some(5_000),
                items: Some(10_000_000),
                ..Default::default()
            })
            .expect_err("too big");
        assert!(err.to_string().contains("(set by --nodes --items)"), "{err}");
    }

    #[test]
    fn scenarios_built_in_code_validate_the_same_way() {
        let mut s = Scenario::default();
        s.validate().expect("the defaults are valid");
        s.work.jitter = 1.0;
        let err = s.validate().expect_err("a jitter the work model would clamp");
        assert!(err.to_string().contains("work.jitter = 1: "), "{err}");
    }
}
