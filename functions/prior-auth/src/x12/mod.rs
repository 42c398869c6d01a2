//! X12 005010X217 278: request interchange in, 278 response (or 999 / TA1) out.
//!
//! - [`request`]: what a validated 278 request set asks;
//! - [`response`]: the 278 response from a case (or from the rejections that stop one);
//! - [`routes`]: `POST /x12/278` (idempotent per sender + ISA13; updates, cancellations and status inquiries
//!   applied to the case the request references).

pub mod request;
pub mod response;
pub mod routes;
