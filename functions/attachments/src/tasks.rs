//! Payer-initiated attachment requests as CDex attachment-request Tasks. The payer `POST`s a Task (code
//! `attachment-request-code` or `attachment-request-questionnaire`, a `tracking-id` identifier, `reasonCode` claim
//! or preauthorization, `reasonReference` naming the claim or request, `owner` the provider organisation by NPI,
//! `attachments-needed` inputs with LOINC codes); the provider lists its open requests with `GET /fhir/Task` and
//! answers with `$submit-attachment` under the tracking id, which moves the Task to in-progress or completed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use exchange_core::auth::random_id;
use exchange_core::commit::Commit;
use exchange_core::domain::attachment_requests::{
    AttachmentRequest, AttachmentRequestRepo, NeededDocument, RequestStatus,
};
use exchange_core::domain::attachments::AttachTo;
use exchange_core::domain::ids::MAX_REFERENCE_LEN;
use exchange_core::domain::payer_data::Payer;
use exchange_core::domain::prior_auth::rfc3339;
use exchange_core::domain::PartnerRole;
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{answer_response, read_body_max, CallerContext};
use exchange_core::ports::PortError;
use serde_json::{json, Value};

use crate::Attachments;

const CDEX_TEMP: &str = "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp";
const PAS_TEMP: &str = "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes";
const LINE_NUMBER: &str = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-paLineNumber";
const CLAIM_LINE: &str = "http://hl7.org/fhir/us/davinci-cdex/StructureDefinition/cdex-claim-line-number";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";

fn code_of(concept: &Value) -> Option<(&str, &str)> {
    exchange_core::fhir::first_coding(concept)
}

/// Resolves a reference to a contained resource (`#id`).
fn contained<'a>(task: &'a Value, reference: &Value) -> Option<&'a Value> {
    let id = reference["reference"].as_str()?.strip_prefix('#')?;
    task["contained"].as_array()?.iter().find(|r| r["id"] == id)
}

/// The NPI of the Task's owner: an Organization or PractitionerRole (contained, or by identifier).
fn owner_npi(task: &Value) -> Option<String> {
    let owner = &task["owner"];
    let npi = |id: &Value| (id["system"] == NPI).then(|| id["value"].as_str().map(str::to_owned)).flatten();
    if let Some(n) = npi(&owner["identifier"]) {
        return Some(n);
    }
    let r = contained(task, owner)?;
    match r["resourceType"].as_str()? {
        "Organization" => r["identifier"].as_array()?.iter().find_map(npi),
        "PractitionerRole" => npi(&r["organization"]["identifier"]),
        _ => None,
    }
}

fn member_id(task: &Value) -> Option<String> {
    let patient = contained(task, &task["for"])?;
    let ids = patient["identifier"].as_array()?;
    ids.iter()
        .find(|i| code_of(&i["type"]).is_some_and(|(_, c)| c == "MB"))
        .or_else(|| ids.first())
        .and_then(|i| i["value"].as_str().map(str::to_owned))
}

