//! The `?` overlay: every key, by the tabs where it works, drawn over the screen until any
//! key closes it. The section of the tab underneath is marked, so its keys are easy to find.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Padding, Paragraph};

use super::DIM;
use crate::app::{App, Tab};

/// Keys and what they do.
type Keys = &'static [(&'static str, &'static str)];

/// The keys, by section: a section's title, the tabs it belongs to (none: everywhere), and
/// its keys.
const SECTIONS: &[(&str, &[Tab], Keys)] = &[
    (
        "Everywhere",
        &[],
        &[
            ("Tab  Shift-Tab", "next / previous tab"),
            ("1 … 7", "go straight to a tab"),
            ("p", "pause the node (no new work), or resume it"),
            ("+  -", "raise / lower capacity (crawl chunks at once)"),
            ("b", "set the crawl bandwidth cap: 5MB/s, 0 = none"),
            ("d", "set the disk cap for results: 10GiB, 0 = none"),
            ("?", "this help; any key closes it"),
            ("q  Ctrl-C", "quit"),
        ],
    ),
    (
        "Work, Peers, Seeding, Projects",
        &[Tab::Work, Tab::Peers, Tab::Seeding, Tab::Projects],
        &[
            ("↑ ↓  k j", "move the selection"),
            ("PgUp PgDn", "move by a page"),
            ("Home g  End G", "first / last row"),
        ],
    ),
    (
        "Projects",
        &[Tab::Projects],
        &[
            ("s  Space", "join the selected project, or leave it"),
            ("]  [", "raise / lower its priority here"),
            ("t, then y", "trust its owner's key (other keys cancel)"),
        ],
    ),
    (
        "Log",
        &[Tab::Log],
        &[
            ("↑ ↓  PgUp PgDn", "scroll back; End follows the newest"),
            ("l", "lowest level shown: TRACE … ERROR"),
            ("/", "filter by text; Enter keeps, Esc clears"),
        ],
    ),
];

/// Width of the key column.
const KEY_WIDTH: usize = 16;

/// The overlay's lines.
fn lines(tab: Tab) -> Vec<Line<'static>> {
    let key_style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut out = Vec::new();
    for (title, tabs, keys) in SECTIONS {
        let here = tabs.contains(&tab);
        let mut head = vec![Span::styled(*title, Style::new().add_modifier(Modifier::BOLD))];
        if here {
            head.push(Span::styled("  (this tab)", Style::new().fg(Color::Cyan)));
        }
        out.push(Line::from(head));
        for (key, what) in *keys {
            out.push(Line::from(vec![
                Span::styled(format!("  {key:<KEY_WIDTH$}"), key_style),
                Span::raw(*what),
            ]));
        }
    }
    out
}

/// Draws the overlay in the middle of `area`, over what is there.
pub(super) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let text = lines(app.tab);
    let widest = text.iter().map(Line::width).max().unwrap_or(0);
    let width = u16::try_from(widest + 4).unwrap_or(u16::MAX).min(area.width);
    let height = u16::try_from(text.len() + 2).unwrap_or(u16::MAX).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let block = Block::bordered()
        .title(" Keys ")
        .title_bottom(Line::styled(" any key closes ", Style::new().fg(DIM)))
        .border_style(Style::new().fg(Color::Cyan))
        .padding(Padding::horizontal(1));
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(text).block(block), popup);
}
