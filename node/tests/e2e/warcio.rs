//! Python tools nobody here wrote, for the tests that check the crawler's files with them:
//! warcio (the WARC reader) and pywb (the wayback machine that replays an export). The tests
//! install them themselves, so `cargo test` needs only Python 3 with pip: once per target dir,
//! with pip, into `<target>/py/NAME-VERSION`, and run them from there through `PYTHONPATH`.
//! pip writes into a fresh temporary folder that is then renamed into place, so test threads
//! and test binaries installing at the same time never see half an install. (A folder on
//! `PYTHONPATH` rather than a venv: it needs pip only, not Debian's `python3-venv`.)
//! The e2e tests use this as a module; `export.rs`'s unit tests include the file by path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A pinned Python package set installed for the tests.
struct Package {
    /// Folder name under `<target>/py`, and what the error messages call it.
    name: &'static str,
    /// A module (folder) whose presence says the install is complete.
    module: &'static str,
    /// pip requirements.
    requirements: &'static [&'static str],
}

/// The warcio release the tests read with: pinned, so its reading cannot drift under them.
const WARCIO: Package =
    Package { name: "warcio-1.8.1", module: "warcio", requirements: &["warcio==1.8.1"] };

/// The pywb release the replay test runs, pinned like warcio. pywb imports `pkg_resources`, which newer setuptools no longer ship and a Python need not
/// have: a setuptools that has it comes along.
#[allow(dead_code)] // `export.rs`'s unit tests include this file and use warcio only
const PYWB: Package = Package {
    name: "pywb-2.9.1",
    module: "pywb",
    requirements: &["pywb==2.9.1", "setuptools==70.3.0"],
};

/// `python3 -m warcio.cli` with the pinned warcio on its path, ready for arguments. Installs
/// warcio on first use; panics, saying what to install, when that cannot be done.
pub fn warcio_cli() -> Command {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    python_module(&INSTALLED, &WARCIO, "warcio.cli")
}

/// `python3 -m pywb.apps.cli` (pywb's `wayback` server, reading `./config.yaml`) with the
/// pinned pywb on its path, ready for arguments. Installs pywb on first use (about 20 s to a
/// minute with a warm network); panics, saying what to install, when that cannot be done.
#[allow(dead_code)]
pub fn pywb_wayback() -> Command {
    python_module(&PYWB_INSTALLED, &PYWB, "pywb.apps.cli")
}

/// Where pywb was installed, once per test binary.
#[allow(dead_code)]
static PYWB_INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// `python3 -m pywb.indexer.cdxindexer` (pywb's `cdx-indexer`), from the same install.
#[allow(dead_code)]
pub fn pywb_cdx_indexer() -> Command {
    python_module(&PYWB_INSTALLED, &PYWB, "pywb.indexer.cdxindexer")
}

fn python_module(
    installed: &OnceLock<Result<PathBuf, String>>,
    package: &Package,
    module: &str,
) -> Command {
    let dir = match installed.get_or_init(|| install(&cache_dir(package.name), package)) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let mut cmd = Command::new("python3");
    cmd.args(["-m", module]).env("PYTHONPATH", dir);
    cmd
}

/// `<target>/py/NAME-VERSION`. A test binary lives under `<target>/<profile>/deps`; the
/// target dir is the ancestor that cargo marks with `CACHEDIR.TAG`.
fn cache_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.parent().and_then(Path::parent))
        .expect("the test binary sits in a folder of the target dir");
    target.join("py").join(name)
}

/// Puts the package in `dir` unless it is there already; the error is the one line a person
/// needs to fix it.
fn install(dir: &Path, package: &Package) -> Result<PathBuf, String> {
    if dir.join(package.module).is_dir() {
        return Ok(dir.to_owned());
    }
    let requirements = package.requirements.join(" ");
    let parent = dir.parent().expect("the cache dir has a parent");
    let fail = |why: String| {
        format!(
            "the WARC tests need {requirements} and could not install it into {dir}: \
             {why}\nTo fix: install Python 3 with pip (Debian: `apt-get install python3-pip`) \
             where PyPI is reachable, or run \
             `python3 -m pip install --target {dir} {requirements}`",
            dir = dir.display()
        )
    };
    std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create the folder: {e}")))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}-", package.name))
        .tempdir_in(parent)
        .map_err(|e| fail(format!("cannot create a temporary folder: {e}")))?;
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .arg("--target")
        .arg(tmp.path())
        .args(package.requirements)
        .env_remove("PYTHONPATH")
        .output()
        .map_err(|e| fail(format!("cannot run python3 ({e})")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("pip failed ({}): {}", out.status, stderr.trim())));
    }
    match std::fs::rename(tmp.path(), dir) {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(dir.to_owned())
        }
        // Another test binary finished first; its copy serves, ours is dropped.
        Err(_) if dir.join(package.module).is_dir() => Ok(dir.to_owned()),
        Err(e) => Err(fail(format!("cannot move the install into place ({e}); remove the folder"))),
    }
}
