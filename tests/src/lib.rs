//! Cross-crate and multi-process end-to-end tests live in `tests/tests/`.
