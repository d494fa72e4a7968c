//! Rows into envelopes, in each read's column order. Each column's stored type is checked:
//! SQLite would turn any value into text.

use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::envelope::{Metadata, Origin, RecordedEvent, Source};
use crate::error::{DecodeError, Error, Result};
use crate::event::Payload;
use crate::store::backend::{columns, decode_metadata};
use crate::store::{ReadEnvelope, Undecodable, strict_envelope};

/// The columns of an [`Origin`] and the payload, in the order `origin_at` reads them: the
/// first columns of every envelope read.
macro_rules! origin_columns {
    () => {
        "stream_id, stream_version, position, aggregate_type, event_id, event_type, \
         schema_version, payload, recorded_at"
    };
}

/// The origin's columns alone ([`EnvelopeFields::Origin`]).
///
/// [`EnvelopeFields::Origin`]: crate::envelope::EnvelopeFields::Origin
pub(super) const ORIGIN_COLUMNS: &str = origin_columns!();

/// The columns of a [`Source`] and the payload, in the order `source_from_row` reads them
/// ([`EnvelopeFields::Source`](crate::envelope::EnvelopeFields::Source)).
pub(super) const SOURCE_COLUMNS: &str = "stream_id, position, event_type, schema_version, payload";

/// The envelope columns, in the order `envelope_from_row` reads them: the origin's, then the
/// metadata, correlation, causation, actor and tenant.
pub(super) const ENVELOPE_COLUMNS: &str = concat!(
    origin_columns!(),
    ", metadata, correlation_id, causation_id, actor, nullif(tenant, '')"
);

/// A UUID stored as text.
pub(crate) fn uuid(row: &SqliteRow, index: usize) -> Result<Uuid> {
    let text: String = columns::get(row, index)?;
    Uuid::parse_str(&text).map_err(|error| Error::Corrupt {
        reason: format!("`{text}` is stored as an id, which it is not ({error})"),
    })
}

/// Reads the envelope columns ([`ENVELOPE_COLUMNS`]).
///
/// # Errors
/// [`Error::Decode`] naming the event when its metadata is no JSON object; [`Error::Corrupt`]
/// when a column that identifies it does not read.
pub(super) fn envelope_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    strict_envelope(envelope_or_defect(row)?)
}

/// Reads the origin columns ([`ORIGIN_COLUMNS`]): an envelope whose other fields hold their
/// placeholders ([`EnvelopeFields::Origin`](crate::envelope::EnvelopeFields::Origin)).
pub(super) fn origin_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    let (origin, payload) = origin_at(row)?;
    Ok(origin.into_envelope(payload))
}

/// Reads the source columns ([`SOURCE_COLUMNS`]): an envelope whose other fields hold their
/// placeholders ([`EnvelopeFields::Source`](crate::envelope::EnvelopeFields::Source)).
pub(super) fn source_from_row(row: &SqliteRow) -> Result<RecordedEvent> {
    let position = columns::unsigned::<_, i64, _>(row, 1)?;
    let source = Source {
        stream_id: columns::get(row, 0)?,
        global_position: position,
        tx: position,
        event_type: columns::get(row, 2)?,
        schema_version: columns::unsigned::<_, i64, _>(row, 3)?,
    };
    let payload: &str = columns::get(row, 4)?;
    Ok(source.into_envelope(Payload::from_stored_json(payload.to_owned())))
}

/// An event's origin and payload, from the columns [`ORIGIN_COLUMNS`] and [`ENVELOPE_COLUMNS`]
/// begin with. Each column's stored type is checked: SQLite would turn any value into text.
pub(super) fn origin_at(row: &SqliteRow) -> Result<(Origin<'_>, Payload)> {
    let position = columns::unsigned::<_, i64, _>(row, 2)?;
    let origin = Origin {
        stream_id: columns::get(row, 0)?,
        stream_version: columns::unsigned::<_, i64, _>(row, 1)?,
        global_position: position,
        tx: position,
        aggregate_type: columns::get(row, 3)?,
        event_id: uuid(row, 4)?,
        event_type: columns::get(row, 5)?,
        schema_version: columns::unsigned::<_, i64, _>(row, 6)?,
        recorded_at: columns::get(row, 8)?,
    };
    let payload: &str = columns::get(row, 7)?;
    Ok((origin, Payload::from_stored_json(payload.to_owned())))
}

/// [`envelope_from_row`], but an event whose metadata does not read (not a JSON object, or
/// not even text) comes back with empty metadata and the defect, for the runners to park.
pub(super) fn envelope_or_defect(row: &SqliteRow) -> Result<ReadEnvelope> {
    let metadata = match columns::get::<_, String>(row, 9) {
        Ok(text) => decode_metadata(&text),
        Err(error) => Err(DecodeError::column("metadata", error.to_string())),
    };
    let (metadata, defect) = match metadata {
        Ok(metadata) => (metadata, None),
        Err(cause) => (Metadata::new(), Some(cause)),
    };
    let (origin, payload) = origin_at(row)?;
    let mut event = origin.into_envelope(payload);
    event.metadata = metadata;
    event.correlation_id = uuid(row, 10)?;
    event.causation_id = uuid(row, 11)?;
    event.actor = columns::get(row, 12)?;
    event.tenant = columns::get(row, 13)?;
    let defect = defect.map(|cause| Undecodable::of(&event, &cause));
    Ok((event, defect))
}
