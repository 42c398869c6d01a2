//! The sealer: turns the audit records into signed, chained digests, one chain per partner.
//!
//! A pass takes every record whose time is older than [`SEAL_GRACE`] and whose key sorts after the last pass's
//! boundary (the keys sort by time, then request id), at most [`MAX_RECORDS_PER_PASS`], in key order across the
//! day's shards. It groups them by partner and writes one [`Digest`] per partner that had records: the window
//! sealed (`from` exclusive, `until` inclusive, as record sort keys), each record's key and hash, their RFC 6962
//! Merkle root, and the hash of the partner's previous digest, signed (RS256) by the audit-signing key. Then it
//! moves its progress (one state item per partner and the boundary), written only by the sealer.
//!
//! Only one sealer runs at a time (the runner's task; in AWS the worker with reserved concurrency 1). A sealer that
//! stops between writing a digest and recording its progress finds the digest on its next pass (digests are named
//! by partner and sequence number) and adopts it, so nothing is sealed twice and nothing is skipped.
//!
//! The grace period is what lets a record that is being committed while a pass runs still land in a later window:
//! a request's record is timestamped just before its commit, and commits take milliseconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{day_of, decode_record, record_pk, timestamp, AuditRecord, AUDIT_SHARDS};
use crate::ports::{BlobStore, Item, Key, KeyService, PortError, PortResult, Query, StateStore, WriteOp};

/// How old a record must be before a pass seals it: longer than a record's own transaction can take (records are
/// stamped just before their commit; DynamoDB's transaction with the SDK's retries stays well under it).
pub const SEAL_GRACE: Duration = Duration::from_secs(20);

/// Most records one pass seals (a busier stream is sealed over several passes, each one digest per partner).
pub const MAX_RECORDS_PER_PASS: usize = 20_000;

/// The hash before a partner's first digest.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How far back a brand-new sealer looks for records written before its first pass.
const FIRST_LOOKBACK: time::Duration = time::Duration::days(2);

const SEAL_PK: &str = "AUDITSEAL";
const STATE_SK: &str = "STATE";

/// One sealed record in a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    /// The record's partition key.
    pub pk: String,
    /// The record's sort key.
    pub sk: String,
    /// The record's hash ([`super::record_hash`]).
    pub hash: String,
}

/// A digest: the records of one partner in one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    /// The partner.
    pub partner: String,
    /// Position in the partner's chain of digests, from 1.
    pub seq: u64,
    /// SHA-256 (hex) of the partner's previous digest file ([`GENESIS`] for the first).
    pub prev: String,
    /// The window's lower bound, exclusive (a record sort key; empty: from the beginning).
    pub from: String,
    /// The window's upper bound, inclusive.
    pub until: String,
    /// When the digest was made.
    pub sealed_at: String,
    /// The partner's records in the window, in key order.
    pub records: Vec<SealedRecord>,
    /// RFC 6962 Merkle tree hash over the records' hashes.
    pub root: String,
}

/// A digest file: the digest and its RS256 signature (base64) over the digest's JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedDigest {
    /// What is signed.
    pub digest: Digest,
    /// RSASSA-PKCS1-v1_5 SHA-256 over `serde_json::to_vec(&digest)`.
    pub signature: String,
}

/// Where a partner's digest number `seq` is stored (partner ids are restricted to path-safe characters; others
/// are named by a hash).
pub fn digest_path(partner: &str, seq: u64) -> String {
    let safe = !partner.is_empty()
        && partner.len() <= 64
        && partner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !partner.starts_with('.');
    let dir = if safe {
        partner.to_owned()
    } else {
        format!("h{}", hex::encode(&crate::vault::sha256(partner.as_bytes())[..16]))
    };
    format!("{dir}/{seq:012}.json")
}

/// RFC 6962 Merkle tree hash over leaf hashes (hex): leaves are `SHA-256(0x00 || leaf)`, nodes
/// `SHA-256(0x01 || left || right)`, split at the largest power of two below the count; the empty tree is
/// `SHA-256("")`.
pub fn merkle_root(leaves: &[String]) -> String {
    fn node(leaves: &[String]) -> [u8; 32] {
        match leaves.len() {
            0 => crate::vault::sha256(b""),
            1 => {
                let mut bytes = vec![0u8];
                bytes.extend_from_slice(leaves[0].as_bytes());
                crate::vault::sha256(&bytes)
            }
            n => {
                let k = (n - 1).checked_ilog2().map_or(1, |p| 1usize << p);
                let mut bytes = vec![1u8];
                bytes.extend_from_slice(&node(&leaves[..k]));
                bytes.extend_from_slice(&node(&leaves[k..]));
                crate::vault::sha256(&bytes)
            }
        }
    }
    hex::encode(node(leaves))
}

