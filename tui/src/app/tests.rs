//! Key handling and state changes of [`App::update`], driven with plain values.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::*;
use crate::api::{Caps, LogLine};
use crate::fixtures;

fn press(app: &mut App, code: KeyCode) -> Option<Command> {
    app.update(Action::Key(KeyEvent::new(code, KeyModifiers::NONE))).command
}

fn ch(app: &mut App, c: char) -> Option<Command> {
    press(app, KeyCode::Char(c))
}

#[test]
fn tab_and_numbers_switch_tabs() {
    let mut app = fixtures::app();
    assert_eq!(app.tab, Tab::Overview);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Work);
    press(&mut app, KeyCode::BackTab);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.tab, Tab::Log, "Shift-Tab wraps to the last tab");
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Overview, "Tab wraps to the first tab");
    for (i, tab) in Tab::ALL.iter().enumerate() {
        ch(&mut app, char::from(b'1' + i as u8));
        assert_eq!(app.tab, *tab);
    }
    ch(&mut app, '8');
    assert_eq!(app.tab, Tab::Log, "8 is not a tab");
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut app = fixtures::app();
    ch(&mut app, 'q');
    assert!(app.quit);
    let mut app = fixtures::app();
    app.update(Action::StartFilter);
    ch(&mut app, 'q');
    assert!(!app.quit, "q types into the filter");
    app.update(Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    assert!(app.quit, "Ctrl-C quits even while typing");
}

#[test]
fn key_releases_are_ignored() {
    let mut app = fixtures::app();
    let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
    release.kind = KeyEventKind::Release;
    app.update(Action::Key(release));
    assert!(!app.quit);
}

#[test]
fn p_toggles_between_pause_and_resume() {
    let mut app = fixtures::app();
    assert_eq!(ch(&mut app, 'p'), Some(Command::Pause));
    app.update(Action::CommandDone { command: Command::Pause, result: Ok(Applied::Done) });
    assert!(app.data.as_ref().expect("data").status.paused);
    assert_eq!(ch(&mut app, 'p'), Some(Command::Resume));
    app.update(Action::Node(NodeEvent::Paused { paused: false }));
    assert_eq!(ch(&mut app, 'p'), Some(Command::Pause), "the event stream's word counts too");
}

#[test]
fn pause_before_the_first_answer_does_nothing() {
    let mut app = App::new(fixtures::BASE);
    assert_eq!(ch(&mut app, 'p'), None);
    assert_eq!(ch(&mut app, '+'), None);
    assert!(app.message.as_ref().expect("a note").error);
}

#[test]
fn plus_and_minus_step_capacity_from_the_last_asked() {
    let mut app = fixtures::app();
    assert_eq!(ch(&mut app, '+'), Some(Command::SetCapacity(5)));
    assert_eq!(ch(&mut app, '+'), Some(Command::SetCapacity(6)), "counts on before the answer");
    let caps = Caps { capacity: Some(6), ..Caps::default() };
    app.update(Action::CommandDone {
        command: Command::SetCapacity(6),
        result: Ok(Applied::Caps(caps)),
    });
    assert_eq!(app.capacity_target, None);
    assert_eq!(app.data.as_ref().expect("data").status.caps.capacity, Some(6));
    assert_eq!(ch(&mut app, '-'), Some(Command::SetCapacity(5)));
}

#[test]
fn capacity_stops_at_one() {
    let mut app = fixtures::app();
    let mut snap = fixtures::snapshot();
    snap.status.caps.capacity = Some(1);
    app.update(Action::Snapshot(Box::new(snap)));
    assert_eq!(ch(&mut app, '-'), None);
    assert!(app.message.as_ref().expect("a note").text.contains("minimum"));
}

#[test]
fn a_failed_command_is_reported_and_forgotten() {
    let mut app = fixtures::app();
    ch(&mut app, '+');
    app.update(Action::CommandDone {
        command: Command::SetCapacity(5),
        result: Err("node answered 400: capacity too large".into()),
    });
    assert_eq!(app.capacity_target, None);
    let message = app.message.clone().expect("a note");
    assert!(message.error);
    assert!(message.text.contains("capacity too large"), "{}", message.text);
    assert_eq!(
        ch(&mut app, '+'),
        Some(Command::SetCapacity(5)),
        "starts from the node's value again"
    );
}

