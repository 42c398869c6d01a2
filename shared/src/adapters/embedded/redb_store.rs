//! The state store over one redb database file.
//!
//! Three tables, all written in the same ACID write transaction:
//! - `items`: `(pk, sk)` → the item as JSON;
//! - `gsi1`: `(gsi1pk, gsi1sk, pk, sk)` → `()`, the secondary index (the primary key makes entries unique);
//! - `counters`: `(pk, sk)` → `u64`, kept apart from items so a counter never shows up in an item query.

use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{check_distinct_keys, check_query, decode_gsi1_cursor, encode_gsi1_cursor, is_expired};
use crate::ports::{Clock, Item, Key, Page, PortError, PortResult, Query, StateStore, SystemClock, WriteOp};

const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");
const GSI1: TableDefinition<(&str, &str, &str, &str), ()> = TableDefinition::new("gsi1");
const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counters");

/// The state store over one redb database file (ACID, crash-safe, single writer at a time).
///
/// redb is synchronous, so every call runs on tokio's blocking pool and never stalls the async workers.
#[derive(Clone)]
pub struct RedbStateStore {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedbStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStateStore").finish_non_exhaustive()
    }
}

impl RedbStateStore {
    /// Opens the database file at `path`, creating it (mode 0600 on unix) and its tables on first use.
    ///
    /// Fails with `Unavailable` when the file is corrupt or already open (redb takes an exclusive lock).
    pub fn open(path: &Path) -> PortResult<Self> {
        let db = Database::create(path).map_err(storage)?;
        restrict_to_owner(path)?;
        // Creating the tables up front lets read transactions open them without a "table missing" case.
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(ITEMS).map_err(storage)?;
        txn.open_table(GSI1).map_err(storage)?;
        txn.open_table(COUNTERS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(RedbStateStore { db: Arc::new(db), clock: Arc::new(SystemClock) })
    }

    /// Uses `clock` to decide which items have expired (the system clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs a read on the calling task: a read transaction is served from redb's page cache (or the OS page cache)
    /// in microseconds, less than the two thread hand-offs of a trip to the blocking pool would cost.
    fn read<T>(&self, work: impl FnOnce(&Database, i64) -> PortResult<T>) -> PortResult<T> {
        work(&self.db, self.clock.now().unix_timestamp())
    }

    /// Runs `work` on the blocking pool with the database and the current time (epoch seconds).
    async fn run<T, F>(&self, work: F) -> PortResult<T>
    where
        F: FnOnce(&Database, i64) -> PortResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let now = self.clock.now().unix_timestamp();
        tokio::task::spawn_blocking(move || work(&db, now))
            .await
            .map_err(|e| PortError::Unavailable(format!("embedded database task failed: {e}")))?
    }
}

#[async_trait]
impl StateStore for RedbStateStore {
    async fn get(&self, key: &Key) -> PortResult<Option<Item>> {
        self.read(|db, now| {
            let txn = db.begin_read().map_err(storage)?;
            let items = txn.open_table(ITEMS).map_err(storage)?;
            Ok(read_item(&items, key)?.filter(|item| !is_expired(item, now)))
        })
    }

    async fn put_new(&self, item: Item) -> PortResult<()> {
        self.run(move |db, now| write(db, now, &[WriteOp::PutNew(item)])).await
    }

    async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64> {
        let new_version = next_version(expected_version)?;
        self.run(move |db, now| write(db, now, &[WriteOp::Update { item, expected_version }])).await?;
        Ok(new_version)
    }

    async fn query(&self, query: &Query) -> PortResult<Page> {
        check_query(query)?;
        let query = query.clone();
        self.run(move |db, now| query_items(db, &query, now)).await
    }

