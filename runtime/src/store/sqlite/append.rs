//! Appends on SQLite: each in one `BEGIN IMMEDIATE` transaction (alone, or a group's), the
//! head check in its insert; an idempotent retry recognised by its events' ids.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::rows::uuid;
use super::{SqliteStore, backend, keys, now, read_stream_in};
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::store::ExpectedVersion;
use crate::store::backend::{
    StoredId, check_append, classify_retry, columns, expected_code, stored_u64, to_i64,
};
use crate::store::group::{Committer, Queued, Request};
use crate::store::keys as store_keys;
use crate::store::tx::{self, Transaction, Tx};

impl SqliteStore {
    /// The stored events with these ids, for an idempotent retry.
    pub(super) async fn stored_ids(
        &self,
        connection: &mut SqliteConnection,
        events: &[NewEvent],
    ) -> Result<Vec<StoredId>> {
        let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        let ids = serde_json::to_string(&ids).map_err(|e| Error::Backend(Box::new(e)))?;
        let rows = sqlx::query(
            "SELECT event_id, stream_id, stream_version FROM events
             WHERE event_id IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR tenant = ?2)",
        )
        .bind(ids)
        .bind(self.scope())
        .fetch_all(&mut *connection)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(StoredId {
                    event_id: uuid(row, 0)?,
                    stream_id: columns::get(row, 1)?,
                    stream_version: columns::unsigned::<_, i64, _>(row, 2)?,
                })
            })
            .collect()
    }

    pub(super) async fn append_locked(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>> {
        if let [event] = events
            && let Some(recorded) = self
                .insert_one_checked(connection, stream_id, aggregate_type, expected, event)
                .await?
        {
            return Ok(vec![recorded]);
        }
        // Several events, or one the head check refused: look at the head to say why (every
        // tenant's: a stream id is unique across them).
        let head = sqlx::query(
            "SELECT stream_version, aggregate_type, tenant FROM events WHERE stream_id = ?1
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(backend)?;
        let (current, existing_type) = match &head {
            Some(row) => (
                columns::unsigned::<_, i64, u64>(row, 0)?,
                Some(columns::get::<_, String>(row, 1)?),
            ),
            None => (0, None),
        };
        let tenant = self.scope().unwrap_or_default();
        if let Some(row) = &head
            && columns::get::<_, &str>(row, 2)? != tenant
        {
            return Err(Error::StreamOfAnotherTenant {
                stream_id: stream_id.to_owned(),
            });
        }
        if !expected.accepts(current) {
            return Err(Error::Conflict {
                stream_id: stream_id.to_owned(),
                expected,
                actual: current,
            });
        }
        if let Some(existing) = existing_type
            && existing != aggregate_type
        {
            return Err(Error::AggregateTypeMismatch {
                stream_id: stream_id.to_owned(),
                existing,
                requested: aggregate_type.to_owned(),
            });
        }
        let recorded_at = now();
        let mut recorded = Vec::with_capacity(events.len());
        for (offset, event) in events.iter().cloned().enumerate() {
            let stream_version = current + 1 + offset as u64;
            let query = sqlx::query(
                "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id,
                     event_type, schema_version, payload, metadata, correlation_id, causation_id,
                     actor, recorded_at, tenant)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 RETURNING position",
            )
            .bind(stream_id)
            .bind(to_i64(stream_version))
            .bind(aggregate_type);
            let row = bind_event(query, &event, recorded_at)
                .bind(tenant)
                .fetch_one(&mut *connection)
                .await
                .map_err(backend)?;
            let position: i64 = columns::get(&row, 0)?;
            let position = stored_u64(position, "a global position")?;
            recorded.push(self.stored(
                event,
                (stream_id, aggregate_type),
                stream_version,
                position,
                recorded_at,
            ));
        }
        Ok(recorded)
    }
}

