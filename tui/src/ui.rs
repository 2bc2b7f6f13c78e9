//! Drawing: [`draw`] turns an [`App`] into one frame and does nothing else — no I/O, no
//! clock, no mutation — so the snapshot tests on ratatui's `TestBackend` see exactly what an
//! operator sees. The frame is a title line, the tab bar, an optional banner (connecting,
//! unreachable), the tab's body, a message line and the key-help line.

mod help;
mod log;
mod overview;
mod tables;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Tabs, Wrap};

use crate::app::{App, Connection, Tab};
use crate::format;
use crate::hints;

/// Below this size the dashboard shows a note instead of its tabs.
pub(crate) const MIN_WIDTH: u16 = 50;
/// Below this size the dashboard shows a note instead of its tabs.
pub(crate) const MIN_HEIGHT: u16 = 12;

pub(crate) const OK: Color = Color::Green;
pub(crate) const WARN: Color = Color::Yellow;
pub(crate) const BAD: Color = Color::Red;
pub(crate) const DIM: Color = Color::DarkGray;
/// Rows the "next:" hint may take under the tabs.
const HINT_ROWS: usize = 2;

/// Draws the whole dashboard.
pub(crate) fn draw(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let banner = banner(app, area.width);
    let banner_rows = banner.as_ref().map_or(0, |(_, rows)| *rows);
    let [title, tabs, banner_area, body, message, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(banner_rows),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(title_line(app), title);
    draw_tabs(app, frame, tabs);
    if let Some((banner, _)) = banner {
        frame.render_widget(banner, banner_area);
    }
    draw_body(app, frame, body);
    frame.render_widget(message_line(app, message.width), message);
    frame.render_widget(help_line(app), help);
    if app.help {
        help::draw(app, frame, area);
    }
}

fn draw_too_small(frame: &mut Frame, area: Rect) {
    let text = format!(
        "terminal too small ({}×{}); starling dash needs {MIN_WIDTH}×{MIN_HEIGHT}. q quits.",
        area.width, area.height
    );
    let note = Paragraph::new(text).style(Style::new().fg(WARN)).wrap(Wrap { trim: true });
    frame.render_widget(note, area);
}

fn title_line(app: &App) -> Paragraph<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::styled(" starling dash ", bold.fg(Color::Cyan))];
    let alarm = bold.fg(Color::White).bg(BAD);
    match (&app.connection, &app.data) {
        // The token is the thing to fix; nothing else on this line is worth its room.
        (Connection::Unauthorized { .. }, _) => {
            spans.push(Span::raw(" "));
            spans.push(Span::styled(UNAUTHORIZED, alarm));
        }
        (Connection::Unreachable { .. }, Some(data)) => {
            let s = &data.status;
            spans.push(Span::raw(format!(
                " node {}  v{} ",
                format::short_hex(&s.node_id),
                s.version
            )));
            let since = app.away_ms().map(format::duration_ms).unwrap_or_else(|| "?".into());
            let text = format!(" UNREACHABLE · last answer {since} ago ");
            spans.push(Span::styled(text, alarm));
        }
        (Connection::Unreachable { .. }, None) => {
            spans.push(Span::styled(format!(" {} ", app.target), Style::new().fg(DIM)));
            spans.push(Span::styled(" UNREACHABLE ", alarm));
        }
        (_, Some(data)) => {
            let s = &data.status;
            spans.push(Span::raw(format!(
                " node {}  v{}  up {} ",
                format::short_hex(&s.node_id),
                s.version,
                format::duration_ms(s.uptime_ms)
            )));
            spans.push(if !s.health.ok {
                let kinds: Vec<&str> = s.health.faults.iter().map(|f| f.kind.as_str()).collect();
                let text = format!(" HALTED: {} ", kinds.join(", ").to_uppercase());
                Span::styled(text, bold.fg(Color::White).bg(BAD))
            } else if s.paused {
                Span::styled(" PAUSED ", bold.fg(Color::Black).bg(WARN))
            } else {
                Span::styled(" running ", bold.fg(OK))
            });
            if s.over_disk_cap {
                spans.push(Span::styled(" OVER DISK CAP ", bold.fg(Color::White).bg(BAD)));
            }
        }
        (_, None) => spans.push(Span::styled(format!(" {}", app.target), Style::new().fg(DIM))),
    }
    Paragraph::new(Line::from(spans))
}

