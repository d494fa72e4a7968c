//! The cold tier's files on PostgreSQL (feature `archive`): archiving, restoring, and reading
//! archived events from the files (see the parent module).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row as _};

use super::{ColdArchives, ColdGuess};
use crate::archive::{self, ArchiveError, ArchiveFile, ArchiveOptions, ArchiveReport, StoredRow};
use crate::envelope::{Origin, RecordedEvent};
use crate::error::{Error, Result};
use crate::event::Payload;
use crate::store::backend::{columns, stored_u32, stored_u64, to_i64};
use crate::store::postgres::rows::read_metadata;
use crate::store::postgres::{PostgresStore, identity};
use crate::store::{FeedPosition, FeedQuery, ReadEnvelope, Tenancy};

/// Archive files read lately, decoded: a rebuild reads a file's events batch after batch. And
/// the archives the last feed read listed, from which the next read guesses its archived
/// events ([`ColdGuess`]).
#[derive(Debug, Default)]
pub(in crate::store::postgres) struct ColdCache {
    files: std::sync::Mutex<VecDeque<(i64, Arc<Vec<StoredRow>>)>>,
    listed: std::sync::Mutex<Option<Arc<ColdArchives>>>,
}

/// Files kept decoded.
const CACHED_FILES: usize = 2;

/// Rows put back per statement by a restore.
const RESTORE_CHUNK: usize = 10_000;

/// The archived events' columns, as [`StoredRow`] holds them.
const STORED_COLUMNS: &str = "e.stream_id, e.stream_version, e.position, e.tx::text::bigint, \
    e.aggregate_type, e.event_id, e.event_type, e.schema_version, e.payload::text, \
    e.metadata::text, e.correlation_id, e.causation_id, e.actor, e.recorded_at, e.tenant";

impl PostgresStore {
    /// Moves the events recorded before `options.before` out of the event table into Parquet
    /// files in `options.dir` (see [`crate::archive`]), except each stream's newest event (its
    /// head), in feed order, one file and one transaction per `options.events_per_file`
    /// events: each file is written, flushed to disk and read back before the transaction
    /// records it and removes its rows. Loads, stream reads and the feed read archived events
    /// from the files from then on; [`PostgresStore::restore`] puts them back.
    ///
    /// Run it as the schema's owner (the application role may not remove rows); one archiving
    /// or restore runs at a time per schema. Events of every tenant are archived.
    ///
    /// # Errors
    /// [`Error::Archive`] when a file cannot be written or does not read back (nothing of it
    /// is archived), or a database error (the file of a transaction that did not commit is
    /// removed; files of earlier transactions stay archived).
    pub async fn archive(&self, options: &ArchiveOptions) -> Result<ArchiveReport> {
        let dir = std::fs::canonicalize(&options.dir).map_err(|error| {
            Error::InvalidConfig(format!(
                "the archive directory {} cannot be used ({error}): create it first",
                options.dir.display()
            ))
        })?;
        let mut report = ArchiveReport::default();
        loop {
            let Some((file, streams)) = self.archive_one(&dir, options).await? else {
                break;
            };
            report.events += file.events;
            report.streams += streams;
            report.files.push(file);
        }
        Ok(report)
    }

