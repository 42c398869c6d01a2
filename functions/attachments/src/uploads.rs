//! `POST /attachments/uploads`: a provider declares a document too large for a request body (media type, size,
//! SHA-256) and gets a one-time transfer URL to `PUT` it to (an S3 presigned URL in AWS, the runner's own URL
//! locally), and the reference to name it by in `$submit-attachment` (`DocumentReference.content.attachment.url`).
//!
//! The bytes never pass through the function on the way in; they are checked against the declaration and moved
//! into the vault (envelope-encrypted under the payer's context) when the submission names them. Staged bytes
//! that are never submitted are deleted by the clean-up sweep after [`SUBMIT_WINDOW`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use exchange_core::auth::{is_hex_digest, random_id};
use exchange_core::commit::Commit;
use exchange_core::domain::attachments::MAX_DOCUMENT_BYTES;
use exchange_core::domain::cleanup::CleanupLedger;
use exchange_core::domain::payer_data::bare_media_type;
use exchange_core::domain::prior_auth::rfc3339;
use exchange_core::domain::uploads::{
    upload_path, upload_reference, Upload, UploadRepo, UploadState, RECORD_RETENTION_SECS,
};
use exchange_core::domain::PartnerRole;
use exchange_core::http::{read_body_max, CallerContext, Problem};
use exchange_core::ports::TransferUrl;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Attachments;

/// How long the upload URL works.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(15 * 60);
/// How long staged bytes wait for the submission that names them.
pub const SUBMIT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Largest declaration body.
const MAX_DECLARATION_BYTES: usize = 4096;

/// The declaration.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Declaration {
    /// Media type of the document.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the document, hex.
    pub sha256: String,
}

fn unprocessable(slug: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, "The upload cannot be accepted").with_detail(detail)
}

/// The JSON view of a transfer URL.
pub fn transfer_view(t: &TransferUrl) -> Value {
    json!({
        "method": t.method,
        "url": t.url,
        "headers": t.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "expiresAt": rfc3339(t.expires_at),
    })
}

/// `POST /attachments/uploads`.
pub async fn create(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    if ctx.caller.role != PartnerRole::Provider || !ctx.caller.has_scope("attachments") {
        return Err(Problem::forbidden("uploads need a provider token with the attachments scope"));
    }
    let body = read_body_max(body, MAX_DECLARATION_BYTES)?;
    let d: Declaration = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("the body does not match the schema: {e}")))?;
    if d.size > MAX_DOCUMENT_BYTES as u64 {
        return Err(Problem::too_large(MAX_DOCUMENT_BYTES));
    }
    if d.size == 0 {
        return Err(unprocessable("empty-document", "size must be at least 1 byte"));
    }
    if !is_hex_digest(&d.sha256, 64) {
        return Err(unprocessable("invalid-sha256", "sha256 must be 64 hex digits"));
    }
    let core = &svc.core;
    let port = |e| Problem::from_port(&ctx.request_id, &e);
    let data = core.repo().current().await.map_err(port)?.ok_or_else(Problem::unavailable)?;
    let content_type = bare_media_type(&d.content_type);
    if !data.payer.accepts_content_type(&content_type) {
        return Err(unprocessable(
            "unsupported-content-type",
            format!("the payer does not accept attachment documents of type {content_type:?}"),
        ));
    }

    let now = core.clock().now();
    let id = random_id();
    let path = upload_path(&id);
    let expires_at = now + UPLOAD_URL_TTL;
    let upload = Upload {
        id: id.clone(),
        owner: ctx.caller.partner.as_str().to_owned(),
        content_type: content_type.clone(),
        size: d.size,
        sha256: d.sha256.to_ascii_lowercase(),
        expires: rfc3339(expires_at),
        retain_until: expires_at.unix_timestamp() + RECORD_RETENTION_SECS,
        state: UploadState::Pending,
    };
    // The ledger entry first: whatever is PUT to the URL is deleted once the submit window closes.
    CleanupLedger::new(core.store().clone())
        .schedule(vec![path.clone()], "upload", expires_at + SUBMIT_WINDOW)
        .await
        .map_err(port)?;
    ctx.audit_resource_on_commit("upload", &id);
    let op = UploadRepo::create_op(&upload).map_err(port)?;
    core.committer().commit(&ctx, Commit::answered(StatusCode::CREATED).write(op)).await.map_err(port)?;
    let url = core.transfers().upload_url(&path, &content_type, now, UPLOAD_URL_TTL).await.map_err(port)?;
    tracing::info!(request_id = %ctx.request_id, partner = %ctx.caller.partner, upload = %id, size = d.size, "upload issued");
    let view = json!({
        "id": id,
        "contentUrl": upload_reference(&id),
        "contentType": content_type,
        "size": d.size,
        "sha256": upload.sha256,
        "upload": transfer_view(&url),
        "submitBy": rfc3339(expires_at + SUBMIT_WINDOW),
    });
    Ok((StatusCode::CREATED, Json(view)).into_response())
}
