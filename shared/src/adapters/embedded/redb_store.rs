//! The state store over one redb database file, with group commit.
//!
//! Four tables, all written in the same ACID write transaction:
//! - `items`: `(pk, sk)` → the item as JSON;
//! - `gsi1`: `(gsi1pk, gsi1sk, pk, sk)` → `()`, the secondary index (the primary key makes entries unique);
//! - `counters`: `(pk, sk)` → `u64`, kept apart from items so a counter never shows up in an item query;
//! - `blobs`: path → bytes, the small documents of the blob store ([`super::FolderBlobStore`] puts objects up to
//!   [`SMALL_BLOB_MAX`] here, so they ride in the same durable commit as the records that name them).
//!
//! **Group commit.** Every write goes to one committer thread through a queue. The committer takes everything
//! queued (up to [`MAX_BATCH`] jobs), applies each job in one redb write transaction, and commits once: one fsync for
//! the whole batch. A job whose condition fails is left out (its writes are never applied: conditions are checked
//! against the transaction, including the batch's earlier jobs, before anything of the job is written) and only its
//! caller gets `Conflict`; the others commit. Each caller is answered only after the commit that holds its writes
//! is durable. Small-document puts do not wait: they are queued (readable at once from a map of pending writes)
//! and ride in the next batch; a batch no caller waits for commits without an fsync (`Durability::None`), and the
//! durable commit of the record that names them, which the flows always make after writing their documents and
//! which is queued after them, makes them durable too. A crash before it loses only documents no record names. Reads use redb's MVCC read transactions and never wait
//! for the committer.

use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, Table, TableDefinition};

use super::{check_distinct_keys, check_query, decode_gsi1_cursor, encode_gsi1_cursor, is_expired};
use crate::ports::{Clock, Item, Key, Page, PortError, PortResult, Query, StateStore, SystemClock, WriteOp};

const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");
const GSI1: TableDefinition<(&str, &str, &str, &str), ()> = TableDefinition::new("gsi1");
const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counters");

const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// Largest document kept in the database rather than as a file of its own: raw interchanges, answers and
/// PAS Bundles are a few KiB (a 270 about 0.5 KiB, a PAS Bundle 5 to 20 KiB); 256 KiB holds nearly every X12 and
/// FHIR message while keeping one batch's commit to a few MiB; attachments past it stay files.
pub const SMALL_BLOB_MAX: usize = 256 * 1024;

/// Most jobs one group commit takes.
pub const MAX_BATCH: usize = 512;

/// The state store over one redb database file (ACID, crash-safe), with group commit (see the module docs).
#[derive(Clone)]
pub struct RedbStateStore {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    committer: Arc<Committer>,
}

/// A write for the committer.
enum Job {
    /// A request's writes, each with its item already encoded at the version it will have (the encoding is done
    /// by the caller: the committer is the one thread every write passes through).
    Transact(Vec<(WriteOp, Option<Vec<u8>>)>),
    Increment(Key),
    /// A small document (its generation in the pending map).
    PutBlob(String, Arc<Vec<u8>>, u64),
    DeleteBlob(String, u64),
    /// Nothing to write: a durable commit of everything queued before it.
    Sync,
}

/// Small-document writes queued but not committed yet, by path: readers see them at once (so a document is
/// readable as soon as its put returns), and the committer forgets each once the batch holding it commits.
#[derive(Default)]
struct PendingBlobs {
    next: std::sync::atomic::AtomicU64,
    writes: std::sync::Mutex<std::collections::HashMap<String, PendingWrite>>,
}

/// A pending small-document write: its generation, and the bytes (`None`: a delete).
type PendingWrite = (u64, Option<Arc<Vec<u8>>>);

