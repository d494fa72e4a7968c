//! Helpers for the authors of an [`EventStore`](super::EventStore) backend: the rules of an
//! append that every backend applies the same way (distinct ids within an append, and what
//! reusing stored ids means: an idempotent retry, or a duplicate), version ranges as bounds, and
//! the conversions between Rust's unsigned numbers and SQL's signed integers.
//!
//! Numbers a store writes fit (positions and versions stay below `i64::MAX`); numbers it reads
//! back must fit too, and one that does not is corrupt data, reported as
//! [`Error::Corrupt`] rather than clamped into a plausible value.

use std::collections::HashSet;
use std::ops::{Bound, RangeBounds, RangeInclusive};

use uuid::Uuid;

use super::limits::Limits;
use crate::envelope::{Metadata, NewEvent};
use crate::error::{DecodeError, Error, Result};
use crate::position::ExpectedVersion;

/// Where an event id of an append is already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredId {
    /// The stored event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version there.
    pub stream_version: u64,
}

/// Refuses an append that no store can keep as asked, before anything is written: a stream id
/// that is empty, too long or holds control characters ([`Error::InvalidStreamId`]), a payload
/// above its type's declared size ([`Error::EventAboveDeclaredSize`]), a payload or metadata
/// above `limits` ([`Error::EventTooLarge`]), the same event id twice, or a schema version above
/// `i32::MAX` (SQL stores keep them as 32-bit integers).
///
/// # Errors
/// [`Error::InvalidStreamId`], [`Error::EventAboveDeclaredSize`], [`Error::EventTooLarge`],
/// [`Error::InvalidAppend`].
pub fn check_append(stream_id: &str, events: &[NewEvent], limits: &Limits) -> Result<()> {
    super::limits::check(stream_id, events, limits)?;
    for event in events {
        version_i32(stream_id, event.schema_version, || {
            format!("event `{}` has schema version", event.event_type)
        })?;
    }
    check_distinct_ids(stream_id, events)
}

/// A schema or state version written to `stream_id` as SQL stores keep it, a 32-bit integer.
///
/// # Errors
/// [`Error::InvalidAppend`] when it is above `i32::MAX`, saying `what` has it (`what()`
/// reads like "event `Deposited` has schema version").
pub fn version_i32(stream_id: &str, version: u32, what: impl FnOnce() -> String) -> Result<i32> {
    i32::try_from(version).map_err(|_| Error::InvalidAppend {
        stream_id: stream_id.to_owned(),
        reason: format!(
            "{} {version}, above the largest a store keeps ({})",
            what(),
            i32::MAX
        ),
    })
}

/// Refuses an append that names the same event id twice.
///
/// # Errors
/// [`Error::InvalidAppend`].
pub fn check_distinct_ids(stream_id: &str, events: &[NewEvent]) -> Result<()> {
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if !seen.insert(event.event_id) {
            return Err(Error::InvalidAppend {
                stream_id: stream_id.to_owned(),
                reason: format!("event id {} appears twice in one append", event.event_id),
            });
        }
    }
    Ok(())
}

/// Given the stored events among an append's ids (at least one), decides whether the append is
/// an idempotent retry: the whole batch stored, in order, at consecutive versions of this stream,
/// where the expected version put it. Returns the stored versions to read back. An append of
/// `execute_once` is never a retry: its stored ids are another delivery's.
///
/// # Errors
/// [`Error::DuplicateEventId`] for any other reuse of a stored id.
pub fn classify_retry(
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    stored: &[StoredId],
) -> Result<RangeInclusive<u64>> {
    let find = |id: Uuid| stored.iter().find(|s| s.event_id == id);
    let first = events.first().and_then(|e| find(e.event_id));
    let duplicate = |at: &StoredId| Error::DuplicateEventId {
        event_id: at.event_id,
        stream_id: at.stream_id.clone(),
        stream_version: at.stream_version,
    };
    if let Some(stored) = first.filter(|_| events.iter().any(|e| e.once)) {
        // Another delivery of the same command stored it (`execute_once`).
        return Err(duplicate(stored));
    }
    let Some(first) = first else {
        return Err(stored.first().map_or_else(
            || Error::InvalidAppend {
                stream_id: stream_id.to_owned(),
                reason: "no stored event ids given".to_owned(),
            },
            duplicate,
        ));
    };
    let start = first.stream_version;
    let run_matches = first.stream_id == stream_id
        && events.iter().zip(start..).all(|(event, version)| {
            find(event.event_id)
                .is_some_and(|s| s.stream_id == stream_id && s.stream_version == version)
        });
    let position_matches = match expected {
        ExpectedVersion::Exact(version) => start == version + 1,
        ExpectedVersion::NoStream => start == 1,
        ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
    };
    if run_matches && position_matches {
        Ok(start..=start + events.len() as u64 - 1)
    } else {
        Err(duplicate(first))
    }
}

