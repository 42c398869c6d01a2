//! The payer's reviewer API (JSON; documented in `openapi/review.yaml`): the pended work list by deadline,
//! one case, decisions per item with reason codes, requests for more documentation, and the notification dead
//! letters. Every change is saved with its notification jobs in one transaction; delivery happens later, in the
//! worker, so a slow subscriber never slows the reviewer down.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use exchange_core::commit::Commit;
use exchange_core::domain::attachment_requests::{for_pended_case, AttachmentRequestRepo};
use exchange_core::domain::prior_auth::{rfc3339, CaseRepo, Decision, PaCase};
use exchange_core::domain::PartnerRole;
use exchange_core::http::problem::FieldError;
use exchange_core::http::{CallerContext, Problem, ProblemQuery};
use exchange_core::ports::PortError;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::PriorAuth;

fn require_reviewer(ctx: &CallerContext) -> Result<(), Problem> {
    if ctx.caller.role == PartnerRole::Payer && ctx.caller.has_scope("reviewer") {
        Ok(())
    } else {
        Err(Problem::forbidden("the reviewer API needs a payer token with the reviewer scope"))
    }
}

fn unavailable(ctx: &CallerContext, e: &PortError) -> Problem {
    Problem::from_port(&ctx.request_id, e)
}

/// The case as the reviewer sees it (with the time left in seconds; negative when overdue).
pub fn case_view(case: &PaCase, now: time::OffsetDateTime) -> Value {
    let mut v = serde_json::to_value(case).unwrap_or(Value::Null);
    v["status"] = json!(case.status());
    v["timeLeftSeconds"] = json!(case.time_left(now).map(|d| d.whole_seconds()));
    v
}

/// Query of the work list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// At most this many cases (default 50, at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Where the page starts: the `next` of the previous page.
    pub cursor: Option<String>,
}

/// Most cases on one page of the work list.
pub const MAX_PAGE: usize = 200;

/// The payer whose cases the caller reviews: the data set's, when the caller acts for it (403 otherwise).
async fn payer_id(pa: &PriorAuth, ctx: &CallerContext) -> Result<String, Problem> {
    match pa.core.repo().current().await {
        Ok(Some(d)) if ctx.partner.acts_for(&d.payer) => Ok(d.payer.id),
        Ok(Some(_)) => Err(Problem::forbidden("the caller does not review for this payer")),
        Ok(None) => Err(Problem::unavailable()),
        Err(e) => Err(unavailable(ctx, &e)),
    }
}

/// `GET /review/cases`: pended cases, soonest deadline first.
pub async fn list(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    ProblemQuery(q): ProblemQuery<ListQuery>,
) -> Result<Response, Problem> {
    require_reviewer(&ctx)?;
    let payer = payer_id(&pa, &ctx).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let cursor_given = q.cursor.is_some();
    let (cases, next) = match pa.cases.pended_page(&payer, limit, q.cursor).await {
        Ok(page) => page,
        // The stores refuse a cursor they did not hand out as `Invalid` (a stored case that does not decode is
        // `Invalid` too, so only a request with a cursor is answered 400 for it).
        Err(PortError::Invalid(_)) if cursor_given => {
            return Err(Problem::bad_request("cursor is not one this list gave"))
        }
        Err(e) => return Err(unavailable(&ctx, &e)),
    };
    let now = pa.core.clock().now();
    cases.iter().for_each(|(c, _)| crate::audit_case(&ctx, c));
    let views: Vec<Value> = cases.iter().map(|(c, _)| case_view(c, now)).collect();
    let mut body = json!({ "cases": views });
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    Ok(Json(body).into_response())
}

async fn load(pa: &PriorAuth, ctx: &CallerContext, id: &str) -> Result<(PaCase, u64), Problem> {
    let payer = payer_id(pa, ctx).await?;
    match pa.cases.get(id).await {
        Ok(Some((c, v))) if c.payer == payer => {
            crate::audit_case(ctx, &c);
            Ok((c, v))
        }
        Ok(_) => Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No such case")),
        Err(e) => Err(unavailable(ctx, &e)),
    }
}

/// `GET /review/cases/{id}`.
pub async fn read(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_reviewer(&ctx)?;
    let (case, _) = load(&pa, &ctx, &id).await?;
    Ok(Json(case_view(&case, pa.core.clock().now())).into_response())
}

