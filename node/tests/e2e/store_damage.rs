//! A damaged store stops the node with one line, never a panic or a silent fresh start: a
//! store with bytes flipped inside it, a 0-byte `starling.redb` and a file of random bytes each
//! make `starling up` exit non-zero with one line naming the file and what to do, leave no
//! `api-port` behind and leave the file as it was. A store that is only missing is created.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// Runs `starling up` on `dir` and expects it to refuse the store: returns stderr's one line.
fn up_refuses_store(dir: &Path) -> String {
    let db = dir.join("starling.redb");
    let before = std::fs::read(&db).unwrap();
    let out = Command::new(BIN)
        .arg("up")
        .arg("--data-dir")
        .arg(dir)
        .args(["--mdns", "false", "--api-port", "0", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--torrents", "false"])
        .env_remove("STARLING_CONFIG")
        .env_remove("STARLING_TEST_RUNNER_DELAY_MS")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the node started on a damaged store: {stderr}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit code: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].contains(&db.display().to_string()), "the file is not named: {stderr}");
    assert!(lines[0].contains("move it away") && lines[0].contains("backup"), "{stderr}");
    assert!(!dir.join("api-port").exists(), "a node that did not start left api-port");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the refused store was changed");
    lines[0].to_string()
}

/// A store with something in it, written by a node that stopped cleanly.
fn used_store(dir: &Path) {
    let owner = starling_protocol::engine::test_keypair(5);
    let args: Vec<String> = ["--listen", "/ip4/127.0.0.1/tcp/0", "--torrents", "false", "--trust"]
        .iter()
        .map(|s| s.to_string())
        .chain([owner.public().to_hex()])
        .collect();
    let mut node = Node::start_real_in(
        dir.parent().unwrap(),
        dir.file_name().unwrap().to_str().unwrap(),
        &args,
    );
    let p = project(5, "damage", 3, 60_000);
    assert_eq!(node.publish(&p.manifest)["outcome"], "applied");
    let status = node.stop().expect("stopped");
    assert!(status.success(), "{status}");
}

#[test]
fn a_damaged_empty_or_foreign_store_is_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();

    // Bytes flipped in every page after the header: redb's checks must catch it.
    let flipped = tmp.path().join("flipped");
    used_store(&flipped);
    let db = flipped.join("starling.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "store is {} bytes", bytes.len());
    let len = bytes.len();
    for page in (4096..len).step_by(4096) {
        for b in &mut bytes[page + 64..(page + 96).min(len)] {
            *b ^= 0x5a;
        }
    }
    std::fs::write(&db, &bytes).unwrap();
    let line = up_refuses_store(&flipped);
    assert!(line.contains("is damaged"), "{line}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("starling.redb"), b"").unwrap();
    let line = up_refuses_store(&empty);
    assert!(line.contains("is empty, not a Starling store"), "{line}");

    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let mut noise = vec![0u8; 64 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(foreign.join("starling.redb"), &noise).unwrap();
    let line = up_refuses_store(&foreign);
    assert!(line.contains("not a redb database"), "{line}");
}
