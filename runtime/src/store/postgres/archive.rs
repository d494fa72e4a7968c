//! The cold tier on PostgreSQL (see [`crate::archive`]): archiving events into Parquet files,
//! restoring them, and the reads of archived events that loads, stream reads and the feed
//! merge with the hot ones.
//!
//! Every build finds archived events through the `archives` and `archived_ranges` tables
//! (migration 22); reading the files needs the `archive` feature, and a build without it that
//! meets archived events refuses the read ([`Error::Unsupported`]) rather than skip them.

use sqlx::AssertSqlSafe;

use super::PostgresStore;
#[cfg(not(feature = "archive"))]
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::store::backend::to_i64;
#[cfg(not(feature = "archive"))]
use crate::store::{FeedPosition, ReadEnvelope};

#[cfg(feature = "archive")]
mod files;

#[cfg(feature = "archive")]
pub(super) use self::files::ColdCache;

/// What a build without the `archive` feature says when it meets archived events.
#[cfg(not(feature = "archive"))]
const NO_ARCHIVE_FEATURE: &str =
    "reading archived events (this store has a cold tier: build factum with its `archive` feature)";

/// The archives a feed read found after its position, in the read's own snapshot (its
/// statement's horizon row: see [`ColdArchives::column`]), so that an archiving or a restore
/// committing meanwhile can neither repeat nor drop events.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[cfg_attr(
    not(feature = "archive"),
    allow(dead_code, reason = "a build without the feature refuses to read them")
)]
pub(super) struct ColdArchives {
    /// Whether row-level security binds the session (else it sees every tenant's rows).
    rls: bool,
    /// (archive, file, its first event's transaction and position, its last event's), in feed
    /// order of their first event.
    archives: Vec<(i64, String, i64, i64, i64, i64)>,
}

impl ColdArchives {
    /// The column of the feed statement's horizon row: `NULL` when no archive holds events
    /// after the position (`$1`, `$2`), else a [`ColdArchives`] as JSON.
    pub(super) fn column(schema: &crate::store::sql::Schema) -> String {
        let s = schema.quoted();
        format!(
            "(SELECT json_build_object(
                 'rls', row_security_active('{s}.events'),
                 'archives', json_agg(json_build_array(a.id, a.file, a.first_tx::text::bigint,
                                                       a.first_position, a.last_tx::text::bigint,
                                                       a.last_position)
                                      ORDER BY a.first_tx, a.first_position))::text
              FROM {s}.archives a
              WHERE (a.last_tx, a.last_position) > ($1::text::xid8, $2)
              HAVING count(*) > 0)"
        )
    }

    /// Reads the column.
    pub(super) fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|error| Error::Corrupt {
            reason: format!("the feed's list of archives does not read: {error}"),
        })
    }
}

/// A feed read's archived events guessed before its statement runs, from the archives the
/// store's last read listed (they change only when an archiving or a restore commits): with a
/// full batch of them, the table is read only up to the batch's last, rather than `limit` rows
/// of which the merge keeps few. The statement's own list of archives confirms the guess, or
/// the read runs again without one.
#[derive(Debug)]
pub(super) struct ColdGuess {
    /// The archives holding events after the read's position, as the guess took them.
    archives: ColdArchives,
    /// The batch's archived events, in feed order.
    pub events: Vec<crate::store::ReadEnvelope>,
    /// The last of them: the table is read up to it.
    pub through: crate::store::FeedPosition,
}

impl ColdGuess {
    /// Whether the statement found the archives the guess took (`cold`: its horizon row's).
    pub(super) fn holds(&self, cold: Option<&ColdArchives>) -> bool {
        cold == Some(&self.archives)
    }
}

/// Reads of a stream that meet archived versions try again this often when the cold tier
/// moved under them (an archiving or a restore committing between the table's read and the
/// archives').
pub(super) const STREAM_READ_ATTEMPTS: usize = 3;