/// The sealer's progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SealState {
    /// The boundary: every record with a sort key up to here (inclusive) is sealed.
    pub until: String,
    /// The first day the sealer looked at.
    pub start_day: String,
    /// When the last pass ran.
    #[serde(default)]
    pub sealed_at: String,
}

/// One partner's chain of digests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartnerSeal {
    pub seq: u64,
    pub hash: String,
    pub until: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SealPass {
    /// Records sealed (listed by the digests this pass wrote).
    pub records: usize,
    /// Digests written.
    pub digests: usize,
    /// Whether more sealable records remain (the pass stopped at [`MAX_RECORDS_PER_PASS`]).
    pub more: bool,
    /// Age in seconds of the oldest record not yet sealed after the pass (`None`: all sealed).
    pub oldest_unsealed_secs: Option<i64>,
}

/// Seals the records of one state store into digests.
#[derive(Clone)]
pub struct Sealer {
    store: Arc<dyn StateStore>,
    digests: Arc<dyn BlobStore>,
    signer: Arc<dyn KeyService>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer over `store`'s records, writing digests to `digests` signed by `signer`'s RS256 key.
    pub fn new(store: Arc<dyn StateStore>, digests: Arc<dyn BlobStore>, signer: Arc<dyn KeyService>) -> Self {
        Sealer { store, digests, signer }
    }

    /// One pass at `now`; see the module documentation.
    pub async fn seal(&self, now: OffsetDateTime) -> PortResult<SealPass> {
        let (mut state, state_version) = read_state(self.store.as_ref(), now).await?;
        let limit = timestamp(now - SEAL_GRACE);
        let (records, more) = sealable(self.store.as_ref(), &state, &limit).await?;
        let mut pass = SealPass { more, ..SealPass::default() };
        if let Some(last) = records.last() {
            let until = last.sk.clone();
            let mut by_partner: BTreeMap<&str, Vec<&AuditRecord>> = BTreeMap::new();
            for rec in &records {
                by_partner.entry(rec.entry.partner.as_str()).or_default().push(rec);
            }
            for (partner, recs) in by_partner {
                let sealed = self.seal_partner(partner, &state.until, &until, &recs, now).await?;
                if sealed > 0 {
                    pass.records += sealed;
                    pass.digests += 1;
                }
            }
            state.until = until;
        }
        state.sealed_at = timestamp(now);
        let body = serde_json::to_value(&state).map_err(|e| PortError::Invalid(e.to_string()))?;
        let item = Item::new(Key::new(SEAL_PK, STATE_SK), body);
        let op = if state_version == 0 {
            WriteOp::PutNew(item)
        } else {
            WriteOp::Update { item, expected_version: state_version }
        };
        // A Conflict here means a second sealer ran: its digests are adopted by the next pass.
        self.store.transact(vec![op]).await?;
        pass.oldest_unsealed_secs = oldest_unsealed(self.store.as_ref(), &state, now).await?;
        if pass.records > 0 || pass.oldest_unsealed_secs.is_some_and(|s| s > 60) {
            tracing::info!(
                sealed = pass.records,
                digests = pass.digests,
                more = pass.more,
                lag_secs = pass.oldest_unsealed_secs,
                "audit seal pass"
            );
        }
        Ok(pass)
    }

