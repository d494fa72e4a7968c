//! Running a saga on PostgreSQL.
//!
//! - Events reach the saga through a projection runner (the same lease, checkpoint, retries,
//!   dead-letter queue and lag as projections): each batch's instance states, outbox commands
//!   and timeouts commit with the checkpoint.
//! - The dispatcher delivers the outbox in order through the [`CommandBus`], one dispatcher per
//!   saga at a time across processes. A command id is derived from its cause, and the aggregate
//!   executes it at most once, so a crash between delivery and acknowledgement applies nothing
//!   twice. A refused command goes back to the saga's `#[rejected]` handler.
//! - Timeouts fire when the runner's [`Clock`] passes them, after a restart too; the instance's
//!   row is locked first, as for events, so the two take turns.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row as _};
use uuid::Uuid;

use super::bus::{CommandBus, DispatchError, Dispatched};
use super::clock::{Clock, SystemClock};
use super::{FiredTimeout, Rejection, Role, Saga, SagaContext, Scheduled, command_id, timeout_id};
use crate::command::CommandContext;
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::projection::{
    HandlerError, ParkedStream, Projection, ProjectionRunner, ProjectionStatus, RetryOutcome,
    RunnerError,
};
use crate::store::PostgresStore;

/// What stops a saga runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),

    /// The saga's event handling stopped (see [`RunnerError`]).
    #[error(transparent)]
    Events(#[from] RunnerError),

    /// A command could not be delivered now (the store is unavailable); it stays in the outbox
    /// and is delivered later.
    #[error("saga `{saga}`: {cause}")]
    Dispatch {
        /// The saga.
        saga: &'static str,
        /// Why.
        #[source]
        cause: DispatchError,
    },
}

/// An instance of a saga, as stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaInstance<S> {
    /// Its id.
    pub saga_id: String,
    /// Its state.
    pub state: S,
    /// Whether it has completed.
    pub completed: bool,
    /// The correlation id of its flow.
    pub correlation_id: Uuid,
}

/// Where a saga stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaStatus {
    /// The event side: checkpoint, lag, parked streams.
    pub events: ProjectionStatus,
    /// Instances running.
    pub active: u64,
    /// Instances completed.
    pub completed: u64,
    /// Commands waiting for delivery.
    pub pending_commands: u64,
    /// Commands refused by their aggregate.
    pub rejected_commands: u64,
    /// Commands that could not be delivered (no route, undecodable).
    pub failed_commands: u64,
    /// Timeouts scheduled and not yet fired or cancelled.
    pub pending_timeouts: u64,
}

/// What [`SagaRunner::settle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settled {
    /// Events handled.
    pub events: u64,
    /// Commands delivered (applied, recognised as applied, or refused).
    pub commands: u64,
    /// Timeouts fired.
    pub timeouts: u64,
}

/// Runs saga `S` on PostgreSQL: its events, its outbox and its timeouts.
pub struct SagaRunner<S: Saga> {
    events: ProjectionRunner<SagaEvents<S>>,
    core: Arc<Core<S>>,
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

struct Core<S> {
    store: PostgresStore,
    bus: CommandBus,
    clock: Arc<dyn Clock>,
    sql: Sql,
    dispatch_batch: usize,
    saga: PhantomData<fn() -> S>,
}

struct Sql {
    load: String,
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
    instance: String,
    status: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            load: format!(
                "SELECT state::text, status, correlation_id FROM {s}.sagas
                 WHERE saga = $1 AND saga_id = $2 FOR UPDATE"
            ),
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
            instance: format!(
                "SELECT state::text, status, correlation_id FROM {s}.sagas
                 WHERE saga = $1 AND saga_id = $2"
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

/// An instance loaded for handling (its row locked).
struct Loaded<S> {
    state: S,
    completed: bool,
    correlation_id: Uuid,
}

/// The saga's event side, run by a [`ProjectionRunner`].
struct SagaEvents<S> {
    core: Arc<Core<S>>,
}

impl<S: Saga> Projection for SagaEvents<S> {
    const NAME: &'static str = S::NAME;
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = S::EVENT_TYPES;
    type Connection = PgConnection;

    fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        connection: &'a mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self.core.on_event(event, connection)
    }
}

fn database(event: &RecordedEvent) -> impl Fn(Error) -> HandlerError + '_ {
    move |error| HandlerError::handler(event, error)
}

impl<S: Saga> Core<S> {
    fn fail(&self, error: sqlx::Error) -> Error {
        self.store.fail(error)
    }

