//! The node's wall clock, the `now` every engine input is given.
//!
//! Its own module so that the parts that stamp times (the actor, the log hub, the NAT part,
//! the command views) share one clock without importing the actor.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the UNIX epoch: the engine's `now`.
pub fn now_ms() -> u64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    wall.saturating_add_signed(crate::health::test_clock_offset_ms())
}