/// One item decision.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemDecision {
    /// Item sequence.
    pub item: u32,
    /// `A1` certified, `A3` not certified, `A4` pended, `A6` modified.
    pub action: String,
    /// HCR03 reason codes, one or two characters (required for A3).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The authorized quantity (A6).
    #[serde(default)]
    pub quantity: Option<String>,
    /// LOINC codes of documentation asked for (A4).
    #[serde(default)]
    pub documentation: Vec<String>,
}

/// `POST /review/cases/{id}/decisions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsBody {
    /// Decisions, one per item.
    pub decisions: Vec<ItemDecision>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let body = exchange_core::http::read_body(body)?;
    serde_json::from_slice(&body).map_err(|e| Problem::bad_request(format!("the body does not match the schema: {e}")))
}

fn reason_ok(r: &str) -> bool {
    (1..=2).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn loinc_ok(code: &str) -> bool {
    // LOINC: digits, a hyphen, one check digit.
    code.split_once('-').is_some_and(|(n, c)| {
        !n.is_empty()
            && n.len() <= 7
            && n.bytes().all(|b| b.is_ascii_digit())
            && c.len() == 1
            && c.bytes().all(|b| b.is_ascii_digit())
    })
}

fn to_decision(d: &ItemDecision, i: usize, errors: &mut Vec<FieldError>) -> Option<Decision> {
    let pointer = |field: &str| format!("/decisions/{i}/{field}");
    if let Some(bad) = d.reasons.iter().find(|r| !reason_ok(r)) {
        errors.push(FieldError::new(pointer("reasons"), format!("'{bad}' is not an X12 reason code")));
    }
    if let Some(bad) = d.documentation.iter().find(|c| !loinc_ok(c)) {
        errors.push(FieldError::new(pointer("documentation"), format!("'{bad}' is not a LOINC code")));
    }
    match d.action.as_str() {
        "A1" => Some(Decision::Certified),
        "A3" if d.reasons.is_empty() => {
            errors.push(FieldError::new(pointer("reasons"), "a denial (A3) needs at least one reason code"));
            None
        }
        "A3" => Some(Decision::NotCertified { reasons: d.reasons.clone() }),
        "A4" => Some(Decision::Pended { documentation: d.documentation.clone() }),
        "A6" if d.quantity.is_none() => {
            errors.push(FieldError::new(pointer("quantity"), "a modification (A6) needs the authorized quantity"));
            None
        }
        "A6" => Some(Decision::Modified { quantity: d.quantity.clone(), reasons: d.reasons.clone() }),
        other => {
            errors.push(FieldError::new(pointer("action"), format!("'{other}' is not one of A1, A3, A4, A6")));
            None
        }
    }
}

/// Applies decisions to a case, saves it with its notification jobs, and wakes the worker.
async fn apply(
    pa: &PriorAuth,
    ctx: &CallerContext,
    id: &str,
    decisions: Vec<(u32, Decision)>,
) -> Result<Response, Problem> {
    let (mut case, version) = load(pa, ctx, id).await?;
    let now = pa.core.clock().now();
    let by = ctx.caller.partner.as_str().to_owned();
    // Items pended asking for documents, however the reviewer said so (a decision or a documentation request).
    let pended: Vec<(u32, Vec<String>)> = decisions
        .iter()
        .filter_map(|(seq, d)| match d {
            Decision::Pended { documentation } if !documentation.is_empty() => Some((*seq, documentation.clone())),
            _ => None,
        })
        .collect();
    let mut errors = Vec::new();
    for (i, (seq, decision)) in decisions.into_iter().enumerate() {
        if let Err(e) = case.decide(seq, decision, &by, now) {
            errors.push(FieldError::new(format!("/decisions/{i}/item"), e.to_string()));
        }
    }
    if !errors.is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-decision",
            "The decisions cannot be applied",
        )
        .with_errors(errors));
    }
    let mut jobs = crate::notify::jobs_for(pa, &case, now).await.map_err(|e| unavailable(ctx, &e))?;
    let queued = jobs.len();
    // A documentation request is also a CDex attachment request the provider can list and answer, written with
    // the decision so that neither exists without the other.
    let request = for_pended_case(&case, &pended, &by, &rfc3339(now));
    if let Some(req) = &request {
        jobs.extend(AttachmentRequestRepo::create_ops(req).map_err(|e| unavailable(ctx, &e))?);
    }
    crate::audit_case(ctx, &case);
    let mut ops = CaseRepo::save_ops(&case, version, None).map_err(|e| unavailable(ctx, &e))?;
    ops.extend(jobs);
    match pa.core.committer().commit(ctx, Commit::answered(StatusCode::OK).writes(ops)).await {
        Ok(()) => {}
        Err(PortError::Conflict(_)) => {
            return Err(Problem::new(StatusCode::CONFLICT, "conflict", "The case changed meanwhile")
                .with_detail("reload the case and decide again"))
        }
        Err(e) => return Err(unavailable(ctx, &e)),
    }
    if queued > 0 {
        pa.wake.notify_one();
    }
    tracing::info!(request_id = %ctx.request_id, case = %case.id, notifications = queued, "decision recorded");
    let mut view = case_view(&case, now);
    if !pended.is_empty() {
        view["attachmentRequest"] = match &request {
            Some(req) => json!({ "taskId": req.id, "trackingId": req.tracking_id, "ownerNpi": req.owner_npi }),
            None => Value::Null,
        };
    }
    Ok(Json(view).into_response())
}

