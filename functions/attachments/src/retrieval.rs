//! Retrieval. A payer lists the attachments addressed to it (by tracking id, member, claim, case or receipt date)
//! and downloads their documents; a provider sees only what it submitted; anyone else gets 404, never a hint that
//! the attachment exists. JSON under `/attachments` (documented in `openapi/attachments.yaml`), and FHIR
//! `DocumentReference` search for FHIR clients.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use exchange_core::domain::attachments::{AttachedDocument, Attachment, Lookup};
use exchange_core::domain::cleanup::CleanupLedger;
use exchange_core::domain::uploads::download_path;
use exchange_core::domain::PartnerRole;
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{CallerContext, Problem, ProblemQuery};
use exchange_core::ports::{EncryptionContext, PortError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::uploads::transfer_view;
use crate::Attachments;

/// Stages the checked plaintext for one download and answers 303 to its transfer URL.
async fn transfer_download(
    svc: &Attachments,
    ctx: &CallerContext,
    doc: &AttachedDocument,
    bytes: bytes::Bytes,
) -> Result<Response, Problem> {
    let core = &svc.core;
    let now = core.clock().now();
    let path = download_path();
    // Written down before the copy exists: the sweep deletes it once the URL has expired, used or not.
    CleanupLedger::new(core.store().clone())
        .schedule(vec![path.clone()], "download", now + DOWNLOAD_URL_TTL + std::time::Duration::from_secs(60))
        .await
        .map_err(|e| problem(ctx, &e))?;
    core.vault().blobs().put(&path, bytes.to_vec()).await.map_err(|e| problem(ctx, &e))?;
    let url = core.transfers().download_url(&path, &doc.content_type, now, DOWNLOAD_URL_TTL).await;
    let url = url.map_err(|e| problem(ctx, &e))?;
    let body = json!({
        "download": transfer_view(&url),
        "contentType": doc.content_type,
        "size": doc.size,
        "sha256": doc.sha256,
    });
    let mut resp = (StatusCode::SEE_OTHER, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&url.url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&doc.sha256) {
        resp.headers_mut().insert("x-content-sha256", v);
    }
    Ok(resp)
}

/// Most attachments one list answers.
pub const MAX_LIST: usize = 100;

/// Who may see what: the payer everything addressed to it, a provider what it submitted.
enum Viewer {
    Payer(String),
    Provider(String),
}

/// The caller as a viewer of attachments; `None` when its role or scopes give it none to see.
async fn viewer(svc: &Attachments, ctx: &CallerContext) -> Result<Option<Viewer>, PortError> {
    match ctx.caller.role {
        PartnerRole::Payer if ctx.caller.has_scope("attachments") || ctx.caller.has_scope("reviewer") => {
            let data =
                svc.core.repo().current().await?.ok_or_else(|| PortError::Unavailable("no payer data".into()))?;
            Ok(ctx.partner.acts_for(&data.payer).then_some(Viewer::Payer(data.payer.id)))
        }
        PartnerRole::Provider if ctx.caller.has_scope("attachments") => {
            Ok(Some(Viewer::Provider(ctx.caller.partner.as_str().to_owned())))
        }
        _ => Ok(None),
    }
}

/// The caller as a viewer, answered as problem+json when it is none or the payer data cannot be read.
async fn json_viewer(svc: &Attachments, ctx: &CallerContext) -> Result<Viewer, Problem> {
    viewer(svc, ctx).await.map_err(|e| Problem::from_port(&ctx.request_id, &e))?.ok_or_else(forbidden)
}

impl Viewer {
    fn sees(&self, att: &Attachment) -> bool {
        match self {
            Viewer::Payer(p) => &att.payer == p,
            Viewer::Provider(s) => &att.submitter == s,
        }
    }
}

/// Notes for the request's audit record that it read `att` (its id and its member).
fn audit_attachment(ctx: &CallerContext, att: &Attachment) {
    ctx.audit_resource("attachment", &att.id);
    ctx.audit_member(&att.member_id);
}

fn forbidden() -> Problem {
    Problem::forbidden("attachments need a payer token (attachments or reviewer scope) or a provider token")
}

fn problem(ctx: &CallerContext, e: &PortError) -> Problem {
    Problem::from_port(&ctx.request_id, e)
}

/// Search parameters of `GET /attachments`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Tracking id (CDex TrackingId, 275 attachment control number).
    pub tracking_id: Option<String>,
    /// Member id.
    pub member_id: Option<String>,
    /// The claim or authorization request it supports.
    pub claim: Option<String>,
    /// Prior-authorization case id.
    pub case_id: Option<String>,
    /// Received on or after (RFC 3339 or `YYYY-MM-DD`).
    pub from: Option<String>,
    /// Received before.
    pub to: Option<String>,
    /// At most this many (default and maximum 100).
    pub limit: Option<usize>,
}

