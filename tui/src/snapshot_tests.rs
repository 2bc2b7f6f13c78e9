//! Snapshot tests of every tab drawn from fixture data on ratatui's `TestBackend`. The
//! `.snap` files under `src/snapshots/` are the reviewed screens; a drawing change fails here
//! until the new screen is reviewed and accepted.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use insta::assert_snapshot;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::app::{Action, App, Tab};
use crate::fixtures::{self, BASE};
use crate::ui;

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
    terminal.draw(|frame| ui::draw(app, frame)).expect("draw");
    terminal.backend().to_string()
}

fn on_tab(tab: Tab) -> App {
    let mut app = fixtures::app();
    app.update(Action::SelectTab(tab));
    app
}

fn key(c: char) -> Action {
    Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

#[test]
fn overview_80x24() {
    assert_snapshot!(render(&on_tab(Tab::Overview), 80, 24));
}

#[test]
fn overview_120x40() {
    assert_snapshot!(render(&on_tab(Tab::Overview), 120, 40));
}

#[test]
fn work_80x24() {
    let mut app = on_tab(Tab::Work);
    app.update(Action::Down);
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn peers_80x24() {
    assert_snapshot!(render(&on_tab(Tab::Peers), 80, 24));
}

#[test]
fn seeding_80x24() {
    assert_snapshot!(render(&on_tab(Tab::Seeding), 80, 24));
}

#[test]
fn relay_80x24() {
    assert_snapshot!(render(&on_tab(Tab::Relay), 80, 24));
}

#[test]
fn projects_80x24() {
    let mut app = on_tab(Tab::Projects);
    app.update(Action::Down);
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn projects_trust_prompt() {
    let mut app = on_tab(Tab::Projects);
    app.update(Action::Down);
    assert!(app.update(key('t')).command.is_none(), "trust waits for y");
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn log_80x24() {
    assert_snapshot!(render(&on_tab(Tab::Log), 80, 24));
}

#[test]
fn log_filtered_by_level_and_text() {
    let mut app = on_tab(Tab::Log);
    for _ in 0..3 {
        app.update(key('l'));
    }
    app.update(key('/'));
    for c in "host".chars() {
        app.update(key(c));
    }
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn log_scrolled_back() {
    let mut app = on_tab(Tab::Log);
    app.update(Action::Resize { height: 12 });
    app.update(Action::PageUp);
    assert_snapshot!(render(&app, 80, 12));
}

#[test]
fn connecting_before_the_first_answer() {
    let app = App::new("/home/op/.local/share/starling");
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn unreachable_before_any_answer() {
    let mut app = App::new("/home/op/.local/share/starling");
    app.update(Action::Unreachable {
        target: "/home/op/.local/share/starling".into(),
        error: "no running node found in /home/op/.local/share/starling (no api-port file); \
                start one with `starling up`"
            .into(),
    });
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn unreachable_keeps_the_last_data() {
    let mut app = fixtures::app();
    app.update(Action::Unreachable {
        target: BASE.into(),
        error: "cannot reach the node's control API at http://127.0.0.1:7411 (connection refused)"
            .into(),
    });
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn a_node_halted_by_its_own_faults_says_which_and_what_to_do() {
    let mut snap = fixtures::snapshot();
    snap.status.health = crate::api::HealthView {
        ok: false,
        faults: vec![
            crate::api::HealthFault {
                kind: "clock".into(),
                detail: "this node's clock is 30000 ms behind its peers' (median), beyond the \
                         1000 ms the mesh tolerates; set the system clock right (NTP: `timedatectl \
                         set-ntp true`)"
                    .into(),
            },
            crate::api::HealthFault { kind: "network".into(), detail: "network down".into() },
        ],
        clock: starling_protocol::ClockView { offset_ms: Some(30_000), peers: 4, off: true },
        gave_back: 3,
    };
    snap.status.holding = 0;
    let mut app = fixtures::app();
    app.update(Action::Snapshot(Box::new(snap)));
    let screen = render(&app, 100, 24);
    assert!(screen.contains("HALTED: CLOCK, NETWORK"), "{screen}");
    assert!(screen.contains("30000 ms behind"), "{screen}");
    assert_snapshot!(screen);
}

#[test]
fn paused_and_over_the_disk_cap() {
    let mut snap = fixtures::snapshot();
    snap.status.paused = true;
    snap.status.over_disk_cap = true;
    snap.status.capacity = 0;
    snap.status.disk.results_bytes = 6 * 1024 * 1024 * 1024;
    snap.status.connected_peers = 0;
    let mut app = fixtures::app();
    app.update(Action::Snapshot(Box::new(snap)));
    assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn node_without_seeding_or_relay() {
    let mut snap = fixtures::snapshot();
    snap.seeding = None;
    snap.relay = None;
    let mut app = App::new(BASE);
    app.update(Action::Snapshot(Box::new(snap)));
    app.update(Action::SelectTab(Tab::Seeding));
    let seeding = render(&app, 60, 12);
    app.update(Action::SelectTab(Tab::Relay));
    let relay = render(&app, 60, 12);
    assert_snapshot!(format!("{seeding}\n{relay}"));
}

#[test]
fn help_overlay_lists_every_key() {
    let mut app = on_tab(Tab::Projects);
    app.update(key('?'));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("Keys") && screen.contains("(this tab)"), "{screen}");
    assert_snapshot!(screen);
    app.update(key('x'));
    assert!(!render(&app, 80, 24).contains("any key closes"), "any key closes the help");
}

#[test]
fn log_wraps_a_long_line() {
    let mut snap = fixtures::snapshot();
    snap.log.push(crate::api::LogLine {
        at_ms: fixtures::NOW_MS,
        level: "WARN".into(),
        target: "starling::seed".into(),
        message: "could not fetch blob digest=77d1e0c2 size=48.0 MiB from 3 holders: peer \
                  12D3KooWPeer1xY7 closed the stream, peer 12D3KooWPeer2xY7 timed out after 30 s, \
                  peer 12D3KooWPeer3xY7 sent a chunk that did not match its digest; retrying in 10 s"
            .into(),
    });
    let mut app = fixtures::app();
    app.update(Action::Snapshot(Box::new(snap)));
    app.update(Action::SelectTab(Tab::Log));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("retrying in 10 s"), "the end of the message shows: {screen}");
    assert_snapshot!(screen);
}

#[test]
fn unreachable_top_bar_says_since_when() {
    let mut app = App::new(BASE);
    app.update(Action::Tick { now_ms: 5_000 });
    app.update(Action::Snapshot(Box::new(fixtures::snapshot())));
    app.update(Action::Tick { now_ms: 47_000 });
    app.update(Action::Unreachable {
        target: BASE.into(),
        error: "cannot reach the node's control API at http://127.0.0.1:7411 (connection refused)"
            .into(),
    });
    let screen = render(&app, 80, 24);
    assert!(screen.contains("UNREACHABLE · last answer 42s ago"), "{screen}");
    assert!(!screen.contains("running"), "{screen}");
    assert_snapshot!(screen);
}

#[test]
fn wrong_token_top_bar_says_401() {
    let mut app = App::new("/home/op/.local/share/starling");
    app.update(Action::Unauthorized {
        target: BASE.into(),
        error: "node answered 401: missing or wrong token".into(),
    });
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("401: wrong API token (the node's data dir has api-token)"),
        "{screen}"
    );
    assert!(!screen.contains("unreachable"), "{screen}");
    assert_snapshot!(screen);
}

/// A finished crawl whose copies are still held: complete, with the copies apart.
fn complete_snapshot() -> crate::app::Snapshot {
    use starling_protocol::ItemCounts;
    let mut snap = fixtures::snapshot();
    let p = &mut snap.projects[0];
    let crawl = ItemCounts { open: 0, held: 0, done: 385, failed: 5 };
    let seed = ItemCounts { open: 0, held: 770, done: 0, failed: 0 };
    p.items = ItemCounts { open: 0, held: 770, done: 385, failed: 5 };
    p.by_kind = Some(crate::api::KindCounts { crawl, seed, ..Default::default() });
    snap.projects.truncate(1);
    snap
}

#[test]
fn a_complete_project() {
    let mut app = fixtures::app();
    app.update(Action::Snapshot(Box::new(complete_snapshot())));
    app.update(Action::SelectTab(Tab::Projects));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("complete · 5 failed"), "{screen}");
    assert!(screen.contains("copies: 770 of 770"), "{screen}");
    assert_snapshot!(screen);
    app.update(Action::SelectTab(Tab::Overview));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("complete: 385 done"), "{screen}");
    assert!(screen.contains("every trusted project is complete"), "the hint says so: {screen}");
}

#[test]
fn an_idle_node_says_whats_next() {
    let mut snap = fixtures::snapshot();
    snap.status.connected_peers = 0;
    snap.status.live_peers = 0;
    for p in &mut snap.projects {
        p.trusted = false;
    }
    let mut app = fixtures::app();
    app.update(Action::Snapshot(Box::new(snap)));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("next (1 of 2): no peers connected"), "{screen}");
    assert_snapshot!(screen);
    // Working again, the hint goes away.
    app.update(Action::Snapshot(Box::new(fixtures::snapshot())));
    assert!(!render(&app, 80, 24).contains("next:"));
}

#[test]
fn terminal_too_small() {
    assert_snapshot!(render(&fixtures::app(), 40, 10));
}

#[test]
fn tiny_terminal_does_not_panic() {
    let screen = render(&fixtures::app(), 20, 5);
    assert!(screen.contains("terminal"), "{screen}");
}

/// Every tab at many sizes, from nothing to wide: drawing never panics.
#[test]
fn every_size_draws() {
    let mut app = fixtures::app();
    for (tab, help) in Tab::ALL.into_iter().flat_map(|t| [(t, false), (t, true)]) {
        app.update(Action::SelectTab(tab));
        app.help = help;
        for width in (0..=130).step_by(13) {
            for height in (0..=40).step_by(4) {
                render(&app, width.max(1), height.max(1));
            }
        }
    }
}
