//! The audit trail: one record per authenticated request (who, which client, what operation, which resources and
//! members, the outcome, the request id, when), immutable, sealed into signed digests so that a changed, removed or
//! inserted record is found by [`verify::verify`].
//!
//! Modelled on AWS CloudTrail log-file integrity validation:
//! - **Records** ([`AuditLog::append_with`]) are written in the request's own transaction, each as a new item on a
//!   key of its own (`AUDIT#<day>#<shard>` / `<at>#<request id>#<nonce>`), conditional on not existing. Nothing is
//!   shared with any other request: no chain head, no counter, so a busy partner's requests never contend (in
//!   DynamoDB no item is written by two requests). Each member a record names gets an index item of its own
//!   (`AUDITMEMBER#<member>`) for the member's history; the record's secondary-index key (`AUDITPARTNER#<partner>`)
//!   serves the partner's history.
//! - **Digests** ([`seal::Sealer`]): a single sealer (the worker in AWS, a task in the local runner) takes the
//!   records older than [`seal::SEAL_GRACE`] in key order, groups them per partner, and writes for each partner a
//!   digest listing its records' keys and hashes, their RFC 6962 Merkle root, the window sealed and the previous
//!   digest's hash, signed by the exchange's audit-signing key (KMS in AWS) and stored where it cannot be changed
//!   (S3 Object Lock, compliance mode; locally a folder).
//! - **Verification** ([`verify::verify`]) checks every digest's signature and chain, every listed record against
//!   its hash, and every stored record against the digests, offline.
//!
//! Nothing here has a TTL: the records are kept (six years; see the README on retention).

pub mod seal;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ports::{Item, Key, PortError, PortResult, Query, StateStore, WriteOp, MAX_TRANSACTION_WRITES};

/// Record partitions per day: spreads one day's records over this many DynamoDB partitions.
pub const AUDIT_SHARDS: u32 = 16;

/// Most members one record indexes (a record about more names them all, but indexes the first ones): DynamoDB
/// transactions hold 100 writes, and the record takes one.
pub const MAX_INDEXED_MEMBERS: usize = 90;

/// Attempts of a transaction that DynamoDB cancelled for contention on the caller's own items.
const APPEND_ATTEMPTS: u32 = 4;

/// What a request did, as FHIR AuditEvent.action codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// Create.
    C,
    /// Read (view, search).
    R,
    /// Update.
    U,
    /// Delete.
    D,
    /// Execute (an operation such as `$submit` or a CDS hook).
    E,
}

impl AuditAction {
    /// From an HTTP method: GET reads, PUT updates, DELETE deletes, POST creates (operations say [`AuditAction::E`]
    /// themselves).
    pub fn from_method(method: &str, path: &str) -> Self {
        match method {
            "GET" | "HEAD" => AuditAction::R,
            "PUT" | "PATCH" => AuditAction::U,
            "DELETE" => AuditAction::D,
            _ if path.contains('$') || path.starts_with("/cds-services") || path.starts_with("/x12/") => AuditAction::E,
            _ => AuditAction::C,
        }
    }
}

/// What one request is recorded as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When (RFC 3339, UTC, milliseconds: see [`timestamp`]).
    pub at: String,
    /// The partner the caller's token names.
    pub partner: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// What it did.
    pub action: AuditAction,
    /// The route (`POST /fhir/Claim/$submit`): the template, never the raw path or query.
    pub operation: String,
    /// Ids of what the request touched (`case/…`, `attachment/…`, `assertion/…`).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Member ids the request was about.
    #[serde(default)]
    pub members: Vec<String>,
    /// The HTTP status answered.
    pub outcome: u16,
    /// The request id (`x-request-id`).
    pub request_id: String,
}

/// A record as stored: its key, what happened, and the hash the digests list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Partition key (`AUDIT#<day>#<shard>`).
    pub pk: String,
    /// Sort key (`<at>#<request id>#<nonce>`): sorts by time.
    pub sk: String,
    /// What happened.
    pub entry: AuditEntry,
    /// SHA-256 (hex) over the canonical JSON of pk, sk and entry.
    pub hash: String,
}

impl AuditRecord {
    /// The record's primary key.
    pub fn key(&self) -> Key {
        Key::new(self.pk.clone(), self.sk.clone())
    }
}

/// The fields a record's hash covers, in a fixed order (serde serializes struct fields in declaration order, so
/// the bytes are canonical for a given record).
#[derive(Serialize)]
struct Hashed<'a> {
    pk: &'a str,
    sk: &'a str,
    entry: &'a AuditEntry,
}

