//! Offline verification of the audit trail against its digests (the model is `aws cloudtrail validate-logs`).
//!
//! Checks, and reports with its position:
//! - each partner's digests 1..n are all there (**missing digest**), each verifies under the audit-signing public
//!   key (**forged digest**: edited, or signed by another key), names the previous digest's hash (**broken
//!   chain**), and its Merkle root matches its records;
//! - each record a digest lists is in the store (**removed**) with the hash listed (**changed**);
//! - each record in the store hashes to what it says (**changed**), and, when its key is within the sealed
//!   horizon (the sealer's recorded boundary, or the end of its partner's last digest), is listed by a digest
//!   (**inserted**); records after the horizon are counted as **unsealed** (the
//!   sealer's next passes take them), with the oldest one's time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use time::OffsetDateTime;

use super::seal::{
    days_between, digest_path, merkle_root, partner_heads, read_state, scan_partition, SignedDigest, GENESIS,
};
use super::{day_of, record_hash, record_pk, timestamp, AUDIT_SHARDS};
use crate::ports::{BlobStore, Key, PortError, PortResult, StateStore};

/// A problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditProblem {
    /// What kind: `missing-digest`, `forged-digest`, `broken-chain`, `removed`, `changed`, `inserted`.
    pub kind: &'static str,
    /// The partner whose trail it is in.
    pub partner: String,
    /// The digest (sequence number) it shows in, when it is about a digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
    /// The record (`pk/sk`), when it is about a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// What is wrong, in words.
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Partners with digests.
    pub partners: usize,
    /// Digests checked.
    pub digests: u64,
    /// Records in the store.
    pub records: u64,
    /// Records listed by a digest.
    pub sealed: u64,
    /// Records after the sealed horizon (not sealed yet: not a problem).
    pub unsealed: u64,
    /// The time of the oldest unsealed record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_unsealed_at: Option<String>,
    /// Every problem found.
    pub problems: Vec<AuditProblem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the trail in `store` against the digests in `digests`, whose signatures must verify under