#[test]
fn messages_expire() {
    let mut app = fixtures::app();
    ch(&mut app, 'p');
    app.update(Action::Tick { now_ms: MESSAGE_MS - 1 });
    assert!(app.message.is_some());
    app.update(Action::Tick { now_ms: MESSAGE_MS });
    assert!(app.message.is_none());
}

#[test]
fn arrows_move_the_selection_within_the_rows() {
    let mut app = fixtures::app();
    ch(&mut app, '3');
    press(&mut app, KeyCode::Up);
    assert_eq!(app.selected[Tab::Peers.index()], 0);
    ch(&mut app, 'j');
    press(&mut app, KeyCode::Down);
    assert_eq!(app.selected[Tab::Peers.index()], 2);
    press(&mut app, KeyCode::End);
    assert_eq!(app.selected[Tab::Peers.index()], fixtures::peers().len() - 1);
    ch(&mut app, 'k');
    assert_eq!(app.selected[Tab::Peers.index()], fixtures::peers().len() - 2);
    assert_eq!(app.selected[Tab::Work.index()], 0, "each tab keeps its own selection");
}

#[test]
fn projects_keys_subscribe_and_set_priority() {
    let mut app = fixtures::app();
    ch(&mut app, '6');
    let first = fixtures::projects()[0].id.clone();
    let second = fixtures::projects()[1].id.clone();
    assert_eq!(
        ch(&mut app, 's'),
        Some(Command::Subscribe { project: first.clone(), subscribed: false })
    );
    assert_eq!(
        ch(&mut app, ']'),
        Some(Command::SetPriority { project: first.clone(), priority: 3 })
    );
    assert_eq!(ch(&mut app, ']'), Some(Command::SetPriority { project: first, priority: 4 }));
    ch(&mut app, 'j');
    assert_eq!(
        ch(&mut app, '['),
        Some(Command::SetPriority { project: second.clone(), priority: -1 })
    );
    assert_eq!(ch(&mut app, ' '), Some(Command::Subscribe { project: second, subscribed: true }));
    ch(&mut app, '1');
    assert_eq!(ch(&mut app, 's'), None, "s means nothing on the overview");
}

#[test]
fn trusting_asks_first() {
    let mut app = fixtures::app();
    ch(&mut app, '6');
    assert_eq!(ch(&mut app, 't'), None);
    assert!(app.confirm_trust.is_none(), "the first project is trusted already");
    ch(&mut app, 'j');
    assert_eq!(ch(&mut app, 't'), None);
    assert_eq!(ch(&mut app, 'n'), None);
    assert!(app.confirm_trust.is_none(), "any other key cancels");
    ch(&mut app, 't');
    let owner = fixtures::projects()[1].owner.clone();
    assert_eq!(ch(&mut app, 'y'), Some(Command::Trust { owner: owner.clone() }));
    app.update(Action::CommandDone {
        command: Command::Trust { owner },
        result: Ok(Applied::Done),
    });
    assert!(app.data.as_ref().expect("data").projects[1].trusted);
}

#[test]
fn log_level_key_cycles_and_filters() {
    let mut app = fixtures::app();
    ch(&mut app, '7');
    assert_eq!(app.visible_log().len(), fixtures::log().len());
    ch(&mut app, 'l');
    assert_eq!(app.log_level, LogLevel::Debug);
    ch(&mut app, 'l');
    assert_eq!(app.log_level, LogLevel::Info);
    assert!(app.visible_log().iter().all(|l| l.level != "DEBUG" && l.level != "TRACE"));
    ch(&mut app, 'l');
    ch(&mut app, 'l');
    assert_eq!(app.log_level, LogLevel::Error);
    assert_eq!(app.visible_log().len(), 1);
    ch(&mut app, 'l');
    assert_eq!(app.log_level, LogLevel::Trace, "wraps to everything");
}

