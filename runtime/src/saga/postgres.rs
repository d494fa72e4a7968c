//! Running a saga on PostgreSQL.
//!
//! - Events reach the saga through a projection runner (the same lease, checkpoint, retries,
//!   dead-letter queue and lag as projections): each batch's instance states, outbox commands
//!   and timeouts commit with the checkpoint.
//! - The dispatcher delivers the outbox in order through the [`CommandBus`], one dispatcher per
//!   saga at a time across processes (an advisory lock). A command id is derived from its
//!   cause, and the aggregate executes it at most once, so a crash between delivery and
//!   acknowledgement applies nothing twice. A refused command goes back to the saga's
//!   `#[rejected]` handler.
//! - Timeouts fire when the runner's [`Clock`] passes them, after a restart too; the instance's
//!   row is locked first, as for events, so the two take turns.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row as _};
use uuid::Uuid;

use super::FiredTimeout;
use super::Saga;
use super::bus::CommandBus;
use super::clock::{Clock, SystemClock};
use super::core::{
    Core, Counts, Deadline, Outbound, Pending, SagaBackend, SagaError, SagaEvents, StoredInstance,
};
use crate::error::Error;
use crate::projection::ProjectionRunner;
use crate::store::PostgresStore;

/// The saga tables of a PostgreSQL store.
#[derive(Clone)]
pub(crate) struct PgSagas {
    store: PostgresStore,
    sql: Arc<Sql>,
}

struct Sql {
    lock_instance: String,
    read_instance: String,
    save: String,
    outbox: String,
    cancel_timeouts: String,
    schedule: String,
    notify_channel: String,
    pending: String,
    mark: String,
    due: String,
    lock_timeout: String,
    mark_timeout: String,
    status: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let instance = format!(
            "SELECT state::text, status, correlation_id FROM {s}.sagas
             WHERE saga = $1 AND saga_id = $2"
        );
        Self {
            lock_instance: format!("{instance} FOR UPDATE"),
            read_instance: instance,
            save: format!(
                "INSERT INTO {s}.sagas AS i (saga, saga_id, state, status, correlation_id, completed_at)
                 VALUES ($1, $2, $3::text::json, $4, $5, CASE WHEN $4 = 'completed' THEN now() END)
                 ON CONFLICT (saga, saga_id) DO UPDATE
                     SET state = excluded.state, status = excluded.status, updated_at = now(),
                         completed_at = excluded.completed_at"
            ),
            outbox: format!(
                "INSERT INTO {s}.saga_outbox
                     (command_id, saga, saga_id, command_type, stream_id, payload, correlation_id,
                      causation_id)
                 SELECT u.id, $1, $2, u.command_type, u.stream_id, u.payload::json, $3, $4
                 FROM UNNEST($5::uuid[], $6::text[], $7::text[], $8::text[])
                      WITH ORDINALITY AS u (id, command_type, stream_id, payload, ord)
                 ORDER BY u.ord
                 ON CONFLICT (command_id) DO NOTHING"
            ),
            cancel_timeouts: format!(
                "UPDATE {s}.saga_timeouts SET status = 'cancelled'
                 WHERE saga = $1 AND saga_id = $2 AND status = 'pending'
                   AND ($4 OR timeout_type = ANY ($3))"
            ),
            schedule: format!(
                "INSERT INTO {s}.saga_timeouts (timeout_id, saga, saga_id, timeout_type, payload, due_at)
                 SELECT u.id, $1, $2, u.timeout_type, u.payload::json, u.due_at
                 FROM UNNEST($3::uuid[], $4::text[], $5::text[], $6::timestamptz[])
                      AS u (id, timeout_type, payload, due_at)
                 ON CONFLICT (timeout_id) DO NOTHING"
            ),
            notify_channel: format!("factum_saga_{schema}"),
            pending: format!(
                "SELECT command_id, saga_id, command_type, stream_id, payload::text, correlation_id,
                        causation_id
                 FROM {s}.saga_outbox
                 WHERE saga = $1 AND status = 'pending' ORDER BY seq LIMIT $2"
            ),
            mark: format!(
                "UPDATE {s}.saga_outbox
                 SET status = $2, error = $3, attempts = attempts + 1,
                     dispatched_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
                 WHERE command_id = $1"
            ),
            due: format!(
                "SELECT timeout_id, saga_id FROM {s}.saga_timeouts
                 WHERE saga = $1 AND status = 'pending' AND due_at <= $2
                 ORDER BY due_at, timeout_id LIMIT $3"
            ),
            lock_timeout: format!(
                "SELECT timeout_type, payload::text, due_at FROM {s}.saga_timeouts
                 WHERE timeout_id = $1 AND status = 'pending' FOR UPDATE"
            ),
            mark_timeout: format!(
                "UPDATE {s}.saga_timeouts SET status = $2, error = $3, fired_at = now()
                 WHERE timeout_id = $1"
            ),
            status: format!(
                "SELECT (SELECT count(*) FROM {s}.sagas WHERE saga = $1 AND status = 'active'),
                        (SELECT count(*) FROM {s}.sagas WHERE saga = $1 AND status = 'completed'),
                        (SELECT count(*) FROM {s}.saga_outbox WHERE saga = $1 AND status = 'pending'),
                        (SELECT count(*) FROM {s}.saga_outbox WHERE saga = $1 AND status = 'rejected'),
                        (SELECT count(*) FROM {s}.saga_outbox WHERE saga = $1 AND status = 'failed'),
                        (SELECT count(*) FROM {s}.saga_timeouts WHERE saga = $1 AND status = 'pending')"
            ),
        }
    }
}

