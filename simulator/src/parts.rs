//! The world's state in named parts, each owning its fields and the small rules over them:
//! the [`Ledger`] of ground truth (projects, items, who executes what, what is done), the
//! [`FaultState`] of the scheduled faults, and the [`Convergence`] the agreement check tracks.
//! None of them knows the world; the world hands them the time.

use std::collections::{BTreeSet, HashMap};

use starling_protocol::engine::test_keypair;
use starling_protocol::shard::Shard;
use starling_protocol::{
    Directory, DirectoryEntry, Envelope, ItemBatch, ItemId, Keypair, ProjectId, ProjectManifest,
    Signed, WorkItem, WorkKind,
};

use crate::hash::IdBuild;
use crate::net::mix64;
use crate::scenario::Scenario;

/// Duplicate completions described in the report.
pub(crate) const DUP_EXAMPLES_MAX: usize = 5;

/// One project and its owner.
#[derive(Debug)]
pub(crate) struct ProjectRec {
    /// The project's id (its manifest's), kept so hot paths compare ids without hashing.
    pub id: ProjectId,
    pub key: Keypair,
    pub manifest: Envelope,
    pub batches: Vec<Envelope>,
    /// The topic each batch goes out on (aligned with `batches`): its shard's, or the
    /// project's.
    pub batch_topics: Vec<u32>,
    /// How deep the project is split now (0: whole).
    pub depth: u8,
    /// The manifest's version.
    pub version: u64,
}

/// What the driver knows about one item.
#[derive(Debug, Clone)]
pub(crate) struct ItemRec {
    pub id: ItemId,
    /// The project's index; `u32::MAX` for a derived item of a project the driver does not
    /// know.
    pub project: u32,
    /// The topic its messages travel on, which its nodes' views are compared within: its
    /// shard's for an item of a split project, else the project's (`u32::MAX` with it).
    pub group: u32,
    /// What it is sharded by (`starling_protocol::shard::shard_key`), to find its group again
    /// when the depth changes.
    pub key: Option<ItemId>,
    pub crawl: bool,
    pub starts: u32,
    pub completions: u32,
    /// Honest nodes executing it now, with when they started.
    pub executing: Vec<(u32, u64)>,
    pub done: bool,
    /// Last time any honest node applied a state change for it.
    pub touched_at: u64,
    /// How the last honest execution of it ended.
    pub last_end: End,
}

impl ItemRec {
    fn new(id: ItemId, project: u32, at: (u32, Option<ItemId>), crawl: bool, touched: u64) -> Self {
        let touched_at = touched;
        let (group, key) = at;
        ItemRec {
            id,
            project,
            group,
            key,
            crawl,
            starts: 0,
            completions: 0,
            executing: Vec::new(),
            done: false,
            touched_at,
            last_end: End::None,
        }
    }
}

/// How an execution ended, to tell a rerun the protocol could not avoid from a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// No execution has ended yet.
    None,
    /// Its node crashed or left (graceful leave gives the work back).
    Churn,
    /// The engine cancelled it: another node won the claim or finished first.
    Cancelled,
    /// It ran to the end and reported a result.
    Completed,
    /// It ran to the end and reported a failure.
    Failed,
}

/// Honest executions of crawl items, in all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Executions {
    /// Executions started.
    pub started: u64,
    /// Items started at least once.
    pub items_started: u64,
    /// Executions that ran to a result.
    pub completed: u64,
    /// Items completed at least once.
    pub items_completed: u64,
}

/// The ground truth the checkers and the report read: the projects as their owners published
/// them, every item the driver knows of (crawl items, and seed duties on first sight), and
/// which are done.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub projects: Vec<ProjectRec>,
    pub project_index: HashMap<ProjectId, u32, IdBuild>,
    /// Topics in all: one per project, then those of the shards of each depth a project was
    /// split at, numbered as each depth is first used.
    pub topic_count: u32,
    /// The topic of the first shard of each (project, depth) used; shard `prefix` is on that
    /// plus `prefix`.
    pub depth_bases: HashMap<(u32, u8), u32>,
    /// Per topic, its project.
    pub topic_project: Vec<u32>,
    pub items: Vec<ItemRec>,
    pub item_index: HashMap<ItemId, u32, IdBuild>,
    /// Items more than one honest node has executed at once since the safety check last
    /// found them settled.
    pub contended: BTreeSet<u32>,
    /// Crawl items in all.
    pub crawl_total: u64,
    /// Crawl items done in some honest node's view.
    pub done_count: u64,
    /// When the last crawl item became done.
    pub all_done_at: Option<u64>,
    /// The first few items completed more than once, for the report.
    pub dup_examples: Vec<String>,
    /// The curator's key and signed directory, when the scenario has one.
    pub curator: Option<(Keypair, Envelope)>,
}

