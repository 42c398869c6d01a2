//! `POST /fhir/Claim/$submit` and `POST /fhir/Claim/$inquire`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use exchange_core::domain::prior_auth::PaCase;
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{answer_response, media_type, CallerContext, MAX_BODY_BYTES};
use exchange_core::ports::PortError;
use exchange_core::record::{stored_answer, vault_exchange};
use serde_json::{json, Value};

use super::request::{parse_inquiry, parse_submit, ClaimKind, ItemChange, PasRequest};
use super::response::{error_bundle, response_bundle, Flavor};
use crate::intake::{self, Intake, Party, Rejection};
use crate::PriorAuth;

/// Reads a FHIR JSON body (Bundle, or Parameters carrying one as `resource`/`request`).
pub fn fhir_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, FhirError> {
    let mt = media_type(headers);
    if !matches!(mt.as_str(), "application/fhir+json" | "application/json" | "") {
        return Err(FhirError::UnsupportedMediaType);
    }
    let body = exchange_core::http::read_body(body).map_err(|_| FhirError::TooLarge(MAX_BODY_BYTES))?;
    serde_json::from_slice(&body)
        .map_err(|e| FhirError::invalid("structure", format!("the body is not JSON: {e}"), None))
}

fn unwrap_parameters(value: Value) -> Value {
    if value["resourceType"] == "Parameters" {
        if let Some(b) = value["parameter"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["resource"]["resourceType"] == "Bundle"))
            .map(|p| p["resource"].clone())
        {
            return b;
        }
    }
    value
}

