//! Ports: the narrow traits the core needs from the world.
//!
//! Each port has an AWS adapter (`adapters::aws`, behind the `aws` feature) and an embedded adapter
//! (`adapters::embedded`) over real local storage. `adapters::memory` holds in-memory fakes for unit tests only.
//!
//! The state store is shaped like a DynamoDB single table: every item has a partition key `pk`, a sort key `sk`,
//! an optional secondary-index key pair (`gsi1pk`/`gsi1sk`), a `version` for optimistic updates, an optional
//! `ttl` (epoch seconds) and a JSON `body`.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Why a port operation failed. Adapters map their native errors into exactly one of these kinds.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A conditional write lost: the item already exists, or its version moved on.
    #[error("conditional write failed: {0}")]
    Conflict(String),
    /// The addressed item or document does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A document failed its integrity check (SHA-256 or authentication tag mismatch).
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The backing service is unreachable, throttling, or failed; a retry may help.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// The request to the port was malformed (a bug on our side, not the caller's).
    #[error("invalid port request: {0}")]
    Invalid(String),
}

impl PortError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Unavailable(_) | PortError::Conflict(_))
    }

    /// A stored record that does not decode. Names the record kind and the position only: serde's own message
    /// can quote the offending value, and stored records hold PHI.
    pub fn undecodable(what: &str, e: &serde_json::Error) -> Self {
        PortError::Invalid(format!(
            "stored {what} does not decode ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    }
}

/// Result of a port operation.
pub type PortResult<T> = Result<T, PortError>;

/// Primary key of a state item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// Partition key, e.g. `PARTNER#demo-provider`.
    pub pk: String,
    /// Sort key, e.g. `INQUIRY#2026-11-25T10:00:00Z#000000001`.
    pub sk: String,
}

impl Key {
    /// Builds a key from its two parts.
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key { pk: pk.into(), sk: sk.into() }
    }
}

/// One item of the single-table state store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Primary key.
    pub key: Key,
    /// Secondary index key (`gsi1pk`, `gsi1sk`), when the item is queried by another access pattern.
    pub gsi1: Option<Key>,
    /// Optimistic-concurrency version; 1 after the first write, incremented by every update.
    pub version: u64,
    /// Expiry in epoch seconds (idempotency and replay records); `None` keeps the item.
    pub ttl: Option<i64>,
    /// The item's attributes as JSON.
    pub body: serde_json::Value,
}

impl Item {
    /// A new item (version 1, no index key, no expiry).
    pub fn new(key: Key, body: serde_json::Value) -> Self {
        Item { key, gsi1: None, version: 1, ttl: None, body }
    }

    /// Sets the secondary index key.
    pub fn with_gsi1(mut self, gsi1: Key) -> Self {
        self.gsi1 = Some(gsi1);
        self
    }

    /// Sets the expiry (epoch seconds).
    pub fn with_ttl(mut self, ttl: i64) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// One write of a transaction. All writes of a transaction commit together or none does.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create an item that must not exist yet.
    PutNew(Item),
    /// Replace an item whose stored version must equal `expected_version`; the stored version becomes
    /// `expected_version + 1` (the `version` field of `item` is ignored).
    Update {
        /// The new content.
        item: Item,
        /// The version the caller read.
        expected_version: u64,
    },
    /// Delete an item whose stored version must equal `expected_version`.
    Delete {
        /// The item to delete.
        key: Key,
        /// The version the caller read.
        expected_version: u64,
    },
}

impl WriteOp {
    /// The key the write addresses.
    pub fn key(&self) -> &Key {
        match self {
            WriteOp::PutNew(item) | WriteOp::Update { item, .. } => &item.key,
            WriteOp::Delete { key, .. } => key,
        }
    }
}

/// A page of query results.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Items in ascending sort-key order.
    pub items: Vec<Item>,
    /// Opaque cursor for the next page, when more items match.
    pub next: Option<String>,
}

