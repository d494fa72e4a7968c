//! What a store accepts, checked before anything is written (by every store, through
//! [`check_append`](super::backend::check_append)): stream ids that every store can keep and
//! index, and payloads and metadata of a bounded size.

use crate::envelope::{Metadata, NewEvent};
use crate::error::{Error, EventPart, Result, StreamIdProblem};

/// The longest stream id a store accepts, in bytes of UTF-8.
///
/// PostgreSQL refuses a B-tree index entry larger than about a third of a page (2704 bytes);
/// the events' primary key `(stream_id, stream_version)` and the dead-letter queue's
/// `(projection, version, stream_id, stream_version)` hold the id beside other columns, so
/// 1024 bytes keeps every index entry well below that on every store.
pub const MAX_STREAM_ID_BYTES: usize = 1024;

/// The size limits of a store's appends. The default allows 1 MiB of JSON for an event's
/// payload and 1 MiB for its metadata; set others with the store's `with_limits`.
///
/// ```
/// use factum::store::{Limits, MemoryStore};
///
/// let store = MemoryStore::new().with_limits(Limits::default().max_payload_bytes(64 * 1024));
/// assert_eq!(store.limits().max_payload_bytes, 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest payload (the event's JSON), in bytes.
    pub max_payload_bytes: usize,
    /// The largest metadata, serialized as JSON, in bytes.
    pub max_metadata_bytes: usize,
}

impl Limits {
    /// The default payload limit: 1 MiB.
    pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
    /// The default metadata limit: 1 MiB.
    pub const DEFAULT_MAX_METADATA_BYTES: usize = 1024 * 1024;

    /// Sets the payload limit.
    #[must_use]
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the metadata limit.
    #[must_use]
    pub fn max_metadata_bytes(mut self, bytes: usize) -> Self {
        self.max_metadata_bytes = bytes;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            max_metadata_bytes: Self::DEFAULT_MAX_METADATA_BYTES,
        }
    }
}

/// Whether `stream_id` is one every store keeps: not empty, at most [`MAX_STREAM_ID_BYTES`],
/// no NUL or other control character.
///
/// ```
/// use factum::StreamIdProblem;
/// use factum::store::check_stream_id;
///
/// assert_eq!(check_stream_id("order-17"), Ok(()));
/// assert_eq!(check_stream_id(""), Err(StreamIdProblem::Empty));
/// assert!(matches!(check_stream_id("a\0b"), Err(StreamIdProblem::ControlCharacter { at: 1, .. })));
/// ```
///
/// # Errors
/// What is wrong with it.
pub fn check_stream_id(stream_id: &str) -> Result<(), StreamIdProblem> {
    if stream_id.is_empty() {
        return Err(StreamIdProblem::Empty);
    }
    if stream_id.len() > MAX_STREAM_ID_BYTES {
        return Err(StreamIdProblem::TooLong {
            bytes: stream_id.len(),
            limit: MAX_STREAM_ID_BYTES,
        });
    }
    match stream_id.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, character)) => Err(StreamIdProblem::ControlCharacter { character, at }),
        None => Ok(()),
    }
}

/// Refuses an append whose stream id or event sizes are beyond what the store accepts.
pub(super) fn check(stream_id: &str, events: &[NewEvent], limits: &Limits) -> Result<()> {
    if let Err(problem) = check_stream_id(stream_id) {
        return Err(Error::InvalidStreamId {
            stream_id: stream_id.to_owned(),
            event_type: events.first().map(|e| e.event_type.clone().into_owned()),
            problem,
        });
    }
    for event in events {
        let too_large = |part, bytes, limit| Error::EventTooLarge {
            stream_id: stream_id.to_owned(),
            event_type: event.event_type.clone().into_owned(),
            part,
            bytes,
            limit,
        };
        let payload = event.payload.as_str().len();
        if let Some(declared) = event.max_size
            && payload > declared
        {
            return Err(Error::EventAboveDeclaredSize {
                stream_id: stream_id.to_owned(),
                event_type: event.event_type.clone().into_owned(),
                bytes: payload,
                max_size: declared,
            });
        }
        if payload > limits.max_payload_bytes {
            return Err(too_large(
                EventPart::Payload,
                payload,
                limits.max_payload_bytes,
            ));
        }
        let metadata = metadata_bytes(&event.metadata);
        if metadata > limits.max_metadata_bytes {
            return Err(too_large(
                EventPart::Metadata,
                metadata,
                limits.max_metadata_bytes,
            ));
        }
    }
    Ok(())
}

/// The size of `metadata` as JSON, counted without keeping the text.
fn metadata_bytes(metadata: &Metadata) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if metadata.is_empty() {
        return 2; // `{}`
    }
    let mut count = Count(0);
    // Metadata is a map of strings to JSON values: serializing it cannot fail, and writing
    // to the counter does not either.
    match serde_json::to_writer(&mut count, metadata) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}
