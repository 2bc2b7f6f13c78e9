//! warcio, the WARC reader nobody here wrote, for the tests that check the crawler's files
//! with it. The tests install it themselves, so `cargo test` needs only Python 3 with pip: once
//! per target dir, with pip, into `<target>/py/warcio-VERSION`, and run it from there through
//! `PYTHONPATH`. pip writes into a fresh temporary folder that is then renamed into place, so
//! test threads and test binaries installing at the same time never see half an install.
//! The e2e tests use this as a module; `export.rs`'s unit tests include the file by path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The warcio release the tests read with: pinned, so its reading cannot drift under them.
pub const WARCIO_VERSION: &str = "1.8.1";

/// `python3 -m warcio.cli` with the pinned warcio on its path, ready for arguments. Installs
/// warcio on first use; panics, saying what to install, when that cannot be done.
pub fn warcio_cli() -> Command {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match INSTALLED.get_or_init(|| install(&cache_dir())) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "warcio.cli"]).env("PYTHONPATH", dir);
    cmd
}

/// `<target>/py/warcio-VERSION`. A test binary lives under `<target>/<profile>/deps`; the
/// target dir is the ancestor that cargo marks with `CACHEDIR.TAG`.
fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.parent().and_then(Path::parent))
        .expect("the test binary sits in a folder of the target dir");
    target.join("py").join(format!("warcio-{WARCIO_VERSION}"))
}

/// Puts warcio in `dir` unless it is there already; the error is the one line a person
/// needs to fix it.
fn install(dir: &Path) -> Result<PathBuf, String> {
    if dir.join("warcio").is_dir() {
        return Ok(dir.to_owned());
    }
    let parent = dir.parent().expect("the cache dir has a parent");
    let fail = |why: String| {
        format!(
            "the WARC tests need warcio {WARCIO_VERSION} and could not install it into {dir}: \
             {why}\nTo fix: install Python 3 with pip (Debian: `apt-get install python3-pip`) \
             where PyPI is reachable, or run \
             `python3 -m pip install --target {dir} warcio=={WARCIO_VERSION}`",
            dir = dir.display()
        )
    };
    std::fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create the folder: {e}")))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".warcio-{WARCIO_VERSION}-"))
        .tempdir_in(parent)
        .map_err(|e| fail(format!("cannot create a temporary folder: {e}")))?;
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .arg("--target")
        .arg(tmp.path())
        .arg(format!("warcio=={WARCIO_VERSION}"))
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
        Err(_) if dir.join("warcio").is_dir() => Ok(dir.to_owned()),
        Err(e) => Err(fail(format!("cannot move the install into place ({e}); remove the folder"))),
    }
}
