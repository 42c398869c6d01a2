//! The audit trail: one record per authenticated request (who, which client, what operation, which resources and
//! members, the outcome, the request id, when), append-only and hash-chained, so that a changed, removed or
//! truncated record is found by [`verify`].
//!
//! Records are kept in chains: one per partner and shard (`AUDIT#<partner>#<shard>`), each a run of items
//! `SEQ#<seq>` (seq from 1, no gaps) and a `HEAD` item naming the last seq and its hash. A record's hash is
//! SHA-256 over the previous record's hash and the record's canonical JSON; appending writes the record and moves
//! the head in one transaction, conditional on the head's version, so two appends never take the same seq. The
//! shards (a request's id picks one) keep a busy partner's concurrent requests from contending for one head. Each
//! member a record names gets an index item (`AUDITMEMBER#<member id>`) in the same transaction, for a member's
//! history. Nothing here has a TTL: the records are kept (six years; see the README on retention).
//!
//! The chain protects against edits of part of the trail; an attacker able to rewrite every record from some
//! point and the head could forge a consistent tail, so each append logs the new head hash (no PHI: a digest) to
//! the function's log, an independent copy to check the head against.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ports::{Item, Key, PortError, PortResult, Query, StateStore, WriteOp, MAX_TRANSACTION_WRITES};

/// Chains per partner.
pub const AUDIT_SHARDS: u32 = 8;

/// The hash before a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most members one record indexes (a record about more names them all, but indexes the first ones): DynamoDB
/// transactions hold 100 writes, and an append takes up to three more.
pub const MAX_INDEXED_MEMBERS: usize = 90;

/// Attempts to take a chain's next seq when concurrent appends race for it.
const APPEND_ATTEMPTS: u32 = 12;

/// The chains' registry partition: one item per chain, so [`verify`] finds every chain.
const CHAINS_PK: &str = "AUDITCHAINS";

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

/// What one request is recorded as (before it is chained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When (RFC 3339, UTC).
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

/// A chained record, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// The chain (`<partner>#<shard>`).
    pub chain: String,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The previous record's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// What happened.
    pub entry: AuditEntry,
    /// SHA-256 (hex) over `prev` and the canonical JSON of chain, seq and entry.
    pub hash: String,
}

/// The fields a record's hash covers, in a fixed order (serde serializes struct fields in declaration order, so
/// the bytes are canonical for a given record).
#[derive(Serialize)]
struct Hashed<'a> {
    chain: &'a str,
    seq: u64,
    prev: &'a str,
    entry: &'a AuditEntry,
}

/// The hash of the record at `seq` of `chain` after `prev`.
pub fn record_hash(chain: &str, seq: u64, prev: &str, entry: &AuditEntry) -> PortResult<String> {
    let bytes = serde_json::to_vec(&Hashed { chain, seq, prev, entry })
        .map_err(|e| PortError::Invalid(format!("audit entry does not serialize: {e}")))?;
    Ok(hex::encode(crate::vault::sha256(&bytes)))
}

fn chain_pk(chain: &str) -> String {
    format!("AUDIT#{chain}")
}

fn seq_sk(seq: u64) -> String {
    format!("SEQ#{seq:012}")
}

