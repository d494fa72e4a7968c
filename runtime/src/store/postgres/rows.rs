//! Rows into envelopes, stream events, replayed events and snapshots: the column order of each
//! read is the statement's (see `statements`).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;

use crate::envelope::{Origin, RecordedEvent, Source};
use crate::error::Result;
use crate::event::Payload;
use crate::snapshot::Snapshot;
use crate::store::backend::{columns, decode_metadata};
use crate::store::{StreamEvent, StreamEventRef, Undecodable, blank_envelope, strict_envelope};

/// Reads a snapshot's columns starting at `at`: `stream_version, aggregate_type, (unused),
/// state_version, state, (unused), taken_at` (lined up with a replayed event's).
pub(super) fn snapshot_from_row(row: &PgRow, at: usize, stream_id: &str) -> Result<Snapshot> {
    let mut snapshot = Snapshot::new(
        stream_id,
        columns::get::<_, String>(row, at + 1)?,
        columns::unsigned::<_, i64, _>(row, at)?,
        columns::unsigned::<_, i32, _>(row, at + 3)?,
        Payload::from_stored_json(columns::text(row, at + 4)?.to_owned()),
    );
    snapshot.taken_at = columns::get::<_, DateTime<Utc>>(row, at + 6)?;
    Ok(snapshot)
}

/// Reads the replay columns ([`REPLAY_COLUMNS`]) starting at `at`: an aggregate type left out is
/// the replaying one's. The statements' own casts fix the text columns' types, so they are decoded
/// without comparing types first (this runs once per replayed event).
///
/// [`REPLAY_COLUMNS`]: super::statements::REPLAY_COLUMNS
pub(super) fn replayed_event<'r>(
    row: &'r PgRow,
    at: usize,
    aggregate_type: &'r str,
) -> Result<Replayed<'r>> {
    let event = StreamEventRef::new(
        columns::unsigned_unchecked(row, at)?,
        columns::get_unchecked::<_, Option<&str>>(row, at + 1)?.unwrap_or(aggregate_type),
        columns::get_unchecked(row, at + 2)?,
        columns::unsigned_unchecked(row, at + 3)?,
        columns::text(row, at + 4)?,
    );
    Ok(Replayed {
        event,
        sealed: columns::get_unchecked(row, at + 5)?,
    })
}

/// A replayed event as its row holds it: the payload, and the sealed data of its personal data
/// when the row keeps that in its `sealed` column.
pub(super) struct Replayed<'r> {
    pub(super) event: StreamEventRef<'r>,
    pub(super) sealed: Option<&'r [u8]>,
}

/// The payload of a row whose columns `at` and `at + 1` are `payload` and `sealed`, with its sealed
/// data, if any, inside it ([`pii::inline`]): opened later, or handed on sealed.
///
/// [`pii::inline`]: crate::pii::inline
pub(super) fn stored_payload(row: &PgRow, at: usize) -> Result<Payload> {
    Ok(Payload::from_stored_json(
        row_payload(row, at)?.into_owned(),
    ))
}

/// The text of [`stored_payload`], borrowed from the row unless it has sealed data to put
/// inside it.
pub(super) fn row_payload(row: &PgRow, at: usize) -> Result<std::borrow::Cow<'_, str>> {
    let payload = columns::text(row, at)?;
    Ok(
        match columns::get_unchecked::<_, Option<&[u8]>>(row, at + 1)? {
            Some(sealed) => crate::pii::inline(payload, sealed)?.into(),
            None => payload.into(),
        },
    )
}

/// The stream version in a stream read's row, at column `at`.
pub(super) fn version_at(row: &PgRow, at: usize) -> Result<u64> {
    columns::unsigned_unchecked(row, at)
}

/// Reads the stream event columns ([`STREAM_EVENT_COLUMNS`]) starting at `at`.
///
/// [`STREAM_EVENT_COLUMNS`]: super::statements::STREAM_EVENT_COLUMNS
pub(super) fn stream_event_from_row(row: &PgRow, at: usize) -> Result<StreamEvent> {
    Ok(StreamEvent {
        stream_version: columns::unsigned::<_, i64, _>(row, at)?,
        aggregate_type: columns::get(row, at + 1)?,
        event_type: columns::get(row, at + 2)?,
        schema_version: columns::unsigned::<_, i32, _>(row, at + 3)?,
        payload: stored_payload(row, at + 4)?,
    })
}