impl PendingBlobs {
    fn record(&self, path: &str, bytes: Option<Arc<Vec<u8>>>) -> u64 {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut writes) = self.writes.lock() {
            writes.insert(path.to_owned(), (generation, bytes));
        }
        generation
    }

    /// `Some(Some(bytes))`: a pending put; `Some(None)`: a pending delete; `None`: nothing pending.
    fn get(&self, path: &str) -> Option<Option<Arc<Vec<u8>>>> {
        self.writes.lock().ok().and_then(|w| w.get(path).map(|(_, bytes)| bytes.clone()))
    }

    fn committed(&self, path: &str, generation: u64) {
        if let Ok(mut writes) = self.writes.lock() {
            if writes.get(path).is_some_and(|(g, _)| *g == generation) {
                writes.remove(path);
            }
        }
    }
}

/// What a job answers.
enum Done {
    Unit,
    Count(u64),
}

struct Queued {
    job: Job,
    now: i64,
    /// Who waits for the commit (small-document writes do not: they are read from the pending map meanwhile).
    reply: Option<tokio::sync::oneshot::Sender<PortResult<Done>>>,
    /// Commits this job failed in (small-document writes are carried to the next batch a few times).
    failures: u8,
}

/// The committer thread and its queue; the last store handle dropped stops and joins it, so the database file is
/// released when the store is gone.
struct Committer {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<Queued>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    pending: Arc<PendingBlobs>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

impl Committer {
    fn start(db: Arc<Database>) -> PortResult<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Queued>();
        let pending = Arc::new(PendingBlobs::default());
        let committed = pending.clone();
        let thread = std::thread::Builder::new()
            .name("redb-committer".into())
            .spawn(move || commit_loop(&db, &rx, &committed))
            .map_err(|e| PortError::Unavailable(format!("cannot start the committer thread: {e}")))?;
        Ok(Committer { queue: std::sync::Mutex::new(Some(tx)), thread: std::sync::Mutex::new(Some(thread)), pending })
    }

    fn send(&self, queued: Queued) -> PortResult<()> {
        let sent = self.queue.lock().ok().and_then(|q| q.as_ref().map(|tx| tx.send(queued).is_ok())).unwrap_or(false);
        if sent {
            Ok(())
        } else {
            Err(PortError::Unavailable("the embedded database is closed".into()))
        }
    }

    async fn submit(&self, job: Job, now: i64) -> PortResult<Done> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Queued { job, now, reply: Some(reply), failures: 0 })?;
        answer.await.map_err(|_| PortError::Unavailable("the embedded database committer stopped".into()))?
    }

    /// Queues a small-document write without waiting for its commit.
    fn enqueue_blob(&self, path: &str, bytes: Option<Vec<u8>>) -> PortResult<()> {
        let bytes = bytes.map(Arc::new);
        let generation = self.pending.record(path, bytes.clone());
        let job = match bytes {
            Some(bytes) => Job::PutBlob(path.to_owned(), bytes, generation),
            None => Job::DeleteBlob(path.to_owned(), generation),
        };
        let sent = self.send(Queued { job, now: 0, reply: None, failures: 0 });
        if sent.is_err() {
            self.pending.committed(path, generation);
        }
        sent
    }
}

/// Small-document writes whose commit failed are carried to the next batch this many times before they are dropped
/// (their request's record commits after them, and fails too while the database cannot commit).
const BLOB_COMMIT_ATTEMPTS: u8 = 3;

