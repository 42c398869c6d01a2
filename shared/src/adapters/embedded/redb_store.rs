//! The state store: a write-ahead log with group commit in front of one redb database file.
//!
//! **Tables.** Four redb tables, all written in the same ACID write transaction:
//! - `items`: `(pk, sk)` → the item as JSON;
//! - `gsi1`: `(gsi1pk, gsi1sk, pk, sk)` → `()`, the secondary index (the primary key makes entries unique);
//! - `counters`: `(pk, sk)` → `u64`, kept apart from items so a counter never shows up in an item query;
//! - `blobs`: path → bytes, the small documents of the blob store ([`super::FolderBlobStore`] puts objects up to
//!   [`SMALL_BLOB_MAX`] here, so they ride in the same durable commit as the records that name them).
//!
//! **Group commit.** Every write goes to one committer thread through a queue. The committer takes everything
//! queued (up to [`MAX_BATCH`] jobs), checks each job's conditions against the current state (including the
//! batch's earlier jobs), stages the writes of the jobs whose conditions hold in a [`Memtable`] for the batch, and
//! makes that batch durable with one append and one `fdatasync` of the write-ahead log ([`super::wal`]). A job
//! whose condition fails writes nothing and only its caller gets `Conflict`; the others commit. Each caller is
//! answered only after the log record holding its writes is on disk. The batch then joins the *active* memtable,
//! where reads find it.
//!
//! **Checkpoints.** When the active memtable holds [`CHECKPOINT_BYTES`] or is [`CHECKPOINT_INTERVAL`] old, the
//! committer closes the log segment, freezes the memtable, and a checkpoint thread writes it into the database in
//! one redb transaction (thousands of requests per B-tree commit instead of a dozen), then deletes the segment.
//! On open, whatever the log holds is replayed into the database first (replaying a batch it already holds changes
//! nothing: a log record is the final state of each key).
//!
//! **Small documents** do not wait: their puts are queued (readable at once from a map of pending writes) and
//! ride in the next batch; a batch no caller waits for is appended without an `fdatasync`, and the durable append
//! of the record that names them, which the flows always make after writing their documents and which is queued
//! after them, makes them durable too. A crash before it loses only documents no record names.
//!
//! **Reads** look in the active memtable, the frozen one, then the database (a redb MVCC read transaction); they
//! never wait for a commit or a checkpoint (only, for a few microseconds, for a batch being added to a memtable).

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use super::memtable::{find_blob, find_counter, find_item, IndexKey, Memtable, Merge, Unmerged};
use super::wal::{self, Wal};
use super::{check_distinct_keys, check_query, decode_gsi1_cursor, encode_gsi1_cursor, is_expired};
use crate::ports::{Clock, Item, Key, Page, PortError, PortResult, Query, StateStore, SystemClock, WriteOp};

const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");
const GSI1: TableDefinition<(&str, &str, &str, &str), ()> = TableDefinition::new("gsi1");
const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("counters");

const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// Largest document kept in the database rather than as a file of its own: raw interchanges, answers and
/// PAS Bundles are a few KiB (a 270 about 0.5 KiB, a PAS Bundle 5 to 20 KiB); 256 KiB holds nearly every X12 and
/// FHIR message while keeping one batch's log record to a few MiB; attachments past it stay files.
pub const SMALL_BLOB_MAX: usize = 256 * 1024;

/// Most jobs one group commit takes.
pub const MAX_BATCH: usize = 512;

/// Size at which the active memtable is checkpointed: a few seconds of a busy clearinghouse's traffic, replayed
/// in well under a second after a crash, and large enough that a checkpoint amortizes its page writes.
pub const CHECKPOINT_BYTES: usize = 32 * 1024 * 1024;

/// Age at which a non-empty active memtable is checkpointed, so a quiet runner's log stays short.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// When the active memtable is checkpointed: at `bytes`, or when non-empty and `interval` old.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// Size that triggers a checkpoint.
    pub bytes: usize,
    /// Age that triggers a checkpoint.
    pub interval: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy { bytes: CHECKPOINT_BYTES, interval: CHECKPOINT_INTERVAL }
    }
}

/// The state store over one redb database file and its write-ahead log (ACID, crash-safe), with group commit
/// (see the module docs).
#[derive(Clone)]
pub struct RedbStateStore {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    layers: Arc<RwLock<Layers>>,
    committer: Arc<Committer>,
}