impl SqliteStore {
    /// The common append, one event, in one statement: the insert checks the expected version
    /// and the aggregate type against the stream's head itself. `None` when the check refused
    /// it (nothing was written).
    pub(super) async fn insert_one_checked(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        event: &NewEvent,
    ) -> Result<Option<RecordedEvent>> {
        let recorded_at = now();
        let query = sqlx::query(
            "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id, event_type,
                 schema_version, payload, metadata, correlation_id, causation_id, actor,
                 recorded_at, tenant)
             SELECT ?1, coalesce(h.stream_version, 0) + 1, ?2, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                    ?12, ?13
             FROM (SELECT 1) AS one
             LEFT JOIN (SELECT stream_version, aggregate_type, tenant FROM events
                        WHERE stream_id = ?1
                        ORDER BY stream_version DESC LIMIT 1) AS h ON true
             WHERE (?3 = -1
                    OR (?3 = -2 AND h.stream_version IS NULL)
                    OR (?3 = -3 AND h.stream_version IS NOT NULL)
                    OR ?3 = coalesce(h.stream_version, 0))
               AND (h.aggregate_type IS NULL OR h.aggregate_type = ?2)
               AND (h.tenant IS NULL OR h.tenant = ?13)
             RETURNING position, stream_version",
        )
        .bind(stream_id)
        .bind(aggregate_type)
        .bind(expected_code(expected));
        let row = bind_event(query, event, recorded_at)
            .bind(self.scope().unwrap_or_default())
            .fetch_optional(&mut *connection)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let position = stored_u64(columns::get::<_, i64>(&row, 0)?, "a global position")?;
        let stream_version = columns::unsigned::<_, i64, _>(&row, 1)?;
        Ok(Some(self.stored(
            event.clone(),
            (stream_id, aggregate_type),
            stream_version,
            position,
            recorded_at,
        )))
    }

    /// [`SqliteStore::append_locked`], then the append hooks (inline projections) on the
    /// inserted events, in the same transaction.
    pub(super) async fn append_hooked(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>> {
        let appended = self
            .append_locked(connection, stream_id, aggregate_type, expected, events)
            .await?;
        if !appended.is_empty() {
            for hook in self.hooks.iter() {
                hook.appended(self, &mut Tx::from(&mut *connection), &appended)
                    .await?;
            }
        }
        Ok(appended)
    }

    /// After a failed append (rolled back): was it the retry of an append already stored? Then
    /// its stored events; otherwise `error`. Looked up only on failure.
    pub(super) async fn stored_retry(
        &self,
        connection: &mut SqliteConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        error: Error,
    ) -> Result<Vec<RecordedEvent>> {
        let stored = self.stored_ids(connection, events).await?;
        if stored.is_empty() {
            return Err(error);
        }
        let versions = classify_retry(stream_id, expected, events, &stored)?;
        read_stream_in(
            connection,
            self.scope(),
            stream_id,
            (*versions.start(), *versions.end()),
        )
        .await
    }

    /// An append (checked) in its own transaction.
    pub(super) async fn append_alone(&self, request: Request<'_>) -> Result<Vec<RecordedEvent>> {
        let Request {
            stream_id,
            aggregate_type,
            expected,
            events,
            ..
        } = request;
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        match self
            .append_hooked(
                &mut transaction,
                stream_id,
                aggregate_type,
                expected,
                &events,
            )
            .await
        {
            Ok(appended) => {
                transaction.commit().await.map_err(backend)?;
                Ok(appended)
            }
            Err(error) => {
                // Nothing of a failed append stays (a multi-event append may have inserted some).
                transaction.rollback().await.map_err(backend)?;
                let mut connection = self.pool.acquire().await.map_err(backend)?;
                self.stored_retry(&mut connection, stream_id, expected, &events, error)
                    .await
            }
        }
    }

    /// Commits a group in one transaction, each append in a savepoint, and answers each: with
    /// its events, or its own failure (after looking whether it was the retry of a stored
    /// append). When the transaction fails as a whole, nothing of it is stored, and each
    /// append is tried alone.
    pub(super) async fn commit_group(&self, group: Vec<Queued>) {
        let outcomes = match self.append_group(&group).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::debug!(appends = group.len(), %error, "group commit failed: each append alone");
                for mut queued in group {
                    let outcome = self.append_alone(queued.append.request()).await;
                    queued.reply.send(outcome);
                }
                return;
            }
        };
        for (mut queued, outcome) in group.into_iter().zip(outcomes) {
            let outcome = match outcome {
                Ok(appended) => Ok(appended),
                Err(error) => {
                    let append = queued.append.request();
                    match self.pool.acquire().await.map_err(backend) {
                        Ok(mut connection) => {
                            self.stored_retry(
                                &mut connection,
                                append.stream_id,
                                append.expected,
                                &append.events,
                                error,
                            )
                            .await
                        }
                        Err(_) => Err(error),
                    }
                }
            };
            queued.reply.send(outcome);
        }
    }

    /// The appends of `group` in one `BEGIN IMMEDIATE` transaction; the outcome of each. An
    /// append that can fail after writing (several events, or append hooks) runs in a savepoint
    /// that is rolled back when it fails; a single-event append needs none: its one `INSERT`
    /// is undone by SQLite alone when it fails, and the head check before it writes nothing.
    pub(super) async fn append_group(
        &self,
        group: &[Queued],
    ) -> Result<Vec<Result<Vec<RecordedEvent>>>> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let mut outcomes = Vec::with_capacity(group.len());
        for queued in group {
            let append = &queued.append;
            let guarded = append.events.len() > 1 || !self.hooks.is_empty();
            if guarded {
                sqlx::query("SAVEPOINT factum_group_append")
                    .execute(&mut *transaction)
                    .await
                    .map_err(backend)?;
            }
            let outcome = self
                .append_hooked(
                    &mut transaction,
                    &append.stream_id,
                    &append.aggregate_type,
                    append.expected,
                    &append.events,
                )
                .await;
            if guarded {
                let end = if outcome.is_ok() {
                    "RELEASE factum_group_append"
                } else {
                    "ROLLBACK TO factum_group_append; RELEASE factum_group_append"
                };
                sqlx::raw_sql(end)
                    .execute(&mut *transaction)
                    .await
                    .map_err(backend)?;
            }
            outcomes.push(outcome);
        }
        transaction.commit().await.map_err(backend)?;
        Ok(outcomes)
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: it holds SQLite's write lock until it
    /// ends): appends made in it with [`SqliteStore::append_in`] commit with its other writes,
    /// and wake live subscribers when it commits.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be written.
    pub async fn begin(&self) -> Result<Transaction> {
        let transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        Ok(Transaction::sqlite(transaction))
    }

    /// Appends inside the caller's transaction (from [`SqliteStore::begin`], which holds the write
    /// lock), so that the events commit or roll back with its other writes; the transaction wakes
    /// live subscribers when it commits. An idempotent retry of an append already stored returns
    /// the stored events.
    ///
    /// # Errors
    /// As [`EventStore::append`]; a failed append leaves nothing of itself in the transaction.
    ///
    /// [`EventStore::append`]: crate::store::EventStore::append
    pub async fn append_in<'c>(
        &self,
        transaction: impl Into<Tx<'c>>,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        check_append(stream_id, &events, &self.limits)?;
        self.tenancy.check_append(stream_id)?;
        let mut tx: Tx<'c> = transaction.into();
        let connection = tx::connection::<sqlx::SqliteConnection>(&mut tx)?;
        // The data keys in the caller's transaction, which holds the write lock.
        let plain = {
            let table = keys::TxKeys {
                connection: tokio::sync::Mutex::new(&mut *connection),
                scope: self.scope(),
            };
            store_keys::seal(self.keys.as_ref(), &table, &mut events).await?
        };
        // In a savepoint: a failed append leaves nothing of itself in the transaction.
        let mut savepoint = sqlx::Connection::begin(&mut *connection)
            .await
            .map_err(backend)?;
        let mut appended = match self
            .append_hooked(&mut savepoint, stream_id, aggregate_type, expected, &events)
            .await
        {
            Ok(appended) => {
                savepoint.commit().await.map_err(backend)?;
                appended
            }
            Err(error) => {
                savepoint.rollback().await.map_err(backend)?;
                let mut stored = self
                    .stored_retry(connection, stream_id, expected, &events, error)
                    .await?;
                store_keys::unseal_appended(&mut stored, plain);
                return Ok(stored);
            }
        };
        store_keys::unseal_appended(&mut appended, plain);
        if !appended.is_empty() {
            let notifier = self.notifier.clone();
            tx.wake_on_commit(move || notifier.notify());
        }
        Ok(appended)
    }
}

