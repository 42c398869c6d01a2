//! Request bodies and answers: the body limit as problem+json, media types, answer responses.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Problem, MAX_BODY_BYTES};

/// Reads a body of at most [`MAX_BODY_BYTES`] (the Lambda payload limit), mapping an over-limit body to 413
/// problem+json.
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    read_body_max(body, MAX_BODY_BYTES)
}

/// Reads a body of at most `limit` bytes; 413 problem+json above it, 400 when it could not be read.
pub fn read_body_max(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Problem> {
    match body {
        Ok(b) if b.len() > limit => Err(Problem::too_large(limit)),
        Ok(b) => Ok(b),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::too_large(limit)),
        Err(e) => Err(Problem::bad_request(e.body_text())),
    }
}

/// The request's media type, lower case, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(crate::domain::payer_data::bare_media_type)
        .unwrap_or_default()
}

/// An answer body with its media type; `replayed` marks the original answer returned to a retried request.
pub fn answer_response(status: StatusCode, content_type: &str, body: impl Into<Bytes>, replayed: bool) -> Response {
    let mut resp = (status, body.into()).into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}