#[test]
fn slash_filters_the_log_by_text() {
    let mut app = fixtures::app();
    ch(&mut app, '7');
    ch(&mut app, '/');
    assert!(app.filter_editing);
    for c in "ITEM=".chars() {
        ch(&mut app, c);
    }
    assert_eq!(app.log_filter, "ITEM=");
    assert_eq!(app.visible_log().len(), 3, "case-insensitive");
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Enter);
    assert!(!app.filter_editing);
    assert_eq!(app.log_filter, "ITEM");
    ch(&mut app, 'q');
    assert!(app.quit, "keys are keys again after Enter");
    let mut app = fixtures::app();
    ch(&mut app, '7');
    ch(&mut app, '/');
    ch(&mut app, 'x');
    press(&mut app, KeyCode::Esc);
    assert!(app.log_filter.is_empty() && !app.filter_editing, "Esc clears");
}

#[test]
fn log_scrolls_back_and_follows_again() {
    let mut app = fixtures::app();
    ch(&mut app, '7');
    press(&mut app, KeyCode::Up);
    assert_eq!(app.log_scroll, 0, "all lines fit on a 24-row screen: nothing to scroll");
    app.update(Action::Resize { height: 10 });
    let page = 10 - usize::from(LOG_CHROME_ROWS);
    press(&mut app, KeyCode::Up);
    assert_eq!(app.log_scroll, 1);
    press(&mut app, KeyCode::PageUp);
    let oldest_on_top = fixtures::log().len() - page;
    assert_eq!(app.log_scroll, oldest_on_top, "stops with the oldest line on top");
    press(&mut app, KeyCode::PageDown);
    assert_eq!(app.log_scroll, oldest_on_top - page);
    press(&mut app, KeyCode::End);
    assert_eq!(app.log_scroll, 0, "End follows the tail again");
}

#[test]
fn live_log_lines_append_once() {
    let mut app = fixtures::app();
    let known = fixtures::log()[3].clone();
    app.update(Action::Node(NodeEvent::Log(known)));
    assert_eq!(app.log.len(), fixtures::log().len(), "a line the poll already had");
    let new = LogLine {
        at_ms: fixtures::NOW_MS,
        level: "INFO".into(),
        target: "starling::engine".into(),
        message: "claimed item=9999 epoch=1".into(),
    };
    app.update(Action::Node(NodeEvent::Log(new.clone())));
    assert_eq!(app.log.back(), Some(&new));
}

#[test]
fn unreachable_keeps_the_data_and_a_snapshot_recovers() {
    let mut app = fixtures::app();
    app.update(Action::Unreachable { target: fixtures::BASE.into(), error: "refused".into() });
    assert_eq!(app.connection, Connection::Unreachable { error: "refused".into() });
    assert!(app.data.is_some());
    app.update(Action::Snapshot(Box::new(fixtures::snapshot())));
    assert_eq!(app.connection, Connection::Up);
}

#[test]
fn changed_events_update_the_counts() {
    let mut app = fixtures::app();
    let items = starling_protocol::ItemCounts { open: 1, held: 2, done: 3, failed: 4 };
    app.update(Action::Node(NodeEvent::Changed { items }));
    assert_eq!(app.data.as_ref().expect("data").status.items, items);
}

#[test]
fn rate_samples_are_bounded() {
    let mut app = fixtures::app();
    for _ in 0..RATE_SAMPLES_MAX + 10 {
        app.update(Action::Snapshot(Box::new(fixtures::snapshot())));
    }
    assert_eq!(app.rate_samples.len(), RATE_SAMPLES_MAX);
}

#[test]
fn a_scrolled_log_keeps_its_place_when_lines_arrive() {
    let mut app = fixtures::app();
    ch(&mut app, '7');
    app.update(Action::Resize { height: 10 });
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    assert_eq!(app.log_scroll, 2);
    let mut snap = fixtures::snapshot();
    for n in 0..3 {
        snap.log.push(LogLine {
            at_ms: fixtures::NOW_MS + n,
            level: "INFO".into(),
            target: "starling::engine".into(),
            message: format!("new line {n}"),
        });
    }
    app.update(Action::Snapshot(Box::new(snap)));
    assert_eq!(app.log_scroll, 5, "three newer lines, same lines on screen");
}

