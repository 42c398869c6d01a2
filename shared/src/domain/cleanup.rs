//! The clean-up ledger: blobs that may be left without a record are written down before they are written, and
//! deleted by the sweep unless the record that owns them was committed first.
//!
//! - A submission schedules its document paths (due in [`WRITE_GRACE`]), writes the documents, and removes the
//!   entry in the same transaction that writes the attachment record. A function that dies in between (a Lambda
//!   timeout, a crash) leaves the entry, and the sweep deletes the documents: no content without metadata.
//! - Staged transfers (an upload a provider never submitted, a download copy) are scheduled for their expiry and
//!   always deleted by the sweep.
//!
//! Entries are spread over [`SHARDS`] partitions (one DynamoDB partition would cap every submission's write), and
//! sorted by due time inside each, so a sweep reads only what is due.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::ids::random_id;
use crate::domain::prior_auth::rfc3339;
use crate::ports::{BlobStore, Clock, Item, Key, PortError, PortResult, Query, StateStore, WriteOp};

/// How long a submission may take between writing its documents and committing its record before the sweep may
/// delete them: well beyond the function's 29-second timeout.
pub const WRITE_GRACE: Duration = Duration::from_secs(15 * 60);
/// Partitions the entries are spread over.
pub const SHARDS: u32 = 8;
/// Entries one query reads.
const SWEEP_PAGE: usize = 200;
/// Pages one sweep reads per shard at most (entries held back by failing deletes cannot stall the ones after).
const SWEEP_PAGES: usize = 10;

/// One ledger entry: blob paths to delete once due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The paths.
    pub paths: Vec<String>,
    /// Why (for operators: `attachment-write`, `upload`, `download`).
    pub reason: String,
}

/// A scheduled clean-up: cancel it (in the owning record's transaction) to keep the blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    key: Key,
}

impl Scheduled {
    /// The write that cancels this clean-up; put it in the transaction that makes the blobs owned.
    pub fn cancel_op(&self) -> WriteOp {
        // A fresh entry is at version 1 and nothing updates it.
        WriteOp::Delete { key: self.key.clone(), expected_version: 1 }
    }
}

/// The ledger over the state store.
#[derive(Clone)]
pub struct CleanupLedger {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for CleanupLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanupLedger").finish_non_exhaustive()
    }
}

fn shard_pk(shard: u32) -> String {
    format!("CLEANUP#{shard}")
}

