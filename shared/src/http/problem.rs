//! RFC 9457 problem details: the one place JSON errors are shaped.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem+json answer.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Problem type URI (a stable identifier of the kind of problem).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Explanation of this occurrence (never contains PHI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Per-field errors (JSON pointer and message), for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Whether the same request may succeed later.
    pub retryable: bool,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    /// JSON pointer to the field.
    pub pointer: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error at a JSON pointer.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { pointer: pointer.into(), message: message.into() }
    }
}

impl Problem {
    /// A problem with `status`, a type slug (`invalid-request`) and a title.
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Problem {
            type_uri: format!("https://payer-provider-exchange.invalid/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            retryable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Adds a detail message.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// 400 for a body that cannot be read as the endpoint expects.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "The request is not valid").with_detail(detail)
    }

    /// 401 with the reason.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "A valid bearer token is required").with_detail(detail)
    }

    /// 403: authenticated, but outside the caller's scope.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "The caller may not use this operation").with_detail(detail)
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "The request body is too large")
            .with_detail(format!("the limit is {limit} bytes"))
    }

    /// 415 for a media type the endpoint does not accept.
    pub fn unsupported_media_type(accepted: &str) -> Self {
        Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            .with_detail(format!("send {accepted}"))
    }

    /// 503: a dependency failed; the caller may retry. The cause is logged, not returned.
    pub fn unavailable() -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The service cannot answer now; retry later")
    }

    /// 500 with an opaque body.
    pub fn internal() -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
    }

    /// The answer to a failed dependency: 503 (retryable) when a retry may help, an opaque 500 otherwise. The
    /// cause is logged with the request id, never sent.
    pub fn from_port(request_id: &str, e: &crate::ports::PortError) -> Self {
        tracing::error!(request_id, error = %e, "dependency failed");
        if e.is_retryable() {
            Problem::unavailable()
        } else {
            Problem::internal()
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
