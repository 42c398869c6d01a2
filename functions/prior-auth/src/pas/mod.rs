//! Da Vinci PAS 2.2.1: `Claim/$submit` and `Claim/$inquire`.
//!
//! - [`request`]: the request Bundle's rules and what it asks;
//! - [`response`]: response Bundles from a case;
//! - [`routes`]: the HTTP handlers (idempotency by Bundle.identifier, updates applied to the existing case).

pub mod request;
pub mod response;
pub mod routes;
