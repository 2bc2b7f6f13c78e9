//! The command-line surface, `starling sim …`: argument parsing, seed sweeps, a progress line
//! on a terminal, the human summary and the JSON report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::report::Report;
use crate::scenario::{Overrides, Scenario, parse_duration_ms};

/// Arguments of `starling sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Built-in scenario name (steady, lossy, churn, partition-heal, byzantine, fault-50,
    /// scale-10k, skew-beyond, local-faults, skewed-nodes, skew-cut-off, flaky-site, curated,
    /// host-lanes, host-lanes-node-scope, host-lanes-crash, host-lanes-by-host, host-lanes-killed,
    /// liars-checked, liars-sampled, liars-collude, changing-site, hoarders, copies-churn, shards,
    /// shards-grow, shards-shrink) or a path to a scenario TOML file.
    #[arg(long, default_value = "steady")]
    pub scenario: String,
    /// Seed for the run.
    #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
    pub seed: u64,
    /// Sweep seeds A..B (end exclusive) and summarise.
    #[arg(long, value_name = "A..B")]
    pub seeds: Option<String>,
    /// Override the node count.
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Override the item count.
    #[arg(long)]
    pub items: Option<u32>,
    /// Override message loss (0.05 = 5 %).
    #[arg(long)]
    pub loss: Option<f64>,
    /// Override churn, in events per minute across the mesh.
    #[arg(long)]
    pub churn: Option<f64>,
    /// Override the run length (90s, 10m, 1500ms; bare numbers are seconds).
    #[arg(long, value_parser = parse_duration_ms)]
    pub duration: Option<u64>,
    /// Split each project into shards of about this many nodes (0: keep projects whole).
    #[arg(long, value_name = "N")]
    pub shard_members: Option<u32>,
    /// Write the report as JSON here (a sweep writes one report per line).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn parse_seeds(s: &str) -> anyhow::Result<std::ops::Range<u64>> {
    let (a, b) = s.split_once("..").context("--seeds wants A..B, for example 1..20")?;
    let a: u64 = a.trim().parse().context("--seeds: start is not a number")?;
    let b: u64 = b.trim().parse().context("--seeds: end is not a number")?;
    if b <= a {
        bail!("--seeds {s}: the range is empty");
    }
    Ok(a..b)
}

/// Runs `starling sim`: prints a summary, writes `--json`, and fails on any violation.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let scenario = load_scenario(&args)?;
    let seeds = match &args.seeds {
        Some(s) => parse_seeds(s)?,
        None => args.seed..args.seed + 1,
    };
    let (reports, failures) = run_seeds(&scenario, seeds);
    if let [r] = reports.as_slice() {
        print_summary(r);
    } else {
        print_sweep(&reports);
    }
    if let Some(path) = &args.json {
        write_json(path, &reports)?;
    }
    if let Some(f) = failures.first() {
        bail!(
            "{} of {} runs broke an invariant; first: seed {} ({:?})",
            failures.len(),
            reports.len(),
            f.violation.seed,
            f.violation.kind
        );
    }
    Ok(())
}

/// The scenario the arguments name, with their overrides.
fn load_scenario(args: &SimArgs) -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::load(&args.scenario)?;
    scenario
        .apply_overrides(&Overrides {
            nodes: args.nodes,
            items: args.items,
            loss: args.loss,
            churn_per_min: args.churn,
            duration_ms: args.duration,
            shard_members: args.shard_members,
        })
        .map_err(|e| e.with_origin(&args.scenario))?;
    Ok(scenario)
}

/// Runs `scenario` once per seed, showing progress on a terminal and each violation as it
/// happens: every run's report (a failed run's up to its violation), and the failures.
fn run_seeds(
    scenario: &Scenario,
    seeds: std::ops::Range<u64>,
) -> (Vec<Report>, Vec<crate::RunFailure>) {
    let tty = std::io::stderr().is_terminal();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for seed in seeds {
        let mut progress = |now: u64, end: u64| {
            if tty {
                let pct = now as f64 * 100.0 / end.max(1) as f64;
                eprint!(
                    "\r{} seed {seed}: {:>5.1}% of {}s simulated ",
                    scenario.name,
                    pct,
                    end / 1_000
                );
                let _ = std::io::stderr().flush();
            }
        };
        let outcome = crate::run_scenario_with(scenario, seed, &mut progress);
        if tty {
            eprint!("\r\x1b[K");
        }
        match outcome {
            Ok(r) => reports.push(r),
            Err(f) => {
                eprintln!("{}", f.violation);
                reports.push(f.report.clone());
                failures.push(*f);
            }
        }
    }
    (reports, failures)
}

