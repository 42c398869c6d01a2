//! Keeping what happened: the raw inbound interchange and the answer in the vault (encrypted), an inquiry record
//! and an idempotency record in the state store, written together so nothing is half-written.

use exchange_core::app::App;
use exchange_core::http::CallerContext;
use exchange_core::ports::{Item, Key, PortError, WriteOp};
use exchange_core::record::vault_exchange;
use serde::{Deserialize, Serialize};

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

/// Vaults the request and the answer, then writes the inquiry record, the idempotency record and the request's
/// audit record in one transaction. On any failure the documents already written are removed and the error returned.
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
    let vaulted = vault_exchange(app, ctx, kind, request, response, payer).await?;
    let (request_path, response_path) = (vaulted.request_path.clone(), vaulted.response_path.clone());
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
        ops.push(vaulted.idempotency_op(key, content_type, status, payer, now)?);
    }
    // The request's audit record goes in the same transaction: the exchange is never kept unrecorded.
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    if let Err(e) = ctx.commit_audited(&app.audit, now, status, ops).await {
        vaulted.discard(app).await;
        return Err(e);
    }
    Ok(())
}
