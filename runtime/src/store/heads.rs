//! Stream heads a store wrote itself, so that its next append to the stream can skip reading the
//! head: the versions up to a head this store committed exist for good (the log is append-only),
//! so an insert after it is arbitrated by the primary key alone, as after a [`KnownHead`] from a
//! repository. A head that moved since (another process or store wrote) only costs the append a
//! unique violation and the checked insert; the stream is then marked shared and its appends
//! read the head again.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use crate::position::{ExpectedVersion, KnownHead};

/// Streams remembered at most: about 100 bytes each.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

/// A head this store committed.
#[derive(Debug)]
struct Head {
    aggregate_type: String,
    version: u64,
    /// Another writer appended to the stream after this store: its appends check the head.
    shared: bool,
}

/// The heads a store committed, least recently written forgotten first.
#[derive(Debug)]
pub(crate) struct WrittenHeads {
    entries: Mutex<LruCache<String, Head>>,
}

impl Default for WrittenHeads {
    fn default() -> Self {
        Self {
            entries: Mutex::new(LruCache::new(CAPACITY)),
        }
    }
}

impl WrittenHeads {
    fn lock(&self) -> MutexGuard<'_, LruCache<String, Head>> {
        // Every critical section is a single map operation: a poisoned lock holds a whole map.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The head an append expecting `expected` may insert after with no check but the primary
    /// key's, if there is one: version 0 for a new stream; for other expectations, the head
    /// this store wrote, when the stream holds `aggregate_type` and no other writer was seen.
    pub fn known(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
    ) -> Option<KnownHead> {
        match expected {
            // Version 1 exists exactly when the stream does.
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => Some(KnownHead::new(0)),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => {
                self.written(stream_id, aggregate_type).map(KnownHead::new)
            }
            // Versions up to the head exist: the insert at `version + 1` conflicts when the
            // stream is past it.
            ExpectedVersion::Exact(version) => self
                .written(stream_id, aggregate_type)
                .filter(|head| version <= *head)
                .map(|_| KnownHead::new(version)),
        }
    }

    /// The head this store wrote, when the stream holds `aggregate_type` and no other writer
    /// was seen.
    fn written(&self, stream_id: &str, aggregate_type: &str) -> Option<u64> {
        self.lock()
            .peek(stream_id)
            .filter(|head| !head.shared && head.aggregate_type == aggregate_type)
            .map(|head| head.version)
    }

    /// Remembers that this store committed the stream up to `version`.
    pub fn wrote(&self, stream_id: &str, aggregate_type: &str, version: u64) {
        let mut entries = self.lock();
        match entries.get_mut(stream_id) {
            Some(head) if head.aggregate_type == aggregate_type => {
                head.version = head.version.max(version);
            }
            _ => {
                entries.put(
                    stream_id.to_owned(),
                    Head {
                        aggregate_type: aggregate_type.to_owned(),
                        version,
                        shared: false,
                    },
                );
            }
        }
    }

    /// Another writer moved the stream's head: its appends read the head from now on.
    pub fn moved(&self, stream_id: &str) {
        if let Some(head) = self.lock().get_mut(stream_id) {
            head.shared = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_stream_needs_no_remembered_head() {
        let heads = WrittenHeads::default();
        assert_eq!(
            heads.known("s", "A", ExpectedVersion::NoStream),
            Some(KnownHead::new(0))
        );
        assert_eq!(heads.known("s", "A", ExpectedVersion::Any), None);
        assert_eq!(heads.known("s", "A", ExpectedVersion::Exact(3)), None);
    }

    #[test]
    fn a_written_head_serves_its_aggregate_type_until_another_writer_moves_it() {
        let heads = WrittenHeads::default();
        heads.wrote("s", "A", 3);
        heads.wrote("s", "A", 2); // an older outcome never moves the head back
        assert_eq!(
            heads.known("s", "A", ExpectedVersion::Any),
            Some(KnownHead::new(3))
        );
        assert_eq!(
            heads.known("s", "A", ExpectedVersion::Exact(2)),
            Some(KnownHead::new(2))
        );
        assert_eq!(heads.known("s", "A", ExpectedVersion::Exact(4)), None);
        assert_eq!(heads.known("s", "B", ExpectedVersion::Any), None);
        heads.moved("s");
        assert_eq!(heads.known("s", "A", ExpectedVersion::Any), None);
        heads.wrote("s", "A", 5);
        assert_eq!(heads.known("s", "A", ExpectedVersion::Any), None);
    }
}