/// The memtables reads consult before the database, newest first: the active one (each batch joins it) and,
/// while a checkpoint writes it into the database, the frozen one.
#[derive(Default)]
struct Layers {
    active: Arc<RwLock<Memtable>>,
    frozen: Option<Arc<RwLock<Memtable>>>,
}

/// The memtables of `layers` at this instant, newest first. Taken before a database read transaction begins, so
/// a checkpoint that completes in between is seen in one place or the other, never in neither.
fn snapshot(layers: &RwLock<Layers>) -> Vec<Arc<RwLock<Memtable>>> {
    let layers = layers.read().unwrap_or_else(PoisonError::into_inner);
    std::iter::once(layers.active.clone()).chain(layers.frozen.clone()).collect()
}

fn read_all(tables: &[Arc<RwLock<Memtable>>]) -> Vec<RwLockReadGuard<'_, Memtable>> {
    tables.iter().map(|t| t.read().unwrap_or_else(PoisonError::into_inner)).collect()
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
}

/// The committer thread and its queue; the last store handle dropped stops and joins it (it checkpoints what the
/// log holds first), so the database file is released when the store is gone.
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

/// What the committer thread owns.
struct CommitterState {
    db: Arc<Database>,
    layers: Arc<RwLock<Layers>>,
    pending: Arc<PendingBlobs>,
    wal: Wal,
    wal_dir: PathBuf,
    last_freeze: Instant,
    policy: CheckpointPolicy,
}

impl Committer {
    fn start(state: CommitterState) -> PortResult<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Queued>();
        let pending = state.pending.clone();
        let thread = std::thread::Builder::new()
            .name("redb-committer".into())
            .spawn(move || commit_loop(state, &rx))
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
        self.send(Queued { job, now, reply: Some(reply) })?;
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
        let sent = self.send(Queued { job, now: 0, reply: None });
        if sent.is_err() {
            self.pending.committed(path, generation);
        }
        sent
    }
}

/// A checkpoint to make: the frozen memtable, and the last log segment whose writes it holds.
type CheckpointJob = (Arc<RwLock<Memtable>>, u64);

/// The committer: one log append (and one `fdatasync`, when someone waits) per batch of queued jobs.
fn commit_loop(mut state: CommitterState, queue: &std::sync::mpsc::Receiver<Queued>) {
    let (checkpoints, checkpoint_queue) = std::sync::mpsc::channel::<CheckpointJob>();
    let checkpointer = {
        let (db, layers, dir) = (state.db.clone(), state.layers.clone(), state.wal_dir.clone());
        std::thread::Builder::new()
            .name("redb-checkpoint".into())
            .spawn(move || checkpoint_loop(&db, &layers, &dir, &checkpoint_queue))
    };
    let checkpointer = match checkpointer {
        Ok(thread) => Some(thread),
        Err(e) => {
            // Without checkpoints the log and the active memtable only grow: still correct, and loud.
            tracing::error!(error = %e, "cannot start the checkpoint thread");
            None
        }
    };
    loop {
        let first = match queue.recv_timeout(state.policy.interval) {
            Ok(first) => first,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                maybe_freeze(&mut state, &checkpoints);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut state, batch);
        maybe_freeze(&mut state, &checkpoints);
    }
    // Closing: let the running checkpoint finish, then write what is left into the database, so the next open
    // finds an empty log.
    drop(checkpoints);
    if let Some(thread) = checkpointer {
        let _ = thread.join();
    }
    let frozen_left = state.layers.read().unwrap_or_else(PoisonError::into_inner).frozen.is_some();
    if !frozen_left && state.wal.sync().is_ok() {
        let active = state.layers.read().unwrap_or_else(PoisonError::into_inner).active.clone();
        let table = active.read().unwrap_or_else(PoisonError::into_inner);
        match checkpoint(&state.db, &table) {
            Ok(()) => {
                if let Err(e) = wal::remove_through(&state.wal_dir, state.wal.sequence()) {
                    tracing::warn!(error = %e, "the write-ahead log could not be emptied at close; it is replayed at the next open");
                }
            }
            Err(e) => tracing::error!(error = %e, "the last checkpoint failed; the log is replayed at the next open"),
        }
    }
}

