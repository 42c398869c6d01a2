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
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use exchange_core::http::{
    answer_response, media_type, read_body, require_caller, CallerContext, Problem, MAX_BODY_BYTES, X12_MEDIA_TYPE,
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
    if ctx.caller.role == exchange_core::domain::PartnerRole::Provider && ctx.caller.has_scope("eligibility") {
        Ok(())
    } else {
        Err(Problem::forbidden("eligibility inquiries need a provider token with the eligibility scope"))
    }
}

fn x12_response(status: StatusCode, body: Vec<u8>, replayed: bool) -> Response {
    answer_response(status, X12_MEDIA_TYPE, body, replayed)
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
    if let Err(p) = require_provider(&ctx) {
        return p.into_response();
    }
    let mt = media_type(&headers);
    if !matches!(mt.as_str(), "application/edi-x12" | "text/plain" | "application/x12" | "") {
        return Problem::unsupported_media_type("application/edi-x12 or text/plain").into_response();
    }
    let body = match read_body(body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };

    // A retried interchange (same sender and ISA13 from the same partner) gets the original answer.
    let idem_key = x12_flow::interchange_identity(&body)
        .map(|(sender, isa13)| record::idempotency_key(&ctx, "X12-270", &format!("{sender}#{isa13}")));
    if let Some(key) = &idem_key {
        match record::replay(&app, key, &body).await {
            Ok(Some(Ok((rec, bytes)))) => {
                return x12_response(StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK), bytes, true)
            }
            Ok(Some(Err(()))) => return duplicate_control_number(&app, &ctx, &body).await,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(request_id = %ctx.request_id, error = %e, "idempotency lookup failed");
                return Problem::unavailable().into_response();
            }
        }
    }

    let outcome = match x12_flow::answer_interchange(&app, &ctx, &body).await {
        Ok(o) => o,
        Err(FlowError::NotX12(e)) => {
            tracing::info!(request_id = %ctx.request_id, error = %e, "not an X12 interchange");
            return Problem::bad_request(format!("not an X12 interchange: {e}")).into_response();
        }
        Err(FlowError::Unavailable(e)) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "eligibility unavailable");
            return Problem::unavailable().into_response();
        }
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
    if let Err(e) =
        record::keep(&app, &ctx, "x12/270", &body, &outcome.body, X12_MEDIA_TYPE, 200, &payer, idem, record).await
    {
        if matches!(e, exchange_core::ports::PortError::Conflict(_)) {
            // A concurrent retry of the same interchange won the race: answer with its result.
            if let Some(key) = x12_flow::interchange_identity(&body)
                .map(|(s, n)| record::idempotency_key(&ctx, "X12-270", &format!("{s}#{n}")))
            {
                if let Ok(Some(Ok((_, bytes)))) = record::replay(&app, &key, &body).await {
                    return x12_response(StatusCode::OK, bytes, true);
                }
            }
        }
        tracing::error!(request_id = %ctx.request_id, error = %e, "recording the inquiry failed");
        return Problem::unavailable().into_response();
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
    x12_response(StatusCode::OK, outcome.body, false)
}

/// The same ISA13 reused for a different interchange: TA1 025 (duplicate interchange control number).
async fn duplicate_control_number(app: &App, ctx: &CallerContext, body: &[u8]) -> Response {
    let store = app.store.as_ref();
    match exchange_core::control_numbers::ta1_rejection(store, &ctx.caller.partner, body, "025", app.clock.now()).await
    {
        Ok(Some(bytes)) => {
            tracing::info!(request_id = %ctx.request_id, ta1 = "025", "duplicate interchange control number");
            x12_response(StatusCode::OK, bytes, false)
        }
        Ok(None) => Problem::bad_request("not an X12 interchange").into_response(),
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "control number unavailable");
            Problem::unavailable().into_response()
        }
    }
}