impl Ledger {
    /// The projects of `s` with their signed manifests and batches of crawl items, the keys
    /// drawn from `seed`.
    pub(crate) fn build(s: &Scenario, seed: u64) -> Self {
        let mut ledger = Ledger::default();
        let per = s.items / s.projects;
        let extra = s.items % s.projects;
        ledger.topic_count = s.projects;
        ledger.topic_project = (0..s.projects).collect();
        let depth = s.shard_depth();
        for p in 0..s.projects {
            let shard_base = ledger.intern_depth(p, depth);
            let key = test_keypair(mix64(seed ^ 0x7072_6f6a) ^ u64::from(p));
            let m = ProjectManifest {
                name: format!("sim-{p}"),
                description: String::new(),
                version: 1,
                owner: key.public(),
                rate: s.hosts.as_ref().map(|h| h.policy()).unwrap_or_default(),
                lease_ms: s.lease_ms,
                replication: s.replication,
                scope: Vec::new(),
                user_agent: "starling-sim".into(),
                robots: Default::default(),
                caps: Default::default(),
                verify: starling_protocol::manifest::VerifyPolicy {
                    sample_milli: s.verify.sample_milli,
                    volatile: if s.verify.volatile_listed {
                        vec![format!("https://p{p}.example/changing/")]
                    } else {
                        Vec::new()
                    },
                    strikes: s.verify.strikes,
                    proof_every_ms: s.verify.proof_every_ms,
                    proof_grace_ms: s.verify.proof_grace_ms,
                },
                shard_depth: depth,
            };
            let pid = m.id();
            let count = per + u32::from(p < extra);
            let group = |key: &ItemId| match depth {
                0 => p,
                d => shard_base + u32::from(Shard::of_key(key, d).prefix),
            };
            let mut all = Vec::with_capacity(count as usize);
            for i in 0..count {
                let urls = match &s.hosts {
                    Some(h) => h.chunk_urls(p, i),
                    None if s.verify.urls_per_chunk > 1 || s.verify.changing_share > 0.0 => {
                        (0..s.verify.urls_per_chunk)
                            .map(|j| crate::world::page_url(p, i, j, &s.verify))
                            .collect()
                    }
                    None => vec![format!("https://p{p}.example/{i}")],
                };
                let work = WorkItem::CrawlChunk { urls };
                let id = work.id(&pid);
                ledger.item_index.insert(id, ledger.items.len() as u32);
                ledger.items.push(ItemRec::new(id, p, (group(&id), Some(id)), true, 0));
                all.push((group(&id), work));
            }
            // An owner of a split project sorts its batches by shard, so each goes to the
            // shard's members alone.
            all.sort_by_key(|(g, _)| *g);
            let (mut batches, mut batch_topics) = (Vec::new(), Vec::new());
            let mut works = Vec::with_capacity(s.batch_items as usize);
            for (k, (g, work)) in all.iter().enumerate() {
                works.push(work.clone());
                let next = all.get(k + 1).map(|(g, _)| *g);
                if works.len() == s.batch_items as usize || next != Some(*g) {
                    let b = ItemBatch {
                        project: pid,
                        seq: batches.len() as u64,
                        items: std::mem::take(&mut works),
                    };
                    batches.push(Envelope::Batch(Signed::sign(&key, &b)));
                    batch_topics.push(*g);
                }
            }
            ledger.crawl_total += u64::from(count);
            ledger.project_index.insert(pid, p);
            let manifest = Envelope::Manifest(Signed::sign(&key, &m));
            ledger.projects.push(ProjectRec {
                id: pid,
                manifest,
                key,
                batches,
                batch_topics,
                depth,
                version: 1,
            });
        }
        if s.curator.enabled {
            ledger.curator = Some(ledger.directory(s, seed));
        }
        ledger
    }

