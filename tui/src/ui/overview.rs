//! The Overview tab: mesh and node state, items, the fetch rate against its limit, traffic,
//! disk against its cap, and why gossip was rejected.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, LineGauge, Paragraph, Sparkline, Wrap};

use super::{BAD, DIM, OK, WARN, field, field_styled};
use starling_protocol::ItemCounts;

use crate::api::{StatusView, total};
use crate::app::{App, Snapshot};
use crate::format;

/// Sparkline values are rates times this, so a rate of 0.3/s still draws.
const RATE_SCALE: f64 = 10.0;
/// Share of gossip rejected above which the mesh counts as noisy.
const NOISY_REJECTED_PERCENT: u64 = 10;

pub(super) fn draw(app: &App, data: &Snapshot, frame: &mut Frame, area: Rect) {
    let [top, items, middle, bottom] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Min(3),
    ])
    .areas(area);
    let [mesh, node] = halves(top);
    let [fetch, traffic] = halves(middle);
    let [rejected, fetches] = halves(bottom);
    let s = &data.status;
    frame.render_widget(mesh_block(s), mesh);
    frame.render_widget(node_block(app, s), node);
    frame.render_widget(items_gauge(data), items);
    draw_fetch(app, s, frame, fetch);
    draw_traffic(data, frame, traffic);
    frame.render_widget(rejected_block(s), rejected);
    frame.render_widget(fetches_block(s), fetches);
}

fn halves(area: Rect) -> [Rect; 2] {
    Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area)
}

/// A one-word verdict on the mesh, from what the status says.
fn mesh_health(s: &StatusView) -> (&'static str, Color) {
    let received = s.net.gossip_received.max(1);
    if s.connected_peers == 0 {
        ("isolated: no peers connected", BAD)
    } else if s.live_peers == 0 {
        ("connected, no live peers yet", WARN)
    } else if s.net.gossip_rejected * 100 > received * NOISY_REJECTED_PERCENT {
        ("noisy: much gossip rejected", WARN)
    } else {
        ("healthy", OK)
    }
}

fn mesh_block(s: &StatusView) -> Paragraph<'static> {
    let (health, color) = mesh_health(s);
    let n = &s.net;
    Paragraph::new(vec![
        field("peers", format!("{} connected · {} live", s.connected_peers, s.live_peers)),
        field_styled("health", health, Style::new().fg(color)),
        field("gossip", format!("{} ok · {} rejected", n.gossip_accepted, n.gossip_rejected)),
        field("sync", format!("{} applied · {} served", n.sync_applied, n.sync_served)),
    ])
    .block(Block::bordered().title("Mesh"))
}

fn roles(bits: u8) -> String {
    use starling_protocol::Roles;
    let names: Vec<&str> = [
        (Roles::CRAWL.0, "crawl"),
        (Roles::SEED.0, "seed"),
        (Roles::RELAY.0, "relay"),
        (Roles::TORRENT.0, "torrents"),
    ]
    .iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

fn node_block(app: &App, s: &StatusView) -> Paragraph<'static> {
    let state = match (s.health.faults.first(), &s.store_error, s.paused) {
        // What the node said last is no longer known to be true.
        _ if !app.connection.is_up() => {
            field_styled("state", "unknown: no answer", Style::new().fg(BAD))
        }
        (Some(f), _, _) => field_styled("state", f.detail.clone(), Style::new().fg(BAD)),
        (None, Some(e), _) => {
            field_styled("state", format!("store error: {e}"), Style::new().fg(BAD))
        }
        (None, None, true) => field_styled("state", "paused", Style::new().fg(WARN)),
        (None, None, false) => field_styled("state", "running", Style::new().fg(OK)),
    };
    let mut capacity = format!("{} now", s.capacity);
    if let Some(target) = app.capacity_target {
        capacity.push_str(&format!(" · asking {target}"));
    } else if let Some(cap) = s.caps.capacity {
        capacity.push_str(&format!(" · cap {cap}"));
    }
    let capacity = if s.over_disk_cap {
        field_styled("capacity", format!("{capacity} · disk full"), Style::new().fg(BAD))
    } else {
        field("capacity", capacity)
    };
    Paragraph::new(vec![
        state,
        capacity,
        field("holding", format!("{} items", s.holding)),
        field("roles", roles(s.roles)),
    ])
    .block(Block::bordered().title("Node"))
}

/// Crawl chunks of every project, and result copies apart (seeding duties stay held while
/// their holder keeps the copy, so counted with chunks they would hold the bar at a third),
/// and whether the node counts kinds apart at all (if not: every item, as it says).
fn progress(data: &Snapshot) -> (ItemCounts, Option<ItemCounts>, bool) {
    if data.projects.iter().all(|p| p.by_kind.is_none()) {
        return (data.status.items, None, false);
    }
    let (mut crawl, mut copies) = (ItemCounts::default(), ItemCounts::default());
    for p in &data.projects {
        add(&mut crawl, &p.crawl());
        add(&mut copies, &p.copies().unwrap_or_default());
    }
    (crawl, (total(&copies) > 0).then_some(copies), true)
}

fn add(to: &mut ItemCounts, c: &ItemCounts) {
    to.open += c.open;
    to.held += c.held;
    to.done += c.done;
    to.failed += c.failed;
}

