//! # starling-sim
//!
//! A deterministic discrete-event simulator that drives the real `starling-protocol` engine.