/// Parses a payer's attachment-request Task.
pub fn parse_task(task: &Value) -> Result<AttachmentRequest, FhirError> {
    let invalid = |d: &str, e: &str| FhirError::invalid("required", d, Some(e));
    if task["resourceType"] != "Task" {
        return Err(FhirError::invalid("structure", "the body is not a Task", None));
    }
    let Some((system, code)) = code_of(&task["code"]) else {
        return Err(invalid("Task.code is required", "Task.code"));
    };
    if !matches!(system, PAS_TEMP | CDEX_TEMP)
        || !matches!(code, "attachment-request-code" | "attachment-request-questionnaire")
    {
        return Err(FhirError::unprocessable(
            "not-supported",
            "this exchange relays attachment requests (attachment-request-code, attachment-request-questionnaire); \
             data requests go to the provider's own FHIR server",
            Some("Task.code"),
        ));
    }
    let status = task["status"].as_str().unwrap_or("");
    if !matches!(status, "requested" | "received" | "accepted" | "ready" | "in-progress") {
        return Err(FhirError::unprocessable(
            "business-rule",
            "a new request must be open (status requested)",
            Some("Task.status"),
        ));
    }
    let tracking = task["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| code_of(&i["type"]).is_some_and(|(_, c)| c == "tracking-id"));
    let Some(tracking_id) = tracking.and_then(|t| t["value"].as_str()).filter(|v| !v.trim().is_empty()) else {
        return Err(invalid("an identifier of type tracking-id is required", "Task.identifier"));
    };
    let attach_to = task["reasonCode"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c["code"].as_str().and_then(AttachTo::parse))
        .ok_or_else(|| {
            FhirError::invalid(
                "code-invalid",
                "Task.reasonCode must be claim or preauthorization",
                Some("Task.reasonCode"),
            )
        })?;
    let Some(reference) = task["reasonReference"]["identifier"]["value"].as_str().filter(|v| !v.is_empty()) else {
        return Err(invalid("Task.reasonReference.identifier names the claim or request", "Task.reasonReference"));
    };
    if tracking_id.len() > MAX_REFERENCE_LEN || reference.len() > MAX_REFERENCE_LEN {
        return Err(FhirError::invalid(
            "value",
            format!("the tracking id and the claim reference are at most {MAX_REFERENCE_LEN} characters"),
            Some("Task.identifier"),
        ));
    }
    let owner = owner_npi(task)
        .ok_or_else(|| invalid("Task.owner must name the provider organisation by NPI", "Task.owner"))?;
    let mut needed = Vec::new();
    let mut questionnaires = Vec::new();
    for input in task["input"].as_array().into_iter().flatten() {
        match code_of(&input["type"]).map(|(_, c)| c) {
            Some("attachments-needed") => {
                let Some((_, loinc)) = code_of(&input["valueCodeableConcept"]) else { continue };
                let line = input["extension"].as_array().into_iter().flatten().find_map(|e| {
                    (e["url"] == LINE_NUMBER || e["url"] == CLAIM_LINE)
                        .then(|| e["valueInteger"].as_u64().or_else(|| e["valuePositiveInt"].as_u64()))
                        .flatten()
                });
                needed.push(NeededDocument { code: loinc.to_owned(), line: line.and_then(|l| u32::try_from(l).ok()) });
            }
            Some("questionnaire-context") | Some("questionnaire") => {
                if let Some(c) = input["valueCanonical"].as_str() {
                    questionnaires.push(c.to_owned());
                } else {
                    questionnaires.push(String::new());
                }
            }
            _ => {}
        }
    }
    if needed.is_empty() && questionnaires.is_empty() {
        return Err(invalid(
            "the request must say what it needs (attachments-needed or a questionnaire)",
            "Task.input",
        ));
    }
    questionnaires.retain(|q| !q.is_empty());
    Ok(AttachmentRequest {
        id: String::new(),
        payer: String::new(),
        requested_by: String::new(),
        owner_npi: owner,
        tracking_id: tracking_id.trim().to_owned(),
        tracking_system: tracking.and_then(|t| t["system"].as_str()).map(str::to_owned),
        attach_to,
        reference: reference.to_owned(),
        case_id: None,
        member_id: member_id(task),
        needed,
        questionnaires,
        due: task["restriction"]["period"]["end"].as_str().map(str::to_owned),
        status: RequestStatus::Requested,
        attachment_id: None,
        authored: String::new(),
        last_modified: String::new(),
        task: task.clone(),
    })
}

/// The Task as the exchange holds it: the payer's, with the exchange's id, status and times.
pub fn task_resource(req: &AttachmentRequest) -> Value {
    let mut task = req.task.clone();
    task["id"] = json!(req.id);
    task["status"] = json!(req.status.as_str());
    task["lastModified"] = json!(req.last_modified);
    if task["authoredOn"].is_null() {
        task["authoredOn"] = json!(req.authored);
    }
    task["meta"] = json!({ "lastUpdated": req.last_modified });
    if let Some(att) = &req.attachment_id {
        task["output"] = json!([{
            "type": { "text": "attachment received" },
            "valueString": att,
        }]);
    }
    task
}

fn fhir(status: StatusCode, body: &Value) -> Response {
    answer_response(status, FHIR_JSON, serde_json::to_vec(body).unwrap_or_default(), false)
}

/// The largest Task taken: the Task is kept whole in one record, which must stay under DynamoDB's 400 KB item limit.
pub const MAX_TASK_BYTES: usize = 256 * 1024;

fn port(ctx: &CallerContext) -> impl Fn(PortError) -> FhirError + '_ {
    move |e| FhirError::from_port(&ctx.request_id, &e)
}

