//! `starling project …`: the project owner's tools.
use anyhow::Result;

/// `starling project` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ProjectCmd {}

/// Runs a `starling project` subcommand.
pub fn run(cmd: ProjectCmd) -> Result<()> {
    match cmd {}
}
