//! Embedded adapters: real local storage under one data directory, for the local runner.
//!
//! - [`RedbStateStore`]: the state store over one ACID redb database file (`state.redb`) behind a write-ahead log
//!   with group commit (`state.wal/`).
//! - [`FolderBlobStore`]: the blob store over a directory (`documents/`), written atomically, files mode 0600;
//!   documents up to [`redb_store::SMALL_BLOB_MAX`] live in the database and join its group commit.
//! - [`LocalKeyService`]: a locally generated 256-bit master key and P-384 signing key (`keys/`, files mode 0600).
//! - [`LocalTransfers`]: one-time upload and download URLs the runner serves, in place of S3 presigned URLs.
//!
//! These are not fakes: they keep data across restarts and give the same guarantees the AWS adapters give
//! (conditional writes, all-or-nothing transactions, unique counters, encrypted documents).

mod folder_blobs;
mod local_keys;
pub mod local_transfers;
mod memtable;
pub mod redb_store;
mod wal;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

pub use folder_blobs::FolderBlobStore;
pub use local_keys::LocalKeyService;
pub use local_transfers::LocalTransfers;
pub use redb_store::RedbStateStore;

use crate::ports::{BlobStore, Item, Key, KeyService, PortError, PortResult, Query, WriteOp};
use crate::vault::DocumentVault;

pub(crate) use folder_blobs::validate_blob_path;

/// The three embedded adapters, opened together under one data directory.
#[derive(Debug, Clone)]
pub struct EmbeddedAdapters {
    /// The state store (`<data_dir>/state.redb`).
    pub store: Arc<RedbStateStore>,
    /// The raw blob store holding encrypted documents (`<data_dir>/documents/`).
    pub blobs: Arc<FolderBlobStore>,
    /// The key service (`<data_dir>/keys/`).
    pub keys: Arc<LocalKeyService>,
    /// The audit digests (`<data_dir>/audit-digests/`), plain JSON (hashes and ids, no PHI).
    pub audit_digests: Arc<FolderBlobStore>,
    /// The audit-signing key (`<data_dir>/keys/audit/`; its RS256 key signs digests, kept apart from the token key).
    pub audit_signer: Arc<LocalKeyService>,
}

impl EmbeddedAdapters {
    /// Opens (creating on first use) the data directory, mode 0700, and the adapters inside it.
    pub fn open(data_dir: &Path) -> PortResult<Self> {
        create_private_dir(data_dir)?;
        let store = RedbStateStore::open(&data_dir.join("state.redb"))?;
        let store = Arc::new(store);
        let blobs = FolderBlobStore::open(&data_dir.join("documents"))?.with_small_objects(store.clone());
        let keys = LocalKeyService::load_or_create(&data_dir.join("keys"))?;
        let audit_digests = FolderBlobStore::open(&data_dir.join("audit-digests"))?;
        let audit_signer = LocalKeyService::load_or_create(&data_dir.join("keys").join("audit"))?;
        Ok(EmbeddedAdapters {
            store,
            blobs: Arc::new(blobs),
            keys: Arc::new(keys),
            audit_digests: Arc::new(audit_digests),
            audit_signer: Arc::new(audit_signer),
        })
    }

    /// A document vault over these adapters' blob store and key service.
    pub fn vault(&self) -> DocumentVault {
        let blobs: Arc<dyn BlobStore> = self.blobs.clone();
        let keys: Arc<dyn KeyService> = self.keys.clone();
        DocumentVault::new(blobs, keys)
    }
}

/// Creates `dir` and its missing parents; on unix new directories get mode 0700 because they hold secrets and PHI.
pub(crate) fn create_private_dir(dir: &Path) -> PortResult<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| PortError::Unavailable(format!("cannot create directory {}: {e}", dir.display())))
}

