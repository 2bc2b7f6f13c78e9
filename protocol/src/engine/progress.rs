//! Project-wide progress of a split project, from one signed count per shard.
//!
//! A node of a split project holds only its shard's items, so its own counts say how far its
//! shard is, not the project. Every [`progress_interval_ms`] one member of each shard (the
//! one whose HRW score for the shard and the interval is highest among the members it counts
//! live) signs a [`ShardProgress`] of its shard's items by state and publishes it to the whole
//! project. Each node keeps the newest count of each shard at the manifest's depth, from a
//! signer that is a member of that shard, and adds them up with its own shard's live counts:
//! at most [`PROGRESS_SHARDS_PER_INTERVAL`] small messages every [`PROGRESS_INTERVAL_MS`]
//! however deep the split, instead of every receipt. The counts are
//! informational; no claim rests on them, so a member that lies about its shard's progress
//! misleads the views and nothing else.

use std::collections::BTreeMap;

use crate::hrw;
use crate::ids::{ItemId, ProjectId};
use crate::message::{Envelope, Roles, ShardProgress};
use crate::shard::Shard;
use crate::signed::Signed;

use super::{Engine, ItemCounts, Output, Reject};

/// How often each shard's progress is counted and published, in a project of up to
/// [`PROGRESS_SHARDS_PER_INTERVAL`] shards; deeper, each shard counts that much less often (see
/// [`progress_interval_ms`]).
pub const PROGRESS_INTERVAL_MS: u64 = 30_000;
/// Shard counts a project sends every [`PROGRESS_INTERVAL_MS`] at most, however deep it is
/// split: they reach every node of the project, so their cost must not grow with the mesh.
pub const PROGRESS_SHARDS_PER_INTERVAL: u64 = 16;
/// A shard count older than this many intervals is left out of the project's total.
pub const PROGRESS_STALE_INTERVALS: u64 = 4;

/// The newest count heard from each shard of each split project.
#[derive(Debug, Clone, Default)]
pub(super) struct ProgressBook {
    /// By project, then by shard: the count and the envelope it came in. At most `2^depth`
    /// shards a project (4,096), for projects this node knows.
    counts: BTreeMap<ProjectId, BTreeMap<Shard, ShardProgress>>,
    /// The [`PROGRESS_INTERVAL_MS`] tick this node last looked at whether to count.
    tick: u64,
}

/// A split project's progress as this node can tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProjectProgress {
    /// Items by state over the shards heard from (this node's own shard counted live).
    pub items: ItemCounts,
    /// Shards whose count is in `items`.
    pub shards_heard: u32,
    /// Shards the project has (`2^depth`).
    pub shards: u32,
}

/// How often each shard of a project split `depth` deep is counted: every
/// [`PROGRESS_INTERVAL_MS`] up to 16 shards, twice as seldom for each level deeper (at 512
/// shards, every 16 minutes), so the whole project sends at most
/// [`PROGRESS_SHARDS_PER_INTERVAL`] counts every [`PROGRESS_INTERVAL_MS`].
pub fn progress_interval_ms(depth: u8) -> u64 {
    let shards = 1u64 << depth.min(crate::shard::SHARD_DEPTH_MAX);
    PROGRESS_INTERVAL_MS * shards.div_ceil(PROGRESS_SHARDS_PER_INTERVAL)
}

/// The key whose HRW scores choose a shard's counter for one interval.
fn counter_key(project: &ProjectId, shard: Shard, round: u64) -> ItemId {
    let mut h = blake3::Hasher::new_derive_key("starling/v1/progress");
    h.update(project.as_bytes());
    h.update(&[shard.depth]);
    h.update(&shard.prefix.to_le_bytes());
    h.update(&round.to_le_bytes());
    ItemId(*h.finalize().as_bytes())
}

