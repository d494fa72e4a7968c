//! Snapshots: an aggregate's state at a stream version, so that loading it replays only the
//! events after that version.
//!
//! A snapshot is an optimisation, never a source of truth: one that is missing, of another
//! aggregate type or state version, ahead of the stream, or that fails to decode is ignored (with
//! a warning) and the aggregate is rebuilt from its events.

use std::time::Duration;

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

/// When a [`Repository`](crate::Repository) takes snapshots (seed 001's three strategies):
/// every N events, when a load replayed events for longer than a limit, and when a load
/// replayed events after a snapshot older than a limit. Any rule that holds takes one; with no
/// rule, existing snapshots are still used by loads.
///
/// ```
/// use std::time::Duration;
/// use factum::snapshot::SnapshotPolicy;
///
/// let policy = SnapshotPolicy::every(100)
///     .when_load_takes(Duration::from_millis(100))
///     .when_older_than(Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(policy.interval(), Some(100));
/// ```
///
/// Time is the repository's [`Clock`](crate::clock::Clock) (`Repository::clock`): the system
/// clock, or one a test controls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: Option<u64>,
    slow_load: Option<Duration>,
    max_age: Option<Duration>,
}

impl SnapshotPolicy {
    /// A snapshot whenever a command makes the stream cross a multiple of `every` events (0
    /// counts as 1).
    #[must_use]
    pub fn every(every: u64) -> Self {
        Self {
            every: Some(every.max(1)),
            ..Self::default()
        }
    }

    /// Also a snapshot after a load that replayed events for longer than `limit` (reading and
    /// applying them, by the repository's clock): the next load of that stream starts from it.
    #[must_use]
    pub fn when_load_takes(mut self, limit: Duration) -> Self {
        self.slow_load = Some(limit);
        self
    }

    /// Also a snapshot after a load that replayed events after a snapshot taken more than `age`
    /// ago ("snapshot aggregates not snapshotted in 7 days"), so that a stream changing slowly
    /// still gets a recent one. A stream without a snapshot gets its first from the other
    /// rules.
    #[must_use]
    pub fn when_older_than(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// The interval of [`SnapshotPolicy::every`], if set.
    #[must_use]
    pub fn interval(&self) -> Option<u64> {
        self.every
    }

    /// Whether appending from `from` to `to` (stream versions) crosses the interval.
    #[must_use]
    pub(crate) fn crosses_interval(&self, from: u64, to: u64) -> bool {
        self.every.is_some_and(|every| to / every > from / every)
    }

    /// Why a load should be followed by a snapshot, if it should: it replayed `replayed` events
    /// in `took`, after a snapshot taken at `snapshot_taken_at` (if any), and it is `now`.
    #[must_use]
    pub(crate) fn after_load(
        &self,
        replayed: u64,
        took: Duration,
        snapshot_taken_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<SnapshotReason> {
        if replayed == 0 {
            return None;
        }
        if let Some(limit) = self.slow_load
            && took > limit
        {
            return Some(SnapshotReason::SlowLoad { took, limit });
        }
        if let (Some(limit), Some(taken_at)) = (self.max_age, snapshot_taken_at) {
            let age = (now - taken_at).to_std().unwrap_or_default();
            if age > limit {
                return Some(SnapshotReason::Old { age, limit });
            }
        }
        None
    }
}

/// Why a snapshot was taken after a load (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotReason {
    /// The load replayed events for longer than the policy allows.
    SlowLoad {
        /// How long it took.
        took: Duration,
        /// The policy's limit.
        limit: Duration,
    },
    /// The latest snapshot was older than the policy allows.
    Old {
        /// Its age.
        age: Duration,
        /// The policy's limit.
        limit: Duration,
    },
}
