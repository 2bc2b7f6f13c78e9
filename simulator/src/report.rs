//! The run report, the latency histogram and the event trace.
//!
//! [`Report`] splits into a deterministic part (same seed, same bytes) and [`Perf`], which holds
//! the only figures read from the wall clock or the OS (speed, peak memory) and is left out of
//! determinism comparisons.

use std::collections::VecDeque;

use serde::Serialize;

/// Buckets of the propagation histogram, one per millisecond; later samples go in the last.
const HIST_BUCKETS: usize = 65_536;
/// Trace records kept for printing around a violation.
pub const TRACE_RING: usize = 96;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Identical for identical scenario and seed.
    pub result: RunResult,
    /// Wall-clock and OS figures; differ between runs.
    pub perf: Perf,
}

/// How the projects were split into shards, at the end of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardReport {
    /// The first project's depth at the end (its shards: `2^depth`).
    pub depth: u8,
    /// Changes of depth the owners published.
    pub reshards: u64,
    /// Up honest nodes in each shard of the first project at the end: fewest, mean, most.
    pub members_min: u32,
    pub members_mean: f64,
    pub members_max: u32,
    /// Items an up honest node's engine holds: mean and most.
    pub items_per_node_mean: f64,
    pub items_per_node_max: u64,
}

/// The deterministic part of a report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes at start.
    pub nodes: u32,
    /// Crawl items published.
    pub items: u64,
    /// Simulated time the run covered.
    pub sim_ms: u64,
    /// From publication to the last item done (None if not all finished).
    pub time_to_finish_ms: Option<u64>,
    /// Items done at the end (per the honest nodes).
    pub items_done: u64,
    /// Items not done at the end although an honest node was up.
    pub lost_items: u64,
    /// Items given up after too many failures.
    pub failed_items: u64,
    /// Items whose accepted result is not the honest one (a lying peer's receipt won).
    pub bogus_results: u64,
    /// Items for which an honest node accepted a liar's result that the liar won by the claim
    /// rule (it held that epoch): not a violation, but only checking results can catch them.
    #[serde(default)]
    pub liar_results_won: u64,
    /// Spot-check executions started by honest nodes (crawl executions are
    /// `executions_started`).
    #[serde(default)]
    pub checks_started: u64,
    /// Items whose result a spot-check quorum overturned, in the first honest up node's view.
    #[serde(default)]
    pub results_overturned: u64,
    /// Liars marked on every honest up node at the end.
    #[serde(default)]
    pub liars_marked: u64,
    /// Over the liars an honest observer saw marked: the false results of each it had
    /// accepted by then (the results a liar placed before it was caught), in all.
    #[serde(default)]
    pub liar_false_results_before_caught: u64,
    /// Liars an honest observer saw marked during the run.
    #[serde(default)]
    pub liars_caught: u64,
    /// The longest an honest observer saw a seeding duty held by a node without its copy.
    #[serde(default)]
    pub copyless_held_ms_max: u64,
    /// Seeding duties held at the end by a node without the copy (the observer's view).
    #[serde(default)]
    pub copyless_duties_end: u64,
    /// Renewals of honest nodes' seeding duties that carried a storage proof.
    #[serde(default)]
    pub copies_proven: u64,
    /// Seeding duties given back by nodes (up at the end) that could not show their copy.
    #[serde(default)]
    pub copies_given_up: u64,
    /// Honest nodes whose engine found its own clock off against its peers' at the end, so
    /// claimed nothing.
    #[serde(default)]
    pub nodes_clock_off: u64,
    /// Items honest nodes gave back (released) for a fault of their own or an off clock.
    #[serde(default)]
    pub items_given_back: u64,
    /// Executions started by honest nodes (crawl chunks).
    pub executions_started: u64,
    /// Executions that ran to the end.
    pub executions_completed: u64,
    /// Started executions beyond one per item.
    pub duplicate_executions: u64,
    /// `duplicate_executions` as a percentage of items.
    pub duplicate_pct: f64,
    /// Of `duplicate_executions`, reruns of an item whose only execution so far was cut short
    /// by its node crashing, leaving or giving it back for a fault of its own, or failed
    /// (nobody else on it, no result yet): work that had to be redone, not work done twice.
    pub reruns_after_churn: u64,
    /// `duplicate_executions` less `reruns_after_churn`: executions that overlapped another
    /// or followed a lost claim race, as a percentage of items. What the protocol wastes.
    pub protocol_duplicate_pct: f64,
    /// Completed executions beyond one per item.
    pub duplicate_completions: u64,
    /// The first few repeated completions, to start debugging from.
    pub duplicate_examples: Vec<String>,
    /// Gossip messages sent (each hop counts).
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Sync requests and responses sent.
    pub sync_messages: u64,
    /// Bytes of those.
    pub sync_bytes: u64,
    /// Gossip messages per node per simulated second.
    pub messages_per_node_s: f64,
    /// Bytes (gossip and sync) per node per simulated second.
    pub bytes_per_node_s: f64,
    /// Messages dropped by loss or partitions.
    pub messages_dropped: u64,
    /// Deliveries suppressed as already seen.
    pub duplicate_deliveries: u64,
    /// First-delivery delay of gossip messages.
    pub propagation_ms: Percentiles,
    /// From the last heal to all honest nodes agreeing (None if no fault or never measured).
    pub convergence_after_heal_ms: Option<u64>,
    /// Faults applied (scheduled and churn).
    pub faults: u64,
    /// Crashes, graceful leaves, restarts and joins.
    pub churn: ChurnCounts,
    /// Messages honest engines rejected, by reason.
    pub rejected: Vec<(String, u64)>,
    /// Events taken from the queue and processed.
    pub events: u64,
    /// Gossip copies whose arrival was settled when they were sent (a duplicate for a node
    /// that has or will first get another copy, or a copy for a deaf node): arrivals of the
    /// model that need no queue event.
    pub copies_settled_at_send: u64,
    /// Events of the model: queue events plus copies settled at send. Every copy that
    /// reaches a node counts once, however the simulator resolves it.
    pub model_events: u64,
    /// Inputs handed to the real engines (messages taken in, ticks, work results, ...).
    pub engine_inputs: u64,
    /// Ed25519 signatures made (heartbeats, claims, renewals, receipts, liars' messages, the
    /// project owners' batches): each costs about 20 µs, a floor under the run's CPU time.
    pub signatures: u64,
    /// How the projects were split (scenarios with `[shards]` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardReport>,
    /// What the crawl hosts saw (scenarios with a `[hosts]` table only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<crate::hosts::HostReport>,
    /// blake3 over the ordered event trace.
    pub trace_hash: String,
    /// Invariant violations (the run fails if any).
    pub violations: Vec<String>,
}

