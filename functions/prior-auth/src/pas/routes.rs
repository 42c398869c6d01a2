//! `POST /fhir/Claim/$submit` (parsed here, answered by [`crate::service::PriorAuthService::submit_pas`]) and
//! `POST /fhir/Claim/$inquire`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{answer_response, media_type, CallerContext, MAX_BODY_BYTES};
use serde_json::{json, Value};

use super::request::{parse_inquiry, parse_submit};
use super::response::{response_bundle, Flavor};
use crate::PriorAuth;

/// A FHIR JSON request body: the bytes as received (kept for audit) and the resource they hold (a Parameters
/// carrying a Bundle is unwrapped).
pub struct FhirBody {
    /// The bytes as received.
    pub raw: Bytes,
    /// The resource.
    pub resource: Value,
}

/// Reads a FHIR JSON body.
pub fn fhir_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<FhirBody, FhirError> {
    let mt = media_type(headers);
    if !matches!(mt.as_str(), "application/fhir+json" | "application/json" | "") {
        return Err(FhirError::UnsupportedMediaType);
    }
    let raw = exchange_core::http::read_body(body).map_err(|p| {
        if p.status == StatusCode::PAYLOAD_TOO_LARGE.as_u16() {
            FhirError::TooLarge(MAX_BODY_BYTES)
        } else {
            FhirError::invalid("structure", p.detail.unwrap_or_default(), None)
        }
    })?;
    let value: Value = serde_json::from_slice(&raw)
        .map_err(|e| FhirError::invalid("structure", format!("the body is not JSON: {e}"), None))?;
    Ok(FhirBody { raw, resource: unwrap_parameters(value) })
}

/// A Parameters resource's Bundle parameter, taken out by value; any other resource as it is.
fn unwrap_parameters(mut value: Value) -> Value {
    if value["resourceType"] == "Parameters" {
        let bundle = value["parameter"]
            .as_array_mut()
            .and_then(|ps| ps.iter_mut().find(|p| p["resource"]["resourceType"] == "Bundle"))
            .map(|p| p["resource"].take());
        if let Some(b) = bundle {
            return b;
        }
    }
    value
}

fn fhir_response(status: StatusCode, body: impl Into<axum::body::Bytes>, replayed: bool) -> Response {
    answer_response(status, FHIR_JSON, body, replayed)
}

/// Only provider organisations with the `prior-auth` scope submit and inquire.
pub fn require_submitter(ctx: &CallerContext) -> Result<(), FhirError> {
    if ctx.caller.role == exchange_core::domain::PartnerRole::Provider && ctx.caller.has_scope("prior-auth") {
        Ok(())
    } else {
        Err(FhirError::Forbidden("prior authorization needs a provider token with the prior-auth scope".into()))
    }
}

/// `POST /fhir/Claim/$submit`.
pub async fn submit(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    require_submitter(&ctx)?;
    let FhirBody { raw, resource: bundle } = fhir_body(&headers, body)?;
    let req = parse_submit(&bundle)?;
    let reply = pa.service.submit_pas(&ctx, req, &bundle, &raw).await?;
    Ok(fhir_response(StatusCode::OK, reply.body, reply.replayed))
}

/// `POST /fhir/Claim/$inquire`: the current response Bundle of every request of this submitter that matches the
/// member and the provider (and the Claim identifier when one is given), as `Parameters.parameter:return`.
pub async fn inquire(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    require_submitter(&ctx)?;
    let inquiry = parse_inquiry(&fhir_body(&headers, body)?.resource)?;
    let cases = pa
        .cases
        .by_member(ctx.caller.partner.as_str(), &inquiry.member_id, 100)
        .await
        .map_err(|e| FhirError::from_port(&ctx.request_id, &e))?;
    let now = pa.core.clock().now();
    let params: Vec<Value> = cases
        .iter()
        .filter(|c| c.requester.id == inquiry.provider_id)
        .filter(|c| inquiry.trace.is_none() || c.trace == inquiry.trace)
        .inspect(|c| crate::audit_case(&ctx, c))
        .map(|c| json!({ "name": "return", "resource": response_bundle(c, Flavor::Inquiry, now) }))
        .collect();
    tracing::info!(request_id = %ctx.request_id, matches = params.len(), "PAS inquiry answered");
    let body = json!({ "resourceType": "Parameters", "parameter": params });
    Ok(fhir_response(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default(), false))
}
