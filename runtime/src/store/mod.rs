//! The event store: an append-only log of streams with optimistic concurrency, and a global feed.
//!
//! [`EventStore`] holds the semantics every backend shares; the [`conformance`](crate::conformance)
//! suite checks them once for all backends.

use std::future::Future;
use std::ops::RangeBounds;

use crate::envelope::{EnvelopeFields, NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::event::{EventSet, Payload};
use crate::snapshot::Snapshot;

pub mod backend;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod erasure;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod group;
#[cfg(feature = "postgres")]
mod heads;
pub(crate) mod keys;
mod limits;
mod memory;
mod migration;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod tenancy;
pub mod transfer;
pub mod tx;
mod wakeups;

pub use crate::position::{ExpectedVersion, FeedPosition, KnownHead};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use group::{GroupCommit, GroupCommitStats, GroupCommitStopped};
pub use limits::{Limits, MAX_STREAM_ID_BYTES, check_stream_id};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{ClusterAdoption, FeedHorizon, OpenTransaction, PostgresStore};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sql::SqlStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use tenancy::Tenancy;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use tx::Transaction;
pub use tx::{StoreConnection, StoreKind, Tx};
pub use wakeups::{FeedNotifier, FeedWakeups};

/// A stored event as rebuilding an aggregate needs it: no ids, positions or metadata, so that
/// long streams load fast.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamEvent {
    /// Position in its stream.
    pub stream_version: u64,
    /// The aggregate type owning the stream.
    pub aggregate_type: String,
    /// The event's stable type name.
    pub event_type: String,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The event's JSON.
    pub payload: Payload,
}

impl StreamEvent {
    /// Decodes the payload into the event set `S` (one event, or as many as upcasting makes).
    ///
    /// # Errors
    /// [`Error::Decode`] naming the stream, version, type and what does not match.
    pub fn decode<S: EventSet>(&self, stream_id: &str) -> Result<Vec<S>> {
        let mut events = Vec::with_capacity(1);
        self.borrow()
            .decode_each(stream_id, &mut |event| events.push(event))?;
        Ok(events)
    }

    /// The event, borrowed.
    #[must_use]
    pub fn borrow(&self) -> StreamEventRef<'_> {
        StreamEventRef {
            stream_version: self.stream_version,
            aggregate_type: &self.aggregate_type,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: self.payload.as_str(),
        }
    }
}

impl From<RecordedEvent> for StreamEvent {
    fn from(event: RecordedEvent) -> Self {
        Self {
            stream_version: event.stream_version,
            aggregate_type: event.aggregate_type,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.event,
        }
    }
}

/// A [`StreamEvent`] borrowed from a store's read buffer, so that replaying a long stream
/// allocates nothing but the decoded events.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct StreamEventRef<'a> {
    /// Position in its stream.
    pub stream_version: u64,
    /// The aggregate type owning the stream.
    pub aggregate_type: &'a str,
    /// The event's stable type name.
    pub event_type: &'a str,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The event's JSON text.
    pub payload: &'a str,
}

impl<'a> StreamEventRef<'a> {
    /// An event as read from a store.
    #[must_use]
    pub fn new(
        stream_version: u64,
        aggregate_type: &'a str,
        event_type: &'a str,
        schema_version: u32,
        payload: &'a str,
    ) -> Self {
        Self {
            stream_version,
            aggregate_type,
            event_type,
            schema_version,
            payload,
        }
    }

    /// The same event with another payload (its personal data opened).
    #[cfg(feature = "postgres")]
    pub(crate) fn with_payload<'b>(self, payload: &'b str) -> StreamEventRef<'b>
    where
        'a: 'b,
    {
        StreamEventRef { payload, ..self }
    }

    /// Decodes the payload into the event set `S`, handing each event (one, or as many as
    /// upcasting makes) to `out`.
    ///
    /// # Errors
    /// [`Error::Decode`] naming the stream, version, type and what does not match.
    pub fn decode_each<S: EventSet>(&self, stream_id: &str, out: &mut dyn FnMut(S)) -> Result<()> {
        S::decode(self.event_type, self.schema_version, self.payload, out).map_err(|cause| {
            Error::Decode {
                stream_id: stream_id.to_owned(),
                stream_version: self.stream_version,
                cause,
            }
        })
    }
}

/// What [`EventStore::replay_history`] hands over, in order: the latest snapshot first (when
/// asked for and present), then the stream's events after it.
#[derive(Debug)]
#[non_exhaustive]
pub enum HistoryItem<'a> {
    /// The latest snapshot.
    Snapshot(Snapshot),
    /// An event after the snapshot (or any event, without one).
    Event(StreamEventRef<'a>),
}

