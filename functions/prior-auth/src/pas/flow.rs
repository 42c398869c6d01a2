//! The PAS submission flow: a `Claim/$submit` Bundle (new request or update) in, its ClaimResponse Bundle out,
//! and the case, its submission record and the request's audit record committed together. Independent of HTTP:
//! [`super::routes`] parses the body and maps the [`PasReply`].

use axum::body::Bytes;
use axum::http::StatusCode;
use exchange_core::commit::Commit;
use exchange_core::domain::prior_auth::{CaseRepo, PaCase};
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::CallerContext;
use exchange_core::ports::PortError;
use exchange_core::record::{sha256_hex, IdempotencyRecord, VaultedExchange};
use serde_json::Value;

use super::request::{ClaimKind, ItemChange, PasRequest};
use super::response::{error_bundle, response_bundle, Flavor};
use crate::intake::{self, Intake};
use crate::service::PriorAuthService;

/// A submission's answer: the response Bundle, new or (`replayed`) the original answer to a retry.
#[derive(Debug)]
pub struct PasReply {
    /// The Bundle's bytes.
    pub body: Bytes,
    /// The original answer to a retry.
    pub replayed: bool,
}

impl PasReply {
    fn new(body: Vec<u8>) -> Self {
        PasReply { body: body.into(), replayed: false }
    }
}

impl PriorAuthService {
    /// Answers a parsed `Claim/$submit` (`bundle` is its resource, `raw` the bytes received): a retry gets its
    /// original answer and changes nothing; the same Bundle.identifier on another request is refused (409).
    pub async fn submit_pas(
        &self,
        ctx: &CallerContext,
        req: PasRequest,
        bundle: &Value,
        raw: &[u8],
    ) -> Result<PasReply, FhirError> {
        let key = submission_key(&req);
        // The identity of the request for idempotency: its content, whatever the formatting (serde_json writes
        // object keys sorted and without whitespace).
        let content_sha = sha256_hex(&serde_json::to_vec(bundle).unwrap_or_default());
        if let Some(answer) = original_answer(self, ctx, &key, &content_sha).await? {
            return Ok(answer);
        }
        let now = self.clock.now();
        let kept = Kept { raw, content_sha: &content_sha, key: &key };
        let submission = Submission { svc: self, ctx, kept: &kept, now };
        match req.kind {
            ClaimKind::Initial => submission.initial(req).await,
            ClaimKind::Update => submission.update(req).await,
        }
    }
}

/// One submission being answered: the service, who sent it, what it keeps, and when.
#[derive(Clone, Copy)]
struct Submission<'a> {
    svc: &'a PriorAuthService,
    ctx: &'a CallerContext,
    kept: &'a Kept<'a>,
    now: time::OffsetDateTime,
}

/// What a submission keeps: the raw request, its content hash and its submission key.
struct Kept<'a> {
    raw: &'a [u8],
    content_sha: &'a str,
    key: &'a str,
}

