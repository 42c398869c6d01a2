//! Eligibility function.