    /// The curator's key and its directory of every project (of none, when sabotaged).
    fn directory(&self, s: &Scenario, seed: u64) -> (Keypair, Envelope) {
        let key = test_keypair(mix64(seed ^ 0x0063_7572_6174_6f72));
        let entries = if s.sabotage.unlisted_directory {
            Vec::new()
        } else {
            self.projects
                .iter()
                .map(|p| DirectoryEntry { project: p.id, owner: p.key.public(), priority: 1 })
                .collect()
        };
        let d =
            Directory { curator: key.public(), name: "sim-curator".into(), version: 1, entries };
        let env = Envelope::Directory(Signed::sign(&key, &d));
        (key, env)
    }

    /// The index of an item, registering a derived item (a seed duty) on first sight at `now`.
    /// Registers a derived item on first sight (`key`: what it is sharded by, see
    /// `starling_protocol::shard::shard_key`) and returns its index.
    pub(crate) fn register(
        &mut self,
        item: ItemId,
        project: ProjectId,
        key: Option<ItemId>,
        kind: WorkKind,
        check: bool,
        now: u64,
    ) -> u32 {
        if let Some(&i) = self.item_index.get(&item) {
            return i;
        }
        let i = self.items.len() as u32;
        self.item_index.insert(item, i);
        let project = self.project_index.get(&project).copied().unwrap_or(u32::MAX);
        let group = self.group_of(project, key.as_ref());
        // Spot-checks are crawls, but not the project's chunks: not counted with them.
        let crawl = kind == WorkKind::Crawl && !check;
        self.items.push(ItemRec::new(item, project, (group, key), crawl, now));
        i
    }

    /// Numbers the topics of project `p`'s shards at `depth` (once per depth) and returns
    /// the first; the project's own topic for depth 0.
    pub(crate) fn intern_depth(&mut self, p: u32, depth: u8) -> u32 {
        if depth == 0 {
            return p;
        }
        if let Some(&base) = self.depth_bases.get(&(p, depth)) {
            return base;
        }
        let base = self.topic_count;
        self.topic_count += 1 << depth;
        self.topic_project.extend(std::iter::repeat_n(p, 1 << depth));
        self.depth_bases.insert((p, depth), base);
        base
    }

