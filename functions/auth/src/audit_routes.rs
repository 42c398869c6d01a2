//! The audit trail's admin routes (role admin, scope `admin`): a partner's or a member's history as FHIR
//! AuditEvents, and the verification of the trail against its signed digests. Anyone else gets 403 and nothing of
//! the trail.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use exchange_core::domain::audit::as_audit_event;
use exchange_core::domain::PartnerRole;
use exchange_core::http::{CallerContext, Problem};
use serde::Deserialize;
use serde_json::json;

use crate::Auth;

/// Most records one export answers.
pub const MAX_EXPORT: usize = 1000;

/// `GET /admin/audit` query.
#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    /// A partner id: its history.
    pub partner: Option<String>,
    /// A member id: every record naming the member.
    pub member: Option<String>,
    /// At most this many records (default and cap [`MAX_EXPORT`]).
    pub limit: Option<usize>,
}

/// 403 unless the caller is the admin with the `admin` scope.
pub fn require_admin(ctx: &CallerContext) -> Result<(), Problem> {
    if ctx.caller.role == PartnerRole::Admin && ctx.caller.has_scope("admin") {
        Ok(())
    } else {
        Err(Problem::forbidden("the audit trail is for the admin scope"))
    }
}

/// `GET /admin/audit?partner=ID` or `?member=ID`: a `searchset` Bundle of AuditEvents, oldest first.
pub async fn export(
    State(auth): State<Arc<Auth>>,
    ctx: CallerContext,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(p) = require_admin(&ctx) {
        return p.into_response();
    }
    let Ok(Query(q)) = query else {
        return Problem::bad_request("query: partner=ID or member=ID, limit=N").into_response();
    };
    let limit = q.limit.unwrap_or(MAX_EXPORT);
    if !(1..=MAX_EXPORT).contains(&limit) {
        return Problem::bad_request(format!("limit must be between 1 and {MAX_EXPORT}")).into_response();
    }
    let records = match (&q.partner, &q.member) {
        (Some(partner), None) => auth.core.audit().partner_history(partner, limit).await,
        (None, Some(member)) => auth.core.audit().member_history(member, limit).await,
        _ => return Problem::bad_request("give exactly one of partner and member").into_response(),
    };
    match records {
        Ok(records) => {
            let entries: Vec<_> = records.iter().map(|r| json!({"resource": as_audit_event(r)})).collect();
            let mut resp = Json(json!({
                "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries
            }))
            .into_response();
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(exchange_core::fhir::FHIR_JSON),
            );
            resp
        }
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}

/// `GET /admin/audit/verify`: checks every record against the signed digests and every digest against its
/// signature and the one before ([`exchange_core::domain::audit::verify::verify`]): `intact` false with each problem
/// (kind, partner, digest, record); `unsealed` counts records the sealer has not reached yet.
pub async fn verify_trail(State(auth): State<Arc<Auth>>, ctx: CallerContext) -> Response {
    if let Err(p) = require_admin(&ctx) {
        return p.into_response();
    }
    // The digests of every registered partner are walked even if a progress record was removed.
    let partners: Vec<String> = match auth.core.repo().current().await {
        Ok(Some(c)) => c.partners.iter().map(|p| p.as_str().to_owned()).collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Problem::from_port(&ctx.request_id, &e).into_response(),
    };
    let report = match auth.core.sealer() {
        Ok(sealer) => sealer.verify_with_partners(auth.core.clock().now(), &partners).await,
        Err(e) => Err(e),
    };
    match report {
        Ok(report) => {
            let mut body = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
            body["intact"] = json!(report.is_intact());
            Json(body).into_response()
        }
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}
