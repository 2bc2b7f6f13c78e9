//! Drawing: [`draw`] turns an [`App`] into one frame and does nothing else — no I/O, no
//! clock, no mutation — so the snapshot tests on ratatui's `TestBackend` see exactly what an
//! operator sees. The frame is a title line, the tab bar, an optional banner (connecting,
//! unreachable), the tab's body, a message line and the key-help line.

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

/// Below this size the dashboard shows a note instead of its tabs.
pub(crate) const MIN_WIDTH: u16 = 50;
/// Below this size the dashboard shows a note instead of its tabs.
pub(crate) const MIN_HEIGHT: u16 = 12;

pub(crate) const OK: Color = Color::Green;
pub(crate) const WARN: Color = Color::Yellow;
pub(crate) const BAD: Color = Color::Red;
pub(crate) const DIM: Color = Color::DarkGray;

/// Draws the whole dashboard.
pub(crate) fn draw(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let banner = banner(app);
    let [title, tabs, banner_area, body, message, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(u16::from(banner.is_some())),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(title_line(app), title);
    draw_tabs(app, frame, tabs);
    if let Some(banner) = banner {
        frame.render_widget(banner, banner_area);
    }
    draw_body(app, frame, body);
    frame.render_widget(message_line(app, message.width), message);
    frame.render_widget(help_line(app), help);
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
    match &app.data {
        Some(data) => {
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
        None => spans.push(Span::styled(format!(" {}", app.target), Style::new().fg(DIM))),
    }
    Paragraph::new(Line::from(spans))
}

fn draw_tabs(app: &App, frame: &mut Frame, area: Rect) {
    let titles = Tab::ALL.iter().enumerate().map(|(i, t)| format!("{} {}", i + 1, t.title()));
    let tabs =
        Tabs::new(titles).select(app.tab.index()).style(Style::new().fg(DIM)).highlight_style(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD | Modifier::REVERSED),
        );
    frame.render_widget(tabs, area);
}

fn banner(app: &App) -> Option<Paragraph<'static>> {
    let (text, style) = match &app.connection {
        Connection::Up => return None,
        Connection::Connecting => {
            (format!(" connecting to {}…", app.target), Style::new().fg(Color::Black).bg(WARN))
        }
        Connection::Unreachable { .. } => (
            format!(" node unreachable at {}, retrying", app.target),
            Style::new().fg(Color::White).bg(BAD).add_modifier(Modifier::BOLD),
        ),
    };
    Some(Paragraph::new(text).style(style))
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
    let Some(message) = &app.message else {
        return match &app.connection {
            Connection::Unreachable { error } if app.data.is_some() => {
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
    let keys: &[(&str, &str)] = match app.tab {
        Tab::Projects => &[
            ("q", "quit"),
            ("Tab/1-7", "tabs"),
            ("↑↓", "select"),
            ("s", "subscribe"),
            ("[ ]", "priority"),
            ("t", "trust"),
            ("p", pause),
        ],
        Tab::Log => &[
            ("q", "quit"),
            ("Tab/1-7", "tabs"),
            ("↑↓ PgUp/PgDn", "scroll"),
            ("l", "level"),
            ("/", "filter"),
            ("p", pause),
        ],
        _ => &[
            ("q", "quit"),
            ("Tab/1-7", "tabs"),
            ("p", pause),
            ("+/-", "capacity"),
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