/// The versions a stream read needs from the cold tier: those of `from..=through` missing
/// from `hot` (the table's versions, ascending), from the first missing one up to the last
/// hot one (every version when the table returned none). `None` when nothing is missing.
pub(super) fn missing_span(from: u64, through: u64, hot: &[u64]) -> Option<(u64, u64)> {
    let from = from.max(1);
    if from > through {
        return None;
    }
    let Some(&last) = hot.last() else {
        return Some((from, through));
    };
    (from..)
        .zip(hot)
        .find(|(expected, version)| *version != expected)
        .map(|(expected, _)| (expected, last.saturating_sub(1).min(through)))
}

/// Whether `versions` (ascending) run without a gap from `from` (when any is there).
pub(super) fn contiguous(from: u64, versions: impl IntoIterator<Item = u64>) -> bool {
    (from.max(1)..)
        .zip(versions)
        .all(|(expected, version)| version == expected)
}

/// The error of a stream read whose archived versions moved under it on every attempt.
pub(super) fn moved(stream_id: &str) -> Error {
    Error::Corrupt {
        reason: format!(
            "stream {stream_id}'s versions are in neither the event table nor its archives (an archiving or restore ran during each read): retry"
        ),
    }
}

impl PostgresStore {
    /// Every archive: (archive, file), oldest first.
    async fn archive_files(&self) -> Result<Vec<(i64, String)>> {
        let s = self.inner.schema.quoted();
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT a.id, a.file FROM {s}.archives a ORDER BY a.id"
        )))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))
    }

    /// A stream's archived ranges overlapping versions `from..=through`: (archive, file).
    async fn ranges_of(
        &self,
        stream_id: &str,
        from: u64,
        through: u64,
    ) -> Result<Vec<(i64, String)>> {
        let s = self.inner.schema.quoted();
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT DISTINCT a.id, a.file FROM {s}.archived_ranges r
             JOIN {s}.archives a ON a.id = r.archive_id
             WHERE r.stream_id = $1 AND r.through_version >= $2 AND r.from_version <= $3
             ORDER BY a.id"
        )))
        .bind(stream_id)
        .bind(to_i64(from))
        .bind(to_i64(through))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))
    }
}

#[cfg(not(feature = "archive"))]
impl PostgresStore {
    /// No guess of archived events: this build reads none.
    #[expect(
        clippy::unused_async,
        reason = "the same signature as with the feature"
    )]
    pub(super) async fn guess_cold(&self, _query: &crate::store::FeedQuery) -> Option<ColdGuess> {
        None
    }

    /// Nothing to remember: this build reads no archived events.
    pub(super) fn remember_cold(&self, _cold: Option<&ColdArchives>) {}

    /// Archived events after `after` (none can be read in this build).
    pub(super) async fn cold_feed(
        &self,
        _cold: &ColdArchives,
        _after: FeedPosition,
        _limit: usize,
        _event_types: Option<&[String]>,
    ) -> Result<Vec<ReadEnvelope>> {
        Err(Error::Unsupported(NO_ARCHIVE_FEATURE))
    }

    /// Archived events among `ids` (none can be read in this build).
    pub(super) async fn cold_by_id(&self, _ids: &[uuid::Uuid]) -> Result<Vec<RecordedEvent>> {
        if self.archive_files().await?.is_empty() {
            return Ok(Vec::new());
        }
        Err(Error::Unsupported(NO_ARCHIVE_FEATURE))
    }

    /// A stream's archived events `from..=through` (none can be read in this build).
    pub(super) async fn cold_stream(
        &self,
        stream_id: &str,
        from: u64,
        through: u64,
    ) -> Result<Vec<ReadEnvelope>> {
        if self.ranges_of(stream_id, from, through).await?.is_empty() {
            return Ok(Vec::new());
        }
        Err(Error::Unsupported(NO_ARCHIVE_FEATURE))
    }
}