/// Binds `event`'s columns as the parameters `?4` to `?12` of an insert into `events`
/// (`event_id` to `recorded_at`, in table order).
fn bind_event<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    event: &'q NewEvent,
    recorded_at: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(event.event_id.to_string())
        .bind(event.event_type.as_ref())
        .bind(i64::from(event.schema_version))
        .bind(event.payload.as_str())
        .bind(serde_json::to_string(&event.metadata).unwrap_or_else(|_| "{}".to_owned()))
        .bind(event.correlation_id.to_string())
        .bind(event.causation_id.to_string())
        .bind(event.actor.as_deref())
        .bind(recorded_at)
}

impl SqliteStore {
    /// The envelope of `event`, stored in `stream` (its id and aggregate type) at
    /// `stream_version` and `position` (SQLite's commit order too), by this store's tenant.
    pub(super) fn stored(
        &self,
        event: NewEvent,
        stream: (&str, &str),
        stream_version: u64,
        position: u64,
        recorded_at: DateTime<Utc>,
    ) -> RecordedEvent {
        let mut recorded =
            event.into_recorded(stream, stream_version, (position, position), recorded_at);
        recorded.tenant = self.tenancy.name().map(str::to_owned);
        recorded
    }
}

impl SqliteStore {
    /// An append, checked, then alone or in a group (see [`EventStore::append`]).
    ///
    /// [`EventStore::append`]: crate::store::EventStore::append
    pub(super) async fn append_checked(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        check_append(stream_id, &events, &self.limits)?;
        self.tenancy.check_append(stream_id)?;
        let plain = store_keys::seal(self.keys.as_ref(), self, &mut events).await?;
        let request = Request {
            stream_id,
            aggregate_type,
            expected,
            head: None,
            events,
        };
        let mut appended = match &self.group {
            Some(group) => group.append(self, request).await?,
            None => self.append_alone(request).await?,
        };
        store_keys::unseal_appended(&mut appended, plain);
        if !appended.is_empty() {
            self.notifier.notify();
        }
        Ok(appended)
    }
}

/// Group commit: the appends of a group in one transaction, each with its own outcome.
impl Committer for SqliteStore {
    /// Appends run one after the other in the group's transaction, each seeing the ones
    /// before it.
    const SAME_STREAM: bool = true;

    fn alone(
        &self,
        request: Request<'_>,
    ) -> impl std::future::Future<Output = Result<Vec<RecordedEvent>>> + Send {
        self.append_alone(request)
    }

    fn commit(&self, group: Vec<Queued>) -> impl std::future::Future<Output = ()> + Send {
        self.commit_group(group)
    }
}
