//! The network model: per-link latency with a long tail, loss, optional uplink bandwidth, and
//! partitions.
//!
//! Every node sits in a group; nodes of one group form one connected component. A symmetric
//! partition or an isolated node gives nodes different groups and blocks traffic between them
//! both ways; a one-way partition blocks one direction only (the two sides are then separate
//! components for the safety checker, since neither can learn everything from the other).

use std::collections::BTreeSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::NetworkSpec;

/// The links between simulated nodes.
#[derive(Debug)]
pub struct Net {
    spec: NetworkSpec,
    /// Component (group) of each node.
    group: Vec<u32>,
    /// Directed group pairs whose traffic is dropped.
    blocked: BTreeSet<(u32, u32)>,
    /// When each node's uplink is next free (bandwidth model).
    tx_free_at: Vec<u64>,
    /// Extra inbound delay per node (slow nodes).
    inbound_ms: Vec<u64>,
    /// Seed for the fixed per-link minimum latencies.
    link_salt: u64,
    next_group: u32,
}

/// A cheap, well-mixed 64-bit hash (splitmix64 finaliser).
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Net {
    /// A fully connected network of `nodes`.
    pub fn new(spec: NetworkSpec, nodes: usize, link_salt: u64) -> Self {
        Self {
            spec,
            group: vec![0; nodes],
            blocked: BTreeSet::new(),
            tx_free_at: vec![0; nodes],
            inbound_ms: vec![0; nodes],
            link_salt,
            next_group: 1,
        }
    }

    /// Room for one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        self.group.push(0);
        self.tx_free_at.push(0);
        self.inbound_ms.push(0);
        self.group.len() - 1
    }

    /// Marks a node as slow to take in messages.
    pub fn set_inbound_delay(&mut self, node: usize, ms: u64) {
        if let Some(d) = self.inbound_ms.get_mut(node) {
            *d = ms;
        }
    }

    /// The component of a node.
    pub fn component(&self, node: usize) -> u32 {
        self.group.get(node).copied().unwrap_or(u32::MAX)
    }

    /// Whether traffic from `a` reaches `b` (ignoring loss).
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        let (ga, gb) = (self.component(a), self.component(b));
        ga == gb || !self.blocked.contains(&(ga, gb))
    }

    /// Splits nodes below `cut` from the rest; `both_ways` blocks both directions.
    pub fn partition(&mut self, cut: usize, both_ways: bool) {
        let (a, b) = (self.next_group, self.next_group + 1);
        self.next_group += 2;
        for (i, g) in self.group.iter_mut().enumerate() {
            *g = if i < cut { a } else { b };
        }
        self.blocked.clear();
        self.blocked.insert((a, b));
        if both_ways {
            self.blocked.insert((b, a));
        }
    }

    /// Cuts one node off from everyone, both ways.
    pub fn isolate(&mut self, node: usize) {
        let g = self.next_group;
        self.next_group += 1;
        let groups: BTreeSet<u32> = self.group.iter().copied().collect();
        for other in groups {
            self.blocked.insert((g, other));
            self.blocked.insert((other, g));
        }
        if let Some(x) = self.group.get_mut(node) {
            *x = g;
        }
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.blocked.clear();
    }

    /// Whether any partition is in force.
    pub fn partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// The fixed minimum latency of the link between `a` and `b` (same both ways).
    fn link_min_ms(&self, a: usize, b: usize) -> u64 {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let h = mix64(self.link_salt ^ ((lo as u64) << 32 | hi as u64));
        let factor = 0.5 + (h % 1_000) as f64 / 1_000.0;
        (self.spec.latency_min_ms as f64 * factor) as u64
    }

    /// Decides the fate of one message of `bytes` from `a` to `b` sent at `now`: `None` if it is
    /// lost or blocked, else its arrival time.
    pub fn send(
        &mut self,
        rng: &mut ChaCha8Rng,
        a: usize,
        b: usize,
        bytes: usize,
        now: u64,
    ) -> Option<u64> {
        let depart = if self.spec.bandwidth_bytes_per_ms > 0 {
            let free = self.tx_free_at.get(a).copied().unwrap_or(0).max(now);
            let done = free + (bytes as u64).div_ceil(self.spec.bandwidth_bytes_per_ms);
            if let Some(t) = self.tx_free_at.get_mut(a) {
                *t = done;
            }
            done
        } else {
            now
        };
        if !self.reachable(a, b) {
            return None;
        }
        if self.spec.loss > 0.0 && rng.random_bool(self.spec.loss) {
            return None;
        }
        let tail = self.tail_ms(rng);
        let latency = (self.link_min_ms(a, b) + tail).min(self.spec.latency_max_ms);
        let inbound = self.inbound_ms.get(b).copied().unwrap_or(0);
        Some(depart + latency.max(1) + inbound)
    }

    /// One sample of the log-normal tail.
    fn tail_ms(&self, rng: &mut ChaCha8Rng) -> u64 {
        if self.spec.latency_tail_ms <= 0.0 {
            return 0;
        }
        // Box-Muller; u1 in (0, 1] so the log is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = self.spec.latency_tail_ms * (self.spec.latency_sigma * z).exp();
        v.min(self.spec.latency_max_ms as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_block_and_heal() {
        let mut net = Net::new(NetworkSpec::default(), 4, 1);
        assert!(net.reachable(0, 3));
        net.partition(2, false);
        assert!(!net.reachable(0, 3));
        assert!(net.reachable(3, 0));
        assert!(net.reachable(0, 1));
        net.heal();
        net.isolate(1);
        assert!(!net.reachable(0, 1) && !net.reachable(1, 2));
        assert!(net.reachable(0, 2));
    }

    #[test]
    fn latency_has_floor_and_cap() {
        let mut net = Net::new(NetworkSpec::default(), 2, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..1000 {
            let t = net.send(&mut rng, 0, 1, 100, 0).unwrap();
            assert!((10..=10_000).contains(&t), "{t}");
        }
    }
}