/// A read of the global feed: events after a position, at most `limit`, optionally only some
/// event types.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedQuery {
    /// Events strictly after this position.
    pub after: FeedPosition,
    /// At most this many events.
    pub limit: usize,
    /// Only these event types (`None`: all).
    pub event_types: Option<Vec<String>>,
    /// The envelope fields the reader needs (a store may read more).
    pub fields: EnvelopeFields,
}

impl FeedQuery {
    /// Default batch size.
    pub const DEFAULT_LIMIT: usize = 1000;

    /// Events after `after`, up to [`FeedQuery::DEFAULT_LIMIT`] of them.
    #[must_use]
    pub fn after(after: FeedPosition) -> Self {
        Self {
            after,
            limit: Self::DEFAULT_LIMIT,
            event_types: None,
            fields: EnvelopeFields::All,
        }
    }

    /// Events from the start of the feed.
    #[must_use]
    pub fn from_start() -> Self {
        Self::after(FeedPosition::START)
    }

    /// Sets the batch size.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Keeps only these event types.
    #[must_use]
    pub fn event_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Reads only these envelope fields (see [`EnvelopeFields`]).
    #[must_use]
    pub fn fields(mut self, fields: EnvelopeFields) -> Self {
        self.fields = fields;
        self
    }

    /// Whether an event type passes the filter.
    #[must_use]
    pub fn matches(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }
}

/// One batch of the global feed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FeedBatch {
    /// The events, in feed order.
    pub events: Vec<RecordedEvent>,
    /// Where the next read starts. Past the last event, and past events the filter skipped, so a
    /// reader checkpointing it never reads the same stretch twice.
    pub next: FeedPosition,
    /// Whether committed or in-flight events exist that the feed cannot deliver yet, because an
    /// older transaction is still open (see the PostgreSQL store): worth reading again soon.
    pub held_back: bool,
    /// The events of the batch whose stored envelope does not fully read (delivered with empty
    /// metadata): only in batches read for runners, which park their streams.
    pub(crate) undecodable: Vec<Undecodable>,
}

/// An event of the feed whose stored envelope does not fully read (a row written by another
/// tool: metadata that is no JSON object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Undecodable {
    /// The event.
    pub event_id: uuid::Uuid,
    /// The column that does not read.
    pub column: &'static str,
    /// Why.
    pub reason: String,
}

impl Undecodable {
    /// `event`'s defect.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub fn of(event: &RecordedEvent, cause: &crate::error::DecodeError) -> Self {
        let (column, reason) = match cause {
            crate::error::DecodeError::Column { column, reason } => (*column, reason.clone()),
            other => ("payload", other.to_string()),
        };
        Self {
            event_id: event.event_id,
            column,
            reason,
        }
    }

    /// The typed error, for the event it names.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub fn cause(&self) -> crate::error::DecodeError {
        crate::error::DecodeError::column(self.column, self.reason.clone())
    }

    /// What a strict reader gets for `event` (the one this names): [`Error::Decode`] naming it.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub fn error(&self, event: Option<&RecordedEvent>) -> Error {
        Error::Decode {
            stream_id: event.map(|e| e.stream_id.clone()).unwrap_or_default(),
            stream_version: event.map_or(0, |e| e.stream_version),
            cause: self.cause(),
        }
    }
}

/// An envelope read with whatever of it does not read, as the SQL stores' row readers give it.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) type ReadEnvelope = (RecordedEvent, Option<Undecodable>);

/// An envelope as strict readers take it: [`Error::Decode`] naming the event when part of it
/// does not read.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn strict_envelope((event, defect): ReadEnvelope) -> Result<RecordedEvent> {
    match defect {
        None => Ok(event),
        Some(bad) => Err(bad.error(Some(&event))),
    }
}

/// [`refill_envelopes`] into new envelopes (`read`: one row's envelope).
///
/// # Errors
/// As [`refill_envelopes`].
#[cfg(feature = "sqlite")]
pub(crate) fn runner_envelopes<R>(
    rows: &[R],
    read: impl Fn(&R) -> Result<ReadEnvelope>,
) -> Result<(Vec<RecordedEvent>, Vec<Undecodable>, bool)> {
    refill_envelopes(rows, Vec::new(), |row, slot| {
        let (event, defect) = read(row)?;
        *slot = event;
        Ok(defect)
    })
}

