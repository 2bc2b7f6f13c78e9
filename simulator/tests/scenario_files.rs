//! Scenario files as a user meets them: every scenario the simulator ships validates, and a
//! scenario too big for the machine is refused by `starling sim` before anything is allocated
//! for its world.

use std::path::Path;
use std::process::Command;

use clap::Parser;
use starling_sim::scenario::BUILTIN;
use starling_sim::{Scenario, SimArgs};

#[test]
fn every_shipped_scenario_validates() {
    for (name, text) in BUILTIN {
        let s = Scenario::from_toml(text, name).unwrap_or_else(|e| panic!("{e}"));
        s.validate().unwrap_or_else(|e| panic!("built-in {name}: {e}"));
    }
    // Every file in the folder is loadable by path, and built in under its own name.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios folder") {
        let path = entry.expect("folder entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        files += 1;
        let shown = path.display().to_string();
        Scenario::load(&shown).unwrap_or_else(|e| panic!("{e}"));
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(
            BUILTIN.iter().any(|(n, t)| *n == stem && *t == text),
            "{shown} is not built in as {stem:?}"
        );
    }
    assert_eq!(files, BUILTIN.len(), "a built-in scenario has no file in {}", dir.display());
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

/// `starling sim` with these arguments, as the command line would run it.
fn sim(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied()))
        .expect("flags parse");
    starling_sim::run(cli.sim)
}

/// Set in the child process that runs under a small address-space limit.
const CHILD: &str = "STARLING_SIM_SMALL_ADDRESS_SPACE";
/// The child's address-space limit in KiB (1 GiB): a world of ten million nodes needs ~19 GB.
const CHILD_LIMIT_KIB: u64 = 1 << 20;

/// Run in a child process with at most 1 GiB of address space, so that if validation ever
/// stopped refusing these, the test fails on an allocation instead of swapping the machine.
#[test]
fn huge_scenarios_are_refused_before_allocating() {
    if std::env::var_os(CHILD).is_some() {
        return refuse_huge_scenarios();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {CHILD_LIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["--exact", "huge_scenarios_are_refused_before_allocating", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
}

fn refuse_huge_scenarios() {
    let file = std::env::temp_dir().join(format!("starling-huge-{}.toml", std::process::id()));
    std::fs::write(&file, "name = \"huge\"\nnodes = 10_000_000\nitems = 10\n").expect("temp file");
    let path = file.display().to_string();
    let from_file = sim(&["--scenario", &path]);
    std::fs::remove_file(&file).ok();
    let err = from_file.expect_err("ten million nodes from a file");
    assert_eq!(
        format!("{err:#}"),
        format!("scenario {path}: nodes = 10000000: must be in 2 ..= 100000")
    );
    let err = sim(&["--scenario", "steady", "--nodes", "10000000"]).expect_err("from --nodes");
    assert!(format!("{err:#}").contains("nodes (set by --nodes) = 10000000"), "{err:#}");
    let err = sim(&["--scenario", "steady", "--nodes", "90000", "--items", "9000000"])
        .expect_err("within each cap, over the memory cap");
    assert!(format!("{err:#}").contains("GiB"), "{err:#}");
}
