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
    /// Quantiles of the tail's log-normal factor, sampled by [`Net::tail_ms`].
    tail: Vec<f64>,
}

/// Steps of the tail's quantile table: the table covers the normal distribution out to about
/// ±3.7σ; farther out the latency cap takes over anyway.
const TAIL_STEPS: usize = 8_192;

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
            group: vec![0; nodes],
            blocked: BTreeSet::new(),
            tx_free_at: vec![0; nodes],
            inbound_ms: vec![0; nodes],
            link_salt,
            next_group: 1,
            tail: tail_table(spec.latency_sigma),
            spec,
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
        let depart = self.depart(a, bytes, now);
        if !self.survives(rng, a, b) {
            return None;
        }
        let tail = self.tail_ms(rng);
        let latency = (self.link_min_ms(a, b) + tail).min(self.spec.latency_max_ms);
        let inbound = self.inbound_ms.get(b).copied().unwrap_or(0);
        Some(depart + latency.max(1) + inbound)
    }

    /// Whether one message of `bytes` from `a` to `b` sent at `now` gets through, for a message
    /// whose arrival time does not matter: what [`Net::send`] decides, and the uplink is kept
    /// as busy, but no latency is drawn (one random word fewer).
    pub fn gets_through(
        &mut self,
        rng: &mut ChaCha8Rng,
        a: usize,
        b: usize,
        bytes: usize,
        now: u64,
    ) -> bool {
        self.depart(a, bytes, now);
        self.survives(rng, a, b)
    }

    /// When a message of `bytes` sent by `a` at `now` leaves its uplink (bandwidth model).
    fn depart(&mut self, a: usize, bytes: usize, now: u64) -> u64 {
        if self.spec.bandwidth_bytes_per_ms > 0 {
            let free = self.tx_free_at.get(a).copied().unwrap_or(0).max(now);
            let done = free + (bytes as u64).div_ceil(self.spec.bandwidth_bytes_per_ms);
            if let Some(t) = self.tx_free_at.get_mut(a) {
                *t = done;
            }
            done
        } else {
            now
        }
    }

    /// Whether a message from `a` to `b` gets through partitions and loss.
    fn survives(&self, rng: &mut ChaCha8Rng, a: usize, b: usize) -> bool {
        self.reachable(a, b) && !(self.spec.loss > 0.0 && rng.random_bool(self.spec.loss))
    }

    /// One sample of the log-normal tail: `latency_tail_ms · exp(σ·z)`, z standard normal,
    /// drawn by inverse transform from a quantile table with linear interpolation (one random
    /// word; Box-Muller's logarithm, square root, cosine and exponential were a twelfth of a
    /// run's time).
    fn tail_ms(&self, rng: &mut ChaCha8Rng) -> u64 {
        if self.spec.latency_tail_ms <= 0.0 {
            return 0;
        }
        let r: u64 = rng.random();
        let i = (r >> 51) as usize; // 13 bits: a step of the table
        let frac = ((r >> 19) & 0xffff_ffff) as f64 / 4_294_967_296.0;
        let (lo, hi) = (self.tail[i], self.tail[i + 1]);
        let v = self.spec.latency_tail_ms * (lo + (hi - lo) * frac);
        v.min(self.spec.latency_max_ms as f64) as u64
    }
}

/// `exp(σ·z)` at the quantiles `(i + 0.5) / (TAIL_STEPS + 1)` for `i` in `0..=TAIL_STEPS`.
fn tail_table(sigma: f64) -> Vec<f64> {
    (0..=TAIL_STEPS)
        .map(|i| {
            let p = (i as f64 + 0.5) / (TAIL_STEPS as f64 + 1.0);
            (sigma * normal_quantile(p)).exp()
        })
        .collect()
}

/// The standard normal quantile function (Acklam's rational approximation, relative error
/// below 1.2e-9), for `p` in (0, 1).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_normal_quantiles_are_right() {
        for (p, z) in [(0.5, 0.0), (0.975, 1.959_964), (0.841_344_746, 1.0), (0.01, -2.326_348)] {
            assert!((normal_quantile(p) - z).abs() < 1e-5, "{p}: {}", normal_quantile(p));
        }
        assert!((normal_quantile(0.001) + normal_quantile(0.999)).abs() < 1e-9);
    }

    #[test]
    fn the_tail_is_log_normal() {
        let spec = NetworkSpec {
            latency_tail_ms: 100.0,
            latency_sigma: 0.5,
            latency_max_ms: 1_000_000,
            ..NetworkSpec::default()
        };
        let net = Net::new(spec, 2, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 200_000;
        let mut logs: Vec<f64> =
            (0..n).map(|_| ((net.tail_ms(&mut rng) as f64 + 0.5) / 100.0).ln()).collect();
        logs.sort_by(f64::total_cmp);
        let mean = logs.iter().sum::<f64>() / n as f64;
        let sd = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        // ln(v / 100) is normal with mean 0 and σ 0.5 (up to the whole-ms rounding).
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((sd - 0.5).abs() < 0.01, "sd {sd}");
        let q = |p: f64| logs[(p * n as f64) as usize];
        assert!((q(0.975) - 0.5 * 1.96).abs() < 0.03, "97.5th {}", q(0.975));
        assert!((q(0.999) - 0.5 * 3.09).abs() < 0.06, "99.9th {}", q(0.999));
    }

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
