//! The write-ahead log of the embedded state store: one append and one `fdatasync` per group commit.
//!
//! A B-tree commit rewrites every page it touches (a few dozen 4 KiB pages for a dozen small requests) and was
//! the store's bound under load; the log writes each batch's bytes once, in order. The database file catches up
//! in the background ([`super::redb_store`]'s checkpoints), thousands of requests per transaction.
//!
//! The log is a folder of segment files `NNNNNNNNNNNNNNNN.log`, each a run of records
//! `[payload length: u32 LE][CRC-32 of the payload: u32 LE][payload]`, one record per batch. A payload is the
//! batch's [`Memtable`] (the final state of each key it wrote), so replaying a record the database already holds
//! changes nothing. A record cut short by a crash (short, or failing its CRC) ends its segment: its batch was
//! never acknowledged, because acknowledgement waits for the `fdatasync` after the whole record.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::memtable::{IndexKey, Memtable};
use crate::ports::{Key, PortError, PortResult};

const PUT_ITEM: u8 = 1;
const DELETE_ITEM: u8 = 2;
const ADD_INDEX: u8 = 3;
const REMOVE_INDEX: u8 = 4;
const SET_COUNTER: u8 = 5;
const PUT_BLOB: u8 = 6;
const DELETE_BLOB: u8 = 7;

/// Bytes before a record's payload.
const HEADER: usize = 8;

/// Why a record did not decode (the log is ours, so this means a torn write or damage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damaged {
    /// Byte offset in the payload.
    pub at: usize,
}

/// The open log: the segment being appended to.
#[derive(Debug)]
pub(super) struct Wal {
    dir: PathBuf,
    sequence: u64,
    file: File,
    len: u64,
    /// Bytes appended since the last `fdatasync`.
    unsynced: bool,
    /// Set by a failed write or sync: the file's state is unknown, so nothing more is appended until a restart
    /// replays what is known to be durable.
    broken: Option<String>,
    buffer: Vec<u8>,
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> PortError {
    PortError::Unavailable(format!("write-ahead log: cannot {what} {}: {e}", path.display()))
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:016}.log"))
}

/// The log's segments in order, by sequence number.
pub(super) fn segments(dir: &Path) -> PortResult<Vec<u64>> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("list", dir, &e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, &e))?;
        let name = entry.file_name();
        let Some(sequence) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push(sequence);
    }
    found.sort_unstable();
    Ok(found)
}

/// Reads every intact record of the segments in order into one memtable (later writes over earlier ones).
pub(super) fn replay(dir: &Path) -> PortResult<(Memtable, Vec<u64>)> {
    let sequences = segments(dir)?;
    let mut table = Memtable::default();
    for &sequence in &sequences {
        let path = segment_path(dir, sequence);
        let mut bytes = Vec::new();
        File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| io_error("read", &path, &e))?;
        let mut at = 0;
        while let Some(payload) = next_record(&bytes, at) {
            match decode(payload) {
                Ok(batch) => table.absorb(batch),
                Err(damage) => {
                    tracing::warn!(
                        segment = sequence,
                        offset = at + HEADER + damage.at,
                        "a log record does not decode; the rest of its segment is skipped"
                    );
                    break;
                }
            }
            at += HEADER + payload.len();
        }
        if at < bytes.len() {
            // A batch whose append did not complete: never acknowledged.
            tracing::warn!(segment = sequence, offset = at, "the log ends in an incomplete record, which is dropped");
        }
    }
    Ok((table, sequences))
}

