//! The table tabs: Work (claims with lease countdowns, hosts), Peers, Seeding, Relay and
//! Projects. A selected row carries a `▶` so it shows without colour too.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Gauge, LineGauge, Paragraph, Row, Table, TableState};

use super::{BAD, DIM, OK, WARN, field, field_styled, yes_no};
use crate::api::{ChecksView, ProjectInfo, total};
use crate::app::{App, Snapshot, Tab};
use crate::format;

const HIGHLIGHT: &str = "▶ ";
/// Project names are cut to this many characters in the tables.
const PROJECT_NAME_WIDTH: usize = 22;

fn header(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.iter().copied()).style(Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD))
}

fn table<'a>(rows: Vec<Row<'a>>, widths: &[Constraint], head: Row<'a>, title: String) -> Table<'a> {
    Table::new(rows, widths.iter().copied())
        .header(head)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(HIGHLIGHT)
}

fn render_selected(app: &App, tab: Tab, t: Table<'_>, rows: usize, frame: &mut Frame, area: Rect) {
    let selected = (rows > 0).then(|| app.selected[tab.index()].min(rows - 1));
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(t, area, &mut state);
}

fn empty(title: &str, text: &str, frame: &mut Frame, area: Rect) {
    let note = Paragraph::new(Line::styled(text.to_owned(), Style::new().fg(DIM)))
        .block(Block::bordered().title(title.to_owned()));
    frame.render_widget(note, area);
}

fn host_state_color(state: &str) -> Color {
    match state {
        "ok" => OK,
        "backing_off" | "cooldown" => WARN,
        _ => BAD,
    }
}

