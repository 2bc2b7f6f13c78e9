//! The event queue: events ordered by simulated time, then by the order they were scheduled.
//!
//! A timing wheel of per-millisecond slots covering the next [`WHEEL_MS`] milliseconds, with
//! an ordered overflow map for events further out. Scheduling into the wheel is an index and a
//! push to the back of that millisecond's slot, so ties keep insertion order without a
//! sequence number and nothing is compared; popping takes from the front of the current slot
//! and steps the cursor over empty ones. An event beyond the window waits in the overflow map
//! and moves into its slot as the window reaches it; every event of a millisecond that was in
//! the overflow was scheduled before any that went straight into the wheel (the window only
//! moves forward), so moving them in first keeps the order. The queue is bounded.

use std::collections::{BTreeMap, VecDeque};

/// Most events pending at once; past this the run stops with an error instead of eating RAM.
pub const EVENTS_PENDING_MAX: usize = 50_000_000;
/// Milliseconds the wheel covers (a power of two).
pub const WHEEL_MS: u64 = 1 << 16;

/// The queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event queue full ({EVENTS_PENDING_MAX} pending events)")]
pub struct QueueFull;

/// A time-ordered queue of `E`.
#[derive(Debug)]
pub struct EventQueue<E> {
    /// Slot `t % WHEEL_MS` holds the events at `t`, for `cursor <= t < cursor + WHEEL_MS`.
    slots: Vec<VecDeque<E>>,
    /// Events at or after `cursor + WHEEL_MS`, by time.
    overflow: BTreeMap<u64, Vec<E>>,
    /// The earliest time that may still hold events; never goes back.
    cursor: u64,
    /// Events in the wheel.
    in_wheel: usize,
    len: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            slots: (0..WHEEL_MS).map(|_| VecDeque::new()).collect(),
            overflow: BTreeMap::new(),
            cursor: 0,
            in_wheel: 0,
            len: 0,
        }
    }
}

fn slot(time: u64) -> usize {
    (time % WHEEL_MS) as usize
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time`, after every event already scheduled for that time. A time
    /// before the last one popped is taken as that time.
    pub fn push(&mut self, time: u64, event: E) -> Result<(), QueueFull> {
        if self.len >= EVENTS_PENDING_MAX {
            return Err(QueueFull);
        }
        let time = time.max(self.cursor);
        if time < self.cursor + WHEEL_MS {
            self.slots[slot(time)].push_back(event);
            self.in_wheel += 1;
        } else {
            self.overflow.entry(time).or_default().push(event);
        }
        self.len += 1;
        Ok(())
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        if self.len == 0 {
            return None;
        }
        loop {
            if let Some(event) = self.slots[slot(self.cursor)].pop_front() {
                self.in_wheel -= 1;
                self.len -= 1;
                return Some((self.cursor, event));
            }
            // Nothing left at the cursor: step on, or jump to the overflow when the wheel is
            // empty, and bring in what the window now reaches.
            self.cursor = match (self.in_wheel, self.overflow.first_key_value()) {
                (0, Some((&t, _))) => t,
                _ => self.cursor + 1,
            };
            while let Some(entry) = self.overflow.first_entry() {
                let t = *entry.key();
                if t >= self.cursor + WHEEL_MS {
                    break;
                }
                let events = entry.remove();
                self.in_wheel += events.len();
                self.slots[slot(t)].extend(events);
            }
        }
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_insertion() {
        let mut q = EventQueue::default();
        q.push(5, 'a').unwrap();
        q.push(1, 'b').unwrap();
        q.push(5, 'c').unwrap();
        q.push(1, 'd').unwrap();
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, vec![(1, 'b'), (1, 'd'), (5, 'a'), (5, 'c')]);
        assert!(q.is_empty());
    }

    #[test]
    fn far_events_keep_their_order_as_the_window_reaches_them() {
        let mut q = EventQueue::default();
        let far = 3 * WHEEL_MS + 7;
        q.push(far, 1).unwrap();
        q.push(far + WHEEL_MS, 5).unwrap();
        q.push(10, 0).unwrap();
        q.push(far, 2).unwrap();
        assert_eq!(q.pop(), Some((10, 0)));
        // The window reaches `far` only later: pushes for it now go to the overflow too.
        q.push(far, 3).unwrap();
        q.push(far - WHEEL_MS + 1, 9).unwrap();
        assert_eq!(q.pop(), Some((far - WHEEL_MS + 1, 9)));
        // Now `far` is inside the window: a new push there comes after the earlier three.
        q.push(far, 4).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, vec![(far, 1), (far, 2), (far, 3), (far, 4), (far + WHEEL_MS, 5)]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn matches_a_sorted_reference_on_random_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut q = EventQueue::default();
        let mut reference = std::collections::BTreeMap::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for _ in 0..20_000 {
            if rng.random_bool(0.55) {
                let at = now + rng.random_range(0..3 * WHEEL_MS);
                q.push(at, seq).unwrap();
                reference.insert((at, seq), ());
                seq += 1;
            } else if let Some((t, e)) = q.pop() {
                let ((rt, re), ()) = reference.pop_first().unwrap();
                assert_eq!((t, e), (rt, re));
                now = t;
            }
        }
        while let Some((t, e)) = q.pop() {
            assert_eq!(reference.pop_first().unwrap().0, (t, e));
        }
        assert!(reference.is_empty());
    }
}
