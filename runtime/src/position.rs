//! The vocabulary every layer shares: where a stream stands (its version, what an append
//! expects of it, a head the runtime has seen) and where a reader stands in the global feed.
//! A leaf module: it depends on nothing else of the crate, so that errors, envelopes and stores
//! can all speak of positions without depending on each other.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an append expects of the stream, checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet (have no events).
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream's last event must have exactly this version; `Exact(0)` is the same as
    /// [`ExpectedVersion::NoStream`].
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `current` (0: no stream) satisfies this expectation.
    #[must_use]
    pub fn accepts(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::StreamExists => current > 0,
            Self::Exact(version) => current == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream | Self::Exact(0) => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// A stream head the runtime has seen: the stream held exactly `version` events of the given
/// aggregate type when it was read (or appended to) by this process.
///
/// Only the runtime creates these (the repository, from its loads and its cache), so a store
/// may append after one with no further check than its uniqueness of `(stream, version)`: the
/// versions before the head exist, so no gap can appear. See
/// [`EventStore::append_after`](crate::EventStore::append_after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownHead {
    version: u64,
}

impl KnownHead {
    pub(crate) fn new(version: u64) -> Self {
        Self { version }
    }

    /// The version of the stream's last event when it was seen (0: no stream).
    #[must_use]
    pub fn version(self) -> u64 {
        self.version
    }
}

/// A reader's place in the global feed: the feed delivers events in `(tx, position)` order, and a
/// reader that has processed everything up to an event checkpoints that event's position.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FeedPosition {
    /// The commit-order key (see [`Envelope::tx`](crate::Envelope::tx)).
    pub tx: u64,
    /// The global position.
    pub position: u64,
}

impl FeedPosition {
    /// Before the first event.
    pub const START: Self = Self { tx: 0, position: 0 };

    /// A position.
    #[must_use]
    pub const fn new(tx: u64, position: u64) -> Self {
        Self { tx, position }
    }

    /// After every event of commit `tx` (positions stay below `i64::MAX`, so SQL stores can keep
    /// them as `bigint`).
    #[must_use]
    pub const fn end_of_tx(tx: u64) -> Self {
        Self {
            tx,
            position: i64::MAX as u64,
        }
    }
}

impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx, self.position)
    }
}
