//! Da Vinci DTR 2.x: the payer's forms from the one policy.
//!
//! - [`package`]: `Questionnaire/$questionnaire-package`; [`adaptive`]: `Questionnaire/$next-question`;
//! - [`errors_log`]: `Questionnaire/$log-questionnaire-errors`; [`routes`]: the HTTP handlers.

pub mod adaptive;
pub mod errors_log;
pub mod package;
pub mod routes;