/// A query: items of one partition whose sort key starts with a prefix.
#[derive(Debug, Clone)]
pub struct Query {
    /// Partition key (`pk`, or `gsi1pk` on the index).
    pub pk: String,
    /// Sort-key prefix; empty matches every item of the partition.
    pub sk_prefix: String,
    /// Upper bound on returned items.
    pub limit: usize,
    /// Cursor from a previous page.
    pub after: Option<String>,
    /// Start after this sort key (exclusive) when there is no cursor: resumes a scan from a key the caller kept
    /// (the audit sealer's progress). Table queries only; ignored on the secondary index.
    pub start_after_sk: Option<String>,
}

impl Query {
    /// A query for up to `limit` items of `pk` whose sort key starts with `sk_prefix`.
    pub fn prefix(pk: impl Into<String>, sk_prefix: impl Into<String>, limit: usize) -> Self {
        Query { pk: pk.into(), sk_prefix: sk_prefix.into(), limit, after: None, start_after_sk: None }
    }

    /// This query, starting after sort key `sk` (exclusive).
    pub fn starting_after(mut self, sk: impl Into<String>) -> Self {
        self.start_after_sk = Some(sk.into());
        self
    }
}

/// Most writes one transaction holds: DynamoDB's limit, which every state store keeps so that code tested on the
/// embedded store never meets it first in AWS.
pub const MAX_TRANSACTION_WRITES: usize = 100;

/// The state store port (DynamoDB single table, or an embedded ACID database file).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Reads one item.
    async fn get(&self, key: &Key) -> PortResult<Option<Item>>;
    /// Creates an item; `Conflict` when the key already exists. The stored version is 1.
    async fn put_new(&self, item: Item) -> PortResult<()>;
    /// Replaces an item if its stored version equals `expected_version`; `Conflict` otherwise (also when it is
    /// missing). Returns the new version.
    async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64>;
    /// Items of one partition by sort-key prefix, ascending.
    async fn query(&self, query: &Query) -> PortResult<Page>;
    /// Items by secondary-index partition (`gsi1pk`) and sort-key (`gsi1sk`) prefix, ascending.
    async fn query_gsi1(&self, query: &Query) -> PortResult<Page>;
    /// Applies all writes atomically; `Conflict` (and nothing written) when any condition fails. At most
    /// [`MAX_TRANSACTION_WRITES`] writes, each to a different key (`Invalid` otherwise).
    async fn transact(&self, ops: Vec<WriteOp>) -> PortResult<()>;
    /// Atomically increments the counter stored at `key` (creating it at 0) and returns the new value.
    /// Never returns the same value twice for a key, across processes.
    async fn increment(&self, key: &Key) -> PortResult<u64>;
}

/// Encryption context: names the document and its payer. Bound into every encryption and checked on decryption,
/// so a ciphertext cannot be replayed under another document's name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionContext(pub BTreeMap<String, String>);

impl EncryptionContext {
    /// The context for a document addressed to a payer.
    pub fn for_document(document: &str, payer: &str) -> Self {
        let mut map = BTreeMap::new();
        map.insert("document".to_owned(), document.to_owned());
        map.insert("payer".to_owned(), payer.to_owned());
        EncryptionContext(map)
    }

    /// The context of the data key shared by the documents of one exchange (`exchange` = the part of their paths
    /// after `inbound/` or `outbound/`), addressed to a payer.
    pub fn for_exchange(exchange: &str, payer: &str) -> Self {
        let mut map = BTreeMap::new();
        map.insert("exchange".to_owned(), exchange.to_owned());
        map.insert("payer".to_owned(), payer.to_owned());
        EncryptionContext(map)
    }

    /// Canonical byte form (sorted `k=v` lines), used as AES-GCM associated data.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// A fresh 256-bit data key: the plaintext for one encryption, and its wrapped form to store beside the ciphertext.
pub struct DataKey {
    /// The key itself; drop it as soon as the document is encrypted.
    pub plaintext: [u8; 32],
    /// The key encrypted under the master key (a KMS ciphertext blob, or a locally wrapped key).
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("wrapped_len", &self.wrapped.len()).finish_non_exhaustive()
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.plaintext.fill(0);
    }
}