    /// Moves project `p` to `depth` under a new manifest: numbers its shards' topics, and
    /// puts each of its items in the group of its new shard.
    pub(crate) fn set_depth(&mut self, p: u32, depth: u8, manifest: Envelope, version: u64) {
        self.intern_depth(p, depth);
        let Some(rec) = self.projects.get_mut(p as usize) else { return };
        (rec.depth, rec.manifest, rec.version) = (depth, manifest, version);
        let groups: Vec<(usize, u32)> = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, r)| r.project == p)
            .map(|(i, r)| (i, self.group_of(p, r.key.as_ref())))
            .collect();
        for (i, g) in groups {
            self.items[i].group = g;
        }
    }

    /// The topic of project `p`'s items sharded by `key` (`None`: never sharded).
    pub(crate) fn group_of(&self, p: u32, key: Option<&ItemId>) -> u32 {
        let Some(rec) = self.projects.get(p as usize) else { return p };
        match (rec.depth, key) {
            (0, _) | (_, None) => p,
            (d, Some(k)) => self.shard_topic(p, Shard::of_key(k, d)),
        }
    }

    /// The topic of `shard` of project `p` (its project's, at a depth never used).
    pub(crate) fn shard_topic(&self, p: u32, shard: Shard) -> u32 {
        match self.depth_bases.get(&(p, shard.depth)) {
            Some(base) => base + u32::from(shard.prefix),
            None => p,
        }
    }

    /// The project and shard of a shard topic (`None` for a project's own topic).
    pub(crate) fn topic_shard(&self, t: u32) -> Option<(u32, Shard)> {
        let p = self.project_of_topic(t)?;
        self.depth_bases.iter().find_map(|(&(q, depth), &base)| {
            (q == p && t >= base && t - base < 1 << depth)
                .then(|| (p, Shard { depth, prefix: (t - base) as u16 }))
        })
    }

    /// The project topic `t` belongs to: itself, or the project whose shard it is.
    pub(crate) fn project_of_topic(&self, t: u32) -> Option<u32> {
        self.topic_project.get(t as usize).copied()
    }

    /// Whether topic `t` is a split project's own topic, on which its nodes' heartbeats and
    /// items do not travel.
    pub(crate) fn split_project_topic(&self, t: u32) -> bool {
        self.projects.get(t as usize).is_some_and(|p| p.depth > 0)
    }

    /// The project index of a known item of a known project.
    pub(crate) fn known_project(&self, item: &ItemId) -> Option<u32> {
        let &i = self.item_index.get(item)?;
        let p = self.items[i as usize].project;
        (p != u32::MAX).then_some(p)
    }

    /// An honest node applied a state change for `item` at `now`.
    pub(crate) fn touch(&mut self, item: &ItemId, now: u64) {
        if let Some(&i) = self.item_index.get(item) {
            self.items[i as usize].touched_at = now;
        }
    }

    /// A crawl item is done in some honest node's view at `now`; the last one sets
    /// `all_done_at`.
    pub(crate) fn mark_done(&mut self, item: ItemId, now: u64) {
        let Some(&idx) = self.item_index.get(&item) else { return };
        let rec = &mut self.items[idx as usize];
        if rec.done || !rec.crawl {
            return;
        }
        rec.done = true;
        self.done_count += 1;
        if self.done_count == self.crawl_total {
            self.all_done_at = Some(now);
        }
    }

    /// The honest executions of crawl items so far.
    pub(crate) fn executions(&self) -> Executions {
        let mut e = Executions::default();
        for r in self.items.iter().filter(|r| r.crawl) {
            e.started += u64::from(r.starts);
            e.items_started += u64::from(r.starts > 0);
            e.completed += u64::from(r.completions);
            e.items_completed += u64::from(r.completions > 0);
        }
        e
    }

    /// Notes a duplicate completion for the report while there is room.
    pub(crate) fn note_duplicate(&mut self, what: impl FnOnce() -> String) {
        if self.dup_examples.len() < DUP_EXAMPLES_MAX {
            self.dup_examples.push(what());
        }
    }
}

/// What the scheduled faults have done so far.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    /// Whether any fault, crash or leave has happened (convergence is timed only then).
    pub had_fault: bool,
    /// While a `site_down` lasts: the share of items on the site, and when it ends.
    pub site_down: Option<(f64, u64)>,
    /// Scheduled faults that have not happened yet (or not ended, for a node's own): a run
    /// does not end before they have.
    pub pending: u32,
    /// Last partition change (partition, isolate, heal), for settledness.
    pub topo_changed_at: u64,
}

impl FaultState {
    /// Whether crawl executions of `item` fail at `now` because its site is down.
    pub(crate) fn site_is_down(&self, item: &ItemId, now: u64) -> bool {
        self.site_down.is_some_and(|(share, until)| {
            now < until && f64::from(item.as_bytes()[1]) < share * 256.0
        })
    }

    /// One pending fault happened (or ended).
    pub(crate) fn one_done(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }
}

/// What the convergence check tracks across checks.
#[derive(Debug, Default)]
pub(crate) struct Convergence {
    /// Waiting for all honest nodes to agree since this time.
    pub from: Option<u64>,
    /// How long the last wait after a fault took.
    pub after_heal_ms: Option<u64>,
    /// The order the convergence check reads nodes in: a permutation of the node indices,
    /// those of recent disagreements first. Only saves work; never changes an outcome.
    pub order: Vec<u32>,
    /// `final_item_counts` as of the end of the run, once known.
    pub end_counts: Option<(u64, u64, u64)>,
}

impl Convergence {
    /// Starts waiting for agreement at `now` unless already waiting.
    pub(crate) fn wait_from(&mut self, now: u64) {
        if self.from.is_none() {
            self.from = Some(now);
        }
    }

