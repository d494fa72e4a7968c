//! Rules of an append that every backend applies the same way: distinct ids within an append,
//! and what reusing stored ids means (an idempotent retry, or a duplicate).

use std::collections::HashSet;
use std::ops::RangeInclusive;

use uuid::Uuid;

use super::ExpectedVersion;
use crate::envelope::NewEvent;
use crate::error::{Error, Result};

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
/// where the expected version put it. Returns the stored versions to read back.
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