/// Churn counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ChurnCounts {
    /// Crashes.
    pub crashes: u64,
    /// Graceful leaves.
    pub leaves: u64,
    /// Restarts from a snapshot.
    pub restarts: u64,
    /// Fresh joins.
    pub joins: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub samples: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// Wall-clock and OS figures.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Perf {
    /// Wall time of the run.
    pub wall_ms: u64,
    /// Queue events per wall second.
    pub events_per_s: f64,
    /// Events of the model (`model_events`) per wall second.
    pub model_events_per_s: f64,
    /// Engine inputs per wall second.
    pub engine_inputs_per_s: f64,
    /// Simulated time divided by wall time.
    pub sim_per_wall: f64,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// A fixed-size millisecond histogram.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: vec![0; HIST_BUCKETS], count: 0, max: 0 }
    }
}

impl Histogram {
    /// Adds one sample.
    pub fn record(&mut self, ms: u64) {
        let i = (ms as usize).min(HIST_BUCKETS - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.max = self.max.max(ms);
    }

    /// The percentiles so far.
    pub fn percentiles(&self) -> Percentiles {
        let at = |q: f64| -> u64 {
            if self.count == 0 {
                return 0;
            }
            let want = ((self.count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in self.buckets.iter().enumerate() {
                seen += n;
                if seen >= want {
                    return i as u64;
                }
            }
            self.max
        };
        Percentiles {
            samples: self.count,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: self.max,
        }
    }
}

/// One traced event.
#[derive(Debug, Clone, Copy)]
pub struct TraceRec {
    /// Simulated time.
    pub t: u64,
    /// What happened.
    pub what: &'static str,
    /// The node it happened at.
    pub node: u32,
    /// The other node involved, or `u32::MAX`.
    pub peer: u32,
    /// A detail: the first bytes of a message or item id.
    pub extra: u64,
}

/// Bytes of trace records gathered before they are hashed: blake3 hashes a long input many
/// chunks at a time, far faster than record by record, and the hash is the same either way.
const TRACE_BUF_BYTES: usize = 64 * 1024;

/// The ordered event trace: hashed in full, the tail kept for violation reports.
#[derive(Debug)]
pub struct Trace {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    ring: VecDeque<TraceRec>,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            buf: Vec::with_capacity(TRACE_BUF_BYTES),
            ring: VecDeque::with_capacity(TRACE_RING),
        }
    }
}

impl Trace {
    /// Records one event.
    pub fn record(&mut self, rec: TraceRec) {
        let mut b = [0u8; 25];
        b[..8].copy_from_slice(&rec.t.to_le_bytes());
        b[8] = rec.what.as_bytes().first().copied().unwrap_or(0) ^ (rec.what.len() as u8);
        b[9..13].copy_from_slice(&rec.node.to_le_bytes());
        b[13..17].copy_from_slice(&rec.peer.to_le_bytes());
        b[17..25].copy_from_slice(&rec.extra.to_le_bytes());
        self.absorb(&b);
        if self.ring.len() == TRACE_RING {
            self.ring.pop_front();
        }
        self.ring.push_back(rec);
    }

    /// Mixes a value (a verdict, a state fingerprint) into the hash without a ring entry.
    pub fn mix(&mut self, v: u64) {
        self.absorb(&v.to_le_bytes());
    }

    fn absorb(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > TRACE_BUF_BYTES {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The hash so far, in hex.
    pub fn hash_hex(&self) -> String {
        let mut h = self.hasher.clone();
        h.update(&self.buf);
        h.finalize().to_hex().to_string()
    }

    /// The last events, one line each.
    pub fn tail(&self) -> Vec<String> {
        self.ring
            .iter()
            .map(|r| {
                let peer =
                    if r.peer == u32::MAX { String::new() } else { format!(" peer={}", r.peer) };
                format!("t={}ms {} node={}{} id={:016x}", r.t, r.what, r.node, peer, r.extra)
            })
            .collect()
    }
}

/// Peak resident memory of this process from `/proc/self/status` (0 where unavailable).
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