/// Rows of the feed read for the runners, written into the envelopes of `spare` first, which
/// may be an earlier batch's, then into new ones (`fill`: one row's envelope written over an
/// envelope, and what of it does not read): the events, those of them that do not fully
/// read, and whether a corrupt row ended the read early. The events before a corrupt row are
/// delivered, and the next read stops at it.
///
/// # Errors
/// The first row's error when it is corrupt.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn refill_envelopes<R>(
    rows: &[R],
    mut events: Vec<RecordedEvent>,
    fill: impl Fn(&R, &mut RecordedEvent) -> Result<Option<Undecodable>>,
) -> Result<(Vec<RecordedEvent>, Vec<Undecodable>, bool)> {
    events.reserve(rows.len().saturating_sub(events.len()));
    let mut undecodable = Vec::new();
    let mut filled = 0;
    for row in rows {
        if filled == events.len() {
            events.push(blank_envelope());
        }
        match fill(row, &mut events[filled]) {
            Ok(defect) => {
                filled += 1;
                undecodable.extend(defect);
            }
            Err(error) if filled == 0 => return Err(error),
            Err(_) => {
                events.truncate(filled);
                return Ok((events, undecodable, true));
            }
        }
    }
    events.truncate(filled);
    Ok((events, undecodable, false))
}

/// An envelope to fill: every field a placeholder, nothing allocated.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn blank_envelope() -> RecordedEvent {
    crate::envelope::Source {
        stream_id: "",
        event_type: "",
        schema_version: 0,
        global_position: 0,
        tx: 0,
    }
    .into_envelope(Payload::from_stored_json(String::new()))
}

/// The envelopes of feed batches a store's runners are done with, kept for its next feed reads
/// to fill again ([`refill_envelopes`]): a runner catching up reads batch after batch of
/// thousands of events, and allocating, then freeing, each event's strings and each batch's
/// vector cost about as much of its time as decoding the rows. Two batches are kept (a runner
/// holds the one it applies and the one it reads ahead), and no payload of more than
/// [`SpareBatches::PAYLOAD_ROOM`] bytes' room: what they keep is bounded.
#[cfg(feature = "postgres")]
#[derive(Default)]
pub(crate) struct SpareBatches(std::sync::Mutex<Vec<Vec<RecordedEvent>>>);

#[cfg(feature = "postgres")]
impl SpareBatches {
    const KEPT: usize = 2;
    const PAYLOAD_ROOM: usize = 4096;

    /// A batch's envelopes to fill, or none.
    pub(crate) fn take(&self) -> Vec<RecordedEvent> {
        self.kept().pop().unwrap_or_default()
    }

