//! `starling dash` end to end in a real terminal: tmux runs the dashboard against a running
//! node; the test sends keys (switch tabs, pause, resume, quit), reads the screen with
//! `capture-pane`, and checks through the node's own API that it really paused and resumed.
//! `.ci/run` installs tmux; without it this test fails and says so.

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use starling_node::views::StatusView;

/// tmux on a private socket, so the test never touches the user's sessions.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is not installed (the dashboard test needs it; .ci/run installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "dash"]).stdout)
            .into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.run(&["send-keys", "-t", "dash", keys]);
        assert!(out.status.success(), "send-keys failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        wait_for_or(
            what,
            Duration::from_secs(30),
            || {
                last = self.screen();
                cond(&last)
            },
            || self.screen(),
        );
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn paused(n: &Node) -> Option<bool> {
    n.api.get_json::<StatusView>("/status").ok().map(|s| s.paused)
}

#[test]
fn dashboard_in_tmux_switches_tabs_pauses_and_resumes_the_node() {
    let node = Node::start(100, &["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    let tmux = Tmux { socket: format!("starling-dash-test-{}", std::process::id()) };
    let cmd = format!("{BIN} dash --data-dir {} --tick-ms 200", node.dir.display());
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "dash",
        "-x",
        "100",
        "-y",
        "30",
        "-e",
        "TERM=xterm-256color",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    let status: StatusView = node.api.get_json("/status").unwrap();
    let short = &status.node_id[..8];

    let screen = tmux.wait_screen("the overview with the node's id", |s| {
        s.contains("starling dash") && s.contains(short) && s.contains("Mesh")
    });
    assert!(screen.contains("1 Overview"), "{screen}");

    tmux.keys("3");
    tmux.wait_screen("the peers tab", |s| s.contains("Peers") && !s.contains("┌Mesh"));
    tmux.keys("7");
    tmux.wait_screen("the log tab with the node's startup line", |s| {
        s.contains("starling node up")
    });

    tmux.keys("p");
    wait_for("the node to pause", Duration::from_secs(30), || paused(&node) == Some(true));
    tmux.wait_screen("the paused state on screen", |s| s.contains("paused"));
    tmux.keys("p");
    wait_for("the node to resume", Duration::from_secs(30), || paused(&node) == Some(false));
    tmux.wait_screen("the running state on screen", |s| s.contains("running"));

    tmux.keys("q");
    wait_for("the dashboard to exit", Duration::from_secs(30), || {
        !tmux.run(&["has-session", "-t", "dash"]).status.success()
    });
    assert_eq!(paused(&node), Some(false), "the node kept running after the dashboard quit");
}
