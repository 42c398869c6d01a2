//! Memtables: the writes of the embedded state store that are durable in the write-ahead log but not yet
//! checkpointed into the database file, kept in ordered maps so reads see them at once.
//!
//! A memtable holds the final state of each key it touches (a later write of a key replaces the earlier one), so
//! applying it to the database, or replaying it twice, gives the same result: that is what makes the log safe to
//! replay after a crash whatever part of it was already checkpointed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::ports::{Key, PortResult};

/// One entry of the secondary index: the index key pair, then the item's primary key (which makes it unique).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct IndexKey {
    /// `(gsi1pk, gsi1sk)`.
    pub gsi1: Key,
    /// The item's `(pk, sk)`.
    pub key: Key,
}

/// The final state of every key a run of writes touched (`None`: deleted).
#[derive(Debug, Default)]
pub(super) struct Memtable {
    /// Items as encoded JSON.
    pub items: BTreeMap<Key, Option<Arc<[u8]>>>,
    /// Secondary-index entries (`false`: removed).
    pub index: BTreeMap<IndexKey, bool>,
    /// Counter values.
    pub counters: HashMap<Key, u64>,
    /// Small documents.
    pub blobs: HashMap<String, Option<Arc<Vec<u8>>>>,
    /// About how many bytes the memtable holds (keys and values), to decide when to checkpoint it.
    pub bytes: usize,
}

fn key_len(key: &Key) -> usize {
    key.pk.len() + key.sk.len()
}

impl Memtable {
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.index.is_empty() && self.counters.is_empty() && self.blobs.is_empty()
    }

    /// Writes (or, with `None`, deletes) an item.
    pub fn put_item(&mut self, key: Key, bytes: Option<Arc<[u8]>>) {
        self.bytes += key_len(&key) + bytes.as_ref().map_or(0, |b| b.len());
        self.items.insert(key, bytes);
    }

    /// Adds (or, with `false`, removes) an index entry.
    pub fn put_index(&mut self, entry: IndexKey, present: bool) {
        self.bytes += key_len(&entry.gsi1) + key_len(&entry.key);
        self.index.insert(entry, present);
    }

    /// Sets a counter.
    pub fn put_counter(&mut self, key: Key, value: u64) {
        self.bytes += key_len(&key) + 8;
        self.counters.insert(key, value);
    }

    /// Writes (or, with `None`, deletes) a small document.
    pub fn put_blob(&mut self, path: String, bytes: Option<Arc<Vec<u8>>>) {
        self.bytes += path.len() + bytes.as_ref().map_or(0, |b| b.len());
        self.blobs.insert(path, bytes);
    }

    /// Moves `newer`'s writes over this memtable's.
    pub fn absorb(&mut self, newer: Memtable) {
        self.bytes += newer.bytes;
        self.items.extend(newer.items);
        self.index.extend(newer.index);
        self.counters.extend(newer.counters);
        self.blobs.extend(newer.blobs);
    }
}

/// Looks `key` up in memtables (newest first): `Some(None)` when the newest of them that knows it deleted it,
/// `None` when none knows it (the database decides).
pub(super) fn find_item<'a>(layers: &[&'a Memtable], key: &Key) -> Option<Option<&'a Arc<[u8]>>> {
    layers.iter().find_map(|layer| layer.items.get(key).map(Option::as_ref))
}

/// Like [`find_item`], for a counter.
pub(super) fn find_counter(layers: &[&Memtable], key: &Key) -> Option<u64> {
    layers.iter().find_map(|layer| layer.counters.get(key).copied())
}

/// Like [`find_item`], for a small document.
pub(super) fn find_blob<'a>(layers: &[&'a Memtable], path: &str) -> Option<Option<&'a Arc<Vec<u8>>>> {
    layers.iter().find_map(|layer| layer.blobs.get(path).map(Option::as_ref))
}

/// An entry of a merge source: `(key, Some(value))` for a write, `(key, None)` for a deletion.
pub(super) type Entry<K, V> = PortResult<(K, Option<V>)>;

/// An ordered source of a merge.
pub(super) type Unmerged<'a, K, V> = Box<dyn Iterator<Item = Entry<K, V>> + 'a>;

