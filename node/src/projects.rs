//! `starling projects`: the projects the local node knows, one line each (name, id, trust,
//! progress, URL outcomes); and [`resolve`], which turns what a person typed for a project —
//! a whole id, a unique prefix of one, or a unique name — into its id, for every command that
//! asks for a project.

use anyhow::{Result, bail};
use starling_protocol::ProjectId;
use starling_tui::api::ProjectInfo;
use starling_tui::client::ApiClient;

/// The shortest id prefix accepted: shorter ones match too much by chance to be safe in a
/// script that runs for months.
pub const PREFIX_MIN: usize = 4;

/// `starling projects`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProjectsArgs {
    #[command(flatten)]
    pub node: crate::cli_node::NodeDirArgs,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints one line per project the node knows, most complete last.
pub fn run(args: ProjectsArgs) -> Result<()> {
    let client = args.node.client()?;
    let list: Vec<ProjectInfo> = client.get_json("/projects")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        eprintln!(
            "no projects known yet: trust an owner's key (`starling project trust KEY`) and \
             wait for their manifest, follow a curator (`starling project follow KEY`), or \
             publish a manifest (`starling publish FILE`)"
        );
        return Ok(());
    }
    println!("{}", header());
    for p in &list {
        println!("{}", line(p));
    }
    Ok(())
}

fn header() -> String {
    format!(
        "{:<12}  {:<20}  {:<9}  {:>12}  {:>6}  {:>8}  {:>8}  {}",
        "ID", "NAME", "STATE", "DONE", "FAILED", "URLS OK", "URLS NOT", "PROGRESS"
    )
}

fn line(p: &ProjectInfo) -> String {
    // Progress is the crawl chunks': copies of their results stay held for as long as they
    // are kept, so counting them would hold a finished crawl short of 100 %.
    let c = p.crawl();
    let total = starling_tui::api::total(&c);
    let state = if !p.trusted {
        "untrusted"
    } else if p.is_complete() {
        "complete"
    } else if !p.subscribed {
        "not joined"
    } else {
        "working"
    };
    let pct = if total == 0 { 0.0 } else { (c.done + c.failed) as f64 * 100.0 / total as f64 };
    let u = &p.urls;
    let not = u.refused + u.disallowed + u.transient;
    let mut name = p.name.clone();
    if name.chars().count() > 20 {
        name = name.chars().take(19).collect::<String>() + "…";
    }
    format!(
        "{:<12}  {:<20}  {:<9}  {:>12}  {:>6}  {:>8}  {:>8}  {:.0} %",
        p.id.get(..12).unwrap_or(&p.id),
        name,
        state,
        format!("{}/{}", c.done, total),
        c.failed,
        u.ok,
        not,
        pct
    )
}

/// The project `typed` names among `known`: a whole id, else a unique id prefix of at least
/// [`PREFIX_MIN`] hex digits, else a unique name.
pub fn pick(typed: &str, known: &[ProjectInfo]) -> Result<ProjectId> {
    let t = typed.trim();
    if t.len() == 64
        && let Ok(id) = t.parse::<ProjectId>()
    {
        return Ok(id);
    }
    let lower = t.to_ascii_lowercase();
    let hexish = !lower.is_empty() && lower.chars().all(|c| c.is_ascii_hexdigit());
    let by_prefix: Vec<&ProjectInfo> = if hexish && lower.len() >= PREFIX_MIN {
        known.iter().filter(|p| p.id.starts_with(&lower)).collect()
    } else {
        Vec::new()
    };
    let by_name: Vec<&ProjectInfo> = known.iter().filter(|p| p.name == t).collect();
    let found = match (by_prefix.as_slice(), by_name.as_slice()) {
        ([one], []) | ([], [one]) => *one,
        ([a], [b]) if a.id == b.id => *a,
        ([], []) if hexish && lower.len() < PREFIX_MIN => {
            bail!(
                "{t:?} is too short to pick a project: give at least {PREFIX_MIN} hex digits of its id"
            )
        }
        ([], []) => bail!(
            "no project here has the id or name {t:?}; `starling projects` lists those this \
             node knows"
        ),
        (many, names) => {
            let mut ids: Vec<String> = many
                .iter()
                .chain(names)
                .map(|p| format!("{} ({})", &p.id[..12.min(p.id.len())], p.name))
                .collect();
            ids.dedup();
            bail!("{t:?} names more than one project: {}; give more of the id", ids.join(", "))
        }
    };
    found
        .id
        .parse()
        .map_err(|e| anyhow::anyhow!("the node sent a bad project id {:?}: {e}", found.id))
}