/// Reads the envelope columns ([`ENVELOPE_COLUMNS`]) starting at `at`.
///
/// # Errors
/// [`Error::Decode`] naming the event when its metadata is no JSON object; [`Error::Corrupt`]
/// when a column that identifies it does not read.
///
/// [`ENVELOPE_COLUMNS`]: super::statements::ENVELOPE_COLUMNS
/// [`Error::Decode`]: crate::Error::Decode
/// [`Error::Corrupt`]: crate::Error::Corrupt
pub(super) fn envelope_from_row(row: &PgRow, at: usize) -> Result<RecordedEvent> {
    let mut event = blank_envelope();
    let defect = refill_envelope(row, at, &mut event)?;
    strict_envelope((event, defect))
}

/// Reads the source columns ([`SOURCE_COLUMNS`]) starting at `at` into `envelope`, whose other
/// fields get their placeholders ([`EnvelopeFields::Source`]), in the room its strings have (see
/// [`SpareBatches`]).
///
/// [`SOURCE_COLUMNS`]: super::statements::SOURCE_COLUMNS
/// [`EnvelopeFields::Source`]: crate::envelope::EnvelopeFields::Source
/// [`SpareBatches`]: crate::store::SpareBatches
pub(super) fn refill_source(row: &PgRow, at: usize, envelope: &mut RecordedEvent) -> Result<()> {
    let source = Source {
        stream_id: columns::get_unchecked(row, at)?,
        global_position: columns::unsigned_unchecked(row, at + 1)?,
        tx: columns::unsigned_unchecked(row, at + 2)?,
        event_type: columns::get_unchecked(row, at + 3)?,
        schema_version: columns::unsigned_unchecked(row, at + 4)?,
    };
    source.refill(envelope, &row_payload(row, at + 5)?);
    Ok(())
}

/// Reads the origin columns ([`ORIGIN_COLUMNS`]) starting at `at` into `envelope`, as
/// [`refill_source`] does ([`EnvelopeFields::Origin`]).
///
/// [`ORIGIN_COLUMNS`]: super::statements::ORIGIN_COLUMNS
/// [`EnvelopeFields::Origin`]: crate::envelope::EnvelopeFields::Origin
pub(super) fn refill_origin(row: &PgRow, at: usize, envelope: &mut RecordedEvent) -> Result<()> {
    let origin = origin_only(row, at)?;
    origin.refill(envelope, &row_payload(row, at + 8)?);
    Ok(())
}

/// An event's origin, from the columns [`ORIGIN_COLUMNS`] and [`ENVELOPE_COLUMNS`] begin with, from
/// `at` (the payload follows it). The statements' own casts fix the text columns' types, so they
/// are decoded without comparing types first (this runs once per event read).
///
/// [`ORIGIN_COLUMNS`]: super::statements::ORIGIN_COLUMNS
/// [`ENVELOPE_COLUMNS`]: super::statements::ENVELOPE_COLUMNS
pub(super) fn origin_only(row: &PgRow, at: usize) -> Result<Origin<'_>> {
    Ok(Origin {
        stream_id: columns::get_unchecked(row, at)?,
        stream_version: columns::unsigned_unchecked(row, at + 1)?,
        global_position: columns::unsigned_unchecked(row, at + 2)?,
        tx: columns::unsigned_unchecked(row, at + 3)?,
        aggregate_type: columns::get_unchecked(row, at + 4)?,
        event_id: columns::get(row, at + 5)?,
        event_type: columns::get_unchecked(row, at + 6)?,
        schema_version: columns::unsigned_unchecked(row, at + 7)?,
        recorded_at: columns::get(row, at + 10)?,
    })
}

/// Reads the envelope columns ([`ENVELOPE_COLUMNS`]) starting at `at` into `envelope`, as
/// [`refill_source`] does; an event whose metadata does not read gets empty metadata, and the
/// defect comes back, for the runners to park ([`envelope_from_row`] refuses it).
///
/// [`ENVELOPE_COLUMNS`]: super::statements::ENVELOPE_COLUMNS
pub(super) fn refill_envelope(
    row: &PgRow,
    at: usize,
    envelope: &mut RecordedEvent,
) -> Result<Option<Undecodable>> {
    refill_origin(row, at, envelope)?;
    envelope.correlation_id = columns::get(row, at + 12)?;
    envelope.causation_id = columns::get(row, at + 13)?;
    envelope.actor = columns::get(row, at + 14)?;
    envelope.tenant = columns::get(row, at + 15)?;
    Ok(read_metadata(envelope, columns::text(row, at + 11)?))
}

/// Puts its stored metadata into `event`; when it does not read, leaves `event`'s metadata
/// as it is (empty) and returns the defect (for the runners to park).
pub(super) fn read_metadata(event: &mut RecordedEvent, metadata: &str) -> Option<Undecodable> {
    match decode_metadata(metadata) {
        Ok(metadata) => {
            event.metadata = metadata;
            None
        }
        Err(cause) => Some(Undecodable::of(event, &cause)),
    }
}