impl PgSagas {
    fn fail(&self, error: sqlx::Error) -> Error {
        self.store.fail(error)
    }

    async fn instance(
        &self,
        executor: impl sqlx::PgExecutor<'_>,
        sql: &str,
        saga: &str,
        saga_id: &str,
    ) -> Result<Option<StoredInstance>, Error> {
        let row = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(saga)
            .bind(saga_id)
            .fetch_optional(executor)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |e| self.fail(e);
        Ok(Some(StoredInstance {
            state: row.try_get(0).map_err(get)?,
            completed: row.try_get::<String, _>(1).map_err(get)? == "completed",
            correlation_id: row.try_get(2).map_err(get)?,
        }))
    }
}

impl SagaBackend for PgSagas {
    type Connection = PgConnection;
    type Transaction = sqlx::Transaction<'static, sqlx::Postgres>;
    type DispatchLock = sqlx::Transaction<'static, sqlx::Postgres>;

    async fn begin(&self) -> Result<Self::Transaction, Error> {
        self.store.pool().begin().await.map_err(|e| self.fail(e))
    }

    async fn commit(transaction: Self::Transaction) -> Result<(), Error> {
        transaction
            .commit()
            .await
            .map_err(|e| Error::Backend(Box::new(e)))
    }

    async fn lock_instance<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        saga: &'a str,
        saga_id: &'a str,
    ) -> Result<Option<StoredInstance>, Error> {
        self.instance(connection, &self.sql.lock_instance, saga, saga_id)
            .await
    }

    async fn read_instance<'a>(
        &'a self,
        saga: &'a str,
        saga_id: &'a str,
    ) -> Result<Option<StoredInstance>, Error> {
        self.instance(self.store.pool(), &self.sql.read_instance, saga, saga_id)
            .await
    }

    async fn save_instance<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        saga: &'a str,
        saga_id: &'a str,
        state: &'a str,
        completed: bool,
        correlation_id: Uuid,
    ) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.sql.save.clone()))
            .bind(saga)
            .bind(saga_id)
            .bind(state)
            .bind(if completed { "completed" } else { "active" })
            .bind(correlation_id)
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn enqueue<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        saga: &'a str,
        saga_id: &'a str,
        correlation_id: Uuid,
        causation_id: Uuid,
        commands: &'a [Outbound<'a>],
    ) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.sql.outbox.clone()))
            .bind(saga)
            .bind(saga_id)
            .bind(correlation_id)
            .bind(causation_id)
            .bind(commands.iter().map(|c| c.command_id).collect::<Vec<_>>())
            .bind(commands.iter().map(|c| c.command_type).collect::<Vec<_>>())
            .bind(commands.iter().map(|c| c.stream_id).collect::<Vec<_>>())
            .bind(commands.iter().map(|c| c.payload).collect::<Vec<_>>())
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        // Dispatchers in other processes: woken when the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.sql.notify_channel)
            .bind(saga)
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn cancel_timeouts<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        saga: &'a str,
        saga_id: &'a str,
        types: &'a [&'static str],
        all: bool,
    ) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.sql.cancel_timeouts.clone()))
            .bind(saga)
            .bind(saga_id)
            .bind(types)
            .bind(all)
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn schedule<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        saga: &'a str,
        saga_id: &'a str,
        deadlines: &'a [Deadline<'a>],
    ) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.sql.schedule.clone()))
            .bind(saga)
            .bind(saga_id)
            .bind(deadlines.iter().map(|d| d.timeout_id).collect::<Vec<_>>())
            .bind(deadlines.iter().map(|d| d.timeout_type).collect::<Vec<_>>())
            .bind(deadlines.iter().map(|d| d.payload).collect::<Vec<_>>())
            .bind(deadlines.iter().map(|d| d.due_at).collect::<Vec<_>>())
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn lock_dispatch<'a>(
        &'a self,
        saga: &'a str,
    ) -> Result<Option<Self::DispatchLock>, Error> {
        // A lock held by this transaction while the batch is delivered.
        let mut lock = self.store.pool().begin().await.map_err(|e| self.fail(e))?;
        let key = format!("factum.saga.dispatch:{}:{saga}", self.store.schema());
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
            .bind(key)
            .fetch_one(&mut *lock)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(ours.then_some(lock))
    }

    async fn pending<'a>(
        &'a self,
        lock: &'a mut Self::DispatchLock,
        saga: &'a str,
        limit: usize,
    ) -> Result<Vec<Pending>, Error> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.pending.clone()))
            .bind(saga)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut **lock)
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| {
                Ok(Pending {
                    command_id: row.try_get(0)?,
                    saga_id: row.try_get(1)?,
                    command_type: row.try_get(2)?,
                    stream_id: row.try_get(3)?,
                    payload: row.try_get(4)?,
                    correlation_id: row.try_get(5)?,
                    causation_id: row.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.fail(e))
    }

    async fn unlock_dispatch(&self, lock: Self::DispatchLock) -> Result<(), Error> {
        lock.commit().await.map_err(|e| self.fail(e))
    }

    async fn mark_command<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        command_id: Uuid,
        status: &'a str,
        error: Option<&'a str>,
    ) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.sql.mark.clone()))
            .bind(command_id)
            .bind(status)
            .bind(error)
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn due<'a>(
        &'a self,
        saga: &'a str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String)>, Error> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.due.clone()))
            .bind(saga)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.store.pool())
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.fail(e))
    }

    async fn lock_timeout<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        timeout_id: Uuid,
    ) -> Result<Option<FiredTimeout>, Error> {
        let row = sqlx::query(AssertSqlSafe(self.sql.lock_timeout.clone()))
            .bind(timeout_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |e| self.fail(e);
        Ok(Some(FiredTimeout {
            timeout_id,
            timeout_type: row.try_get(0).map_err(get)?,
            payload: row.try_get(1).map_err(get)?,
            due_at: row.try_get(2).map_err(get)?,
        }))
    }

    async fn mark_timeout<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        timeout_id: Uuid,
        status: &'a str,
        error: Option<&'a str>,
    ) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.sql.mark_timeout.clone()))
            .bind(timeout_id)
            .bind(status)
            .bind(error)
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn counts<'a>(&'a self, saga: &'a str) -> Result<Counts, Error> {
        let row = sqlx::query(AssertSqlSafe(self.sql.status.clone()))
            .bind(saga)
            .fetch_one(self.store.pool())
            .await
            .map_err(|e| self.fail(e))?;
        let mut counts = [0; 6];
        for (i, count) in counts.iter_mut().enumerate() {
            let n: i64 = row.try_get(i).map_err(|e| self.fail(e))?;
            *count = u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }
}

