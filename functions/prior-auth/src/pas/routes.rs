//! `POST /fhir/Claim/$submit` and `POST /fhir/Claim/$inquire`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use exchange_core::commit::Commit;
use exchange_core::domain::prior_auth::{CaseRepo, PaCase};
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{answer_response, media_type, CallerContext, MAX_BODY_BYTES};
use exchange_core::ports::PortError;
use exchange_core::record::{sha256_hex, stored_answer, IdempotencyRecord, VaultedExchange};
use serde_json::{json, Value};

use super::request::{parse_inquiry, parse_submit, ClaimKind, ItemChange, PasRequest};
use super::response::{error_bundle, response_bundle, Flavor};
use crate::intake::{self, Intake};
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
    let key = submission_key(&req);
    // The identity of the request for idempotency: its content, whatever the formatting (serde_json writes
    // object keys sorted and without whitespace).
    let content_sha = sha256_hex(&serde_json::to_vec(&bundle).unwrap_or_default());

    // A retried submission gets its original answer and changes nothing; the same identifier on another
    // request is refused.
    if let Some(answer) = original_answer(&pa, &ctx, &key, &content_sha).await? {
        return Ok(answer);
    }
    let now = pa.core.clock().now();
    let kept = Kept { raw: &raw, content_sha: &content_sha, key: &key };
    match req.kind {
        ClaimKind::Initial => submit_initial(&pa, &ctx, req, &kept, now).await,
        ClaimKind::Update => submit_update(&pa, &ctx, req, &kept, now).await,
    }
}

/// What a submission keeps: the raw request, its content hash and its submission key.
struct Kept<'a> {
    raw: &'a [u8],
    content_sha: &'a str,
    key: &'a str,
}

/// The answer a submission got before, when this submission key was seen.
async fn original_answer(
    pa: &PriorAuth,
    ctx: &CallerContext,
    key: &str,
    content_sha: &str,
) -> Result<Option<Response>, FhirError> {
    let port = |e: PortError| FhirError::from_port(&ctx.request_id, &e);
    let Some(seen) = pa.cases.submission(ctx.caller.partner.as_str(), key).await.map_err(port)? else {
        return Ok(None);
    };
    let Some(answer) = seen.answer else { return Ok(None) };
    if answer.request_sha256 != content_sha {
        return Err(FhirError::Conflict(
            "this Bundle.identifier was already used for a different request; give a new request a new identifier"
                .into(),
        ));
    }
    let bytes = stored_answer(&pa.core, &answer).await.map_err(port)?;
    ctx.audit_resource("case", &seen.case_id);
    tracing::info!(request_id = %ctx.request_id, case = %seen.case_id, "PAS submission replayed");
    Ok(Some(fhir_response(StatusCode::OK, bytes, true)))
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
    kept: &Kept<'_>,
    now: time::OffsetDateTime,
) -> Result<Response, FhirError> {
    let port = |e: PortError| FhirError::from_port(&ctx.request_id, &e);
    let request_for_errors = req.request.clone();
    let intake = intake::take(pa.core.repo(), &ctx.partner, "fhir", kept.key, req.request, now).await.map_err(port)?;
    let case = match intake {
        Intake::Rejected(rejection) => {
            let bundle = error_bundle(&req.bundle_identifier, &request_for_errors, &rejection, now);
            tracing::info!(request_id = %ctx.request_id, aaa = rejection.code, "PAS submission rejected");
            return Ok(fhir_response(StatusCode::OK, serde_json::to_vec(&bundle).unwrap_or_default(), false));
        }
        Intake::Decided(case) => case,
    };
    let answer = serde_json::to_vec(&response_bundle(&case, Flavor::Submit, now)).unwrap_or_default();
    let vaulted = pa
        .core
        .exchange_records()
        .vault_exchange(ctx, "pas/submit", kept.raw, &answer, &case.payer)
        .await
        .map_err(port)?;
    crate::audit_new_case(ctx, &case);
    let ops = CaseRepo::create_ops(&case, Some(idempotency(&vaulted, kept, &case.payer))).map_err(port)?;
    if let Err(e) =
        pa.core.committer().commit(ctx, Commit::answered(StatusCode::OK).writes(ops).keeping_exchange(&vaulted)).await
    {
        if !matches!(e, PortError::Conflict(_)) {
            return Err(port(e));
        }
        // A concurrent retry of the same submission won the race: answer with its result.
        return match original_answer(pa, ctx, kept.key, kept.content_sha).await? {
            Some(answer) => Ok(answer),
            None => Err(FhirError::Conflict("the same submission is being processed; retry to get its answer".into())),
        };
    }
    log_decided(ctx, &case, "PAS submission decided");
    Ok(fhir_response(StatusCode::OK, answer, false))
}

/// The idempotency record of a vaulted submission, identified by its content hash.
fn idempotency(vaulted: &VaultedExchange, kept: &Kept<'_>, payer: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        request_sha256: kept.content_sha.to_owned(),
        ..vaulted.idempotency_record(FHIR_JSON, 200, payer)
    }
}

fn log_decided(ctx: &CallerContext, case: &PaCase, msg: &str) {
    crate::audit_case(ctx, case);
    let actions: Vec<&str> =
        case.items.iter().map(|i| i.decision.as_ref().map(|d| d.action_code()).unwrap_or("")).collect();
    tracing::info!(request_id = %ctx.request_id, case = %case.id, actions = ?actions, "{msg}");
}

async fn submit_update(
    pa: &PriorAuth,
    ctx: &CallerContext,
    req: PasRequest,
    kept: &Kept<'_>,
    now: time::OffsetDateTime,
) -> Result<Response, FhirError> {
    let port = |e: PortError| FhirError::from_port(&ctx.request_id, &e);
    let submitter = ctx.caller.partner.as_str();
    let Some(trace) = &req.updates else {
        return Err(FhirError::unprocessable(
            "required",
            "an update must identify the earlier Claim",
            Some("Claim.related"),
        ));
    };
    let mut candidates = pa.cases.all_by_trace(submitter, trace).await.map_err(port)?;
    // Only requests about the same member from the same provider can be updated by this one.
    candidates.retain(|(c, _)| intake::same_parties(c, &req.request.subscriber, &req.request.requester));
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
            "no earlier request of this submitter, for this member and provider, has the identifier Claim.related.claim names",
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
        intake::decide_added_items(pa.core.repo(), &mut case, &redecide, &req.request.supplied_documentation, now)
            .await
            .map_err(port)?;
    }
    let answer = serde_json::to_vec(&response_bundle(&case, Flavor::Submit, now)).unwrap_or_default();
    let vaulted = pa
        .core
        .exchange_records()
        .vault_exchange(ctx, "pas/update", kept.raw, &answer, &case.payer)
        .await
        .map_err(port)?;
    let idem = idempotency(&vaulted, kept, &case.payer);
    crate::audit_case(ctx, &case);
    let ops = CaseRepo::save_ops(&case, version, Some((kept.key, Some(idem)))).map_err(port)?;
    if let Err(e) =
        pa.core.committer().commit(ctx, Commit::answered(StatusCode::OK).writes(ops).keeping_exchange(&vaulted)).await
    {
        return Err(match e {
            PortError::Conflict(_) => FhirError::Conflict("the request changed meanwhile; resubmit the update".into()),
            e => port(e),
        });
    }
    log_decided(ctx, &case, "PAS update applied");
    Ok(fhir_response(StatusCode::OK, answer, false))
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