pub(super) fn draw_work(app: &App, data: &Snapshot, frame: &mut Frame, area: Rect) {
    let work = &data.work;
    let claims_rows = (work.claims.len() as u16).saturating_add(3).max(5);
    let [claims_area, hosts_area] =
        Layout::vertical([Constraint::Max(claims_rows), Constraint::Min(4)]).areas(area);
    let name_of = |id: &str| {
        data.projects
            .iter()
            .find(|p| p.id == id)
            .map(|p| format::clip(&p.name, PROJECT_NAME_WIDTH))
            .unwrap_or_else(|| format::short_hex(id))
    };
    if work.claims.is_empty() {
        empty("Claims", "holding no items", frame, claims_area);
    } else {
        let rows = work
            .claims
            .iter()
            .map(|c| {
                let lease = format::countdown(c.lease_until_ms, work.now_ms);
                let (phase, color) = if c.started { ("working", OK) } else { ("settling", WARN) };
                Row::new(vec![
                    Cell::from(format::short_hex(&c.item)),
                    Cell::from(name_of(&c.project)),
                    Cell::from(c.kind.clone()),
                    Cell::from(c.epoch.to_string()),
                    Cell::from(lease),
                    Cell::from(phase).style(Style::new().fg(color)),
                ])
            })
            .collect();
        let widths = [
            Constraint::Length(9),
            Constraint::Min(10),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(8),
            Constraint::Length(8),
        ];
        let head = header(&["item", "project", "kind", "epoch", "lease", "phase"]);
        let title = format!("Claims ({})", work.claims.len());
        let t = table(rows, &widths, head, title);
        render_selected(app, Tab::Work, t, work.claims.len(), frame, claims_area);
    }
    if work.hosts.is_empty() {
        empty("Hosts", "no hosts crawled yet", frame, hosts_area);
        return;
    }
    let rows: Vec<Row> = work
        .hosts
        .iter()
        .map(|h| {
            // A cooldown the mesh shares (a Retry-After one node was given) shows as such.
            let cooling = h.cooldown_until_ms.filter(|t| *t > work.now_ms);
            let (state, until) = match cooling {
                Some(t) if h.until_ms.is_none_or(|u| u < t) => ("cooldown".to_owned(), Some(t)),
                _ => (h.state.clone(), h.until_ms),
            };
            let until = until.map(|u| format::countdown(u, work.now_ms)).unwrap_or_default();
            // The share of the host's budget (this node's lane of it) used lately.
            let used = if h.rate_per_s > 0.0 {
                format!("{:.0}%", 100.0 * h.sent_per_s / h.rate_per_s)
            } else {
                "-".to_owned()
            };
            Row::new(vec![
                Cell::from(h.host.clone()),
                Cell::from(state.replace('_', " "))
                    .style(Style::new().fg(host_state_color(&state))),
                Cell::from(until),
                Cell::from(h.lane.clone().unwrap_or_else(|| "-".to_owned())),
                Cell::from(h.inflight.to_string()),
                Cell::from(format::rate(h.rate_per_s)),
                Cell::from(used),
                Cell::from(h.refusals.to_string()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(16),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(8),
    ];
    let head = header(&["host", "state", "until", "lane", "inflight", "rate", "used", "refusals"]);
    let t = Table::new(rows, widths)
        .header(head)
        .block(Block::bordered().title(format!("Hosts ({})", work.hosts.len())));
    frame.render_widget(t, hosts_area);
}

pub(super) fn draw_peers(app: &App, data: &Snapshot, frame: &mut Frame, area: Rect) {
    if data.peers.is_empty() {
        empty("Peers", "no peers known", frame, area);
        return;
    }
    let rows = data
        .peers
        .iter()
        .map(|p| {
            let slots = match (p.free, p.capacity) {
                (Some(free), Some(cap)) => format!("{free}/{cap}"),
                (None, Some(cap)) => format!("?/{cap}"),
                _ => "-".to_owned(),
            };
            let score = p.score.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".to_owned());
            let yes =
                |b: bool| Cell::from(yes_no(b)).style(Style::new().fg(if b { OK } else { DIM }));
            Row::new(vec![
                Cell::from(format::short_peer(&p.peer_id)),
                Cell::from(p.node_id.as_deref().map(format::short_hex).unwrap_or_default()),
                Cell::from(match (p.connected, p.via_relay) {
                    (true, true) => "relayed",
                    (true, false) => "yes",
                    _ => "no",
                })
                .style(Style::new().fg(if p.connected { OK } else { DIM })),
                yes(p.live),
                Cell::from(score),
                Cell::from(slots),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Min(9),
    ];
    let head = header(&["peer", "node", "connected", "live", "score", "free/slots"]);
    let connected = data.peers.iter().filter(|p| p.connected).count();
    let title = format!("Peers ({} known, {connected} connected)", data.peers.len());
    let t = table(rows, &widths, head, title);
    render_selected(app, Tab::Peers, t, data.peers.len(), frame, area);
}

pub(super) fn draw_seeding(app: &App, data: &Snapshot, frame: &mut Frame, area: Rect) {
    let Some(seeding) = &data.seeding else {
        empty("Seeding", "this node does not report seeding", frame, area);
        return;
    };
    let [summary, duties] =
        Layout::vertical([Constraint::Length(6), Constraint::Min(3)]).areas(area);
    let state = if seeding.enabled {
        field_styled("state", "taking seeding duties", Style::new().fg(OK))
    } else {
        field_styled("state", "off: this node takes no seeding duties", Style::new().fg(DIM))
    };
    let lines = vec![
        state,
        field(
            "stored",
            format!("{} blobs · {}", seeding.blobs, format::bytes(seeding.bytes_stored)),
        ),
        field(
            "traffic",
            format!(
                "{} served · {} fetched · {} bad chunks",
                format::bytes(seeding.bytes_served),
                format::bytes(seeding.bytes_fetched),
                seeding.chunks_rejected
            ),
        ),
        proofs_line(&data.status.engine),
    ];
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title("Seeding")), summary);
    let title = format!("Duties ({} of {})", seeding.duties.len(), seeding.capacity);
    if seeding.duties.is_empty() {
        empty(&title, "no seeding duties held", frame, duties);
        return;
    }
    let rows = seeding
        .duties
        .iter()
        .map(|d| {
            let color = match d.state.as_str() {
                "stored" => OK,
                "fetching" => WARN,
                _ => BAD,
            };
            Row::new(vec![
                Cell::from(format::short_hex(&d.item)),
                Cell::from(format::short_hex(&d.digest)),
                Cell::from(format::bytes(d.size)),
                Cell::from(d.state.clone()).style(Style::new().fg(color)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Min(8),
    ];
    let t = table(rows, &widths, header(&["item", "digest", "size", "state"]), title);
    render_selected(app, Tab::Seeding, t, seeding.duties.len(), frame, duties);
}

/// Storage proofs this node's renewals carried, and the duties it gave back for want of a copy
/// to prove (red: a copy went missing or bad on this node).
fn proofs_line(e: &starling_protocol::EngineStats) -> Line<'static> {
    let shown = format!("{} shown", e.proofs);
    if e.unproven == 0 {
        return field("proofs", shown);
    }
    let text = format!("{shown} · {} duties given back: no copy to prove", e.unproven);
    field_styled("proofs", text, Style::new().fg(BAD))
}

pub(super) fn draw_relay(data: &Snapshot, frame: &mut Frame, area: Rect) {
    let Some(relay) = &data.relay else {
        empty("Relay", "this node does not report relaying", frame, area);
        return;
    };
    let [summary, slots, rest] =
        Layout::vertical([Constraint::Length(7), Constraint::Length(3), Constraint::Min(0)])
            .areas(area);
    let reach_color = match relay.reachability.as_str() {
        "public" => OK,
        "private" => WARN,
        _ => DIM,
    };
    let state = if relay.enabled {
        field_styled("state", "offering relay slots", Style::new().fg(OK))
    } else {
        field_styled("state", "off: this node offers no relay slots", Style::new().fg(DIM))
    };
    let lines = vec![
        state,
        field_styled("reachable", relay.reachability.clone(), Style::new().fg(reach_color)),
        field(
            "granted",
            format!("{} reservations · {} circuits", relay.reservations, relay.circuits),
        ),
        field("open now", format!("{} circuits · {} refused", relay.circuits_open, relay.refused)),
        field(
            "via",
            match &relay.relayed_via {
                Some(p) => format!(
                    "{} ({} reached us, {})",
                    format::short_peer(p),
                    relay.circuits_in,
                    format::bytes(relay.relayed_bytes)
                ),
                None => "no relay in use".into(),
            },
        ),
    ];
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title("Relay")), summary);
    let offered = u64::from(relay.slots_offered);
    let ratio = if offered == 0 { 0.0 } else { relay.slots_held as f64 / offered as f64 };
    let gauge = Gauge::default()
        .block(Block::bordered().title("Slots in use"))
        .gauge_style(Style::new().fg(Color::Cyan).bg(Color::Black))
        .ratio(ratio.clamp(0.0, 1.0))
        .label(format!("{} of {} held", relay.slots_held, relay.slots_offered));
    frame.render_widget(gauge, slots);
    if !relay.enabled && relay.reachability == "private" && rest.height > 0 {
        let hint = "behind NAT: this node reserves slots on public peers instead";
        frame.render_widget(Paragraph::new(Line::styled(hint, Style::new().fg(DIM))), rest);
    }
}

pub(super) fn draw_projects(app: &App, data: &Snapshot, frame: &mut Frame, area: Rect) {
    if data.projects.is_empty() {
        empty("Projects", "no projects known; publish or trust one", frame, area);
        return;
    }
    let rows = data
        .projects
        .iter()
        .map(|p| {
            let flag = |b: bool, good: Color| {
                Cell::from(yes_no(b)).style(Style::new().fg(if b { good } else { DIM }))
            };
            Row::new(vec![
                Cell::from(format::clip(&p.name, PROJECT_NAME_WIDTH)),
                Cell::from(format::short_hex(&p.id)),
                flag(p.trusted, OK),
                flag(p.subscribed, OK),
                Cell::from(format!("{:+}", p.priority)),
                progress_cell(p),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(PROJECT_NAME_WIDTH as u16),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(4),
        Constraint::Min(19),
    ];
    let head = header(&["name", "id", "trusted", "subscribed", "prio", "crawl chunks"]);
    let title = format!("Projects ({})", data.projects.len());
    let t = table(rows, &widths, head, title);
    let [list, bar, shard, copies, checks, urls] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_selected(app, Tab::Projects, t, data.projects.len(), frame, list);
    // The selected project: its crawl chunks as a bar, its copies, and the URLs of its
    // finished chunks (what made it into the archive).
    let selected = app.selected[Tab::Projects.index()].min(data.projects.len().saturating_sub(1));
    let Some(p) = data.projects.get(selected) else { return };
    frame.render_widget(crawl_bar(p), bar);
    frame.render_widget(shard_line(p), shard);
    frame.render_widget(copies_line(p), copies);
    let c = data.status.checks.iter().find(|c| c.project == p.id);
    frame.render_widget(checks_line(c), checks);
    let u = &p.urls;
    let text = format!(
        " urls: {} archived · {} refused · {} disallowed · {} failed (`starling urls`)",
        u.ok, u.refused, u.disallowed, u.transient
    );
    let lost = u.refused + u.disallowed + u.transient > 0;
    let line = Line::styled(text, Style::new().fg(if lost { WARN } else { DIM }));
    frame.render_widget(Paragraph::new(line), urls);
}

/// `complete`, or the share of crawl chunks ended and how many.
fn progress_cell(p: &ProjectInfo) -> Cell<'static> {
    let c = p.crawl();
    let all = total(&c);
    let ended = c.done + c.failed;
    if p.is_complete() {
        let text = if c.failed > 0 {
            format!("complete · {} failed", c.failed)
        } else {
            format!("complete · {all}")
        };
        return Cell::from(text).style(Style::new().fg(OK).add_modifier(Modifier::BOLD));
    }
    if all == 0 {
        return Cell::from("no chunks yet").style(Style::new().fg(DIM));
    }
    Cell::from(format!("{:>3}% · {ended}/{all}", ended * 100 / all))
}

/// The selected project's crawl chunks, ended out of all, as a bar.
fn crawl_bar(p: &ProjectInfo) -> LineGauge<'static> {
    let c = p.crawl();
    let all = total(&c);
    let ended = c.done + c.failed;
    let ratio = if all == 0 { 0.0 } else { ended as f64 / all as f64 };
    let label = if p.is_complete() {
        format!(" {}: complete, {} done · {} failed ", format::clip(&p.name, 20), c.done, c.failed)
    } else {
        format!(
            " {}: {} done · {} failed · {} held · {} open ",
            format::clip(&p.name, 20),
            c.done,
            c.failed,
            c.held,
            c.open
        )
    };
    let color = if c.failed > 0 { WARN } else { OK };
    LineGauge::default()
        .ratio(ratio.clamp(0.0, 1.0))
        .label(label)
        .filled_style(Style::new().fg(color))
        .unfilled_style(Style::new().fg(DIM))
}

/// The selected project's neighbourhood: this node's shard of it and the nodes it shares
/// the shard with, or that every node of the project hears all of it.
fn shard_line(p: &ProjectInfo) -> Paragraph<'static> {
    let Some(s) = &p.shard else {
        let text = " shard: whole project (every node hears every item)";
        return Paragraph::new(Line::styled(text, Style::new().fg(DIM)));
    };
    let shards = 1u32 << s.depth.min(31);
    let p = &s.project_items;
    let text = format!(
        " shard {} of {shards} · {} live · {} in topic · project {}/{} ended ({}/{shards} shards)",
        s.name,
        s.members,
        s.topic_peers,
        p.done + p.failed,
        total(p),
        s.shards_heard,
    );
    // A shard this node hears no one else in works alone: its items wait on it.
    let alone = s.members <= 1 || s.topic_peers == 0;
    Paragraph::new(Line::styled(text, Style::new().fg(if alone { WARN } else { DIM })))
}

/// The selected project's result copies: kept by seeding nodes, apart from its progress.
fn copies_line(p: &ProjectInfo) -> Paragraph<'static> {
    let text = match (p.copies(), p.by_kind) {
        (Some(k), _) => {
            let placed = k.held + k.done;
            let mut text = format!(
                " copies: {placed} of {} kept by seeding nodes ({} per result)",
                total(&k),
                p.replication
            );
            if k.open > 0 {
                text.push_str(&format!(" · {} waiting for a node", k.open));
            }
            text
        }
        (None, Some(_)) if p.replication > 0 => {
            format!(" copies: none yet ({} per finished chunk)", p.replication)
        }
        (None, Some(_)) => " copies: none asked for (replication 0)".to_owned(),
        (None, None) => " copies: the node does not count them apart".to_owned(),
    };
    let waiting = p.copies().is_some_and(|k| k.open > 0);
    Paragraph::new(Line::styled(text, Style::new().fg(if waiting { WARN } else { DIM })))
}

/// The selected project's spot-checks: its checked results by where they stand, and the
/// peers marked for it (by short id, the first few).
fn checks_line(c: Option<&ChecksView>) -> Paragraph<'static> {
    const MARKED_SHOWN: usize = 3;
    let Some(c) = c else {
        let text = " checks: the node does not report them";
        return Paragraph::new(Line::styled(text, Style::new().fg(DIM)));
    };
    let r = &c.results;
    let checked = r.verified + r.pending + r.disputed + r.overturned + r.split;
    let mut text = if checked == 0 && c.sample_milli == 0 {
        " checks: off (the project samples no results)".to_owned()
    } else if checked == 0 {
        format!(" checks: none yet ({}% of results sampled)", f64::from(c.sample_milli) / 10.0)
    } else {
        let mut t = format!(
            " checks: {} verified · {} pending · {} disputed",
            r.verified, r.pending, r.disputed
        );
        if r.overturned > 0 {
            t.push_str(&format!(" · {} overturned", r.overturned));
        }
        if r.split > 0 {
            t.push_str(&format!(" · {} split", r.split));
        }
        t
    };
    if !c.marked.is_empty() {
        let named: Vec<String> =
            c.marked.iter().take(MARKED_SHOWN).map(|m| format::short_hex(&m.node)).collect();
        let more = c.marked.len().saturating_sub(MARKED_SHOWN);
        let more = if more > 0 { format!(" +{more}") } else { String::new() };
        text.push_str(&format!(" · marked: {}{more}", named.join(" ")));
    }
    let trouble = r.disputed + r.overturned > 0 || !c.marked.is_empty();
    Paragraph::new(Line::styled(text, Style::new().fg(if trouble { WARN } else { DIM })))
}
