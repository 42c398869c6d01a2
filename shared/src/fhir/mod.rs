//! FHIR glue shared by the FHIR-speaking functions: the one place errors become OperationOutcome answers, and
//! helpers for reading resources as JSON without copying them.

pub mod outcome;

pub use outcome::{FhirError, Issue};

/// Media type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The first `coding` of a CodeableConcept: (system, code).
pub fn first_coding(concept: &serde_json::Value) -> Option<(&str, &str)> {
    let c = concept["coding"].as_array()?.first()?;
    Some((c["system"].as_str().unwrap_or(""), c["code"].as_str()?))
}
