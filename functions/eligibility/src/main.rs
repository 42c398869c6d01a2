//! Lambda entry.
fn main() {}