/// Writes the reports as JSON: one pretty object for one run, else one object a line.
fn write_json(path: &std::path::Path, reports: &[Report]) -> anyhow::Result<()> {
    let mut out = String::new();
    if let [r] = reports {
        out = serde_json::to_string_pretty(r)?;
    } else {
        for r in reports {
            out.push_str(&serde_json::to_string(r)?);
            out.push('\n');
        }
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

fn print_summary(r: &Report) {
    let x = &r.result;
    let p = &x.propagation_ms;
    println!("scenario {} seed {}: {} nodes, {} items", x.scenario, x.seed, x.nodes, x.items);
    match x.time_to_finish_ms {
        Some(t) => println!("  all items done after {:.1}s", t as f64 / 1_000.0),
        None => println!("  not all items done by the end ({}s)", x.sim_ms / 1_000),
    }
    println!(
        "  done {}  lost {}  failed {}  bogus results {}  liar results won {}",
        x.items_done, x.lost_items, x.failed_items, x.bogus_results, x.liar_results_won
    );
    println!(
        "  executions {} started / {} completed; duplicates {} ({:.3} %), of which {} reruns \
         after churn; protocol duplicates {:.3} %",
        x.executions_started,
        x.executions_completed,
        x.duplicate_executions,
        x.duplicate_pct,
        x.reruns_after_churn,
        x.protocol_duplicate_pct
    );
    println!(
        "  traffic {:.1} msg/node/s, {:.0} B/node/s; dropped {}; propagation p50 {} p90 {} p99 {} max {} ms",
        x.messages_per_node_s, x.bytes_per_node_s, x.messages_dropped, p.p50, p.p90, p.p99, p.max
    );
    if let Some(s) = &x.shards {
        println!(
            "  shards: depth {} ({} shards), {} changes of depth; members per shard {}..{} (mean \
             {:.1}); items per node {:.0} (most {})",
            s.depth,
            1u32 << s.depth,
            s.reshards,
            s.members_min,
            s.members_max,
            s.members_mean,
            s.items_per_node_mean,
            s.items_per_node_max
        );
    }
    if let Some(c) = x.convergence_after_heal_ms {
        println!("  converged {:.1}s after the last heal", c as f64 / 1_000.0);
    }
    println!(
        "  {} events ({} queued, {} copies settled at send), {:.0} events/s; {} engine inputs, \
         {:.0}/s; {} signatures; {:.1}x real time, peak RSS {} MiB",
        x.model_events,
        x.events,
        x.copies_settled_at_send,
        r.perf.model_events_per_s,
        x.engine_inputs,
        r.perf.engine_inputs_per_s,
        x.signatures,
        r.perf.sim_per_wall,
        r.perf.peak_rss_bytes / (1 << 20)
    );
    println!("  trace {}", x.trace_hash);
    for v in &x.violations {
        println!("  VIOLATION {v}");
    }
}

fn print_sweep(reports: &[Report]) {
    println!(
        "{:>6} {:>9} {:>6} {:>5} {:>8} {:>6} {:>6} {:>8} {:>10} {:>9}  trace",
        "seed",
        "finish_s",
        "lost",
        "dup",
        "dup_%",
        "dup_ok",
        "rerun",
        "proto_%",
        "events",
        "x_real"
    );
    for r in reports {
        let x = &r.result;
        println!(
            "{:>6} {:>9} {:>6} {:>5} {:>8.3} {:>6} {:>6} {:>8.3} {:>10} {:>9.1}  {}{}",
            x.seed,
            x.time_to_finish_ms.map_or("-".into(), |t| format!("{:.1}", t as f64 / 1_000.0)),
            x.lost_items,
            x.duplicate_executions,
            x.duplicate_pct,
            x.duplicate_completions,
            x.reruns_after_churn,
            x.protocol_duplicate_pct,
            x.model_events,
            r.perf.sim_per_wall,
            &x.trace_hash[..16],
            if x.violations.is_empty() { "" } else { "  VIOLATION" }
        );
    }
    let n = reports.len().max(1) as f64;
    let dup: f64 = reports.iter().map(|r| r.result.duplicate_pct).sum::<f64>() / n;
    let proto: f64 = reports.iter().map(|r| r.result.protocol_duplicate_pct).sum::<f64>() / n;
    let proto_max = reports.iter().map(|r| r.result.protocol_duplicate_pct).fold(0.0, f64::max);
    let lost: u64 = reports.iter().map(|r| r.result.lost_items).sum();
    let bad = reports.iter().filter(|r| !r.result.violations.is_empty()).count();
    let bogus: u64 = reports.iter().map(|r| r.result.bogus_results).sum();
    let won: u64 = reports.iter().map(|r| r.result.liar_results_won).sum();
    println!(
        "{} runs: mean duplicates {:.3} % (protocol duplicates mean {:.3} %, max {:.3} %), \
         lost items {}, runs with violations {}, bogus results {}, liar results won {}",
        reports.len(),
        dup,
        proto,
        proto_max,
        lost,
        bad,
        bogus,
        won
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from([
            "sim",
            "--scenario",
            "lossy",
            "--seeds",
            "3..9",
            "--duration",
            "2m",
        ])
        .expect("flags parse");
        assert_eq!(c.sim.scenario, "lossy");
        assert_eq!(c.sim.duration, Some(120_000));
        assert_eq!(parse_seeds(c.sim.seeds.as_deref().unwrap_or_default()).expect("range"), 3..9);
        assert!(parse_seeds("9..3").is_err());
        assert!(Cli::try_parse_from(["sim", "--seed", "1", "--seeds", "1..3"]).is_err());
    }
}
