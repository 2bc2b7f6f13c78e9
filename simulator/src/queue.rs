//! The event queue: events ordered by simulated time, then by the order they were scheduled.
//!
//! A calendar of per-millisecond buckets (`BTreeMap<time, VecDeque>`): scheduling is a map
//! lookup plus a push to the back of that millisecond's bucket, so ties keep insertion order
//! without storing a sequence number, and a million pending events cost one tree node per
//! distinct millisecond rather than a heap entry each. The queue is bounded.

use std::collections::{BTreeMap, VecDeque};

/// Most events pending at once; past this the run stops with an error instead of eating RAM.
pub const EVENTS_PENDING_MAX: usize = 50_000_000;

/// The queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event queue full ({EVENTS_PENDING_MAX} pending events)")]
pub struct QueueFull;

/// A time-ordered queue of `E`.
#[derive(Debug)]
pub struct EventQueue<E> {
    buckets: BTreeMap<u64, VecDeque<E>>,
    len: usize,
    /// Emptied buckets kept for reuse, so steady runs do not allocate per millisecond.
    spare: Vec<VecDeque<E>>,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self { buckets: BTreeMap::new(), len: 0, spare: Vec::new() }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time`, after every event already scheduled for that time.
    pub fn push(&mut self, time: u64, event: E) -> Result<(), QueueFull> {
        if self.len >= EVENTS_PENDING_MAX {
            return Err(QueueFull);
        }
        let spare = &mut self.spare;
        self.buckets
            .entry(time)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push_back(event);
        self.len += 1;
        Ok(())
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let mut entry = self.buckets.first_entry()?;
        let time = *entry.key();
        let event = entry.get_mut().pop_front();
        if entry.get().is_empty() {
            let bucket = entry.remove();
            if self.spare.len() < 1_024 {
                self.spare.push(bucket);
            }
        }
        let event = event?;
        self.len -= 1;
        Some((time, event))
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
}
