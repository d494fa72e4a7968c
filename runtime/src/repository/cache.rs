//! The hot aggregate cache: states kept in process, so that a command on a cached aggregate
//! costs one round trip (the append). The append's expected version still guards every write: a
//! stale entry only costs a conflict, which evicts it and reloads.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use lru::LruCache;

/// A state at a version.
#[derive(Debug)]
pub(super) struct Cached<A> {
    pub state: A,
    pub version: u64,
}

/// A bounded map from stream id to the latest known state, least recently used evicted first.
///
/// An entry is taken out while a command runs on it and put back after, so concurrent commands
/// on the same stream in one process load their own copy (and one of them conflicts).
#[derive(Debug)]
pub(super) struct AggregateCache<A> {
    entries: Mutex<LruCache<String, Cached<A>>>,
}

impl<A> AggregateCache<A> {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Cached<A>>> {
        // Every critical section is a single map operation: a poisoned lock holds a whole map.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn take(&self, stream_id: &str) -> Option<Cached<A>> {
        self.lock().pop(stream_id)
    }

    /// Keeps `entry` unless the cache already holds a newer version of the stream.
    pub fn put(&self, stream_id: &str, entry: Cached<A>) {
        let mut entries = self.lock();
        if entries
            .peek(stream_id)
            .is_some_and(|existing| existing.version >= entry.version)
        {
            return;
        }
        entries.put(stream_id.to_owned(), entry);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}
