//! `starling demo --headless` end to end: a local site, real nodes as child processes, a
//! published demo project, and a summary that shows every item done, no duplicate execution,
//! the WARC files on disk and each result copied to other nodes by seeding.

use std::process::{Command, Stdio};

use crate::common::BIN;

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
    assert!(stdout.contains("URLs archived         60"), "12 chunks of 5 pages: {stdout}");

    // One result per chunk, each kept (verified by its digest) on at least 2 nodes.
    let mut copies: std::collections::BTreeMap<String, usize> = Default::default();
    let mut files = 0;
    for i in 0..3 {
        let results = tmp.path().join(format!("node-{i}/results"));
        for e in std::fs::read_dir(&results).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(digest) = name.strip_suffix(".warc.gz") {
                files += 1;
                let bytes = std::fs::read(e.path()).unwrap();
                assert_eq!(blake3::hash(&bytes).to_hex().as_str(), digest, "{name}");
                *copies.entry(digest.to_owned()).or_default() += 1;
            }
        }
    }
    assert_eq!(copies.len(), 12, "one result per chunk");
    assert!(copies.values().all(|c| *c >= 2), "{copies:?}");
    assert!(stdout.contains(&format!("WARC files            {files} files")), "{stdout}");
    // The nodes were stopped: their API port files are gone.
    for i in 0..3 {
        assert!(!tmp.path().join(format!("node-{i}/api-port")).exists(), "node {i} still running");
    }
}
