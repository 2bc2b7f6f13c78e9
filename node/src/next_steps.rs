//! What's next, in the log of `starling up`: once the node's listen addresses are known, one
//! INFO block saying what it will do and, when it would sit idle, why and the command that
//! fixes it; later, one line whenever that set of reasons changes (and holds), never a line
//! per poll. The reasons are `starling status`'s NEXT lines ([`starling_tui::hints`]).

use std::time::Duration;

use starling_protocol::Roles;

use crate::client::Client;
use crate::views::{ProjectInfo, StatusView};

/// What the configuration says the node will do, for the start-up block.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Bootstrap addresses dialled at start.
    pub bootstrap: usize,
    /// mDNS discovery on.
    pub mdns: bool,
}

/// The first block waits at least this long after start, so that the peers and projects a
/// node reaches at once are not reported missing.
pub const FIRST_AFTER: Duration = Duration::from_secs(3);
/// The first block is logged by then even if no listen address was reported.
pub const FIRST_BY: Duration = Duration::from_secs(15);
/// How often the reasons are checked afterwards.
pub const POLL: Duration = Duration::from_secs(10);

/// The roles as words: `crawl, seed, torrent, relay`.
pub fn roles_text(roles: u8) -> String {
    let names = [
        (Roles::CRAWL, "crawl"),
        (Roles::SEED, "seed result copies"),
        (Roles::TORRENT, "seed torrents"),
        (Roles::RELAY, "relay for peers behind NAT"),
    ];
    let words: Vec<&str> =
        names.iter().filter(|(r, _)| roles & r.0 != 0).map(|(_, name)| *name).collect();
    if words.is_empty() { "no work (relays gossip only)".to_owned() } else { words.join(", ") }
}

/// What the start-up block reports of the node's status.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Roles taken (bits of [`Roles`]).
    pub roles: u8,
    /// Peers connected.
    pub connected_peers: usize,
    /// Projects known.
    pub projects: usize,
}

impl From<&StatusView> for Seen {
    fn from(s: &StatusView) -> Self {
        Self {
            listen: s.listen.clone(),
            roles: s.roles,
            connected_peers: s.connected_peers,
            projects: s.projects,
        }
    }
}

/// The start-up block: what the node does, then each reason it would sit idle.
pub fn first_block(plan: &Plan, s: &Seen, hints: &[String]) -> String {
    let listen = if s.listen.is_empty() { "nothing".to_owned() } else { s.listen.join(", ") };
    let peers = match (plan.bootstrap, plan.mdns) {
        (0, true) => "looking for peers on this LAN (mDNS)".to_owned(),
        (0, false) => "no bootstrap address and mDNS off".to_owned(),
        (n, mdns) => format!(
            "dialling {n} bootstrap address{}{}",
            if n == 1 { "" } else { "es" },
            if mdns { ", and looking on this LAN (mDNS)" } else { "" }
        ),
    };
    let mut out = format!(
        "what's next: listening on {listen}; {peers}; work taken: {}; {} peers connected, \
         {} projects known. Watch it with `starling status` or `starling dash`.",
        roles_text(s.roles),
        s.connected_peers,
        s.projects
    );
    if hints.is_empty() {
        out.push_str("\n  working: nothing stands in the way");
    }
    for h in hints {
        out.push_str("\n  idle: ");
        out.push_str(h);
    }
    out
}

/// The reasons the node would sit idle, as `starling status` prints them.
pub fn hints(s: &StatusView, projects: Option<&[ProjectInfo]>) -> Vec<String> {
    starling_tui::hints::next_steps(s, projects).iter().map(ToString::to_string).collect()
}

/// The line logged when the reasons changed and held for two polls.
pub fn change_line(hints: &[String]) -> String {
    if hints.is_empty() {
        "what's next: nothing stands in the way any more; the node is working".to_owned()
    } else {
        let mut out = "what's next: the node is idle".to_owned();
        for h in hints {
            out.push_str("\n  idle: ");
            out.push_str(h);
        }
        out
    }
}

/// Logs the start-up block, then changes; runs until aborted (the node stops it).
pub async fn watch(client: Client, plan: Plan) {
    let start = tokio::time::Instant::now();
    tokio::time::sleep(FIRST_AFTER).await;
    let (status, projects) = loop {
        let Ok(s) = client.status().await else { return };
        if !s.listen.is_empty() || start.elapsed() >= FIRST_BY {
            break (s, client.projects().await.ok());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut logged = hints(&status, projects.as_deref());
    tracing::info!("{}", first_block(&plan, &Seen::from(&status), &logged));
    let mut last = logged.clone();
    loop {
        tokio::time::sleep(POLL).await;
        let Ok(s) = client.status().await else { return };
        let now = hints(&s, client.projects().await.ok().as_deref());
        if now != logged && now == last {
            tracing::info!("{}", change_line(&now));
            logged = now.clone();
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_block_names_the_work_and_each_reason_with_its_fix() {
        let s = Seen {
            listen: vec!["/ip4/127.0.0.1/tcp/4801".into()],
            roles: Roles::CRAWL.0 | Roles::SEED.0,
            ..Seen::default()
        };
        let h = vec![
            "no peers connected: start with --bootstrap ADDR".to_owned(),
            "no projects known: trust a project owner's key: starling project trust KEY".to_owned(),
        ];
        let text = first_block(&Plan { bootstrap: 0, mdns: false }, &s, &h);
        assert!(text.contains("listening on /ip4/127.0.0.1/tcp/4801"), "{text}");
        assert!(text.contains("work taken: crawl, seed result copies;"), "{text}");
        assert!(text.contains("no bootstrap address and mDNS off"), "{text}");
        assert!(text.contains("idle: no peers connected: start with --bootstrap"), "{text}");
        assert!(text.contains("\n  idle: no projects known: trust"), "{text}");
        assert!(first_block(&Plan::default(), &s, &[]).contains("working"));
        assert!(change_line(&[]).contains("working"));
    }
}