/// The inclusive version bounds of a range, for backends that query `BETWEEN`.
#[must_use]
pub fn version_bounds(versions: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match versions.start_bound() {
        Bound::Included(&v) => v,
        Bound::Excluded(&v) => v.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match versions.end_bound() {
        Bound::Included(&v) => v,
        Bound::Excluded(&v) => v.saturating_sub(1),
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

/// The expected version as SQL compares it in one statement with the stream's head: `-1` any,
/// `-2` no stream, `-3` the stream exists, else the exact version (0: no stream).
#[must_use]
pub fn expected_code(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::StreamExists => -3,
        ExpectedVersion::Exact(version) => to_i64(version),
    }
}

/// A number to bind as SQL `bigint`. Versions, positions and counts stay far below
/// `i64::MAX`; a larger value (an open range bound such as `u64::MAX`) binds as `i64::MAX`,
/// which SQL compares the same way.
#[must_use]
pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored signed integer as the unsigned number it must be.
///
/// # Errors
/// [`Error::Corrupt`] naming `what` when it is negative.
pub fn stored_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what, value))
}

/// A stored integer as the `u32` it must be (schema versions, projection versions, attempts).
///
/// # Errors
/// [`Error::Corrupt`] naming `what` when it is negative or too large.
pub fn stored_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(what, value))
}

/// Stored metadata (JSON text) as [`Metadata`]: most events carry none, and `{}` needs no parser.
///
/// # Errors
/// [`Error::Corrupt`] when it is not a JSON object (written by another tool).
pub fn stored_metadata(text: &str) -> Result<Metadata> {
    decode_metadata(text).map_err(|cause| Error::Corrupt {
        reason: cause.to_string(),
    })
}

/// Stored metadata (JSON text) as [`Metadata`], or why it is none: a
/// [`DecodeError::Column`] naming the `metadata` column, for an error naming the event.
///
/// # Errors
/// [`DecodeError::Column`] when it is not a JSON object (written by another tool).
pub fn decode_metadata(text: &str) -> Result<Metadata, DecodeError> {
    if text == "{}" {
        return Ok(Metadata::new());
    }
    serde_json::from_str(text).map_err(|cause| {
        DecodeError::column(
            "metadata",
            format!("it is not a JSON object ({cause}): `{text:.200}`"),
        )
    })
}

/// A time stored as text (RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS[.fff]` in UTC).
///
/// # Errors
/// [`Error::Corrupt`] naming `what` when it is no time.
pub fn stored_time(text: &str, what: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .ok_or_else(|| Error::Corrupt {
            reason: format!("{what} is stored as `{text:.100}`, which is no time"),
        })
}

fn corrupt(what: &str, value: i64) -> Error {
    Error::Corrupt {
        reason: format!("{what} is stored as {value}, which no valid value can be"),
    }
}