/// `POST /review/cases/{id}/decisions`.
pub async fn decide(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    require_reviewer(&ctx)?;
    let body: DecisionsBody = parse_json(body)?;
    if body.decisions.is_empty() {
        return Err(Problem::bad_request("decisions must not be empty"));
    }
    let mut errors = Vec::new();
    let parsed: Vec<(u32, Decision)> = body
        .decisions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| to_decision(d, i, &mut errors).map(|dec| (d.item, dec)))
        .collect();
    if !errors.is_empty() {
        return Err(Problem::bad_request("some decisions are invalid").with_errors(errors));
    }
    apply(&pa, &ctx, &id, parsed).await
}

/// `POST /review/cases/{id}/documentation-requests` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentationBody {
    /// Items the documentation is for.
    pub items: Vec<u32>,
    /// LOINC codes.
    pub documentation: Vec<String>,
}

/// `POST /review/cases/{id}/documentation-requests`: pends the items (A4) asking for the documents, and creates
/// the CDex attachment request (Task) the provider answers; its id and tracking id are in `attachmentRequest`.
pub async fn request_documentation(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    require_reviewer(&ctx)?;
    let body: DocumentationBody = parse_json(body)?;
    if body.items.is_empty() || body.documentation.is_empty() {
        return Err(Problem::bad_request("items and documentation must not be empty"));
    }
    if let Some(bad) = body.documentation.iter().find(|c| !loinc_ok(c)) {
        return Err(Problem::bad_request("some documentation codes are invalid")
            .with_errors(vec![FieldError::new("/documentation", format!("'{bad}' is not a LOINC code"))]));
    }
    let decisions =
        body.items.iter().map(|s| (*s, Decision::Pended { documentation: body.documentation.clone() })).collect();
    apply(&pa, &ctx, &id, decisions).await
}

/// `POST /review/dead-letters/{id}/redrive`: a dead letter back in the outbox, due now with its attempts reset and
/// its event number kept (once its endpoint is back); 404 when `id` is no dead letter.
pub async fn redrive(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_reviewer(&ctx)?;
    payer_id(&pa, &ctx).await?;
    let now = pa.core.clock().now();
    match pa.outbox.redrive(&id, now).await {
        Ok(job) => {
            tracing::info!(request_id = %ctx.request_id, job = %job.id, "dead letter re-driven");
            Ok((StatusCode::ACCEPTED, Json(json!({ "notification": job }))).into_response())
        }
        Err(PortError::NotFound(_)) => Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No such dead letter")),
        Err(PortError::Conflict(_)) => {
            Err(Problem::new(StatusCode::CONFLICT, "conflict", "The dead letter changed meanwhile; read it again"))
        }
        Err(e) => Err(unavailable(&ctx, &e)),
    }
}

/// `GET /review/dead-letters`: notifications that could not be delivered.
pub async fn dead_letters(State(pa): State<Arc<PriorAuth>>, ctx: CallerContext) -> Result<Response, Problem> {
    require_reviewer(&ctx)?;
    // Every dead letter is a notification about one of this payer's cases: only its reviewers see them.
    payer_id(&pa, &ctx).await?;
    let dead = pa.outbox.dead_letters(100).await.map_err(|e| unavailable(&ctx, &e))?;
    Ok(Json(json!({ "deadLetters": dead })).into_response())
}
