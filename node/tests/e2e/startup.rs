//! Start-up does what was asked, or stops with one line: a second node on a TCP or UDP (QUIC)
//! port another node holds exits non-zero naming the address, and so does a node whose
//! BitTorrent listen port is taken; a relative `--data-dir` is taken from the working
//! directory and the node runs torrent duties there; a `[torrent]` table that only sets the
//! listen port leaves every other torrent setting at its documented default, so the session
//! runs no DHT node. Everything on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use starling_protocol::{Envelope, Roles, Signed, TorrentSource, WorkItem};

use crate::common::*;
use crate::torrent::{batch, make_torrent, manifest, torrent_file};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs `starling up` on `dir` with `args`, expecting it to exit (within a generous bound:
/// a node that keeps running is the failure this guards against) with code 1 and one line
/// on stderr; returns that line.
fn up_fails(dir: &Path, args: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let err = dir.join("stderr");
    let mut child = Command::new(BIN)
        .arg("up")
        .arg("--data-dir")
        .arg(dir)
        .args(["--mdns", "false", "--api-port", "0"])
        .args(args)
        .env_remove("STARLING_CONFIG")
        .env_remove("STARLING_TEST_RUNNER_DELAY_MS")
        .env("STARLING_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`starling up {args:?}` kept running; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(status.code(), Some(1), "exit of `up {args:?}`: {stderr}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line for {args:?}, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "for {args:?}: {stderr}");
    assert!(!dir.join("api-port").exists(), "a node that did not start announced its API");
    lines[0].to_string()
}

fn listen_addrs(node: &Node) -> Vec<String> {
    node.status()["listen"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[test]
fn a_second_node_on_a_taken_tcp_or_quic_port_fails_with_one_line() {
    let a = Node::start_real(&strings(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
        "--torrents",
        "false",
    ]));
    wait_for_or(
        "A to listen on TCP and QUIC",
        Duration::from_secs(30),
        || listen_addrs(&a).len() == 2,
        || dump(std::slice::from_ref(&a)),
    );
    let taken = listen_addrs(&a);
    let tcp = taken.iter().find(|s| s.contains("/tcp/")).expect("tcp address").clone();
    let quic = taken.iter().find(|s| s.ends_with("/quic-v1")).expect("quic address").clone();

    let tmp = tempfile::tempdir().unwrap();
    for (i, addr) in [&tcp, &quic].into_iter().enumerate() {
        let line =
            up_fails(&tmp.path().join(format!("b{i}")), &["--listen", addr, "--torrents", "false"]);
        assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
        assert!(line.contains("already in use"), "{line}");
    }
    // A was not disturbed.
    assert_eq!(listen_addrs(&a), taken);
}

#[test]
fn a_taken_torrent_port_fails_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap();
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, format!("[torrent]\nlisten_addr = \"{taken}\"\n")).unwrap();
    let line = up_fails(
        &tmp.path().join("n"),
        &["--config", config.to_str().unwrap(), "--listen", "/ip4/127.0.0.1/tcp/0"],
    );
    assert!(line.contains("torrent session did not start"), "{line}");
    assert!(line.contains(&taken.to_string()) && line.contains("--torrents false"), "{line}");
}

#[test]
fn a_relative_data_dir_runs_torrent_duties() {
    let cwd = tempfile::tempdir().unwrap();
    // The BitTorrent listener on loopback; everything else (the blocklist of private ranges
    // among it) as a volunteer's node has it.
    std::fs::write(cwd.path().join("node.toml"), "[torrent]\nlisten_addr = \"127.0.0.1:0\"\n")
        .unwrap();
    let owner = starling_protocol::engine::test_keypair(71);
    let mut args = strings(&["--config", "node.toml", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    args.extend(["--trust".to_string(), owner.public().to_hex()]);
    let node = Node::start_real_in(cwd.path(), "pb", &args);

    let s = node.status();
    let torrent_role = u64::from(Roles::TORRENT.0);
    assert_eq!(num(&s, &["roles"]) & torrent_role, torrent_role, "no torrent role: {s}");
    assert_eq!(s["torrents"]["enabled"], Value::Bool(true), "{s}");
    assert!(cwd.path().join("pb/torrents/blocklist.txt").is_file(), "no blocklist under pb/");

    // A torrent duty, its content already where the session keeps it: the node takes it,
    // checks the pieces and seeds.
    let src = tempfile::tempdir().unwrap();
    let (torrent, info_hash, content) = make_torrent(src.path());
    let file = torrent_file(&node, &info_hash);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &content).unwrap();
    let m = manifest(&owner);
    assert_eq!(
        node.publish(&Envelope::Manifest(Signed::sign(&owner, &m)).to_bytes())["outcome"],
        "applied"
    );
    let item =
        WorkItem::Torrent { info_hash, source: TorrentSource::File(torrent.clone()), replica: 0 };
    assert_eq!(node.publish(&batch(&owner, &m, 1, item))["outcome"], "applied");
    wait_for_or(
        "the node to seed the torrent",
        Duration::from_secs(60),
        || num(&node.status(), &["torrents", "seeding"]) == 1,
        || dump(std::slice::from_ref(&node)),
    );
}

#[test]
fn a_torrent_table_with_only_a_listen_port_runs_no_dht() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, format!("[torrent]\nlisten_addr = \"127.0.0.1:{port}\"\n")).unwrap();
    let node = Node::start_real(&strings(&[
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]));

    // The session opens before the API answers, DHT node and all, so this is its final word.
    let t = node.status()["torrents"].clone();
    assert_eq!(t["enabled"], Value::Bool(true), "{t}");
    assert_eq!(t["listen"], Value::String(format!("127.0.0.1:{port}")), "{t}");
    assert_eq!(t["dht"], Value::Bool(false), "the session runs a DHT node: {t}");
    // Trackers stay on as documented, but are asked only for a torrent that lists them, and
    // the node holds none.
    assert_eq!(t["trackers"], Value::Bool(true), "{t}");
    assert_eq!((num(&t, &["seeding"]), num(&t, &["downloading"])), (0, 0), "{t}");
}
