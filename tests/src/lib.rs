//! Helpers for the workspace-level integration and conformance tests (`tests/tests/*.rs`).
