//! Real-time eligibility: `POST /x12/270` (270 → 271 / 999 / TA1) and `POST /eligibility` (JSON), as an AWS Lambda
//! function. [`router`] is the whole HTTP surface; `main.rs` only builds [`App`] and runs it.
//!
//! - [`x12_flow`]: the interchange flow (envelope, guide validation, matching, 271/999 writing);
//! - [`inquiry`]: what a 270 asks; [`matching`]: who it is about and what they have; [`response_271`]: the 271;
//! - [`service`]: the business operations both routes call (answer, keep, replay), over the ports they use;
//! - [`json_api`]: the JSON twin's request and response shapes; [`record`]: the inquiry record.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod inquiry;
pub mod json_api;
pub mod matching;
pub mod record;
pub mod response_271;
pub mod service;
pub mod x12_flow;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use exchange_core::domain::PartnerRole;
use exchange_core::http::{
    receive_x12, require_caller, ta1_answer, x12_response, CallerContext, Problem, X12Request, X12Route, MAX_BODY_BYTES,
};

pub use exchange_core::app::{App, TOKEN_ISSUER};

use service::{Eligibility, EligibilityError, Reply};

/// What the routes share: the app (caller checks, retries answered at the door) and the eligibility service.
#[derive(Debug)]
pub struct Routes {
    app: Arc<App>,
    service: Eligibility,
}

/// The function's routes: `/health` (open), `/x12/270` and `/eligibility` (bearer token required).
pub fn router(app: Arc<App>) -> Router {
    let auth = app.auth().clone();
    let routes = Arc::new(Routes { service: Eligibility::new(&app), app });
    let protected = Router::new()
        .route("/x12/270", post(post_270))
        .route("/eligibility", post(json_api::post_eligibility))
        .route_layer(middleware::from_fn_with_state(auth, require_caller))
        .with_state(routes);
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
    State(routes): State<Arc<Routes>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = X12Route {
        role: PartnerRole::Provider,
        scope: "eligibility",
        idempotency_scope: "X12-270",
        max_bytes: MAX_BODY_BYTES,
    };
    let X12Request { body, idempotency_key } = match receive_x12(&routes.app, &ctx, route, &headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    match routes.service.answer_270(&ctx, &body, idempotency_key).await {
        Ok(Reply::Answered { body, replayed }) => x12_response(body, replayed),
        // The door already answered a reused control number with TA1 025; a race that reuses one lands here.
        Ok(Reply::KeyReused) => ta1_answer(&routes.app, &ctx, &body, "025").await,
        Err(EligibilityError::NotX12(e)) => {
            tracing::info!(request_id = %ctx.request_id, error = %e, "not an X12 interchange");
            Problem::bad_request(format!("not an X12 interchange: {e}")).into_response()
        }
        Err(EligibilityError::Unavailable(e)) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}