type Source<'a, K, V> = std::iter::Peekable<Unmerged<'a, K, V>>;

/// Merges ordered sources (newest first) into the live entries: for a key several sources hold, the newest
/// source's entry wins, and a deletion hides the key.
pub(super) struct Merge<'a, K: Ord, V> {
    sources: Vec<Source<'a, K, V>>,
}

impl<'a, K: Ord, V> Merge<'a, K, V> {
    /// Merges `sources`, newest first.
    pub fn new(sources: Vec<Unmerged<'a, K, V>>) -> Self {
        Merge { sources: sources.into_iter().map(Iterator::peekable).collect() }
    }
}

impl<K: Ord, V> Iterator for Merge<'_, K, V> {
    type Item = PortResult<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // The source holding the smallest next key (the newest such source on a tie); an error ends the merge.
            let mut smallest: Option<usize> = None;
            {
                let heads: Vec<Option<&Entry<K, V>>> = self.sources.iter_mut().map(|source| source.peek()).collect();
                for (i, head) in heads.iter().enumerate() {
                    match head {
                        None => {}
                        Some(Err(_)) => {
                            smallest = Some(i);
                            break;
                        }
                        Some(Ok((key, _))) => {
                            let better = match smallest.and_then(|j| heads[j]) {
                                Some(Ok((best, _))) => key < best,
                                _ => true,
                            };
                            if better {
                                smallest = Some(i);
                            }
                        }
                    }
                }
            }
            let (key, value) = match self.sources[smallest?].next()? {
                Ok(entry) => entry,
                Err(e) => {
                    self.sources.clear();
                    return Some(Err(e));
                }
            };
            // Older sources' entries for the same key are shadowed.
            for source in &mut self.sources {
                while source.next_if(|head| matches!(head, Ok((k, _)) if *k == key)).is_some() {}
            }
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortError;

    fn source(entries: &'static [(u32, Option<&'static str>)]) -> Unmerged<'static, u32, &'static str> {
        Box::new(entries.iter().copied().map(Ok))
    }

    #[test]
    fn the_newest_source_wins_and_deletions_hide_older_entries() {
        let newest = source(&[(2, Some("new2")), (3, None), (7, Some("new7"))]);
        let oldest = source(&[(1, Some("old1")), (2, Some("old2")), (3, Some("old3")), (5, Some("old5"))]);
        let merged: Vec<_> = Merge::new(vec![newest, oldest]).map(Result::unwrap).collect();
        assert_eq!(merged, [(1, "old1"), (2, "new2"), (5, "old5"), (7, "new7")]);
    }

    #[test]
    fn an_error_ends_the_merge() {
        let failing: Unmerged<'static, u32, &str> = Box::new(
            vec![Ok((1, Some("a"))), Err(PortError::Unavailable("disk".into())), Ok((9, Some("z")))].into_iter(),
        );
        let mut merged = Merge::new(vec![source(&[(4, Some("b"))]), failing]);
        assert_eq!(merged.next().unwrap().unwrap(), (1, "a"));
        assert!(matches!(merged.next(), Some(Err(PortError::Unavailable(_)))));
        assert!(merged.next().is_none());
    }

    #[test]
    fn lookups_take_the_newest_layer_that_knows_the_key() {
        let mut older = Memtable::default();
        older.put_item(Key::new("p", "a"), Some(Arc::from(&b"1"[..])));
        older.put_item(Key::new("p", "b"), Some(Arc::from(&b"1"[..])));
        older.put_counter(Key::new("c", "n"), 4);
        let mut newer = Memtable::default();
        newer.put_item(Key::new("p", "a"), None);
        let layers = [&newer, &older];
        assert_eq!(find_item(&layers, &Key::new("p", "a")), Some(None));
        assert_eq!(find_item(&layers, &Key::new("p", "b")).flatten().map(|b| &b[..]), Some(&b"1"[..]));
        assert_eq!(find_item(&layers, &Key::new("p", "c")), None);
        assert_eq!(find_counter(&layers, &Key::new("c", "n")), Some(4));
        older.absorb(newer);
        assert_eq!(older.items.get(&Key::new("p", "a")), Some(&None));
    }
}