impl ListQuery {
    fn lookup(&self) -> Lookup {
        if let Some(t) = &self.tracking_id {
            Lookup::Tracking(t.clone())
        } else if let Some(c) = &self.case_id {
            Lookup::Case(c.clone())
        } else if let Some(c) = &self.claim {
            Lookup::Reference(c.clone())
        } else if let Some(m) = &self.member_id {
            Lookup::Member(m.clone())
        } else {
            Lookup::Received { from: self.from.clone(), to: self.to.clone() }
        }
    }

    /// Every criterion given, checked on one attachment (a provider's list is filtered this way).
    fn matches(&self, att: &Attachment) -> bool {
        self.tracking_id.as_ref().is_none_or(|t| &att.tracking_id == t)
            && self.member_id.as_ref().is_none_or(|m| att.member_id.eq_ignore_ascii_case(m))
            && self.claim.as_ref().is_none_or(|c| att.reference.as_ref() == Some(c))
            && self.case_id.as_ref().is_none_or(|c| att.case_id.as_ref() == Some(c))
            && self.from.as_ref().is_none_or(|f| &att.received >= f)
            && self.to.as_ref().is_none_or(|t| &att.received < t)
    }
}

/// The attachments `viewer` may see that match `q`.
async fn find(svc: &Attachments, viewer: &Viewer, q: &ListQuery) -> Result<Vec<Attachment>, PortError> {
    let limit = q.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST);
    let mut found = match viewer {
        Viewer::Payer(p) => svc.attachments.addressed_to(p, &q.lookup(), limit).await?,
        Viewer::Provider(s) => svc.attachments.submitted_by(s, 10_000).await?,
    };
    found.retain(|a| viewer.sees(a) && q.matches(a));
    found.truncate(limit);
    Ok(found)
}

fn document_view(att: &Attachment, d: &AttachedDocument) -> Value {
    json!({
        "index": d.index,
        "codes": d.codes,
        "lineItems": d.line_items,
        "contentType": d.content_type,
        "kind": d.kind,
        "size": d.size,
        "sha256": d.sha256,
        "href": format!("/attachments/{}/documents/{}", att.id, d.index),
    })
}

