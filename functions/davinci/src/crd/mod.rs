//! Da Vinci CRD 2.2 over CDS Hooks: discovery, the six hooks, client JWT verification, and the coverage
//! information the payer policy gives.
//!
//! - [`request`]: the hook request, checked; [`orders`]: what it asks about (orders, Coverage, payer, member);
//! - [`client_auth`]: the CDS client's JWT; [`ehr`]: reading missing prefetch from the EHR (when allowed);
//! - [`coverage_information`]: policy outcome → the extension; [`service`]: the answer; [`assertions`]: kept;
//! - [`discovery`]: `GET /cds-services`; [`routes`]: the HTTP handlers.

pub mod assertions;
pub mod client_auth;
pub mod coverage_information;
pub mod discovery;
pub mod ehr;
pub mod orders;
pub mod request;
pub mod routes;
pub mod service;