    async fn query_gsi1(&self, query: &Query) -> PortResult<Page> {
        check_query(query)?;
        let query = query.clone();
        self.run(move |db, now| query_index(db, &query, now)).await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> PortResult<()> {
        check_distinct_keys(&ops)?;
        if ops.is_empty() {
            return Ok(());
        }
        self.run(move |db, now| write(db, now, &ops)).await
    }

    async fn increment(&self, key: &Key) -> PortResult<u64> {
        let key = key.clone();
        self.run(move |db, _| {
            let txn = db.begin_write().map_err(storage)?;
            let value = {
                let mut counters = txn.open_table(COUNTERS).map_err(storage)?;
                let current = counters
                    .get((key.pk.as_str(), key.sk.as_str()))
                    .map_err(storage)?
                    .map(|guard| guard.value())
                    .unwrap_or(0);
                let value = current
                    .checked_add(1)
                    .ok_or_else(|| PortError::Invalid(format!("counter {}/{} overflowed", key.pk, key.sk)))?;
                counters.insert((key.pk.as_str(), key.sk.as_str()), value).map_err(storage)?;
                value
            };
            // redb's single-writer lock plus the commit make the read-increment-write atomic across tasks.
            txn.commit().map_err(storage)?;
            Ok(value)
        })
        .await
    }
}

/// Maps any redb error to `Unavailable`: the caller can do nothing about it but retry or give up.
fn storage<E: Into<redb::Error>>(error: E) -> PortError {
    PortError::Unavailable(format!("embedded database: {}", error.into()))
}

/// The version an update writes.
fn next_version(expected_version: u64) -> PortResult<u64> {
    expected_version.checked_add(1).ok_or_else(|| PortError::Invalid("item version overflowed".to_owned()))
}

/// Keeps the database readable by its owner only: it holds claims data.
fn restrict_to_owner(path: &Path) -> PortResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| PortError::Unavailable(format!("cannot restrict {}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn decode(bytes: &[u8]) -> PortResult<Item> {
    serde_json::from_slice(bytes).map_err(|e| PortError::Integrity(format!("stored item is not valid JSON: {e}")))
}

fn encode(item: &Item) -> PortResult<Vec<u8>> {
    serde_json::to_vec(item).map_err(|e| PortError::Invalid(format!("item cannot be serialized: {e}")))
}

/// Reads an item as stored, expired or not.
fn read_item<T>(items: &T, key: &Key) -> PortResult<Option<Item>>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    match items.get((key.pk.as_str(), key.sk.as_str())).map_err(storage)? {
        Some(guard) => decode(guard.value()).map(Some),
        None => Ok(None),
    }
}

/// Applies `ops` in one write transaction: every condition is checked as its write is made, and the first failure
/// drops the transaction, which rolls back everything written before it.
fn write(db: &Database, now: i64, ops: &[WriteOp]) -> PortResult<()> {
    let txn = db.begin_write().map_err(storage)?;
    apply(&txn, now, ops)?;
    txn.commit().map_err(storage)
}

fn apply(txn: &WriteTransaction, now: i64, ops: &[WriteOp]) -> PortResult<()> {
    let mut items = txn.open_table(ITEMS).map_err(storage)?;
    let mut index = txn.open_table(GSI1).map_err(storage)?;
    for op in ops {
        match op {
            WriteOp::PutNew(item) => {
                let stored = read_item(&items, &item.key)?;
                // An expired item is absent to readers, so it must not block a new one (idempotency records).
                if stored.as_ref().is_some_and(|old| !is_expired(old, now)) {
                    return Err(PortError::Conflict(format!("item {}/{} already exists", item.key.pk, item.key.sk)));
                }
                let mut new = item.clone();
                new.version = 1;
                put(&mut items, &mut index, stored.as_ref(), &new)?;
            }
            WriteOp::Update { item, expected_version } => {
                let stored = live_with_version(&items, &item.key, *expected_version, now)?;
                let mut new = item.clone();
                new.version = next_version(*expected_version)?;
                put(&mut items, &mut index, Some(&stored), &new)?;
            }
            WriteOp::Delete { key, expected_version } => {
                let stored = live_with_version(&items, key, *expected_version, now)?;
                items.remove((key.pk.as_str(), key.sk.as_str())).map_err(storage)?;
                unindex(&mut index, &stored)?;
            }
        }
    }
    Ok(())
}

/// The stored item at `key`, when it is live and at `expected_version`; `Conflict` otherwise.
fn live_with_version(
    items: &Table<(&'static str, &'static str), &'static [u8]>,
    key: &Key,
    expected_version: u64,
    now: i64,
) -> PortResult<Item> {
    match read_item(items, key)? {
        Some(item) if !is_expired(&item, now) && item.version == expected_version => Ok(item),
        Some(item) if !is_expired(&item, now) => Err(PortError::Conflict(format!(
            "item {}/{} is at version {}, not {expected_version}",
            key.pk, key.sk, item.version
        ))),
        _ => Err(PortError::Conflict(format!("item {}/{} does not exist", key.pk, key.sk))),
    }
}

/// Writes `new` over `old` (if any), moving its secondary-index entry.
fn put(
    items: &mut Table<(&'static str, &'static str), &'static [u8]>,
    index: &mut Table<(&'static str, &'static str, &'static str, &'static str), ()>,
    old: Option<&Item>,
    new: &Item,
) -> PortResult<()> {
    let bytes = encode(new)?;
    items.insert((new.key.pk.as_str(), new.key.sk.as_str()), bytes.as_slice()).map_err(storage)?;
    if let Some(old) = old {
        unindex(index, old)?;
    }
    if let Some(gsi1) = &new.gsi1 {
        index
            .insert((gsi1.pk.as_str(), gsi1.sk.as_str(), new.key.pk.as_str(), new.key.sk.as_str()), ())
            .map_err(storage)?;
    }
    Ok(())
}

fn unindex(
    index: &mut Table<(&'static str, &'static str, &'static str, &'static str), ()>,
    item: &Item,
) -> PortResult<()> {
    if let Some(gsi1) = &item.gsi1 {
        index
            .remove((gsi1.pk.as_str(), gsi1.sk.as_str(), item.key.pk.as_str(), item.key.sk.as_str()))
            .map_err(storage)?;
    }
    Ok(())
}

/// Items of one partition by sort-key prefix; the cursor is the last returned sort key.
fn query_items(db: &Database, query: &Query, now: i64) -> PortResult<Page> {
    let txn = db.begin_read().map_err(storage)?;
    let items = txn.open_table(ITEMS).map_err(storage)?;
    let pk = query.pk.as_str();
    let prefix = query.sk_prefix.as_str();
    // Resume after the cursor unless it sorts before the prefix range (then the range start is the tighter bound).
    let start = match query.after.as_deref() {
        Some(after) if after >= prefix => Bound::Excluded((pk, after)),
        _ => Bound::Included((pk, prefix)),
    };
    let mut page = Page::default();
    for entry in items.range::<(&str, &str)>((start, Bound::Unbounded)).map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let (item_pk, item_sk) = key.value();
        if item_pk != pk || !item_sk.starts_with(prefix) {
            break;
        }
        let item = decode(value.value())?;
        if is_expired(&item, now) {
            continue;
        }
        if page.items.len() == query.limit {
            // One more live item matches: only now is a cursor owed.
            page.next = page.items.last().map(|last| last.key.sk.clone());
            break;
        }
        page.items.push(item);
    }
    Ok(page)
}

