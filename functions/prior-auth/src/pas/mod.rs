//! Da Vinci PAS 2.2.1: `Claim/$submit` and `Claim/$inquire`.
//!
//! - [`request`]: the request Bundle's rules and what it asks;
//! - [`response`]: response Bundles from a case;
//! - [`flow`]: the service's submission operation (idempotency by Bundle.identifier, updates applied to the
//!   existing case);
//! - [`routes`]: the HTTP handlers.

pub mod flow;
pub mod request;
pub mod response;
pub mod routes;
