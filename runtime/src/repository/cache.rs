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

/// The store's count of forgotten data subjects when a state was read ([`EventStore::forgets`]):
/// a state read before a forget may hold the forgotten data, and is not kept.
///
/// [`EventStore::forgets`]: crate::store::EventStore::forgets
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Forgets(pub u64);

/// A bounded map from stream id to the latest known state, least recently used evicted first.
///
/// An entry is taken out while a command runs on it and put back after, so concurrent commands
/// on the same stream in one process load their own copy (and one of them conflicts).
#[derive(Debug)]
pub(super) struct AggregateCache<A> {
    entries: Mutex<Entries<A>>,
}

#[derive(Debug)]
struct Entries<A> {
    states: LruCache<String, Cached<A>>,
    /// The store's count of forgotten subjects the states were read under.
    forgets: Forgets,
}

impl<A> AggregateCache<A> {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                states: LruCache::new(capacity),
                forgets: Forgets(0),
            }),
        }
    }

    /// The entries, emptied first when the store has forgotten a subject since they were read.
    fn lock(&self, forgets: Forgets) -> std::sync::MutexGuard<'_, Entries<A>> {
        // Every critical section is a single map operation: a poisoned lock holds a whole map.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.forgets != forgets {
            entries.states.clear();
            entries.forgets = forgets;
        }
        entries
    }

    pub fn take(&self, stream_id: &str, forgets: Forgets) -> Option<Cached<A>> {
        self.lock(forgets).states.pop(stream_id)
    }

    /// Keeps `entry`, a state read when the store had forgotten `read_under` subjects, unless
    /// the store has forgotten one since (`now`) or the cache holds a newer version of the
    /// stream.
    pub fn put(&self, stream_id: &str, entry: Cached<A>, read_under: Forgets, now: Forgets) {
        if read_under != now {
            return;
        }
        let mut entries = self.lock(now);
        if entries
            .states
            .peek(stream_id)
            .is_some_and(|existing| existing.version >= entry.version)
        {
            return;
        }
        entries.states.put(stream_id.to_owned(), entry);
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .states
            .len()
    }
}
