//! Faults: scheduled partitions, isolation, heals and crashes; random churn; and lying peers.
//!
//! Liars run the real engine, so they gossip and sync like anyone, but their driver lies on
//! top: claims signed with someone else's key, claims that jump an epoch while the holder's
//! lease runs, receipts for items others hold or have finished (with a bogus result, under a
//! fresh claim of the current epoch or of an earlier one they never held), claims they never
//! work on (their renewals are withheld so the lease runs out), and floods of valid heartbeats.

use rand::Rng;
use starling_protocol::message::{Claim, Presence, Receipt};
use starling_protocol::{Digest, Envelope, Input, ItemState, Roles, Signed};

use crate::scenario::FaultKind;
use crate::world::{Event, World};

impl World {
    /// Called when a fault ends; convergence is timed from the last such moment.
    pub(crate) fn fault_healed(&mut self) {
        if !self.net.partitioned() {
            self.convergence.from = Some(self.now);
        }
    }

    pub(crate) fn on_fault(&mut self, index: u32) {
        let Some(f) = self.s.faults.get(index as usize).cloned() else { return };
        self.faults.one_done();
        let n = self.nodes.len();
        self.stats.faults += 1;
        self.faults.had_fault = true;
        self.record("fault", index, u32::MAX, 0);
        let cut = |split: f64| ((n as f64) * split.clamp(0.0, 1.0)).round() as usize;
        match f.kind {
            FaultKind::Partition { split } => {
                self.net.partition(cut(split), true);
                self.topology_cut();
            }
            FaultKind::OneWay { split } => {
                self.net.partition(cut(split), false);
                self.topology_cut();
            }
            FaultKind::Isolate { node } => {
                if (node as usize) < n {
                    self.net.isolate(node as usize);
                    self.topology_cut();
                }
            }
            FaultKind::Heal => self.heal(),
            FaultKind::Crash { node, down_ms } => {
                if (node as usize) < n {
                    self.take_down(node, false);
                    self.push(self.now + down_ms, Event::Revive { node, fresh: false });
                }
            }
            FaultKind::NodeFault { node, for_ms } => {
                if (node as usize) < n {
                    let until = self.now + for_ms;
                    let was = self.nodes[node as usize].fault_until.replace(until);
                    self.faults.pending += 1;
                    self.push(until, Event::FaultEnd { node });
                    if was.is_none() {
                        self.tell_fault(node, true);
                    }
                }
            }
            FaultKind::Clock { node, offset_ms } => {
                let beyond = offset_ms.unsigned_abs() > self.cfg.skew_margin_ms;
                let now = self.now;
                if let Some(x) = self.nodes.get_mut(node as usize) {
                    x.clock_offset_ms = offset_ms;
                    x.clock_off_since = beyond.then(|| x.clock_off_since.unwrap_or(now));
                }
            }
            FaultKind::Leave { share } => {
                let honest_up = |x: &crate::world::SimNode| x.up() && !x.byz;
                let mut left = self.nodes.iter().filter(|x| honest_up(x)).count();
                let mut stayed = 0;
                for node in 0..n as u32 {
                    if !honest_up(&self.nodes[node as usize]) {
                        continue;
                    }
                    left -= 1;
                    // A mesh that loses every node has nothing left to check: the last one
                    // stays if all others went (only in small runs, where every node may draw
                    // a leave). It still draws, so larger runs keep their traces.
                    let goes = self.rng.random_bool(share) && (left > 0 || stayed > 0);
                    if goes {
                        self.take_down(node, true);
                    } else {
                        stayed += 1;
                    }
                }
            }
            FaultKind::SiteDown { share, for_ms } => {
                self.faults.site_down = Some((share, self.now + for_ms));
            }
        }
    }

    /// The network heals: the mesh regrows, nodes link across the healed cut, and those
    /// linked anew sync from each other, as a node does with each peer it connects to; the
    /// rest pull from a mesh peer.
    fn heal(&mut self) {
        let n = self.nodes.len();
        let before: Vec<u32> = (0..n).map(|i| self.net.component(i)).collect();
        self.net.heal();
        self.faults.topo_changed_at = self.now;
        self.overlay.record_new_links();
        self.mesh_heartbeat(true);
        self.link_across(&before);
        let links = self.overlay.take_new_links();
        let mut linked = vec![false; n];
        for (a, b) in links {
            for (x, y) in [(a, b), (b, a)] {
                linked[x as usize] = true;
                self.start_sync(x, Some(y));
            }
        }
        for m in 0..n as u32 {
            if self.nodes[m as usize].up() && !linked[m as usize] {
                self.start_sync(m, None);
            }
        }
        self.fault_healed();
    }