/// Stages a batch, makes it durable in the log, adds it to the active memtable and answers its callers.
fn run_batch(state: &mut CommitterState, batch: Vec<Queued>) {
    let durable = batch.iter().any(|q| q.reply.is_some());
    let mut staged = Memtable::default();
    let results = {
        let tables = snapshot(&state.layers);
        let guards = read_all(&tables);
        let older: Vec<&Memtable> = guards.iter().map(|g| &**g).collect();
        match Settled::open(&state.db) {
            Ok(settled) => batch.iter().map(|queued| stage(&settled, &older, &mut staged, queued)).collect(),
            Err(e) => batch.iter().map(|_| Err(PortError::Unavailable(e.to_string()))).collect::<Vec<_>>(),
        }
    };
    let logged = if staged.is_empty() {
        if durable {
            state.wal.sync()
        } else {
            Ok(())
        }
    } else {
        state.wal.append(&staged, durable)
    };
    if let Err(e) = &logged {
        tracing::error!(error = %e, "a batch could not be logged; its writes are refused");
    }
    if logged.is_ok() && !staged.is_empty() {
        let active = state.layers.read().unwrap_or_else(PoisonError::into_inner).active.clone();
        active.write().unwrap_or_else(PoisonError::into_inner).absorb(staged);
    }
    for (queued, result) in batch.into_iter().zip(results) {
        if let Job::PutBlob(path, _, generation) | Job::DeleteBlob(path, generation) = &queued.job {
            // Logged: readable from the active memtable from now on. Not logged: lost, like a put a crash cuts off
            // (no record names it, because the record's own commit fails too while the log is unusable).
            state.pending.committed(path, *generation);
        }
        if let Some(reply) = queued.reply {
            let answer = match (&logged, result) {
                (Ok(()), result) => result,
                (Err(e), _) => Err(PortError::Unavailable(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }
}

/// The database tables the committer reads conditions and counters from: opened once per batch, in a read
/// transaction begun after the memtables were taken.
struct Settled {
    items: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    counters: redb::ReadOnlyTable<(&'static str, &'static str), u64>,
}

impl Settled {
    fn open(db: &Database) -> PortResult<Self> {
        let txn = db.begin_read().map_err(storage)?;
        Ok(Settled {
            items: txn.open_table(ITEMS).map_err(storage)?,
            counters: txn.open_table(COUNTERS).map_err(storage)?,
        })
    }
}

/// Checks a job's conditions against the state as it stands (the database, the memtables, the batch's earlier
/// jobs) and, when they all hold, stages its writes; a job that fails stages nothing.
fn stage(settled: &Settled, older: &[&Memtable], staged: &mut Memtable, queued: &Queued) -> PortResult<Done> {
    match &queued.job {
        Job::Transact(ops) => {
            let mut olds = Vec::with_capacity(ops.len());
            for (op, _) in ops {
                let stored = stored_at(settled, older, staged, op.key())?;
                let live = stored.as_ref().filter(|s| !s.is_expired(queued.now));
                match op {
                    // An expired item is absent to readers, so it must not block a new one (idempotency records).
                    WriteOp::PutNew(item) => {
                        if live.is_some() {
                            return Err(PortError::Conflict(format!(
                                "item {}/{} already exists",
                                item.key.pk, item.key.sk
                            )));
                        }
                    }
                    WriteOp::Update { expected_version, .. } | WriteOp::Delete { expected_version, .. } => {
                        let key = op.key();
                        match live {
                            Some(s) if s.version == *expected_version => {}
                            Some(s) => {
                                return Err(PortError::Conflict(format!(
                                    "item {}/{} is at version {}, not {expected_version}",
                                    key.pk, key.sk, s.version
                                )))
                            }
                            None => {
                                return Err(PortError::Conflict(format!("item {}/{} does not exist", key.pk, key.sk)))
                            }
                        }
                    }
                }
                olds.push(stored);
            }
            let unprepared = || PortError::Invalid("a write reached the committer without its encoded item".to_owned());
            for ((op, bytes), old) in ops.iter().zip(olds) {
                let key = op.key();
                if let Some(gsi1) = old.and_then(|o| o.gsi1) {
                    staged.put_index(IndexKey { gsi1, key: key.clone() }, false);
                }
                match op {
                    WriteOp::PutNew(item) | WriteOp::Update { item, .. } => {
                        let bytes: Arc<[u8]> = Arc::from(bytes.as_deref().ok_or_else(unprepared)?);
                        if let Some(gsi1) = &item.gsi1 {
                            staged.put_index(IndexKey { gsi1: gsi1.clone(), key: key.clone() }, true);
                        }
                        staged.put_item(key.clone(), Some(bytes));
                    }
                    WriteOp::Delete { .. } => staged.put_item(key.clone(), None),
                }
            }
            Ok(Done::Unit)
        }
        Job::Increment(key) => {
            let current = match find_counter(&[staged], key).or_else(|| find_counter(older, key)) {
                Some(value) => value,
                None => {
                    let value = settled.counters.get((key.pk.as_str(), key.sk.as_str())).map_err(storage)?;
                    value.map(|guard| guard.value()).unwrap_or(0)
                }
            };
            let value = current
                .checked_add(1)
                .ok_or_else(|| PortError::Invalid(format!("counter {}/{} overflowed", key.pk, key.sk)))?;
            staged.put_counter(key.clone(), value);
            Ok(Done::Count(value))
        }
        Job::PutBlob(path, bytes, _) => {
            staged.put_blob(path.clone(), Some(bytes.clone()));
            Ok(Done::Unit)
        }
        Job::DeleteBlob(path, _) => {
            staged.put_blob(path.clone(), None);
            Ok(Done::Unit)
        }
        Job::Sync => Ok(Done::Unit),
    }
}

/// What the committer needs of the item at `key` as it stands (the batch's own writes first), expired or not.
fn stored_at(settled: &Settled, older: &[&Memtable], staged: &Memtable, key: &Key) -> PortResult<Option<Stored>> {
    match find_item(&[staged], key).or_else(|| find_item(older, key)) {
        Some(Some(bytes)) => decode_stored(bytes).map(Some),
        Some(None) => Ok(None),
        None => {
            let found = settled.items.get((key.pk.as_str(), key.sk.as_str())).map_err(storage)?;
            found.map(|guard| decode_stored(guard.value())).transpose()
        }
    }
}

/// Closes the log segment and hands the active memtable to the checkpoint thread, when it is big or old enough
/// and no checkpoint is running.
fn maybe_freeze(state: &mut CommitterState, checkpoints: &std::sync::mpsc::Sender<CheckpointJob>) {
    let active = {
        let layers = state.layers.read().unwrap_or_else(PoisonError::into_inner);
        if layers.frozen.is_some() {
            return;
        }
        layers.active.clone()
    };
    let (bytes, empty) = {
        let table = active.read().unwrap_or_else(PoisonError::into_inner);
        (table.bytes, table.is_empty())
    };
    if empty || (bytes < state.policy.bytes && state.last_freeze.elapsed() < state.policy.interval) {
        return;
    }
    let Ok(closed) = state.wal.rotate() else { return };
    {
        let mut layers = state.layers.write().unwrap_or_else(PoisonError::into_inner);
        let frozen = std::mem::take(&mut layers.active);
        layers.frozen = Some(frozen.clone());
        if checkpoints.send((frozen, closed)).is_err() {
            // No checkpoint thread: keep the memtable readable as frozen (the log keeps its writes).
            tracing::error!("no checkpoint thread; the write-ahead log grows until a restart");
        }
    }
    state.last_freeze = Instant::now();
}

/// The checkpoint thread: writes each frozen memtable into the database, then deletes the log segments it holds
/// and drops it from the read path.
fn checkpoint_loop(
    db: &Database,
    layers: &RwLock<Layers>,
    wal_dir: &Path,
    queue: &std::sync::mpsc::Receiver<CheckpointJob>,
) {
    while let Ok((frozen, closed)) = queue.recv() {
        let mut delay = Duration::from_millis(50);
        let mut written = false;
        for _ in 0..6 {
            let result = checkpoint(db, &frozen.read().unwrap_or_else(PoisonError::into_inner));
            match result {
                Ok(()) => {
                    written = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "a checkpoint failed; retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
        if !written {
            // The frozen memtable stays in the read path and its segments stay on disk: nothing is lost, the log
            // grows, and the next open replays it.
            tracing::error!("checkpoints keep failing; the write-ahead log grows until a restart");
            return;
        }
        if let Err(e) = wal::remove_through(wal_dir, closed) {
            // Replaying a segment the database holds changes nothing: this costs time at the next open only.
            tracing::warn!(error = %e, "checkpointed log segments could not be deleted");
        }
        layers.write().unwrap_or_else(PoisonError::into_inner).frozen = None;
    }
}

/// Writes a memtable into the database in one durable transaction.
fn checkpoint(db: &Database, table: &Memtable) -> PortResult<()> {
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut items = txn.open_table(ITEMS).map_err(storage)?;
        for (key, bytes) in &table.items {
            let k = (key.pk.as_str(), key.sk.as_str());
            match bytes {
                Some(bytes) => drop(items.insert(k, &bytes[..]).map_err(storage)?),
                None => drop(items.remove(k).map_err(storage)?),
            }
        }
        let mut index = txn.open_table(GSI1).map_err(storage)?;
        for (entry, present) in &table.index {
            let k = (entry.gsi1.pk.as_str(), entry.gsi1.sk.as_str(), entry.key.pk.as_str(), entry.key.sk.as_str());
            if *present {
                index.insert(k, ()).map_err(storage)?;
            } else {
                index.remove(k).map_err(storage)?;
            }
        }
        let mut counters = txn.open_table(COUNTERS).map_err(storage)?;
        for (key, value) in &table.counters {
            counters.insert((key.pk.as_str(), key.sk.as_str()), *value).map_err(storage)?;
        }
        let mut blobs = txn.open_table(BLOBS).map_err(storage)?;
        for (path, bytes) in &table.blobs {
            match bytes {
                Some(bytes) => drop(blobs.insert(path.as_str(), bytes.as_slice()).map_err(storage)?),
                None => drop(blobs.remove(path.as_str()).map_err(storage)?),
            }
        }
    }
    txn.commit().map_err(storage)
}

impl fmt::Debug for RedbStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStateStore").finish_non_exhaustive()
    }
}

impl RedbStateStore {
    /// Opens the database file at `path` and its write-ahead log (the folder `path` with the extension `wal`),
    /// creating them (mode 0600/0700 on unix) on first use, and replays the log into the database.
    ///
    /// Fails with `Unavailable` when the file is corrupt or already open (redb takes an exclusive lock).
    pub fn open(path: &Path) -> PortResult<Self> {
        Self::open_with(path, CheckpointPolicy::default())
    }

    /// [`Self::open`] with another checkpoint policy (tests checkpoint after every batch to exercise the merges
    /// of memtables and database).
    pub fn open_with(path: &Path, policy: CheckpointPolicy) -> PortResult<Self> {
        let db = Database::create(path).map_err(storage)?;
        restrict_to_owner(path)?;
        // Creating the tables up front lets read transactions open them without a "table missing" case.
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(ITEMS).map_err(storage)?;
        txn.open_table(GSI1).map_err(storage)?;
        txn.open_table(COUNTERS).map_err(storage)?;
        txn.open_table(BLOBS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let wal_dir = path.with_extension("wal");
        super::create_private_dir(&wal_dir)?;
        let (recovered, segments) = wal::replay(&wal_dir)?;
        if !recovered.is_empty() {
            checkpoint(&db, &recovered)?;
        }
        if let Some(&last) = segments.last() {
            wal::remove_through(&wal_dir, last)?;
        }
        let wal = Wal::create(&wal_dir, segments.last().map_or(1, |last| last + 1))?;
        let db = Arc::new(db);
        let layers = Arc::new(RwLock::new(Layers::default()));
        let committer = Arc::new(Committer::start(CommitterState {
            db: db.clone(),
            layers: layers.clone(),
            pending: Arc::new(PendingBlobs::default()),
            wal,
            wal_dir,
            last_freeze: Instant::now(),
            policy,
        })?);
        Ok(RedbStateStore { db, clock: Arc::new(SystemClock), layers, committer })
    }

    /// Uses `clock` to decide which items have expired (the system clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs a read on the calling task, over the memtables and a read transaction begun after they were taken:
    /// served from memory, redb's page cache or the OS page cache in microseconds, less than the two thread
    /// hand-offs of a trip to the blocking pool would cost.
    fn read<T>(&self, work: impl FnOnce(&[&Memtable], &redb::ReadTransaction, i64) -> PortResult<T>) -> PortResult<T> {
        read_over(&self.db, &self.layers, self.clock.now().unix_timestamp(), work)
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
        self.read(|layers, txn, _| match find_blob(layers, path) {
            Some(found) => Ok(found.map(|bytes| bytes.as_ref().clone())),
            None => {
                let blobs = txn.open_table(BLOBS).map_err(storage)?;
                Ok(blobs.get(path).map_err(storage)?.map(|guard| guard.value().to_vec()))
            }
        })
    }

    /// The paths of the small documents the database holds (pending writes included).
    pub fn blob_paths(&self) -> PortResult<Vec<String>> {
        let mut paths: std::collections::BTreeSet<String> = self.read(|layers, txn, _| {
            let blobs = txn.open_table(BLOBS).map_err(storage)?;
            let mut out = std::collections::BTreeSet::new();
            for entry in blobs.iter().map_err(storage)? {
                let (path, _) = entry.map_err(storage)?;
                out.insert(path.value().to_owned());
            }
            // Oldest memtable first, so the newest write of a path decides.
            for layer in layers.iter().rev() {
                for (path, bytes) in &layer.blobs {
                    if bytes.is_some() {
                        out.insert(path.clone());
                    } else {
                        out.remove(path);
                    }
                }
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

    /// Runs a read on the blocking pool (queries, which may walk many entries).
    async fn run<T, F>(&self, work: F) -> PortResult<T>
    where
        F: FnOnce(&[&Memtable], &redb::ReadTransaction, i64) -> PortResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let layers = Arc::clone(&self.layers);
        let now = self.clock.now().unix_timestamp();
        tokio::task::spawn_blocking(move || read_over(&db, &layers, now, work))
            .await
            .map_err(|e| PortError::Unavailable(format!("embedded database task failed: {e}")))?
    }
}

/// Runs `work` over the memtables (newest first) and a database read transaction begun after they were taken.
fn read_over<T>(
    db: &Database,
    layers: &RwLock<Layers>,
    now: i64,
    work: impl FnOnce(&[&Memtable], &redb::ReadTransaction, i64) -> PortResult<T>,
) -> PortResult<T> {
    let tables = snapshot(layers);
    let guards = read_all(&tables);
    let memtables: Vec<&Memtable> = guards.iter().map(|g| &**g).collect();
    let txn = db.begin_read().map_err(storage)?;
    work(&memtables, &txn, now)
}

#[async_trait]
impl StateStore for RedbStateStore {
    async fn get(&self, key: &Key) -> PortResult<Option<Item>> {
        self.read(|layers, txn, now| {
            let items = txn.open_table(ITEMS).map_err(storage)?;
            Ok(read_item(layers, &items, key)?.filter(|item| !is_expired(item, now)))
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
        self.run(move |layers, txn, now| query_items(layers, txn, &query, now)).await
    }

    async fn query_gsi1(&self, query: &Query) -> PortResult<Page> {
        check_query(query)?;
        let query = query.clone();
        self.run(move |layers, txn, now| query_index(layers, txn, &query, now)).await
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

/// Reads what the committer needs of an encoded item.
fn decode_stored(bytes: &[u8]) -> PortResult<Stored> {
    serde_json::from_slice(bytes).map_err(|e| PortError::Integrity(format!("stored item is not valid JSON: {e}")))
}

/// Reads an item as stored (memtables first), expired or not.
fn read_item<T>(layers: &[&Memtable], items: &T, key: &Key) -> PortResult<Option<Item>>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    match find_item(layers, key) {
        Some(Some(bytes)) => decode(bytes).map(Some),
        Some(None) => Ok(None),
        None => match items.get((key.pk.as_str(), key.sk.as_str())).map_err(storage)? {
            Some(guard) => decode(guard.value()).map(Some),
            None => Ok(None),
        },
    }
}

/// A merge source over a memtable's items from `start`.
type ItemSource<'a> = Unmerged<'a, Key, Arc<[u8]>>;

/// Items of one partition by sort-key prefix; the cursor is the last returned sort key.
fn query_items(layers: &[&Memtable], txn: &redb::ReadTransaction, query: &Query, now: i64) -> PortResult<Page> {
    let items = txn.open_table(ITEMS).map_err(storage)?;
    let pk = query.pk.as_str();
    let prefix = query.sk_prefix.as_str();
    // Resume after the cursor unless it sorts before the prefix range (then the range start is the tighter bound).
    let (start, start_key) = match query.after.as_deref().or(query.start_after_sk.as_deref()) {
        Some(after) if after >= prefix => (Bound::Excluded((pk, after)), Bound::Excluded(Key::new(pk, after))),
        _ => (Bound::Included((pk, prefix)), Bound::Included(Key::new(pk, prefix))),
    };
    let mut sources: Vec<ItemSource<'_>> = layers
        .iter()
        .map(|layer| {
            let range = layer.items.range((start_key.clone(), Bound::Unbounded));
            Box::new(range.map(|(k, v)| Ok((k.clone(), v.clone())))) as ItemSource<'_>
        })
        .collect();
    let stored = items.range::<(&str, &str)>((start, Bound::Unbounded)).map_err(storage)?;
    sources.push(Box::new(stored.map(|entry| {
        let (key, value) = entry.map_err(storage)?;
        let (item_pk, item_sk) = key.value();
        Ok((Key::new(item_pk, item_sk), Some(Arc::from(value.value()))))
    })));
    let mut page = Page::default();
    for entry in Merge::new(sources) {
        let (key, bytes) = entry?;
        if key.pk != pk || !key.sk.starts_with(prefix) {
            break;
        }
        let item = decode(&bytes)?;
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

/// A merge source over index entries.
type IndexSource<'a> = Unmerged<'a, IndexKey, ()>;

/// Items by secondary-index partition and sort-key prefix, ordered by `(gsi1sk, pk, sk)`.
fn query_index(layers: &[&Memtable], txn: &redb::ReadTransaction, query: &Query, now: i64) -> PortResult<Page> {
    let cursor = query.after.as_deref().map(decode_gsi1_cursor).transpose()?;
    let items = txn.open_table(ITEMS).map_err(storage)?;
    let index = txn.open_table(GSI1).map_err(storage)?;
    let gsi1pk = query.pk.as_str();
    let prefix = query.sk_prefix.as_str();
    let (start, start_key) = match &cursor {
        Some((gsi1sk, pk, sk)) if gsi1sk.as_str() >= prefix => (
            Bound::Excluded((gsi1pk, gsi1sk.as_str(), pk.as_str(), sk.as_str())),
            Bound::Excluded(IndexKey {
                gsi1: Key::new(gsi1pk, gsi1sk.as_str()),
                key: Key::new(pk.as_str(), sk.as_str()),
            }),
        ),
        _ => (
            Bound::Included((gsi1pk, prefix, "", "")),
            Bound::Included(IndexKey { gsi1: Key::new(gsi1pk, prefix), key: Key::new("", "") }),
        ),
    };
    let mut sources: Vec<IndexSource<'_>> = layers
        .iter()
        .map(|layer| {
            let range = layer.index.range((start_key.clone(), Bound::Unbounded));
            Box::new(range.map(|(k, present)| Ok((k.clone(), present.then_some(()))))) as IndexSource<'_>
        })
        .collect();
    let stored = index.range::<(&str, &str, &str, &str)>((start, Bound::Unbounded)).map_err(storage)?;
    sources.push(Box::new(stored.map(|entry| {
        let (key, _) = entry.map_err(storage)?;
        let (gsi1pk, gsi1sk, pk, sk) = key.value();
        Ok((IndexKey { gsi1: Key::new(gsi1pk, gsi1sk), key: Key::new(pk, sk) }, Some(())))
    })));
    let mut page = Page::default();
    for entry in Merge::new(sources) {
        let (entry, ()) = entry?;
        if entry.gsi1.pk != gsi1pk || !entry.gsi1.sk.starts_with(prefix) {
            break;
        }
        // The index is written in the same batch as the items, so a missing item would mean corruption; skipping
        // it keeps queries answering rather than failing on one bad entry.
        let Some(item) = read_item(layers, &items, &entry.key)? else {
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

    /// Copies a data directory as it is on disk at this instant: what a power cut would leave.
    fn crash_copy(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                crash_copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_a_crash_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.put_new(Item::new(Key::new("P", "a"), json!({"n": 1})).with_gsi1(Key::new("G", "x"))).await.unwrap();
        store.update(Item::new(Key::new("P", "a"), json!({"n": 2})).with_gsi1(Key::new("G", "y")), 1).await.unwrap();
        store.put_new(Item::new(Key::new("P", "b"), json!({}))).await.unwrap();
        store.transact(vec![WriteOp::Delete { key: Key::new("P", "b"), expected_version: 1 }]).await.unwrap();
        store.put_blob("doc/1", b"sealed".to_vec()).unwrap();
        store.put_new(Item::new(Key::new("P", "names-doc"), json!({"doc": "doc/1"}))).await.unwrap();
        assert_eq!(store.increment(&Key::new("C", "n")).await.unwrap(), 1);
        // Nothing was checkpointed yet (the interval is seconds): the database file alone lacks all of it.
        let crashed = tempfile::tempdir().unwrap();
        crash_copy(dir.path(), crashed.path());
        drop(store);
        let recovered = open(&crashed);
        assert_eq!(recovered.get(&Key::new("P", "a")).await.unwrap().unwrap().body, json!({"n": 2}));
        assert!(recovered.get(&Key::new("P", "b")).await.unwrap().is_none());
        assert_eq!(recovered.get_blob("doc/1").unwrap().as_deref(), Some(&b"sealed"[..]));
        let moved = recovered.query_gsi1(&Query::prefix("G", "", 10)).await.unwrap();
        assert_eq!(moved.items.iter().map(|i| i.gsi1.clone().unwrap().sk).collect::<Vec<_>>(), ["y"]);
        assert_eq!(recovered.increment(&Key::new("C", "n")).await.unwrap(), 2);
        // The replayed log is in the database now: only the fresh segment is left.
        assert_eq!(wal::segments(&crashed.path().join("state.wal")).unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_merge_memtables_and_database_while_checkpoints_run_constantly() {
        let dir = tempfile::tempdir().unwrap();
        let every_batch = CheckpointPolicy { bytes: 1, interval: Duration::ZERO };
        let store = RedbStateStore::open_with(&dir.path().join("state.redb"), every_batch).unwrap();
        let mut tasks = Vec::new();
        for i in 0..120u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = Key::new("P", format!("k{i:03}"));
                store.put_new(Item::new(key.clone(), json!({"i": i})).with_gsi1(Key::new("G", "old"))).await?;
                match i % 3 {
                    // Moved to another index entry.
                    0 => {
                        store.update(Item::new(key, json!({"i": i})).with_gsi1(Key::new("G", "new")), 1).await.map(drop)
                    }
                    // Deleted.
                    1 => store.transact(vec![WriteOp::Delete { key, expected_version: 1 }]).await,
                    _ => Ok(()),
                }?;
                store.increment(&Key::new("C", "n")).await
            }));
        }
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.unwrap().unwrap());
        }
        counts.sort_unstable();
        assert_eq!(counts, (1..=120).collect::<Vec<_>>(), "every increment unique");
        // Checkpoints did run meanwhile: the log moved past its first segment (each one closes a segment).
        let segments = wal::segments(&dir.path().join("state.wal")).unwrap();
        assert!(segments.last().is_some_and(|&last| last > 2), "{segments:?}");
        for round in 0..2 {
            // Page through in small pages: each page's cursor crosses memtables and the database.
            let mut seen = Vec::new();
            let mut query = Query::prefix("P", "k", 7);
            loop {
                let page = store.query(&query).await.unwrap();
                seen.extend(page.items.iter().map(|i| i.key.sk.clone()));
                let Some(next) = page.next else { break };
                query.after = Some(next);
            }
            let expected: Vec<String> = (0..120u32).filter(|i| i % 3 != 1).map(|i| format!("k{i:03}")).collect();
            assert_eq!(seen, expected, "round {round}");
            let new = store.query_gsi1(&Query::prefix("G", "new", 100)).await.unwrap();
            assert_eq!(new.items.len(), 40);
            let old = store.query_gsi1(&Query::prefix("G", "old", 100)).await.unwrap();
            assert!(old.items.iter().all(|i| i.key.sk.trim_start_matches('k').parse::<u32>().unwrap() % 3 == 2));
            assert_eq!(old.items.len(), 40);
        }
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(&dir);
        assert!(matches!(RedbStateStore::open(&dir.path().join("state.redb")), Err(PortError::Unavailable(_))));
    }
}
