//! Running a projection on PostgreSQL: one active instance per projection across processes (an
//! advisory-lock lease), batches committed with the checkpoint, catch-up then live following.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Row as _};

use super::{HandlerError, Projection};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::{EventStore, FeedPosition, FeedQuery, PostgresStore};

/// What stops a projection runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),

    /// A handler kept failing after the retries (the batch was rolled back: nothing of it is
    /// applied, the checkpoint did not move).
    #[error("projection `{projection}` stopped: {cause}")]
    Handler {
        /// The projection.
        projection: &'static str,
        /// The last failure.
        #[source]
        cause: HandlerError,
    },
}

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection.
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// The position it has processed up to.
    pub checkpoint: FeedPosition,
    /// The newest position in the store.
    pub head: FeedPosition,
    /// Events of the projection's types after the checkpoint.
    pub event_lag: u64,
    /// How long the oldest of those has been waiting (zero when caught up).
    pub time_lag: Duration,
}

/// Runs one projection against a [`PostgresStore`].
///
/// ```no_run
/// # async fn run<P: factum::projection::Projection<Connection = sqlx::PgConnection>>(
/// #     store: factum::store::PostgresStore, projection: P,
/// # ) -> Result<(), factum::projection::RunnerError> {
/// use factum::projection::ProjectionRunner;
///
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// // Elsewhere, on SIGTERM: `stop.send(())`.
/// # drop(stop);
/// let shutdown = async { stopped.await.ok(); };
/// ProjectionRunner::new(store, projection).batch_size(500).run(shutdown).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProjectionRunner<P> {
    store: PostgresStore,
    projection: P,
    batch_size: usize,
    poll_interval: Duration,
    lease_retry: Duration,
    max_retries: u32,
    retry_backoff: Duration,
    sql: Sql,
}

#[derive(Debug)]
struct Sql {
    ensure_checkpoint: String,
    lock_checkpoint: String,
    save_checkpoint: String,
    read_checkpoint: String,
    status: String,
}

impl<P: Projection<Connection = PgConnection>> ProjectionRunner<P> {
    /// A runner of `projection` on `store` (whose migrations include the projection tables).
    pub fn new(store: PostgresStore, projection: P) -> Self {
        let s = format!("\"{}\"", store.schema());
        let sql = Sql {
            ensure_checkpoint: format!(
                "INSERT INTO {s}.projection_checkpoints (projection, version, tx, position)
                 VALUES ($1, $2, 0, 0) ON CONFLICT DO NOTHING"
            ),
            lock_checkpoint: format!(
                "SELECT tx, position FROM {s}.projection_checkpoints
                 WHERE projection = $1 AND version = $2 FOR UPDATE"
            ),
            save_checkpoint: format!(
                "UPDATE {s}.projection_checkpoints SET tx = $3, position = $4, updated_at = now()
                 WHERE projection = $1 AND version = $2"
            ),
            read_checkpoint: format!(
                "SELECT tx, position FROM {s}.projection_checkpoints
                 WHERE projection = $1 AND version = $2"
            ),
            status: format!(
                "SELECT (SELECT max(tx)::text::bigint FROM {s}.events),
                        (SELECT max(position) FROM {s}.events),
                        count(*), min(e.recorded_at)
                 FROM {s}.events e
                 WHERE (e.tx, e.position) > ($1::text::xid8, $2) AND e.event_type = ANY ($3)"
            ),
        };
        Self {
            store,
            projection,
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            lease_retry: Duration::from_millis(500),
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            sql,
        }
    }

    /// Events per transaction.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How often to look for new events when no notification arrives.
    #[must_use]
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// How often a waiting instance tries to take over the lease.
    #[must_use]
    pub fn lease_retry(mut self, lease_retry: Duration) -> Self {
        self.lease_retry = lease_retry;
        self
    }

