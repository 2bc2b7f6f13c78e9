//! The Log tab: the node's recent log lines, newest at the bottom, filtered by level and
//! by the `/` text filter, scrolled back with the arrows and PgUp/PgDn.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::{BAD, DIM, WARN};
use crate::api::LogLine;
use crate::app::{App, LogLevel};
use crate::format;

const DAY_MS: u64 = 86_400_000;

pub(super) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let lines = app.visible_log();
    let inner = Block::bordered().inner(area);
    let height = usize::from(inner.height);
    // The app clamps the scroll to its idea of the page; a banner can make the page shorter.
    let scroll = app.log_scroll.min(lines.len().saturating_sub(height));
    frame.render_widget(Block::bordered().title(title(app, lines.len(), scroll)), area);
    let end = lines.len().saturating_sub(scroll);
    let start = end.saturating_sub(height);
    let width = usize::from(inner.width);
    let text: Vec<Line> = lines[start..end].iter().map(|l| render_line(l, width)).collect();
    if text.is_empty() {
        let note = if app.log.is_empty() { "no log lines yet" } else { "no lines match" };
        frame.render_widget(Paragraph::new(Line::styled(note, Style::new().fg(DIM))), inner);
        return;
    }
    frame.render_widget(Paragraph::new(text), inner);
}

fn title(app: &App, shown: usize, scroll: usize) -> String {
    let mut title =
        format!("Log · {shown}/{} lines · level ≥ {}", app.log.len(), app.log_level.name());
    if !app.log_filter.is_empty() {
        title.push_str(&format!(" · \"{}\"", format::clip(&app.log_filter, 20)));
    }
    if scroll > 0 {
        title.push_str(&format!(" · ↑{scroll}"));
    }
    title
}

fn level_color(level: LogLevel) -> Color {
    match level {
        LogLevel::Error => BAD,
        LogLevel::Warn => WARN,
        LogLevel::Info => Color::Green,
        LogLevel::Debug => Color::Blue,
        LogLevel::Trace => DIM,
    }
}

/// `HH:MM:SS LEVEL target message`, in UTC, clipped to one row.
fn render_line(l: &LogLine, width: usize) -> Line<'static> {
    let ms = l.at_ms % DAY_MS;
    let time = format!("{:02}:{:02}:{:02} ", ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60);
    let level = LogLevel::parse(&l.level);
    let head = format!("{time}{:<5} ", level.name());
    let target = format!("{} ", l.target);
    let used = head.chars().count() + target.chars().count();
    let message = format::clip(&l.message, width.saturating_sub(used));
    Line::from(vec![
        Span::styled(time, Style::new().fg(DIM)),
        Span::styled(format!("{:<5} ", level.name()), Style::new().fg(level_color(level))),
        Span::styled(target, Style::new().fg(DIM)),
        Span::raw(message),
    ])
}
