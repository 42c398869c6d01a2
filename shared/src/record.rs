//! Keeping what happened, and answering retries with it: raw requests and answers are vaulted (encrypted, SHA-256
//! checked), and an idempotency record names the answer a retried request gets back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::App;
use crate::http::CallerContext;
use std::sync::Arc;

use crate::ports::{Clock, EncryptionContext, Item, Key, PortError, StateStore, WriteOp};
use crate::vault::{DocumentVault, StoredDocument};

/// How long an idempotency record replays the original answer.
pub const IDEMPOTENCY_TTL_SECS: i64 = 7 * 24 * 3600;

/// An idempotency record: which request it was (by hash) and where its answer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(crate::vault::sha256(bytes))
}

/// The idempotency key of a request in `scope` (`X12-270`, `PAS`, ...) identified by `id`.
pub fn idempotency_key(ctx: &CallerContext, scope: &str, id: &str) -> Key {
    Key::new(format!("PARTNER#{}", ctx.caller.partner.as_str()), format!("IDEMP#{scope}#{id}"))
}

/// The records every flow keeps of an exchange: the request and its answer in the vault, and the idempotency
/// records that replay the answer to a retry. A service holds one (built from the app's store, vault and clock).
#[derive(Clone)]
pub struct ExchangeRecords {
    store: Arc<dyn StateStore>,
    vault: Arc<DocumentVault>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ExchangeRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRecords").finish_non_exhaustive()
    }
}

/// What looking up a request's idempotency key found: `None` when nothing, `Some(Err)` when the key was used for a
/// different body, and otherwise the record and the answer it names.
pub type Replay = Option<Result<(IdempotencyRecord, bytes::Bytes), ()>>;

impl ExchangeRecords {
    /// The records over `store` and `vault`, dated by `clock`.
    pub fn new(store: Arc<dyn StateStore>, vault: Arc<DocumentVault>, clock: Arc<dyn Clock>) -> Self {
        ExchangeRecords { store, vault, clock }
    }

    /// The answer an idempotency record names.
    pub async fn stored_answer(&self, rec: &IdempotencyRecord) -> Result<bytes::Bytes, PortError> {
        let ctx = EncryptionContext::for_document(&rec.response_path, &rec.payer);
        self.vault.get(&rec.response_path, &ctx, Some(&rec.response_sha256)).await
    }

    /// An earlier answer to the same request (see [`Replay`]).
    pub async fn replay(&self, key: &Key, body: &[u8]) -> Result<Replay, PortError> {
        let Some(item) = self.store.get(key).await? else { return Ok(None) };
        let rec: IdempotencyRecord =
            serde_json::from_value(item.body).map_err(|e| PortError::undecodable("idempotency record", &e))?;
        if rec.request_sha256 != sha256_hex(body) {
            return Ok(Some(Err(())));
        }
        let bytes = self.stored_answer(&rec).await?;
        Ok(Some(Ok((rec, bytes))))
    }

    /// Vaults a request and its answer under `inbound/KIND/PARTNER/DATE/REQUEST_ID` and `outbound/...`, each bound
    /// to a context naming the document and `payer`, under one data key for the exchange (one KMS call, not two).
    /// Name them in the commit that records the exchange ([`crate::commit::Commit::keeping_exchange`]).
    pub async fn vault_exchange(
        &self,
        ctx: &CallerContext,
        kind: &str,
        request: &[u8],
        response: &[u8],
        payer: &str,
    ) -> Result<VaultedExchange, PortError> {
        let now = self.clock.now();
        let base = format!("{kind}/{}/{}/{}", ctx.caller.partner.as_str(), date_path(now), ctx.request_id);
        let request_path = format!("inbound/{base}");
        let response_path = format!("outbound/{base}");
        ctx.audit_resource("exchange", &base);
        let request_context = EncryptionContext::for_document(&request_path, payer);
        let response_context = EncryptionContext::for_document(&response_path, payer);
        let key_context = EncryptionContext::for_exchange(&base, payer);
        let documents =
            [(request_path.as_str(), &request_context, request), (response_path.as_str(), &response_context, response)];
        let mut stored = self.vault.put_exchange(&key_context, &documents).await?.into_iter();
        match (stored.next(), stored.next()) {
            (Some(request), Some(response)) => Ok(VaultedExchange { request_path, response_path, request, response }),
            _ => Err(PortError::Invalid("the vault stored fewer documents than given".into())),
        }
    }
}

/// Looks up an earlier answer to the same request ([`ExchangeRecords::replay`] over the app's ports).
pub async fn replay(app: &App, key: &Key, body: &[u8]) -> Result<Replay, PortError> {
    app.exchange_records().replay(key, body).await
}

fn date_path(t: OffsetDateTime) -> String {
    format!("{:04}/{:02}/{:02}", t.year(), u8::from(t.month()), t.day())
}

/// A request and its answer, vaulted; the records naming them are committed with
/// [`crate::commit::Commit::keeping_exchange`], which deletes them if that commit fails.
#[derive(Debug, Clone)]
pub struct VaultedExchange {
    /// Vault path of the request.
    pub request_path: String,
    /// Vault path of the answer.
    pub response_path: String,
    /// The stored request.
    pub request: StoredDocument,
    /// The stored answer.
    pub response: StoredDocument,
}

impl VaultedExchange {
    /// The idempotency record that replays this answer.
    pub fn idempotency_record(&self, content_type: &str, status: u16, payer: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            request_sha256: self.request.sha256.clone(),
            response_path: self.response_path.clone(),
            response_sha256: self.response.sha256.clone(),
            content_type: content_type.to_owned(),
            status,
            payer: payer.to_owned(),
        }
    }

    /// The write that creates the idempotency record under `key` (expiring after [`IDEMPOTENCY_TTL_SECS`]), for
    /// the transaction that records the exchange.
    pub fn idempotency_op(
        &self,
        key: Key,
        content_type: &str,
        status: u16,
        payer: &str,
        now: OffsetDateTime,
    ) -> Result<WriteOp, PortError> {
        let rec = self.idempotency_record(content_type, status, payer);
        let body = serde_json::to_value(&rec).map_err(|e| PortError::Invalid(e.to_string()))?;
        Ok(WriteOp::PutNew(Item::new(key, body).with_ttl(now.unix_timestamp() + IDEMPOTENCY_TTL_SECS)))
    }
}