    async fn load(
        &self,
        connection: &mut PgConnection,
        saga_id: &str,
        sql: &str,
    ) -> Result<Option<Loaded<S>>, Error> {
        let row = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(S::NAME)
            .bind(saga_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |e| self.fail(e);
        let state: String = row.try_get(0).map_err(get)?;
        let status: String = row.try_get(1).map_err(get)?;
        let state = serde_json::from_str(&state).map_err(|cause| {
            Error::Backend(
                format!(
                    "the state of saga `{}` instance `{saga_id}` does not decode: {cause}",
                    S::NAME
                )
                .into(),
            )
        })?;
        Ok(Some(Loaded {
            state,
            completed: status == "completed",
            correlation_id: row.try_get(2).map_err(get)?,
        }))
    }

    async fn on_event(
        &self,
        event: &RecordedEvent,
        connection: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let Some(association) = S::associate(event)? else {
            return Ok(());
        };
        let saga_id = association.saga_id.as_str();
        let loaded = self
            .load(connection, saga_id, &self.sql.load)
            .await
            .map_err(database(event))?;
        let (mut state, correlation_id) = match (loaded, association.role) {
            (None, Role::Start) => (S::default(), event.correlation_id),
            (None, _) => {
                tracing::debug!(saga = S::NAME, saga_id, event_type = %event.event_type, "no running instance for the event");
                return Ok(());
            }
            (Some(loaded), _) if loaded.completed => return Ok(()),
            (Some(loaded), _) => (loaded.state, loaded.correlation_id),
        };
        let mut context =
            SagaContext::new(saga_id, event.event_id, correlation_id, self.clock.now());
        state.handle(event, &mut context)?;
        if association.role == Role::End {
            context.complete();
        }
        if let Some(error) = context.error.take() {
            return Err(HandlerError::handler(event, error));
        }
        self.save(connection, &state, &context)
            .await
            .map_err(database(event))
    }

    /// Writes an instance's state, its new commands and timeouts, its cancelled timeouts.
    async fn save(
        &self,
        connection: &mut PgConnection,
        state: &S,
        context: &SagaContext<S>,
    ) -> Result<(), Error> {
        let saga_id = context.saga_id();
        let state = serde_json::to_string(state).map_err(|cause| Error::Encode {
            event_type: "saga state",
            cause,
        })?;
        let status = if context.completed {
            "completed"
        } else {
            "active"
        };
        sqlx::query(AssertSqlSafe(self.sql.save.clone()))
            .bind(S::NAME)
            .bind(saga_id)
            .bind(state)
            .bind(status)
            .bind(context.correlation_id())
            .execute(&mut *connection)
            .await
            .map_err(|e| self.fail(e))?;
        if !context.commands.is_empty() {
            let commands = &context.commands;
            let ids: Vec<Uuid> = (0..commands.len())
                .map(|i| command_id(S::NAME, saga_id, context.cause(), i))
                .collect();
            sqlx::query(AssertSqlSafe(self.sql.outbox.clone()))
                .bind(S::NAME)
                .bind(saga_id)
                .bind(context.correlation_id())
                .bind(context.cause())
                .bind(ids)
                .bind(commands.iter().map(|c| c.command_type).collect::<Vec<_>>())
                .bind(
                    commands
                        .iter()
                        .map(|c| c.stream_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    commands
                        .iter()
                        .map(|c| c.payload.as_str())
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *connection)
                .await
                .map_err(|e| self.fail(e))?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.sql.notify_channel)
                .bind(S::NAME)
                .execute(&mut *connection)
                .await
                .map_err(|e| self.fail(e))?;
        }
        if context.completed || !context.cancelled.is_empty() {
            sqlx::query(AssertSqlSafe(self.sql.cancel_timeouts.clone()))
                .bind(S::NAME)
                .bind(saga_id)
                .bind(&context.cancelled)
                .bind(context.completed)
                .execute(&mut *connection)
                .await
                .map_err(|e| self.fail(e))?;
        }
        if !context.completed && !context.timeouts.is_empty() {
            let timeouts: &[Scheduled] = &context.timeouts;
            let ids: Vec<Uuid> = (0..timeouts.len())
                .map(|i| timeout_id(S::NAME, saga_id, context.cause(), i))
                .collect();
            sqlx::query(AssertSqlSafe(self.sql.schedule.clone()))
                .bind(S::NAME)
                .bind(saga_id)
                .bind(ids)
                .bind(timeouts.iter().map(|t| t.timeout_type).collect::<Vec<_>>())
                .bind(
                    timeouts
                        .iter()
                        .map(|t| t.payload.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(timeouts.iter().map(|t| t.due_at).collect::<Vec<_>>())
                .execute(&mut *connection)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Delivers pending commands, in order, until none is left (or another process is
    /// delivering them). Returns how many were delivered. Each command is acknowledged as soon
    /// as it is delivered, so a crash delivers at most one command again (and its aggregate
    /// recognises it).
    async fn dispatch(&self) -> Result<u64, SagaError> {
        let mut delivered = 0;
        loop {
            // One dispatcher per saga at a time, across processes: a lock held by this
            // transaction while the batch is delivered.
            let mut lock = self.store.pool().begin().await.map_err(|e| self.fail(e))?;
            let key = format!("factum.saga.dispatch:{}:{}", self.store.schema(), S::NAME);
            let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
                .bind(key)
                .fetch_one(&mut *lock)
                .await
                .map_err(|e| self.fail(e))?;
            if !ours {
                return Ok(delivered); // another instance delivers them
            }
            let rows = sqlx::query(AssertSqlSafe(self.sql.pending.clone()))
                .bind(S::NAME)
                .bind(i64::try_from(self.dispatch_batch).unwrap_or(i64::MAX))
                .fetch_all(&mut *lock)
                .await
                .map_err(|e| self.fail(e))?;
            if rows.is_empty() {
                return Ok(delivered);
            }
            for row in &rows {
                let pending = Pending::from_row(row).map_err(|e| self.fail(e))?;
                let outcome = self.deliver(&pending).await;
                tracing::debug!(
                    target: "factum::saga::delivered",
                    saga = S::NAME,
                    command_id = %pending.command_id,
                    "command delivered; acknowledging it"
                );
                match outcome {
                    Ok(Dispatched::Applied { .. } | Dispatched::AlreadyApplied) => {
                        self.acknowledge(&pending, "dispatched", None).await?;
                    }
                    Ok(Dispatched::Rejected { reason }) => {
                        self.acknowledge(&pending, "rejected", Some(reason)).await?;
                    }
                    Err(cause) if cause.is_transient() => {
                        return Err(SagaError::Dispatch {
                            saga: S::NAME,
                            cause,
                        });
                    }
                    Err(cause) => {
                        let reason = cause.to_string();
                        tracing::error!(saga = S::NAME, command_id = %pending.command_id, error = %reason, "command cannot be delivered");
                        self.acknowledge(&pending, "failed", Some(reason)).await?;
                    }
                }
                delivered += 1;
            }
            lock.commit().await.map_err(|e| self.fail(e))?;
        }
    }

    /// Records a command's delivery; a refused or undeliverable one goes back to its saga
    /// instance's `#[rejected]` handler in the same transaction.
    async fn acknowledge(
        &self,
        pending: &Pending,
        status: &str,
        refusal: Option<String>,
    ) -> Result<(), Error> {
        let mut transaction = self.store.pool().begin().await.map_err(|e| self.fail(e))?;
        sqlx::query(AssertSqlSafe(self.sql.mark.clone()))
            .bind(pending.command_id)
            .bind(status)
            .bind(refusal.as_deref())
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        if let Some(reason) = refusal {
            self.on_rejection(&mut transaction, pending, reason).await?;
        }
        transaction.commit().await.map_err(|e| self.fail(e))
    }

    async fn deliver(&self, pending: &Pending) -> Result<Dispatched, DispatchError> {
        let context = CommandContext::new()
            .command_id(pending.command_id)
            .correlation_id(pending.correlation_id)
            .metadata("saga", S::NAME)
            .metadata("saga_id", pending.saga_id.as_str())
            .metadata("command", pending.command_type.as_str())
            .metadata("command_causation_id", pending.causation_id.to_string());
        let span = tracing::debug_span!(
            "factum.saga.dispatch",
            saga = S::NAME,
            saga_id = %pending.saga_id,
            command = %pending.command_type,
            command_id = %pending.command_id,
        );
        tracing::Instrument::instrument(
            self.bus.dispatch(
                &pending.command_type,
                &pending.stream_id,
                &pending.payload,
                &context,
            ),
            span,
        )
        .await
    }

    /// A refused command goes back to its instance's `#[rejected]` handler.
    async fn on_rejection(
        &self,
        transaction: &mut PgConnection,
        pending: &Pending,
        reason: String,
    ) -> Result<(), Error> {
        let Some(loaded) = self
            .load(transaction, &pending.saga_id, &self.sql.load)
            .await?
        else {
            return Ok(());
        };
        if loaded.completed {
            return Ok(());
        }
        let mut state = loaded.state;
        let mut context = SagaContext::new(
            &pending.saga_id,
            pending.command_id,
            loaded.correlation_id,
            self.clock.now(),
        );
        let rejection = Rejection {
            command_id: pending.command_id,
            command_type: pending.command_type.clone(),
            stream_id: pending.stream_id.clone(),
            reason,
        };
        state.rejected(&rejection, &mut context);
        if let Some(cause) = context.error.take() {
            return Err(Error::Encode {
                event_type: "saga command",
                cause,
            });
        }
        self.save(transaction, &state, &context).await
    }

    /// Fires the timeouts due by the clock, each in its own transaction with its instance.
    async fn fire_due_timeouts(&self) -> Result<u64, Error> {
        let mut fired = 0;
        loop {
            let due = sqlx::query(AssertSqlSafe(self.sql.due.clone()))
                .bind(S::NAME)
                .bind(self.clock.now())
                .bind(100_i64)
                .fetch_all(self.store.pool())
                .await
                .map_err(|e| self.fail(e))?;
            if due.is_empty() {
                return Ok(fired);
            }
            for row in &due {
                let timeout_id: Uuid = row.try_get(0).map_err(|e| self.fail(e))?;
                let saga_id: String = row.try_get(1).map_err(|e| self.fail(e))?;
                if self.fire(timeout_id, &saga_id).await? {
                    fired += 1;
                }
            }
        }
    }

    /// Fires one timeout: locks its instance first (as events do), then the timeout.
    async fn fire(&self, timeout_id: Uuid, saga_id: &str) -> Result<bool, Error> {
        let mut transaction = self.store.pool().begin().await.map_err(|e| self.fail(e))?;
        let loaded = self.load(&mut transaction, saga_id, &self.sql.load).await?;
        let row = sqlx::query(AssertSqlSafe(self.sql.lock_timeout.clone()))
            .bind(timeout_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(row) = row else {
            return Ok(false); // fired or cancelled meanwhile
        };
        let get = |e| self.fail(e);
        let timeout = FiredTimeout {
            timeout_id,
            timeout_type: row.try_get(0).map_err(get)?,
            payload: row.try_get(1).map_err(get)?,
            due_at: row.try_get::<DateTime<Utc>, _>(2).map_err(get)?,
        };
        let (status, error) = match loaded {
            Some(loaded) if !loaded.completed => {
                let mut state = loaded.state;
                let mut context =
                    SagaContext::new(saga_id, timeout_id, loaded.correlation_id, self.clock.now());
                match state.timeout(&timeout, &mut context) {
                    Ok(()) if context.error.is_none() => {
                        self.save(&mut transaction, &state, &context).await?;
                        ("fired", None)
                    }
                    Ok(()) => ("failed", context.error.map(|e| e.to_string())),
                    Err(error) => ("failed", Some(error.to_string())),
                }
            }
            _ => ("cancelled", None),
        };
        if let Some(error) = &error {
            tracing::error!(saga = S::NAME, saga_id, %timeout_id, error, "saga timeout failed");
        }
        sqlx::query(AssertSqlSafe(self.sql.mark_timeout.clone()))
            .bind(timeout_id)
            .bind(status)
            .bind(error)
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        transaction.commit().await.map_err(|e| self.fail(e))?;
        Ok(status == "fired")
    }
}

/// A command in the outbox.
struct Pending {
    command_id: Uuid,
    saga_id: String,
    command_type: String,
    stream_id: String,
    payload: String,
    correlation_id: Uuid,
    causation_id: Uuid,
}

impl Pending {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            command_id: row.try_get(0)?,
            saga_id: row.try_get(1)?,
            command_type: row.try_get(2)?,
            stream_id: row.try_get(3)?,
            payload: row.try_get(4)?,
            correlation_id: row.try_get(5)?,
            causation_id: row.try_get(6)?,
        })
    }
}

impl<S: Saga> SagaRunner<S> {
    /// A runner of saga `S` on `store` (migrated), delivering commands through `bus`, on the
    /// system clock.
    #[must_use]
    pub fn new(store: PostgresStore, bus: CommandBus) -> Self {
        let core = Arc::new(Core {
            sql: Sql::new(store.schema()),
            store: store.clone(),
            bus,
            clock: Arc::new(SystemClock),
            dispatch_batch: 100,
            saga: PhantomData,
        });
        let events = ProjectionRunner::new(
            store,
            SagaEvents {
                core: Arc::clone(&core),
            },
        )
        .poll_interval(Duration::from_millis(200));
        Self {
            events,
            core,
            poll_interval: Duration::from_millis(200),
        }
    }

    /// Uses `clock` for scheduling and firing timeouts (a [`ManualClock`](super::ManualClock)
    /// in tests).
    #[must_use]
    pub fn clock(self, clock: impl Clock) -> Self {
        self.with_core(|core| core.clock = Arc::new(clock))
    }

    /// Events per transaction (default 500).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.events = self.events.batch_size(batch_size);
        self
    }

    /// How often to look for events, commands and due timeouts when nothing wakes the runner
    /// (default 200 ms).
    #[must_use]
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.events = self.events.poll_interval(poll_interval);
        self.poll_interval = poll_interval;
        self
    }

    /// Retries of a failing event batch before its stream is parked (as for projections).
    #[must_use]
    pub fn retries(mut self, max_retries: u32, backoff: Duration) -> Self {
        self.events = self.events.retries(max_retries, backoff);
        self
    }

    fn with_core(self, change: impl FnOnce(&mut Core<S>)) -> Self {
        let Self {
            events,
            core,
            poll_interval,
        } = self;
        drop(events); // it holds the other reference to the core
        let mut core = Arc::try_unwrap(core).unwrap_or_else(|shared| Core {
            store: shared.store.clone(),
            bus: shared.bus.clone(),
            clock: Arc::clone(&shared.clock),
            sql: Sql::new(shared.store.schema()),
            dispatch_batch: shared.dispatch_batch,
            saga: PhantomData,
        });
        change(&mut core);
        let core = Arc::new(core);
        let events = ProjectionRunner::new(
            core.store.clone(),
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

    /// Handles the events after the checkpoint (committing instances, outbox and timeouts with
    /// it). Returns the events handled.
    ///
    /// # Errors
    /// As [`ProjectionRunner::catch_up`].
    pub async fn handle_events(&mut self) -> Result<u64, SagaError> {
        Ok(self.events.catch_up().await?)
    }

    /// Delivers the pending commands of the outbox, in order. Returns how many.
    ///
    /// # Errors
    /// [`SagaError::Dispatch`] when the store cannot take a command now (it stays pending), or
    /// a store error.
    pub async fn dispatch(&self) -> Result<u64, SagaError> {
        self.core.dispatch().await
    }

    /// Fires the timeouts that are due by the runner's clock. Returns how many fired.
    ///
    /// # Errors
    /// A store error.
    pub async fn fire_due_timeouts(&self) -> Result<u64, SagaError> {
        Ok(self.core.fire_due_timeouts().await?)
    }

    /// Handles events, delivers commands and fires due timeouts until nothing is left to do
    /// (the commands' events handled, their commands delivered...).
    ///
    /// # Errors
    /// As the steps.
    pub async fn settle(&mut self) -> Result<Settled, SagaError> {
        let mut settled = Settled::default();
        loop {
            let events = self.handle_events().await?;
            let commands = self.dispatch().await?;
            let timeouts = self.fire_due_timeouts().await?;
            settled.events += events;
            settled.commands += commands;
            settled.timeouts += timeouts;
            if events == 0 && commands == 0 && timeouts == 0 {
                return Ok(settled);
            }
        }
    }

    /// The streams whose events the saga could not handle, parked in the dead-letter queue
    /// (as for projections) while other streams flow on.
    ///
    /// # Errors
    /// A store error.
    pub async fn parked(&self) -> Result<Vec<ParkedStream>, Error> {
        self.events.parked().await
    }

    /// Handles a parked stream's events again, in order, stopping at the first failure.
    ///
    /// # Errors
    /// A store error.
    pub async fn retry_parked(&mut self, stream_id: &str) -> Result<RetryOutcome, Error> {
        self.events.retry_parked(stream_id).await
    }

    /// Skips a parked stream's first event (kept on record); returns its version.
    ///
    /// # Errors
    /// A store error.
    pub async fn skip_parked(&mut self, stream_id: &str) -> Result<Option<u64>, Error> {
        self.events.skip_parked(stream_id).await
    }

    /// An instance, as stored.
    ///
    /// # Errors
    /// A store error, or a state that does not decode.
    pub async fn instance(&self, saga_id: &str) -> Result<Option<SagaInstance<S>>, Error> {
        let mut connection = self
            .core
            .store
            .pool()
            .acquire()
            .await
            .map_err(|e| self.core.fail(e))?;
        let loaded = self
            .core
            .load(&mut connection, saga_id, &self.core.sql.instance)
            .await?;
        Ok(loaded.map(|loaded| SagaInstance {
            saga_id: saga_id.to_owned(),
            state: loaded.state,
            completed: loaded.completed,
            correlation_id: loaded.correlation_id,
        }))
    }

    /// Where the saga stands: its event lag and parked streams, instances, outbox, timeouts.
    ///
    /// # Errors
    /// A store error.
    pub async fn status(&self) -> Result<SagaStatus, Error> {
        let events = self.events.status().await?;
        let row = sqlx::query(AssertSqlSafe(self.core.sql.status.clone()))
            .bind(S::NAME)
            .fetch_one(self.core.store.pool())
            .await
            .map_err(|e| self.core.fail(e))?;
        let count = |i: usize| -> Result<u64, Error> {
            let n: i64 = row.try_get(i).map_err(|e| self.core.fail(e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(SagaStatus {
            events,
            active: count(0)?,
            completed: count(1)?,
            pending_commands: count(2)?,
            rejected_commands: count(3)?,
            failed_commands: count(4)?,
            pending_timeouts: count(5)?,
        })
    }

    /// Runs the saga until `shutdown` completes: its events (under the projection lease),
    /// the delivery of its commands (woken when an instance sends some) and its timeouts
    /// (checked every poll interval). A delivery that fails for a transient reason is retried
    /// at the next wake-up.
    ///
    /// # Errors
    /// When the event side stops ([`RunnerError`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), SagaError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let Self {
            events,
            core,
            poll_interval,
        } = self;
        let mut events_stopped = stopped.clone();
        let events = events.run(async move {
            let _ = events_stopped.wait_for(|stop| *stop).await;
        });
        let work = work_loop(Arc::clone(&core), stopped, poll_interval);
        let trigger = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let (events, (), ()) = tokio::join!(events, work, trigger);
        events?;
        Ok(())
    }
}

/// Delivers commands and fires timeouts until stopped.
async fn work_loop<S: Saga>(
    core: Arc<Core<S>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    poll_interval: Duration,
) {
    let mut listener = match sqlx::postgres::PgListener::connect_with(core.store.pool()).await {
        Ok(mut listener) => match listener.listen(&core.sql.notify_channel).await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "saga dispatcher cannot listen; polling");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "saga dispatcher cannot listen; polling");
            None
        }
    };
    while !*stopped.borrow() {
        if let Err(error) = core.dispatch().await {
            tracing::warn!(saga = S::NAME, %error, "saga commands not delivered; retrying");
        }
        if let Err(error) = core.fire_due_timeouts().await {
            tracing::warn!(saga = S::NAME, %error, "saga timeouts not fired; retrying");
        }
        let wake = async {
            match &mut listener {
                Some(listener) => {
                    if listener.recv().await.is_err() {
                        tokio::time::sleep(poll_interval).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake => {}
            () = tokio::time::sleep(poll_interval) => {}
            _ = stopped.changed() => {}
        }
    }
}
