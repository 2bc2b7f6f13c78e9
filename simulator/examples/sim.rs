//! Runs the simulator without the `starling` binary:
//! `cargo run --release -p starling-sim --example sim -- --scenario steady --seed 1`.

use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    sim: starling_sim::SimArgs,
}

fn main() -> anyhow::Result<()> {
    starling_sim::run(Cli::parse().sim)
}
