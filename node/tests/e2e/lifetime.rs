//! Operator basics across restarts: lifetime contribution figures survive a clean stop and
//! lose at most the save interval to a `kill -9`; caps set through the API are kept, a flag
//! pins its cap over them, and a reset goes back to the configured ones.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// The save interval of the lifetime figures (`LIFETIME_SAVE_INTERVAL`), in ms.
const SAVE_INTERVAL_MS: u64 = 10_000;
/// Room for a timer tick delayed on a loaded machine.
const TICK_SLACK_MS: u64 = 3_000;

fn lifetime(n: &Node) -> Value {
    n.status()["lifetime"].clone()
}

fn status_text(n: &Node) -> String {
    let out = Command::new(BIN)
        .args(["status", "--data-dir"])
        .arg(&n.dir)
        .output()
        .expect("run starling status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn lifetime_figures_survive_a_stop_and_a_kill() {
    let p = project(61, "lifetime", 6, 5_000);
    let mut args: Vec<String> = Vec::new();
    args.extend(["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    args.extend(["--trust".into(), p.owner.public().to_hex()]);
    let mut node = Node::start(200, &args);
    node.publish(&p.manifest);
    node.publish(&p.batch);
    wait_for_or(
        "the node to finish its 6 items",
        Duration::from_secs(90),
        || num(&lifetime(&node), &["items", "crawl"]) == 6,
        || dump(std::slice::from_ref(&node)),
    );
    let before = lifetime(&node);
    assert!(num(&before, &["urls_archived"]) >= 6, "{before}");
    assert!(num(&before, &["since_ms"]) > 0, "{before}");
    let text = status_text(&node);
    assert!(text.contains("contributed 6 items (6 crawl), "), "{text}");
    assert!(text.contains("\ncaps      capacity "), "{text}");

    // A clean stop writes the figures: nothing is lost.
    assert!(node.stop().is_some_and(|s| s.success()), "the node did not stop cleanly");
    node.restart();
    let after = lifetime(&node);
    assert_eq!(after["items"], before["items"], "{after}");
    for figure in ["urls_archived", "bytes_archived", "since_ms"] {
        assert_eq!(num(&after, &[figure]), num(&before, &[figure]), "{figure}: {after}");
    }
    assert!(num(&after, &["uptime_ms"]) >= num(&before, &["uptime_ms"]), "{after}");

    // kill -9: what was written last survives, and that is at most one interval old.
    wait_for("a save in this run", Duration::from_secs(30), || {
        num(&lifetime(&node), &["saved_ms"]) > 0
    });
    let s = node.status();
    let l = &s["lifetime"];
    let since_save = num(&s, &["now_ms"]).saturating_sub(num(l, &["saved_ms"]));
    assert!(since_save <= SAVE_INTERVAL_MS + TICK_SLACK_MS, "last save {since_save} ms ago");
    let uptime_at_save = num(l, &["uptime_ms"]) - since_save;
    let uptime_at_kill = num(l, &["uptime_ms"]);
    node.kill9();
    node.restart();
    let s = node.status();
    let l = &s["lifetime"];
    let saved_uptime = num(l, &["uptime_ms"]) - num(&s, &["uptime_ms"]).min(num(l, &["uptime_ms"]));
    assert!(
        saved_uptime + 50 >= uptime_at_save,
        "the kill lost more than the last save: {saved_uptime} < {uptime_at_save}"
    );
    assert!(
        uptime_at_kill.saturating_sub(saved_uptime) <= SAVE_INTERVAL_MS + TICK_SLACK_MS,
        "the kill lost {} ms of uptime",
        uptime_at_kill - saved_uptime
    );
    assert_eq!(l["items"], before["items"], "{l}");
    assert_eq!(num(l, &["urls_archived"]), num(&before, &["urls_archived"]));
}

#[test]
fn caps_set_through_the_api_are_kept_unless_a_flag_pins_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "disk_bytes_max = \"2GiB\"\nbandwidth_bytes_per_s = \"1MB/s\"\n")
        .unwrap();
    let mut args: Vec<String> = Vec::new();
    args.extend(["--listen".into(), "none".into(), "--config".into()]);
    args.push(config.display().to_string());
    let mut node = Node::start_real(&args);
    let caps = |n: &Node| n.status()["caps"].clone();
    assert_eq!(num(&caps(&node), &["disk_bytes_max"]), 2 << 30);
    assert_eq!(num(&caps(&node), &["bandwidth_bytes_per_s"]), 1_000_000);

    let set: Value =
        node.api.post_json("/caps", br#"{"capacity": 3, "disk_bytes_max": 10737418240}"#).unwrap();
    assert_eq!(num(&set, &["disk_bytes_max"]), 10 << 30);
    assert!(status_text(&node).contains("caps      capacity 3, bandwidth 1 MB/s, disk 10 GiB"));

    // Kept across a restart, over the config file.
    node.stop();
    node.restart();
    assert_eq!(num(&caps(&node), &["disk_bytes_max"]), 10 << 30);
    assert_eq!(num(&caps(&node), &["capacity"]), 3);
    assert_eq!(num(&caps(&node), &["bandwidth_bytes_per_s"]), 1_000_000);

    // A flag wins over the saved choice for its run.
    node.stop();
    node.extra.extend(["--disk-max".into(), "500MB".into()]);
    node.restart();
    assert_eq!(num(&caps(&node), &["disk_bytes_max"]), 500_000_000);
    assert_eq!(num(&caps(&node), &["capacity"]), 3, "capacity is not pinned by a flag");

    // A reset forgets the saved caps: the configured ones apply at once and after a restart.
    let reset: Value = node.api.post_json("/caps", br#"{"reset": true}"#).unwrap();
    assert_eq!(num(&reset, &["disk_bytes_max"]), 500_000_000);
    assert_ne!(num(&reset, &["capacity"]), 3);
    node.stop();
    node.extra.truncate(node.extra.len() - 2);
    node.restart();
    assert_eq!(num(&caps(&node), &["disk_bytes_max"]), 2 << 30);
    assert_ne!(num(&caps(&node), &["capacity"]), 3);
}