    /// Archives the next file's events, if there are any: the file and its streams.
    async fn archive_one(
        &self,
        dir: &Path,
        options: &ArchiveOptions,
    ) -> Result<Option<(ArchiveFile, u64)>> {
        let s = self.inner.schema.quoted();
        let fail = |e| self.fail(e);
        let mut transaction = self.inner.pool.begin().await.map_err(fail)?;
        self.archiving_session(&mut transaction).await?;
        let xmin = identity::stored_xid(
            &self.inner.schema,
            "pg_snapshot_xmin(pg_current_snapshot())",
        );
        // A stream's oldest events still in the table after its first, recorded before the
        // cut-off, up to (not including) its newest: no older event of the stream stays
        // behind, so each stream's archived versions are one range. Its first and newest
        // events stay: the primary key keeps refusing a second version 1 (from another
        // tenant too, whose session sees neither this stream's rows nor its ranges), appends
        // check the head. Streams with personal data stay whole: forgetting a subject finds
        // what to erase beside the key (snapshots, saga copies) through the table.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "WITH personal AS MATERIALIZED (
                 SELECT DISTINCT p.stream_id FROM {s}.events p
                 WHERE p.sealed IS NOT NULL OR p.payload::text LIKE '{{\"$pii\":%'
             )
             SELECT {STORED_COLUMNS} FROM {s}.events e
             WHERE e.recorded_at < $1
               AND e.stream_version > 1
               AND e.stream_id NOT IN (SELECT stream_id FROM personal)
               AND e.tx < {xmin}
               AND e.stream_version < (SELECT max(n.stream_version) FROM {s}.events n
                                       WHERE n.stream_id = e.stream_id)
               AND NOT EXISTS (SELECT 1 FROM {s}.events o
                               WHERE o.stream_id = e.stream_id
                                 AND o.stream_version < e.stream_version
                                 AND o.recorded_at >= $1)
             ORDER BY e.tx, e.position
             LIMIT $2"
        )))
        .bind(options.before)
        .bind(to_i64(options.events_per_file as u64))
        .fetch_all(&mut *transaction)
        .await
        .map_err(fail)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let rows = rows.iter().map(stored_row).collect::<Result<Vec<_>>>()?;
        let ranges = stream_ranges(&rows)?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(None);
        };
        let archived_at = Utc::now();
        let path = dir.join(format!(
            "{}-{}.{}-{}.{}-{}.parquet",
            self.schema(),
            first.tx,
            first.position,
            last.tx,
            last.position,
            archived_at.format("%Y%m%dT%H%M%S%6f"),
        ));
        let bytes = write_and_verify(path.clone(), rows.clone()).await?;
        let recorded = self
            .record_archive(
                &mut transaction,
                &path,
                &rows,
                &ranges,
                bytes,
                options.before,
            )
            .await;
        let id = match recorded {
            Ok(id) => id,
            Err(error) => {
                // The transaction is rolled back: nothing refers to the file.
                drop(transaction);
                let _ = std::fs::remove_file(&path);
                return Err(error);
            }
        };
        // Should the commit's outcome be lost, the file stays: it may hold the only copy.
        transaction.commit().await.map_err(fail)?;
        tracing::info!(
            schema = self.schema(),
            archive = id,
            events = rows.len(),
            streams = ranges.len(),
            file = %path.display(),
            "events archived"
        );
        let file = ArchiveFile {
            id,
            file: path,
            events: rows.len() as u64,
            bytes,
            before: options.before,
            archived_at,
        };
        Ok(Some((file, ranges.len() as u64)))
    }

    /// Records an archive and its ranges, and removes its rows from the table: its id.
    async fn record_archive(
        &self,
        transaction: &mut sqlx::PgTransaction<'_>,
        path: &Path,
        rows: &[StoredRow],
        ranges: &BTreeMap<&str, (i64, i64, &str)>,
        bytes: u64,
        before: DateTime<Utc>,
    ) -> Result<i64> {
        let s = self.inner.schema.quoted();
        let fail = |e| self.fail(e);
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Err(Error::Corrupt {
                reason: "an archive without events".to_owned(),
            });
        };
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {s}.archives
                 (file, events, bytes, first_tx, first_position, last_tx, last_position, before)
             VALUES ($1, $2, $3, $4::text::xid8, $5, $6::text::xid8, $7, $8)
             RETURNING id"
        )))
        .bind(path.to_string_lossy().as_ref())
        .bind(to_i64(rows.len() as u64))
        .bind(to_i64(bytes))
        .bind(first.tx)
        .bind(first.position)
        .bind(last.tx)
        .bind(last.position)
        .bind(before)
        .fetch_one(&mut **transaction)
        .await
        .map_err(fail)?;
        // Appends wait from here to the commit: an insert after a head it saw before the
        // archive would otherwise pass the archived-range check on its older snapshot and then
        // find its version's row gone. (Appends take the lock first, then their snapshot.)
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLE {s}.events IN SHARE ROW EXCLUSIVE MODE"
        )))
        .execute(&mut **transaction)
        .await
        .map_err(fail)?;
        let streams: Vec<&str> = ranges.keys().copied().collect();
        let from: Vec<i64> = ranges.values().map(|range| range.0).collect();
        let through: Vec<i64> = ranges.values().map(|range| range.1).collect();
        let tenants: Vec<&str> = ranges.values().map(|range| range.2).collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.archived_ranges (stream_id, from_version, through_version, archive_id, tenant)
             SELECT r.stream_id, r.from_version, r.through_version, $4, r.tenant
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $5::text[])
                  AS r(stream_id, from_version, through_version, tenant)"
        )))
        .bind(&streams)
        .bind(&from)
        .bind(&through)
        .bind(id)
        .bind(&tenants)
        .execute(&mut **transaction)
        .await
        .map_err(fail)?;
        // The append-only trigger lets this transaction remove its archive's rows, no others.
        sqlx::query("SELECT set_config('factum.archive', $1, true)")
            .bind(id.to_string())
            .execute(&mut **transaction)
            .await
            .map_err(fail)?;
        let removed = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {s}.events e USING {s}.archived_ranges r
             WHERE r.archive_id = $1 AND e.stream_id = r.stream_id
               AND e.stream_version BETWEEN r.from_version AND r.through_version"
        )))
        .bind(id)
        .execute(&mut **transaction)
        .await
        .map_err(fail)?
        .rows_affected();
        if removed != rows.len() as u64 {
            return Err(ArchiveError::Mismatch {
                archive: id,
                removed,
                written: rows.len() as u64,
            }
            .into());
        }
        Ok(id)
    }

    /// Makes an archiving or restoring transaction the only one of its schema, seeing every
    /// tenant's rows.
    async fn archiving_session(&self, transaction: &mut sqlx::PgTransaction<'_>) -> Result<()> {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext('factum.archive.' || $1)),
                    set_config('factum.all_tenants', 'on', true)",
        )
        .bind(self.schema())
        .execute(&mut **transaction)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The store's archive files, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn archives(&self) -> Result<Vec<ArchiveFile>> {
        let s = self.inner.schema.quoted();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, file, events, bytes, before, archived_at FROM {s}.archives ORDER BY id"
        )))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| {
                Ok(ArchiveFile {
                    id: columns::get(row, 0)?,
                    file: PathBuf::from(columns::get::<_, String>(row, 1)?),
                    events: columns::unsigned::<_, i64, _>(row, 2)?,
                    bytes: columns::unsigned::<_, i64, _>(row, 3)?,
                    before: columns::get(row, 4)?,
                    archived_at: columns::get(row, 5)?,
                })
            })
            .collect()
    }

    /// Puts an archive's events back into the event table with their original positions (a
    /// reader past them does not see them again; one before them reads them in their place),
    /// forgets the archive, and then removes its file. Returns the events restored.
    ///
    /// Run it as the schema's owner, or a role that row-level security does not bind when the
    /// archive holds several tenants' events.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown archive, [`Error::Archive`] when its file does
    /// not read, or a database error (nothing is restored then).
    pub async fn restore(&self, archive: i64) -> Result<u64> {
        let s = self.inner.schema.quoted();
        let fail = |e| self.fail(e);
        let mut transaction = self.inner.pool.begin().await.map_err(fail)?;
        self.archiving_session(&mut transaction).await?;
        let file: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT file FROM {s}.archives WHERE id = $1"
        )))
        .bind(archive)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(fail)?;
        let Some(file) = file else {
            return Err(Error::InvalidConfig(format!(
                "schema {} has no archive {archive}: `factum archive list` shows its archives",
                self.schema()
            )));
        };
        let path = PathBuf::from(file);
        let rows = read_cold(archive, path.clone()).await?;
        let (recorded, ranges): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT a.events, (SELECT coalesce(sum(r.through_version - r.from_version + 1), 0)::bigint
                               FROM {s}.archived_ranges r WHERE r.archive_id = a.id)
             FROM {s}.archives a WHERE a.id = $1"
        )))
        .bind(archive)
        .fetch_one(&mut *transaction)
        .await
        .map_err(fail)?;
        if recorded != to_i64(rows.len() as u64) || ranges != recorded {
            return Err(ArchiveError::Read {
                archive,
                file: path,
                reason: format!(
                    "it holds {} events where the store recorded {recorded} ({ranges} in its ranges): nothing was restored",
                    rows.len()
                ),
            }
            .into());
        }
        let mut by_tenant: BTreeMap<&str, Vec<&StoredRow>> = BTreeMap::new();
        for row in rows.iter() {
            by_tenant.entry(&row.tenant).or_default().push(row);
        }
        for (tenant, rows) in by_tenant {
            // Row-level security checks each row's tenant against the session's.
            sqlx::query("SELECT set_config('factum.tenant', $1, true)")
                .bind(tenant)
                .execute(&mut *transaction)
                .await
                .map_err(fail)?;
            for chunk in rows.chunks(RESTORE_CHUNK) {
                self.insert_stored(&mut transaction, chunk).await?;
            }
        }
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {s}.archived_ranges WHERE archive_id = $1;"
        )))
        .bind(archive)
        .execute(&mut *transaction)
        .await
        .map_err(fail)?;
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {s}.archives WHERE id = $1"
        )))
        .bind(archive)
        .execute(&mut *transaction)
        .await
        .map_err(fail)?;
        transaction.commit().await.map_err(fail)?;
        self.forget_cold(archive);
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), %error, "restored, but the archive file stays");
        }
        self.notify_subscribers();
        tracing::info!(
            schema = self.schema(),
            archive,
            events = rows.len(),
            "archive restored"
        );
        Ok(rows.len() as u64)
    }

    /// Inserts stored rows as they were (positions, transaction ids).
    async fn insert_stored(
        &self,
        transaction: &mut sqlx::PgTransaction<'_>,
        rows: &[&StoredRow],
    ) -> Result<()> {
        let s = self.inner.schema.quoted();
        let column = |f: fn(&StoredRow) -> &str| rows.iter().map(|row| f(row)).collect::<Vec<_>>();
        let number = |f: fn(&StoredRow) -> i64| rows.iter().map(|row| f(row)).collect::<Vec<_>>();
        let ids =
            |f: fn(&StoredRow) -> uuid::Uuid| rows.iter().map(|row| f(row)).collect::<Vec<_>>();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.events (stream_id, stream_version, position, tx, aggregate_type,
                 event_id, event_type, schema_version, payload, metadata, correlation_id,
                 causation_id, actor, recorded_at, tenant)
             OVERRIDING SYSTEM VALUE
             SELECT u.stream_id, u.stream_version, u.position, u.tx::text::xid8, u.aggregate_type,
                    u.event_id, u.event_type, u.schema_version, u.payload::json, u.metadata::json,
                    u.correlation_id, u.causation_id, u.actor, u.recorded_at, u.tenant
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                         $6::uuid[], $7::text[], $8::int[], $9::text[], $10::text[], $11::uuid[],
                         $12::uuid[], $13::text[], $14::timestamptz[], $15::text[])
                  AS u(stream_id, stream_version, position, tx, aggregate_type, event_id,
                       event_type, schema_version, payload, metadata, correlation_id,
                       causation_id, actor, recorded_at, tenant)"
        )))
        .bind(column(|row| &row.stream_id))
        .bind(number(|row| row.stream_version))
        .bind(number(|row| row.position))
        .bind(number(|row| row.tx))
        .bind(column(|row| &row.aggregate_type))
        .bind(ids(|row| row.event_id))
        .bind(column(|row| &row.event_type))
        .bind(
            rows.iter()
                .map(|row| row.schema_version)
                .collect::<Vec<_>>(),
        )
        .bind(column(|row| &row.payload))
        .bind(column(|row| &row.metadata))
        .bind(ids(|row| row.correlation_id))
        .bind(ids(|row| row.causation_id))
        .bind(
            rows.iter()
                .map(|row| row.actor.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|row| row.recorded_at).collect::<Vec<_>>())
        .bind(column(|row| &row.tenant))
        .execute(&mut **transaction)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Whether the store still records `archive` (a restore forgets it).
    pub(in crate::store::postgres) async fn archive_exists(&self, archive: i64) -> Result<bool> {
        let s = self.inner.schema.quoted();
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {s}.archives WHERE id = $1)"
        )))
        .bind(archive)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))
    }

    /// An archive file's events, decoded (from the cache when read lately).
    async fn cold_rows(&self, archive: i64, file: &str) -> Result<Arc<Vec<StoredRow>>> {
        let cache = &self.inner.cold.files;
        if let Some((_, rows)) = lock(cache).iter().find(|(id, _)| *id == archive) {
            return Ok(Arc::clone(rows));
        }
        let rows = read_cold(archive, PathBuf::from(file)).await?;
        let mut files = lock(cache);
        files.retain(|(id, _)| *id != archive);
        if files.len() >= CACHED_FILES {
            files.pop_front();
        }
        files.push_back((archive, Arc::clone(&rows)));
        Ok(rows)
    }

    /// Drops a restored archive's decoded events.
    fn forget_cold(&self, archive: i64) {
        lock(&self.inner.cold.files).retain(|(id, _)| *id != archive);
    }

    /// The first `limit` archived events after `after` in feed order (of `event_types` when
    /// given), that this store's tenancy may read.
    pub(in crate::store::postgres) async fn cold_feed(
        &self,
        cold: &ColdArchives,
        after: FeedPosition,
        limit: usize,
        event_types: Option<&[String]>,
    ) -> Result<Vec<ReadEnvelope>> {
        let after_key = (to_i64(after.tx), to_i64(after.position));
        let mut events: Vec<ReadEnvelope> = Vec::new();
        for (archive, file, first_tx, first_position, _, _) in &cold.archives {
            let (archive, first_tx, first_position) = (*archive, *first_tx, *first_position);
            // The archives come in the order of their first events: once `limit` events come
            // before this one's first, neither it nor any later one has a place in the batch.
            if events.len() >= limit {
                events.sort_by_key(|(event, _)| event.feed_position());
                events.truncate(limit);
                let full = events
                    .last()
                    .map(|(event, _)| (to_i64(event.tx), to_i64(event.global_position)));
                if full.is_some_and(|last| last < (first_tx, first_position)) {
                    break;
                }
            }
            let rows = self.cold_rows(archive, file).await?;
            let start = rows.partition_point(|row| row.feed_key() <= after_key);
            let readable = rows[start..]
                .iter()
                .filter(|row| !cold.rls || self.may_read(row))
                .filter(|row| event_types.is_none_or(|types| types.contains(&row.event_type)))
                .take(limit);
            for row in readable {
                events.push(stored_envelope(row)?);
            }
        }
        events.sort_by_key(|(event, _)| event.feed_position());
        events.truncate(limit);
        Ok(events)
    }

    /// A full batch of the archived events after `query`'s position, guessed from the
    /// archives the last feed read listed (see [`ColdGuess`]); `None` without a list, or with
    /// fewer archived events left than the batch takes (the table's read is then not bounded),
    /// or when the files do not read (the read itself then reports why).
    pub(in crate::store::postgres) async fn guess_cold(
        &self,
        query: &FeedQuery,
    ) -> Option<ColdGuess> {
        let listed = lock(&self.inner.cold.listed).clone()?;
        let after = (to_i64(query.after.tx), to_i64(query.after.position));
        let archives = ColdArchives {
            rls: listed.rls,
            archives: listed
                .archives
                .iter()
                .filter(|(_, _, _, _, last_tx, last_position)| (*last_tx, *last_position) > after)
                .cloned()
                .collect(),
        };
        if archives.archives.is_empty() {
            return None;
        }
        let events = match self
            .cold_feed(
                &archives,
                query.after,
                query.limit,
                query.event_types.as_deref(),
            )
            .await
        {
            Ok(events) => events,
            Err(error) => {
                tracing::debug!(%error, "no guess of the feed's archived events");
                return None;
            }
        };
        let through = events
            .last()
            .filter(|_| events.len() >= query.limit)?
            .0
            .feed_position();
        Some(ColdGuess {
            archives,
            events,
            through,
        })
    }

    /// Keeps the archives a feed read listed (its statement's), for the next read's guess.
    pub(in crate::store::postgres) fn remember_cold(&self, cold: Option<&ColdArchives>) {
        let mut listed = lock(&self.inner.cold.listed);
        if listed.as_deref() != cold {
            *listed = cold.cloned().map(Arc::new);
        }
    }

    /// Archived events among `ids` that this store's sessions may read: a read by id (a
    /// relay's retry of a parked stream, a projection's pending side effects) that did not find
    /// them all in the table looks through every archive.
    pub(in crate::store::postgres) async fn cold_by_id(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<RecordedEvent>> {
        let archives = self.archive_files().await?;
        if archives.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.inner.schema.quoted();
        let rls: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT row_security_active('{s}.events')"
        )))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))?;
        let wanted: std::collections::HashSet<&uuid::Uuid> = ids.iter().collect();
        let mut events = Vec::new();
        for (archive, file) in archives {
            let rows = self.cold_rows(archive, &file).await?;
            for row in rows
                .iter()
                .filter(|row| wanted.contains(&row.event_id) && (!rls || self.may_read(row)))
            {
                events.push(crate::store::strict_envelope(stored_envelope(row)?)?);
            }
        }
        Ok(events)
    }

    /// A stream's archived events `from..=through`, in version order.
    pub(in crate::store::postgres) async fn cold_stream(
        &self,
        stream_id: &str,
        from: u64,
        through: u64,
    ) -> Result<Vec<ReadEnvelope>> {
        let versions = to_i64(from)..=to_i64(through);
        let mut events = Vec::new();
        for (archive, file) in self.ranges_of(stream_id, from, through).await? {
            let rows = self.cold_rows(archive, &file).await?;
            for row in rows
                .iter()
                .filter(|row| row.stream_id == stream_id && versions.contains(&row.stream_version))
            {
                events.push(stored_envelope(row)?);
            }
        }
        events.sort_by_key(|(event, _)| event.stream_version);
        Ok(events)
    }

    /// Whether this store's sessions would see the row under row-level security (the cold
    /// tier is outside it: Factum filters as the policy would).
    fn may_read(&self, row: &StoredRow) -> bool {
        match &self.inner.tenancy {
            Tenancy::None => row.tenant.is_empty(),
            Tenancy::Tenant(tenant) => row.tenant == *tenant,
            Tenancy::All => true,
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the cache inconsistent: each change is one call.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a file and reads it back whole: its size.
async fn write_and_verify(path: PathBuf, rows: Vec<StoredRow>) -> Result<u64> {
    let written = tokio::task::spawn_blocking(move || {
        let bytes = archive::write_file(&path, &rows)?;
        let verified = archive::read_file(0, &path).map_err(|error| ArchiveError::Verify {
            file: path.clone(),
            reason: error.to_string(),
        });
        let reason = match verified {
            Ok(read) if read == rows => return Ok(bytes),
            Ok(read) => format!(
                "{} events read, {} written, or their columns differ",
                read.len(),
                rows.len()
            ),
            Err(error) => error.to_string(),
        };
        let _ = std::fs::remove_file(&path);
        Err(ArchiveError::Verify { file: path, reason })
    })
    .await
    .map_err(|error| Error::Backend(Box::new(error)))?;
    Ok(written?)
}

/// Reads an archive file off the runtime's threads.
async fn read_cold(archive: i64, path: PathBuf) -> Result<Arc<Vec<StoredRow>>> {
    let rows = tokio::task::spawn_blocking(move || archive::read_file(archive, &path))
        .await
        .map_err(|error| Error::Backend(Box::new(error)))??;
    Ok(Arc::new(rows))
}

/// Each stream's versions among `rows` (one range per stream) and its tenant.
fn stream_ranges(rows: &[StoredRow]) -> Result<BTreeMap<&str, (i64, i64, &str)>> {
    let mut ranges: BTreeMap<&str, (i64, i64, &str)> = BTreeMap::new();
    for row in rows {
        let range = ranges.entry(&row.stream_id).or_insert((
            row.stream_version,
            row.stream_version - 1,
            &row.tenant,
        ));
        if row.stream_version != range.1 + 1 {
            return Err(Error::Corrupt {
                reason: format!(
                    "stream {} has version {} after {} in feed order",
                    row.stream_id, row.stream_version, range.1
                ),
            });
        }
        range.1 = row.stream_version;
    }
    Ok(ranges)
}

/// A row read for archiving ([`STORED_COLUMNS`]).
fn stored_row(row: &sqlx::postgres::PgRow) -> Result<StoredRow> {
    Ok(StoredRow {
        stream_id: columns::get(row, 0)?,
        stream_version: columns::get(row, 1)?,
        position: columns::get(row, 2)?,
        tx: columns::get(row, 3)?,
        aggregate_type: columns::get(row, 4)?,
        event_id: columns::get(row, 5)?,
        event_type: columns::get(row, 6)?,
        schema_version: columns::get(row, 7)?,
        payload: columns::get(row, 8)?,
        metadata: columns::get(row, 9)?,
        correlation_id: columns::get(row, 10)?,
        causation_id: columns::get(row, 11)?,
        actor: columns::get(row, 12)?,
        recorded_at: row.try_get(13).map_err(|e| columns::error(row, 13, e))?,
        tenant: columns::get(row, 14)?,
    })
}

/// An archived event as the hot table's reads return it: its metadata's defect, if any, for
/// the runners to park.
fn stored_envelope(row: &StoredRow) -> Result<ReadEnvelope> {
    let origin = Origin {
        event_id: row.event_id,
        event_type: &row.event_type,
        schema_version: stored_u32(i64::from(row.schema_version), "a schema version")?,
        stream_id: &row.stream_id,
        aggregate_type: &row.aggregate_type,
        stream_version: stored_u64(row.stream_version, "a stream version")?,
        global_position: stored_u64(row.position, "a position")?,
        tx: stored_u64(row.tx, "a transaction id")?,
        recorded_at: row.recorded_at,
    };
    let mut event: RecordedEvent =
        origin.into_envelope(Payload::from_stored_json(row.payload.clone()));
    event.correlation_id = row.correlation_id;
    event.causation_id = row.causation_id;
    event.actor = row.actor.clone();
    event.tenant = (!row.tenant.is_empty()).then(|| row.tenant.clone());
    let defect = read_metadata(&mut event, &row.metadata);
    Ok((event, defect))
}

#[cfg(test)]
mod tests {
    use crate::archive::ArchiveOptions;
    use crate::store::postgres::scratch;
    use crate::store::sql::Backend as _;
    use crate::{EventStore as _, ExpectedVersion, NewEvent, Payload};

    /// A read by id (a relay's retry of a parked stream, a projection's pending side effects)
    /// finds archived events too, in feed order, their personal data opened as hot ones'.
    #[tokio::test]
    async fn a_read_by_id_finds_archived_events() {
        let store = scratch::store("by_id").await;
        let events = (0..5)
            .map(|n| NewEvent::new("Pinged", 1, Payload::encode(&n).unwrap()))
            .collect();
        let written = store
            .append("s-1", "Pinger", ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let dir = std::env::temp_dir().join(format!("factum-by-id-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = store
            .archive(&ArchiveOptions::new(&dir, chrono::Utc::now()))
            .await
            .unwrap();
        assert_eq!(report.events, 3, "versions 2 to 4");
        let ids: Vec<String> = [3, 0, 2]
            .iter()
            .map(|&n: &usize| written[n].event_id.to_string())
            .collect();
        let found = store.events_by_id(&ids).await.unwrap();
        let versions: Vec<u64> = found.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, [1, 3, 4]);
        assert_eq!(found[1], store.read_stream("s-1", 3..=3).await.unwrap()[0]);
        std::fs::remove_dir_all(&dir).unwrap();
        scratch::drop(&store).await;
    }
}
