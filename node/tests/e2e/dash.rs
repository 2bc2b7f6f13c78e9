//! `starling dash` end to end in a real terminal: the dashboard runs in a pseudo-terminal of a
//! fixed size against a running node, and a vt100 parser turns what it writes into the screen a
//! person would see. The test types keys into the terminal (switch tabs, pause, resume, quit),
//! reads the screen, checks through the node's own API that it really paused and resumed, and
//! that the dashboard leaves the terminal as it found it. Nothing outside Rust is needed.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::termios::LocalFlags;
use portable_pty::{CommandBuilder, MasterPty, PtySize, SlavePty, native_pty_system};

use crate::common::*;
use starling_node::views::StatusView;

/// The terminal's size, as a person's small window might be.
const ROWS: u16 = 30;
const COLS: u16 = 100;
/// How long any one thing on screen or in the node may take to show up.
const WAIT: Duration = Duration::from_secs(30);

/// Keystrokes and the terminal's answers go to the dashboard through the PTY master.
type Keyboard = Arc<Mutex<Box<dyn Write + Send>>>;

/// What a real terminal does beyond drawing: it answers a cursor position query, which
/// terminal libraries send and then wait on.
struct Answers {
    keyboard: Keyboard,
}

impl vt100::Callbacks for Answers {
    fn unhandled_csi(
        &mut self,
        screen: &mut vt100::Screen,
        i1: Option<u8>,
        _i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        if c == 'n' && i1.is_none() && params == [&[6][..]] {
            let (row, col) = screen.cursor_position();
            let answer = format!("\x1b[{};{}R", row + 1, col + 1);
            let _ = self.keyboard.lock().expect("keyboard").write_all(answer.as_bytes());
        }
    }
}

/// `starling dash` in a pseudo-terminal, with the screen it has drawn.
struct Terminal {
    screen: Arc<Mutex<vt100::Parser<Answers>>>,
    keyboard: Keyboard,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    master: Box<dyn MasterPty + Send>,
    /// Held open so the terminal's modes can still be read after the dashboard exits.
    _slave: Box<dyn SlavePty + Send>,
}

