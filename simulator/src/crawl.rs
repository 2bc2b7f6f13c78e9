//! The crawl driver of scenarios with a `[hosts]` table: what the node's crawler and lane gate
//! (`node/src/crawl/lanes.rs`) do, in virtual time, and the site checks.
//!
//! A chunk started here puts its URLs in the node's per-host slots. For each host with URLs
//! the driver says so to the engine (`Input::WantLane`), fetches only under a started lane
//! (`Engine::may_fetch`) or in the drain of one it gave back early, paced by the slot's bucket,
//! and says it no longer wants the lane once no URL of the host is left (or, as the node does,
//! once the URLs left fit in the drain). A 429 holds the node off the host and goes to the
//! engine (`Input::HostRefused`); a `HostCooldown` from the engine holds it off too. A chunk is
//! done (`WorkDone`) when its last URL is fetched. As the node's actor does, the driver tells
//! the engine how many hosts with URLs here wait on a lane held elsewhere or on a cooldown
//! (`Input::LaneBlocked`) whenever that changes, so held chunks waiting for busy hosts leave
//! their slots to other work. Under node scope there are no lanes: every node fetches at the
//! full rate, which is the bug lanes fix.
//!
//! Every request is counted at its [`Site`](crate::hosts::Site): the most in any second
//! against the rate plus burst, requests inside a `Retry-After` window past the stated
//! margin, and how many engines let their node fetch from the host at that moment. In a
//! settled mesh each is a violation, unless the scenario expects the site to be overrun.

use starling_protocol::engine::LANE_LEASE_MS;
use starling_protocol::{Input, Output};

use crate::hosts::{Answer, Grant, Hosts, Landing};
use crate::world::{Event, ViolationKind, World, node_clock, sim_time};

/// How long a slot blocked for a reason the driver cannot see waits before looking again.
const RECHECK_MS: u64 = 100;

impl World {
    fn hosts_mut(&mut self) -> Option<&mut Hosts> {
        self.hosts.as_deref_mut()
    }

