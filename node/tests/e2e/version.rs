//! `starling --version` names the commit it was built from and the build date, so a
//! volunteer's bug report says exactly what they run.

use crate::common::BIN;
use std::process::Command;

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = Command::new(BIN).arg("--version").output().expect("run starling");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let line = text.trim();
    assert!(line.starts_with(&format!("starling {}", env!("CARGO_PKG_VERSION"))), "{line}");
    // The commit of this checkout when git can tell, "unknown" in a tarball.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = head.unwrap_or_else(|| "unknown".into());
    assert!(line.contains(&format!("commit {commit}")), "{line} should name {commit}");
    // A date as YYYY-MM-DD after "built ".
    let date = line.split("built ").nth(1).expect("a build date").get(..10).expect("10 chars");
    let parts: Vec<&str> = date.split('-').collect();
    assert_eq!(parts.len(), 3, "{date}");
    assert!(parts[0].parse::<u32>().is_ok_and(|y| y >= 2024), "{date}");
    assert!(parts[1].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m)), "{date}");
    assert!(parts[2].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d)), "{date}");
    // Every subcommand answers with the same line.
    let sub = Command::new(BIN).args(["status", "--version"]).output().expect("run");
    assert_eq!(
        String::from_utf8_lossy(&sub.stdout).trim(),
        line.replacen("starling", "starling-status", 1)
    );
}

/// `starling ... | head` closes the pipe early: the command ends quietly with 141 (128 +
/// SIGPIPE) as `cat` does, not with a panic and a backtrace.
#[test]
fn a_closed_output_pipe_ends_a_command_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(["sim", "--scenario", "steady", "--seed", "1", "--nodes", "5", "--items", "20"])
        .args(["--duration", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starling sim");
    // Close the reading end at once: every line the command prints meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