/// [`pick`] against the projects the node behind `client` knows; a whole id is taken as it
/// is, without asking the node.
pub fn resolve(client: &ApiClient, typed: &str) -> Result<ProjectId> {
    let t = typed.trim();
    if t.len() == 64
        && let Ok(id) = t.parse::<ProjectId>()
    {
        return Ok(id);
    }
    let known: Vec<ProjectInfo> = client.get_json("/projects")?;
    pick(t, &known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::ItemCounts;
    use starling_tui::api::KindCounts;

    fn info(id: &str, name: &str) -> ProjectInfo {
        ProjectInfo {
            id: id.to_owned(),
            name: name.to_owned(),
            version: 1,
            owner: String::new(),
            lease_ms: 1,
            replication: 1,
            items: Default::default(),
            trusted: true,
            subscribed: true,
            priority: 0,
            urls: Default::default(),
            by_kind: None,
            rate_scope: "mesh".into(),
            rate_per_s: 1.0,
            lanes: 1,
            shard: None,
        }
    }

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn a_project_is_picked_by_id_prefix_or_name() {
        let a = format!("abcd{}", &id('1')[4..]);
        let b = format!("abce{}", &id('2')[4..]);
        let known = vec![info(&a, "books"), info(&b, "music")];
        assert_eq!(pick(&a, &known).unwrap().to_hex(), a);
        assert_eq!(pick("ABCD", &known).unwrap().to_hex(), a);
        assert_eq!(pick("music", &known).unwrap().to_hex(), b);
        let e = pick("abc", &known).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        let known2 = vec![info(&a, "books"), info(&format!("abcd{}", &id('3')[4..]), "x")];
        let e = pick("abcd", &known2).unwrap_err().to_string();
        assert!(e.contains("more than one"), "{e}");
        let e = pick("nothing", &known).unwrap_err().to_string();
        assert!(e.contains("starling projects"), "{e}");
        // A whole id is taken even if this node has not heard of it yet.
        assert_eq!(pick(&id('9'), &[]).unwrap().to_hex(), id('9'));
    }

    #[test]
    fn lines_say_whether_a_project_is_complete() {
        let mut p = info(&id('a'), "a very long project name indeed");
        p.items.done = 9;
        p.items.failed = 1;
        let l = line(&p);
        assert!(l.contains("complete") && l.contains("9/10") && l.contains("100 %"), "{l}");
        assert!(l.contains("a very long project…"), "{l}");
        p.items.open = 10;
        assert!(line(&p).contains("working") && line(&p).contains("50 %"));
        p.trusted = false;
        assert!(line(&p).contains("untrusted"));
    }

    #[test]
    fn progress_counts_crawl_chunks_not_the_copies_they_spawn() {
        let mut p = info(&id('a'), "books");
        p.items = ItemCounts { open: 0, held: 20, done: 10, failed: 0 };
        p.by_kind = Some(KindCounts {
            crawl: ItemCounts { done: 10, ..Default::default() },
            seed: ItemCounts { held: 20, ..Default::default() },
            ..Default::default()
        });
        let l = line(&p);
        assert!(l.contains("complete") && l.contains("10/10") && l.contains("100 %"), "{l}");
        // A node that does not count kinds apart: every item, as before.
        p.by_kind = None;
        let l = line(&p);
        assert!(l.contains("working") && l.contains("10/30") && l.contains("33 %"), "{l}");
    }
}