/// The answer a submission got before, when this submission key was seen.
async fn original_answer(
    svc: &PriorAuthService,
    ctx: &CallerContext,
    key: &str,
    content_sha: &str,
) -> Result<Option<PasReply>, FhirError> {
    let port = |e: PortError| FhirError::from_port(&ctx.request_id, &e);
    let Some(seen) = svc.cases.submission(ctx.caller.partner.as_str(), key).await.map_err(port)? else {
        return Ok(None);
    };
    let Some(answer) = seen.answer else { return Ok(None) };
    if answer.request_sha256 != content_sha {
        return Err(FhirError::Conflict(
            "this Bundle.identifier was already used for a different request; give a new request a new identifier"
                .into(),
        ));
    }
    let bytes = svc.records.stored_answer(&answer).await.map_err(port)?;
    ctx.audit_resource("case", &seen.case_id);
    tracing::info!(request_id = %ctx.request_id, case = %seen.case_id, "PAS submission replayed");
    Ok(Some(PasReply { body: bytes, replayed: true }))
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

impl Submission<'_> {
    /// A new request: intake, policy, and a new case.
    async fn initial(&self, req: PasRequest) -> Result<PasReply, FhirError> {
        let Submission { svc, ctx, kept, now } = *self;
        let port = |e: PortError| FhirError::from_port(&ctx.request_id, &e);
        let request_for_errors = req.request.clone();
        let intake = intake::take(&svc.repo, &ctx.partner, "fhir", kept.key, req.request, now).await.map_err(port)?;
        let case = match intake {
            Intake::Rejected(rejection) => {
                let bundle = error_bundle(&req.bundle_identifier, &request_for_errors, &rejection, now);
                tracing::info!(request_id = %ctx.request_id, aaa = rejection.code, "PAS submission rejected");
                return Ok(PasReply::new(serde_json::to_vec(&bundle).unwrap_or_default()));
            }
            Intake::Decided(case) => case,
        };
        let answer = serde_json::to_vec(&response_bundle(&case, Flavor::Submit, now)).unwrap_or_default();
        let vaulted =
            svc.records.vault_exchange(ctx, "pas/submit", kept.raw, &answer, &case.payer).await.map_err(port)?;
        crate::audit_new_case(ctx, &case);
        let ops = CaseRepo::create_ops(&case, Some(idempotency(&vaulted, kept, &case.payer))).map_err(port)?;
        if let Err(e) =
            svc.committer.commit(ctx, Commit::answered(StatusCode::OK).writes(ops).keeping_exchange(&vaulted)).await
        {
            if !matches!(e, PortError::Conflict(_)) {
                return Err(port(e));
            }
            // A concurrent retry of the same submission won the race: answer with its result.
            return match original_answer(svc, ctx, kept.key, kept.content_sha).await? {
                Some(answer) => Ok(answer),
                None => {
                    Err(FhirError::Conflict("the same submission is being processed; retry to get its answer".into()))
                }
            };
        }
        log_decided(ctx, &case, "PAS submission decided");
        Ok(PasReply::new(answer))
    }
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

impl Submission<'_> {
    /// An update of an earlier request of this submitter: its case changed (items replaced, added or cancelled).
    async fn update(&self, req: PasRequest) -> Result<PasReply, FhirError> {
        let Submission { svc, ctx, kept, now } = *self;
        let port = |e: PortError| FhirError::from_port(&ctx.request_id, &e);
        let submitter = ctx.caller.partner.as_str();
        let Some(trace) = &req.updates else {
            return Err(FhirError::unprocessable(
                "required",
                "an update must identify the earlier Claim",
                Some("Claim.related"),
            ));
        };
        let mut candidates = svc.cases.all_by_trace(submitter, trace).await.map_err(port)?;
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
                        if case.decide(*seq, exchange_core::domain::prior_auth::Decision::Cancelled, &by, now).is_err()
                        {
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
            intake::decide_added_items(&svc.repo, &mut case, &redecide, &req.request.supplied_documentation, now)
                .await
                .map_err(port)?;
        }
        let answer = serde_json::to_vec(&response_bundle(&case, Flavor::Submit, now)).unwrap_or_default();
        let vaulted =
            svc.records.vault_exchange(ctx, "pas/update", kept.raw, &answer, &case.payer).await.map_err(port)?;
        let idem = idempotency(&vaulted, kept, &case.payer);
        crate::audit_case(ctx, &case);
        let ops = CaseRepo::save_ops(&case, version, Some((kept.key, Some(idem)))).map_err(port)?;
        if let Err(e) =
            svc.committer.commit(ctx, Commit::answered(StatusCode::OK).writes(ops).keeping_exchange(&vaulted)).await
        {
            return Err(match e {
                PortError::Conflict(_) => {
                    FhirError::Conflict("the request changed meanwhile; resubmit the update".into())
                }
                e => port(e),
            });
        }
        log_decided(ctx, &case, "PAS update applied");
        Ok(PasReply::new(answer))
    }
}
