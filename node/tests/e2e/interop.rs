//! A js-libp2p 3 peer (node/tests/interop/peer.mjs, versions pinned by its package-lock.json)
//! against a real node on 127.0.0.1: it dials in, receives the node's gossip on a published
//! project's topic with the same message ids, queries the node's DHT and answers the node's,
//! sends the node's own messages back to it, and keeps a non-negative score at the node for
//! 60 s.
//!
//! Needs `node` (20.19 or later; node22.mjs fills in what js-libp2p 3 takes from Node.js 22) and `npm`; `npm ci` installs into target/ once per lockfile.
//! Without them the test fails when `CI=true` and is skipped (with the reason) otherwise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// How long the peer must keep a non-negative score at the node.
const HOLD: Duration = Duration::from_secs(60);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `program --version`, if it runs.
fn version_of(program: &str) -> Option<String> {
    let out = Command::new(program).arg("--version").stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `cmd` to its end within `limit`, killing it after; panics with its output on failure.
fn run_bounded(mut cmd: Command, what: &str, limit: Duration, log: &Path) {
    let out = std::fs::File::create(log).unwrap();
    let mut child =
        cmd.stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "{what} failed ({status}):\n{text}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not finish within {limit:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The peer's directory under target/ with `npm ci` done for the committed lockfile; the
/// install is reused while the lockfile stays the same.
fn installed_peer() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-js");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::read(src.join("package-lock.json")).unwrap();
    let stamp = dir.join("installed-lock.json");
    for f in ["package.json", "package-lock.json", "peer.mjs", "node22.mjs"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    if std::fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        let _ = std::fs::remove_file(&stamp);
        let mut cmd = Command::new("npm");
        cmd.current_dir(&dir).args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"]);
        run_bounded(cmd, "npm ci", Duration::from_secs(600), &dir.join("npm-ci.log"));
        std::fs::write(&stamp, &lock).unwrap();
    }
    dir
}

/// The js peer, killed when dropped.
struct JsPeer {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: PathBuf,
}

impl JsPeer {
    fn start(dir: &Path, addr: &str, topic: &str) -> JsPeer {
        let stderr = dir.join("peer.stderr");
        let mut child = Command::new("node")
            .current_dir(dir)
            .arg("peer.mjs")
            .env("STARLING_ADDR", addr)
            .env("STARLING_TOPIC", topic)
            .env("STARLING_ECHO", "1")
            .env("STARLING_DEADLINE_MS", "240000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn node peer.mjs");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        JsPeer { child, lines, seen: Vec::new(), stderr }
    }

    /// Takes in what the peer said so far.
    fn drain(&mut self) {
        while let Ok(v) = self.lines.try_recv() {
            assert_ne!(v["event"], "error", "the js peer failed: {v}\n{}", self.diag());
            self.seen.push(v);
        }
    }

    fn said(&self, f: impl Fn(&Value) -> bool) -> Option<&Value> {
        self.seen.iter().find(|v| f(v))
    }

    /// Waits (bounded) until the peer said something `f` accepts.
    fn wait(&mut self, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            self.drain();
            if let Some(v) = self.said(&f) {
                return v.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the js peer exited ({status}) before {what}\n{}", self.diag());
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for the js peer: {what}\n{}",
                self.diag()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn diag(&self) -> String {
        let tail: Vec<String> =
            self.seen.iter().rev().take(30).rev().map(ToString::to_string).collect();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("--- js peer said:\n{}\n--- js stderr:\n{err}", tail.join("\n"))
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        // Its stdin closes here too, which alone would stop it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The js peer's score at the node, if connected there.
fn score_at(node: &Node, peer: &str) -> Option<f64> {
    let peers: Vec<Value> = node.api.get_json("/peers").ok()?;
    let p = peers.into_iter().find(|p| p["peer_id"] == peer && p["connected"] == true)?;
    p["score"].as_f64()
}

#[test]
fn js_libp2p_peer_gets_gossip_answers_the_dht_and_keeps_its_score() {
    let (Some(node_v), Some(npm_v)) = (version_of("node"), version_of("npm")) else {
        let why = "node and npm are needed for the js-libp2p interop test";
        assert!(!in_ci(), "{why} (CI=true): install Node.js 20.19+ and npm");
        eprintln!("SKIPPED js_libp2p_peer_gets_gossip_answers_the_dht_and_keeps_its_score: {why}");
        return;
    };
    let v: Vec<u32> =
        node_v.trim_start_matches('v').split('.').map(|p| p.parse().unwrap_or(0)).collect();
    if v.len() < 2 || (v[0], v[1]) < (20, 19) {
        let why = format!("the js-libp2p interop test needs Node.js 20.19 or later, not {node_v}");
        assert!(!in_ci(), "{why} (CI=true)");
        eprintln!("SKIPPED js_libp2p_peer_gets_gossip_answers_the_dht_and_keeps_its_score: {why}");
        return;
    }
    eprintln!("js-libp2p interop with node {node_v}, npm {npm_v}");
    let dir = installed_peer();

    let p = project(181, "interop", 3, 5_000);
    let topic = format!("starling/v1/owner/{}", p.owner.public().to_hex());
    let node = Node::start(
        600_000,
        &[
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
            "--trust".into(),
            p.owner.public().to_hex(),
        ],
    );
    let node_peer = node.status()["peer_id"].as_str().unwrap().to_string();
    let mut js = JsPeer::start(&dir, &node.addr(), &topic);
    let js_peer =
        js.wait("start", Duration::from_secs(60), |v| v["event"] == "listening")["peer_id"]
            .as_str()
            .unwrap()
            .to_string();
    js.wait("the node's subscription", Duration::from_secs(60), |v| v["event"] == "ready");

    node.publish(&p.manifest);
    node.publish(&p.batch);
    // The same id on both sides: js computes blake3 of the data it received.
    let manifest_id = blake3::hash(&p.manifest).to_hex().to_string();
    let got = js.wait("the project's manifest on the owner topic", Duration::from_secs(60), |v| {
        v["event"] == "gossip" && v["topic"] == topic.as_str() && v["id"] == manifest_id.as_str()
    });
    assert_eq!(got["from"], node_peer.as_str(), "{got}");
    js.wait("one of the node's messages echoed back", Duration::from_secs(60), |v| {
        v["event"] == "gossip" && v["echoed"] == true
    });
    js.wait("the node's answer to a DHT query", Duration::from_secs(90), |v| {
        v["event"] == "dht_answered"
    });
    // The node asks for providers of the project it just learnt: js is in its routing table.
    js.wait("a DHT request from the node", Duration::from_secs(60), |v| v["event"] == "dht_served");

    // Sixty seconds at the node, sampled every second: connected, scored, never below zero.
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < HOLD {
        js.drain();
        let s = score_at(&node, &js_peer);
        samples.push(s);
        assert!(
            s.is_some_and(|s| s >= 0.0),
            "the js peer's score at the node is {s:?} after {:?} (samples {samples:?})\n{}\n{}",
            start.elapsed(),
            js.diag(),
            dump(std::slice::from_ref(&node))
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    js.drain();
    let echoed = js.seen.iter().filter(|v| v["echoed"] == true).count();
    let last = samples.last().copied().flatten().unwrap_or_default();
    eprintln!(
        "js peer kept a score >= 0 for {HOLD:?} ({} samples, last {last:.2}); {echoed} messages echoed",
        samples.len()
    );
}
