//! OperationOutcome: the FHIR error answer. Every FHIR route maps its failures through [`FhirError`], so the status
//! code and the issue codes are decided in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::FHIR_JSON;

/// One OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `error`, `warning`, `fatal`, `information`.
    pub severity: &'static str,
    /// FHIR issue-type code (`invalid`, `structure`, `required`, `value`, `not-found`, `conflict`, ...).
    pub code: &'static str,
    /// What is wrong (never PHI: paths, element names, codes).
    pub diagnostics: String,
    /// FHIRPath of the element at fault.
    pub expression: Option<String>,
}

impl Issue {
    /// An error issue.
    pub fn error(code: &'static str, diagnostics: impl Into<String>, expression: Option<String>) -> Self {
        Issue { severity: "error", code, diagnostics: diagnostics.into(), expression }
    }
}

/// Why a FHIR request failed, by the HTTP status it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// 400: the body is not the resource the operation takes, or breaks its rules.
    #[error("invalid request")]
    Invalid(Vec<Issue>),
    /// 422: well-formed, but the business rules (profiles, references) refuse it.
    #[error("unprocessable request")]
    Unprocessable(Vec<Issue>),
    /// 401: the caller's credentials (a CDS Hooks JWT) did not verify.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404 (also for another partner's resource: its existence is not revealed).
    #[error("not found")]
    NotFound(String),
    /// 409.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 413.
    #[error("payload too large")]
    TooLarge(usize),
    /// 415.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 503: a dependency failed; retrying may help.
    #[error("unavailable")]
    Unavailable,
    /// 500: our fault; the body says nothing more.
    #[error("internal error")]
    Internal,
}

impl FhirError {
    /// A single-issue 400.
    pub fn invalid(code: &'static str, diagnostics: impl Into<String>, expression: Option<&str>) -> Self {
        FhirError::Invalid(vec![Issue::error(code, diagnostics, expression.map(str::to_owned))])
    }

    /// A single-issue 422.
    pub fn unprocessable(code: &'static str, diagnostics: impl Into<String>, expression: Option<&str>) -> Self {
        FhirError::Unprocessable(vec![Issue::error(code, diagnostics, expression.map(str::to_owned))])
    }

    /// The answer to a failed dependency: 503 when a retry may help, an opaque 500 otherwise. The cause is
    /// logged with the request id, never sent.
    pub fn from_port(request_id: &str, e: &crate::ports::PortError) -> Self {
        tracing::error!(request_id, error = %e, "dependency failed");
        if e.is_retryable() {
            FhirError::Unavailable
        } else {
            FhirError::Internal
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            FhirError::Invalid(_) => StatusCode::BAD_REQUEST,
            FhirError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FhirError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            FhirError::Forbidden(_) => StatusCode::FORBIDDEN,
            FhirError::NotFound(_) => StatusCode::NOT_FOUND,
            FhirError::Conflict(_) => StatusCode::CONFLICT,
            FhirError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FhirError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FhirError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            FhirError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn issues(&self) -> Vec<Issue> {
        match self {
            FhirError::Invalid(i) | FhirError::Unprocessable(i) => i.clone(),
            FhirError::Unauthorized(d) => vec![Issue::error("login", d.clone(), None)],
            FhirError::Forbidden(d) => vec![Issue::error("forbidden", d.clone(), None)],
            FhirError::NotFound(d) => vec![Issue::error("not-found", d.clone(), None)],
            FhirError::Conflict(d) => vec![Issue::error("conflict", d.clone(), None)],
            FhirError::TooLarge(limit) => {
                vec![Issue::error("too-costly", format!("the body exceeds {limit} bytes"), None)]
            }
            FhirError::UnsupportedMediaType => {
                vec![Issue::error("not-supported", "send application/fhir+json (or application/json)", None)]
            }
            FhirError::Unavailable => {
                vec![Issue::error("transient", "the service is temporarily unavailable; retry later", None)]
            }
            FhirError::Internal => vec![Issue::error("exception", "internal error", None)],
        }
    }

    /// The OperationOutcome resource.
    pub fn operation_outcome(&self) -> Value {
        let issues: Vec<Value> = self
            .issues()
            .into_iter()
            .map(|i| {
                let mut v = json!({ "severity": i.severity, "code": i.code, "diagnostics": i.diagnostics });
                if let Some(e) = i.expression {
                    v["expression"] = json!([e]);
                }
                v
            })
            .collect();
        json!({ "resourceType": "OperationOutcome", "issue": issues })
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.operation_outcome()).unwrap_or_default();
        let mut resp = (self.status(), body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if matches!(self, FhirError::Unauthorized(_)) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, FhirError::Unavailable) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mapping_from_error_to_status_and_outcome() {
        let e = FhirError::unprocessable("invalid", "Bundle.type must be collection", Some("Bundle.type"));
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let oo = e.operation_outcome();
        assert_eq!(oo["issue"][0]["code"], "invalid");
        assert_eq!(oo["issue"][0]["expression"][0], "Bundle.type");
        assert_eq!(FhirError::NotFound("x".into()).status(), StatusCode::NOT_FOUND);
        assert_eq!(FhirError::Unavailable.operation_outcome()["issue"][0]["code"], "transient");
    }
}
