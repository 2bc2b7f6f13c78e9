//! Stamps the binary with the commit it was built from and the build date, for
//! `starling --version` and `/status`. Outside a git checkout (a source tarball) the commit is
//! "unknown"; `SOURCE_DATE_EPOCH` fixes the date for reproducible builds.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

#[path = "src/civil.rs"]
mod civil;

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Rebuild the stamp when the checked-out commit changes.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(r).display());
        }
        let common = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from);
        if let Some(c) = common {
            println!("cargo:rerun-if-changed={}", c.join("packed-refs").display());
        }
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let secs =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or_else(
            || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
        );
    let (y, m, d) = civil::civil_from_days(secs.div_euclid(86_400));
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=STARLING_COMMIT={commit}");
    println!("cargo:rustc-env=STARLING_BUILD_DATE={y:04}-{m:02}-{d:02}");
    println!("cargo:rustc-env=STARLING_PROFILE={profile}");
}