/// Reading the columns of a SQL row (both SQL stores and the runners): a stored value that is
/// not what the store writes is [`Error::Corrupt`], naming the column, never a silent default.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod columns {
    use sqlx::{Column as _, ColumnIndex, Decode, Row, Type};

    use crate::error::{Error, Result};

    fn name<R: Row>(row: &R, index: usize) -> String {
        row.columns()
            .get(index)
            .map_or_else(|| format!("#{index}"), |c| c.name().to_owned())
    }

    /// A column failure: a value that does not decode is corrupt data; anything else (a
    /// missing column) is the backend's.
    pub fn error<R: Row>(row: &R, index: usize, error: sqlx::Error) -> Error {
        match error {
            sqlx::Error::ColumnDecode { source, .. } => Error::Corrupt {
                reason: format!("column `{}` does not decode: {source}", name(row, index)),
            },
            other => Error::Database(other),
        }
    }

    /// Column `index` of `row`.
    pub fn get<'r, R, T>(row: &'r R, index: usize) -> Result<T>
    where
        R: Row,
        usize: ColumnIndex<R>,
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        row.try_get(index).map_err(|e| error(row, index, e))
    }

    /// Column `index` of `row`, decoded without first comparing the column's SQL type with
    /// `T`'s: for the hot read paths (replaying a stream, reading the feed), whose own
    /// statements produce exactly these types (a cast in the SQL where the stored type could
    /// differ). A value that does not decode is still [`Error::Corrupt`]. PostgreSQL only:
    /// SQLite would turn any stored value into text.
    #[cfg(feature = "postgres")]
    pub fn get_unchecked<'r, R, T>(row: &'r R, index: usize) -> Result<T>
    where
        R: Row,
        usize: ColumnIndex<R>,
        T: Decode<'r, R::Database>,
    {
        row.try_get_unchecked(index)
            .map_err(|e| error(row, index, e))
    }

    /// Column `index`, text (or `json`, whose bytes are its text), not compared with its SQL
    /// type, as [`get_unchecked`]: for an event's payload, the longest value of a read, whose
    /// UTF-8 is checked with SIMD instructions (`simdutf8`) rather than `str`'s decoder.
    /// PostgreSQL only.
    #[cfg(feature = "postgres")]
    pub fn text(row: &sqlx::postgres::PgRow, index: usize) -> Result<&str> {
        let bytes = row
            .try_get_raw(index)
            .map_err(|e| error(row, index, e))?
            .as_bytes()
            .map_err(|source| {
                let column = format!("{index}");
                error(
                    row,
                    index,
                    sqlx::Error::ColumnDecode {
                        index: column,
                        source,
                    },
                )
            })?;
        simdutf8::basic::from_utf8(bytes).map_err(|_| Error::Corrupt {
            reason: format!("column `{}` holds no UTF-8 text", name(row, index)),
        })
    }

    /// Column `index`, a signed SQL integer (`S`: `i64`, `i32`), as the unsigned number `T`
    /// it must hold.
    pub fn unsigned<'r, R, S, T>(row: &'r R, index: usize) -> Result<T>
    where
        R: Row,
        usize: ColumnIndex<R>,
        S: Decode<'r, R::Database> + Type<R::Database> + Into<i64>,
        T: TryFrom<i64>,
    {
        let value: i64 = get::<R, S>(row, index)?.into();
        in_range(row, index, value)
    }

    /// [`unsigned`], decoded without first comparing the column's SQL type, as
    /// [`get_unchecked`]: for the hot read paths, whose statements produce integer columns
    /// (`int2`, `int4`, `int8`, and `xid8`, sent as an `int8`'s bytes). Read from the bytes
    /// the server sent in binary form, at a fraction of the cost of sqlx's decoder, which
    /// takes any width byte by byte (this runs for several columns of every event a replay or
    /// a runner reads); text form, NULL or another width go through sqlx's decoder, which
    /// reads them or says what is wrong. PostgreSQL only.
    #[cfg(feature = "postgres")]
    pub fn unsigned_unchecked<T: TryFrom<i64>>(
        row: &sqlx::postgres::PgRow,
        index: usize,
    ) -> Result<T> {
        use sqlx::ValueRef as _;
        let value = row.try_get_raw(index).map_err(|e| error(row, index, e))?;
        let sent = (value.format() == sqlx::postgres::PgValueFormat::Binary && !value.is_null())
            .then(|| value.as_bytes().ok())
            .flatten();
        let number = match sent {
            Some(&[a, b, c, d, e, f, g, h]) => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
            Some(&[a, b, c, d]) => i64::from(i32::from_be_bytes([a, b, c, d])),
            Some(&[a, b]) => i64::from(i16::from_be_bytes([a, b])),
            _ => get_unchecked::<_, i64>(row, index)?,
        };
        in_range(row, index, number)
    }

    /// `value`, read from column `index`, as the unsigned number `T` it must be.
    fn in_range<R: Row, T: TryFrom<i64>>(row: &R, index: usize, value: i64) -> Result<T> {
        T::try_from(value).map_err(|_| Error::Corrupt {
            reason: format!(
                "column `{}` holds {value}, which no valid value can be",
                name(row, index)
            ),
        })
    }

    /// Column `index`, an optional signed SQL integer, as the unsigned number it must hold.
    pub fn unsigned_opt<'r, R, S, T>(row: &'r R, index: usize) -> Result<Option<T>>
    where
        R: Row,
        usize: ColumnIndex<R>,
        S: Decode<'r, R::Database> + Type<R::Database> + Into<i64>,
        T: TryFrom<i64>,
    {
        match get::<R, Option<S>>(row, index)? {
            None => Ok(None),
            Some(value) => {
                let value: i64 = value.into();
                T::try_from(value).map(Some).map_err(|_| Error::Corrupt {
                    reason: format!(
                        "column `{}` holds {value}, which no valid value can be",
                        name(row, index)
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{StoredId, classify_retry};
    use crate::envelope::NewEvent;
    use crate::error::Error;
    use crate::event::Payload;
    use crate::position::ExpectedVersion;

    /// The same append again is a retry; the same events appended by another delivery of an
    /// `execute_once` command are a duplicate, however exactly they match.
    #[test]
    fn a_stored_run_is_a_retry_unless_another_delivery_appended_it() {
        let event = NewEvent::new("Pinged", 1, Payload::encode(&1).unwrap());
        let stored = [StoredId {
            event_id: event.event_id,
            stream_id: "s".to_owned(),
            stream_version: 1,
        }];
        let retry = classify_retry(
            "s",
            ExpectedVersion::Exact(0),
            std::slice::from_ref(&event),
            &stored,
        );
        assert_eq!(retry.unwrap(), 1..=1);

        let mut delivery = event;
        delivery.once = true;
        let again = classify_retry("s", ExpectedVersion::Exact(0), &[delivery], &stored);
        assert!(
            matches!(
                again,
                Err(Error::DuplicateEventId {
                    stream_version: 1,
                    ..
                })
            ),
            "{again:?}"
        );
    }
}
