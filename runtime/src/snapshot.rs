//! Snapshots: an aggregate's state at a stream version, so that loading it replays only the
//! events after that version.
//!
//! A snapshot is an optimisation, never a source of truth: one that is missing, of another
//! aggregate type or state version, ahead of the stream, or that fails to decode is ignored (with
//! a warning) and the aggregate is rebuilt from its events.

use chrono::{DateTime, Utc};

use crate::event::Payload;

/// A stored snapshot of one stream's aggregate state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The stream.
    pub stream_id: String,
    /// The aggregate type whose state this is.
    pub aggregate_type: String,
    /// The version of the last event applied to the state.
    pub stream_version: u64,
    /// The schema version of the state (`Aggregate::STATE_VERSION` when it was taken).
    pub state_version: u32,
    /// The state, as JSON.
    pub state: Payload,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

impl Snapshot {
    /// A snapshot taken now.
    #[must_use]
    pub fn new(
        stream_id: impl Into<String>,
        aggregate_type: impl Into<String>,
        stream_version: u64,
        state_version: u32,
        state: Payload,
    ) -> Self {
        Self {
            stream_id: stream_id.into(),
            aggregate_type: aggregate_type.into(),
            stream_version,
            state_version,
            state,
            taken_at: Utc::now(),
        }
    }
}