/// `public_key` (DER `RSAPublicKey`, the audit-signing key's public half).
pub async fn verify(
    store: &Arc<dyn StateStore>,
    digests: &Arc<dyn BlobStore>,
    public_key: &[u8],
    now: OffsetDateTime,
    partners: &[String],
) -> PortResult<VerifyReport> {
    let mut report = VerifyReport::default();
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key);
    let (state, _) = read_state(store.as_ref(), now).await?;
    // A record is within the sealed horizon when its key is up to the boundary the sealer recorded after its last
    // whole pass, or up to the end of its own partner's last digest. (Not up to any partner's: a sealer stopped
    // half-way through a pass has written some partners' digests and not yet the others'.)
    let mut horizons: HashMap<String, String> = HashMap::new();
    let mut start_day = state.start_day.clone();
    let mut listed: HashSet<(String, String)> = HashSet::new();
    let mut reported: HashSet<(String, String)> = HashSet::new();

    // Every partner with a progress record, and every partner the caller names (the registered ones): a deleted
    // progress record does not hide a partner's digests, whose listed records are then checked as any others.
    let mut heads = partner_heads(store.as_ref()).await?;
    for partner in partners {
        if !heads.iter().any(|(p, _)| p == partner) {
            heads.push((
                partner.clone(),
                super::seal::PartnerSeal { seq: 0, hash: GENESIS.to_owned(), until: String::new() },
            ));
        }
    }
    for (partner, head) in heads {
        report.partners += 1;
        let mut prev_hash: Option<String> = Some(GENESIS.to_owned());
        let mut prev_until = String::new();
        let mut seq = 1;
        loop {
            let bytes = match digests.get(&digest_path(&partner, seq)).await {
                Ok(bytes) => bytes,
                Err(PortError::NotFound(_)) if seq <= head.seq => {
                    report.problems.push(problem("missing-digest", &partner, Some(seq), None, "the digest is missing"));
                    prev_hash = None;
                    seq += 1;
                    continue;
                }
                Err(PortError::NotFound(_)) => break,
                Err(e) => return Err(e),
            };
            report.digests += 1;
            let file_hash = hex::encode(crate::vault::sha256(&bytes));
            let checked = check_digest(&key, &bytes, &partner, seq);
            let signed = match checked {
                Ok(signed) => signed,
                Err(detail) => {
                    report.problems.push(problem("forged-digest", &partner, Some(seq), None, &detail));
                    prev_hash = Some(file_hash);
                    seq += 1;
                    continue;
                }
            };
            let d = &signed.digest;
            if prev_hash.as_ref().is_some_and(|p| *p != d.prev) {
                report.problems.push(problem(
                    "broken-chain",
                    &partner,
                    Some(seq),
                    None,
                    "the digest does not name the previous digest's hash",
                ));
            }
            if d.from < prev_until || d.until < d.from {
                report.problems.push(problem(
                    "broken-chain",
                    &partner,
                    Some(seq),
                    None,
                    "the window overlaps the one before",
                ));
            }
            let horizon = horizons.entry(partner.clone()).or_default();
            if d.until > *horizon {
                horizon.clone_from(&d.until);
            }
            // The records a digest lists say where the trail starts, whatever the state item says.
            if let Some(first) = d.records.first() {
                if day_of(&first.sk) < start_day.as_str() {
                    start_day = day_of(&first.sk).to_owned();
                }
            }
            for r in &d.records {
                listed.insert((r.pk.clone(), r.sk.clone()));
                report.sealed += 1;
                let place = format!("{}/{}", r.pk, r.sk);
                match store.get(&Key::new(r.pk.clone(), r.sk.clone())).await? {
                    None => {
                        report.problems.push(problem(
                            "removed",
                            &partner,
                            Some(seq),
                            Some(place),
                            "a sealed record is missing",
                        ));
                    }
                    Some(item) => {
                        let stored = super::decode_record(item);
                        let same = stored.as_ref().is_ok_and(|rec| {
                            rec.entry.partner == partner
                                && record_hash(&r.pk, &r.sk, &rec.entry).is_ok_and(|h| h == r.hash)
                        });
                        if !same {
                            reported.insert((r.pk.clone(), r.sk.clone()));
                            report.problems.push(problem(
                                "changed",
                                &partner,
                                Some(seq),
                                Some(place),
                                "the record differs from the hash its digest lists",
                            ));
                        }
                    }
                }
            }
            prev_hash = Some(file_hash);
            prev_until = d.until.clone();
            seq += 1;
        }
    }

    // Every record in the store: its own hash, and sealed if it is within the horizon.
    let today = timestamp(now);
    for day in days_between(&start_day, day_of(&today)) {
        for shard in 0..AUDIT_SHARDS {
            let pk = record_pk(&day, shard);
            let (records, _) = scan_partition(store.as_ref(), &pk, "", "~", usize::MAX).await?;
            for rec in records {
                report.records += 1;
                let id = (rec.pk.clone(), rec.sk.clone());
                let place = format!("{}/{}", rec.pk, rec.sk);
                let consistent = rec.pk == pk && record_hash(&rec.pk, &rec.sk, &rec.entry).is_ok_and(|h| h == rec.hash);
                if !consistent && !reported.contains(&id) {
                    report.problems.push(problem(
                        "changed",
                        &rec.entry.partner,
                        None,
                        Some(place.clone()),
                        "the record does not match its own hash",
                    ));
                }
                if listed.contains(&id) {
                    continue;
                }
                let partner_horizon = horizons.get(&rec.entry.partner).map(String::as_str).unwrap_or_default();
                let sealed_up_to = if partner_horizon > state.until.as_str() { partner_horizon } else { &state.until };
                if !sealed_up_to.is_empty() && rec.sk.as_str() <= sealed_up_to {
                    report.problems.push(problem(
                        "inserted",
                        &rec.entry.partner,
                        None,
                        Some(place),
                        "the record is within the sealed window but no digest lists it",
                    ));
                } else {
                    report.unsealed += 1;
                    if report.oldest_unsealed_at.as_ref().is_none_or(|o| rec.entry.at < *o) {
                        report.oldest_unsealed_at = Some(rec.entry.at.clone());
                    }
                }
            }
        }
    }
    Ok(report)
}

fn problem(
    kind: &'static str,
    partner: &str,
    digest: Option<u64>,
    record: Option<String>,
    detail: &str,
) -> AuditProblem {
    AuditProblem { kind, partner: partner.to_owned(), digest, record, detail: detail.to_owned() }
}