/// Items by secondary-index partition and sort-key prefix, ordered by `(gsi1sk, pk, sk)`.
fn query_index(db: &Database, query: &Query, now: i64) -> PortResult<Page> {
    let cursor = query.after.as_deref().map(decode_gsi1_cursor).transpose()?;
    let txn = db.begin_read().map_err(storage)?;
    let items = txn.open_table(ITEMS).map_err(storage)?;
    let index = txn.open_table(GSI1).map_err(storage)?;
    let gsi1pk = query.pk.as_str();
    let prefix = query.sk_prefix.as_str();
    let start = match &cursor {
        Some((gsi1sk, pk, sk)) if gsi1sk.as_str() >= prefix => {
            Bound::Excluded((gsi1pk, gsi1sk.as_str(), pk.as_str(), sk.as_str()))
        }
        _ => Bound::Included((gsi1pk, prefix, "", "")),
    };
    let mut page = Page::default();
    for entry in index.range::<(&str, &str, &str, &str)>((start, Bound::Unbounded)).map_err(storage)? {
        let (entry_key, _) = entry.map_err(storage)?;
        let (entry_gsi1pk, entry_gsi1sk, pk, sk) = entry_key.value();
        if entry_gsi1pk != gsi1pk || !entry_gsi1sk.starts_with(prefix) {
            break;
        }
        // The index is written in the same transaction as the items, so a missing item would mean corruption;
        // skipping it keeps queries answering rather than failing on one bad entry.
        let Some(item) = read_item(&items, &Key::new(pk, sk))? else {
            continue;
        };
        if is_expired(&item, now) {
            continue;
        }
        if page.items.len() == query.limit {
            page.next = page
                .items
                .last()
                .and_then(|last| last.gsi1.as_ref().map(|gsi1| encode_gsi1_cursor(&gsi1.sk, &last.key)));
            break;
        }
        page.items.push(item);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::FixedClock;
    use serde_json::json;
    use time::OffsetDateTime;

    fn open(dir: &tempfile::TempDir) -> RedbStateStore {
        RedbStateStore::open(&dir.path().join("state.redb")).unwrap()
    }

    #[tokio::test]
    async fn gsi1_entry_moves_and_disappears_with_the_item() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let key = Key::new("P", "S");
        store.put_new(Item::new(key.clone(), json!({})).with_gsi1(Key::new("G", "a"))).await.unwrap();
        store.update(Item::new(key.clone(), json!({})).with_gsi1(Key::new("G", "b")), 1).await.unwrap();
        let page = store.query_gsi1(&Query::prefix("G", "", 10)).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].gsi1, Some(Key::new("G", "b")));
        store.transact(vec![WriteOp::Delete { key, expected_version: 2 }]).await.unwrap();
        assert!(store.query_gsi1(&Query::prefix("G", "", 10)).await.unwrap().items.is_empty());
    }

    #[tokio::test]
    async fn expired_items_are_absent_and_can_be_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let store = open(&dir).with_clock(Arc::new(FixedClock(now)));
        let key = Key::new("P", "S");
        store.put_new(Item::new(key.clone(), json!({"n": 1})).with_ttl(999)).await.unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
        assert!(store.query(&Query::prefix("P", "", 10)).await.unwrap().items.is_empty());
        assert!(matches!(store.update(Item::new(key.clone(), json!({})), 1).await, Err(PortError::Conflict(_))));
        store.put_new(Item::new(key.clone(), json!({"n": 2})).with_ttl(1_000)).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().unwrap().body, json!({"n": 2}));
    }

    #[tokio::test]
    async fn query_skips_expired_items_without_losing_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let store = open(&dir).with_clock(Arc::new(FixedClock(now)));
        for (sk, ttl) in [("a", None), ("b", Some(1)), ("c", None), ("d", Some(1)), ("e", None)] {
            let mut item = Item::new(Key::new("P", sk), json!({}));
            item.ttl = ttl;
            store.put_new(item).await.unwrap();
        }
        let first = store.query(&Query::prefix("P", "", 2)).await.unwrap();
        let sks: Vec<_> = first.items.iter().map(|i| i.key.sk.as_str()).collect();
        assert_eq!(sks, ["a", "c"]);
        let mut next = Query::prefix("P", "", 2);
        next.after = first.next;
        let second = store.query(&next).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].key.sk, "e");
        assert!(second.next.is_none());
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(&dir);
        assert!(matches!(RedbStateStore::open(&dir.path().join("state.redb")), Err(PortError::Unavailable(_))));
    }
}
