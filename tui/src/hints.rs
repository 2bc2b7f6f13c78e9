//! What's next for an idle or stuck node: why it is not working and the command that fixes
//! it. `starling status` prints these lines and the dashboard shows the first one, so a new
//! volunteer is never left looking at a node that sits idle without a word.

use crate::api::{ProjectInfo, StatusView};

/// One reason the node is not working (or is done), and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// What is the matter, in a few words.
    pub why: String,
    /// The command or action that fixes it; empty when there is nothing to do.
    pub fix: String,
}

impl Hint {
    fn new(why: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { why: why.into(), fix: fix.into() }
    }
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fix.is_empty() {
            write!(f, "{}", self.why)
        } else {
            write!(f, "{}: {}", self.why, self.fix)
        }
    }
}

/// The hints for a node in this state, most pressing first; none when it is working.
/// `projects` is `GET /projects`, or `None` when it could not be read.
pub fn next_steps(s: &StatusView, projects: Option<&[ProjectInfo]>) -> Vec<Hint> {
    let mut out = Vec::new();
    // The node words each fault with its fix already (the log and `/status` show the same
    // line), so the fault's detail is the fix here.
    for f in &s.health.faults {
        out.push(Hint::new(format!("unhealthy ({})", f.kind), f.detail.clone()));
    }
    if s.paused {
        out.push(Hint::new("claiming is paused", "press `p` in `starling dash` to resume"));
    }
    if s.over_disk_cap && !s.health.faults.iter().any(|f| f.kind == "disk") {
        out.push(Hint::new(
            "stored results are over the disk cap",
            "raise it (--disk-max, then restart) or export and remove results",
        ));
    }
    if s.connected_peers == 0 {
        out.push(Hint::new(
            "no peers connected",
            "start with --bootstrap ADDR (a known node's address ending in /p2p/ and its peer \
             id), or run another node on this LAN (found by mDNS)",
        ));
    }
    match projects {
        Some(list) if !list.iter().any(|p| p.trusted) => out.push(Hint::new(
            if list.is_empty() { "no projects known" } else { "no trusted project" },
            "trust a project owner's key: starling project trust KEY (their .pub file or 64 hex \
             digits); the node then works on their projects. Or follow a curator who picks \
             projects for you: starling project follow KEY",
        )),
        Some(list) => {
            let trusted: Vec<&ProjectInfo> = list.iter().filter(|p| p.trusted).collect();
            // Crawl chunks end; seeding copies are held for good, so they never count here.
            let open = |p: &&ProjectInfo| !p.is_complete() && crate::api::total(&p.crawl()) > 0;
            let joined = trusted.iter().any(|p| p.subscribed);
            if !joined {
                out.push(Hint::new(
                    "no trusted project is joined",
                    "join one in `starling dash`: Projects tab, `s`",
                ));
            } else if trusted.iter().all(|p| !open(p)) {
                let items: u64 = trusted.iter().map(|p| p.crawl().done + p.crawl().failed).sum();
                out.push(Hint::new(
                    if items == 0 {
                        "trusted projects have no work published yet".to_owned()
                    } else {
                        format!("every trusted project is complete ({items} items ended)")
                    },
                    "nothing to do until the owners publish more work",
                ));
            }
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::HealthFault;

    fn busy() -> StatusView {
        let mut s = crate::fixtures::status();
        s.connected_peers = 3;
        s.paused = false;
        s.over_disk_cap = false;
        s.health = Default::default();
        s
    }

    fn project(trusted: bool, open: u64, done: u64) -> ProjectInfo {
        let mut p = crate::fixtures::projects().remove(0);
        p.trusted = trusted;
        p.subscribed = true;
        p.items = starling_protocol::ItemCounts { open, held: 0, done, failed: 0 };
        p.by_kind = None;
        p
    }

    #[test]
    fn a_working_node_gets_no_hint() {
        assert!(next_steps(&busy(), Some(&[project(true, 5, 1)])).is_empty());
    }

    #[test]
    fn an_idle_node_is_told_why_and_what_to_run() {
        let mut s = busy();
        s.connected_peers = 0;
        let h = next_steps(&s, Some(&[]));
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h[0].why.contains("no peers") && h[0].fix.contains("--bootstrap"));
        assert!(h[1].why.contains("no projects") && h[1].fix.contains("starling project trust"));
        let h = next_steps(&busy(), Some(&[project(false, 5, 0)]));
        assert!(h[0].why.contains("no trusted project"), "{h:?}");
    }

    #[test]
    fn faults_pause_and_completion_are_named() {
        let mut s = busy();
        s.paused = true;
        s.health.ok = false;
        s.health.faults.push(HealthFault { kind: "clock".into(), detail: "40 s ahead".into() });
        let h = next_steps(&s, Some(&[project(true, 0, 7)]));
        assert_eq!(h[0].to_string(), "unhealthy (clock): 40 s ahead", "{h:?}");
        assert!(h[1].why.contains("paused") && h[1].fix.contains("`p`"));
        assert!(h[2].why.contains("complete (7 items"), "{h:?}");
        assert!(next_steps(&busy(), Some(&[project(true, 0, 0)]))[0].why.contains("no work"));
    }

    #[test]
    fn held_copies_do_not_keep_a_finished_crawl_from_being_complete() {
        use starling_protocol::ItemCounts;
        let mut p = project(true, 0, 0);
        let crawl = ItemCounts { open: 0, held: 0, done: 40, failed: 0 };
        let seed = ItemCounts { open: 0, held: 80, done: 0, failed: 0 };
        p.items = ItemCounts { held: 80, done: 40, ..ItemCounts::default() };
        p.by_kind = Some(crate::api::KindCounts { crawl, seed, ..Default::default() });
        assert!(p.is_complete());
        let h = next_steps(&busy(), Some(&[p.clone()]));
        assert!(h[0].why.contains("complete (40 items ended)"), "{h:?}");
        // Still crawling: no hint.
        p.by_kind = Some(crate::api::KindCounts {
            crawl: ItemCounts { open: 1, ..crawl },
            seed,
            ..Default::default()
        });
        assert!(next_steps(&busy(), Some(&[p])).is_empty());
    }
}
