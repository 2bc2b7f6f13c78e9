//! Python tools nobody here wrote, for the tests that check the node's output with them:
//! warcio reads the crawler's WARC files, pywb (the wayback machine) replays an export,
//! `prometheus_client` parses `/metrics`. The tests install them themselves, so `cargo test`
//! needs only Python 3 with pip: once per target dir and pinned version, with pip, into
//! `<target>/py/<package>-VERSION`, and run them from there through `PYTHONPATH`. pip writes
//! into a fresh temporary folder that is then renamed into place, so test threads and test
//! binaries installing at the same time never see half an install. (A folder on `PYTHONPATH`
//! rather than a venv: it needs pip only, not Debian's `python3-venv`.) The e2e tests use this
//! as a module; `export.rs`'s unit tests include the file by path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The warcio release the tests read with: pinned, so its reading cannot drift under them.
pub const WARCIO_VERSION: &str = "1.8.1";

/// The pywb release the replay test runs, pinned like warcio.
#[allow(dead_code)] // `export.rs`'s unit tests include this file and use warcio only
pub const PYWB_VERSION: &str = "2.9.1";

/// pywb imports `pkg_resources`, which newer setuptools no longer ship and a Python need not
/// have: a setuptools that has it comes along.
#[allow(dead_code)]
const PYWB_ALSO: &[&str] = &["setuptools==70.3.0"];

/// `python3 -m warcio.cli` with the pinned warcio on its path, ready for arguments. Installs
/// warcio on first use; panics, saying what to install, when that cannot be done.
pub fn warcio_cli() -> Command {
    python_module(&python_package("warcio", WARCIO_VERSION, "warcio"), "warcio.cli")
}

/// `python3 -m pywb.apps.cli` (pywb's `wayback` server, reading `./config.yaml`) with the
/// pinned pywb on its path, ready for arguments. Installs pywb on first use (about 20 s to a
/// minute with a warm network); panics, saying what to install, when that cannot be done.
#[allow(dead_code)]
pub fn pywb_wayback() -> Command {
    python_module(&pywb_dir(), "pywb.apps.cli")
}

/// `python3 -m pywb.indexer.cdxindexer` (pywb's `cdx-indexer`), from the same install.
#[allow(dead_code)]
pub fn pywb_cdx_indexer() -> Command {
    python_module(&pywb_dir(), "pywb.indexer.cdxindexer")
}

#[allow(dead_code)]
fn pywb_dir() -> PathBuf {
    python_packages("pywb", PYWB_VERSION, "pywb", PYWB_ALSO)
}

fn python_module(dir: &Path, module: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", module]).env("PYTHONPATH", dir);
    cmd
}

/// The folder to put on `PYTHONPATH` for `package==version`, whose import name is `module`.
/// Installs it on first use; panics, saying what to install, when that cannot be done.
pub fn python_package(package: &str, version: &str, module: &str) -> PathBuf {
    python_packages(package, version, module, &[])
}

/// [`python_package`] with further pinned requirements installed beside it.
fn python_packages(package: &str, version: &str, module: &str, also: &[&str]) -> PathBuf {
    static INSTALLED: Mutex<BTreeMap<String, Result<PathBuf, String>>> =
        Mutex::new(BTreeMap::new());
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{package}-{version}");
    let mut requirements = vec![format!("{package}=={version}")];
    requirements.extend(also.iter().map(|r| r.to_string()));
    let result = installed
        .entry(key.clone())
        .or_insert_with(|| install(&cache_dir(&key), &key, module, &requirements));
    match result {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// `<target>/py/<name>`. A test binary lives under `<target>/<profile>/deps`; the target dir
/// is the ancestor that cargo marks with `CACHEDIR.TAG`.
fn cache_dir(name: &str) -> PathBuf {
    target_dir().join("py").join(name)
}

/// The cargo target dir the running test binary belongs to.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.parent().and_then(Path::parent))
        .expect("the test binary sits in a folder of the target dir")
        .to_owned()
}

/// Puts `requirements` in `dir` (named `name`) unless `module` is there already; the error is
/// the one line a person needs to fix it.
fn install(
    dir: &Path,
    name: &str,
    module: &str,
    requirements: &[String],
) -> Result<PathBuf, String> {
    if dir.join(module).is_dir() {
        return Ok(dir.to_owned());
    }
    let wanted = requirements.join(" ");
    let parent = dir.parent().expect("the cache dir has a parent");
    let fail = |why: String| {
        format!(
            "the tests need {wanted} and could not install it into {dir}: \
             {why}\nTo fix: install Python 3 with pip (Debian: `apt-get install python3-pip`) \
             where PyPI is reachable, or run \
             `python3 -m pip install --target {dir} {wanted}`",
            dir = dir.display()
        )
    };
    std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create the folder: {e}")))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(parent)
        .map_err(|e| fail(format!("cannot create a temporary folder: {e}")))?;
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .arg("--target")
        .arg(tmp.path())
        .args(requirements)
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
        Err(_) if dir.join(module).is_dir() => Ok(dir.to_owned()),
        Err(e) => Err(fail(format!("cannot move the install into place ({e}); remove the folder"))),
    }
}