/// The JSON view of an attachment (metadata only; documents are downloaded separately).
pub fn attachment_view(att: &Attachment) -> Value {
    json!({
        "id": att.id,
        "submitter": att.submitter,
        "attachTo": att.attach_to.as_str(),
        "trackingId": att.tracking_id,
        "claim": att.reference,
        "caseId": att.case_id,
        "taskId": att.task_id,
        "memberId": att.member_id,
        "organizationNpi": att.organization_npi,
        "providerId": att.provider_id,
        "serviceDate": att.service_date,
        "final": att.is_final,
        "received": att.received,
        "updated": att.updated,
        "documents": att.documents.iter().map(|d| document_view(att, d)).collect::<Vec<_>>(),
        "history": att.history.iter().map(|h| json!({
            "at": h.at, "channel": h.channel, "documents": h.documents, "final": h.is_final,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /attachments`.
pub async fn list(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    ProblemQuery(q): ProblemQuery<ListQuery>,
) -> Result<Response, Problem> {
    if q.limit.is_some_and(|l| !(1..=MAX_LIST).contains(&l)) {
        return Err(Problem::bad_request(format!("limit must be between 1 and {MAX_LIST}")));
    }
    let viewer = json_viewer(&svc, &ctx).await?;
    let found = find(&svc, &viewer, &q).await.map_err(|e| problem(&ctx, &e))?;
    found.iter().for_each(|a| audit_attachment(&ctx, a));
    Ok(Json(json!({ "attachments": found.iter().map(attachment_view).collect::<Vec<_>>() })).into_response())
}

async fn visible(svc: &Attachments, ctx: &CallerContext, id: &str) -> Result<Attachment, Problem> {
    let viewer = json_viewer(svc, ctx).await?;
    match svc.attachments.get(id).await.map_err(|e| problem(ctx, &e))? {
        Some((att, _)) if viewer.sees(&att) => {
            audit_attachment(ctx, &att);
            Ok(att)
        }
        _ => Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No such attachment")),
    }
}

/// `GET /attachments/{id}`.
pub async fn read(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let att = visible(&svc, &ctx, &id).await?;
    Ok(Json(attachment_view(&att)).into_response())
}

/// Documents up to this size are answered in the response body. A Lambda response carries at most 6 MB, and API
/// Gateway base64-encodes binary bodies (4/3 larger), so anything bigger goes through a transfer URL.
pub const INLINE_DOWNLOAD_MAX: u64 = 4 * 1024 * 1024;
/// How long a download URL works.
pub const DOWNLOAD_URL_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Query of a document download.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    /// `url` asks for a transfer URL whatever the size; `inline` (the default up to [`INLINE_DOWNLOAD_MAX`]) for
    /// the bytes.
    pub delivery: Option<String>,
}

/// `GET /attachments/{id}/documents/{index}`: the document's bytes, decrypted and checked against the SHA-256
/// recorded at receipt, with its media type and `x-content-sha256`. A document larger than
/// [`INLINE_DOWNLOAD_MAX`] (or any, with `?delivery=url`) is answered `303 See Other` to a one-time transfer URL
/// serving the checked bytes for [`DOWNLOAD_URL_TTL`], with the URL in the JSON body too.
pub async fn download(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    // The index as text: a segment that is no number names no document (a 404 in problem+json like any other
    // missing document, not the framework's plain-text rejection).
    Path((id, index)): Path<(String, String)>,
    ProblemQuery(q): ProblemQuery<DownloadQuery>,
) -> Result<Response, Problem> {
    let by_url = match q.delivery.as_deref() {
        None => None,
        Some("url") => Some(true),
        Some("inline") => Some(false),
        Some(_) => return Err(Problem::bad_request("delivery must be url or inline")),
    };
    let att = visible(&svc, &ctx, &id).await?;
    let index: Option<u32> = index.parse().ok();
    let Some(doc) = att.documents.iter().find(|d| Some(d.index) == index) else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "not-found", "No such document"));
    };
    let by_url = by_url.unwrap_or(doc.size > INLINE_DOWNLOAD_MAX);
    if !by_url && doc.size > INLINE_DOWNLOAD_MAX {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "too-large-inline", "Document too large inline")
            .with_detail(format!("documents over {INLINE_DOWNLOAD_MAX} bytes are downloaded with delivery=url")));
    }
    let context = EncryptionContext::for_document(&doc.path, &att.payer);
    let bytes = svc.core.vault().get(&doc.path, &context, Some(&doc.sha256)).await.map_err(|e| problem(&ctx, &e))?;
    tracing::info!(request_id = %ctx.request_id, partner = %ctx.caller.partner, attachment = %att.id, index = doc.index, by_url, "document read");
    if by_url {
        return transfer_download(&svc, &ctx, doc, bytes).await;
    }
    let mut resp = (StatusCode::OK, bytes).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&doc.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&doc.sha256) {
        headers.insert("x-content-sha256", v);
    }
    Ok(resp)
}

/// `GET /fhir/DocumentReference`: `identifier` (tracking id), `patient:identifier` or `subject:identifier`
/// (member id, `system|value` or `value`), `related:identifier` (claim), `date` (`geYYYY-MM-DD`, `ltYYYY-MM-DD`)
/// and `_count`. One DocumentReference per stored document, its content a link to the download route.
pub async fn search_document_references(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let viewer = viewer(&svc, &ctx)
        .await
        .map_err(|e| FhirError::from_port(&ctx.request_id, &e))?
        .ok_or_else(|| FhirError::Forbidden("DocumentReference search needs a payer or provider token".into()))?;
    let mut q = ListQuery::default();
    let value = |v: &str| v.rsplit_once('|').map(|(_, v)| v).unwrap_or(v).to_owned();
    for (name, v) in &params {
        match name.as_str() {
            "identifier" => q.tracking_id = Some(value(v)),
            "patient:identifier" | "subject:identifier" => q.member_id = Some(value(v)),
            "related:identifier" => q.claim = Some(value(v)),
            "date" => match v.split_at_checked(2) {
                Some(("ge", d)) => q.from = Some(d.to_owned()),
                Some(("lt", d)) => q.to = Some(d.to_owned()),
                _ => {
                    return Err(FhirError::invalid("value", "date takes the ge or lt prefix", Some("date")));
                }
            },
            "_count" => q.limit = v.parse().ok(),
            other => {
                return Err(FhirError::invalid(
                    "not-supported",
                    format!("search parameter {other:?} is not supported"),
                    None,
                ))
            }
        }
    }
    let found = find(&svc, &viewer, &q).await.map_err(|e| FhirError::from_port(&ctx.request_id, &e))?;
    found.iter().for_each(|a| audit_attachment(&ctx, a));
    let entries: Vec<Value> = found
        .iter()
        .flat_map(|att| att.documents.iter().map(move |d| (att, d)))
        .map(|(att, d)| json!({ "fullUrl": format!("urn:uuid:{}", uuid_like(&att.id, d.index)), "resource": document_reference(att, d), "search": { "mode": "match" } }))
        .collect();
    let bundle = json!({ "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries });
    let mut resp = Json(bundle).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    Ok(resp)
}

/// A stable UUID-shaped id for a document (fullUrl needs a URI; ids need not be UUIDs).
fn uuid_like(id: &str, index: u32) -> String {
    let h = exchange_core::record::sha256_hex(format!("{id}/{index}").as_bytes());
    format!("{}-{}-4{}-8{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// One stored document as a DocumentReference.
pub fn document_reference(att: &Attachment, d: &AttachedDocument) -> Value {
    let mut resource = json!({
        "resourceType": "DocumentReference",
        "id": format!("{}-{}", att.id, d.index),
        "identifier": [{ "system": att.tracking_system.clone().unwrap_or_else(|| "urn:exchange:tracking-id".into()), "value": att.tracking_id }],
        "status": "current",
        "subject": { "identifier": { "value": att.member_id } },
        "date": att.received,
        "content": [{ "attachment": {
            "contentType": d.content_type,
            "url": format!("/attachments/{}/documents/{}", att.id, d.index),
            "size": d.size,
        }}],
    });
    if !d.codes.is_empty() {
        resource["type"] = json!({ "coding": d.codes.iter().map(|c| json!({ "system": "http://loinc.org", "code": c })).collect::<Vec<_>>() });
    }
    if let Some(reference) = &att.reference {
        resource["context"] = json!({ "related": [{ "identifier": { "value": reference } }] });
    }
    resource
}