/// Whether `action` changes the screen of `app`.
fn redraws(app: &mut App, action: Action) -> bool {
    app.update(action).redraw
}

#[test]
fn only_actions_that_change_the_screen_ask_for_a_redraw() {
    let mut app = fixtures::app();
    let key = |c| Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    assert!(!redraws(&mut app, key('x')), "a key bound to nothing");
    assert!(!redraws(&mut app, Action::Tick { now_ms: 1 }), "no message to expire");
    assert!(!redraws(&mut app, Action::Up), "the overview has no rows to move through");
    assert!(!redraws(&mut app, Action::Node(NodeEvent::Lagged { missed: 3 })));
    let paused = app.data.as_ref().expect("data").status.paused;
    assert!(!redraws(&mut app, Action::Node(NodeEvent::Paused { paused })), "no news");
    assert!(redraws(&mut app, Action::Node(NodeEvent::Paused { paused: !paused })));
    assert!(redraws(&mut app, Action::Snapshot(Box::new(fixtures::snapshot()))));
    assert!(redraws(&mut app, Action::NextTab));
    assert!(!redraws(&mut app, Action::SelectTab(Tab::Work)), "already there");
    assert!(redraws(&mut app, Action::Resize { height: 30 }), "the frame changed size");

    // A message shows until a tick expires it; later ticks change nothing.
    assert!(redraws(&mut app, key('p')), "pausing… is shown");
    assert!(!redraws(&mut app, Action::Tick { now_ms: 2 }));
    assert!(redraws(&mut app, Action::Tick { now_ms: 2 + MESSAGE_MS }), "the message expires");
    assert!(!redraws(&mut app, Action::Tick { now_ms: 3 + MESSAGE_MS }));

    // On the log: a line already there is dropped, a new one is shown.
    ch(&mut app, '7');
    let line = app.log.back().expect("the fixture has log lines").clone();
    assert!(!redraws(&mut app, Action::Node(NodeEvent::Log(line.clone()))), "a copy");
    let new = LogLine { message: "something new".into(), ..line };
    assert!(redraws(&mut app, Action::Node(NodeEvent::Log(new))));
    assert!(!redraws(&mut app, Action::FilterBackspace), "no filter to shorten");
    assert!(redraws(&mut app, Action::StartFilter));
    assert!(!redraws(&mut app, Action::StartFilter), "already typing");
}

#[test]
fn answers_redraw_for_their_message_and_say_whether_data_changed() {
    let mut app = fixtures::app();
    let done = |command| Action::CommandDone { command, result: Ok(Applied::Done) };
    assert!(redraws(&mut app, done(Command::Pause)), "paused: … is shown");
    // The same answer again: the message and the data are as they were.
    assert!(!redraws(&mut app, done(Command::Pause)));
    assert!(redraws(&mut app, done(Command::Resume)));
}

#[test]
fn question_mark_opens_the_help_and_any_key_closes_it() {
    let mut app = fixtures::app();
    assert!(app.update(Action::Key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE))).redraw);
    assert!(app.help);
    // A key that means something elsewhere only closes the help.
    assert!(ch(&mut app, 'p').is_none(), "p closes the help, it does not pause");
    assert!(!app.help);
    ch(&mut app, '?');
    ch(&mut app, 'q');
    assert!(!app.help && !app.quit, "q closes the help first");
    app.update(Action::StartFilter);
    ch(&mut app, '?');
    assert!(!app.help && app.log_filter == "?", "? types into the filter");
}