/// The key service port (KMS, or a locally generated key in the data directory).
#[async_trait]
pub trait KeyService: Send + Sync + 'static {
    /// Generates a data key bound to `context` (KMS `GenerateDataKey` with an encryption context).
    async fn generate_data_key(&self, context: &EncryptionContext) -> PortResult<DataKey>;
    /// Unwraps a data key; fails with `Integrity` when the context differs from the one it was generated under.
    async fn decrypt_data_key(&self, wrapped: &[u8], context: &EncryptionContext) -> PortResult<[u8; 32]>;
    /// Signs `message` with the exchange's token key: RSASSA-PKCS1-v1_5 with SHA-256 (JWS `RS256`) under an RSA
    /// key of 2048 bits or more. Returns the signature (as long as the modulus).
    async fn sign_rs256(&self, message: &[u8]) -> PortResult<Vec<u8>>;
    /// The public half of the token key, DER `RSAPublicKey` (PKCS#1). Callers cache it.
    async fn token_public_key(&self) -> PortResult<Vec<u8>>;
}

/// The raw blob store under the document vault (S3, or a folder). It stores bytes that are already encrypted.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Writes `bytes` at `path` (replacing any earlier object at that path).
    async fn put(&self, path: &str, bytes: Vec<u8>) -> PortResult<()>;
    /// Reads the object at `path`; `NotFound` when missing.
    async fn get(&self, path: &str) -> PortResult<Vec<u8>>;
    /// Deletes the object at `path`; deleting a missing object is not an error.
    async fn delete(&self, path: &str) -> PortResult<()>;
    /// The size in bytes of the object at `path` without reading it; `NotFound` when missing.
    async fn size(&self, path: &str) -> PortResult<u64>;
    /// Makes every write that has returned durable. S3 and plain files are durable when `put` returns; the embedded
    /// store's small documents become durable with the next durable commit, which a caller that writes no record
    /// after its document (an upload through a transfer URL) asks for here.
    async fn sync(&self) -> PortResult<()> {
        Ok(())
    }
}

/// A request the caller makes directly to the document store, bypassing the function (S3 presigned URL, or the
/// local runner's one-time URL): documents larger than a Lambda payload travel this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferUrl {
    /// `PUT` (upload) or `GET` (download).
    pub method: &'static str,
    /// The URL, credentials included; it is a bearer capability until it expires.
    pub url: String,
    /// Headers the caller must send exactly as given (they are part of the signature).
    pub headers: Vec<(String, String)>,
    /// When the URL stops working.
    pub expires_at: OffsetDateTime,
}

/// Issues [`TransferUrl`]s for blob paths. The blobs themselves are read and written through [`BlobStore`].
#[async_trait]
pub trait TransferUrls: Send + Sync + 'static {
    /// A URL that accepts one `PUT` of an object of `content_type` at `path` until `now + ttl`.
    async fn upload_url(
        &self,
        path: &str,
        content_type: &str,
        now: OffsetDateTime,
        ttl: std::time::Duration,
    ) -> PortResult<TransferUrl>;
    /// A URL that serves the object at `path` as `content_type` until `now + ttl`.
    async fn download_url(
        &self,
        path: &str,
        content_type: &str,
        now: OffsetDateTime,
        ttl: std::time::Duration,
    ) -> PortResult<TransferUrl>;
}

/// The clock port, so deadlines and dates are testable.
pub trait Clock: Send + Sync + 'static {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock stopped at one instant, for tests and benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// What a notification endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx status.
    Delivered(u16),
    /// Any other status (the endpoint is up but refused it).
    Refused(u16),
}

/// The outbound notifier port: POSTs a notification to a subscriber's endpoint (HTTPS in AWS).
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// POSTs `body` to `endpoint` with `headers`; `Unavailable` when the endpoint cannot be reached in time.
    async fn post(&self, endpoint: &str, headers: &[(String, String)], body: Vec<u8>) -> PortResult<Delivery>;
}
