//! The `starling` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use starling_node::cli_node;

/// Starling: a peer-to-peer volunteer compute mesh.
#[derive(Debug, Parser)]
#[command(
    name = "starling",
    version = starling_node::VERSION_LONG,
    propagate_version = true,
    after_help = TOP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a node: join the mesh and work on trusted projects until Ctrl-C.
    #[command(after_help = UP)]
    Up(Box<cli_node::UpArgs>),
    /// Show what the local node is doing.
    #[command(after_help = STATUS)]
    Status(cli_node::StatusArgs),
    /// The terminal dashboard: watch and steer a running node.
    #[command(after_help = DASH)]
    Dash(starling_tui::DashArgs),
    /// Write a project's WARC files and a CDX index into a directory, fetching missing ones.
    #[command(after_help = EXPORT)]
    Export(cli_node::ExportArgs),
    /// List the URLs of a project's done chunks with their outcome (`--failed`: only those
    /// not archived).
    #[command(after_help = URLS)]
    Urls(starling_node::urls::UrlsArgs),
    /// List the projects this node knows: name, id, progress, URL outcomes.
    #[command(after_help = PROJECTS)]
    Projects(starling_node::projects::ProjectsArgs),
    /// Send signed manifests and batches into the mesh through the local node.
    #[command(after_help = PUBLISH)]
    Publish(cli_node::PublishArgs),
    /// Project owner's tools: keys, manifests, signed batches of work, trust.
    #[command(after_help = PROJECT)]
    #[command(subcommand)]
    Project(starling_node::project::ProjectCmd),
    /// Run the real claim engine over a simulated mesh, reproducibly from a seed.
    #[command(after_help = SIM)]
    Sim(Box<starling_sim::SimArgs>),
    /// Run the node untended under systemd: install, uninstall or check its unit.
    #[command(after_help = SERVICE)]
    #[command(subcommand)]
    Service(starling_node::service::ServiceCmd),
    /// A whole mesh on this machine: a local website, N nodes and a demo project to crawl.
    #[command(after_help = DEMO)]
    Demo(starling_node::demo::DemoArgs),
}

// The Examples section of each subcommand's help.
const TOP: &str = "Examples:\n  starling demo                                  # a whole mesh on this machine, to watch
  starling up                                    # run a node; it says what it needs to start working
  starling status                                # what it is doing, and what's next
  starling <COMMAND> --help                      # each command's flags and examples";
const UP: &str = "Examples:\n  starling up                                    # mDNS on the LAN; data in the platform data dir
  starling up --bootstrap /ip4/<IP>/tcp/4801/p2p/<PEER_ID>   # dial a known node
  starling up --data-dir ~/starling --capacity 4 --disk-bytes-max 10000000000
  starling up --log-file ~/starling/starling.log --log-file-max 10MiB
  STARLING_LOG=debug starling up                 # more detail (RUST_LOG-style filter)";
const STATUS: &str = "Examples:\n  starling status                                # the node in the platform data dir
  starling status --data-dir ~/starling
  starling status --json | jq .health";
const DASH: &str = "Examples:\n  starling dash
  starling dash --data-dir ~/starling
  starling dash --api http://127.0.0.1:<PORT> --token-file <TOKEN_FILE>";
const EXPORT: &str = "Examples:\n  starling export --project my-crawl --out warcs/        # by name
  starling export --project <ID_PREFIX> --out warcs/     # or by id, 4+ hex digits
  starling export --project my-crawl --out warcs/ --timeout-s 600";
const URLS: &str = "Examples:\n  starling urls --project my-crawl
  starling urls --project my-crawl --failed       # only the URLs that were not archived
  starling urls --project <ID_PREFIX> --json";
const PROJECTS: &str = "Examples:\n  starling projects
  starling projects --json";
const PUBLISH: &str =
    "Examples:\n  starling publish project.cbor batch-1.cbor     # manifests first, then batches
  starling publish --data-dir ~/starling batch-2.cbor";
const PROJECT: &str = "Examples:\n  starling project keygen --out owner.key
  starling project new --key owner.key --name my-crawl --scope example.org --out project.cbor
  starling project add-urls --key owner.key --project project.cbor --urls urls.txt --out batch-1.cbor
  starling project trust owner.key.pub
  starling project inspect batch-1.cbor";
