//! Running a saga on SQLite: the same as on PostgreSQL (see `SagaRunner`), with SQLite's single
//! writer in place of row locks: events come through the SQLite projection runner (lease,
//! checkpoint in the batch's transaction), instances change in `BEGIN IMMEDIATE` transactions,
//! and one dispatcher per saga delivers at a time: it holds a lock on the file
//! `<database>-saga-<name>.lock` while it delivers a batch, which the operating system releases
//! when its process dies, so a restarted process delivers at once.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Row as _, SqliteConnection};
use uuid::Uuid;

use super::bus::CommandBus;
use super::clock::{Clock, SystemClock};
use super::core::{
    Core, Counts, Deadline, Outbound, Pending, SagaBackend, SagaError, SagaEvents, StoredInstance,
};
use super::{FiredTimeout, Saga};
use crate::error::Error;
use crate::projection::SqliteProjectionRunner;
use crate::store::sqlite::{backend, uuid};
use crate::store::{SqliteStore, StoreLock};

/// The saga tables of a SQLite store.
#[derive(Clone)]
pub(crate) struct SqliteSagas {
    store: SqliteStore,
}

const INSTANCE: &str =
    "SELECT state, status, correlation_id FROM sagas WHERE saga = ?1 AND saga_id = ?2";

impl SqliteSagas {
    async fn instance(
        &self,
        executor: impl sqlx::SqliteExecutor<'_>,
        saga: &str,
        saga_id: &str,
    ) -> Result<Option<StoredInstance>, Error> {
        let row = sqlx::query(INSTANCE)
            .bind(saga)
            .bind(saga_id)
            .fetch_optional(executor)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(StoredInstance {
            state: row.try_get(0).map_err(backend)?,
            completed: row.try_get::<String, _>(1).map_err(backend)? == "completed",
            correlation_id: uuid(&row, 2)?,
        }))
    }
}

impl SagaBackend for SqliteSagas {
    type Connection = SqliteConnection;
    type Transaction = sqlx::Transaction<'static, sqlx::Sqlite>;
    type DispatchLock = StoreLock;

    async fn begin(&self) -> Result<Self::Transaction, Error> {
        self.store
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }

    async fn commit(transaction: Self::Transaction) -> Result<(), Error> {
        transaction.commit().await.map_err(backend)
    }