/// The hash of a record stored at `pk`/`sk` holding `entry`.
pub fn record_hash(pk: &str, sk: &str, entry: &AuditEntry) -> PortResult<String> {
    let bytes = serde_json::to_vec(&Hashed { pk, sk, entry })
        .map_err(|e| PortError::Invalid(format!("audit entry does not serialize: {e}")))?;
    Ok(hex::encode(crate::vault::sha256(&bytes)))
}

/// The record partition of `day` (`YYYY-MM-DD`) and `shard`.
pub(crate) fn record_pk(day: &str, shard: u32) -> String {
    format!("AUDIT#{day}#{shard:02}")
}

/// The day (`YYYY-MM-DD`) of an [`AuditEntry::at`] or of a record sort key.
pub(crate) fn day_of(at: &str) -> &str {
    at.get(..10).unwrap_or(at)
}

fn partner_gsi(partner: &str) -> String {
    format!("AUDITPARTNER#{partner}")
}

/// Appends records and reads them back.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn crate::ports::Clock>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// The log over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        AuditLog { store, clock: Arc::new(crate::ports::SystemClock) }
    }

    /// Stamps records with `clock` (the system clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn crate::ports::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The state store the records live in.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Writes `entry` as a record of its own and returns it.
    pub async fn append(&self, entry: AuditEntry) -> PortResult<AuditRecord> {
        self.append_with(entry, Vec::new()).await
    }

    /// Writes `entry` as a record and applies the caller's `ops` in the same transaction: the write and its audit
    /// record commit together or not at all (and an embedded store pays one durable commit for both).
    ///
    /// The record shares no item with any other request, so the only `Conflict` is one of `ops`' own conditions
    /// failing. A transaction cancelled for contention (DynamoDB's `TransactionConflict` on the caller's own items,
    /// which the adapter also reports as `Conflict`) is told apart by checking `ops` against the store, and retried.
    /// When `ops` and the record's writes would exceed [`MAX_TRANSACTION_WRITES`], the record indexes fewer of its
    /// members (it still names them all); `Invalid`, with nothing written, when `ops` leave no room for the record.
    pub async fn append_with(&self, entry: AuditEntry, ops: Vec<WriteOp>) -> PortResult<AuditRecord> {
        let Some(room) = MAX_TRANSACTION_WRITES.checked_sub(ops.len() + 1) else {
            return Err(PortError::Invalid(format!(
                "{} writes leave no room for the audit record in one transaction",
                ops.len()
            )));
        };
        let indexed = room.min(MAX_INDEXED_MEMBERS);
        let mut entry = entry;
        for attempt in 0..APPEND_ATTEMPTS {
            // Stamped just before each attempt, not when the request began: the sealer takes records by time and
            // a record must land within its grace period of its own timestamp.
            entry.at = timestamp(self.clock.now()).max(entry.at.clone());
            let record = new_record(entry.clone())?;
            let mut writes = record_ops(&record, indexed)?;
            writes.extend(ops.iter().cloned());
            match self.store.transact(writes).await {
                Ok(()) => {
                    // A digest of the record (no PHI): with the sealed digests, an independent copy in the log.
                    tracing::debug!(audit_record = %record.hash, "audit appended");
                    return Ok(record);
                }
                Err(PortError::Conflict(why)) => {
                    if self.any_condition_fails(&ops).await? {
                        return Err(PortError::Conflict(why));
                    }
                    let jitter = u64::from(rand::random::<u8>() % 8);
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 4 + jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PortError::Unavailable("the transaction was cancelled for contention; retry".into()))
    }

    /// Whether one of `ops`' conditions fails against the store as it is now: a create whose item exists, an
    /// update or delete whose item is gone or at another version.
    async fn any_condition_fails(&self, ops: &[WriteOp]) -> PortResult<bool> {
        for op in ops {
            let fails = match op {
                WriteOp::PutNew(item) => self.store.get(&item.key).await?.is_some(),
                WriteOp::Update { item, expected_version } => {
                    self.store.get(&item.key).await?.is_none_or(|i| i.version != *expected_version)
                }
                WriteOp::Delete { key, expected_version } => {
                    self.store.get(key).await?.is_none_or(|i| i.version != *expected_version)
                }
            };
            if fails {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One record by key.
    pub async fn record(&self, key: &Key) -> PortResult<Option<AuditRecord>> {
        self.store.get(key).await?.map(decode_record).transpose()
    }

    /// A partner's history, oldest first, at most `limit` records.
    pub async fn partner_history(&self, partner: &str, limit: usize) -> PortResult<Vec<AuditRecord>> {
        let mut q = Query::prefix(partner_gsi(partner), "", limit.clamp(1, 1000));
        let mut out = Vec::new();
        loop {
            let page = self.store.query_gsi1(&q).await?;
            for item in page.items {
                out.push(decode_record(item)?);
            }
            match page.next {
                Some(next) if out.len() < limit => q.after = Some(next),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The records that name `member`, oldest first, at most `limit`.
    pub async fn member_history(&self, member: &str, limit: usize) -> PortResult<Vec<AuditRecord>> {
        let mut q = Query::prefix(member_pk(member), "", limit.clamp(1, 1000));
        let mut out = Vec::new();
        loop {
            let page = self.store.query(&q).await?;
            for item in &page.items {
                let (Some(pk), Some(sk)) = (item.body["pk"].as_str(), item.body["sk"].as_str()) else {
                    continue;
                };
                if let Some(rec) = self.record(&Key::new(pk, sk)).await? {
                    // Index items are derived: one that does not point at a record naming the member is not history.
                    let names = rec.entry.members.iter().any(|m| m.eq_ignore_ascii_case(member));
                    if names && !out.iter().any(|r: &AuditRecord| r.sk == rec.sk && r.pk == rec.pk) {
                        out.push(rec);
                    }
                }
            }
            match page.next {
                Some(next) if out.len() < limit => q.after = Some(next),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// The record `entry` is stored as: its key (day and shard from the time and the request id; a random nonce keeps
/// two records of one request apart) and its hash.
fn new_record(entry: AuditEntry) -> PortResult<AuditRecord> {
    let shard = u32::from(crate::vault::sha256(entry.request_id.as_bytes())[0]) % AUDIT_SHARDS;
    let pk = record_pk(day_of(&entry.at), shard);
    let nonce: [u8; 4] = rand::random();
    let sk = format!("{}#{}#{}", entry.at, entry.request_id, hex::encode(nonce));
    let hash = record_hash(&pk, &sk, &entry)?;
    Ok(AuditRecord { pk, sk, entry, hash })
}

fn member_pk(member: &str) -> String {
    // Member ids compare without case (as everywhere in the exchange); a hash bounds the key for anything longer.
    let member = member.to_ascii_uppercase();
    if member.len() <= 64 && member.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        format!("AUDITMEMBER#{member}")
    } else {
        format!("AUDITMEMBER#h{}", hex::encode(&crate::vault::sha256(member.as_bytes())[..16]))
    }
}

pub(crate) fn decode_record(item: Item) -> PortResult<AuditRecord> {
    serde_json::from_value(item.body).map_err(|e| PortError::undecodable("audit record", &e))
}

/// The writes of one record: the record itself (created, never replaced) and its member index items.
fn record_ops(record: &AuditRecord, indexed_members: usize) -> PortResult<Vec<WriteOp>> {
    let body = serde_json::to_value(record).map_err(|e| PortError::Invalid(e.to_string()))?;
    let item = Item::new(record.key(), body).with_gsi1(Key::new(partner_gsi(&record.entry.partner), &record.sk));
    let mut ops = vec![WriteOp::PutNew(item)];
    let mut members: Vec<&String> = record.entry.members.iter().collect();
    members.sort();
    members.dedup();
    for member in members.into_iter().take(indexed_members) {
        ops.push(WriteOp::PutNew(Item::new(
            Key::new(member_pk(member), &record.sk),
            json!({"pk": record.pk, "sk": record.sk}),
        )));
    }
    Ok(ops)
}

/// A record as a FHIR R4 AuditEvent (type `rest`), for exports.
pub fn as_audit_event(rec: &AuditRecord) -> Value {
    let e = &rec.entry;
    let outcome = match e.outcome {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    };
    let mut entities: Vec<Value> = e
        .resources
        .iter()
        .map(|r| json!({"what": {"identifier": {"value": r}}, "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"}}))
        .collect();
    entities.extend(e.members.iter().map(|m| {
        json!({"what": {"identifier": {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": m}},
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
               "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}})
    }));
    // FHIR ids are [A-Za-z0-9-.]{1,64}: the record's hash names it uniquely.
    let id = rec.hash.get(..64).unwrap_or(&rec.hash);
    json!({
        "resourceType": "AuditEvent",
        "id": id,
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "action": e.action,
        "recorded": e.at,
        "outcome": outcome,
        "outcomeDesc": format!("HTTP {}", e.outcome),
        "agent": [{
            "who": {"identifier": {"system": "urn:exchange:partner", "value": e.partner}},
            "altId": e.client_id,
            "requestor": true
        }],
        "source": {"observer": {"display": "payer-provider-exchange"}, "site": e.operation},
        "entity": entities,
        "extension": [
            {"url": "urn:exchange:audit:request-id", "valueString": e.request_id},
            {"url": "urn:exchange:audit:key", "valueString": format!("{}/{}", rec.pk, rec.sk)},
            {"url": "urn:exchange:audit:hash", "valueString": rec.hash}
        ]
    })
}

/// `at` for an entry: RFC 3339 UTC with milliseconds (sorts as text).
pub fn timestamp(now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;

    pub(crate) fn entry_at(partner: &str, request_id: &str, members: &[&str], at: &str) -> AuditEntry {
        AuditEntry {
            at: at.into(),
            partner: partner.into(),
            client_id: partner.into(),
            action: AuditAction::R,
            operation: "GET /attachments/{id}".into(),
            resources: vec!["attachment/a1".into()],
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            outcome: 200,
            request_id: request_id.into(),
        }
    }

    fn entry(partner: &str, request_id: &str, members: &[&str]) -> AuditEntry {
        entry_at(partner, request_id, members, "2026-03-10T10:00:00.000Z")
    }

    #[tokio::test]
    async fn records_are_kept_apart_and_read_back_by_partner_and_member() {
        let log = AuditLog::new(Arc::new(MemoryStateStore::new()));
        for i in 0..5 {
            log.append(entry("demo-provider", "req-1", &[&format!("M{i}")])).await.expect("append");
        }
        log.append(entry("other", "req-2", &["M3"])).await.expect("append");
        assert_eq!(log.partner_history("demo-provider", 10).await.expect("partner").len(), 5);
        assert_eq!(log.partner_history("other", 10).await.expect("partner").len(), 1);
        assert_eq!(log.member_history("M3", 10).await.expect("member").len(), 2);
        assert_eq!(log.member_history("m3", 10).await.expect("member").len(), 2, "member ids compare without case");
    }

    #[tokio::test]
    async fn concurrent_appends_of_one_partner_never_contend() {
        let log = AuditLog::new(Arc::new(MemoryStateStore::new()));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(entry("busy", &format!("r{}", i % 2), &[])).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("append");
        }
        assert_eq!(log.partner_history("busy", 100).await.expect("history").len(), 64);
    }

    #[tokio::test]
    async fn a_write_and_its_record_commit_together_or_not_at_all() {
        let store = Arc::new(MemoryStateStore::new());
        let log = AuditLog::new(store.clone());
        let case = |id: &str| WriteOp::PutNew(Item::new(Key::new("CASE#1", id), json!({"n": 1})));
        log.append_with(entry("p", "r1", &["M1"]), vec![case("A")]).await.expect("append with a write");
        assert!(store.get(&Key::new("CASE#1", "A")).await.expect("get").is_some());

        // The write's own condition fails: Conflict, and neither the write nor a record is kept.
        let refused = log.append_with(entry("p", "r1", &["M2"]), vec![case("A")]).await;
        assert!(matches!(refused, Err(PortError::Conflict(_))), "{refused:?}");
        assert_eq!(log.partner_history("p", 10).await.expect("history").len(), 1);
        assert!(log.member_history("M2", 10).await.expect("history").is_empty());
    }

    #[tokio::test]
    async fn writes_leaving_no_room_for_the_record_write_nothing_and_big_ones_index_fewer_members() {
        let store = Arc::new(MemoryStateStore::new());
        let log = AuditLog::new(store.clone());
        let many = |n: usize, pk: &str| -> Vec<WriteOp> {
            (0..n).map(|i| WriteOp::PutNew(Item::new(Key::new(pk, format!("{i:03}")), json!({})))).collect()
        };
        let refused = log.append_with(entry("p", "r", &["M1"]), many(100, "TOO")).await;
        assert!(matches!(refused, Err(PortError::Invalid(_))), "{refused:?}");
        assert!(store.query(&Query::prefix("TOO", "", 200)).await.expect("items").items.is_empty());
        assert!(log.partner_history("p", 10).await.expect("history").is_empty());

        // 98 writes leave room for the record and one member index item.
        let rec = log.append_with(entry("p", "r", &["M1", "M2"]), many(98, "FITS")).await.expect("append");
        assert_eq!(store.query(&Query::prefix("FITS", "", 200)).await.expect("items").items.len(), 98);
        assert_eq!(rec.entry.members, ["M1", "M2"], "the record names every member");
        assert_eq!(log.member_history("M1", 10).await.expect("history").len(), 1);
        assert!(log.member_history("M2", 10).await.expect("history").is_empty(), "no room to index the second");
    }

    #[test]
    fn audit_events_carry_the_outcome_and_the_members() {
        let rec = new_record(AuditEntry { outcome: 404, ..entry("p", "r", &["M1"]) }).expect("record");
        let ev = as_audit_event(&rec);
        assert_eq!(ev["outcome"], "4");
        assert_eq!(ev["action"], "R");
        assert_eq!(ev["entity"][1]["what"]["identifier"]["value"], "M1");
        assert_eq!(ev["id"].as_str().map(str::len), Some(64));
    }
}
