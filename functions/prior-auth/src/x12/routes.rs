//! `POST /x12/278`: checks the caller and the body, answers a retry at the door, and maps what
//! [`PriorAuthService::answer_278`](crate::service::PriorAuthService::answer_278) replies. X12 answers are HTTP 200
//! (the acknowledgment is the answer); 4xx are for bodies that are not X12 at all.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use exchange_core::domain::PartnerRole;
use exchange_core::http::{receive_x12, x12_reply_response, CallerContext, Problem, X12Route, MAX_BODY_BYTES};

use super::flow::{Reply278, MAX_SETS};
use crate::PriorAuth;

/// `POST /x12/278`.
pub async fn post_278(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = X12Route {
        role: PartnerRole::Provider,
        scope: "prior-auth",
        idempotency_scope: "X12-278",
        max_bytes: MAX_BODY_BYTES,
    };
    let request = match receive_x12(&pa.core, &ctx, route, &headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    match pa.service.answer_278(&ctx, &request.body, request.idempotency_key).await {
        Ok(Reply278::X12(reply)) => x12_reply_response(reply),
        Ok(Reply278::TooManySets) => Problem::bad_request(format!(
            "a real-time 278 interchange carries at most {MAX_SETS} transaction sets; send batches separately"
        ))
        .into_response(),
        Ok(Reply278::ChangedMeanwhile) => {
            Problem::new(StatusCode::CONFLICT, "conflict", "A referenced request changed meanwhile")
                .with_detail("resend the interchange")
                .into_response()
        }
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}