    async fn lock_instance<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        saga: &'a str,
        saga_id: &'a str,
    ) -> Result<Option<StoredInstance>, Error> {
        // The transaction holds SQLite's write lock: no row lock needed.
        self.instance(connection, saga, saga_id).await
    }

    async fn read_instance<'a>(
        &'a self,
        saga: &'a str,
        saga_id: &'a str,
    ) -> Result<Option<StoredInstance>, Error> {
        self.instance(self.store.pool(), saga, saga_id).await
    }

    async fn save_instance<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        saga: &'a str,
        saga_id: &'a str,
        state: &'a str,
        completed: bool,
        correlation_id: Uuid,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO sagas (saga, saga_id, state, status, correlation_id, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?4 = 'completed' THEN CURRENT_TIMESTAMP END)
             ON CONFLICT (saga, saga_id) DO UPDATE
                 SET state = excluded.state, status = excluded.status,
                     updated_at = CURRENT_TIMESTAMP, completed_at = excluded.completed_at",
        )
        .bind(saga)
        .bind(saga_id)
        .bind(state)
        .bind(if completed { "completed" } else { "active" })
        .bind(correlation_id.to_string())
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn enqueue<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        saga: &'a str,
        saga_id: &'a str,
        correlation_id: Uuid,
        causation_id: Uuid,
        commands: &'a [Outbound<'a>],
    ) -> Result<(), Error> {
        for command in commands {
            sqlx::query(
                "INSERT INTO saga_outbox (command_id, saga, saga_id, command_type, stream_id,
                                          payload, correlation_id, causation_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (command_id) DO NOTHING",
            )
            .bind(command.command_id.to_string())
            .bind(saga)
            .bind(saga_id)
            .bind(command.command_type)
            .bind(command.stream_id)
            .bind(command.payload)
            .bind(correlation_id.to_string())
            .bind(causation_id.to_string())
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    async fn cancel_timeouts<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        saga: &'a str,
        saga_id: &'a str,
        types: &'a [&'static str],
        all: bool,
    ) -> Result<(), Error> {
        let types = serde_json::to_string(types).map_err(|e| Error::Backend(Box::new(e)))?;
        sqlx::query(
            "UPDATE saga_timeouts SET status = 'cancelled'
             WHERE saga = ?1 AND saga_id = ?2 AND status = 'pending'
               AND (?4 OR timeout_type IN (SELECT value FROM json_each(?3)))",
        )
        .bind(saga)
        .bind(saga_id)
        .bind(types)
        .bind(all)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn schedule<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        saga: &'a str,
        saga_id: &'a str,
        deadlines: &'a [Deadline<'a>],
    ) -> Result<(), Error> {
        for deadline in deadlines {
            sqlx::query(
                "INSERT INTO saga_timeouts (timeout_id, saga, saga_id, timeout_type, payload, due_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (timeout_id) DO NOTHING",
            )
            .bind(deadline.timeout_id.to_string())
            .bind(saga)
            .bind(saga_id)
            .bind(deadline.timeout_type)
            .bind(deadline.payload)
            .bind(deadline.due_at)
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    async fn lock_dispatch<'a>(&'a self, saga: &'a str) -> Result<Option<StoreLock>, Error> {
        self.store.try_lock(&format!("saga-{saga}"))
    }

    async fn pending<'a>(
        &'a self,
        _lock: &'a mut StoreLock,
        saga: &'a str,
        limit: usize,
    ) -> Result<Vec<Pending>, Error> {
        let rows = sqlx::query(
            "SELECT command_id, saga_id, command_type, stream_id, payload, correlation_id,
                    causation_id
             FROM saga_outbox WHERE saga = ?1 AND status = 'pending' ORDER BY seq LIMIT ?2",
        )
        .bind(saga)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.store.pool())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(Pending {
                    command_id: uuid(row, 0).map_err(decode)?,
                    saga_id: row.try_get(1)?,
                    command_type: row.try_get(2)?,
                    stream_id: row.try_get(3)?,
                    payload: row.try_get(4)?,
                    correlation_id: uuid(row, 5).map_err(decode)?,
                    causation_id: uuid(row, 6).map_err(decode)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn unlock_dispatch(&self, lock: StoreLock) -> Result<(), Error> {
        drop(lock);
        Ok(())
    }

    async fn mark_command<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        command_id: Uuid,
        status: &'a str,
        error: Option<&'a str>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE saga_outbox
             SET status = ?2, error = ?3, attempts = attempts + 1,
                 dispatched_at = CASE WHEN ?2 = 'pending' THEN NULL ELSE CURRENT_TIMESTAMP END
             WHERE command_id = ?1",
        )
        .bind(command_id.to_string())
        .bind(status)
        .bind(error)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn due<'a>(
        &'a self,
        saga: &'a str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String)>, Error> {
        let rows = sqlx::query(
            "SELECT timeout_id, saga_id FROM saga_timeouts
             WHERE saga = ?1 AND status = 'pending' AND due_at <= ?2
             ORDER BY due_at, timeout_id LIMIT ?3",
        )
        .bind(saga)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.store.pool())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| Ok((uuid(row, 0).map_err(decode)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn lock_timeout<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        timeout_id: Uuid,
    ) -> Result<Option<FiredTimeout>, Error> {
        let row = sqlx::query(
            "SELECT timeout_type, payload, due_at FROM saga_timeouts
             WHERE timeout_id = ?1 AND status = 'pending'",
        )
        .bind(timeout_id.to_string())
        .fetch_optional(&mut *connection)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(FiredTimeout {
            timeout_id,
            timeout_type: row.try_get(0).map_err(backend)?,
            payload: row.try_get(1).map_err(backend)?,
            due_at: row.try_get(2).map_err(backend)?,
        }))
    }

    async fn mark_timeout<'a>(
        &'a self,
        connection: &'a mut SqliteConnection,
        timeout_id: Uuid,
        status: &'a str,
        error: Option<&'a str>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE saga_timeouts SET status = ?2, error = ?3, fired_at = CURRENT_TIMESTAMP
             WHERE timeout_id = ?1",
        )
        .bind(timeout_id.to_string())
        .bind(status)
        .bind(error)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn counts<'a>(&'a self, saga: &'a str) -> Result<Counts, Error> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM sagas WHERE saga = ?1 AND status = 'active'),
                    (SELECT count(*) FROM sagas WHERE saga = ?1 AND status = 'completed'),
                    (SELECT count(*) FROM saga_outbox WHERE saga = ?1 AND status = 'pending'),
                    (SELECT count(*) FROM saga_outbox WHERE saga = ?1 AND status = 'rejected'),
                    (SELECT count(*) FROM saga_outbox WHERE saga = ?1 AND status = 'failed'),
                    (SELECT count(*) FROM saga_timeouts WHERE saga = ?1 AND status = 'pending')",
        )
        .bind(saga)
        .fetch_one(self.store.pool())
        .await
        .map_err(backend)?;
        let mut counts = [0; 6];
        for (i, count) in counts.iter_mut().enumerate() {
            let n: i64 = row.try_get(i).map_err(backend)?;
            *count = u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }
}