/// Parses a digest file and checks its signature, that it is the partner's digest `seq`, and its Merkle root.
fn check_digest(key: &UnparsedPublicKey<&[u8]>, bytes: &[u8], partner: &str, seq: u64) -> Result<SignedDigest, String> {
    let signed: SignedDigest = serde_json::from_slice(bytes).map_err(|_| "the digest does not parse".to_owned())?;
    let message = serde_json::to_vec(&signed.digest).map_err(|_| "the digest does not serialize".to_owned())?;
    let signature = STANDARD.decode(&signed.signature).map_err(|_| "the signature is not base64".to_owned())?;
    if key.verify(&message, &signature).is_err() {
        return Err(
            "the signature does not verify under the audit-signing key (edited, or signed by another key)".into()
        );
    }
    if signed.digest.partner != partner || signed.digest.seq != seq {
        return Err("the digest names another partner or position than where it is stored".into());
    }
    let leaves: Vec<String> = signed.digest.records.iter().map(|r| r.hash.clone()).collect();
    if merkle_root(&leaves) != signed.digest.root {
        return Err("the Merkle root does not match the records listed".into());
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::embedded::LocalKeyService;
    use crate::adapters::memory::{MemoryBlobStore, MemoryStateStore};
    use crate::domain::audit::seal::{Sealer, SEAL_GRACE};
    use crate::domain::audit::tests::entry_at;
    use crate::domain::audit::{AuditLog, AuditRecord};
    use crate::ports::{Item, Key, KeyService, WriteOp};
    use serde_json::json;
    use time::macros::datetime;

    struct Trail {
        store: Arc<dyn StateStore>,
        digests: Arc<dyn BlobStore>,
        log: AuditLog,
        sealer: Sealer,
        _keys: tempfile::TempDir,
    }

    fn trail() -> Trail {
        let keys = tempfile::tempdir().expect("tempdir");
        let signer = Arc::new(LocalKeyService::load_or_create(keys.path()).expect("keys"));
        let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
        let digests: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::new());
        let sealer = Sealer::new(store.clone(), digests.clone(), signer);
        // A clock behind every entry: the records keep the times the tests give them.
        let log =
            AuditLog::new(store.clone()).with_clock(Arc::new(crate::ports::FixedClock(OffsetDateTime::UNIX_EPOCH)));
        Trail { log, store, digests, sealer, _keys: keys }
    }

    const NOW: OffsetDateTime = datetime!(2026-03-10 10:10 UTC);

    /// Records of three partners over a few minutes before `NOW`, and one younger than the grace period.
    async fn records(t: &Trail) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        for i in 0..30u32 {
            let partner = ["a", "b", "c"][(i % 3) as usize];
            let at = timestamp(NOW - time::Duration::seconds(300 - i64::from(i) * 9));
            out.push(t.log.append(entry_at(partner, &format!("r{i}"), &["M1"], &at)).await.expect("append"));
        }
        let young = timestamp(NOW - SEAL_GRACE + time::Duration::seconds(1));
        t.log.append(entry_at("a", "young", &[], &young)).await.expect("append");
        out
    }

    async fn sealed(t: &Trail) -> VerifyReport {
        let pass = t.sealer.seal(NOW).await.expect("seal");
        assert_eq!((pass.records, pass.digests), (30, 3), "{pass:?}");
        let report = t.sealer.verify(NOW).await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        report
    }

    #[tokio::test]
    async fn a_sealed_trail_verifies_and_young_records_wait_for_the_next_pass() {
        let t = trail();
        records(&t).await;
        let report = sealed(&t).await;
        assert_eq!((report.partners, report.digests, report.sealed, report.unsealed), (3, 3, 30, 1));
        // Later, the young record is sealed in partner a's second digest, chained to the first.
        let later = NOW + time::Duration::seconds(30);
        let pass = t.sealer.seal(later).await.expect("seal");
        assert_eq!((pass.records, pass.digests, pass.oldest_unsealed_secs), (1, 1, None));
        let report = t.sealer.verify(later).await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.digests, report.sealed, report.unsealed), (4, 31, 0));
    }

    #[tokio::test]
    async fn changed_removed_and_inserted_records_are_reported_with_their_position() {
        let t = trail();
        let recs = records(&t).await;
        sealed(&t).await;
        // Changed: a record's outcome.
        let item = t.store.get(&recs[4].key()).await.expect("get").expect("record");
        let mut changed = item.clone();
        changed.body["entry"]["outcome"] = json!(404);
        t.store.update(changed, item.version).await.expect("tamper");
        // Removed: another record.
        t.store.transact(vec![WriteOp::Delete { key: recs[7].key(), expected_version: 1 }]).await.expect("remove");
        // Inserted: a well-formed record placed inside the sealed window afterwards.
        let forged = t.log.clone();
        let at = timestamp(NOW - time::Duration::seconds(200));
        let inserted = forged.append(entry_at("b", "forged", &[], &at)).await.expect("insert");

        let report = t.sealer.verify(NOW).await.expect("verify");
        let find = |kind: &str, rec: &AuditRecord| {
            let place = format!("{}/{}", rec.pk, rec.sk);
            report.problems.iter().find(|p| p.kind == kind && p.record.as_deref() == Some(place.as_str())).cloned()
        };
        let changed = find("changed", &recs[4]).expect("changed is reported");
        assert_eq!((changed.partner.as_str(), changed.digest), (recs[4].entry.partner.as_str(), Some(1)));
        assert!(find("removed", &recs[7]).is_some(), "{report:?}");
        assert!(find("inserted", &inserted).is_some(), "{report:?}");
        assert_eq!(report.problems.len(), 3, "{report:?}");
    }

    #[tokio::test]
    async fn edited_deleted_and_foreign_signed_digests_are_reported() {
        let t = trail();
        records(&t).await;
        sealed(&t).await;
        // Seal partner a's young record too, so a has digests 1 and 2.
        t.sealer.seal(NOW + time::Duration::seconds(30)).await.expect("seal");
        let later = NOW + time::Duration::seconds(30);

        // Edited: a hash in b's digest.
        let path_b = crate::domain::audit::seal::digest_path("b", 1);
        let original = t.digests.get(&path_b).await.expect("digest");
        let mut signed: SignedDigest = serde_json::from_slice(&original).expect("parse");
        signed.digest.records[0].hash = "00".repeat(32);
        t.digests.put(&path_b, serde_json::to_vec(&signed).expect("json")).await.expect("edit");
        // Signed by another key: c's digest re-signed.
        let other = tempfile::tempdir().expect("tempdir");
        let other_key = LocalKeyService::load_or_create(other.path()).expect("keys");
        let path_c = crate::domain::audit::seal::digest_path("c", 1);
        let mut signed: SignedDigest =
            serde_json::from_slice(&t.digests.get(&path_c).await.expect("digest")).expect("parse");
        let message = serde_json::to_vec(&signed.digest).expect("json");
        signed.signature = STANDARD.encode(other_key.sign_rs256(&message).await.expect("sign"));
        t.digests.put(&path_c, serde_json::to_vec(&signed).expect("json")).await.expect("re-sign");
        // Deleted: a's first digest.
        t.digests.delete(&crate::domain::audit::seal::digest_path("a", 1)).await.expect("delete");

        let report = t.sealer.verify(later).await.expect("verify");
        let has = |kind: &str, partner: &str, digest: u64| {
            report.problems.iter().any(|p| p.kind == kind && p.partner == partner && p.digest == Some(digest))
        };
        assert!(has("forged-digest", "b", 1), "{report:?}");
        assert!(has("forged-digest", "c", 1), "{report:?}");
        assert!(has("missing-digest", "a", 1), "{report:?}");
        // a's records of the deleted digest are now within the horizon and listed nowhere.
        assert!(report.problems.iter().any(|p| p.kind == "inserted" && p.partner == "a"), "{report:?}");
    }

    #[tokio::test]
    async fn a_sealer_stopped_before_recording_its_progress_seals_nothing_twice_and_skips_nothing() {
        let t = trail();
        records(&t).await;
        // The progress as it was before the pass.
        let before: Vec<Item> =
            t.store.query(&crate::ports::Query::prefix("AUDITSEAL", "", 100)).await.expect("state").items;
        assert!(before.is_empty());
        t.sealer.seal(NOW).await.expect("seal");
        // The pass "died" after writing its digests: its progress is lost.
        let progress = t.store.query(&crate::ports::Query::prefix("AUDITSEAL", "", 100)).await.expect("state").items;
        let undo =
            progress.iter().map(|i| WriteOp::Delete { key: i.key.clone(), expected_version: i.version }).collect();
        t.store.transact(undo).await.expect("forget the progress");

        let later = NOW + time::Duration::seconds(30);
        let pass = t.sealer.seal(later).await.expect("seal again");
        assert_eq!((pass.records, pass.digests), (1, 1), "only the young record gets a new digest: {pass:?}");
        let report = t.sealer.verify(later).await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.digests, report.sealed, report.records, report.unsealed), (4, 31, 31, 0));
    }

    #[tokio::test]
    async fn a_sealer_stopped_half_way_through_a_pass_leaves_unsealed_records_not_inserted_ones() {
        let t = trail();
        records(&t).await;
        t.sealer.seal(NOW).await.expect("seal");
        // As if the pass had stopped after writing partner a's digest: b's and c's digests and every progress
        // record but a's are not there.
        for partner in ["b", "c"] {
            t.digests.delete(&crate::domain::audit::seal::digest_path(partner, 1)).await.expect("delete");
        }
        let progress = t.store.query(&crate::ports::Query::prefix("AUDITSEAL", "", 100)).await.expect("state").items;
        let undo = progress
            .iter()
            .filter(|i| i.key.sk != "P#a")
            .map(|i| WriteOp::Delete { key: i.key.clone(), expected_version: i.version })
            .collect();
        t.store.transact(undo).await.expect("forget the progress");
        let report = t.sealer.verify(NOW).await.expect("verify");
        assert!(report.is_intact(), "b's and c's records are waiting, not inserted: {report:?}");
        assert_eq!((report.sealed, report.unsealed), (10, 21));

        let later = NOW + time::Duration::seconds(30);
        let pass = t.sealer.seal(later).await.expect("seal again");
        assert_eq!((pass.records, pass.digests), (21, 3), "a's young record, b's and c's: {pass:?}");
        let report = t.sealer.verify(later).await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.sealed, report.unsealed), (31, 0));
    }

    #[tokio::test]
    async fn removing_a_partners_progress_and_records_is_found_through_its_registration() {
        let t = trail();
        let recs = records(&t).await;
        sealed(&t).await;
        let progress = t.store.get(&Key::new("AUDITSEAL", "P#b")).await.expect("get").expect("b's progress");
        let mut gone = vec![WriteOp::Delete { key: progress.key.clone(), expected_version: progress.version }];
        gone.extend(
            recs.iter()
                .filter(|r| r.entry.partner == "b")
                .map(|r| WriteOp::Delete { key: r.key(), expected_version: 1 }),
        );
        t.store.transact(gone).await.expect("remove b's trail");
        let registered = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let report = t.sealer.verify_with_partners(NOW, &registered).await.expect("verify");
        let removed = report.problems.iter().filter(|p| p.kind == "removed" && p.partner == "b").count();
        assert_eq!(removed, 10, "{report:?}");
    }

    #[test]
    fn merkle_roots_follow_rfc_6962() {
        use crate::domain::audit::seal::merkle_root;
        // The empty tree is SHA-256 of nothing.
        assert_eq!(merkle_root(&[]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let leaves: Vec<String> = (0..5).map(|i| format!("{i:064x}")).collect();
        // A different order or a missing leaf changes the root.
        let mut swapped = leaves.clone();
        swapped.swap(1, 2);
        assert_ne!(merkle_root(&leaves), merkle_root(&swapped));
        assert_ne!(merkle_root(&leaves), merkle_root(&leaves[..4]));
        // Five leaves split 4 + 1: the root is the node over the first four and the fifth leaf.
        let leaf = |s: &str| {
            let mut b = vec![0u8];
            b.extend_from_slice(s.as_bytes());
            crate::vault::sha256(&b)
        };
        let node = |l: [u8; 32], r: [u8; 32]| {
            let mut b = vec![1u8];
            b.extend_from_slice(&l);
            b.extend_from_slice(&r);
            crate::vault::sha256(&b)
        };
        let four = node(node(leaf(&leaves[0]), leaf(&leaves[1])), node(leaf(&leaves[2]), leaf(&leaves[3])));
        assert_eq!(merkle_root(&leaves), hex::encode(node(four, leaf(&leaves[4]))));
    }
}