/// Runs saga `S` on PostgreSQL: its events, its outbox and its timeouts.
pub struct SagaRunner<S: Saga> {
    events: ProjectionRunner<SagaEvents<S, PgSagas>>,
    core: Arc<Core<S, PgSagas>>,
    poll_interval: Duration,
}

impl<S: Saga> std::fmt::Debug for SagaRunner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("saga", &S::NAME)
            .field("bus", &self.core.bus)
            .finish_non_exhaustive()
    }
}

impl<S: Saga> SagaRunner<S> {
    /// A runner of saga `S` on `store` (migrated), delivering commands through `bus`, on the
    /// system clock.
    #[must_use]
    pub fn new(store: PostgresStore, bus: CommandBus) -> Self {
        Self::build(
            store,
            bus,
            Arc::new(SystemClock),
            Duration::from_millis(200),
        )
    }

    fn build(
        store: PostgresStore,
        bus: CommandBus,
        clock: Arc<dyn Clock>,
        poll_interval: Duration,
    ) -> Self {
        let core = Arc::new(Core {
            backend: PgSagas {
                sql: Arc::new(Sql::new(store.schema())),
                store: store.clone(),
            },
            bus,
            clock,
            dispatch_batch: 100,
            wake: Arc::default(),
            saga: PhantomData,
        });
        let events = ProjectionRunner::new(
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

    /// Runs the saga until `shutdown` completes: its events (under the projection lease),
    /// the delivery of its commands (woken when an instance sends some, in this process or
    /// another) and its timeouts (checked every poll interval). A delivery that fails for a
    /// transient reason is retried at the next wake-up.
    ///
    /// # Errors
    /// When the event side stops ([`crate::projection::RunnerError`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), SagaError> {
        let Self {
            events,
            core,
            poll_interval,
        } = self;
        let listening = tokio::spawn(forward_notifications(
            core.backend.store.clone(),
            core.backend.sql.notify_channel.clone(),
            Arc::clone(&core.wake),
        ));
        let result = super::core::run(
            core,
            move |stop| Box::pin(async move { events.run(stop).await.map(drop) }),
            poll_interval,
            shutdown,
        )
        .await;
        listening.abort();
        result
    }
}

/// Wakes this process's dispatcher when another process's saga sent commands.
async fn forward_notifications(
    store: PostgresStore,
    channel: String,
    wake: Arc<tokio::sync::Notify>,
) {
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(store.pool()).await?;
            listener.listen(&channel).await?;
            loop {
                listener.recv().await?;
                wake.notify_one();
            }
        };
        let result: Result<(), sqlx::Error> = listener.await;
        if let Err(error) = result {
            tracing::debug!(%error, "saga dispatcher not listening; it polls meanwhile");
        }
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