/// Whether an item's expiry has passed. Expired items may still be stored (like DynamoDB, which deletes them
/// lazily), so every read filters them.
pub(crate) fn is_expired(item: &Item, now_epoch_secs: i64) -> bool {
    item.ttl.is_some_and(|ttl| ttl < now_epoch_secs)
}

/// Rejects queries no adapter could answer meaningfully (DynamoDB refuses a zero limit too).
pub(crate) fn check_query(query: &Query) -> PortResult<()> {
    if query.limit == 0 {
        return Err(PortError::Invalid("query limit must be at least 1".to_owned()));
    }
    Ok(())
}

/// Rejects transactions that address one key twice or hold more than
/// [`MAX_TRANSACTION_WRITES`](crate::ports::MAX_TRANSACTION_WRITES) writes: DynamoDB refuses them, so the embedded
/// adapters do too, keeping code that works locally working on AWS.
pub(crate) fn check_distinct_keys(ops: &[WriteOp]) -> PortResult<()> {
    if ops.len() > crate::ports::MAX_TRANSACTION_WRITES {
        return Err(PortError::Invalid(format!(
            "a transaction holds at most {} writes, not {}",
            crate::ports::MAX_TRANSACTION_WRITES,
            ops.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for op in ops {
        let key = op.key();
        if !seen.insert(key) {
            return Err(PortError::Invalid(format!("transaction addresses {}/{} twice", key.pk, key.sk)));
        }
    }
    Ok(())
}

/// Encodes the position after the last item of a secondary-index page. The index sort key alone is not unique, so
/// the cursor carries the primary key too; base64url keeps it opaque and safe in a URL.
pub(crate) fn encode_gsi1_cursor(gsi1sk: &str, key: &Key) -> String {
    let json = serde_json::json!([gsi1sk, key.pk, key.sk]).to_string();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor made by [`encode_gsi1_cursor`] into `(gsi1sk, pk, sk)`.
pub(crate) fn decode_gsi1_cursor(cursor: &str) -> PortResult<(String, String, String)> {
    let invalid = || PortError::Invalid("malformed secondary-index cursor".to_owned());
    let json = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let [gsi1sk, pk, sk]: [String; 3] = serde_json::from_slice(&json).map_err(|_| invalid())?;
    Ok((gsi1sk, pk, sk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsi1_cursor_round_trips_and_rejects_garbage() {
        let key = Key::new("PARTNER#a", "INQUIRY#1");
        let cursor = encode_gsi1_cursor("2026-11-25#x", &key);
        assert_eq!(
            decode_gsi1_cursor(&cursor).unwrap(),
            ("2026-11-25#x".to_owned(), "PARTNER#a".to_owned(), "INQUIRY#1".to_owned())
        );
        assert!(matches!(decode_gsi1_cursor("not base64!"), Err(PortError::Invalid(_))));
        assert!(matches!(decode_gsi1_cursor(&URL_SAFE_NO_PAD.encode("[1,2]")), Err(PortError::Invalid(_))));
    }

    #[test]
    fn duplicate_keys_in_a_transaction_are_invalid() {
        let item = Item::new(Key::new("p", "s"), serde_json::json!({}));
        let ops = vec![WriteOp::PutNew(item.clone()), WriteOp::Delete { key: item.key.clone(), expected_version: 1 }];
        assert!(matches!(check_distinct_keys(&ops), Err(PortError::Invalid(_))));
        assert!(check_distinct_keys(&ops[..1]).is_ok());
    }

    #[test]
    fn expiry_is_strictly_before_now() {
        let item = Item::new(Key::new("p", "s"), serde_json::json!({})).with_ttl(100);
        assert!(!is_expired(&item, 100));
        assert!(is_expired(&item, 101));
        assert!(!is_expired(&Item::new(Key::new("p", "s"), serde_json::json!({})), i64::MAX));
    }

    #[test]
    fn zero_limit_queries_are_invalid() {
        assert!(matches!(check_query(&Query::prefix("p", "", 0)), Err(PortError::Invalid(_))));
    }
}