    /// Retries of a failing batch (with doubling backoff from `backoff`) before the runner stops.
    #[must_use]
    pub fn retries(mut self, max_retries: u32, backoff: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_backoff = backoff;
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    fn fail(&self, error: sqlx::Error) -> Error {
        Error::Backend(Box::new(error))
    }

    /// The position processed so far.
    ///
    /// # Errors
    /// A store error.
    pub async fn checkpoint(&self) -> Result<FeedPosition, Error> {
        let row = sqlx::query(AssertSqlSafe(self.sql.read_checkpoint.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .fetch_optional(self.store.pool())
            .await
            .map_err(|e| self.fail(e))?;
        row.map_or(Ok(FeedPosition::START), |row| {
            position(&row).map_err(|e| self.fail(e))
        })
    }

    /// Applies a batch as delivered, in one transaction with the checkpoint: events at or below
    /// the checkpoint are skipped (they were applied before), the others handled in order, and
    /// the checkpoint moves to `next`. Returns how many events were handled. Any failure rolls
    /// the whole batch back.
    ///
    /// # Errors
    /// [`RunnerError::Handler`] or [`RunnerError::Store`]; nothing of the batch is applied then.
    pub async fn apply_batch(
        &mut self,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<u64, RunnerError> {
        let mut transaction = self.store.pool().begin().await.map_err(|e| self.fail(e))?;
        sqlx::query(AssertSqlSafe(self.sql.ensure_checkpoint.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        // The row lock makes concurrent instances (a lease lost to a network partition, say)
        // take turns; each then skips what the other applied.
        let row = sqlx::query(AssertSqlSafe(self.sql.lock_checkpoint.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .fetch_one(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        let checkpoint = position(&row).map_err(|e| self.fail(e))?;
        let mut handled = 0;
        for event in events.iter().filter(|e| e.feed_position() > checkpoint) {
            self.projection
                .handle(event, &mut transaction)
                .await
                .map_err(|cause| RunnerError::Handler {
                    projection: P::NAME,
                    cause,
                })?;
            handled += 1;
        }
        let new = checkpoint.max(next);
        sqlx::query(AssertSqlSafe(self.sql.save_checkpoint.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .bind(to_i64(new.tx))
            .bind(to_i64(new.position))
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        transaction.commit().await.map_err(|e| self.fail(e))?;
        Ok(handled)
    }

    /// Reads and applies one batch after the checkpoint, retrying a failing batch.
    async fn step(&mut self) -> Result<Step, RunnerError> {
        let checkpoint = self.checkpoint().await?;
        let query = FeedQuery::after(checkpoint)
            .limit(self.batch_size)
            .event_types(P::EVENT_TYPES.iter().copied());
        let batch = self.store.read_feed(&query).await?;
        if batch.events.is_empty() && batch.next <= checkpoint {
            return Ok(Step::CaughtUp {
                held_back: batch.held_back,
            });
        }
        let span = tracing::debug_span!(
            "factum.projection.batch",
            projection = P::NAME,
            version = P::VERSION,
            events = batch.events.len(),
            checkpoint = %checkpoint,
        );
        let _entered = span.enter();
        let mut attempt = 0;
        loop {
            match self.apply_batch(&batch.events, batch.next).await {
                Ok(handled) => {
                    return Ok(if batch.events.is_empty() {
                        Step::CaughtUp {
                            held_back: batch.held_back,
                        }
                    } else {
                        Step::Applied(handled)
                    });
                }
                Err(RunnerError::Handler { cause, .. })
                    if cause.is_transient() && attempt < self.max_retries =>
                {
                    attempt += 1;
                    tracing::warn!(attempt, error = %cause, "projection batch failed; retrying");
                    tokio::time::sleep(self.retry_backoff * 2_u32.saturating_pow(attempt - 1))
                        .await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Processes everything already stored, without taking the lease (for tests and one-off
    /// rebuilds; use [`ProjectionRunner::run`] in services). Returns the number of events handled.
    ///
    /// # Errors
    /// As [`ProjectionRunner::apply_batch`].
    pub async fn catch_up(&mut self) -> Result<u64, RunnerError> {
        let mut handled = 0;
        loop {
            match self.step().await? {
                Step::Applied(count) => handled += count,
                Step::CaughtUp { held_back: false } => return Ok(handled),
                Step::CaughtUp { held_back: true } => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }

    /// Runs the projection until `shutdown` completes: waits for the lease (only one instance
    /// per projection and version runs at a time, across processes; another takes over when the
    /// holder's connection dies), catches up, then follows new events, woken by notifications
    /// and polling. Shutdown lets the current batch finish. Returns the projection.
    ///
    /// # Errors
    /// [`RunnerError::Handler`] when a batch keeps failing, or a store error.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<P, RunnerError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let Some(lease) = self.acquire_lease(shutdown.as_mut()).await? else {
            return Ok(self.projection);
        };
        tracing::info!(
            projection = P::NAME,
            version = P::VERSION,
            "projection lease taken"
        );
        let mut wakeups = self.store.wakeups();
        let result = loop {
            wakeups.mark_seen();
            let wait = match self.step().await {
                Ok(Step::Applied(_)) => None,
                Ok(Step::CaughtUp { held_back: true }) => Some(Duration::from_millis(5)),
                Ok(Step::CaughtUp { held_back: false }) => Some(self.poll_interval),
                Err(error) => break Err(error),
            };
            let stop = match wait {
                None => futures_poll_now(shutdown.as_mut()),
                Some(wait) => tokio::select! {
                    () = shutdown.as_mut() => true,
                    () = wakeups.changed() => false,
                    () = tokio::time::sleep(wait) => false,
                },
            };
            if stop {
                break Ok(());
            }
        };
        drop(lease);
        result.map(|()| self.projection)
    }

    /// Waits for the lease: a session advisory lock held by a connection of its own, released
    /// when the connection closes (the process stops or dies).
    async fn acquire_lease(
        &self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<Option<PgConnection>, RunnerError> {
        let options = self.store.pool().connect_options();
        let key = format!("{}:{}:{}", self.store.schema(), P::NAME, P::VERSION);
        loop {
            let mut connection = PgConnection::connect_with(&options)
                .await
                .map_err(|e| self.fail(e))?;
            let taken: bool = sqlx::query_scalar(
                "SELECT pg_try_advisory_lock(hashtext('factum.projection'), hashtext($1))",
            )
            .bind(&key)
            .fetch_one(&mut connection)
            .await
            .map_err(|e| self.fail(e))?;
            if taken {
                return Ok(Some(connection));
            }
            drop(connection);
            tokio::select! {
                () = shutdown.as_mut() => return Ok(None),
                () = tokio::time::sleep(self.lease_retry) => {}
            }
        }
    }

    /// The projection's checkpoint, the store's head, and the lag between them.
    ///
    /// # Errors
    /// A store error.
    pub async fn status(&self) -> Result<ProjectionStatus, Error> {
        let checkpoint = self.checkpoint().await?;
        let types: Vec<&str> = P::EVENT_TYPES.to_vec();
        let row = sqlx::query(AssertSqlSafe(self.sql.status.clone()))
            .bind(to_i64(checkpoint.tx))
            .bind(to_i64(checkpoint.position))
            .bind(types)
            .fetch_one(self.store.pool())
            .await
            .map_err(|e| self.fail(e))?;
        let get = |error| self.fail(error);
        let head = FeedPosition::new(
            to_u64(row.try_get::<Option<i64>, _>(0).map_err(get)?.unwrap_or(0)),
            to_u64(row.try_get::<Option<i64>, _>(1).map_err(get)?.unwrap_or(0)),
        );
        let oldest: Option<DateTime<Utc>> = row.try_get(3).map_err(get)?;
        Ok(ProjectionStatus {
            name: P::NAME,
            version: P::VERSION,
            checkpoint,
            head,
            event_lag: to_u64(row.try_get(2).map_err(get)?),
            time_lag: oldest
                .and_then(|oldest| (Utc::now() - oldest).to_std().ok())
                .unwrap_or_default(),
        })
    }
}

/// Whether the shutdown future has completed, without waiting.
fn futures_poll_now(shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>) -> bool {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    shutdown.poll(&mut context).is_ready()
}

enum Step {
    Applied(u64),
    CaughtUp { held_back: bool },
}

fn position(row: &sqlx::postgres::PgRow) -> Result<FeedPosition, sqlx::Error> {
    Ok(FeedPosition::new(
        to_u64(row.try_get(0)?),
        to_u64(row.try_get(1)?),
    ))
}

fn version(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
