//! Limits that more than one crate enforces or shows, kept in one place so they cannot drift
//! apart: the node refuses a setting past one, and the dashboard stops stepping at it.

/// Largest crawl capacity an operator may set (the node's control API refuses more; the
/// dashboard's `+` key stops here).
pub const CAPACITY_MAX: u16 = 256;

/// Most curator keys a node follows (see [`crate::directory`]): the engine refuses more, and
/// so does the node's control API.
pub const FOLLOWING_MAX: usize = 16;