impl Terminal {
    fn spawn(cmd: CommandBuilder) -> Terminal {
        let size = PtySize { rows: ROWS, cols: COLS, pixel_width: 0, pixel_height: 0 };
        let pair = native_pty_system().openpty(size).expect("open a pseudo-terminal");
        let child = pair.slave.spawn_command(cmd).expect("spawn starling dash in the terminal");
        let keyboard: Keyboard = Arc::new(Mutex::new(pair.master.take_writer().expect("writer")));
        let rows = ROWS.try_into().expect("rows");
        let cols = COLS.try_into().expect("cols");
        let answers = Answers { keyboard: keyboard.clone() };
        let screen =
            Arc::new(Mutex::new(vt100::Parser::new_with_callbacks(rows, cols, 0, answers)));
        let mut output = pair.master.try_clone_reader().expect("reader");
        let parser = screen.clone();
        // Ends when the terminal closes, after the test drops it.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = output.read(&mut buf) {
                parser.lock().expect("screen").process(&buf[..n]);
            }
        });
        Terminal { screen, keyboard, child, master: pair.master, _slave: pair.slave }
    }

    fn text(&self) -> String {
        self.screen.lock().expect("screen").screen().contents()
    }

    fn keys(&self, keys: &str) {
        let mut keyboard = self.keyboard.lock().expect("keyboard");
        keyboard.write_all(keys.as_bytes()).and_then(|()| keyboard.flush()).expect("type keys");
    }

    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        wait_for_or(
            what,
            WAIT,
            || {
                last = self.text();
                cond(&last)
            },
            || self.text(),
        );
        last
    }

    /// The dashboard's exit status, once it has exited.
    fn wait_exit(&mut self) -> portable_pty::ExitStatus {
        let (child, screen) = (&mut self.child, &self.screen);
        let mut exit = None;
        wait_for_or(
            "the dashboard to exit",
            WAIT,
            || {
                exit = child.try_wait().expect("the dashboard's status");
                exit.is_some()
            },
            || screen.lock().expect("screen").screen().contents(),
        );
        exit.expect("exited")
    }

    /// Whether the terminal is in raw mode: no line editing, no echo.
    fn raw(&self) -> bool {
        let modes = self.master.get_termios().expect("the terminal's modes");
        !modes.local_flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO)
    }

    /// Whether the dashboard drew on the alternate screen and hid the cursor.
    fn alternate_screen_hidden_cursor(&self) -> (bool, bool) {
        let parser = self.screen.lock().expect("screen");
        (parser.screen().alternate_screen(), parser.screen().hide_cursor())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn paused(n: &Node) -> Option<bool> {
    n.api.get_json::<StatusView>("/status").ok().map(|s| s.paused)
}

fn disk_cap(n: &Node) -> Option<u64> {
    n.api.get_json::<StatusView>("/status").ok().and_then(|s| s.caps.disk_bytes_max)
}

#[test]
fn dashboard_in_a_terminal_switches_tabs_pauses_resumes_and_sets_caps() {
    let node = Node::start(100, &["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    let mut cmd = CommandBuilder::new(BIN);
    cmd.args(["dash", "--tick-ms", "200", "--data-dir"]);
    cmd.arg(&node.dir);
    cmd.cwd(&node.dir);
    cmd.env("TERM", "xterm-256color");
    let mut term = Terminal::spawn(cmd);
    let status: StatusView = node.api.get_json("/status").unwrap();
    let short = &status.node_id[..8];

    let screen = term.wait_screen("the overview with the node's id", |s| {
        s.contains("starling dash") && s.contains(short) && s.contains("Mesh")
    });
    assert!(screen.contains("1 Overview"), "{screen}");
    assert!(term.raw(), "the dashboard runs with the terminal in raw mode");
    assert_eq!(term.alternate_screen_hidden_cursor(), (true, true));

    // A node alone, with nothing to work on, says what to do next.
    term.wait_screen("the idle node's next step", |s| s.contains("no peers connected"));
    term.keys("?");
    term.wait_screen("the key help", |s| s.contains("any key closes") && s.contains("Everywhere"));
    term.keys("x");
    term.wait_screen("the help closed", |s| !s.contains("any key closes"));

    term.keys("3");
    term.wait_screen("the peers tab", |s| s.contains("Peers") && !s.contains("┌Mesh"));
    term.keys("7");
    term.wait_screen("the log tab with the node's startup line", |s| {
        s.contains("starling node up")
    });

    term.keys("p");
    wait_for("the node to pause", WAIT, || paused(&node) == Some(true));
    term.wait_screen("the paused state on screen", |s| s.contains("paused"));
    term.keys("p");
    wait_for("the node to resume", WAIT, || paused(&node) == Some(false));
    term.wait_screen("the running state on screen", |s| s.contains("running"));

    // Byte caps are typed with units; a typo is named and nothing is sent.
    term.keys("d5MB/s\r");
    term.wait_screen("the typo named", |s| s.contains("drop the /s"));
    term.keys("d1.5GiB\r");
    wait_for("the node to take the disk cap", WAIT, || disk_cap(&node) == Some(3 << 29));
    term.wait_screen("the disk cap on screen", |s| s.contains("disk cap set to 1536 MiB"));
    term.keys("b2MiB/s\r");
    wait_for("the node to take the bandwidth cap", WAIT, || {
        node.api.get_json::<StatusView>("/status").ok().and_then(|s| s.caps.bandwidth_bytes_per_s)
            == Some(2 << 20)
    });

    term.keys("q");
    let exit = term.wait_exit();
    assert!(exit.success(), "the dashboard quit with {exit:?}:\n{}", term.text());
    // Its last output (leaving the alternate screen) may still be on its way to the parser.
    wait_for_or(
        "the dashboard to leave the alternate screen and show the cursor",
        WAIT,
        || term.alternate_screen_hidden_cursor() == (false, false),
        || format!("{:?}", term.alternate_screen_hidden_cursor()),
    );
    assert!(!term.raw(), "the dashboard left the terminal in raw mode");
    assert_eq!(paused(&node), Some(false), "the node kept running after the dashboard quit");
}

#[test]
fn a_wrong_token_shows_as_401_not_unreachable() {
    let node = Node::start(101, &["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    let mut cmd = CommandBuilder::new(BIN);
    cmd.args(["dash", "--tick-ms", "200", "--token", "not-the-token", "--api"]);
    cmd.arg(node.api.base());
    cmd.cwd(&node.dir);
    cmd.env("TERM", "xterm-256color");
    let mut term = Terminal::spawn(cmd);
    let screen = term.wait_screen("the 401 in the top bar", |s| {
        s.contains("401: wrong API token (the node's data dir has api-token)")
    });
    assert!(!screen.contains("UNREACHABLE"), "{screen}");
    term.keys("q");
    assert!(term.wait_exit().success());
}

/// The demo's crawl reads as complete on the dashboard (seeding copies apart), and quitting
/// prints what the demo did and where its files are.
#[test]
fn quitting_the_demo_dashboard_prints_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = CommandBuilder::new(BIN);
    cmd.args(["demo", "--nodes", "2", "--items", "4", "--dir"]);
    cmd.arg(tmp.path());
    cmd.cwd(tmp.path());
    cmd.env("TERM", "xterm-256color");
    let mut term = Terminal::spawn(cmd);
    term.wait_screen("the demo's crawl complete on the dashboard", |s| {
        s.contains("Crawl chunks") && s.contains("complete: 4 done · 0 failed of 4 chunks")
    });
    term.keys("q");
    let exit = term.wait_exit();
    let screen = term.wait_screen("the demo's summary", |s| s.contains("copies per result"));
    assert!(exit.success(), "the demo quit with {exit:?}:\n{screen}");
    assert!(screen.contains("demo ended (dashboard closed) after"), "{screen}");
    for line in ["items done            4/4", "URLs archived         20", "duplicate executions  0"]
    {
        assert!(screen.contains(line), "{line}: {screen}");
    }
    assert!(screen.contains(&tmp.path().join("node-0").display().to_string()), "{screen}");
}
