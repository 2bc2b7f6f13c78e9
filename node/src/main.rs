//! The `starling` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use starling_node::cli_node;

/// Starling: a peer-to-peer volunteer compute mesh.
#[derive(Debug, Parser)]
#[command(name = "starling", version = starling_node::VERSION_LONG, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a node: join the mesh and work on trusted projects until Ctrl-C.
    Up(Box<cli_node::UpArgs>),
    /// Show what the local node is doing.
    Status(cli_node::StatusArgs),
    /// The terminal dashboard: watch and steer a running node.
    Dash(starling_tui::DashArgs),
    /// Write a project's WARC files and a CDX index into a directory, fetching missing ones.
    Export(cli_node::ExportArgs),
    /// List the URLs of a project's done chunks with their outcome (`--failed`: only those
    /// not archived).
    Urls(starling_node::urls::UrlsArgs),
    /// List the projects this node knows: name, id, progress, URL outcomes.
    Projects(starling_node::projects::ProjectsArgs),
    /// Send signed manifests and batches into the mesh through the local node.
    Publish(cli_node::PublishArgs),
    /// Project owner's tools: keys, manifests, signed batches of work, trust.
    #[command(subcommand)]
    Project(starling_node::project::ProjectCmd),
    /// Run the real claim engine over a simulated mesh, reproducibly from a seed.
    Sim(Box<starling_sim::SimArgs>),
    /// Run the node untended under systemd: install, uninstall or check its unit.
    #[command(subcommand)]
    Service(starling_node::service::ServiceCmd),
    /// A whole mesh on this machine: a local website, N nodes and a demo project to crawl.
    Demo(starling_node::demo::DemoArgs),
}

/// The exit code of a command whose output pipe was closed (128 + SIGPIPE), as `cat` has.
const CLOSED_PIPE_EXIT: i32 = 141;

/// `starling status --json | head` closes the pipe before the command has printed all: end
/// quietly, as `cat` or `ls` do, instead of panicking inside `println!`. Rust ignores
/// SIGPIPE, so the write fails with EPIPE and `println!` panics with this message.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(CLOSED_PIPE_EXIT);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Not for the node, the demo or the dashboard: they run for hours and print little to
    // stdout; a closed stdout there is not the end of their work.
    if !matches!(cli.cmd, Cmd::Up(_) | Cmd::Demo(_) | Cmd::Dash(_)) {
        quiet_on_closed_pipe();
    }
    let result = match cli.cmd {
        Cmd::Up(args) => cli_node::up(*args),
        Cmd::Status(args) => cli_node::status(args),
        Cmd::Dash(args) => starling_tui::run(args),
        Cmd::Publish(args) => cli_node::publish(args),
        Cmd::Export(args) => cli_node::export(args),
        Cmd::Projects(args) => starling_node::projects::run(args),
        Cmd::Urls(args) => starling_node::urls::run(args),
        Cmd::Project(cmd) => starling_node::project::run(cmd),
        Cmd::Sim(args) => starling_sim::run(*args),
        Cmd::Demo(args) => starling_node::demo::run(args),
        Cmd::Service(cmd) => starling_node::service::run(cmd),
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