/// Runs saga `S` on SQLite: its events, its outbox and its timeouts.
pub struct SqliteSagaRunner<S: Saga> {
    events: SqliteProjectionRunner<SagaEvents<S, SqliteSagas>>,
    core: Arc<Core<S, SqliteSagas>>,
    poll_interval: Duration,
}

impl<S: Saga> std::fmt::Debug for SqliteSagaRunner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSagaRunner")
            .field("saga", &S::NAME)
            .field("bus", &self.core.bus)
            .finish_non_exhaustive()
    }
}

impl<S: Saga> SqliteSagaRunner<S> {
    /// A runner of saga `S` on `store` (migrated), delivering commands through `bus`, on the
    /// system clock.
    #[must_use]
    pub fn new(store: SqliteStore, bus: CommandBus) -> Self {
        Self::build(
            store,
            bus,
            Arc::new(SystemClock),
            Duration::from_millis(200),
        )
    }

    fn build(
        store: SqliteStore,
        bus: CommandBus,
        clock: Arc<dyn Clock>,
        poll_interval: Duration,
    ) -> Self {
        let core = Arc::new(Core {
            backend: SqliteSagas {
                store: store.clone(),
            },
            bus,
            clock,
            dispatch_batch: 100,
            wake: Arc::default(),
            saga: PhantomData,
        });
        let events = SqliteProjectionRunner::new(
            store,
            SagaEvents {
                core: Arc::clone(&core),
            },
        )
        .poll_interval(poll_interval);
        Self {
            events,
            core,
            poll_interval,
        }
    }

    super::core::runner_methods!();

    /// Runs the saga until `shutdown` completes: its events (under the projection lease), the
    /// delivery of its commands (woken when a batch that sent some commits) and its timeouts
    /// (checked every poll interval).
    ///
    /// # Errors
    /// When the event side stops.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), SagaError> {
        let Self {
            events,
            core,
            poll_interval,
        } = self;
        super::core::run(
            core,
            move |stop| Box::pin(async move { events.run(stop).await.map(drop) }),
            poll_interval,
            shutdown,
        )
        .await
    }
}

// Replaced by the generic saga backend.
fn decode(error: Error) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}