/// What the top bar says when the node refuses the token.
pub(crate) const UNAUTHORIZED: &str = " 401: wrong API token (the node's data dir has api-token) ";

fn draw_tabs(app: &App, frame: &mut Frame, area: Rect) {
    let titles = Tab::ALL.iter().enumerate().map(|(i, t)| format!("{} {}", i + 1, t.title()));
    let tabs =
        Tabs::new(titles).select(app.tab.index()).style(Style::new().fg(DIM)).highlight_style(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD | Modifier::REVERSED),
        );
    frame.render_widget(tabs, area);
}

/// The line under the tabs: how the connection fails, or, while the node answers, what it
/// needs to get working (nothing when it works). With its height: a hint may take two rows.
fn banner(app: &App, width: u16) -> Option<(Paragraph<'static>, u16)> {
    let (text, style) = match &app.connection {
        Connection::Up => return hint_banner(app, width),
        Connection::Connecting => {
            (format!(" connecting to {}…", app.target), Style::new().fg(Color::Black).bg(WARN))
        }
        Connection::Unreachable { .. } => (
            format!(" node unreachable at {}, retrying", app.target),
            Style::new().fg(Color::White).bg(BAD).add_modifier(Modifier::BOLD),
        ),
        Connection::Unauthorized { .. } => (
            format!(" the node at {} refused the API token, retrying", app.target),
            Style::new().fg(Color::White).bg(BAD).add_modifier(Modifier::BOLD),
        ),
    };
    Some((Paragraph::new(text).style(style), 1))
}

/// The first of the node's next steps ([`hints::next_steps`]), numbered when there are more,
/// in at most [`HINT_ROWS`] rows; `None` while the node is working.
fn hint_banner(app: &App, width: u16) -> Option<(Paragraph<'static>, u16)> {
    let data = app.data.as_ref()?;
    let steps = hints::next_steps(&data.status, Some(&data.projects));
    let first = steps.first()?;
    let head = match steps.len() {
        1 => " next: ".to_owned(),
        n => format!(" next (1 of {n}): "),
    };
    let width = usize::from(width).max(head.chars().count() + 2);
    let text = first.to_string();
    let mut rows = log::wrap(&text, width - head.chars().count(), width - 1);
    if rows.len() > HINT_ROWS {
        rows.truncate(HINT_ROWS);
        if let Some(last) = rows.last_mut() {
            *last = format::clip(&format!("{last} …"), width - 1);
        }
    }
    let style = Style::new().fg(WARN);
    let mut lines = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        lines.push(if i == 0 {
            Line::from(vec![
                Span::styled(head.clone(), style.add_modifier(Modifier::BOLD)),
                Span::styled(row, style),
            ])
        } else {
            Line::styled(format!(" {row}"), style)
        });
    }
    let height = u16::try_from(lines.len()).unwrap_or(1);
    Some((Paragraph::new(lines), height))
}

fn draw_body(app: &App, frame: &mut Frame, area: Rect) {
    let Some(data) = &app.data else {
        draw_no_data(app, frame, area);
        return;
    };
    match app.tab {
        Tab::Overview => overview::draw(app, data, frame, area),
        Tab::Work => tables::draw_work(app, data, frame, area),
        Tab::Peers => tables::draw_peers(app, data, frame, area),
        Tab::Seeding => tables::draw_seeding(app, data, frame, area),
        Tab::Relay => tables::draw_relay(data, frame, area),
        Tab::Projects => tables::draw_projects(app, data, frame, area),
        Tab::Log => log::draw(app, frame, area),
    }
}