    /// Node `n` started chunk `idx`: its URLs go into the slots of their hosts.
    pub(crate) fn crawl_start(&mut self, n: u32, idx: u32, token: u64, epoch: u32) {
        let Some(h) = self.hosts_mut() else { return };
        let Some(urls) = h.chunk_hosts.get(idx as usize).cloned() else { return };
        let left: Vec<u32> = (0..urls.len() as u32).collect();
        h.nodes[n as usize].chunks.insert(idx, crate::hosts::Chunk { token, epoch, left });
        for host in &urls {
            h.slot(n, *host).pending += 1;
        }
        let mut hosts = urls;
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            self.poke(n, host, self.now);
        }
    }

    /// Node `n` no longer runs chunk `idx` (done, lost, cancelled or crashed): its URLs left
    /// leave the slots.
    pub(crate) fn crawl_stop(&mut self, n: u32, idx: u32) {
        let Some(h) = self.hosts_mut() else { return };
        let Some(chunk) = h.nodes[n as usize].chunks.remove(&idx) else { return };
        let mut hosts: Vec<u32> =
            chunk.left.iter().map(|j| h.chunk_hosts[idx as usize][*j as usize]).collect();
        for host in &hosts {
            let slot = h.slot(n, *host);
            slot.pending = slot.pending.saturating_sub(1);
        }
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            self.poke(n, host, self.now);
        }
    }

    /// Node `n` goes down: a crash leaves each host it fetched from idle until another node
    /// takes over (timed from here); its crawl state is gone either way.
    pub(crate) fn crawl_down(&mut self, n: u32, crash: bool) {
        let now = self.now;
        let others_want = |h: &Hosts, host: u32| {
            h.nodes.iter().enumerate().any(|(m, nh)| {
                m != n as usize && nh.slots.get(&host).is_some_and(|s| s.pending > 0)
            })
        };
        let Some(h) = self.hosts_mut() else { return };
        let fetching: Vec<u32> = h.nodes[n as usize]
            .slots
            .iter()
            .filter(|(_, s)| {
                s.pending > 0 && matches!(s.grant, Grant::Held | Grant::Draining { .. })
            })
            .map(|(host, _)| *host)
            .collect();
        if crash {
            for host in fetching {
                if others_want(h, host) && h.sites[host as usize].death.is_none() {
                    h.sites[host as usize].death = Some(now);
                }
            }
        }
        h.nodes[n as usize] = crate::hosts::NodeHosts::default();
    }

    /// An engine output about lanes; `true` if it was one (and is handled).
    pub(crate) fn crawl_output(&mut self, n: u32, o: &Output) -> bool {
        let Some(h) = self.hosts.as_deref() else { return false };
        match o {
            Output::StartWork { item, .. } => {
                let Some(&host) = h.lane_of.get(item) else { return false };
                let node = &self.nodes[n as usize];
                let after_another =
                    node.engine.as_ref().is_none_or(|e| e.lane_follows_another(item));
                self.lane_started(n, host, after_another);
                true
            }
            Output::CancelWork { item, .. } => {
                let Some(&host) = h.lane_of.get(item) else { return false };
                let slot = self.hosts_mut().map(|h| h.slot(n, host));
                if let Some(slot) = slot
                    && slot.grant == Grant::Held
                {
                    slot.grant = Grant::Waiting;
                }
                self.poke(n, host, self.now);
                true
            }
            Output::HostCooldown { project, host, until_ms } => {
                let Some(&k) = h.by_name.get(host).filter(|_| *project == h.project) else {
                    return true;
                };
                let until = sim_time(*until_ms, self.nodes[n as usize].clock_offset_ms);
                if let Some(h) = self.hosts_mut() {
                    let slot = h.slot(n, k);
                    slot.cooldown_until = slot.cooldown_until.max(until);
                }
                self.poke(n, k, self.now);
                true
            }
            _ => false,
        }
    }

    /// The engine started a lane of `host` here: fetch under it, its bucket emptied first if
    /// the hold follows another node's (`Engine::lane_follows_another`); a lane nothing here
    /// wants (resumed after a restart) is given back.
    fn lane_started(&mut self, n: u32, host: u32, after_another: bool) {
        let now = self.now;
        // Claimed with a chunk that has not started here yet: kept for it.
        let ahead = self.hosts.as_deref().is_some_and(|h| {
            self.nodes[n as usize]
                .engine
                .as_ref()
                .is_some_and(|e| e.lane_wanted_here(&h.project, &h.names[host as usize]))
        });
        let Some(h) = self.hosts_mut() else { return };
        let slot = h.slot(n, host);
        if slot.wanted || ahead {
            slot.grant = Grant::Held;
            if after_another {
                slot.bucket.empty(now);
            }
        } else {
            // Told at the next look: `wanted` false and the engine holding it differ.
            slot.wanted = true;
        }
        self.poke(n, host, now);
    }

    /// Arms node `n`'s look at `host` at `at` (the earlier one wins).
    fn poke(&mut self, n: u32, host: u32, at: u64) {
        let inc = self.nodes[n as usize].inc;
        if !self.nodes[n as usize].up() {
            return;
        }
        let Some(h) = self.hosts_mut() else { return };
        let slot = h.slot(n, host);
        if slot.fetch_at.is_some_and(|t| t <= at) {
            return;
        }
        slot.fetch_at = Some(at);
        self.push(at, Event::Fetch { node: n, inc, host });
    }

    /// A `Fetch` event: node `n` looks at `host`, fetches if it may, and arms its next look.
    pub(crate) fn on_fetch(&mut self, n: u32, inc: u32, host: u32) {
        let now = self.now;
        let node = &self.nodes[n as usize];
        if node.inc != inc || !node.up() {
            return;
        }
        let Some(h) = self.hosts_mut() else { return };
        let slot = h.slot(n, host);
        if slot.fetch_at != Some(now) {
            return;
        }
        slot.fetch_at = None;
        if let Grant::Draining { until } = slot.grant
            && until <= now
        {
            slot.grant = Grant::Waiting;
        }
        self.tell_want(n, host);
        if self.gate_open(n, host) {
            let Some(h) = self.hosts_mut() else { return };
            let slot = h.slot(n, host);
            if slot.pending > 0 && slot.cooldown_until <= now && slot.bucket.take(now) {
                self.fetch(n, host);
                self.tell_want(n, host);
            }
        }
        self.arm_next(n, host);
        self.tell_blocked(n);
    }

    /// Tells node `n`'s engine how many of its hosts wait on a lane held elsewhere or on a
    /// cooldown, and how many of its chunks are down to their last URLs
    /// (`Input::LaneBlocked`), if that changed: the node's `tell_blocked`. Every change to a
    /// slot or a chunk pokes it, so this runs after each (at the slot's next look).
    fn tell_blocked(&mut self, n: u32) {
        let now = self.now;
        let Some(h) = self.hosts_mut() else { return };
        let finishing = |idx: u32, c: &crate::hosts::Chunk| {
            let hosts = &h.chunk_hosts[idx as usize];
            let first = c.left.first().map(|j| hosts[*j as usize]);
            let one_host = c.left.iter().all(|j| Some(hosts[*j as usize]) == first);
            h.chunk_finishing(if one_host { 1 } else { 2 }, c.left.len() as u32)
        };
        let nh = &h.nodes[n as usize];
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let blocked = count(nh.slots.values().filter(|s| s.blocked(now)).count());
        let finishing = count(nh.chunks.iter().filter(|(idx, c)| finishing(**idx, c)).count());
        let nh = &mut h.nodes[n as usize];
        if (blocked, finishing) == nh.blocked_told {
            return;
        }
        nh.blocked_told = (blocked, finishing);
        self.drive(n, Input::LaneBlocked { blocked, finishing });
    }

    /// Tells the engine whether node `n` wants a lane of `host`, if that changed: it does while
    /// URLs of the host are left here beyond what the drain of a lane it gave back sends.
    fn tell_want(&mut self, n: u32, host: u32) {
        let now = self.now;
        let Some(h) = self.hosts_mut() else { return };
        if !h.mesh() {
            return;
        }
        let rate = h.policy.per_holder_milli();
        let slot = h.slot(n, host);
        let draining = matches!(slot.grant, Grant::Draining { .. });
        let want = starling_protocol::engine::lane_wanted(slot.pending, draining, rate);
        if want == slot.wanted {
            return;
        }
        // Giving back: what is left to send goes out within the drain it set (none if done).
        let drain_ms = match slot.grant {
            Grant::Draining { until } => until.saturating_sub(now),
            _ => 0,
        };
        slot.wanted = want;
        if !want && slot.grant == Grant::Held {
            slot.grant = Grant::Waiting;
        }
        let (project, name) = (h.project, h.names[host as usize].clone());
        self.drive(n, Input::WantLane { project, host: name, wanted: want, drain_ms });
    }

    /// Whether node `n` may send `host` a request now, bucket and cooldown aside.
    fn gate_open(&self, n: u32, host: u32) -> bool {
        let Some(h) = self.hosts.as_deref() else { return false };
        let Some(slot) = h.nodes[n as usize].slots.get(&host) else { return false };
        match slot.grant {
            Grant::Ungated => true,
            Grant::Draining { until } => self.now < until,
            Grant::Waiting => false,
            Grant::Held => {
                let node = &self.nodes[n as usize];
                let clock = node_clock(self.now, node.clock_offset_ms);
                node.engine
                    .as_ref()
                    .is_some_and(|e| e.may_fetch(&h.project, &h.names[host as usize], clock))
            }
        }
    }

    /// Arms node `n`'s next look at `host`: its next token, the end of a cooldown or of a
    /// drain; nothing while it waits for a lane (a grant pokes it).
    fn arm_next(&mut self, n: u32, host: u32) {
        let now = self.now;
        let open = self.gate_open(n, host);
        let engine_cooldown = self.engine_cooldown(n, host);
        let Some(h) = self.hosts_mut() else { return };
        let slot = h.slot(n, host);
        if slot.pending == 0 {
            return;
        }
        let drain_end = match slot.grant {
            Grant::Draining { until } => Some(until),
            _ => None,
        };
        let at = match slot.grant {
            Grant::Waiting => return,
            _ if open => slot.bucket.earliest_ms(now).max(slot.cooldown_until),
            // Held, but the engine says not now: its cooldown (or a look shortly).
            Grant::Held => engine_cooldown.max(slot.cooldown_until).max(now + RECHECK_MS),
            _ => slot.cooldown_until.max(now + 1),
        };
        let at = drain_end.map_or(at, |end| at.min(end));
        self.poke(n, host, at);
    }

    /// The cooldown node `n`'s engine keeps for `host`, in sim time (0 if none).
    fn engine_cooldown(&self, n: u32, host: u32) -> u64 {
        let Some(h) = self.hosts.as_deref() else { return 0 };
        let node = &self.nodes[n as usize];
        let until =
            node.engine.as_ref().and_then(|e| e.cooldown_of(&h.project, &h.names[host as usize]));
        until.map_or(0, |t| sim_time(t, node.clock_offset_ms))
    }

    /// Node `n` sends `host` one request for the first URL of it in its chunks, and takes the
    /// answer.
    fn fetch(&mut self, n: u32, host: u32) {
        let now = self.now;
        let settled = self.lanes_settled();
        let holders = self.lane_holders(host);
        let Some(h) = self.hosts_mut() else { return };
        let found = h.nodes[n as usize].chunks.iter().find_map(|(idx, c)| {
            let pos =
                c.left.iter().position(|j| h.chunk_hosts[*idx as usize][*j as usize] == host)?;
            Some((*idx, pos, c.left[pos]))
        });
        let Some((idx, pos, j)) = found else { return };
        // The node's first request to a host asks for its robots.txt, not a URL.
        let robots = h.spec.robots_txt && !h.nodes[n as usize].robots_read.contains(&host);
        let margin = h.spec.cooldown_margin_ms;
        let site = &mut h.sites[host as usize];
        if let Some(death) = site.death.take() {
            h.stats.idle_after_death_ms.push(now - death);
        }
        let site = &mut h.sites[host as usize];
        let in_window = site.count(now, n);
        let landing = site.landing(now, margin);
        let refuse_rate = if host < h.spec.refusing { h.spec.refuse_rate } else { 0.0 };
        let refused = !matches!(landing, Landing::Clear)
            || (refuse_rate > 0.0 && rand::Rng::random_bool(&mut self.rng, refuse_rate));
        let answer = if refused {
            let h = self.hosts_mut().expect("host mode");
            Answer::Refused(h.sites[host as usize].refuse(now, h.spec.retry_after_ms))
        } else {
            Answer::Ok
        };
        if robots {
            self.record("robots", n, host, 0);
        } else {
            self.record("fetch", n, host, u64::from(idx) << 16 | u64::from(j));
        }
        self.judge_request(n, host, in_window, landing, holders, settled);
        let h = self.hosts_mut().expect("host mode");
        h.stats.robots_requests += u64::from(robots);
        match answer {
            Answer::Refused(until) => {
                h.slot(n, host).cooldown_until = until;
                if h.mesh() {
                    let (project, name) = (h.project, h.names[host as usize].clone());
                    let until_ms = node_clock(until, self.nodes[n as usize].clock_offset_ms);
                    self.drive(n, Input::HostRefused { project, host: name, until_ms });
                }
            }
            Answer::Ok if robots => {
                h.nodes[n as usize].robots_read.insert(host);
            }
            Answer::Ok => {
                h.fetched(idx, j, now);
                let quota = h.drain_quota();
                let early = h.spec.early_give_back && h.mesh();
                let chunk = h.nodes[n as usize].chunks.get_mut(&idx).expect("found above");
                chunk.left.swap_remove(pos);
                let done = chunk.left.is_empty().then_some((chunk.token, chunk.epoch));
                let slot = h.slot(n, host);
                slot.pending -= 1;
                if early && slot.grant == Grant::Held && slot.pending > 0 && slot.pending <= quota {
                    let left = slot.pending;
                    let drain = h.drain_for(left);
                    h.slot(n, host).grant = Grant::Draining { until: now + drain };
                    h.stats.lanes_given_back_early += 1;
                }
                if let Some((token, epoch)) = done {
                    self.push(now, Event::WorkDone { node: n, item: idx, token, epoch });
                }
            }
        }
    }

    /// The site checks of one request of node `n` to `host`: the busiest second, a
    /// `Retry-After` window, and how many engines let their node fetch from the host.
    fn judge_request(
        &mut self,
        n: u32,
        host: u32,
        in_window: u64,
        landing: Landing,
        holders: u64,
        settled: bool,
    ) {
        let now = self.now;
        let Some(h) = self.hosts_mut() else { return };
        let expected = h.spec.over_budget_expected;
        let bound = h.spec.window_bound();
        let lanes = u64::from(h.policy.lanes);
        let mesh = h.mesh();
        let name = h.names[host as usize].clone();
        let views =
            if mesh && holders > lanes && settled { self.lane_views(host) } else { String::new() };
        let overlap_bound = LANE_LEASE_MS + self.cfg.skew_margin_ms;
        let up_since = self.nodes[n as usize].up_since;
        let cooldown = self.engine_cooldown(n, host);
        let Some(h) = self.hosts_mut() else { return };
        h.stats.max_lane_holders = h.stats.max_lane_holders.max(holders);
        let mut broken = None;
        if in_window > bound {
            h.stats.windows_over += 1;
            if settled && !expected {
                broken = Some((
                    ViolationKind::SiteRate,
                    format!(
                        "{name} got {in_window} requests in the second to t={now}ms, over rate + burst = {bound}: {}",
                        h.sites[host as usize].recent_senders()
                    ),
                ));
            }
        }
        match landing {
            Landing::Clear => {}
            Landing::InMargin(late) | Landing::Late(late) => {
                let m = h.stats.retry_lateness_max_ms.get_or_insert(0);
                *m = (*m).max(late);
                if let Landing::Late(_) = landing {
                    h.stats.in_retry_late += 1;
                    if !expected && broken.is_none() {
                        broken = Some((
                            ViolationKind::RetryAfter,
                            format!(
                                "node {n} (up since t={up_since}ms, its engine's cooldown until t={cooldown}ms) sent {name} a request at t={now}ms, {late}ms into its Retry-After window (margin {}ms)",
                                h.spec.cooldown_margin_ms
                            ),
                        ));
                    }
                } else {
                    h.stats.in_retry_margin += 1;
                }
            }
        }
        // Two claims of one lane can both stand for a while (as for every item, until the
        // claims meet: a node back from a restart may claim a lane before it has heard of the
        // holder's claim). Counted; a violation only once it outlasts a lease and the skew
        // margin.
        let site = &mut h.sites[host as usize];
        if mesh && holders > lanes {
            h.stats.holders_over += 1;
            let since = *site.overlap_since.get_or_insert(now);
            if since == now {
                h.stats.overlaps += 1;
            }
            let lasted = now - since;
            h.stats.overlap_max_ms = h.stats.overlap_max_ms.max(lasted);
            if lasted > overlap_bound && settled && broken.is_none() {
                broken = Some((
                    ViolationKind::LaneHolders,
                    format!(
                        "{holders} engines let their nodes fetch from {name} at t={now}ms, with {lanes} lane(s), for {lasted}ms: {views}"
                    ),
                ));
            }
        } else {
            site.overlap_since = None;
        }
        if let Some((kind, detail)) = broken {
            self.violate(kind, detail);
        }
    }

    /// What each node that may fetch from `host` thinks of its lanes, for a violation.
    fn lane_views(&self, host: u32) -> String {
        let Some(h) = self.hosts.as_deref() else { return String::new() };
        let name = &h.names[host as usize];
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(e) = n.engine.as_ref() else { continue };
            let now = node_clock(self.now, n.clock_offset_ms);
            if !e.may_fetch(&h.project, name, now) {
                continue;
            }
            let views: Vec<String> = e
                .lanes_of(&h.project, usize::MAX)
                .into_iter()
                .filter(|v| v.host == *name)
                .map(|v| {
                    let holder = v.holder.and_then(|id| self.nodes.iter().position(|m| m.id == id));
                    let lease = v.lease_until_ms.map(|t| sim_time(t, n.clock_offset_ms));
                    format!("lane {} held by {holder:?} until {lease:?}", v.lane)
                })
                .collect();
            out.push(format!("node {i} sees {}", views.join(", ")));
        }
        out.join("; ")
    }

    /// Honest up nodes whose engines let them fetch from `host` now.
    fn lane_holders(&self, host: u32) -> u64 {
        let Some(h) = self.hosts.as_deref().filter(|h| h.mesh()) else { return 0 };
        let name = &h.names[host as usize];
        self.nodes
            .iter()
            .filter(|n| !n.byz)
            .filter_map(|n| Some((n.engine.as_ref()?, node_clock(self.now, n.clock_offset_ms))))
            .filter(|(e, now)| e.may_fetch(&h.project, name, *now))
            .count() as u64
    }

    /// Whether the mesh is settled enough for the site checks to bind: no partition, none
    /// healed within the settle window, clocks within the margin. (A holder cut off keeps
    /// fetching until it hears of its successor, as with every item.)
    fn lanes_settled(&self) -> bool {
        let t = self.faults.topo_changed_at;
        !self.net.partitioned()
            && (t == 0 || self.now >= t + self.settle_ms())
            && !self.s.nodes_spec.skew_beyond_margin
    }

    /// At the end: every URL of every chunk done was fetched.
    pub(crate) fn crawl_final_checks(&mut self) {
        let Some(h) = self.hosts.as_deref() else { return };
        let (never, _, _) = h.url_counts();
        let all_done = self.ledger.done_count == self.ledger.crawl_total;
        if never > 0 && all_done {
            self.violate(
                ViolationKind::LostUrl,
                format!("{never} URLs never fetched, though every chunk is done"),
            );
        }
    }
}
