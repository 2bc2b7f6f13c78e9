//! Cross-crate tests, in `tests/tests/`: the claim engine's sans-IO contract
//! (`Engine::handle`, `poll_output`, `next_wakeup`) driven directly by a small two-node driver
//! (`engine_contract.rs`), and through the simulator's public API (`simulator_runs.rs`).
//! The node's multi-process end-to-end tests live with the node, in `node/tests/`.
//!
//! Run them with `cargo test -p starling-tests`.
