//! The `starling` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Starling: a peer-to-peer volunteer compute mesh.
#[derive(Debug, Parser)]
#[command(name = "starling", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Project owner's tools: keys, manifests, signed batches of work.
    #[command(subcommand)]
    Project(starling_node::project::ProjectCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Project(cmd) => starling_node::project::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
