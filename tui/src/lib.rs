//! # starling-tui
//!
//! The operator's terminal dashboard, a client of the node's control API. It arrives with the
//! operator-surfaces work; this crate holds its place in the workspace.
