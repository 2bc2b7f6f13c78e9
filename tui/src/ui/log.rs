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
    let width = usize::from(inner.width);
    // Newest at the bottom: take lines back from `end`, each wrapped to the width, until the
    // page is full; the oldest one shown may lose its first rows at the top.
    let mut rows: Vec<Line> = Vec::with_capacity(height);
    for l in lines[..end].iter().rev() {
        if rows.len() >= height {
            break;
        }
        let mut wrapped = render_line(l, width);
        wrapped.reverse();
        rows.extend(wrapped);
    }
    rows.truncate(height);
    rows.reverse();
    if rows.is_empty() {
        let note = if app.log.is_empty() { "no log lines yet" } else { "no lines match" };
        frame.render_widget(Paragraph::new(Line::styled(note, Style::new().fg(DIM))), inner);
        return;
    }
    frame.render_widget(Paragraph::new(rows), inner);
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

/// `HH:MM:SS LEVEL target message`, in UTC, wrapped to `width`: the message goes on in rows
/// of its own under the time and level, so none of it is cut off.
fn render_line(l: &LogLine, width: usize) -> Vec<Line<'static>> {
    let ms = l.at_ms % DAY_MS;
    let time = format!("{:02}:{:02}:{:02} ", ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60);
    let level = LogLevel::parse(&l.level);
    let head = format!("{time}{:<5} ", level.name());
    let indent = head.chars().count();
    let target = format!("{} ", l.target);
    let first_room = width.saturating_sub(indent + target.chars().count());
    // In a very narrow box the indent would leave no room: continuation rows start at 0.
    let indent = if width > indent + 10 { indent } else { 0 };
    let mut pieces = wrap(&l.message, first_room, width - indent).into_iter();
    let mut out = vec![Line::from(vec![
        Span::styled(time, Style::new().fg(DIM)),
        Span::styled(format!("{:<5} ", level.name()), Style::new().fg(level_color(level))),
        Span::styled(target, Style::new().fg(DIM)),
        Span::raw(pieces.next().unwrap_or_default()),
    ])];
    out.extend(pieces.map(|p| Line::raw(format!("{}{p}", " ".repeat(indent)))));
    out
}

/// Cuts `text` into rows: the first at most `first` characters, the others at most `rest`,
/// breaking after the row's last space, or mid-word when it has none.
pub(super) fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    let mut room = first;
    if room == 0 {
        // No room beside the target: the message starts on the next row.
        out.push(String::new());
        room = rest;
    }
    let room_min = 1;
    while at < chars.len() {
        let room_now = room.max(room_min);
        let mut end = (at + room_now).min(chars.len());
        if end < chars.len()
            && let Some(space) = chars[at..end].iter().rposition(|c| *c == ' ')
            && space > 0
        {
            end = at + space + 1;
        }
        out.push(chars[at..end].iter().collect::<String>().trim_end().to_owned());
        at = end;
        room = rest;
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_keeps_every_character() {
        let rows = wrap("host cdn.example.com answered 429; backing off", 12, 20);
        assert_eq!(rows, ["host", "cdn.example.com", "answered 429;", "backing off"]);
        assert_eq!(wrap("abcdefgh", 3, 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("", 5, 5), [""]);
        assert_eq!(wrap("ab", 0, 5), ["", "ab"]);
    }
}