const SIM: &str = "Examples:\n  starling sim --scenario steady --seed 1
  starling sim --scenario churn --seeds 1..20      # a sweep, summarised
  starling sim --scenario lossy --nodes 200 --json report.json";
const SERVICE: &str =
    "Examples:\n  starling service install                      # a user unit running `starling up`
  starling service status
  starling service uninstall";
const DEMO: &str = "Examples:\n  starling demo                                  # five nodes and the dashboard; `q` stops
  starling demo --headless --nodes 3 --items 10";

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

    /// Every subcommand, with its path (`starling project new`).
    fn all_commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{path} {}", sub.get_name());
            out.push((path.clone(), sub.clone()));
            all_commands(sub, path, out);
        }
    }

    #[test]
    fn every_subcommand_has_examples_in_its_help() {
        let mut cmds = Vec::new();
        all_commands(&super::Cli::command(), "starling".into(), &mut cmds);
        assert!(cmds.len() >= 18, "{}", cmds.len());
        for (path, mut cmd) in cmds {
            let help = cmd.render_long_help().to_string();
            let examples = help.split("Examples:").nth(1);
            assert!(
                examples.is_some_and(|e| e.contains(&path)),
                "`{path} --help` has no Examples section running `{path}`:\n{help}"
            );
        }
    }

    /// The `[default: …]` a setting's help shows.
    fn shown_default(cmd: &clap::Command, id: &str) -> String {
        let arg = cmd.get_arguments().find(|a| a.get_id() == id).expect(id);
        if let Some(v) = arg.get_default_values().first() {
            return v.to_string_lossy().into_owned();
        }
        let help =
            arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
        let start = help.find("[default: ").unwrap_or_else(|| panic!("--{id} shows no default"));
        let rest = &help[start + "[default: ".len()..];
        rest[..rest.find(']').unwrap()].to_owned()
    }

    #[test]
    fn up_help_shows_every_default_and_they_are_the_real_ones() {
        let cli = super::Cli::command();
        let up = cli.find_subcommand("up").unwrap();
        for arg in up.get_arguments() {
            let id = arg.get_id().as_str();
            if !matches!(id, "help" | "version") {
                shown_default(up, id);
            }
        }
        // The defaults applied after the config merge, from an empty config file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "").unwrap();
        let args = starling_node::config::UpArgs {
            config: Some(file),
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let cfg = starling_node::config::Config::load(&args).unwrap();
        let e = &cfg.engine;
        let crawl = starling_node::crawl::CrawlerConfig::new(
            dir.path().into(),
            starling_protocol::NodeId([0; 32]),
        );
        let real: Vec<(&str, String)> = vec![
            ("mdns", cfg.mdns.to_string()),
            ("api_port", cfg.api_port.to_string()),
            ("capacity", e.capacity.to_string()),
            ("connections_max", cfg.connections_max.to_string()),
            ("sync_interval_ms", cfg.sync_interval.as_millis().to_string()),
            ("presence_interval_ms", e.presence_interval_ms.to_string()),
            ("presence_ttl_ms", e.presence_ttl_ms.to_string()),
            ("warmup_ms", e.warmup_ms.to_string()),
            ("settle_ms", e.settle_ms.to_string()),
            ("claim_settle_ms", e.claim_settle_ms.to_string()),
            ("skew_margin_ms", e.skew_margin_ms.to_string()),
            ("widen_ms", e.widen_ms.to_string()),
            ("allow_private_targets", cfg.crawl.allow_private_targets.to_string()),
            ("fetches_max", crawl.fetches_max.to_string()),
            ("seed_capacity", e.seed_capacity.to_string()),
            ("torrents", cfg.torrent.enabled.to_string()),
            ("seed", cfg.seed.to_string()),
            ("relay", cfg.relay.enabled.to_string()),
            ("relay_circuit_bytes_max", starling_tui::units::size(cfg.relay.circuit_bytes_max)),
            ("relay_circuits_max", cfg.relay.circuits_max.to_string()),
            ("relay_lease_ms", e.relay_lease_ms.to_string()),
        ];
        for (id, value) in real {
            assert_eq!(shown_default(up, id), value, "--{id}");
        }
        let listen: Vec<String> = cfg.listen.iter().map(ToString::to_string).collect();
        assert_eq!(shown_default(up, "listen"), listen.join(" and "));
    }
}
