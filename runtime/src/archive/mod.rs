//! Archiving to a cold tier: old events moved out of the hot event table into Parquet files
//! (zstd), which every read path of the store reads back transparently (seed 003: "move old
//! events to compressed Parquet files; rebuild projections from the cold tier on demand").
//!
//! [`PostgresStore::archive`](crate::store::PostgresStore::archive) moves the events recorded
//! before a cut-off into files of at most [`ArchiveOptions::events_per_file`] events, in feed
//! order, each written, flushed to disk and read back whole before the rows leave the table;
//! the table records each file (`archives`) and each stream's archived versions
//! (`archived_ranges`), in the transaction that deletes the rows. Each stream keeps its newest
//! event in the table: it is the stream's head, which appends check as they always do, so an
//! archived stream takes new events without reading the cold tier.
//!
//! Loading an aggregate, reading a stream and reading the feed (a projection rebuilt from the
//! beginning) read the archived events from the files, in order, merged with the hot ones.
//! [`PostgresStore::restore`](crate::store::PostgresStore::restore) puts an archive's events
//! back with their original positions.
//!
//! The files are plain Parquet: one row per event with the stored columns ([`COLUMNS`]),
//! readable by DuckDB, Spark, pandas... Personal data stays sealed in them as stored, so
//! forgetting a subject makes its archived copies unreadable too.

mod parquet;

use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub(crate) use self::parquet::{read_file, write_file};

/// The columns of an archive file, in order.
pub const COLUMNS: [&str; 15] = [
    "stream_id",
    "stream_version",
    "position",
    "tx",
    "aggregate_type",
    "event_id",
    "event_type",
    "schema_version",
    "payload",
    "metadata",
    "correlation_id",
    "causation_id",
    "actor",
    "recorded_at",
    "tenant",
];

/// An event as stored, column for column: what an archive file holds per row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredRow {
    pub stream_id: String,
    pub stream_version: i64,
    pub position: i64,
    pub tx: i64,
    pub aggregate_type: String,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: i32,
    /// The payload's JSON text as stored (personal data sealed).
    pub payload: String,
    pub metadata: String,
    pub correlation_id: uuid::Uuid,
    pub causation_id: uuid::Uuid,
    pub actor: Option<String>,
    pub recorded_at: DateTime<Utc>,
    /// `''` for an event of no tenant.
    pub tenant: String,
}

impl StoredRow {
    /// Its place in the feed.
    pub(crate) fn feed_key(&self) -> (i64, i64) {
        (self.tx, self.position)
    }
}

/// What to archive, and where.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ArchiveOptions {
    /// The directory the files go to. Every process that reads archived events (loads, feed
    /// reads from before the archived events) needs it at the same path: a shared volume.
    pub dir: PathBuf,
    /// Events recorded before this time are archived, except each stream's newest (its head).
    pub before: DateTime<Utc>,
    /// Events per file (and per transaction): 100,000 by default. A reader holds one file's
    /// events in memory while it reads them.
    pub events_per_file: usize,
}

impl ArchiveOptions {
    /// Archive the events recorded before `before` into files in `dir`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, before: DateTime<Utc>) -> Self {
        Self {
            dir: dir.into(),
            before,
            events_per_file: 100_000,
        }
    }

    /// At most `events` events per file (at least 1).
    #[must_use]
    pub fn events_per_file(mut self, events: usize) -> Self {
        self.events_per_file = events.max(1);
        self
    }
}

/// One archive file, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveFile {
    /// The archive's id in the store.
    pub id: i64,
    /// The Parquet file.
    pub file: PathBuf,
    /// Its events.
    pub events: u64,
    /// Its size.
    pub bytes: u64,
    /// The cut-off it was archived with.
    pub before: DateTime<Utc>,
    /// When it was written.
    pub archived_at: DateTime<Utc>,
}

/// What an archiving run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveReport {
    /// The files written, each recorded in the store and its events removed from the table.
    pub files: Vec<ArchiveFile>,
    /// Events archived in all.
    pub events: u64,
    /// Streams that had events archived.
    pub streams: u64,
}

/// A cold-tier failure: nothing was lost (an archive's rows leave the table only after its
/// file was written and read back; a restore removes a file only after its rows are back).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// An archive file could not be written: nothing was archived from it.
    #[error(
        "could not write the archive file {file}: {source}; nothing was archived from it: check the directory's space and permissions"
    )]
    Write {
        /// The file.
        file: PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An archive file the store records could not be read: the archived events it holds
    /// cannot be delivered, and the read stops rather than skip them.
    #[error(
        "could not read the archive file {file} (archive {archive}): {reason}; put the file back at this path (from a backup, or mount its volume) and retry"
    )]
    Read {
        /// The archive's id.
        archive: i64,
        /// The file.
        file: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A file written did not read back as written: it was removed and nothing was archived.
    #[error(
        "the archive file {file} did not read back as written ({reason}); it was removed and nothing was archived: check the disk"
    )]
    Verify {
        /// The file.
        file: PathBuf,
        /// What differed.
        reason: String,
    },
    /// The events to archive changed while they were written (an event deleted or added by
    /// hand): nothing was archived.
    #[error(
        "archive {archive} would have removed {removed} events from the table but its file holds {written}; nothing was archived: retry"
    )]
    Mismatch {
        /// The archive's id (rolled back).
        archive: i64,
        /// Rows the deletion matched.
        removed: u64,
        /// Events in the file.
        written: u64,
    },
}