/// The payload of the intact record at `at`, if there is one.
fn next_record(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let start = at + HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Deletes the segments up to and including `sequence` (their writes are in the database).
pub(super) fn remove_through(dir: &Path, sequence: u64) -> PortResult<()> {
    for old in segments(dir)?.into_iter().filter(|s| *s <= sequence) {
        let path = segment_path(dir, old);
        std::fs::remove_file(&path).map_err(|e| io_error("remove", &path, &e))?;
    }
    Ok(())
}

impl Wal {
    /// Starts a new, empty segment numbered `sequence` in `dir`.
    pub fn create(dir: &Path, sequence: u64) -> PortResult<Self> {
        let path = segment_path(dir, sequence);
        let mut options = OpenOptions::new();
        options.create_new(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|e| io_error("create", &path, &e))?;
        // The segment's directory entry must survive a crash as surely as the records that will be in it.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync", dir, &e))?;
        Ok(Wal { dir: dir.to_owned(), sequence, file, len: 0, unsynced: false, broken: None, buffer: Vec::new() })
    }

    /// The segment being appended to.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    fn check(&self) -> PortResult<()> {
        match &self.broken {
            Some(reason) => Err(PortError::Unavailable(format!("write-ahead log unusable until restart: {reason}"))),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: PortError) -> PortError {
        tracing::error!(error = %e, "the write-ahead log failed; writes are refused until the runner restarts");
        self.broken = Some(e.to_string());
        // Take back a partial record so a restart's replay does not stop before later, complete ones (best effort:
        // replay stops at a torn record anyway, and no record after it was acknowledged).
        let _ = self.file.set_len(self.len);
        e
    }

    /// Appends one batch; with `durable`, returns only once it (and everything before it) is on disk.
    pub fn append(&mut self, batch: &Memtable, durable: bool) -> PortResult<()> {
        self.check()?;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        buffer.extend_from_slice(&[0; HEADER]);
        encode(batch, &mut buffer);
        let payload_len = buffer.len() - HEADER;
        let Ok(len) = u32::try_from(payload_len) else {
            self.buffer = buffer;
            return Err(PortError::Invalid(format!("a batch of {payload_len} bytes is too large for one log record")));
        };
        let crc = crc32fast::hash(&buffer[HEADER..]);
        buffer[..4].copy_from_slice(&len.to_le_bytes());
        buffer[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        let path = segment_path(&self.dir, self.sequence);
        let written = self.file.write_all(&buffer).map_err(|e| io_error("append to", &path, &e));
        let record_len = buffer.len() as u64;
        self.buffer = buffer;
        if let Err(e) = written {
            return Err(self.fail(e));
        }
        self.len += record_len;
        self.unsynced = true;
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> PortResult<()> {
        self.check()?;
        if self.unsynced {
            let path = segment_path(&self.dir, self.sequence);
            if let Err(e) = self.file.sync_data() {
                return Err(self.fail(io_error("sync", &path, &e)));
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Closes the current segment (durable) and starts the next; returns the closed segment's number.
    pub fn rotate(&mut self) -> PortResult<u64> {
        self.sync()?;
        let next = Wal::create(&self.dir, self.sequence + 1).map_err(|e| self.fail(e))?;
        let closed = self.sequence;
        *self = next;
        Ok(closed)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths past u32 cannot occur: a record is refused above 4 GiB as a whole.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_key(out: &mut Vec<u8>, key: &Key) {
    put_str(out, &key.pk);
    put_str(out, &key.sk);
}

/// Appends a memtable's writes to `out`.
fn encode(batch: &Memtable, out: &mut Vec<u8>) {
    for (key, bytes) in &batch.items {
        match bytes {
            Some(bytes) => {
                out.push(PUT_ITEM);
                put_key(out, key);
                put_bytes(out, bytes);
            }
            None => {
                out.push(DELETE_ITEM);
                put_key(out, key);
            }
        }
    }
    for (entry, present) in &batch.index {
        out.push(if *present { ADD_INDEX } else { REMOVE_INDEX });
        put_key(out, &entry.gsi1);
        put_key(out, &entry.key);
    }
    for (key, value) in &batch.counters {
        out.push(SET_COUNTER);
        put_key(out, key);
        out.extend_from_slice(&value.to_le_bytes());
    }
    for (path, bytes) in &batch.blobs {
        match bytes {
            Some(bytes) => {
                out.push(PUT_BLOB);
                put_str(out, path);
                put_bytes(out, bytes);
            }
            None => {
                out.push(DELETE_BLOB);
                put_str(out, path);
            }
        }
    }
}

/// A cursor over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self.at.checked_add(n).ok_or(Damaged { at: self.at })?;
        let slice = self.bytes.get(self.at..end).ok_or(Damaged { at: self.at })?;
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, Damaged> {
        let at = self.at;
        self.take(4)?.try_into().map(u32::from_le_bytes).map_err(|_| Damaged { at })
    }

    fn u64(&mut self) -> Result<u64, Damaged> {
        let at = self.at;
        self.take(8)?.try_into().map(u64::from_le_bytes).map_err(|_| Damaged { at })
    }

    fn bytes(&mut self) -> Result<&'a [u8], Damaged> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, Damaged> {
        let at = self.at;
        std::str::from_utf8(self.bytes()?).map(str::to_owned).map_err(|_| Damaged { at })
    }

    fn key(&mut self) -> Result<Key, Damaged> {
        Ok(Key { pk: self.string()?, sk: self.string()? })
    }
}

/// Decodes a record's payload.
fn decode(payload: &[u8]) -> Result<Memtable, Damaged> {
    let mut r = Reader { bytes: payload, at: 0 };
    let mut table = Memtable::default();
    while r.at < payload.len() {
        let at = r.at;
        let tag = r.take(1)?[0];
        match tag {
            PUT_ITEM => {
                let key = r.key()?;
                let bytes: Arc<[u8]> = Arc::from(r.bytes()?);
                table.put_item(key, Some(bytes));
            }
            DELETE_ITEM => table.put_item(r.key()?, None),
            ADD_INDEX | REMOVE_INDEX => {
                let entry = IndexKey { gsi1: r.key()?, key: r.key()? };
                table.put_index(entry, tag == ADD_INDEX);
            }
            SET_COUNTER => {
                let key = r.key()?;
                table.put_counter(key, r.u64()?);
            }
            PUT_BLOB => {
                let path = r.string()?;
                let bytes = Arc::new(r.bytes()?.to_vec());
                table.put_blob(path, Some(bytes));
            }
            DELETE_BLOB => table.put_blob(r.string()?, None),
            _ => return Err(Damaged { at }),
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u64) -> Memtable {
        let mut t = Memtable::default();
        t.put_item(Key::new("P", format!("item{n}")), Some(Arc::from(format!("{{\"n\":{n}}}").as_bytes())));
        t.put_item(Key::new("P", "gone"), None);
        t.put_index(IndexKey { gsi1: Key::new("G", "x"), key: Key::new("P", format!("item{n}")) }, true);
        t.put_index(IndexKey { gsi1: Key::new("G", "old"), key: Key::new("P", "gone") }, false);
        t.put_counter(Key::new("C", "n"), n);
        t.put_blob(format!("doc/{n}"), Some(Arc::new(vec![n as u8; 3])));
        t.put_blob("doc/deleted".into(), None);
        t
    }

    #[test]
    fn records_round_trip_and_later_batches_win() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 1).unwrap();
        wal.append(&batch(1), true).unwrap();
        let closed = wal.rotate().unwrap();
        assert_eq!((closed, wal.sequence()), (1, 2));
        wal.append(&batch(2), false).unwrap();
        wal.sync().unwrap();
        let (table, sequences) = replay(dir.path()).unwrap();
        assert_eq!(sequences, [1, 2]);
        assert_eq!(table.items.len(), 3);
        assert_eq!(table.items[&Key::new("P", "gone")], None);
        assert_eq!(table.counters[&Key::new("C", "n")], 2, "the later batch's value");
        assert_eq!(table.blobs["doc/2"].as_deref(), Some(&vec![2u8; 3]));
        assert_eq!(table.blobs["doc/deleted"], None);
        assert_eq!(table.index.len(), 3);
        remove_through(dir.path(), 1).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), [2]);
    }

    #[test]
    fn a_torn_or_damaged_record_ends_its_segment_and_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), 7).unwrap();
        wal.append(&batch(1), true).unwrap();
        wal.append(&batch(2), true).unwrap();
        let path = segment_path(dir.path(), 7);
        let full = std::fs::read(&path).unwrap();
        // A crash in the middle of the second record's write.
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (table, _) = replay(dir.path()).unwrap();
        assert_eq!(table.counters[&Key::new("C", "n")], 1);
        assert!(!table.items.contains_key(&Key::new("P", "item2")));
        // A flipped byte in the second record's payload: its CRC fails.
        let mut flipped = full.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let (table, _) = replay(dir.path()).unwrap();
        assert_eq!(table.counters[&Key::new("C", "n")], 1);
    }

    #[test]
    fn garbage_payloads_are_damage_not_panics() {
        for payload in [&[9u8][..], &[PUT_ITEM, 200, 0, 0, 0][..], &[SET_COUNTER, 0, 0, 0, 0, 0, 0, 0, 0, 1][..]] {
            assert!(decode(payload).is_err(), "{payload:?}");
        }
        assert!(decode(&[DELETE_BLOB, 2, 0, 0, 0, 0xff, 0xfe]).is_err(), "not UTF-8");
    }
}
