//! The front half every X12 route shares: who may call it, the media type, the body limit, and the retry of an
//! interchange already answered. A route calls [`receive_x12`] and runs its own flow only on `Ok`; everything else
//! is already the complete answer (problem+json for HTTP-level faults, a TA1 for a reused control number).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::body::{answer_response, media_type, read_body_max};
use super::{CallerContext, Problem, X12_MEDIA_TYPE};
use crate::app::App;
use crate::domain::PartnerRole;
use crate::ports::Key;
use crate::record::{idempotency_key, replay};
use crate::x12::answering::X12Reply;

/// Media types an X12 route accepts (none given counts as X12).
pub const X12_MEDIA_TYPES: &[&str] = &["application/edi-x12", "application/x12", "text/plain", ""];

/// Who may call an X12 route.
#[derive(Debug, Clone, Copy)]
pub struct X12Route {
    /// The partner role the route serves.
    pub role: PartnerRole,
    /// The scope the token must carry.
    pub scope: &'static str,
    /// The idempotency scope of its interchanges (`X12-270`).
    pub idempotency_scope: &'static str,
    /// The largest body taken.
    pub max_bytes: usize,
}

/// An interchange the route should answer.
#[derive(Debug)]
pub struct X12Request {
    /// The body as received.
    pub body: Bytes,
    /// Where the answer is remembered for a retry (sender ISA06 + ISA13), when an ISA could be read.
    pub idempotency_key: Option<Key>,
}

/// An X12 answer (HTTP 200: the acknowledgment is the answer); `replayed` marks a retry's original answer.
pub fn x12_response(body: impl Into<bytes::Bytes>, replayed: bool) -> Response {
    answer_response(StatusCode::OK, X12_MEDIA_TYPE, body, replayed)
}

/// The HTTP answer to an [`X12Reply`]: 200 with the interchange, or 400 problem+json for a body that is not X12.
pub fn x12_reply_response(reply: X12Reply) -> Response {
    match reply {
        X12Reply::Answered { body, replayed } => x12_response(body, replayed),
        X12Reply::NotX12(error) => Problem::bad_request(format!("not an X12 interchange: {error}")).into_response(),
    }
}

/// Checks the caller, media type and size, and answers a retried interchange with its original answer (or TA1 025
/// when its control number came with different content).
pub async fn receive_x12(
    app: &App,
    ctx: &CallerContext,
    route: X12Route,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<X12Request, Response> {
    if ctx.caller.role != route.role || !ctx.caller.has_scope(route.scope) {
        let detail = format!("this route needs a {} token with the {} scope", route.role.as_str(), route.scope);
        return Err(Problem::forbidden(detail).into_response());
    }
    if !X12_MEDIA_TYPES.contains(&media_type(headers).as_str()) {
        return Err(Problem::unsupported_media_type("application/edi-x12 or text/plain").into_response());
    }
    let body = read_body_max(body, route.max_bytes).map_err(IntoResponse::into_response)?;
    let idempotency_key = crate::x12::isa::salvage_fields(&body)
        .map(|f| idempotency_key(ctx, route.idempotency_scope, &format!("{}#{}", f.sender.1, f.control_number)));
    if let Some(key) = &idempotency_key {
        match replay(app, key, &body).await {
            Ok(Some(Ok((rec, bytes)))) => {
                let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
                return Err(answer_response(status, X12_MEDIA_TYPE, bytes, true));
            }
            Ok(Some(Err(()))) => return Err(ta1_answer(app, ctx, &body, "025").await),
            Ok(None) => {}
            Err(e) => return Err(Problem::from_port(&ctx.request_id, &e).into_response()),
        }
    }
    Ok(X12Request { body, idempotency_key })
}

/// A TA1 rejecting the interchange with `note` (025 duplicate control number, 006 unregistered sender), numbered
/// from the partner's counter; 400 when no ISA can be read (nobody to address a TA1 to).
pub async fn ta1_answer(app: &App, ctx: &CallerContext, body: &[u8], note: &str) -> Response {
    let numbers = app.control_numbers().as_ref();
    match crate::control_numbers::ta1_rejection(numbers, &ctx.caller.partner, body, note, app.clock().now()).await {
        Ok(Some(bytes)) => {
            tracing::info!(request_id = %ctx.request_id, ta1 = note, "interchange rejected");
            x12_response(bytes, false)
        }
        Ok(None) => Problem::bad_request("not an X12 interchange").into_response(),
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}