/// The chain a request of `partner` with `request_id` appends to.
pub fn chain_for(partner: &str, request_id: &str) -> String {
    let shard = crate::vault::sha256(request_id.as_bytes())[0] as u32 % AUDIT_SHARDS;
    format!("{partner}#{shard}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// Appends records and reads them back.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// The log over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        AuditLog { store }
    }

    /// Appends `entry` to its partner's chain (the shard its request id picks) and returns the record.
    pub async fn append(&self, entry: AuditEntry) -> PortResult<AuditRecord> {
        self.append_with(entry, Vec::new()).await
    }

    /// Appends `entry` and applies the caller's `ops` in the same transaction: the write and its audit record
    /// commit together or not at all (and an embedded store pays one durable commit for both).
    ///
    /// `Conflict` when one of `ops`' own conditions fails; a transaction lost only to another append on the same
    /// chain (the head moved, or DynamoDB cancelled it for contention) is retried. When `ops` and the record's
    /// writes would exceed [`MAX_TRANSACTION_WRITES`], the record indexes fewer of its members (it still names them
    /// all); `Invalid`, with nothing written, when `ops` leave no room for the record itself.
    pub async fn append_with(&self, entry: AuditEntry, ops: Vec<WriteOp>) -> PortResult<AuditRecord> {
        let chain = chain_for(&entry.partner, &entry.request_id);
        let head_key = Key::new(chain_pk(&chain), "HEAD");
        let Some(room) = MAX_TRANSACTION_WRITES.checked_sub(ops.len() + 3) else {
            return Err(PortError::Invalid(format!(
                "{} writes leave no room for the audit record in one transaction",
                ops.len()
            )));
        };
        let indexed = room.min(MAX_INDEXED_MEMBERS);
        for attempt in 0..APPEND_ATTEMPTS {
            let (head, version) = self.read_head(&head_key).await?;
            let seq = head.seq + 1;
            let hash = record_hash(&chain, seq, &head.hash, &entry)?;
            let record = AuditRecord { chain: chain.clone(), seq, prev: head.hash, entry: entry.clone(), hash };
            let mut writes = append_ops(&record, version, indexed)?;
            writes.extend(ops.iter().cloned());
            match self.store.transact(writes).await {
                Ok(()) => {
                    tracing::info!(audit_chain = %record.chain, audit_seq = seq, audit_head = %record.hash, "audit appended");
                    return Ok(record);
                }
                Err(PortError::Conflict(why)) => {
                    // The caller's own condition failing is the caller's answer; anything else was another
                    // append taking this seq (or contending for the head): take the next.
                    if self.any_condition_fails(&ops).await? {
                        return Err(PortError::Conflict(why));
                    }
                    let jitter = u64::from(rand::random::<u8>() % 8);
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2 + jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PortError::Unavailable("the audit chain is too busy; retry".into()))
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

    /// A chain's head and its item version (genesis and 0 for a chain never written).
    async fn read_head(&self, head_key: &Key) -> PortResult<(Head, u64)> {
        match self.store.get(head_key).await? {
            Some(item) => {
                let head: Head =
                    serde_json::from_value(item.body).map_err(|e| PortError::undecodable("audit head", &e))?;
                Ok((head, item.version))
            }
            None => Ok((Head { seq: 0, hash: GENESIS.to_owned() }, 0)),
        }
    }

    /// A page of a chain's records in order, at most `limit`, from the start or from a previous page's cursor;
    /// returns the records and the next page's cursor.
    pub async fn records(
        &self,
        chain: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> PortResult<(Vec<AuditRecord>, Option<String>)> {
        let mut q = Query::prefix(chain_pk(chain), "SEQ#", limit);
        q.after = cursor;
        let page = self.store.query(&q).await?;
        let records = page.items.into_iter().map(decode_record).collect::<PortResult<Vec<_>>>()?;
        Ok((records, page.next))
    }

    /// Every chain there is.
    pub async fn chains(&self) -> PortResult<Vec<String>> {
        let mut out = Vec::new();
        let mut q = Query::prefix(CHAINS_PK, "", 1000);
        loop {
            let page = self.store.query(&q).await?;
            out.extend(page.items.into_iter().map(|i| i.key.sk));
            match page.next {
                Some(next) => q.after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// A chain's head: (last seq, its hash); `None` for a chain never written.
    pub async fn head(&self, chain: &str) -> PortResult<Option<(u64, String)>> {
        match self.store.get(&Key::new(chain_pk(chain), "HEAD")).await? {
            Some(item) => {
                let head: Head =
                    serde_json::from_value(item.body).map_err(|e| PortError::undecodable("audit head", &e))?;
                Ok(Some((head.seq, head.hash)))
            }
            None => Ok(None),
        }
    }

    /// A partner's history (every shard), oldest first, at most `limit` records.
    pub async fn partner_history(&self, partner: &str, limit: usize) -> PortResult<Vec<AuditRecord>> {
        let mut all = Vec::new();
        for shard in 0..AUDIT_SHARDS {
            let chain = format!("{partner}#{shard}");
            let mut cursor = None;
            loop {
                let (page, next) = self.records(&chain, cursor, 500).await?;
                all.extend(page);
                match next {
                    Some(next) if all.len() <= limit * 2 => cursor = Some(next),
                    _ => break,
                }
            }
        }
        all.sort_by(|a, b| (&a.entry.at, &a.chain, a.seq).cmp(&(&b.entry.at, &b.chain, b.seq)));
        all.truncate(limit);
        Ok(all)
    }

    /// The records that name `member`, oldest first, at most `limit`.
    pub async fn member_history(&self, member: &str, limit: usize) -> PortResult<Vec<AuditRecord>> {
        let mut q = Query::prefix(member_pk(member), "", limit.min(1000));
        let mut out = Vec::new();
        loop {
            let page = self.store.query(&q).await?;
            for item in &page.items {
                let (Some(chain), Some(seq)) = (item.body["chain"].as_str(), item.body["seq"].as_u64()) else {
                    continue;
                };
                if let Some(item) = self.store.get(&Key::new(chain_pk(chain), seq_sk(seq))).await? {
                    let rec = decode_record(item)?;
                    // Index items are derived: one that does not point at a record naming the member (left by a
                    // write that did not commit whole) is not history.
                    let names = rec.entry.members.iter().any(|m| m.eq_ignore_ascii_case(member));
                    if names && !out.iter().any(|r: &AuditRecord| r.chain == rec.chain && r.seq == rec.seq) {
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

fn member_pk(member: &str) -> String {
    // Member ids compare without case (as everywhere in the exchange); a hash bounds the key for anything longer.
    let member = member.to_ascii_uppercase();
    if member.len() <= 64 && member.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        format!("AUDITMEMBER#{member}")
    } else {
        format!("AUDITMEMBER#h{}", hex::encode(&crate::vault::sha256(member.as_bytes())[..16]))
    }
}

fn decode_record(item: Item) -> PortResult<AuditRecord> {
    serde_json::from_value(item.body).map_err(|e| PortError::undecodable("audit record", &e))
}

/// The writes of one append: the record, the head moved (created for a new chain, with its registry item), and
/// the member index items.
fn append_ops(record: &AuditRecord, head_version: u64, indexed_members: usize) -> PortResult<Vec<WriteOp>> {
    let body = serde_json::to_value(record).map_err(|e| PortError::Invalid(e.to_string()))?;
    let head = Item::new(
        Key::new(chain_pk(&record.chain), "HEAD"),
        json!(Head { seq: record.seq, hash: record.hash.clone() }),
    );
    let mut ops = vec![WriteOp::PutNew(Item::new(Key::new(chain_pk(&record.chain), seq_sk(record.seq)), body))];
    if head_version == 0 {
        ops.push(WriteOp::PutNew(head));
        ops.push(WriteOp::PutNew(Item::new(Key::new(CHAINS_PK, record.chain.clone()), json!({}))));
    } else {
        ops.push(WriteOp::Update { item: head, expected_version: head_version });
    }
    let mut members: Vec<&String> = record.entry.members.iter().collect();
    members.sort();
    members.dedup();
    for member in members.into_iter().take(indexed_members) {
        let sk = format!("{}#{}#{:012}", record.entry.at, record.chain, record.seq);
        ops.push(WriteOp::PutNew(Item::new(
            Key::new(member_pk(member), sk),
            json!({"chain": record.chain, "seq": record.seq}),
        )));
    }
    Ok(ops)
}

/// A problem [`verify`] found, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainProblem {
    /// The chain.
    pub chain: String,
    /// The seq where it shows.
    pub seq: u64,
    /// What is wrong.
    pub problem: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Chains walked.
    pub chains: usize,
    /// Records checked.
    pub records: u64,
    /// Problems, in chain order (at most one per chain: the first break).
    pub problems: Vec<ChainProblem>,
}

impl VerifyReport {
    /// Whether every chain is whole.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks every chain from its first record: each seq present in order, each `prev` the hash before it, each hash
/// recomputed from the record, and the head naming the last record. Reports the first break of each chain.
pub async fn verify(log: &AuditLog) -> PortResult<VerifyReport> {
    verify_with_partners(log, &[]).await
}

/// [`verify`], walking also every shard of each of `partners` whether the chain registry lists it or not (a
/// registry entry removed does not hide a chain; a partner's chain that should exist and has no head is reported).
pub async fn verify_with_partners(log: &AuditLog, partners: &[String]) -> PortResult<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut chains = log.chains().await?;
    for partner in partners {
        for shard in 0..AUDIT_SHARDS {
            let chain = format!("{partner}#{shard}");
            // A shard never written has neither records nor head: nothing to report.
            if !chains.contains(&chain)
                && (log.head(&chain).await?.is_some() || !log.records(&chain, None, 1).await?.0.is_empty())
            {
                chains.push(chain);
            }
        }
    }
    for chain in chains {
        report.chains += 1;
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_owned();
        let mut broken = None;
        let mut cursor = None;
        'walk: loop {
            let (page, next) = log.records(&chain, cursor, 500).await?;
            for rec in page {
                report.records += 1;
                let problem = if rec.seq != expected_seq {
                    Some((expected_seq, format!("record {expected_seq} is missing (next found: {})", rec.seq)))
                } else if rec.chain != chain {
                    Some((rec.seq, "the record names another chain".to_owned()))
                } else if rec.prev != prev {
                    Some((rec.seq, "the record does not follow the one before it (prev hash differs)".to_owned()))
                } else if record_hash(&chain, rec.seq, &rec.prev, &rec.entry)? != rec.hash {
                    Some((rec.seq, "the record was changed (its hash does not match its content)".to_owned()))
                } else {
                    None
                };
                if let Some((seq, problem)) = problem {
                    broken = Some(ChainProblem { chain: chain.clone(), seq, problem });
                    break 'walk;
                }
                prev = rec.hash;
                expected_seq += 1;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        if broken.is_none() {
            let last = expected_seq - 1;
            broken = match log.head(&chain).await? {
                Some((seq, hash)) if seq == last && hash == prev => None,
                Some((seq, _)) if seq > last => Some(ChainProblem {
                    chain: chain.clone(),
                    seq: last + 1,
                    problem: format!("records {} to {seq} are missing (the head names {seq})", last + 1),
                }),
                Some((seq, _)) => Some(ChainProblem {
                    chain: chain.clone(),
                    seq,
                    problem: "the head does not name the last record".to_owned(),
                }),
                None => {
                    Some(ChainProblem { chain: chain.clone(), seq: 0, problem: "the chain has no head".to_owned() })
                }
            };
        }
        report.problems.extend(broken);
    }
    Ok(report)
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
    json!({
        "resourceType": "AuditEvent",
        "id": format!("{}-{}", rec.chain.replace('#', "-"), rec.seq),
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
            {"url": "urn:exchange:audit:chain", "valueString": rec.chain},
            {"url": "urn:exchange:audit:seq", "valueInteger": rec.seq},
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
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;
    use crate::ports::Page;
    use std::sync::atomic::Ordering::SeqCst;

    fn entry(partner: &str, request_id: &str, members: &[&str]) -> AuditEntry {
        AuditEntry {
            at: "2026-03-10T10:00:00.000Z".into(),
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

    #[tokio::test]
    async fn appends_chain_and_verify_finds_edits_removals_and_truncation() {
        let store = Arc::new(MemoryStateStore::new());
        let log = AuditLog::new(store.clone());
        // The same request id keeps every record in one chain.
        let mut recs = Vec::new();
        for i in 0..5 {
            recs.push(log.append(entry("demo-provider", "req-1", &[&format!("M{i}")])).await.expect("append"));
        }
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(recs[0].prev, GENESIS);
        assert!(recs.windows(2).all(|w| w[1].prev == w[0].hash));
        let report = verify(&log).await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.chains, report.records), (1, 5));
        assert_eq!(log.member_history("M3", 10).await.expect("member").len(), 1);
        assert_eq!(log.member_history("m3", 10).await.expect("member").len(), 1, "member ids compare without case");
        assert_eq!(log.partner_history("demo-provider", 10).await.expect("partner").len(), 5);

        let chain = recs[0].chain.clone();
        let key = |seq: u64| Key::new(chain_pk(&chain), seq_sk(seq));
        // Changed: record 3's outcome.
        let item = store.get(&key(3)).await.expect("get").expect("record 3");
        let mut changed = item.clone();
        changed.body["entry"]["outcome"] = json!(404);
        store.update(changed, item.version).await.expect("tamper");
        let report = verify(&log).await.expect("verify");
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].seq, 3);
        assert!(report.problems[0].problem.contains("changed"), "{report:?}");
        store.update(item, 2).await.expect("restore");
        assert!(verify(&log).await.expect("verify").is_intact());

        // Removed: record 2.
        store.transact(vec![WriteOp::Delete { key: key(2), expected_version: 1 }]).await.expect("remove");
        let report = verify(&log).await.expect("verify");
        assert_eq!((report.problems[0].seq, report.problems[0].problem.contains("missing")), (2, true));
    }

    #[tokio::test]
    async fn a_truncated_tail_is_found_through_the_head() {
        let store = Arc::new(MemoryStateStore::new());
        let log = AuditLog::new(store.clone());
        let mut last = None;
        for _ in 0..3 {
            last = Some(log.append(entry("demo-payer", "req-9", &[])).await.expect("append"));
        }
        let last = last.expect("records");
        store
            .transact(vec![WriteOp::Delete { key: Key::new(chain_pk(&last.chain), seq_sk(3)), expected_version: 1 }])
            .await
            .expect("truncate");
        let report = verify(&log).await.expect("verify");
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(report.problems[0].seq, 3);
    }

    #[tokio::test]
    async fn concurrent_appends_take_distinct_seqs() {
        let log = AuditLog::new(Arc::new(MemoryStateStore::new()));
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(entry("busy", &format!("r{}", i % 2), &[])).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("append");
        }
        let report = verify(&log).await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 24);
    }

    #[tokio::test]
    async fn a_write_and_its_record_commit_together_or_not_at_all() {
        let store = Arc::new(MemoryStateStore::new());
        let log = AuditLog::new(store.clone());
        let case = |id: &str| WriteOp::PutNew(Item::new(Key::new("CASE#1", id), json!({"n": 1})));
        let rec = log.append_with(entry("p", "r1", &["M1"]), vec![case("A")]).await.expect("append with a write");
        assert_eq!(rec.seq, 1);
        assert!(store.get(&Key::new("CASE#1", "A")).await.expect("get").is_some());

        // The write's own condition fails: Conflict, and neither the write nor a record is kept.
        let refused = log.append_with(entry("p", "r1", &["M2"]), vec![case("A")]).await;
        assert!(matches!(refused, Err(PortError::Conflict(_))), "{refused:?}");
        assert_eq!(log.head(&rec.chain).await.expect("head").map(|h| h.0), Some(1));
        assert!(log.member_history("M2", 10).await.expect("history").is_empty());
        assert!(verify(&log).await.expect("verify").is_intact());
    }

    /// A store on which another request's append lands just before each of the first `races` transactions that
    /// carry a caller's write: the head those transactions expect has moved.
    struct Contended {
        inner: Arc<MemoryStateStore>,
        races: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl StateStore for Contended {
        async fn get(&self, key: &Key) -> PortResult<Option<Item>> {
            self.inner.get(key).await
        }
        async fn put_new(&self, item: Item) -> PortResult<()> {
            self.inner.put_new(item).await
        }
        async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64> {
            self.inner.update(item, expected_version).await
        }
        async fn query(&self, query: &Query) -> PortResult<Page> {
            self.inner.query(query).await
        }
        async fn query_gsi1(&self, query: &Query) -> PortResult<Page> {
            self.inner.query_gsi1(query).await
        }
        async fn transact(&self, ops: Vec<WriteOp>) -> PortResult<()> {
            let carries_a_write = ops.iter().any(|op| !op.key().pk.starts_with("AUDIT"));
            let race = carries_a_write && self.races.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
            if race {
                AuditLog::new(self.inner.clone()).append(entry("p", "r1", &[])).await?;
            }
            self.inner.transact(ops).await
        }
        async fn increment(&self, key: &Key) -> PortResult<u64> {
            self.inner.increment(key).await
        }
    }

    fn contended(races: u32) -> (Arc<MemoryStateStore>, AuditLog) {
        let inner = Arc::new(MemoryStateStore::new());
        let store = Contended { inner: inner.clone(), races: std::sync::atomic::AtomicU32::new(races) };
        (inner, AuditLog::new(Arc::new(store)))
    }

    #[tokio::test]
    async fn a_write_that_loses_the_head_to_another_append_is_retried_and_recorded() {
        let (inner, log) = contended(3);
        let op = WriteOp::PutNew(Item::new(Key::new("CASE", "1"), json!({})));
        let rec = log.append_with(entry("p", "r1", &["M1"]), vec![op]).await.expect("append with a write");
        // Three other appends took seqs 1 to 3 first.
        assert_eq!(rec.seq, 4);
        assert!(inner.get(&Key::new("CASE", "1")).await.expect("get").is_some());
        let report = verify(&log).await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 4);
    }

    #[tokio::test]
    async fn the_callers_own_conflict_is_reported_even_while_the_head_moves() {
        let (inner, log) = contended(0);
        let op = || WriteOp::PutNew(Item::new(Key::new("CASE", "1"), json!({})));
        log.append_with(entry("p", "r1", &[]), vec![op()]).await.expect("first");
        // Every further attempt also loses the head: the caller's conflict must still come back as Conflict, at
        // once, not as "too busy" after every retry.
        let busy = AuditLog::new(Arc::new(Contended { inner: inner.clone(), races: u32::MAX.into() }));
        let again = busy.append_with(entry("p", "r1", &["M9"]), vec![op()]).await;
        assert!(matches!(again, Err(PortError::Conflict(_))), "{again:?}");
        assert!(log.member_history("M9", 10).await.expect("history").is_empty());
        assert!(verify(&log).await.expect("verify").is_intact());
    }

    #[tokio::test]
    async fn writes_leaving_no_room_for_the_record_write_nothing_and_big_ones_index_fewer_members() {
        let store = Arc::new(MemoryStateStore::new());
        let log = AuditLog::new(store.clone());
        let many = |n: usize, pk: &str| -> Vec<WriteOp> {
            (0..n).map(|i| WriteOp::PutNew(Item::new(Key::new(pk, format!("{i:03}")), json!({})))).collect()
        };
        let refused = log.append_with(entry("p", "r", &["M1"]), many(98, "TOO")).await;
        assert!(matches!(refused, Err(PortError::Invalid(_))), "{refused:?}");
        assert!(store.query(&Query::prefix("TOO", "", 200)).await.expect("items").items.is_empty());
        assert_eq!(log.head(&chain_for("p", "r")).await.expect("head"), None);

        // 96 writes leave room for the record, its head, the registry item and one member index item.
        let rec = log.append_with(entry("p", "r", &["M1", "M2"]), many(96, "FITS")).await.expect("append");
        assert_eq!(store.query(&Query::prefix("FITS", "", 200)).await.expect("items").items.len(), 96);
        assert_eq!(rec.entry.members, ["M1", "M2"], "the record names every member");
        assert_eq!(log.member_history("M1", 10).await.expect("history").len(), 1);
        assert!(log.member_history("M2", 10).await.expect("history").is_empty(), "no room to index the second");
    }

    #[test]
    fn audit_events_carry_the_outcome_and_the_members() {
        let rec = AuditRecord {
            chain: "p#1".into(),
            seq: 7,
            prev: GENESIS.into(),
            entry: AuditEntry { outcome: 404, ..entry("p", "r", &["M1"]) },
            hash: "h".into(),
        };
        let ev = as_audit_event(&rec);
        assert_eq!(ev["outcome"], "4");
        assert_eq!(ev["action"], "R");
        assert_eq!(ev["entity"][1]["what"]["identifier"]["value"], "M1");
    }
}