fn items_gauge(data: &Snapshot) -> Gauge<'static> {
    let (c, copies, split) = progress(data);
    let all = total(&c);
    let finished = c.done + c.failed;
    let ratio = if all == 0 { 0.0 } else { finished as f64 / all as f64 };
    let complete = all > 0 && finished == all;
    let (title, noun) = if split { ("Crawl chunks", "chunks") } else { ("Items", "items") };
    let mut label = if complete {
        format!("complete: {} done · {} failed of {all} {noun}", c.done, c.failed)
    } else {
        format!(
            "{} done · {} failed · {} held · {} open of {all} {noun}",
            c.done, c.failed, c.held, c.open
        )
    };
    if let Some(k) = copies {
        label.push_str(&format!(" · copies {}/{}", k.held + k.done, total(&k)));
    }
    Gauge::default()
        .block(Block::bordered().title(title))
        .gauge_style(Style::new().fg(if c.failed > 0 { WARN } else { OK }).bg(Color::Black))
        .ratio(ratio.clamp(0.0, 1.0))
        .label(label)
}

fn draw_fetch(app: &App, s: &StatusView, frame: &mut Frame, area: Rect) {
    let f = &s.fetch;
    let title = if f.rate_limit_per_s > 0.0 {
        format!(
            "Fetch {} of {} limit",
            format::rate(f.rate_per_s),
            format::rate(f.rate_limit_per_s)
        )
    } else {
        format!("Fetch {} (no limit known)", format::rate(f.rate_per_s))
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let skip = app.rate_samples.len().saturating_sub(width);
    let samples: Vec<u64> =
        app.rate_samples.iter().skip(skip).map(|r| (r * RATE_SCALE).round() as u64).collect();
    let mut spark = Sparkline::default().data(samples.clone()).style(Style::new().fg(Color::Cyan));
    if f.rate_limit_per_s > 0.0 {
        // Scaled to the limit, so a full bar means the hosts allow no more.
        let limit = (f.rate_limit_per_s * RATE_SCALE).round() as u64;
        let peak = samples.iter().copied().max().unwrap_or(0);
        spark = spark.max(limit.max(peak).max(1));
    }
    frame.render_widget(spark, inner);
}

fn draw_traffic(data: &Snapshot, frame: &mut Frame, area: Rect) {
    let s = &data.status;
    let title = match s.caps.bandwidth_bytes_per_s.filter(|b| *b > 0) {
        Some(cap) => format!("Traffic · crawl cap {}/s", format::bytes(cap)),
        None => "Traffic & disk".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [down, up, disk, bar] = Layout::vertical([Constraint::Length(1); 4]).areas(inner);
    let seed = data.seeding.as_ref();
    let seed_down = format::bytes(seed.map_or(0, |v| v.bytes_fetched));
    let seed_up = format::bytes(seed.map_or(0, |v| v.bytes_served));
    let relayed = format::bytes(data.relay.as_ref().map_or(0, |v| v.relayed_bytes));
    let crawl_down = format::bytes(s.fetch.bytes_down);
    let plain = Style::new();
    let text = format!("{crawl_down} crawl · {seed_down} seed");
    frame.render_widget(short_field("down", text, plain), down);
    let text = format!("{seed_up} seed · {relayed} relay");
    frame.render_widget(short_field("up", text, plain), up);
    let used = format::bytes(s.disk.results_bytes);
    let db = format::bytes(s.disk.store_bytes);
    let Some(max) = s.caps.disk_bytes_max.filter(|max| *max > 0) else {
        frame.render_widget(short_field("disk", format!("{used} (no cap) · db {db}"), plain), disk);
        return;
    };
    let (style, color) = if s.over_disk_cap { (Style::new().fg(BAD), BAD) } else { (plain, OK) };
    let text = format!("{used} of {} · db {db}", format::bytes(max));
    frame.render_widget(short_field("disk", text, style), disk);
    let ratio = (s.disk.results_bytes as f64 / max as f64).clamp(0.0, 1.0);
    let gauge = LineGauge::default()
        .ratio(ratio)
        .label(format!("{:>3.0}%", ratio * 100.0))
        .filled_style(Style::new().fg(color))
        .unfilled_style(Style::new().fg(DIM));
    frame.render_widget(gauge, bar);
}

/// A `label value` line with a narrow label, for the half-width traffic block.
fn short_field(label: &str, value: String, style: Style) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{label:<5}"), Style::new().fg(DIM)),
        Span::styled(value, style),
    ])
}

fn rejected_block(s: &StatusView) -> Paragraph<'static> {
    let mut reasons: Vec<(String, u64)> = s
        .engine
        .rejected
        .iter()
        .map(|(reason, n)| {
            let name = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{reason:?}"));
            (name, *n)
        })
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let text = if reasons.is_empty() {
        Line::styled("none", Style::new().fg(DIM))
    } else {
        let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        Line::raw(parts.join(" · "))
    };
    Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(format!("Rejected ({} accepted)", s.engine.accepted)))
}

fn fetches_block(s: &StatusView) -> Paragraph<'static> {
    let f = &s.fetch;
    let mut parts: Vec<String> = f.by_status.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    parts.push(format!("rate-limit waits ×{}", f.rate_limit_waits));
    Paragraph::new(parts.join(" · "))
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title("Fetches by status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_name_each_bit() {
        assert_eq!(roles(0), "none");
        assert_eq!(roles(1), "crawl");
        assert_eq!(roles(7), "crawl, seed, relay");
        assert_eq!(roles(11), "crawl, seed, torrents");
    }
}
