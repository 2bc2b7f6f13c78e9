//! Bad input gets one clear line on stderr and a non-zero exit, never a panic; the control
//! API refuses requests without the right token.

use std::process::{Command, Stdio};

use crate::common::*;

/// Runs `starling up` with `args` on `dir`, expecting a failure with one line naming `needle`.
fn fails_with(dir: &std::path::Path, args: &[&str], needle: &str) {
    let out = Command::new(BIN)
        .arg("up")
        .arg("--data-dir")
        .arg(dir)
        .args(["--mdns", "false", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(args)
        .env_remove("STARLING_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert_eq!(out.status.code(), Some(1), "exit code for {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line for {args:?}, got: {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "for {args:?}: {stderr}");
}

#[test]
fn bad_inputs_get_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let config = dir.join("bad.toml");
    std::fs::write(&config, "capacity = \"lots\"\n").unwrap();
    fails_with(&dir.join("a"), &["--config", config.to_str().unwrap()], "is not valid");
    fails_with(
        &dir.join("a"),
        &["--config", "/nonexistent/starling.toml"],
        "cannot read config file",
    );
    fails_with(&dir.join("a"), &["--bootstrap", "not/a/multiaddr"], "bootstrap address");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    fails_with(
        &dir.join("b"),
        &["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")],
        "cannot listen on",
    );
    fails_with(&dir.join("b"), &["--api-port", &port], "control API");

    let corrupt = dir.join("c");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("starling.redb"), vec![0x5a; 16 * 1024]).unwrap();
    fails_with(&corrupt, &[], "not a Starling store");

    let badkey = dir.join("d");
    std::fs::create_dir_all(&badkey).unwrap();
    std::fs::write(badkey.join("node.key"), "not a key\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(badkey.join("node.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    fails_with(&badkey, &[], "not a Starling secret key");
    let keydir = dir.join("e");
    std::fs::create_dir_all(keydir.join("node.key")).unwrap();
    fails_with(&keydir, &[], "key file");
}

#[test]
fn locked_database_and_api_token() {
    let node = Node::start(100, &["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    fails_with(&node.dir, &[], "in use by another process");

    let no_token = node.api.request("GET", "/status", &[], Some("")).unwrap();
    assert_eq!(no_token.status, 401);
    let wrong =
        node.api.request("GET", "/status", &[], Some("0123456789abcdef0123456789abcdef")).unwrap();
    assert_eq!(wrong.status, 401);
    let right = node.api.request("GET", "/status", &[], None).unwrap();
    assert_eq!(right.status, 200);
    let garbage = node.api.request("POST", "/publish", b"garbage", None).unwrap();
    assert_eq!(garbage.status, 400);

    let mut node = node;
    let status = node.stop().expect("node stopped");
    assert!(status.success(), "graceful shutdown exit: {status}");
    assert!(!node.dir.join("api-port").exists(), "api-port left behind");
}

#[test]
fn out_of_range_settings_stop_the_node_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let max = u64::MAX.to_string();
    fails_with(
        &tmp.path().join("a"),
        &["--warmup-ms", &max],
        "warmup_ms (--warmup-ms) = 18446744073709551615 is outside its range 0 ..= 3600000",
    );
    fails_with(&tmp.path().join("a"), &["--settle-ms", &max], "settle_ms (--settle-ms)");
    fails_with(&tmp.path().join("a"), &["--presence-ttl-ms", &max], "presence_ttl_ms");
    let config = tmp.path().join("c.toml");
    std::fs::write(&config, "sync_interval_ms = 1\n").unwrap();
    fails_with(
        &tmp.path().join("b"),
        &["--config", config.to_str().unwrap()],
        "sync_interval_ms (--sync-interval-ms) = 1 is outside its range 100 ..= 3600000",
    );
    assert!(!tmp.path().join("a/api-port").exists());
}