    /// A partition changed who reaches whom: settledness starts again, and agreement is not
    /// waited for until it heals.
    fn topology_cut(&mut self) {
        self.faults.topo_changed_at = self.now;
        self.convergence.from = None;
    }

    /// A node's own fault ends (the last one, if several overlapped).
    pub(crate) fn on_fault_end(&mut self, n: u32) {
        self.faults.one_done();
        let node = &mut self.nodes[n as usize];
        if node.fault_until.is_some_and(|t| t <= self.now) {
            node.fault_until = None;
            self.tell_fault(n, false);
            self.fault_healed();
        }
    }

    /// What a node does about a fault of its own, as the node's actor does: tells its engine,
    /// which gives its work back and stops claiming until told the fault cleared. Under the
    /// `local_faults_as_failures` sabotage it says nothing.
    pub(crate) fn tell_fault(&mut self, n: u32, fault: bool) {
        if !self.s.sabotage.local_faults_as_failures {
            self.drive(n, Input::LocalFault(fault));
        }
    }

    /// Whether node `n` is inside a fault of its own now.
    pub(crate) fn in_fault(&self, n: u32) -> bool {
        self.nodes[n as usize].fault_until.is_some_and(|t| t > self.now)
    }

    /// Time to the next churn event (exponential gaps).
    pub(crate) fn churn_gap(&mut self) -> u64 {
        let mean = 60_000.0 / self.s.churn.per_min.max(1e-9);
        let u: f64 = self.rng.random::<f64>();
        (-(1.0 - u).ln() * mean).max(1.0) as u64
    }

    pub(crate) fn on_churn(&mut self) {
        let c = self.s.churn.clone();
        if c.until_ms > 0 && self.now > c.until_ms {
            return;
        }
        let n = self.nodes.len();
        let down = self.nodes.iter().filter(|x| !x.up()).count();
        if (down as f64) < (n as f64) * c.down_max_share {
            let victim = self.rng.random_range(0..n) as u32;
            let node = &self.nodes[victim as usize];
            if node.up() && !node.byz {
                let crash = self.rng.random_bool(c.crash_share.clamp(0.0, 1.0));
                self.take_down(victim, !crash);
                self.push(self.now + c.downtime_ms, Event::Revive { node: victim, fresh: !crash });
            }
        }
        let at = self.now + self.churn_gap();
        self.push(at, Event::Churn);
    }

    /// One lie from liar `n`.
    pub(crate) fn on_liar(&mut self, n: u32, inc: u32) {
        let node = &self.nodes[n as usize];
        if node.inc != inc || !node.up() {
            return;
        }
        let interval = self.s.byzantine.action_interval_ms.max(1);
        self.push(self.now + interval, Event::Liar { node: n, inc });
        let Some(lie) = self.pick_lie() else { return };
        let Some(target) = self.pick_target(n, lie) else { return };
        let Some(env) = self.lie_envelope(n, lie, target) else { return };
        self.record("lie", n, lie as u32, 0);
        self.publish(n, env);
    }

    /// One of the lies the scenario allows, drawn at random; `None` if it allows none.
    fn pick_lie(&mut self) -> Option<Lie> {
        let b = &self.s.byzantine;
        let lies: Vec<Lie> = [
            (b.forge, Lie::Forge),
            (b.epoch_break, Lie::EpochBreak),
            (b.false_receipt, Lie::FalseReceipt),
        ]
        .into_iter()
        .filter_map(|(on, lie)| on.then_some(lie))
        .collect();
        if lies.is_empty() {
            return None;
        }
        Some(lies[self.rng.random_range(0..lies.len())])
    }

