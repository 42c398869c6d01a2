//! Real-time eligibility: `POST /x12/270` (270 → 271 / 999 / TA1) and `POST /eligibility` (JSON), as an AWS Lambda
//! function. [`router`] is the whole HTTP surface; `main.rs` only builds [`App`] and runs it.
//!
//! - [`x12_flow`]: the interchange flow (envelope, guide validation, matching, 271/999 writing);
//! - [`inquiry`]: what a 270 asks; [`matching`]: who it is about and what they have; [`response_271`]: the 271;
//! - [`json_api`]: the JSON twin; [`record`]: vaulting, inquiry records, idempotency.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod inquiry;
pub mod json_api;
pub mod matching;
pub mod record;
pub mod response_271;
pub mod x12_flow;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use exchange_core::domain::PartnerRole;
use exchange_core::http::{
    receive_x12, require_caller, x12_response, CallerContext, Problem, X12Request, X12Route, MAX_BODY_BYTES,
    X12_MEDIA_TYPE,
};

pub use exchange_core::app::{App, TOKEN_ISSUER};

use record::InquiryRecord;
use x12_flow::FlowError;

/// The function's routes: `/health` (open), `/x12/270` and `/eligibility` (bearer token required).
pub fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route("/x12/270", post(post_270))
        .route("/eligibility", post(json_api::post_eligibility))
        .route_layer(middleware::from_fn_with_state(app.auth.clone(), require_caller))
        .with_state(app);
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        // Axum's own limit sits above ours so that our handler, not axum, answers 413 as problem+json.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES + 1))
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Eligibility inquiries are made by provider partners; anyone else gets 403 with no data.
pub fn require_provider(ctx: &CallerContext) -> Result<(), Problem> {
    if ctx.caller.role == PartnerRole::Provider && ctx.caller.has_scope("eligibility") {
        Ok(())
    } else {
        Err(Problem::forbidden("eligibility inquiries need a provider token with the eligibility scope"))
    }
}

/// `POST /x12/270`: a 270 interchange in, a 271 interchange out (with a 999 when a set is rejected, or a TA1
/// when the interchange is). X12 answers are HTTP 200: the acknowledgment is the answer; 4xx are for bodies that
/// are not X12 at all.
async fn post_270(
    State(app): State<Arc<App>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let route = X12Route {
        role: PartnerRole::Provider,
        scope: "eligibility",
        idempotency_scope: "X12-270",
        max_bytes: MAX_BODY_BYTES,
    };
    let X12Request { body, idempotency_key: idem_key } = match receive_x12(&app, &ctx, route, &headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };

    let outcome = match x12_flow::answer_interchange(&app, &ctx, &body).await {
        Ok(o) => o,
        Err(FlowError::NotX12(e)) => {
            tracing::info!(request_id = %ctx.request_id, error = %e, "not an X12 interchange");
            return Problem::bad_request(format!("not an X12 interchange: {e}")).into_response();
        }
        Err(FlowError::Unavailable(e)) => return Problem::from_port(&ctx.request_id, &e).into_response(),
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let record = InquiryRecord {
        request_id: ctx.request_id.clone(),
        partner: ctx.caller.partner.as_str().to_owned(),
        channel: "x12".into(),
        inbound_control: outcome.inbound_control.clone(),
        outbound_control: outcome.outbound_control,
        sets: outcome.sets,
        rejected_sets: outcome.rejected_sets,
        aaa_rejections: outcome.aaa_rejections,
        ta1_note: outcome.ta1_note.map(str::to_owned),
        latency_ms,
        request_path: String::new(),
        response_path: String::new(),
        at: String::new(),
    };
    let payer = outcome.payer_id.clone().unwrap_or_else(|| "unknown".into());
    // A TA1-rejected interchange is not remembered for idempotency: the partner will fix and resend it.
    let idem = if outcome.ta1_note.is_none() { idem_key } else { None };
    let retry_key = idem.clone();
    if let Err(e) =
        record::keep(&app, &ctx, "x12/270", &body, &outcome.body, X12_MEDIA_TYPE, 200, &payer, idem, record).await
    {
        if let (exchange_core::ports::PortError::Conflict(_), Some(key)) = (&e, &retry_key) {
            // A concurrent retry of the same interchange won the race: answer with its result.
            if let Ok(Some(Ok((_, bytes)))) = exchange_core::record::replay(&app, key, &body).await {
                return x12_response(bytes, true);
            }
        }
        return Problem::from_port(&ctx.request_id, &e).into_response();
    }
    tracing::info!(
        request_id = %ctx.request_id,
        partner = %ctx.caller.partner,
        isa13 = outcome.inbound_control.as_deref().unwrap_or(""),
        sets = outcome.sets,
        rejected_sets = outcome.rejected_sets,
        aaa = outcome.aaa_rejections,
        ta1 = outcome.ta1_note.unwrap_or(""),
        latency_ms,
        "270 answered"
    );
    x12_response(outcome.body, false)
}