    /// Writes partner's digest of `recs` for the window (`from`, `until`], unless a digest written by a pass that
    /// stopped before recording its progress already covers them (then that digest is adopted and only the rest is
    /// sealed). Returns how many records the digest it wrote lists (0: none written).
    async fn seal_partner(
        &self,
        partner: &str,
        from: &str,
        until: &str,
        recs: &[&AuditRecord],
        now: OffsetDateTime,
    ) -> PortResult<usize> {
        let key = Key::new(SEAL_PK, format!("P#{partner}"));
        let stored = self.store.get(&key).await?;
        let (mut head, mut version) = match &stored {
            Some(item) => (
                serde_json::from_value::<PartnerSeal>(item.body.clone())
                    .map_err(|e| PortError::undecodable("audit seal", &e))?,
                item.version,
            ),
            None => (PartnerSeal { seq: 0, hash: GENESIS.to_owned(), until: String::new() }, 0),
        };
        // Adopt digests written after the progress was last recorded.
        loop {
            match self.digests.get(&digest_path(partner, head.seq + 1)).await {
                Ok(bytes) => {
                    let signed: SignedDigest =
                        serde_json::from_slice(&bytes).map_err(|e| PortError::undecodable("audit digest", &e))?;
                    head = PartnerSeal {
                        seq: signed.digest.seq,
                        hash: hex::encode(crate::vault::sha256(&bytes)),
                        until: signed.digest.until,
                    };
                    version = self.save_head(&key, &head, version).await?;
                }
                Err(PortError::NotFound(_)) => break,
                Err(e) => return Err(e),
            }
        }
        let from = if head.until.as_str() > from { head.until.as_str() } else { from };
        let records: Vec<SealedRecord> = recs
            .iter()
            .filter(|r| r.sk.as_str() > from)
            .map(|r| SealedRecord { pk: r.pk.clone(), sk: r.sk.clone(), hash: r.hash.clone() })
            .collect();
        if records.is_empty() {
            return Ok(0);
        }
        let count = records.len();
        let leaves: Vec<String> = records.iter().map(|r| r.hash.clone()).collect();
        let digest = Digest {
            partner: partner.to_owned(),
            seq: head.seq + 1,
            prev: head.hash.clone(),
            from: from.to_owned(),
            until: until.to_owned(),
            sealed_at: timestamp(now),
            root: merkle_root(&leaves),
            records,
        };
        let signed_bytes = serde_json::to_vec(&digest).map_err(|e| PortError::Invalid(e.to_string()))?;
        let signature = STANDARD.encode(self.signer.sign_rs256(&signed_bytes).await?);
        let file = serde_json::to_vec(&json!({"digest": digest, "signature": signature}))
            .map_err(|e| PortError::Invalid(e.to_string()))?;
        self.digests.put(&digest_path(partner, digest.seq), file.clone()).await?;
        let head =
            PartnerSeal { seq: digest.seq, hash: hex::encode(crate::vault::sha256(&file)), until: until.to_owned() };
        self.save_head(&key, &head, version).await?;
        Ok(count)
    }

    async fn save_head(&self, key: &Key, head: &PartnerSeal, version: u64) -> PortResult<u64> {
        let body = serde_json::to_value(head).map_err(|e| PortError::Invalid(e.to_string()))?;
        let item = Item::new(key.clone(), body);
        if version == 0 {
            self.store.put_new(item).await?;
            Ok(1)
        } else {
            self.store.update(item, version).await
        }
    }

    /// Verifies the trail against this sealer's digests and key ([`super::verify::verify`]).
    pub async fn verify(&self, now: OffsetDateTime) -> PortResult<super::verify::VerifyReport> {
        self.verify_with_partners(now, &[]).await
    }

    /// [`Self::verify`], also walking the digests of `partners` (the registered ones) whether or not their progress
    /// record is there.
    pub async fn verify_with_partners(
        &self,
        now: OffsetDateTime,
        partners: &[String],
    ) -> PortResult<super::verify::VerifyReport> {
        let public_key = self.signer.token_public_key().await?;
        super::verify::verify(&self.store, &self.digests, &public_key, now, partners).await
    }

    /// Runs a pass every `every` until the process ends (the local runner). A failed pass is logged and retried.
    pub async fn run_forever(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut more = true;
            while more {
                match self.seal(OffsetDateTime::now_utc()).await {
                    Ok(pass) => more = pass.more,
                    Err(e) => {
                        tracing::warn!(error = %e, "audit seal pass failed; retrying at the next tick");
                        more = false;
                    }
                }
            }
        }
    }
}

/// The sealer's state and its item version (a fresh state, version 0, before the first pass).
pub(crate) async fn read_state(store: &dyn StateStore, now: OffsetDateTime) -> PortResult<(SealState, u64)> {
    match store.get(&Key::new(SEAL_PK, STATE_SK)).await? {
        Some(item) => Ok((
            serde_json::from_value(item.body).map_err(|e| PortError::undecodable("audit seal state", &e))?,
            item.version,
        )),
        None => {
            let start = timestamp(now - FIRST_LOOKBACK);
            Ok((SealState { until: String::new(), start_day: day_of(&start).to_owned(), sealed_at: String::new() }, 0))
        }
    }
}