impl Engine {
    /// Once an interval: counts and publishes each split project's shard this node is the
    /// counter of (see the module's documentation).
    pub(super) fn tend_progress(&mut self, now: u64) {
        let tick = now / PROGRESS_INTERVAL_MS;
        if tick == self.progress.tick {
            return;
        }
        self.progress.tick = tick;
        let split: Vec<(ProjectId, Shard)> =
            self.shards().filter(|(p, _)| self.is_subscribed(p)).collect();
        for (project, shard) in split {
            // The first tick of each of this shard's (longer, when deep) intervals.
            let per = progress_interval_ms(shard.depth) / PROGRESS_INTERVAL_MS;
            if !tick.is_multiple_of(per) {
                continue;
            }
            let key = counter_key(&project, shard, tick / per);
            let members = self.peers.rank_list(&project, Roles(0), Some(shard));
            let mine = hrw::score(&key, &self.me);
            if members.iter().any(|n| hrw::score(&key, n) > mine) {
                continue;
            }
            let c = self.counts(Some(project));
            let count = ShardProgress {
                project,
                shard,
                at_ms: now,
                open: c.open,
                held: c.held,
                done: c.done,
                failed: c.failed,
            };
            let signed = Signed::sign(&self.key, &count);
            self.progress.counts.entry(project).or_default().insert(shard, count);
            self.outputs.push_back(Output::Publish(Envelope::Progress(signed)));
        }
    }

    /// Takes in a shard's count: from a member of the shard, at the project's depth, newer
    /// than the one held.
    pub(super) fn apply_progress(
        &mut self,
        s: Signed<ShardProgress>,
        now: u64,
    ) -> Result<(), Reject> {
        let p = super::apply::verified(&s)?;
        let Some(entry) = self.projects.get(&p.project) else {
            return Err(Reject::UnknownProject);
        };
        if p.shard.depth != entry.m.shard_depth {
            // Counted before or after a change of depth: not comparable with the others.
            return Err(Reject::Stale);
        }
        if Shard::of_node(&s.signer().node_id(), p.shard.depth) != p.shard {
            // Only a member holds the shard's items: anyone else's count is made up.
            return Err(Reject::NotHolder);
        }
        self.check_time(p.at_ms, now)?;
        let book = self.progress.counts.entry(p.project).or_default();
        // Counts of an earlier depth (keys sort by depth first) are not comparable: dropped.
        let depth = p.shard.depth;
        let other_depth =
            |s: Option<(&Shard, &ShardProgress)>| s.is_some_and(|(s, _)| s.depth != depth);
        if other_depth(book.first_key_value()) || other_depth(book.last_key_value()) {
            book.retain(|s, _| s.depth == depth);
        }
        if book.get(&p.shard).is_some_and(|old| old.at_ms >= p.at_ms) {
            return Err(Reject::Duplicate);
        }
        book.insert(p.shard, (*p).clone());
        Ok(())
    }

    /// How far a split project is, from the shards' counts and this node's own (`None` for a
    /// whole project, whose items every node holds: [`Engine::counts`] says it).
    pub fn project_progress(&self, project: &ProjectId, now: u64) -> Option<ProjectProgress> {
        let depth = self.projects.get(project)?.m.shard_depth;
        let mine = self.shard_of(project)?;
        let mut out = ProjectProgress { shards: 1 << depth, ..Default::default() };
        let mut add = |c: ItemCounts| {
            out.items.open += c.open;
            out.items.held += c.held;
            out.items.done += c.done;
            out.items.failed += c.failed;
            out.shards_heard += 1;
        };
        add(self.counts(Some(*project)));
        let oldest = now.saturating_sub(PROGRESS_STALE_INTERVALS * progress_interval_ms(depth));
        let heard = self.progress.counts.get(project).into_iter().flatten();
        for (shard, p) in heard {
            if *shard != mine && shard.depth == depth && p.at_ms >= oldest {
                add(ItemCounts { open: p.open, held: p.held, done: p.done, failed: p.failed });
            }
        }
        Some(out)
    }
}
