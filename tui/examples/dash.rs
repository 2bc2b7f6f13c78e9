//! Runs `starling dash` without building the node: `cargo run -p starling-tui --example dash
//! -- --api http://127.0.0.1:7411 --token-file ~/.local/share/starling/api-token`.

use clap::Parser;

/// The dashboard on its own.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    dash: starling_tui::DashArgs,
}

fn main() {
    if let Err(e) = starling_tui::run(Cli::parse().dash) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