/// `POST /fhir/Task`: the payer asks a provider organisation for attachments.
pub async fn create(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    if ctx.caller.role != PartnerRole::Payer
        || !(ctx.caller.has_scope("attachments") || ctx.caller.has_scope("reviewer"))
    {
        return Err(FhirError::Forbidden("attachment requests are created by the payer".into()));
    }
    let raw = read_body_max(body, MAX_TASK_BYTES).map_err(|p| match p.status {
        413 => FhirError::TooLarge(MAX_TASK_BYTES),
        _ => FhirError::invalid("structure", p.detail.unwrap_or_default(), None),
    })?;
    let task: Value = serde_json::from_slice(&raw)
        .map_err(|e| FhirError::invalid("structure", format!("the body is not JSON: {e}"), None))?;
    let mut req = parse_task(&task)?;
    let data = svc.core.repo().current().await.map_err(port(&ctx))?.ok_or(FhirError::Unavailable)?;
    if !ctx.partner.acts_for(&data.payer) {
        return Err(FhirError::Forbidden("the caller does not act for this payer".into()));
    }
    if let Some(named) = task["requester"]["identifier"]["value"].as_str() {
        if !data.payer.answers_to(named) {
            return Err(FhirError::unprocessable(
                "business-rule",
                "Task.requester does not name this payer",
                Some("Task.requester"),
            ));
        }
    }
    let now = rfc3339(svc.core.clock().now());
    req.id = format!("task-{}", random_id());
    req.payer = data.payer.id.clone();
    req.requested_by = ctx.caller.partner.as_str().to_owned();
    req.authored = now.clone();
    req.last_modified = now;
    if req.attach_to == AttachTo::Preauthorization {
        // The request names one of the exchange's cases when its reference is a case id addressed to this payer.
        if let Some((case, _)) = svc.cases.get(&req.reference).await.map_err(port(&ctx))? {
            if case.payer == req.payer {
                req.case_id = Some(case.id);
            }
        }
    }
    ctx.audit_resource_on_commit("task", &req.id);
    if let Some(member) = &req.member_id {
        ctx.audit_member_on_commit(member);
    }
    let ops = AttachmentRequestRepo::create_ops(&req).map_err(port(&ctx))?;
    match svc.core.committer().commit(&ctx, Commit::answered(StatusCode::CREATED).writes(ops)).await {
        Ok(()) => {}
        Err(PortError::Conflict(_)) => {
            return Err(FhirError::Conflict("a request with this tracking id already exists".into()))
        }
        Err(e) => return Err(FhirError::from_port(&ctx.request_id, &e)),
    }
    tracing::info!(request_id = %ctx.request_id, task = %req.id, needed = req.needed.len(), "attachment request created");
    let mut resp = fhir(StatusCode::CREATED, &task_resource(&req));
    if let Ok(v) = HeaderValue::from_str(&format!("Task/{}", req.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Whether the caller may see `req`: a partner acting for the payer it belongs to (the one that created it, or a
/// reviewer), or the provider organisation it asks.
fn sees(ctx: &CallerContext, payer: &Payer, req: &AttachmentRequest) -> bool {
    match ctx.caller.role {
        PartnerRole::Payer => {
            payer.answers_to(&req.payer)
                && ctx.partner.acts_for(payer)
                && (req.requested_by == ctx.caller.partner.as_str() || ctx.caller.has_scope("reviewer"))
        }
        PartnerRole::Provider => ctx.partner.may_submit_for(&req.owner_npi),
        PartnerRole::Admin => false,
    }
}

/// `GET /fhir/Task/{id}`.
pub async fn read(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let data = svc.core.repo().current().await.map_err(port(&ctx))?.ok_or(FhirError::Unavailable)?;
    match svc.requests.get(&id).await.map_err(port(&ctx))? {
        Some((req, _)) if sees(&ctx, &data.payer, &req) => Ok(fhir(StatusCode::OK, &task_resource(&req))),
        _ => Err(FhirError::NotFound("no such Task".into())),
    }
}

/// `GET /fhir/Task[?status=...]`: a provider's requests (all of its organisations' NPIs), open ones unless a status
/// is given.
pub async fn search(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    if ctx.caller.role != PartnerRole::Provider || !ctx.caller.has_scope("attachments") {
        return Err(FhirError::Forbidden("a provider lists the requests addressed to it".into()));
    }
    let mut wanted: Option<Vec<String>> = None;
    for (name, value) in &params {
        match name.as_str() {
            "status" => wanted = Some(value.split(',').map(str::to_owned).collect()),
            other => {
                return Err(FhirError::invalid(
                    "not-supported",
                    format!("search parameter {other:?} is not supported"),
                    None,
                ))
            }
        }
    }
    let mut entries = Vec::new();
    // Requests are addressed by the organisation identifier the payer holds: an NPI, or another provider id.
    let owners = ctx.partner.npis.iter().map(|n| n.as_str()).chain(ctx.partner.provider_ids.iter().map(String::as_str));
    for owner in owners {
        for req in svc.requests.for_owner(owner, 100).await.map_err(port(&ctx))? {
            let keep = match &wanted {
                Some(w) => w.iter().any(|s| s == req.status.as_str()),
                None => req.status.is_open(),
            };
            if keep {
                entries.push(json!({ "fullUrl": format!("Task/{}", req.id), "resource": task_resource(&req), "search": { "mode": "match" } }));
            }
        }
    }
    Ok(fhir(
        StatusCode::OK,
        &json!({ "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries }),
    ))
}