#[test]
fn a_refused_token_is_not_unreachable_and_the_time_away_counts_up() {
    let mut app = App::new(fixtures::BASE);
    app.update(Action::Tick { now_ms: 1_000 });
    app.update(Action::Snapshot(Box::new(fixtures::snapshot())));
    assert_eq!(app.away_ms(), None, "answering");
    let error = "node answered 401: missing or wrong token".to_owned();
    app.update(Action::Unauthorized { target: fixtures::BASE.into(), error: error.clone() });
    assert_eq!(app.connection, Connection::Unauthorized { error });
    app.update(Action::Unreachable { target: fixtures::BASE.into(), error: "refused".into() });
    assert!(app.update(Action::Tick { now_ms: 3_500 }).redraw, "the top bar's count moved");
    assert_eq!(app.away_ms(), Some(2_500));
    assert!(!app.update(Action::Tick { now_ms: 3_900 }).redraw, "same whole second");
    app.update(Action::Snapshot(Box::new(fixtures::snapshot())));
    assert_eq!(app.away_ms(), None);
}

fn typed(app: &mut App, text: &str) -> Option<Command> {
    for c in text.chars() {
        assert_eq!(ch(app, c), None, "typing sends nothing");
    }
    press(app, KeyCode::Enter)
}

#[test]
fn b_and_d_set_byte_caps_with_units() {
    let mut app = fixtures::app();
    ch(&mut app, 'b');
    let (label, _) = app.cap_prompt().expect("b opens the prompt");
    assert!(label.contains("crawl bandwidth cap") && label.contains("5MB/s"), "{label}");
    ch(&mut app, 'q');
    assert!(!app.quit, "q types into the prompt");
    press(&mut app, KeyCode::Backspace);
    assert_eq!(
        typed(&mut app, "5MB/s"),
        Some(Command::SetCap { cap: ByteCap::Bandwidth, bytes: 5_000_000 })
    );
    assert!(app.cap_prompt().is_none(), "Enter closes the prompt");
    ch(&mut app, 'd');
    assert_eq!(
        typed(&mut app, "10GiB"),
        Some(Command::SetCap { cap: ByteCap::Disk, bytes: 10 << 30 })
    );
    ch(&mut app, 'd');
    assert_eq!(typed(&mut app, "0"), Some(Command::SetCap { cap: ByteCap::Disk, bytes: 0 }));
    // The node's answer is what the dashboard shows from then on.
    let caps = Caps { disk_bytes_max: Some(10 << 30), ..Caps::default() };
    app.update(Action::CommandDone {
        command: Command::SetCap { cap: ByteCap::Disk, bytes: 10 << 30 },
        result: Ok(Applied::Caps(caps)),
    });
    assert_eq!(app.data.as_ref().unwrap().status.caps, caps);
    let note = app.message.clone().unwrap();
    assert!(note.text.contains("disk cap set to 10 GiB") && !note.error, "{note:?}");
    ch(&mut app, 'd');
    assert!(app.cap_prompt().unwrap().0.contains("now 10 GiB"));
}

#[test]
fn a_cap_typo_is_named_and_nothing_is_sent() {
    let mut app = fixtures::app();
    ch(&mut app, 'd');
    assert_eq!(typed(&mut app, "5MB/s"), None, "a rate is not a size");
    let note = app.message.clone().unwrap();
    assert!(note.error && note.text.contains("drop the /s") && note.text.contains("press d"));
    ch(&mut app, 'b');
    assert_eq!(typed(&mut app, "5Mb/s"), None, "bits are refused");
    assert!(app.message.clone().unwrap().text.contains("bits"));
    ch(&mut app, 'b');
    assert_eq!(typed(&mut app, ""), None, "an empty prompt changes nothing");
    ch(&mut app, 'b');
    ch(&mut app, '9');
    assert_eq!(press(&mut app, KeyCode::Esc), None);
    assert!(app.cap_prompt().is_none() && app.message.clone().unwrap().text.contains("unchanged"));
    // A refusal from the node shows as such.
    app.update(Action::CommandDone {
        command: Command::SetCap { cap: ByteCap::Bandwidth, bytes: u64::MAX },
        result: Err("400: too large".into()),
    });
    let note = app.message.clone().unwrap();
    assert!(note.error && note.text.contains("setting the crawl bandwidth cap failed"), "{note:?}");
    // Before the first answer there is nothing to set.
    let mut app = App::new("x");
    ch(&mut app, 'b');
    assert!(app.cap_prompt().is_none());
}
