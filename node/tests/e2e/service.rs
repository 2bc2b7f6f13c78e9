//! `starling service`: the unit it writes runs this very binary with absolute paths, and
//! systemd's own checker (`systemd-analyze verify`, where installed) accepts it. Systemd need
//! not run here: units go to a temporary `--unit-dir` and are not started.

use crate::common::BIN;
use std::path::Path;
use std::process::{Command, Output};

fn starling(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run starling")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `systemd-analyze verify` on a unit: `None` when the tool is not installed.
fn verify(unit: &Path, user: bool, runtime: &Path) -> Option<(bool, String)> {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if user {
        cmd.arg("--user");
    }
    // A user manager wants a runtime directory even to check a file.
    let out = cmd.arg(unit).env("XDG_RUNTIME_DIR", runtime).output().ok()?;
    Some((out.status.success(), text(&out)))
}

#[test]
fn install_writes_a_unit_systemd_accepts_and_uninstall_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let units = dir.path().join("units");
    let data = dir.path().join("node data");
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).expect("runtime dir");
    let u = units.to_str().unwrap();

    let out = starling(&[
        "service",
        "install",
        "--unit-dir",
        u,
        "--data-dir",
        data.to_str().unwrap(),
        "--no-start",
        "--",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let unit = units.join("starling.service");
    let body = std::fs::read_to_string(&unit).expect("unit written");
    let bin = std::fs::canonicalize(BIN).expect("binary path");
    let exec = format!(
        "ExecStart={} up --data-dir \"{}\" --listen /ip4/127.0.0.1/tcp/0\n",
        bin.display(),
        data.display()
    );
    assert!(body.contains(&exec), "{body}");
    assert!(data.is_dir(), "the data dir is created for the node");

    // The same install again is a no-op; a different one is refused without --force.
    let again = starling(&[
        "service",
        "install",
        "--unit-dir",
        u,
        "--data-dir",
        data.to_str().unwrap(),
        "--no-start",
        "--",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]);
    assert!(again.status.success(), "{}", text(&again));
    let other =
        starling(&["service", "install", "--unit-dir", u, "--data-dir", "/tmp/x", "--no-start"]);
    assert!(!other.status.success());
    assert!(text(&other).contains("--force"), "{}", text(&other));
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), body, "a refused install changes nothing");

    // A system unit with a dynamic user keeps its data in the state directory.
    let sys = dir.path().join("system");
    let out = starling(&[
        "service",
        "install",
        "--system",
        "--unit-dir",
        sys.to_str().unwrap(),
        "--no-start",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let sys_unit = sys.join("starling.service");
    let sys_body = std::fs::read_to_string(&sys_unit).unwrap();
    assert!(sys_body.contains("--data-dir %S/starling") && sys_body.contains("DynamicUser=yes"));

    match verify(&unit, true, &runtime) {
        None => {
            eprintln!("systemd-analyze is not installed: the units were not checked by systemd")
        }
        Some((ok, why)) => {
            assert!(ok, "systemd-analyze verify --user refused the user unit: {why}");
            let (ok, why) = verify(&sys_unit, false, &runtime).expect("ran once");
            assert!(ok, "systemd-analyze verify refused the system unit: {why}");
            // The checker can fail: a unit whose binary is gone is refused.
            let broken = dir.path().join("broken.service");
            std::fs::write(
                &broken,
                body.replace(&bin.display().to_string(), "/nonexistent/starling"),
            )
            .unwrap();
            let (ok, _) = verify(&broken, true, &runtime).expect("ran once");
            assert!(!ok, "systemd-analyze accepted a unit whose binary does not exist");
        }
    }

    let status = starling(&["service", "status", "--unit-dir", u]);
    assert!(status.status.success());
    let s = text(&status);
    assert!(s.contains("installed yes") && s.contains("up --data-dir"), "{s}");

    let out = starling(&["service", "uninstall", "--unit-dir", u]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!unit.exists());
    assert!(data.is_dir(), "uninstall keeps the node's data");
    let s = text(&starling(&["service", "status", "--unit-dir", u]));
    assert!(s.contains("installed no"), "{s}");
    let s = text(&starling(&[
        "service",
        "install",
        "--unit-dir",
        u,
        "--name",
        "../etc/x",
        "--no-start",
    ]));
    assert!(s.contains("unit name"), "{s}");
}
