//! Keeping what happened: the raw inbound interchange and the answer in the vault (encrypted), an inquiry record
//! and an idempotency record in the state store, written together so nothing is half-written.

use exchange_core::http::CallerContext;
use exchange_core::ports::{EncryptionContext, Item, Key, PortError, WriteOp};
use exchange_core::vault::StoredDocument;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::app::App;

/// How long an idempotency record replays the original answer.
pub const IDEMPOTENCY_TTL_SECS: i64 = 7 * 24 * 3600;

/// An idempotency record: which request it was (by hash) and where its answer is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the request body.
    pub request_sha256: String,
    /// Vault path of the answer.
    pub response_path: String,
    /// SHA-256 of the answer.
    pub response_sha256: String,
    /// Media type of the answer.
    pub content_type: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// Payer named in the documents' encryption context.
    pub payer: String,
}

/// What one inquiry request did (no PHI: ids, control numbers, counts, codes, timing).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InquiryRecord {
    /// Request id.
    pub request_id: String,
    /// Calling partner.
    pub partner: String,
    /// `x12` or `json`.
    pub channel: String,
    /// Inbound control number (ISA13, or the JSON controlNumber).
    pub inbound_control: Option<String>,
    /// Outbound ISA13.
    pub outbound_control: Option<u64>,
    /// Sets received.
    pub sets: usize,
    /// Sets rejected in a 999.
    pub rejected_sets: usize,
    /// Answers carrying an AAA.
    pub aaa_rejections: usize,
    /// TA1 note code when the interchange was rejected.
    pub ta1_note: Option<String>,
    /// Milliseconds spent.
    pub latency_ms: u64,
    /// Vault path of the raw request.
    pub request_path: String,
    /// Vault path of the answer.
    pub response_path: String,
    /// When.
    pub at: String,
}

/// SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The idempotency key of a request.
pub fn idempotency_key(ctx: &CallerContext, scope: &str, id: &str) -> Key {
    Key::new(format!("PARTNER#{}", ctx.caller.partner.as_str()), format!("IDEMP#{scope}#{id}"))
}

/// Looks up an earlier answer to the same request. `Some(Err)` when the key was used for a different body.
pub async fn replay(
    app: &App,
    key: &Key,
    body: &[u8],
) -> Result<Option<Result<(IdempotencyRecord, Vec<u8>), ()>>, PortError> {
    let Some(item) = app.store.get(key).await? else { return Ok(None) };
    let rec: IdempotencyRecord =
        serde_json::from_value(item.body).map_err(|e| PortError::Invalid(format!("idempotency record: {e}")))?;
    if rec.request_sha256 != sha256_hex(body) {
        return Ok(Some(Err(())));
    }
    let ctx = EncryptionContext::for_document(&rec.response_path, &rec.payer);
    let bytes = app.vault.get(&rec.response_path, &ctx, Some(&rec.response_sha256)).await?;
    Ok(Some(Ok((rec, bytes))))
}

fn date_path(t: OffsetDateTime) -> String {
    format!("{:04}/{:02}/{:02}", t.year(), u8::from(t.month()), t.day())
}

/// Vaults the request and the answer, then writes the inquiry record and the idempotency record in one
/// transaction. On any failure the documents already written are removed and the error returned.
#[allow(clippy::too_many_arguments)]
pub async fn keep(
    app: &App,
    ctx: &CallerContext,
    kind: &str,
    request: &[u8],
    response: &[u8],
    content_type: &str,
    status: u16,
    payer: &str,
    idempotency: Option<Key>,
    mut record: InquiryRecord,
) -> Result<(), PortError> {
    let now = app.clock.now();
    let partner = ctx.caller.partner.as_str();
    let base = format!("{kind}/{partner}/{}/{}", date_path(now), ctx.request_id);
    let request_path = format!("inbound/{base}");
    let response_path = format!("outbound/{base}");
    let stored_request: StoredDocument =
        app.vault.put(&request_path, &EncryptionContext::for_document(&request_path, payer), request).await?;
    let stored_response =
        match app.vault.put(&response_path, &EncryptionContext::for_document(&response_path, payer), response).await {
            Ok(s) => s,
            Err(e) => {
                let _ = app.vault.delete(&request_path).await;
                return Err(e);
            }
        };
    record.request_path = request_path.clone();
    record.response_path = response_path.clone();
    record.at = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let record_item = Item::new(
        Key::new(format!("PARTNER#{partner}"), format!("INQUIRY#{}#{}", record.at, ctx.request_id)),
        serde_json::to_value(&record).map_err(|e| PortError::Invalid(e.to_string()))?,
    )
    .with_gsi1(Key::new(
        format!("INQUIRIES#{}", &record.at[..record.at.len().min(10)]),
        format!("{}#{partner}", record.at),
    ));
    let mut ops = vec![WriteOp::PutNew(record_item)];
    if let Some(key) = idempotency {
        let rec = IdempotencyRecord {
            request_sha256: stored_request.sha256.clone(),
            response_path: response_path.clone(),
            response_sha256: stored_response.sha256.clone(),
            content_type: content_type.to_owned(),
            status,
            payer: payer.to_owned(),
        };
        let item = Item::new(key, serde_json::to_value(&rec).map_err(|e| PortError::Invalid(e.to_string()))?)
            .with_ttl(now.unix_timestamp() + IDEMPOTENCY_TTL_SECS);
        ops.push(WriteOp::PutNew(item));
    }
    if let Err(e) = app.store.transact(ops).await {
        let _ = app.vault.delete(&request_path).await;
        let _ = app.vault.delete(&response_path).await;
        return Err(e);
    }
    Ok(())
}