    /// Puts the nodes of a disagreeing pair first, `n` ahead of `first`, the others keeping
    /// their order.
    pub(crate) fn read_first(&mut self, n: u32, first: u32) {
        self.order.retain(|m| *m != first && *m != n);
        self.order.splice(0..0, [n, first]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        let mut s = Scenario::load("steady").expect("built-in scenario loads");
        s.projects = 2;
        s.items = 5;
        s.batch_items = 2;
        Ledger::build(&s, 1)
    }

    #[test]
    fn a_built_ledger_indexes_every_item_and_batches_them() {
        let l = ledger();
        assert_eq!((l.items.len(), l.crawl_total), (5, 5));
        assert_eq!(l.projects.len(), 2);
        // 3 + 2 items, in batches of at most 2.
        assert_eq!(l.projects[0].batches.len(), 2);
        assert_eq!(l.projects[1].batches.len(), 1);
        for (i, r) in l.items.iter().enumerate() {
            assert_eq!(l.item_index[&r.id], i as u32);
            assert_eq!(l.known_project(&r.id), Some(r.project));
        }
    }

    #[test]
    fn marking_every_crawl_item_done_once_sets_all_done() {
        let mut l = ledger();
        let ids: Vec<ItemId> = l.items.iter().map(|r| r.id).collect();
        for (t, id) in ids.iter().enumerate() {
            assert_eq!(l.all_done_at, None);
            l.mark_done(*id, t as u64);
            l.mark_done(*id, 99);
        }
        assert_eq!((l.done_count, l.all_done_at), (5, Some(4)));
    }

    #[test]
    fn a_seed_duty_is_registered_once_and_not_counted_as_crawl() {
        let mut l = ledger();
        let pid = l.projects[1].id;
        let duty = ItemId([9; 32]);
        let i = l.register(duty, pid, None, WorkKind::Seed, false, 7);
        assert_eq!(l.register(duty, pid, None, WorkKind::Seed, false, 8), i);
        assert_eq!((l.items[i as usize].touched_at, l.known_project(&duty)), (7, Some(1)));
        l.mark_done(duty, 9);
        assert_eq!(l.done_count, 0, "only crawl items count");
        let stranger =
            l.register(ItemId([8; 32]), ProjectId([1; 32]), None, WorkKind::Seed, false, 0);
        assert_eq!(l.known_project(&l.items[stranger as usize].id), None);
    }

    #[test]
    fn executions_count_starts_and_completions_of_crawl_items_only() {
        let mut l = ledger();
        l.items[0].starts = 2;
        l.items[0].completions = 1;
        l.items[1].starts = 1;
        let duty = l.register(ItemId([9; 32]), l.projects[0].id, None, WorkKind::Seed, false, 0);
        l.items[duty as usize].starts = 5;
        let e = l.executions();
        let want = Executions { started: 3, items_started: 2, completed: 1, items_completed: 1 };
        assert_eq!(e, want);
    }

    #[test]
    fn duplicate_examples_are_bounded() {
        let mut l = Ledger::default();
        for i in 0..DUP_EXAMPLES_MAX + 3 {
            l.note_duplicate(|| format!("dup {i}"));
        }
        assert_eq!(l.dup_examples.len(), DUP_EXAMPLES_MAX);
    }

    #[test]
    fn a_site_down_covers_its_share_of_items_until_it_ends() {
        let mut f = FaultState { site_down: Some((0.5, 100)), ..FaultState::default() };
        let (low, high) = (ItemId([0x10; 32]), ItemId([0xf0; 32]));
        assert!(f.site_is_down(&low, 99) && !f.site_is_down(&high, 99));
        assert!(!f.site_is_down(&low, 100), "over");
        f.pending = 1;
        f.one_done();
        f.one_done();
        assert_eq!(f.pending, 0);
    }

    #[test]
    fn convergence_waits_from_the_first_start_and_reorders_readers() {
        let mut c = Convergence { order: vec![0, 1, 2, 3, 4], ..Convergence::default() };
        c.wait_from(5);
        c.wait_from(9);
        assert_eq!(c.from, Some(5));
        c.read_first(3, 1);
        assert_eq!(c.order, vec![3, 1, 0, 2, 4]);
    }
}