/// Every partner with a digest chain, with its head.
pub(crate) async fn partner_heads(store: &dyn StateStore) -> PortResult<Vec<(String, PartnerSeal)>> {
    let mut q = Query::prefix(SEAL_PK, "P#", 1000);
    let mut out = Vec::new();
    loop {
        let page = store.query(&q).await?;
        for item in page.items {
            let partner = item.key.sk.trim_start_matches("P#").to_owned();
            let head: PartnerSeal =
                serde_json::from_value(item.body).map_err(|e| PortError::undecodable("audit seal", &e))?;
            out.push((partner, head));
        }
        match page.next {
            Some(next) => q.after = Some(next),
            None => return Ok(out),
        }
    }
}

/// The days from `first` to `last` (`YYYY-MM-DD`), inclusive.
pub(crate) fn days_between(first: &str, last: &str) -> Vec<String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let (Ok(mut day), Ok(end)) = (time::Date::parse(first, format), time::Date::parse(last, format)) else {
        return vec![last.to_owned()];
    };
    let mut out = Vec::new();
    while day <= end {
        if let Ok(text) = day.format(format) {
            out.push(text);
        }
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    out
}

/// The records after the boundary and before `limit` (a timestamp), at most [`MAX_RECORDS_PER_PASS`], in key
/// order; and whether more remain.
async fn sealable(store: &dyn StateStore, state: &SealState, limit: &str) -> PortResult<(Vec<AuditRecord>, bool)> {
    let first_day = if state.until.is_empty() { state.start_day.as_str() } else { day_of(&state.until) };
    let mut out = Vec::new();
    let mut more = false;
    for day in days_between(first_day, day_of(limit)) {
        for shard in 0..AUDIT_SHARDS {
            let (recs, shard_more) =
                scan_partition(store, &record_pk(&day, shard), &state.until, limit, MAX_RECORDS_PER_PASS).await?;
            more |= shard_more;
            out.extend(recs);
        }
        if out.len() >= MAX_RECORDS_PER_PASS {
            // Later days are not read this pass.
            more = true;
            break;
        }
    }
    out.sort_by(|a, b| a.sk.cmp(&b.sk));
    if out.len() > MAX_RECORDS_PER_PASS {
        out.truncate(MAX_RECORDS_PER_PASS);
        more = true;
    }
    Ok((out, more))
}

/// Up to `max` records of one partition with a sort key after `after` and before `limit`; and whether more remain.
pub(crate) async fn scan_partition(
    store: &dyn StateStore,
    pk: &str,
    after: &str,
    limit: &str,
    max: usize,
) -> PortResult<(Vec<AuditRecord>, bool)> {
    let mut q = Query::prefix(pk, "", max.saturating_add(1).min(1000));
    if !after.is_empty() {
        q = q.starting_after(after);
    }
    let mut out = Vec::new();
    loop {
        let page = store.query(&q).await?;
        for item in page.items {
            if item.key.sk.as_str() >= limit {
                return Ok((out, false));
            }
            if out.len() == max {
                return Ok((out, true));
            }
            out.push(decode_record(item)?);
        }
        match page.next {
            Some(next) => q.after = Some(next),
            None => return Ok((out, false)),
        }
    }
}

/// Age in seconds of the oldest record after the boundary (not sealed yet).
async fn oldest_unsealed(store: &dyn StateStore, state: &SealState, now: OffsetDateTime) -> PortResult<Option<i64>> {
    let first_day = if state.until.is_empty() { state.start_day.as_str() } else { day_of(&state.until) };
    let today = timestamp(now);
    let mut oldest: Option<String> = None;
    for day in days_between(first_day, day_of(&today)) {
        for shard in 0..AUDIT_SHARDS {
            let (recs, _) = scan_partition(store, &record_pk(&day, shard), &state.until, "~", 1).await?;
            if let Some(rec) = recs.into_iter().next() {
                if oldest.as_ref().is_none_or(|o| rec.entry.at < *o) {
                    oldest = Some(rec.entry.at);
                }
            }
        }
        if oldest.is_some() {
            break;
        }
    }
    Ok(oldest.and_then(|at| {
        time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| (now - t).whole_seconds())
    }))
}
