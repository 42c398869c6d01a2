//! Exchange core: everything the Lambda functions share.
//!
//! - [`x12`]: the exchange's own zero-copy X12 tokenizer, envelope checks, implementation-guide tables,
//!   acknowledgments (TA1, 999) and writer.
//! - [`domain`]: validated newtypes (NPI, member id, control numbers), trading partners and payer data.
//! - [`ports`]: the traits the core needs from the world; [`adapters`] implement them (embedded, AWS, in-memory).
//! - [`vault`]: envelope-encrypted document storage over a blob store and the key service.
//! - [`auth`]: bearer tokens signed by the exchange's key, and the caller they name.
//! - [`app`]: the ports a function holds; [`record`]: vaulted request/answer pairs and idempotent replay.
//! - [`fhir`]: OperationOutcome mapping and JSON helpers for the FHIR routes.
//! - [`http`]: the HTTP glue every function shares (problem+json, caller middleware, body limits).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapters;
pub mod app;
pub mod auth;
pub mod commit;
pub mod control_numbers;
pub mod domain;
pub mod fhir;
pub mod http;
pub mod jose;
pub mod ports;
pub mod record;
pub mod telemetry;
pub mod vault;
pub mod x12;
