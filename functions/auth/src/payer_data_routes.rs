//! `PUT /admin/payer-data` (role admin, scope `admin`): replaces the payer data (plans and their policy, members,
//! trading partners with their keys and scopes, forms) with a validated document, the way a deployed exchange
//! registers partners. The whole document is checked first (JSON Schema, then the cross-record rules); a bad one
//! is refused with each problem named by its JSON pointer, never by its content, and nothing changes. A good one is
//! written as a new version and only then made current, so readers never see half of it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use exchange_core::domain::payer_data::{PayerData, PayerDataError};
use exchange_core::http::problem::FieldError;
use exchange_core::http::{read_body, CallerContext, Problem};
use serde_json::json;

use crate::audit_routes::require_admin;
use crate::Auth;

/// `PUT /admin/payer-data`: 200 with the new version and counts; 422 naming each problem; 403 for non-admins.
pub async fn replace(
    State(auth): State<Arc<Auth>>,
    ctx: CallerContext,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(p) = require_admin(&ctx) {
        return p.into_response();
    }
    let bytes = match read_body(body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let data = match PayerData::parse(&bytes) {
        Ok(d) => d,
        Err(PayerDataError::Schema(problems)) => {
            let errors = problems.into_iter().map(|p| FieldError::new("", p)).collect();
            return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-payer-data", "The payer data is refused")
                .with_detail("nothing was loaded")
                .with_errors(errors)
                .into_response();
        }
        Err(e @ (PayerDataError::Json(_) | PayerDataError::Inconsistent(_))) => {
            return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-payer-data", "The payer data is refused")
                .with_detail(format!("{e}; nothing was loaded"))
                .into_response();
        }
        Err(PayerDataError::Store(e)) => return Problem::from_port(&ctx.request_id, &e).into_response(),
    };
    match auth.core.repo().load(&data).await {
        Ok(version) => {
            tracing::info!(request_id = %ctx.request_id, version, partners = data.trading_partners.len(), "payer data loaded");
            Json(json!({
                "version": version,
                "plans": data.plans.len(),
                "members": data.members.len(),
                "tradingPartners": data.trading_partners.len()
            }))
            .into_response()
        }
        Err(PayerDataError::Store(e)) => Problem::from_port(&ctx.request_id, &e).into_response(),
        Err(e) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-payer-data", "The payer data is refused")
            .with_detail(format!("{e}; nothing was loaded"))
            .into_response(),
    }
}
