//! In-memory fakes of the storage ports, for unit tests only.
//!
//! They follow the same semantics as the embedded and AWS adapters (conditional writes, optimistic versions,
//! all-or-nothing transactions, TTL, prefix queries with cursors) and pass the same [`super::contract`] checks, but
//! keep nothing across restarts. Production code uses [`super::embedded`] or the AWS adapters.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::embedded::{
    check_distinct_keys, check_query, decode_gsi1_cursor, encode_gsi1_cursor, is_expired, validate_blob_path,
};
use crate::ports::{BlobStore, Clock, Item, Key, Page, PortError, PortResult, Query, StateStore, SystemClock, WriteOp};

#[derive(Default)]
struct Tables {
    items: BTreeMap<Key, Item>,
    counters: BTreeMap<Key, u64>,
}

/// An in-memory [`StateStore`].
pub struct MemoryStateStore {
    tables: Mutex<Tables>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for MemoryStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStateStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStateStore {
    fn default() -> Self {
        MemoryStateStore::new()
    }
}

impl MemoryStateStore {
    /// An empty store using the system clock for expiry.
    pub fn new() -> Self {
        MemoryStateStore { tables: Mutex::new(Tables::default()), clock: Arc::new(SystemClock) }
    }

    /// Uses `clock` to decide which items have expired.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // Every mutation below checks all conditions before changing anything, so a panic elsewhere while the lock
        // was held cannot have left the maps half-updated: recovering from poisoning is safe.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }
}

/// The live item at `key` with `expected_version`, or `Conflict`.
fn check_version(tables: &Tables, key: &Key, expected_version: u64, now: i64) -> PortResult<()> {
    match tables.items.get(key) {
        Some(item) if !is_expired(item, now) && item.version == expected_version => Ok(()),
        Some(item) if !is_expired(item, now) => Err(PortError::Conflict(format!(
            "item {}/{} is at version {}, not {expected_version}",
            key.pk, key.sk, item.version
        ))),
        _ => Err(PortError::Conflict(format!("item {}/{} does not exist", key.pk, key.sk))),
    }
}

fn check_op(tables: &Tables, op: &WriteOp, now: i64) -> PortResult<()> {
    match op {
        WriteOp::PutNew(item) => match tables.items.get(&item.key) {
            Some(old) if !is_expired(old, now) => {
                Err(PortError::Conflict(format!("item {}/{} already exists", item.key.pk, item.key.sk)))
            }
            _ => Ok(()),
        },
        WriteOp::Update { item, expected_version } => {
            expected_version.checked_add(1).ok_or_else(|| PortError::Invalid("item version overflowed".to_owned()))?;
            check_version(tables, &item.key, *expected_version, now)
        }
        WriteOp::Delete { key, expected_version } => check_version(tables, key, *expected_version, now),
    }
}

/// Applies an operation whose condition [`check_op`] accepted.
fn apply_op(tables: &mut Tables, op: WriteOp) {
    match op {
        WriteOp::PutNew(mut item) => {
            item.version = 1;
            tables.items.insert(item.key.clone(), item);
        }
        WriteOp::Update { mut item, expected_version } => {
            item.version = expected_version.saturating_add(1);
            tables.items.insert(item.key.clone(), item);
        }
        WriteOp::Delete { key, .. } => {
            tables.items.remove(&key);
        }
    }
}

/// Takes up to `limit` items, and a cursor (made by `cursor`) when one more matched.
fn paginate<'a>(matches: impl Iterator<Item = &'a Item>, limit: usize, cursor: impl Fn(&Item) -> String) -> Page {
    let mut page = Page::default();
    for item in matches {
        if page.items.len() == limit {
            page.next = page.items.last().map(&cursor);
            break;
        }
        page.items.push(item.clone());
    }
    page
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, key: &Key) -> PortResult<Option<Item>> {
        let now = self.now();
        Ok(self.lock().items.get(key).filter(|item| !is_expired(item, now)).cloned())
    }

    async fn put_new(&self, item: Item) -> PortResult<()> {
        self.transact(vec![WriteOp::PutNew(item)]).await
    }

    async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64> {
        self.transact(vec![WriteOp::Update { item, expected_version }]).await?;
        Ok(expected_version.saturating_add(1))
    }

    async fn query(&self, query: &Query) -> PortResult<Page> {
        check_query(query)?;
        let now = self.now();
        let tables = self.lock();
        let start = Key::new(query.pk.clone(), query.sk_prefix.clone());
        let matches = tables
            .items
            .range(start..)
            .map(|(_, item)| item)
            .take_while(|item| item.key.pk == query.pk && item.key.sk.starts_with(&query.sk_prefix))
            .filter(|item| {
                query.after.as_ref().or(query.start_after_sk.as_ref()).is_none_or(|after| item.key.sk > *after)
            })
            .filter(|item| !is_expired(item, now));
        Ok(paginate(matches, query.limit, |item| item.key.sk.clone()))
    }

    async fn query_gsi1(&self, query: &Query) -> PortResult<Page> {
        check_query(query)?;
        let after = query.after.as_deref().map(decode_gsi1_cursor).transpose()?;
        let now = self.now();
        let tables = self.lock();
        // A scan is fine for a test fake; the order is the embedded index's: (gsi1sk, pk, sk).
        let mut matches: Vec<(&str, &Item)> = tables
            .items
            .values()
            .filter(|item| !is_expired(item, now))
            .filter_map(|item| item.gsi1.as_ref().map(|gsi1| (gsi1, item)))
            .filter(|(gsi1, _)| gsi1.pk == query.pk && gsi1.sk.starts_with(&query.sk_prefix))
            .map(|(gsi1, item)| (gsi1.sk.as_str(), item))
            .filter(|(gsi1sk, item)| {
                after.as_ref().is_none_or(|(a_gsi1sk, a_pk, a_sk)| {
                    (*gsi1sk, item.key.pk.as_str(), item.key.sk.as_str())
                        > (a_gsi1sk.as_str(), a_pk.as_str(), a_sk.as_str())
                })
            })
            .collect();
        matches.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
        Ok(paginate(matches.into_iter().map(|(_, item)| item), query.limit, |item| {
            let gsi1sk = item.gsi1.as_ref().map_or("", |gsi1| gsi1.sk.as_str());
            encode_gsi1_cursor(gsi1sk, &item.key)
        }))
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> PortResult<()> {
        check_distinct_keys(&ops)?;
        let now = self.now();
        let mut tables = self.lock();
        // Keys are distinct, so checking every condition against the current state before writing anything is
        // exactly all-or-nothing.
        for op in &ops {
            check_op(&tables, op, now)?;
        }
        for op in ops {
            apply_op(&mut tables, op);
        }
        Ok(())
    }

    async fn increment(&self, key: &Key) -> PortResult<u64> {
        let mut tables = self.lock();
        let counter = tables.counters.entry(key.clone()).or_insert(0);
        *counter = counter
            .checked_add(1)
            .ok_or_else(|| PortError::Invalid(format!("counter {}/{} overflowed", key.pk, key.sk)))?;
        Ok(*counter)
    }
}