fn fhir_response(status: StatusCode, body: Vec<u8>, replayed: bool) -> Response {
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

fn unavailable(ctx: &CallerContext, e: &PortError, what: &str) -> FhirError {
    tracing::error!(request_id = %ctx.request_id, error = %e, "{what}");
    FhirError::Unavailable
}

fn error_path(r: &Rejection) -> String {
    match r.party {
        Party::Payer => "Claim.insurer".into(),
        Party::Requester => "Claim.provider".into(),
        Party::Subscriber => "Coverage.subscriberId".into(),
    }
}

/// `POST /fhir/Claim/$submit`.
pub async fn submit(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match submit_inner(&pa, &ctx, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn submit_inner(
    pa: &PriorAuth,
    ctx: &CallerContext,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    require_submitter(ctx)?;
    let raw_value = fhir_body(headers, body)?;
    let raw = serde_json::to_vec(&raw_value).unwrap_or_default();
    let bundle = unwrap_parameters(raw_value);
    let req = parse_submit(&bundle)?;
    let submitter = ctx.caller.partner.as_str();
    let key = submission_key(&req);

    // A retried submission gets its original answer and changes nothing.
    if let Some(seen) =
        pa.cases.submission(submitter, &key).await.map_err(|e| unavailable(ctx, &e, "submission lookup"))?
    {
        if let Some(answer) = seen.answer {
            let bytes = stored_answer(&pa.core, &answer).await.map_err(|e| unavailable(ctx, &e, "replay"))?;
            tracing::info!(request_id = %ctx.request_id, case = %seen.case_id, "PAS submission replayed");
            return Ok(fhir_response(StatusCode::OK, bytes, true));
        }
    }
    let now = pa.core.clock.now();
    match req.kind {
        ClaimKind::Initial => submit_initial(pa, ctx, req, key, &raw, now).await,
        ClaimKind::Update => submit_update(pa, ctx, req, key, &raw, now).await,
    }
}

/// The submission identity: Bundle.identifier, and whether it is an update (the PAS examples reuse one
/// identifier for a request and an unrelated update).
fn submission_key(req: &PasRequest) -> String {
    let (system, value) = &req.bundle_identifier;
    match req.kind {
        ClaimKind::Initial => format!("PAS#{system}|{value}"),
        ClaimKind::Update => format!("PAS-UPDATE#{system}|{value}"),
    }
}

async fn submit_initial(
    pa: &PriorAuth,
    ctx: &CallerContext,
    req: PasRequest,
    key: String,
    raw: &[u8],
    now: time::OffsetDateTime,
) -> Result<Response, FhirError> {
    let request_for_errors = req.request.clone();
    let intake = intake::take(&pa.core, &ctx.partner, "fhir", &key, req.request, now)
        .await
        .map_err(|e| unavailable(ctx, &e, "intake"))?;
    let case = match intake {
        Intake::Rejected(rejections) => {
            let bundle = error_bundle(&req.bundle_identifier, &request_for_errors, &rejections, &error_path, now);
            tracing::info!(request_id = %ctx.request_id, aaa = rejections[0].code, "PAS submission rejected");
            return Ok(fhir_response(StatusCode::OK, serde_json::to_vec(&bundle).unwrap_or_default(), false));
        }
        Intake::Decided(case) => case,
    };
    let answer = serde_json::to_vec(&response_bundle(&case, Flavor::Submit, now)).unwrap_or_default();
    if !persist_new(pa, ctx, &case, raw, &answer).await? {
        // A concurrent retry of the same submission won the race: answer with its result.
        let seen = pa.cases.submission(&case.submitter, &key).await.map_err(|e| unavailable(ctx, &e, "lookup"))?;
        if let Some(answer) = seen.and_then(|s| s.answer) {
            let bytes = stored_answer(&pa.core, &answer).await.map_err(|e| unavailable(ctx, &e, "replay"))?;
            return Ok(fhir_response(StatusCode::OK, bytes, true));
        }
        return Err(FhirError::Conflict("the same submission is being processed; retry to get its answer".into()));
    }
    log_decided(ctx, &case, "PAS submission decided");
    Ok(fhir_response(StatusCode::OK, answer, false))
}

/// Vaults the request and answer and creates the case with its submission record. `Ok(false)` when the same
/// submission was created concurrently (nothing of this attempt is kept).
pub async fn persist_new(
    pa: &PriorAuth,
    ctx: &CallerContext,
    case: &PaCase,
    raw: &[u8],
    answer: &[u8],
) -> Result<bool, FhirError> {
    let vaulted = vault_exchange(&pa.core, ctx, "pas/submit", raw, answer, &case.payer)
        .await
        .map_err(|e| unavailable(ctx, &e, "vault"))?;
    let idem = vaulted.idempotency_record(FHIR_JSON, 200, &case.payer);
    if let Err(e) = pa.cases.create(case, Some(idem), vec![]).await {
        vaulted.discard(&pa.core).await;
        if matches!(e, PortError::Conflict(_)) {
            return Ok(false);
        }
        return Err(unavailable(ctx, &e, "saving the case"));
    }
    Ok(true)
}

fn log_decided(ctx: &CallerContext, case: &PaCase, msg: &str) {
    let actions: Vec<&str> =
        case.items.iter().map(|i| i.decision.as_ref().map(|d| d.action_code()).unwrap_or("")).collect();
    tracing::info!(request_id = %ctx.request_id, case = %case.id, actions = ?actions, "{msg}");
}

async fn submit_update(
    pa: &PriorAuth,
    ctx: &CallerContext,
    req: PasRequest,
    key: String,
    raw: &[u8],
    now: time::OffsetDateTime,
) -> Result<Response, FhirError> {
    let submitter = ctx.caller.partner.as_str();
    let Some(trace) = &req.updates else {
        return Err(FhirError::unprocessable(
            "required",
            "an update must identify the earlier Claim",
            Some("Claim.related"),
        ));
    };
    let mut candidates =
        pa.cases.all_by_trace(submitter, trace).await.map_err(|e| unavailable(ctx, &e, "case lookup"))?;
    // Submitters reuse trace numbers: the earlier Claim's id picks the case when it tells them apart.
    let by_claim_id = candidates.iter().rposition(|(c, _)| {
        req.updates_claim_id.is_some() && c.fhir.as_ref().map(|f| &f.claim) == req.updates_claim_id.as_ref()
    });
    let chosen = match by_claim_id {
        Some(i) => Some(candidates.swap_remove(i)),
        None => candidates.pop(),
    };
    let Some((mut case, version)) = chosen else {
        return Err(FhirError::unprocessable(
            "not-found",
            "no earlier request of this submitter has the identifier Claim.related.claim names",
            Some("Claim.related[0].claim"),
        ));
    };
    let by = submitter.to_owned();
    if req.cancels_all {
        case.cancel(&by, now);
    } else {
        let mut redecide = Vec::new();
        for change in &req.item_changes {
            match change {
                ItemChange::Same(_) => {}
                ItemChange::Cancel(seq) => {
                    if case.decide(*seq, exchange_core::domain::prior_auth::Decision::Cancelled, &by, now).is_err() {
                        return Err(FhirError::unprocessable(
                            "not-found",
                            format!("item {seq} is not part of the earlier request"),
                            Some("Claim.item"),
                        ));
                    }
                }
                ItemChange::Replace(item) => {
                    let mut fresh = (**item).clone();
                    fresh.decision = None;
                    match case.items.iter_mut().find(|i| i.sequence == item.sequence) {
                        Some(existing) => *existing = fresh,
                        None => case.items.push(fresh),
                    }
                    redecide.push(item.sequence);
                }
            }
        }
        intake::decide_added_items(&pa.core, &mut case, &redecide, &req.request.supplied_documentation, now)
            .await
            .map_err(|e| unavailable(ctx, &e, "policy"))?;
    }
    let answer = serde_json::to_vec(&response_bundle(&case, Flavor::Submit, now)).unwrap_or_default();
    let vaulted = vault_exchange(&pa.core, ctx, "pas/update", raw, &answer, &case.payer)
        .await
        .map_err(|e| unavailable(ctx, &e, "vault"))?;
    let idem = vaulted.idempotency_record(FHIR_JSON, 200, &case.payer);
    if let Err(e) = pa.cases.save_with(&case, version, Some((&key, Some(idem))), vec![]).await {
        vaulted.discard(&pa.core).await;
        return Err(match e {
            PortError::Conflict(_) => FhirError::Conflict("the request changed meanwhile; resubmit the update".into()),
            e => unavailable(ctx, &e, "saving the update"),
        });
    }
    log_decided(ctx, &case, "PAS update applied");
    Ok(fhir_response(StatusCode::OK, answer, false))
}

/// `POST /fhir/Claim/$inquire`: the current response Bundle of every request of this submitter that matches the
/// member and the provider (and the Claim identifier when given), as `Parameters.parameter:return`.
pub async fn inquire(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<Response, FhirError> = async {
        require_submitter(&ctx)?;
        let inquiry = parse_inquiry(&fhir_body(&headers, body)?)?;
        let cases = pa
            .cases
            .by_member(ctx.caller.partner.as_str(), &inquiry.member_id, 100)
            .await
            .map_err(|e| unavailable(&ctx, &e, "inquiry"))?;
        let by_provider: Vec<&PaCase> = cases.iter().filter(|c| c.requester.id == inquiry.provider_id).collect();
        let traced: Vec<&PaCase> =
            by_provider.iter().copied().filter(|c| inquiry.trace.is_some() && c.trace == inquiry.trace).collect();
        let matched = if traced.is_empty() { by_provider } else { traced };
        let now = pa.core.clock.now();
        let params: Vec<Value> = matched
            .iter()
            .map(|c| json!({ "name": "return", "resource": response_bundle(c, Flavor::Inquiry, now) }))
            .collect();
        tracing::info!(request_id = %ctx.request_id, matches = params.len(), "PAS inquiry answered");
        let body = json!({ "resourceType": "Parameters", "parameter": params });
        Ok(fhir_response(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default(), false))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