/// The committer: one write transaction and one commit per batch of queued jobs.
fn commit_loop(db: &Database, queue: &std::sync::mpsc::Receiver<Queued>, pending: &PendingBlobs) {
    let mut carried: Vec<Queued> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            match queue.recv() {
                Ok(first) => batch.push(first),
                Err(_) => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Only a batch someone waits for is flushed to disk; small documents alone are made durable by the next
        // durable commit (their request's record).
        let durable = batch.iter().any(|q| q.reply.is_some());
        match run_batch(db, &batch, durable) {
            Ok(results) => {
                for (queued, result) in batch.into_iter().zip(results) {
                    match &queued.job {
                        Job::PutBlob(path, _, generation) | Job::DeleteBlob(path, generation) => {
                            pending.committed(path, *generation);
                        }
                        _ => {}
                    }
                    if let Some(reply) = queued.reply {
                        let _ = reply.send(result);
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                for mut queued in batch {
                    match queued.reply.take() {
                        Some(reply) => {
                            let _ = reply.send(Err(PortError::Unavailable(message.clone())));
                        }
                        None if queued.failures + 1 < BLOB_COMMIT_ATTEMPTS => {
                            queued.failures += 1;
                            carried.push(queued);
                        }
                        None => {
                            if let Job::PutBlob(path, _, generation) | Job::DeleteBlob(path, generation) = &queued.job {
                                tracing::error!(error = %message, "a small document could not be committed");
                                pending.committed(path, *generation);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Applies a batch in one transaction and commits it; `Err` (nothing committed) when the transaction itself fails.
fn run_batch(db: &Database, batch: &[Queued], durable: bool) -> PortResult<Vec<PortResult<Done>>> {
    let mut txn = db.begin_write().map_err(storage)?;
    if !durable {
        txn.set_durability(redb::Durability::None);
    }
    let mut results = Vec::with_capacity(batch.len());
    {
        // Each table is opened once per batch, not once per job.
        let mut items = txn.open_table(ITEMS).map_err(storage)?;
        let mut index = txn.open_table(GSI1).map_err(storage)?;
        let mut counters = txn.open_table(COUNTERS).map_err(storage)?;
        let mut blobs = txn.open_table(BLOBS).map_err(storage)?;
        for queued in batch {
            let result = match &queued.job {
                Job::Transact(ops) => match check(&items, queued.now, ops) {
                    Ok(()) => {
                        // Every condition holds, so a failure while writing is the database's, not the caller's:
                        // the job may be half-applied, and the whole batch must not commit.
                        apply(&mut items, &mut index, queued.now, ops)?;
                        Ok(Done::Unit)
                    }
                    Err(e) => Err(e),
                },
                Job::Increment(key) => Ok(Done::Count(increment_in(&mut counters, key)?)),
                Job::PutBlob(path, bytes, _) => {
                    blobs.insert(path.as_str(), bytes.as_slice()).map_err(storage)?;
                    Ok(Done::Unit)
                }
                Job::DeleteBlob(path, _) => {
                    blobs.remove(path.as_str()).map_err(storage)?;
                    Ok(Done::Unit)
                }
                Job::Sync => Ok(Done::Unit),
            };
            results.push(result);
        }
    }
    txn.commit().map_err(storage)?;
    Ok(results)
}

/// Checks every condition of `ops` against the transaction as it is (earlier jobs of the batch included), writing
/// nothing.
fn check(
    items: &Table<(&'static str, &'static str), &'static [u8]>,
    now: i64,
    ops: &[(WriteOp, Option<Vec<u8>>)],
) -> PortResult<()> {
    for (op, _) in ops {
        match op {
            WriteOp::PutNew(item) => {
                if read_stored(items, &item.key)?.is_some_and(|old| !old.is_expired(now)) {
                    return Err(PortError::Conflict(format!("item {}/{} already exists", item.key.pk, item.key.sk)));
                }
            }
            WriteOp::Update { item, expected_version } => {
                live_with_version(items, &item.key, *expected_version, now)?;
            }
            WriteOp::Delete { key, expected_version } => {
                live_with_version(items, key, *expected_version, now)?;
            }
        }
    }
    Ok(())
}

fn increment_in(counters: &mut Table<(&'static str, &'static str), u64>, key: &Key) -> PortResult<u64> {
    let current =
        counters.get((key.pk.as_str(), key.sk.as_str())).map_err(storage)?.map(|guard| guard.value()).unwrap_or(0);
    let value = current
        .checked_add(1)
        .ok_or_else(|| PortError::Invalid(format!("counter {}/{} overflowed", key.pk, key.sk)))?;
    counters.insert((key.pk.as_str(), key.sk.as_str()), value).map_err(storage)?;
    Ok(value)
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
        txn.open_table(BLOBS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let db = Arc::new(db);
        let committer = Arc::new(Committer::start(db.clone())?);
        Ok(RedbStateStore { db, clock: Arc::new(SystemClock), committer })
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

    /// Queues a write for the committer and waits until it is durable.
    async fn commit(&self, job: Job) -> PortResult<Done> {
        self.committer.submit(job, self.clock.now().unix_timestamp()).await
    }

    /// Stores a small document (at most [`SMALL_BLOB_MAX`] bytes) in the database: readable at once, committed
    /// with the next batch and durable with the next durable commit (see the module docs).
    pub(crate) fn put_blob(&self, path: &str, bytes: Vec<u8>) -> PortResult<()> {
        self.committer.enqueue_blob(path, Some(bytes))
    }

    /// Removes a small document (like [`Self::put_blob`], without waiting); removing a missing one is not an error.
    pub(crate) fn delete_blob(&self, path: &str) -> PortResult<()> {
        self.committer.enqueue_blob(path, None)
    }

    /// Waits for a durable commit of every write queued so far (small documents included).
    pub(crate) async fn sync(&self) -> PortResult<()> {
        self.commit(Job::Sync).await.map(drop)
    }

    /// A small document, when the database holds one at `path` (or a write of it is pending).
    pub(crate) fn get_blob(&self, path: &str) -> PortResult<Option<Vec<u8>>> {
        if let Some(pending) = self.committer.pending.get(path) {
            return Ok(pending.map(|bytes| bytes.as_ref().clone()));
        }
        self.read(|db, _| {
            let txn = db.begin_read().map_err(storage)?;
            let blobs = txn.open_table(BLOBS).map_err(storage)?;
            Ok(blobs.get(path).map_err(storage)?.map(|guard| guard.value().to_vec()))
        })
    }

    /// The paths of the small documents the database holds (pending writes included).
    pub fn blob_paths(&self) -> PortResult<Vec<String>> {
        let mut paths: std::collections::BTreeSet<String> = self.read(|db, _| {
            let txn = db.begin_read().map_err(storage)?;
            let blobs = txn.open_table(BLOBS).map_err(storage)?;
            let mut out = std::collections::BTreeSet::new();
            for entry in blobs.iter().map_err(storage)? {
                let (path, _) = entry.map_err(storage)?;
                out.insert(path.value().to_owned());
            }
            Ok(out)
        })?;
        if let Ok(writes) = self.committer.pending.writes.lock() {
            for (path, (_, bytes)) in writes.iter() {
                if bytes.is_some() {
                    paths.insert(path.clone());
                } else {
                    paths.remove(path);
                }
            }
        }
        Ok(paths.into_iter().collect())
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
        self.commit(Job::Transact(prepare(vec![WriteOp::PutNew(item)])?)).await.map(drop)
    }

    async fn update(&self, item: Item, expected_version: u64) -> PortResult<u64> {
        let new_version = next_version(expected_version)?;
        self.commit(Job::Transact(prepare(vec![WriteOp::Update { item, expected_version }])?)).await?;
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
        self.commit(Job::Transact(prepare(ops)?)).await.map(drop)
    }

    async fn increment(&self, key: &Key) -> PortResult<u64> {
        match self.commit(Job::Increment(key.clone())).await? {
            Done::Count(value) => Ok(value),
            Done::Unit => Err(PortError::Invalid("the committer answered an increment without a value".into())),
        }
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

/// Applies prepared `ops` to the transaction, checking each condition as its write is made.
fn apply(
    items: &mut Table<(&'static str, &'static str), &'static [u8]>,
    index: &mut Table<(&'static str, &'static str, &'static str, &'static str), ()>,
    now: i64,
    ops: &[(WriteOp, Option<Vec<u8>>)],
) -> PortResult<()> {
    let unprepared = || PortError::Invalid("a write reached the committer without its encoded item".to_owned());
    for (op, bytes) in ops {
        match op {
            WriteOp::PutNew(item) => {
                let stored = read_stored(&*items, &item.key)?;
                // An expired item is absent to readers, so it must not block a new one (idempotency records).
                if stored.as_ref().is_some_and(|old| !old.is_expired(now)) {
                    return Err(PortError::Conflict(format!("item {}/{} already exists", item.key.pk, item.key.sk)));
                }
                put(
                    items,
                    index,
                    &item.key,
                    stored.as_ref(),
                    item.gsi1.as_ref(),
                    bytes.as_deref().ok_or_else(unprepared)?,
                )?;
            }
            WriteOp::Update { item, expected_version } => {
                let stored = live_with_version(items, &item.key, *expected_version, now)?;
                put(
                    items,
                    index,
                    &item.key,
                    Some(&stored),
                    item.gsi1.as_ref(),
                    bytes.as_deref().ok_or_else(unprepared)?,
                )?;
            }
            WriteOp::Delete { key, expected_version } => {
                let stored = live_with_version(items, key, *expected_version, now)?;
                items.remove((key.pk.as_str(), key.sk.as_str())).map_err(storage)?;
                unindex(index, key, &stored)?;
            }
        }
    }
    Ok(())
}

/// Encodes each write's item at the version it will be stored with (1 for a create, the expected version + 1 for
/// an update), on the caller's task.
fn prepare(ops: Vec<WriteOp>) -> PortResult<Vec<(WriteOp, Option<Vec<u8>>)>> {
    ops.into_iter()
        .map(|mut op| {
            let bytes = match &mut op {
                WriteOp::PutNew(item) => {
                    item.version = 1;
                    Some(encode(item)?)
                }
                WriteOp::Update { item, expected_version } => {
                    item.version = next_version(*expected_version)?;
                    Some(encode(item)?)
                }
                WriteOp::Delete { .. } => None,
            };
            Ok((op, bytes))
        })
        .collect()
}

/// What the committer needs of a stored item: its version, expiry and index key (the body is skipped, not built).
#[derive(serde::Deserialize)]
struct Stored {
    version: u64,
    #[serde(default)]
    ttl: Option<i64>,
    #[serde(default)]
    gsi1: Option<Key>,
}

impl Stored {
    fn is_expired(&self, now: i64) -> bool {
        self.ttl.is_some_and(|ttl| ttl < now)
    }
}

/// Reads what the committer needs of a stored item, expired or not.
fn read_stored<T>(items: &T, key: &Key) -> PortResult<Option<Stored>>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    match items.get((key.pk.as_str(), key.sk.as_str())).map_err(storage)? {
        Some(guard) => serde_json::from_slice(guard.value())
            .map(Some)
            .map_err(|e| PortError::Integrity(format!("stored item is not valid JSON: {e}"))),
        None => Ok(None),
    }
}

/// The stored item at `key`, when it is live and at `expected_version`; `Conflict` otherwise.
fn live_with_version(
    items: &Table<(&'static str, &'static str), &'static [u8]>,
    key: &Key,
    expected_version: u64,
    now: i64,
) -> PortResult<Stored> {
    match read_stored(items, key)? {
        Some(item) if !item.is_expired(now) && item.version == expected_version => Ok(item),
        Some(item) if !item.is_expired(now) => Err(PortError::Conflict(format!(
            "item {}/{} is at version {}, not {expected_version}",
            key.pk, key.sk, item.version
        ))),
        _ => Err(PortError::Conflict(format!("item {}/{} does not exist", key.pk, key.sk))),
    }
}

/// Writes the encoded item at `key` over `old` (if any), moving its secondary-index entry.
fn put(
    items: &mut Table<(&'static str, &'static str), &'static [u8]>,
    index: &mut Table<(&'static str, &'static str, &'static str, &'static str), ()>,
    key: &Key,
    old: Option<&Stored>,
    gsi1: Option<&Key>,
    bytes: &[u8],
) -> PortResult<()> {
    items.insert((key.pk.as_str(), key.sk.as_str()), bytes).map_err(storage)?;
    if let Some(old) = old {
        unindex(index, key, old)?;
    }
    if let Some(gsi1) = gsi1 {
        index.insert((gsi1.pk.as_str(), gsi1.sk.as_str(), key.pk.as_str(), key.sk.as_str()), ()).map_err(storage)?;
    }
    Ok(())
}

fn unindex(
    index: &mut Table<(&'static str, &'static str, &'static str, &'static str), ()>,
    key: &Key,
    item: &Stored,
) -> PortResult<()> {
    if let Some(gsi1) = &item.gsi1 {
        index.remove((gsi1.pk.as_str(), gsi1.sk.as_str(), key.pk.as_str(), key.sk.as_str())).map_err(storage)?;
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
    let start = match query.after.as_deref().or(query.start_after_sk.as_deref()) {
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_condition_fails_only_its_own_request_in_a_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.put_new(Item::new(Key::new("P", "taken"), json!({}))).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let ops = match i {
                    // A create of an existing key.
                    7 => vec![WriteOp::PutNew(Item::new(Key::new("P", "taken"), json!({"i": i})))],
                    // A good create with a stale update: neither is applied.
                    9 => vec![
                        WriteOp::PutNew(Item::new(Key::new("P", "half"), json!({}))),
                        WriteOp::Update { item: Item::new(Key::new("P", "taken"), json!({})), expected_version: 5 },
                    ],
                    // Two requests creating the same key: exactly one wins.
                    11 | 12 => vec![WriteOp::PutNew(Item::new(Key::new("P", "raced"), json!({"i": i})))],
                    _ => vec![WriteOp::PutNew(Item::new(Key::new("P", format!("k{i:02}")), json!({"i": i})))],
                };
                (i, store.transact(ops).await)
            }));
        }
        let mut raced_wins = 0;
        for t in tasks {
            let (i, result) = t.await.unwrap();
            match i {
                7 | 9 => assert!(matches!(result, Err(PortError::Conflict(_))), "{i}: {result:?}"),
                11 | 12 => raced_wins += usize::from(result.is_ok()),
                _ => assert!(result.is_ok(), "{i}: {result:?}"),
            }
        }
        assert_eq!(raced_wins, 1);
        let page = store.query(&Query::prefix("P", "k", 100)).await.unwrap();
        assert_eq!(page.items.len(), 60, "every other request committed");
        assert!(store.get(&Key::new("P", "half")).await.unwrap().is_none(), "a failed request writes nothing");
        assert_eq!(store.get(&Key::new("P", "taken")).await.unwrap().unwrap().body, json!({}));
    }

    #[tokio::test]
    async fn small_documents_and_records_survive_a_reopen_and_counters_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&dir);
            store.put_blob("a/raw", b"ciphertext".to_vec()).unwrap();
            assert_eq!(store.get_blob("a/raw").unwrap().as_deref(), Some(&b"ciphertext"[..]), "readable at once");
            store.put_new(Item::new(Key::new("P", "record"), json!({"doc": "a/raw"}))).await.unwrap();
            assert_eq!(store.increment(&Key::new("C", "n")).await.unwrap(), 1);
            assert_eq!(store.increment(&Key::new("C", "n")).await.unwrap(), 2);
        }
        // Dropping the last handle stops the committer and releases the file.
        let store = open(&dir);
        assert_eq!(store.get_blob("a/raw").unwrap().as_deref(), Some(&b"ciphertext"[..]));
        assert!(store.get(&Key::new("P", "record")).await.unwrap().is_some());
        assert_eq!(store.increment(&Key::new("C", "n")).await.unwrap(), 3);
        store.delete_blob("a/raw").unwrap();
        assert_eq!(store.get_blob("a/raw").unwrap(), None);
        assert_eq!(store.blob_paths().unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(&dir);
        assert!(matches!(RedbStateStore::open(&dir.path().join("state.redb")), Err(PortError::Unavailable(_))));
    }
}