impl CleanupLedger {
    /// The ledger in `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        CleanupLedger { store }
    }

    /// Writes down `paths` for deletion at `due` (before the blobs are written).
    pub async fn schedule(&self, paths: Vec<String>, reason: &str, due: OffsetDateTime) -> PortResult<Scheduled> {
        let shard = rand::random::<u32>() % SHARDS;
        let key = Key::new(shard_pk(shard), format!("{}#{}", rfc3339(due), random_id()));
        let entry = Entry { paths, reason: reason.to_owned() };
        let body = serde_json::to_value(&entry).map_err(|e| PortError::Invalid(format!("cleanup entry: {e}")))?;
        self.store.put_new(Item::new(key.clone(), body)).await?;
        Ok(Scheduled { key })
    }

    /// Cancels a clean-up outside a transaction (after the blobs were deleted anyway).
    pub async fn cancel(&self, scheduled: &Scheduled) -> PortResult<()> {
        match self.store.transact(vec![scheduled.cancel_op()]).await {
            Ok(()) | Err(PortError::Conflict(_) | PortError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the blobs of every entry due by `now`, then the entry. Returns how many blobs were deleted.
    /// An entry whose blobs cannot all be deleted stays for the next sweep; one that cannot be read is skipped (and
    /// logged): neither stops the sweep from reaching the entries after it.
    pub async fn sweep(&self, blobs: &dyn BlobStore, now: OffsetDateTime) -> PortResult<usize> {
        let now = rfc3339(now);
        let mut deleted = 0;
        for shard in 0..SHARDS {
            let mut query = Query::prefix(shard_pk(shard), "", SWEEP_PAGE);
            'pages: for _ in 0..SWEEP_PAGES {
                let page = self.store.query(&query).await?;
                for item in page.items {
                    // Sorted by due time: the first entry not yet due ends this shard.
                    if item.key.sk.split('#').next().unwrap_or_default() > now.as_str() {
                        break 'pages;
                    }
                    deleted += self.clear(blobs, item).await?;
                }
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes one due entry's blobs, then the entry when they are all gone. Returns how many were deleted.
    async fn clear(&self, blobs: &dyn BlobStore, item: Item) -> PortResult<usize> {
        let entry: Entry = match serde_json::from_value(item.body) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %PortError::undecodable("cleanup entry", &e), "cleanup skipped an entry");
                return Ok(0);
            }
        };
        let mut deleted = 0;
        for path in &entry.paths {
            match blobs.delete(path).await {
                Ok(()) => deleted += 1,
                Err(e) => tracing::warn!(error = %e, reason = %entry.reason, "cleanup could not delete a blob"),
            }
        }
        if deleted == entry.paths.len() {
            let op = WriteOp::Delete { key: item.key, expected_version: item.version };
            match self.store.transact(vec![op]).await {
                Ok(()) | Err(PortError::Conflict(_) | PortError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// Sweeps every `period` for as long as the process runs (the local runner; in AWS the worker's schedule calls
/// [`CleanupLedger::sweep`]).
pub async fn run_forever(
    store: Arc<dyn StateStore>,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    period: Duration,
) {
    let ledger = CleanupLedger::new(store);
    loop {
        match ledger.sweep(blobs.as_ref(), clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "cleanup sweep"),
            Err(e) => tracing::warn!(error = %e, "cleanup sweep failed"),
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::{MemoryBlobStore, MemoryStateStore};
    use time::macros::datetime;

    #[tokio::test]
    async fn due_entries_are_swept_and_cancelled_ones_kept() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
        let blobs = MemoryBlobStore::new();
        let ledger = CleanupLedger::new(store.clone());
        let now = datetime!(2026-11-25 10:00 UTC);
        for p in ["a/1", "a/2", "b/1", "c/1"] {
            blobs.put(p, b"x".to_vec()).await.unwrap();
        }
        ledger.schedule(vec!["a/1".into(), "a/2".into()], "attachment-write", now).await.unwrap();
        let kept = ledger.schedule(vec!["b/1".into()], "attachment-write", now).await.unwrap();
        store.transact(vec![kept.cancel_op()]).await.unwrap();
        ledger.schedule(vec!["c/1".into()], "upload", now + Duration::from_secs(60)).await.unwrap();

        assert_eq!(ledger.sweep(&blobs, now).await.unwrap(), 2, "the due entry's two blobs");
        assert!(matches!(blobs.get("a/1").await, Err(PortError::NotFound(_))));
        assert!(matches!(blobs.get("a/2").await, Err(PortError::NotFound(_))));
        assert!(blobs.get("b/1").await.is_ok(), "a cancelled entry's blob is kept");
        assert!(blobs.get("c/1").await.is_ok(), "an entry not yet due is kept");
        assert_eq!(ledger.sweep(&blobs, now).await.unwrap(), 0, "a swept entry is gone");
        assert_eq!(ledger.sweep(&blobs, now + Duration::from_secs(61)).await.unwrap(), 1);
        assert!(matches!(blobs.get("c/1").await, Err(PortError::NotFound(_))));
    }

    #[tokio::test]
    async fn an_unreadable_entry_does_not_stop_the_sweep() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
        let blobs = MemoryBlobStore::new();
        let ledger = CleanupLedger::new(store.clone());
        let now = datetime!(2026-11-25 10:00 UTC);
        // An unreadable entry at the head of every shard.
        for shard in 0..SHARDS {
            let key = Key::new(shard_pk(shard), format!("{}#0", rfc3339(now - Duration::from_secs(60))));
            store.put_new(Item::new(key, serde_json::json!({ "not": "an entry" }))).await.unwrap();
        }
        blobs.put("d/1", b"x".to_vec()).await.unwrap();
        ledger.schedule(vec!["d/1".into()], "attachment-write", now).await.unwrap();
        assert_eq!(ledger.sweep(&blobs, now).await.unwrap(), 1);
        assert!(matches!(blobs.get("d/1").await, Err(PortError::NotFound(_))));
    }
}