/// An in-memory [`BlobStore`] with the folder store's path rules.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryBlobStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // Each operation is a single map call, so a poisoned lock never guards a half-done change.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> PortResult<()> {
        validate_blob_path(path)?;
        self.lock().insert(path.to_owned(), bytes);
        Ok(())
    }

    async fn get(&self, path: &str) -> PortResult<Vec<u8>> {
        validate_blob_path(path)?;
        self.lock().get(path).cloned().ok_or_else(|| PortError::NotFound(format!("blob {path:?}")))
    }

    async fn delete(&self, path: &str) -> PortResult<()> {
        validate_blob_path(path)?;
        self.lock().remove(path);
        Ok(())
    }

    async fn size(&self, path: &str) -> PortResult<u64> {
        validate_blob_path(path)?;
        self.lock().get(path).map(|b| b.len() as u64).ok_or_else(|| PortError::NotFound(format!("blob {path:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::contract;

    #[tokio::test]
    async fn memory_state_store_passes_the_contract() {
        let store = MemoryStateStore::new();
        contract::state_store_contract(&store, "mem").await;
        contract::state_store_ttl_contract(&store, "mem-ttl").await;
    }

    #[tokio::test]
    async fn memory_blob_store_passes_the_contract() {
        contract::blob_store_contract(&MemoryBlobStore::new(), "mem").await;
    }
}