    /// An item someone else holds (or, for a false receipt, has finished) in liar `n`'s view,
    /// drawn at random.
    fn pick_target(&mut self, n: u32, lie: Lie) -> Option<Target> {
        let me = self.nodes[n as usize].id;
        let engine = self.nodes[n as usize].engine.as_ref()?;
        // Receipts are forged for finished items too (to overwrite their result).
        let targets: Vec<_> = engine
            .items()
            .filter_map(|(item, _, st)| match st {
                ItemState::Held { holder, epoch, lease_until_ms, .. } if holder != me => {
                    Some(Target { item, holder, epoch, lease_until: Some(lease_until_ms) })
                }
                ItemState::Done { holder, epoch, .. }
                    if holder != me && lie == Lie::FalseReceipt =>
                {
                    Some(Target { item, holder, epoch, lease_until: None })
                }
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return None;
        }
        Some(targets[self.rng.random_range(0..targets.len())])
    }

    /// The envelope of one lie by liar `n` about `target`, signed at `n`'s clock.
    fn lie_envelope(&mut self, n: u32, lie: Lie, target: Target) -> Option<Envelope> {
        let Target { item, holder, epoch, lease_until } = target;
        let lease_until = lease_until.or((lie == Lie::FalseReceipt).then_some(0))?;
        let t = crate::world::node_clock(self.now, self.nodes[n as usize].clock_offset_ms);
        let key = &self.nodes[n as usize].key;
        let lease = self.s.lease_ms;
        let env = match lie {
            Lie::Forge => {
                let c = Claim {
                    item,
                    epoch: epoch + 1,
                    at_ms: t,
                    lease_until_ms: t + lease,
                    since_ms: t,
                    proof: None,
                };
                Envelope::Claim(forge_signer(&Signed::sign(key, &c), holder.as_bytes())?)
            }
            Lie::EpochBreak => {
                let at = t.min(lease_until.saturating_sub(1));
                let c = Claim {
                    item,
                    epoch: epoch + 1,
                    at_ms: at,
                    lease_until_ms: at + lease,
                    since_ms: at,
                    proof: None,
                };
                Envelope::Claim(Signed::sign(key, &c))
            }
            Lie::FalseReceipt => {
                // A brand-new claim inside the receipt: at the epoch held or finished, or at an
                // earlier one the liar never held (the fencing attack).
                let epoch = if epoch > 1 && self.rng.random_bool(0.5) { epoch - 1 } else { epoch };
                let since_ms = if self.s.byzantine.backdate { 0 } else { t };
                let c = Claim {
                    item,
                    epoch,
                    at_ms: t,
                    lease_until_ms: t + lease,
                    since_ms,
                    proof: None,
                };
                let r = Receipt {
                    claim: Signed::sign(key, &c),
                    result: Digest::of(b"bogus"),
                    size: 1,
                    ok: 1,
                    failed: 0,
                    at_ms: t,
                    parts: Vec::new(),
                };
                Envelope::Receipt(Signed::sign(key, &r))
            }
        };
        Some(env)
    }

    /// One flood heartbeat from liar `n`.
    pub(crate) fn on_flood(&mut self, n: u32, inc: u32) {
        let rate = self.s.byzantine.flood_per_s;
        let node = &mut self.nodes[n as usize];
        if node.inc != inc || node.engine.is_none() || rate == 0 {
            return;
        }
        let t = crate::world::node_clock(self.now, node.clock_offset_ms);
        node.flood_seq = node.flood_seq.max(t * 1_000) + 1;
        let p = Presence {
            seq: node.flood_seq,
            at_ms: t,
            capacity: 64,
            free: 64,
            roles: Roles::CRAWL,
            projects: Vec::new(),
        };
        let env = Envelope::Presence(Signed::sign(&node.key, &p));
        self.publish(n, env);
        self.push(self.now + (1_000 / u64::from(rate)).max(1), Event::Flood { node: n, inc });
    }
}

/// The lies a liar tells, numbered as the trace records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lie {
    /// A claim of the next epoch signed with its key but naming the holder as signer.
    Forge = 0,
    /// A claim of the next epoch while the holder's lease runs.
    EpochBreak = 1,
    /// A receipt with a bogus result under a fresh claim.
    FalseReceipt = 2,
}

/// An item a lie is about, as the liar's engine sees it.
#[derive(Debug, Clone, Copy)]
struct Target {
    item: starling_protocol::ItemId,
    holder: starling_protocol::NodeId,
    epoch: u32,
    /// The holder's lease end; `None` for a finished item.
    lease_until: Option<u64>,
}

/// The same signed value with its signer replaced by `victim`, so the signature no longer
/// matches: a forgery. Goes through JSON because `Signed` keeps its fields private.
fn forge_signer<T: starling_protocol::Signable>(
    s: &Signed<T>,
    victim: &[u8; 32],
) -> Option<Signed<T>> {
    let mut v = serde_json::to_value(s).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("signer".into(), serde_json::Value::from(victim.to_vec()));
    serde_json::from_value(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::engine::test_keypair;

    #[test]
    fn forged_claims_fail_verification() {
        let key = test_keypair(1);
        let victim = test_keypair(2);
        let c = Claim {
            item: starling_protocol::ItemId([7; 32]),
            epoch: 1,
            at_ms: 1,
            lease_until_ms: 9,
            since_ms: 1,
            proof: None,
        };
        let s = Signed::sign(&key, &c);
        assert!(s.verify().is_ok());
        let f = forge_signer(&s, victim.public().as_bytes()).expect("forgery builds");
        assert_eq!(f.signer(), victim.public());
        assert!(f.verify().is_err());
    }
}
