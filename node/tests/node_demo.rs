//! `starling demo --headless` end to end: a local site, real nodes as child processes, a
//! published demo project, and a summary that shows every item done, no duplicate execution
//! and the WARC files on disk.

mod common;

use std::process::{Command, Stdio};

use common::BIN;

#[test]
fn headless_demo_finishes_every_item_once_and_writes_warc_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--headless", "--nodes", "3", "--items", "12", "--timeout-s", "240"])
        .arg("--dir")
        .arg(tmp.path())
        .env("STARLING_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("items done            12/12 (all 3 nodes agree)"), "{stdout}");
    assert!(stdout.contains("duplicate executions  0"), "{stdout}");

    let mut warcs = 0;
    for i in 0..3 {
        let results = tmp.path().join(format!("node-{i}/results"));
        for e in std::fs::read_dir(&results).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".warc.gz") {
                warcs += 1;
            }
        }
    }
    assert_eq!(warcs, 12, "one WARC file per chunk");
    assert!(stdout.contains(&format!("WARC files            {warcs} files")), "{stdout}");
    // The nodes were stopped: their API port files are gone.
    for i in 0..3 {
        assert!(!tmp.path().join(format!("node-{i}/api-port")).exists(), "node {i} still running");
    }
}