    /// Keeps `events` for a later read, unless two batches are kept already; envelopes with
    /// room for large payloads are dropped from it first.
    pub(crate) fn keep(&self, mut events: Vec<RecordedEvent>) {
        let mut kept = self.kept();
        if events.capacity() > 0 && kept.len() < Self::KEPT {
            events.retain(|event| event.event.capacity() <= Self::PAYLOAD_ROOM);
            kept.push(events);
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Vec<RecordedEvent>>> {
        // What it holds is only ever whole vectors: usable after a panic elsewhere.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FeedBatch {
    /// A batch.
    #[must_use]
    pub fn new(events: Vec<RecordedEvent>, next: FeedPosition) -> Self {
        Self {
            events,
            next,
            held_back: false,
            undecodable: Vec::new(),
        }
    }

    /// The batch, or [`Error::Decode`] for its first event whose envelope does not read: what
    /// readers other than the runners get.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn strict(self) -> Result<Self> {
        let Some(bad) = self.undecodable.first() else {
            return Ok(self);
        };
        Err(bad.error(self.events.iter().find(|e| e.event_id == bad.event_id)))
    }

    /// Marks the batch as [held back](FeedBatch::held_back).
    #[must_use]
    pub fn held_back(mut self, held_back: bool) -> Self {
        self.held_back = held_back;
        self
    }
}

/// An append-only event store.
///
/// Semantics every backend shares (checked by [`conformance`](crate::conformance)):
/// - `append` is atomic: all events are stored at consecutive versions after the stream's last
///   one, or none is; the expected version is checked in the same atomic step.
/// - Re-appending events whose ids are already stored at those positions of that stream is a
///   successful no-op returning the stored events (an idempotent retry); reusing a stored id
///   otherwise is [`Error::DuplicateEventId`].
/// - A stream belongs to one aggregate type.
/// - The global feed delivers every committed event exactly once, in `(tx, position)` order, and
///   a stream's events in version order.
pub trait EventStore: Send + Sync {
    /// Appends events to a stream.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the stream is not at the expected version;
    /// [`Error::AggregateTypeMismatch`],
    /// [`Error::DuplicateEventId`],
    /// [`Error::InvalidAppend`],
    /// [`Error::InvalidStreamId`] or [`Error::EventTooLarge`] (checked before anything is
    /// written: nothing of the append is stored), or a backend error.
    fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Appends after a head the runtime has seen: like [`EventStore::append`] with
    /// `ExpectedVersion::Exact(head.version())`, which is what this default does. A store may
    /// skip reading the head (the versions before it exist and belong to `aggregate_type`) and
    /// rely on its uniqueness of `(stream, version)` alone to detect a concurrent append, which
    /// must still be reported as [`Error::Conflict`].
    ///
    /// # Errors
    /// As [`EventStore::append`].
    fn append_after(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        head: KnownHead,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send {
        self.append(
            stream_id,
            aggregate_type,
            ExpectedVersion::Exact(head.version()),
            events,
        )
    }

    /// Reads a stream's events whose versions fall in `versions`, in order. A stream that does not
    /// exist reads as empty.
    ///
    /// # Errors
    /// A backend error.
    fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Reads the global feed.
    ///
    /// # Errors
    /// A backend error.
    fn read_feed(&self, query: &FeedQuery) -> impl Future<Output = Result<FeedBatch>> + Send;

    /// The version of a stream's last event (0: no stream).
    ///
    /// # Errors
    /// A backend error.
    fn stream_version(&self, stream_id: &str) -> impl Future<Output = Result<u64>> + Send;

    /// The stored event with this id, if any (to recognise work already done: a command whose
    /// events carry ids derived from its id).
    ///
    /// # Errors
    /// [`Error::Backend`] on a storage failure.
    fn read_event(
        &self,
        event_id: uuid::Uuid,
    ) -> impl Future<Output = Result<Option<RecordedEvent>>> + Send;

    /// A stream's events as rebuilding an aggregate needs them (see [`StreamEvent`]).
    ///
    /// # Errors
    /// A backend error.
    fn read_stream_events(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> impl Future<Output = Result<Vec<StreamEvent>>> + Send {
        async move {
            let events = self.read_stream(stream_id, versions).await?;
            Ok(events.into_iter().map(StreamEvent::from).collect())
        }
    }

    /// Everything rebuilding an aggregate reads, in as few round trips as the store can: the
    /// latest snapshot (when `with_snapshot`), then the events after it, each handed to `visit`
    /// in order. An error from `visit` stops the replay and is returned.
    ///
    /// `aggregate_type` is the type the caller rebuilds: a store may leave it out of the rows
    /// that hold it and fill it in (PostgreSQL sends only the types that differ), so `visit`
    /// still sees every event's stored aggregate type.
    ///
    /// # Errors
    /// A backend error, or `visit`'s.
    fn replay_history<F>(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        with_snapshot: bool,
        mut visit: F,
    ) -> impl Future<Output = Result<()>> + Send
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        let _ = aggregate_type; // every row's own type is read
        async move {
            let snapshot = if with_snapshot {
                self.load_snapshot(stream_id).await?
            } else {
                None
            };
            let from = snapshot.as_ref().map_or(1, |s| s.stream_version + 1);
            if let Some(snapshot) = snapshot {
                visit(HistoryItem::Snapshot(snapshot))?;
            }
            for event in self.read_stream_events(stream_id, from..).await? {
                visit(HistoryItem::Event(event.borrow()))?;
            }
            Ok(())
        }
    }

    /// The latest snapshot of a stream, if the store keeps snapshots and has one.
    ///
    /// # Errors
    /// A backend error.
    fn load_snapshot(
        &self,
        stream_id: &str,
    ) -> impl Future<Output = Result<Option<Snapshot>>> + Send {
        let _ = stream_id;
        async { Ok(None) }
    }

    /// Stores a snapshot, replacing an older one of the same stream (a newer stored one is kept).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the store keeps no snapshots, or a backend error.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<()>> + Send {
        let _ = snapshot;
        async { Err(Error::Unsupported("snapshots")) }
    }

    /// Forgets a data subject (crypto-shredding, see [`crate::pii`]): deletes its data key, so
    /// that the `#[pii]` fields of its events read as their replacements from now on and their
    /// envelopes are marked [`shredded`](crate::envelope::Envelope::shredded); the log is not
    /// changed. Whether the subject had a key.
    ///
    /// # Errors
    /// A database error; [`Error::Unsupported`] for a store that keeps no data keys (the
    /// default).
    fn forget(&self, subject: &str) -> impl Future<Output = Result<bool>> + Send {
        let _ = subject;
        async { Err(Error::Unsupported("forgetting data subjects")) }
    }

    /// How many data subjects this store (with its clones) has forgotten so far: a cache of
    /// decoded states (a repository's) drops what it holds when the count moves, since a
    /// forgotten subject's data may be in it. 0 for a store that forgets nothing.
    fn forgets(&self) -> u64 {
        0
    }

    /// The tenant whose events this store appends and reads, if it keeps tenants apart
    /// ([`PostgresStore::for_tenant`], [`SqliteStore::for_tenant`]); `None` for a store without tenants (the default) or
    /// across them.
    fn tenant(&self) -> Option<&str> {
        None
    }

    /// Hints that the feed may have grown, for live subscriptions. A store without a
    /// notification mechanism returns hints that never fire; subscribers then poll.
    fn wakeups(&self) -> FeedWakeups {
        FeedWakeups::never()
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;
    use crate::envelope::Source;

    /// Rows as the feed reads them: (stream id, payload), or `None` for a corrupt row.
    type Row = Option<(&'static str, &'static str)>;

    fn fill(row: &Row, slot: &mut RecordedEvent) -> Result<Option<Undecodable>> {
        let (stream_id, payload) = row.ok_or_else(|| Error::Corrupt {
            reason: "a corrupt row".to_owned(),
        })?;
        let source = Source {
            stream_id,
            event_type: "Noted",
            schema_version: 1,
            global_position: 1,
            tx: 1,
        };
        source.refill(slot, payload);
        Ok(None)
    }

    #[test]
    fn envelopes_of_an_earlier_batch_are_filled_again_in_their_room() {
        let rows: Vec<Row> = vec![Some(("s-1", "{\"a\":1}")), Some(("s-2", "{\"b\":2}"))];
        let (first, _, stopped) = refill_envelopes(&rows, Vec::new(), fill).unwrap();
        assert!(!stopped);
        let rooms: Vec<*const u8> = first.iter().map(|e| e.stream_id.as_ptr()).collect();

        // A longer batch: the two envelopes filled again, a third one new.
        let rows: Vec<Row> = vec![
            Some(("t-1", "{\"c\":3}")),
            Some(("t-2", "{\"d\":4}")),
            Some(("t-3", "{}")),
        ];
        let (second, _, _) = refill_envelopes(&rows, first, fill).unwrap();
        let read: Vec<(&str, &str)> = second
            .iter()
            .map(|e| (e.stream_id.as_str(), e.event.as_str()))
            .collect();
        assert_eq!(
            read,
            [("t-1", "{\"c\":3}"), ("t-2", "{\"d\":4}"), ("t-3", "{}")]
        );
        assert_eq!(second[0].stream_id.as_ptr(), rooms[0]);
        assert_eq!(second[1].stream_id.as_ptr(), rooms[1]);

        // A shorter one, cut by a corrupt row: only the rows before it, nothing of the last
        // batch's after them.
        let rows: Vec<Row> = vec![Some(("u-1", "{}")), None, Some(("u-3", "{}"))];
        let (third, _, stopped) = refill_envelopes(&rows, second, fill).unwrap();
        assert!(stopped);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].stream_id, "u-1");

        // A corrupt first row is the read's error.
        let rows: Vec<Row> = vec![None];
        assert!(refill_envelopes(&rows, third, fill).is_err());
    }

    #[test]
    fn a_store_keeps_two_spare_batches_without_large_payloads() {
        let spare = SpareBatches::default();
        let envelope = |payload: String| {
            Source {
                stream_id: "s",
                event_type: "Noted",
                schema_version: 1,
                global_position: 1,
                tx: 1,
            }
            .into_envelope(Payload::from_stored_json(payload))
        };
        let large = format!("\"{}\"", "x".repeat(SpareBatches::PAYLOAD_ROOM));
        for _ in 0..3 {
            spare.keep(vec![envelope("{}".to_owned()), envelope(large.clone())]);
        }
        let (first, second, third) = (spare.take(), spare.take(), spare.take());
        assert_eq!((first.len(), second.len()), (1, 1));
        assert!(first[0].event.capacity() <= SpareBatches::PAYLOAD_ROOM);
        // Only two were kept: the third take finds none.
        assert_eq!(third.capacity(), 0);
    }
}
