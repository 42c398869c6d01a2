//! X12 005010X217 278: request interchange in, 278 response (or 999 / TA1) out.
//!
//! - [`request`]: what a validated 278 request set asks;
//! - [`response`]: the 278 response from a case (or from the rejections that stop one);
//! - [`flow`]: the service's 278 operation (idempotent per sender + ISA13; updates, cancellations and status
//!   inquiries applied to the case the request references);
//! - [`routes`]: `POST /x12/278`.

pub mod flow;
pub mod request;
pub mod response;
pub mod routes;