fn draw_no_data(app: &App, frame: &mut Frame, area: Rect) {
    let mut lines = vec![Line::raw("")];
    match &app.connection {
        Connection::Unreachable { error } => {
            lines.push(Line::raw(format!("no answer yet from {}", app.target)));
            lines.push(Line::raw(""));
            lines.push(Line::styled(error.clone(), Style::new().fg(BAD)));
        }
        Connection::Unauthorized { error } => {
            lines.push(Line::raw(format!("the node at {} refused the API token", app.target)));
            lines.push(Line::raw(""));
            lines.push(Line::styled(error.clone(), Style::new().fg(BAD)));
            lines.push(Line::raw(""));
            lines.push(Line::raw(
                "The node writes its token to api-token in its data dir: pass --data-dir DIR, \
                 or --api URL with --token-file DIR/api-token.",
            ));
        }
        _ => lines.push(Line::raw(format!("connecting to {}…", app.target))),
    }
    let note = Paragraph::new(lines)
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(app.tab.title()));
    frame.render_widget(note, area);
}

fn message_line(app: &App, width: u16) -> Paragraph<'static> {
    let width = usize::from(width.max(1));
    if app.filter_editing {
        let line = Line::from(vec![
            Span::styled(" filter: ", Style::new().fg(Color::Cyan)),
            Span::raw(format!("{}▏", app.log_filter)),
            Span::styled("  Enter keep · Esc clear", Style::new().fg(DIM)),
        ]);
        return Paragraph::new(line);
    }
    if let Some((label, text)) = app.cap_prompt() {
        let line = Line::from(vec![
            Span::styled(label, Style::new().fg(Color::Cyan)),
            Span::raw(format!("{text}▏")),
            Span::styled("  Enter set · Esc cancel", Style::new().fg(DIM)),
        ]);
        return Paragraph::new(line);
    }
    let Some(message) = &app.message else {
        return match &app.connection {
            Connection::Unreachable { error } | Connection::Unauthorized { error }
                if app.data.is_some() =>
            {
                Paragraph::new(format!(" {}", format::clip(error, width - 1)))
                    .style(Style::new().fg(BAD))
            }
            _ => Paragraph::new(""),
        };
    };
    let style = if message.error { Style::new().fg(BAD) } else { Style::new().fg(Color::Cyan) };
    Paragraph::new(format!(" {}", format::clip(&message.text, width - 1))).style(style)
}

fn help_line(app: &App) -> Paragraph<'static> {
    let paused = app.data.as_ref().is_some_and(|d| d.status.paused);
    let pause = if paused { "resume" } else { "pause" };
    // `? help` comes second, so a narrow terminal cuts the tab's own keys, not the way to
    // read them all.
    let keys: &[(&str, &str)] = match app.tab {
        Tab::Projects => &[
            ("q", "quit"),
            ("?", "help"),
            ("Tab/1-7", "tabs"),
            ("s", "subscribe"),
            ("[ ]", "priority"),
            ("t", "trust"),
            ("p", pause),
        ],
        Tab::Log => &[
            ("q", "quit"),
            ("?", "help"),
            ("Tab/1-7", "tabs"),
            ("↑↓ PgUp/PgDn", "scroll"),
            ("l", "level"),
            ("/", "filter"),
            ("p", pause),
        ],
        _ => &[
            ("q", "quit"),
            ("?", "help"),
            ("Tab/1-7", "tabs"),
            ("p", pause),
            ("+/-", "capacity"),
            ("b d", "caps"),
            ("↑↓", "select"),
        ],
    };
    let key_style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut spans = Vec::with_capacity(keys.len() * 3);
    for (i, (key, what)) in keys.iter().enumerate() {
        spans.push(Span::raw(if i == 0 { " " } else { "  " }));
        spans.push(Span::styled(*key, key_style));
        spans.push(Span::styled(format!(" {what}"), Style::new().fg(DIM)));
    }
    Paragraph::new(Line::from(spans))
}

/// A `label  value` line for the key-value blocks.
pub(crate) fn field(label: &str, value: impl Into<String>) -> Line<'static> {
    field_styled(label, value, Style::new())
}

/// A `label  value` line with a styled value.
pub(crate) fn field_styled(label: &str, value: impl Into<String>, style: Style) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{label:<10}"), Style::new().fg(DIM)),
        Span::styled(value.into(), style),
    ])
}

/// `yes` or `no`, for table cells.
pub(crate) fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
